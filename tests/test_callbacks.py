"""TensorBoard callbacks: event files read back with TensorFlow's summary iterator."""

import glob
import os

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual
from keras_residual.probe import probe
from keras_residual.viz.callbacks import FeatureImages, TopKImages

pytestmark = pytest.mark.multibackend

import tensorflow as tf  # noqa: E402  (a core dependency: TensorBoard writes through it)


def event_tensors(log_dir):
    """Every summary of the event files in `log_dir`: (tag, step, plugin name, tensor)."""
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                yield (value.tag, event.step, value.metadata.plugin_data.plugin_name,
                       tf.make_ndarray(value.tensor))


def read_events(log_dir):
    """{tag: {step: value}}: images as (count, width, height), scalars as floats.

    An image summary's tensor is [width, height, png, png, ...].
    """
    out = {}
    for tag, step, plugin, array in event_tensors(log_dir):
        item = (len(array) - 2, int(array[0]), int(array[1])) if plugin == "images" else float(
            array)
        out.setdefault(tag, {})[step] = item
    return out


def small_model():
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = Residual(layers.Conv2D(4, 3, padding="same"), activation="relu", name="b1")(x)
    x = Residual(layers.Conv2D(4, 3, padding="same"), activation="relu", name="b2")(x)
    x = layers.Dense(2)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, x)
    model.compile("sgd", "mse")
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((16, 8, 8, 1), dtype="float32"), rng.random((16, 2), dtype="float32")


def test_feature_images_tags_steps_and_sizes(tmp_path, data):
    x, y = data
    model = small_model()
    callback = FeatureImages(str(tmp_path / "tb"), x[:2], every=2, png_dir=str(tmp_path / "png"))
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path / "tb"))
    assert set(events) == {"filters/conv1", "activations/conv1", "activations/b1",
                           "activations/b2", "residual/b1", "residual/b2"}
    # every=2 over 3 epochs: only epoch 2 is logged.
    assert all(list(steps) == [2] for steps in events.values())
    assert events["filters/conv1"][2] == (1, 7, 7)  # four 3x3 kernels, 2x2 grid, 1px gaps
    assert events["activations/b1"][2] == (2, 17, 17)  # two probe images, four 8x8 maps
    assert events["residual/b2"][2] == (2, 17, 17)
    pngs = sorted(os.listdir(tmp_path / "png" / "epoch_002"))
    assert pngs == ["activations.png", "filters_conv1.png", "residual_differences.png"]


def test_topk_images_and_refinement_scalars(tmp_path, data):
    x, y = data
    model = small_model()
    callback = TopKImages(str(tmp_path / "tb"), x, ["b1", "b2"], channels=[0, 3], k=3)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    events = read_events(str(tmp_path / "tb"))
    assert set(events) == {"topk/guided", "refinement/overlap/b2", "refinement/correlation/b2"}
    assert sorted(events["topk/guided"]) == [1, 2]
    count, width, height = events["topk/guided"][2]
    assert count == 1 and width > height > 100
    # Brute force with the final weights: top-3 images per channel, shared by b1 and b2.
    b1, b2 = (keras.ops.convert_to_numpy(t) for t in probe(model, ["b1", "b2"])(x))
    top1 = np.argsort(-b1.max(axis=(1, 2)), axis=0, kind="stable")[:3]
    top2 = np.argsort(-b2.max(axis=(1, 2)), axis=0, kind="stable")[:3]
    shared = [len(set(top1[:, c]) & set(top2[:, c])) for c in range(4)]
    assert events["refinement/overlap/b2"][2] == pytest.approx(np.mean(shared))
    corr = [np.corrcoef(b1.max(axis=(1, 2))[:, c], b2.max(axis=(1, 2))[:, c])[0, 1]
            for c in range(4)]
    assert events["refinement/correlation/b2"][2] == pytest.approx(np.nanmean(corr), abs=1e-4)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="every"):
        FeatureImages(str(tmp_path), np.ones((1, 8, 8, 1)), every=0)
    with pytest.raises(ValueError, match="NumPy"):
        TopKImages(str(tmp_path), [[1.0]], ["b1"], [0])
    with pytest.raises(ValueError, match="non-empty"):
        TopKImages(str(tmp_path), np.ones((2, 8, 8, 1)), [], [0])
