"""top_activations against a brute-force search over the full activations; crop_patches."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual
from keras_residual.probe import probe
from keras_residual.viz.receptive_field import ReceptiveField
from keras_residual.viz.top_activations import (
    TopK,
    TopKAccumulator,
    crop_patches,
    iterate_batches,
    top_activations,
)

pytestmark = pytest.mark.multibackend

PATHS = ["c1", "block/branch/inner_conv", "block"]


def small_model():
    inputs = keras.Input((7, 6, 1))
    # Channel 2 of c1 is dead (ReLU of a large negative bias): every image ties at 0.
    x = layers.Conv2D(3, 3, activation="relu", name="c1")(inputs)
    x = Residual(
        keras.Sequential([layers.Conv2D(3, 3, padding="same", name="inner_conv")], name="f"),
        name="block",
    )(x)
    model = keras.Model(inputs, x)
    model.get_layer("c1").bias.assign(np.array([0.0, 0.1, -100.0], "float32"))
    return model


def dataset(n=23):
    images = np.random.default_rng(0).normal(size=(n, 7, 6, 1)).astype("float32")
    images[15] = images[4]  # an exact tie between two images, for every channel
    images[20] = images[4]
    return images


def brute_force(model, paths, images, k):
    """Top-k from the full activations, ordered by (-value, image index)."""
    outputs = probe(model, paths).predict(images, verbose=0)
    result = {}
    for path, out in zip(paths, outputs, strict=True):
        flat = out.reshape(len(images), -1, out.shape[-1])
        maxima, argmax = flat.max(axis=1), flat.argmax(axis=1)  # NumPy: first maximum
        values, indices, positions = [], [], []
        for c in range(out.shape[-1]):
            order = np.lexsort((np.arange(len(images)), -maxima[:, c]))[:k]
            values.append(maxima[order, c])
            indices.append(order)
            positions.append(np.stack(np.unravel_index(argmax[order, c], out.shape[1:3]), -1))
        result[path] = TopK(np.array(values), np.array(indices), np.array(positions))
    return result


@pytest.mark.multibackend
def test_matches_brute_force_with_ties():
    model = small_model()
    images = dataset()
    got = top_activations(model, PATHS, images, k=5, batch_size=4, progress=False)
    want = brute_force(model, PATHS, images, k=5)
    for path in PATHS:
        np.testing.assert_allclose(got[path].values, want[path].values, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[path].indices, want[path].indices)
        np.testing.assert_array_equal(got[path].positions, want[path].positions)
    # The duplicated images tie: where one is in the top-k, the lower index comes first.
    for row in got["c1"].indices[:2]:
        hits = [i for i in row if i in (4, 15, 20)]
        assert hits == sorted(hits)
    # The dead channel: all values 0, so the first 5 images at their first position.
    assert got["c1"].indices[2].tolist() == [0, 1, 2, 3, 4]
    assert (got["c1"].positions[2] == 0).all()


def test_array_dataset_and_generator_agree():
    import tensorflow as tf

    model = small_model()
    images = dataset()
    labels = np.zeros(len(images))
    from_array = top_activations(model, PATHS, images, k=3, batch_size=5, progress=True)
    from_dataset = top_activations(
        model, PATHS, tf.data.Dataset.from_tensor_slices((images, labels)).batch(6),
        k=3, progress=False,
    )
    from_generator = top_activations(
        model, PATHS, ((images[i:i + 7], labels[i:i + 7]) for i in range(0, 23, 7)),
        k=3, progress=False,
    )
    for other in (from_dataset, from_generator):
        for path in PATHS:
            np.testing.assert_array_equal(other[path].indices, from_array[path].indices)
            np.testing.assert_array_equal(other[path].positions, from_array[path].positions)
            np.testing.assert_allclose(other[path].values, from_array[path].values, rtol=1e-6)


def test_fewer_images_than_k_and_model_untouched():
    model = small_model()
    images = dataset()[:3]
    config = json.dumps(model.get_config(), sort_keys=True, default=str)
    before = model.predict(images, verbose=0)
    top = top_activations(model, "block", images, k=9, progress=False)["block"]
    assert top.indices.shape == (3, 3) and sorted(top.indices[0]) == [0, 1, 2]
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config
    np.testing.assert_array_equal(model.predict(images, verbose=0), before)


def test_accumulator_memory_is_bounded():
    acc = TopKAccumulator(k=4)
    rng = np.random.default_rng(0)
    everything = []
    for start in range(0, 1000, 50):
        # Few distinct values: many ties, which must go to the lower image index.
        batch = rng.integers(0, 4, size=(50, 6)).astype("float32")
        everything.append(batch)
        acc.update(start, batch, np.zeros((50, 6, 2), np.int64))
        assert acc.values.shape == (6, 4)  # never more than k candidates per channel
    everything = np.concatenate(everything)
    want = np.argsort(-everything, axis=0, kind="stable")[:4].T
    np.testing.assert_array_equal(acc.result().indices, want)


def test_iterate_batches_rejects_unknown_data():
    with pytest.raises(ValueError, match="Received: int"):
        list(iterate_batches(3))


def test_crop_patches_gray_borders():
    images = np.arange(2 * 5 * 6 * 3, dtype="float32").reshape(2, 5, 6, 3)
    field = ReceptiveField(size=(4, 3), jump=(2, 2), offset=(-2, -1))
    # Channel 0: a corner unit of image 1; channel 1: an interior unit and one past the edge.
    top = TopK(
        values=np.ones((2, 2)),
        indices=np.array([[1, 0], [0, 1]]),
        positions=np.array([[[0, 0], [1, 1]], [[2, 3], [3, 2]]]),
    )
    patches = crop_patches(images, top, field)
    gray = (images.min() + images.max()) / 2
    margin = 4
    padded = np.pad(images, ((0, 0), (margin, margin), (margin, margin), (0, 0)),
                    constant_values=gray)
    assert patches.shape == (2, 2, 4, 3, 3)
    for c in range(2):
        for j in range(2):
            top_, left = field.box(*top.positions[c, j])[:2]
            want = padded[top.indices[c, j], top_ + margin:top_ + margin + 4,
                          left + margin:left + margin + 3]
            np.testing.assert_array_equal(patches[c, j], want)
    assert (patches[0, 0, :2] == gray).all() and (patches[0, 0, :, 0] == gray).all()
    np.testing.assert_array_equal(patches[0, 1], images[0, 0:4, 1:4])


def test_crop_patches_channels_first_and_fill():
    images = np.arange(2 * 4 * 4, dtype="float32").reshape(1, 2, 4, 4)
    top = TopK(np.ones((1, 1)), np.zeros((1, 1), int), np.array([[[3, 3]]]))
    field = ReceptiveField(size=(3, 3), jump=(1, 1), offset=(-1, -1))
    patch = crop_patches(images, top, field, fill=-7.0, data_format="channels_first")
    assert patch.shape == (1, 1, 2, 3, 3)
    np.testing.assert_array_equal(patch[0, 0, :, :2, :2], images[0, :, 2:, 2:])
    assert (patch[0, 0, :, 2, :] == -7.0).all() and (patch[0, 0, :, :, 2] == -7.0).all()
