"""keras.applications weights in the builders: same weights, same outputs; counts as keras.applications reports them."""

import keras
import numpy as np
import pytest

from keras_residual import models as M
from keras_residual.models.weights import load_keras_applications_weights

ON_ALL_BACKENDS = pytest.mark.multibackend

# keras.applications' count_params().
PAIRS = [
    (M.resnet50, keras.applications.ResNet50, 25_636_712),
    (M.resnet101, keras.applications.ResNet101, 44_707_176),
    (M.resnet152, keras.applications.ResNet152, 60_419_944),
    (M.resnet50_v2, keras.applications.ResNet50V2, 25_613_800),
    (M.resnet101_v2, keras.applications.ResNet101V2, 44_675_560),
    (M.resnet152_v2, keras.applications.ResNet152V2, 60_380_648),
]
SHAPE = (64, 64, 3)


def _randomize_batchnorm(model, rng):
    # Non-trivial BN statistics, so that a BN matched to the wrong layer shows.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape)])


def _lesion_scalars(model):
    # Lesion-ready blocks own a non-trainable state vector; plain blocks own nothing extra.
    return sum(int(np.prod(w.shape)) for w in model.weights if w.name == "lesion_state")


def _pair_id(value):
    return getattr(value, "__name__", "")


@ON_ALL_BACKENDS
@pytest.mark.parametrize("ours, theirs, reference_count", PAIRS[:1], ids=_pair_id)
def test_resnet50_same_weights_same_outputs(ours, theirs, reference_count):
    _check_same_outputs(ours, theirs, reference_count)


@pytest.mark.backends("tensorflow", reason="ResNet-101/152 and the v2 family, several seconds each; ResNet-50 runs on every backend")
@pytest.mark.slow
@pytest.mark.parametrize(
    "ours, theirs, reference_count", PAIRS[1:], ids=_pair_id
)
def test_deeper_same_weights_same_outputs(ours, theirs, reference_count):
    _check_same_outputs(ours, theirs, reference_count)


def _check_same_outputs(ours, theirs, reference_count):
    rng = np.random.default_rng(0)
    reference = theirs(weights=None, input_shape=SHAPE, classifier_activation=None)
    model = ours(input_shape=SHAPE, classifier_activation=None)
    assert reference.count_params() == reference_count
    assert model.count_params() - _lesion_scalars(model) == reference_count
    _randomize_batchnorm(reference, rng)
    report = load_keras_applications_weights(model, reference)
    assert not report.missing_in_source and not report.unused_in_source
    x = rng.normal(size=(2, *SHAPE)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@ON_ALL_BACKENDS
def test_checkpoint_files(tmp_path):
    rng = np.random.default_rng(1)
    reference = keras.applications.ResNet50(weights=None, include_top=False, input_shape=SHAPE)
    _randomize_batchnorm(reference, rng)
    x = rng.normal(size=(2, *SHAPE)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    keras3 = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(keras3)
    legacy = str(tmp_path / "resnet50_notop.h5")
    reference.save(legacy)  # the legacy HDF5 layout that keras.applications publishes

    for path in (keras3, legacy):
        model = M.resnet50(include_top=False, input_shape=SHAPE, weights=path)
        got = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)

    # A model with a classifier and a conv of another shape than the checkpoint's.
    inputs = keras.Input(SHAPE)
    y = keras.layers.Conv2D(8, 7, name="conv1_conv")(inputs)
    y = keras.layers.Dense(3, name="predictions")(keras.layers.GlobalAveragePooling2D()(y))
    other = keras.Model(inputs, y)
    with pytest.raises(ValueError, match="'predictions'"):
        load_keras_applications_weights(other, legacy)
    with pytest.raises(ValueError, match="'conv1_conv' has weight shapes"):
        load_keras_applications_weights(other, legacy, strict=False)
    with pytest.raises(ValueError, match="No file at"):
        M.resnet50(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="No checkpoint file"):
        load_keras_applications_weights(other, str(tmp_path / "missing.h5"))


@ON_ALL_BACKENDS
def test_own_architecture_weights_file_honours_strict(tmp_path):
    # A .weights.h5 from a model with no keras.applications twin: Keras matches it by position.
    def net(*widths):
        inputs = keras.Input((3,))
        x = inputs
        for i, width in enumerate(widths):
            x = keras.layers.Dense(width, name=f"d{i}")(x)
        return keras.Model(inputs, x)

    source = net(4, 4, 4)
    path = str(tmp_path / "source.weights.h5")
    source.save_weights(path)
    short = net(4, 4)  # the file has one layer more than the model
    before = [w.copy() for w in short.get_weights()]
    with pytest.raises(ValueError, match=r"no place for: \['layers/dense_2/vars/0'"):
        load_keras_applications_weights(short, path)
    for got, kept in zip(short.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, kept)  # strict: nothing loaded

    report = load_keras_applications_weights(short, path, strict=False)
    assert sorted(report.loaded) == ["d0", "d1"] and not report.missing_in_source
    assert report.unused_in_source == ["layers/dense_2/vars/0", "layers/dense_2/vars/1"]
    for name in ("d0", "d1"):
        for got, saved in zip(short.get_layer(name).get_weights(),
                              source.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(got, saved)

    wider = net(4, 5)  # d1 has another shape: reported missing, its weights kept
    kept = [w.copy() for w in wider.get_layer("d1").get_weights()]
    report = load_keras_applications_weights(wider, path, strict=False)
    assert report.loaded == ["d0"] and report.missing_in_source == ["d1"]
    for got, old in zip(wider.get_layer("d1").get_weights(), kept, strict=True):
        np.testing.assert_array_equal(got, old)
    np.testing.assert_array_equal(wider.get_layer("d0").get_weights()[0],
                                  source.get_layer("d0").get_weights()[0])
