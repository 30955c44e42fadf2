"""Kernel maps, activation grids, pre-activations and residual differences against NumPy."""

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual
from keras_residual.viz.images import (
    activation_grid,
    kernel_map,
    normalize,
    preactivations,
    residual_difference,
    residual_differences,
    residual_paths,
    tile,
)

pytestmark = pytest.mark.multibackend


def minmax(a):
    return (a - a.min()) / (a.max() - a.min())


def test_tile_places_images_row_by_row():
    images = np.arange(5 * 2 * 3, dtype="float32").reshape(5, 2, 3)
    grid = tile(images, columns=2, pad=1, pad_value=-1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(grid[3:5, 4:7], images[3])  # row 1, column 1
    np.testing.assert_array_equal(grid[6:8, 0:3], images[4])
    assert (grid[6:8, 4:7] == -1).all() and (grid[2] == -1).all()


def test_kernel_map_normalizes_each_rgb_kernel():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype("float32")
    kernel[..., 1] *= 100.0  # a strong kernel must not wash out the others
    grid = kernel_map(kernel, columns=2)
    assert grid.shape == (7, 7, 3)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        np.testing.assert_allclose(grid[r : r + 3, c : c + 3], minmax(kernel[..., k]), rtol=1e-5)


def test_kernel_map_of_gray_conv_layer_and_errors():
    layer = layers.Conv2D(6, 5)
    layer.build((None, 28, 28, 1))
    grid = kernel_map(layer, columns=3)
    assert grid.shape == (11, 17)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(grid[6:11, 12:17], minmax(kernel[:, :, 0, 5]), rtol=1e-5)
    with pytest.raises(ValueError, match="input channels"):
        kernel_map(np.zeros((3, 3, 16, 4)))
    with pytest.raises(ValueError, match="no `kernel`"):
        kernel_map(layers.ReLU())


def test_normalize_constant_is_gray():
    np.testing.assert_array_equal(normalize(np.ones((2, 2))), np.full((2, 2), 0.5))


def test_activation_grid_matches_numpy_conv():
    inputs = keras.Input((5, 5, 2))
    conv = layers.Conv2D(4, 1, activation="relu", bias_initializer="ones", name="conv")
    model = keras.Model(inputs, conv(inputs))
    image = np.random.default_rng(1).normal(size=(5, 5, 2)).astype("float32")
    kernel, bias = model.get_layer("conv").get_weights()
    maps = np.maximum(image @ kernel[0, 0] + bias, 0)
    grid = activation_grid(model, "conv", image, columns=4)
    assert grid.shape == (5, 4 * 6 - 1)
    for k in range(4):
        np.testing.assert_allclose(grid[:, 6 * k : 6 * k + 5], minmax(maps[..., k]), rtol=1e-4,
                                   atol=1e-6)


def residual_dense_model(activation=None):
    inputs = keras.Input((4,))
    x = layers.Dense(4, activation="relu", name="fc")(inputs)
    x = Residual(layers.Dense(4, name="inner"), activation=activation, name="block")(x)
    x = layers.Activation("relu", name="act")(x)
    return keras.Model(inputs, x)


def test_preactivations_against_numpy():
    model = residual_dense_model(activation="relu")
    x = np.random.default_rng(2).normal(size=(6, 4)).astype("float32")
    w1, b1 = model.get_layer("fc").get_weights()
    w2, b2 = model.get_layer("block").layer.get_weights()
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    z2 = h + h @ w2 + b2
    assert (z1 < 0).any() and (z2 < 0).any()
    np.testing.assert_allclose(preactivations(model, "fc", x), z1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preactivations(model, "block", x), z2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preactivations(model, "act", x), np.maximum(z2, 0), rtol=1e-5,
                               atol=1e-6)
    # the activation is restored
    assert model.get_layer("block").activation is keras.activations.relu
    assert model.get_layer("fc").activation is keras.activations.relu
    # a linear layer's pre-activation is its output
    np.testing.assert_allclose(preactivations(model, "block/branch", x), z2 - h, rtol=1e-5,
                               atol=1e-5)


def test_residual_difference_is_the_branch_for_an_additive_block():
    model = residual_dense_model()
    x = np.random.default_rng(3).normal(size=(4,)).astype("float32")
    w1, b1 = model.get_layer("fc").get_weights()
    w2, b2 = model.get_layer("block").layer.get_weights()
    branch = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    for kind in ("difference", "branch"):
        np.testing.assert_allclose(residual_difference(model, "block", x, kind), branch,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not a Residual"):
        residual_difference(model, "fc", x)


def test_residual_differences_nested_and_projection():
    inner = keras.Sequential([keras.Input((4,)), Residual(layers.Dense(4), name="inner")],
                             name="seq")
    inputs = keras.Input((4,))
    x = Residual(inner, name="outer")(inputs)
    x = Residual(layers.Dense(6, name="wide"), shortcut="projection", name="proj")(x)
    model = keras.Model(inputs, x)
    assert residual_paths(model) == ["outer", "outer/branch/inner", "proj"]
    x0 = np.random.default_rng(4).normal(size=(4,)).astype("float32")
    diffs = residual_differences(model, x0)
    assert list(diffs) == ["outer", "outer/branch/inner", "proj"]
    w, b = model.get_layer("proj").layer.get_weights()
    after_outer = x0 + diffs["outer"]
    np.testing.assert_allclose(diffs["proj"], after_outer @ w + b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kind='branch'"):
        residual_difference(model, "proj", x0)


def _causal_attention_chain():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6))
    x = Residual(layers.MultiHeadAttention(2, 3, name="att0"), activation="relu",
                 name="b0")(inputs, use_causal_mask=True)
    x = Residual(layers.MultiHeadAttention(2, 3, name="att1"), name="b1")(x, use_causal_mask=True)
    return keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))


def test_block_parts_run_with_the_call_arguments_the_block_got():
    from keras_residual.lesion import gradient_paths

    model = _causal_attention_chain()
    x = np.random.default_rng(0).normal(size=(3, 4, 6)).astype("float32")
    attention = model.get_layer("b0").layer
    # Reference: the unwrapped layer with the causal mask, plus x (before the block's ReLU).
    causal = keras.ops.convert_to_numpy(attention(x, x, use_causal_mask=True)) + x
    unmasked = keras.ops.convert_to_numpy(attention(x, x)) + x
    assert np.abs(causal - unmasked).max() > 0.1  # the mask matters on these inputs
    np.testing.assert_allclose(preactivations(model, "b0", x), causal, rtol=1e-5, atol=1e-5)
    # The per-sample routed copy of the gradient-per-path-length study, every branch on:
    # the model's own output, masks included.
    blocks = [model.get_layer("b0"), model.get_layer("b1")]
    routed, context = gradient_paths._sample_routed_model(model, blocks)
    context.routes = keras.ops.ones((3, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(routed(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
