"""Block factories on every backend: shapes, a fit step, the five placements, zero init, drop rates."""

import keras
import numpy as np
import pytest

from keras_residual import Residual
from keras_residual import blocks as B

pytestmark = pytest.mark.multibackend

EPS = 1.001e-5


def _fit_once(block, input_shape):
    """One SGD step on a model around `block`; returns (output shape, weights moved)."""
    inputs = keras.Input(input_shape)
    y = block(inputs)
    pooled = keras.layers.Flatten()(y)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in block.trainable_weights]
    x = np.random.default_rng(0).normal(size=(4, *input_shape)).astype("float32")
    loss = model.fit(x, np.ones((4, 2), "float32"), epochs=1, batch_size=4, verbose=0)
    after = [np.array(w) for w in block.trainable_weights]
    moved = any(not np.allclose(a, b) for a, b in zip(before, after, strict=False))
    return tuple(y.shape), moved, loss.history["loss"][0]


FACTORIES = [
    (lambda: B.basic_block(8, stride=2, shortcut="projection"), (8, 8, 4), (None, 4, 4, 8)),
    (lambda: B.bottleneck_block(4, stride=2, shortcut="projection"), (8, 8, 8), (None, 4, 4, 16)),
    (lambda: B.bottleneck_block(4, stride=2, stride_on="3x3", shortcut="avg_down",
                                placement="full_preact"), (8, 8, 8), (None, 4, 4, 16)),
    (lambda: B.resnext_block(64, cardinality=4, bottleneck_width=4, shortcut="projection"),
     (4, 4, 8), (None, 4, 4, 256)),
    (lambda: B.basic_block(8, stride=2, shortcut="zero_pad"), (8, 8, 4), (None, 4, 4, 8)),
    (lambda: B.dense_block(6, hidden_units=12, normalization="layer"), (6,), (None, 6)),
    (lambda: B.dense_block(6, shortcut="projection"), (3,), (None, 6)),
    (lambda: B.recurrent_block(5, cell="gru"), (3, 5), (None, 3, 5)),
    (lambda: B.recurrent_block(5, cell="lstm", shortcut="projection"), (3, 2), (None, 3, 5)),
]


@pytest.mark.parametrize("make, input_shape, expected", FACTORIES)
def test_factory_shapes(make, input_shape, expected):
    block = make()
    assert isinstance(block, Residual)
    # Symbolic call: shapes without running (or, on JAX, compiling) every op.
    y = block(keras.Input(input_shape))
    assert tuple(y.shape) == expected


# One fit step per factory (compiling a train step is the slow part of this file).
@pytest.mark.parametrize("make, input_shape, expected", [FACTORIES[i] for i in (2, 3, 6, 8)])
def test_factory_fit_step(make, input_shape, expected):
    shape, moved, loss = _fit_once(make(), input_shape)
    assert shape == expected
    assert moved and np.isfinite(loss)


def test_resnext_groups_and_width():
    block = B.resnext_block(128, cardinality=32, bottleneck_width=4, name="conv3_block1",
                            shortcut="projection")
    block.build((None, 8, 8, 256))
    conv = block.layer.get_layer("conv3_block1_2_conv")
    # Xie et al. Table 1, conv3: 256 channels in 32 groups of 8.
    assert conv.filters == 256 and conv.groups == 32
    assert tuple(conv.kernel.shape) == (3, 3, 8, 256)


# The five units of He et al. (2016), Fig. 4, written out from the figure:
# (pre-activation, branch layer kinds, merge, activation after the merge).
PLACEMENT_STRUCTURE = {
    "original": (None, "CBRCB", "add", "relu"),
    "bn_after_add": (None, "CBRC", "bn_add", "relu"),
    "relu_before_add": (None, "CBRCBR", "add", None),
    "relu_preact": ("R", "CBRCB", "add", None),
    "full_preact": ("BR", "CBRC", "add", None),
}
_KIND = {"Conv2D": "C", "BatchNormalization": "B", "ReLU": "R"}


def _kinds(layer):
    if layer is None:
        return None
    inner = layer.layers if isinstance(layer, keras.Sequential) else [layer]
    return "".join(_KIND[type(lyr).__name__] for lyr in inner)


@pytest.mark.parametrize("placement", B.PLACEMENTS)
def test_placement_structure(placement):
    block = B.basic_block(4, placement=placement, name="blk")
    block.build((None, 6, 6, 4))
    pre, branch, merge, activation = PLACEMENT_STRUCTURE[placement]
    assert _kinds(block.preactivation_layer) == pre
    assert _kinds(block.layer) == branch
    assert (type(block.merge_layer) is B.BatchNormAddMerge) == (merge == "bn_add")
    assert (activation is None) == (block.activation is keras.activations.linear)


def _bn(x, layer):
    gamma, beta, mean, var = (np.array(w) for w in layer.weights)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _conv3x3(x, layer):
    """'same' 3x3 convolution, stride 1, written with NumPy (NHWC)."""
    kernel = np.array(layer.kernel)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), "float64")
    for i in range(3):
        for j in range(3):
            out += padded[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out + (np.array(layer.bias) if layer.use_bias else 0.0)


def _reference(placement, block, x):
    """The unit of He et al. (2016), Fig. 4, computed with NumPy from the block's weights."""
    get = block.layer.get_layer
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h = x
    if placement == "relu_preact":
        h = relu(x)
    if placement == "full_preact":
        h = relu(_bn(x, block.preactivation_layer.get_layer("blk_preact_bn")))
    h = relu(_bn(_conv3x3(h, get("blk_1_conv")), get("blk_1_bn")))
    h = _conv3x3(h, get("blk_2_conv"))
    if placement in ("original", "relu_before_add", "relu_preact"):
        h = _bn(h, get("blk_2_bn"))
    if placement == "relu_before_add":
        h = relu(h)
    y = x + h
    if placement == "bn_after_add":
        y = _bn(y, block.merge_layer.bn)
    if placement in ("original", "bn_after_add"):
        y = relu(y)
    return y


@pytest.mark.parametrize("placement", B.PLACEMENTS)
def test_placement_matches_numpy(placement):
    rng = np.random.default_rng(1)
    block = B.basic_block(3, placement=placement, name="blk")
    block.build((None, 5, 5, 3))
    # Non-trivial BN statistics so that a misplaced BN shows.
    for w in block.weights:
        if "moving_variance" in w.path or "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif "moving_mean" in w.path or "beta" in w.path:
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(got, _reference(placement, block, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "factory, placement",
    [("basic", p) for p in B.PLACEMENTS] + [("bottleneck", "original"), ("bottleneck", "full_preact")],
)
def test_zero_init_last_starts_as_identity(factory, placement):
    if factory == "basic":
        block = B.basic_block(8, placement=placement, zero_init_last=True)
    else:
        block = B.bottleneck_block(2, placement=placement, zero_init_last=True)
    # Non-negative inputs (what a ReLU network feeds a block): relu(x) == x.
    x = np.abs(np.random.default_rng(2).normal(size=(2, 6, 6, 8))).astype("float32")
    y = keras.ops.convert_to_numpy(block(x, training=False))
    # BN after the addition, at init, divides by sqrt(1 + eps).
    expected = x / np.sqrt(1 + EPS) if placement == "bn_after_add" else x
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_zero_init_last_with_projection_equals_shortcut():
    block = B.bottleneck_block(4, stride=2, shortcut="projection", zero_init_last=True,
                               name="conv3_block1")
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 8)).astype("float32")
    y = keras.ops.convert_to_numpy(block(x, training=False))
    proj = block.shortcut_layer.proj
    # 1x1 stride-2 conv = subsample then matmul; BN at init divides by sqrt(1 + eps).
    shortcut = x[:, ::2, ::2, :] @ np.array(proj.kernel)[0, 0] / np.sqrt(1 + EPS)
    np.testing.assert_allclose(y, np.maximum(shortcut, 0), atol=1e-5)


def test_zero_init_dense_block():
    block = B.dense_block(5, hidden_units=7, zero_init_last=True)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), x, atol=1e-6)


def test_block_drop_rate_is_passed_on():
    assert B.basic_block(4, drop_rate=0.25).drop_rate == 0.25


def test_bias_rule():
    block = B.bottleneck_block(4, placement="full_preact", shortcut="projection", name="b")
    block.build((None, 4, 4, 8))
    get = block.layer.get_layer
    # Only convolutions that no BN follows keep a bias (keras.applications ResNetV2).
    assert [get(f"b_{i}_conv").use_bias for i in (1, 2, 3)] == [False, False, True]
    assert block.shortcut_layer.proj.use_bias and block.shortcut_layer.bn is None
    assert block.shortcut_from == "preactivated"
    v1 = B.bottleneck_block(4, use_bias=True, shortcut="projection", name="c")
    v1.build((None, 4, 4, 8))
    assert all(v1.layer.get_layer(f"c_{i}_conv").use_bias for i in (1, 2, 3))
    assert v1.shortcut_layer.bn is not None


def test_stride_position():
    on_1x1 = B.bottleneck_block(4, stride=2, shortcut="projection", name="a")
    on_3x3 = B.bottleneck_block(4, stride=2, stride_on="3x3", shortcut="projection", name="b")
    assert on_1x1.layer.layers[0].strides == (2, 2)
    # v1.5: explicit symmetric padding, then the strided 3x3.
    names = [lyr.name for lyr in on_3x3.layer.layers]
    assert names[:4] == ["b_1_conv", "b_1_bn", "b_1_relu", "b_2_pad"]
    assert on_3x3.layer.get_layer("b_2_conv").strides == (2, 2)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                    reason="TensorFlow's CPU convolutions only run channels_last")
def test_channels_first():
    block = B.bottleneck_block(2, stride=2, stride_on="3x3", shortcut="projection",
                               data_format="channels_first")
    y = block(np.ones((1, 4, 6, 6), "float32"))
    assert tuple(y.shape) == (1, 8, 3, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"placement": "post"}, "placement"),
        ({"shortcut": "skip"}, "shortcut"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"data_format": "nhwc"}, "data_format"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        B.basic_block(4, **kwargs)


def test_invalid_stride_position_and_width():
    with pytest.raises(ValueError, match="stride_on"):
        B.bottleneck_block(4, stride_on="2x2")
    with pytest.raises(ValueError, match="cardinality"):
        B.resnext_block(8, cardinality=2, bottleneck_width=1)
