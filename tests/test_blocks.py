"""Block factories on every backend: shapes, a fit step, the five placements, zero init, drop rates."""

import functools

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


@pytest.mark.backends("jax", "torch",
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


# ------------------------------------------- every factory against NumPy
# Each reference is written from the paper's unit (He et al. 2015, Fig. 2 and 5;
# He et al. 2016, Fig. 4e; Xie et al. 2017, Fig. 3c), with NumPy convolutions,
# recurrences and normalizations; only the weights are read from the block,
# by layer name. BatchNormalization statistics are random, so a misplaced or
# skipped BN shows.


def _np(variable):
    return keras.ops.convert_to_numpy(variable).astype("float64")


def _randomize(block, rng):
    for w in block.weights:
        if w.name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.name in ("beta", "moving_mean", "bias"):
            w.assign(rng.normal(0, 0.3, w.shape).astype("float32"))


def _layer(block, name):
    """A layer of the block by name, searched in its branch, shortcut, pre-activation and merge."""
    parts = [block.layer, block.shortcut_layer, block.preactivation_layer, block.merge_layer]
    for part in parts:
        if part is None:
            continue
        if part.name == name:
            return part
        for inner in getattr(part, "layers", []) + [getattr(part, "proj", None),
                                                   getattr(part, "bn", None)]:
            if inner is not None and inner.name == name:
                return inner
    raise KeyError(name)


def np_conv(x, conv, stride=1, pad=0, groups=1):
    """NHWC convolution with symmetric zero padding and channel groups."""
    kernel = _np(conv.kernel)
    kh, kw, group_in, out_channels = kernel.shape
    group_out = out_channels // groups
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, out_channels))
    for g in range(groups):
        xs = x[..., g * group_in:(g + 1) * group_in]
        for i in range(kh):
            for j in range(kw):
                window = xs[:, i:i + stride * ho:stride, j:j + stride * wo:stride]
                out[..., g * group_out:(g + 1) * group_out] += (
                    window @ kernel[i, j][:, g * group_out:(g + 1) * group_out])
    return out + (_np(conv.bias) if conv.use_bias else 0.0)


def np_bn(x, bn):
    gamma, beta, mean, var = (_np(getattr(bn, k)) for k in
                              ("gamma", "beta", "moving_mean", "moving_variance"))
    return (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta


def np_dense(x, dense):
    return x @ _np(dense.kernel) + (_np(dense.bias) if dense.use_bias else 0.0)


def np_layer_norm(x, norm):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * _np(norm.gamma) + _np(norm.beta)


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_gru(x, gru):
    """Keras' GRU (Cho et al. 2014, reset gate applied after the recurrent matmul)."""
    kernel, recurrent = _np(gru.cell.kernel), _np(gru.cell.recurrent_kernel)
    bias_in, bias_rec = _np(gru.cell.bias)
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    out = []
    for t in range(x.shape[1]):
        xz, xr, xh = np.split(x[:, t] @ kernel + bias_in, 3, axis=-1)
        hz, hr, hh = np.split(h @ recurrent + bias_rec, 3, axis=-1)
        z, r = sigmoid(xz + hz), sigmoid(xr + hr)
        h = z * h + (1 - z) * np.tanh(xh + r * hh)
        out.append(h)
    return np.stack(out, axis=1)


def np_lstm(x, lstm):
    """Keras' LSTM (Hochreiter & Schmidhuber 1997; gates i, f, c, o)."""
    kernel, recurrent, bias = (_np(lstm.cell.kernel), _np(lstm.cell.recurrent_kernel),
                               _np(lstm.cell.bias))
    units = recurrent.shape[0]
    h = c = np.zeros((x.shape[0], units))
    out = []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent + bias, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def ref_basic(block, x):
    # He et al. (2015), Fig. 2 with the projection shortcut of Eq. 2 (BN as in the ImageNet nets).
    get = functools.partial(_layer, block)
    f = relu(np_bn(np_conv(x, get("b_1_conv"), stride=2, pad=1), get("b_1_bn")))
    f = np_bn(np_conv(f, get("b_2_conv"), pad=1), get("b_2_bn"))
    s = np_bn(np_conv(x, get("b_0_conv"), stride=2), get("b_0_bn"))
    return relu(f + s)


def ref_bottleneck(block, x):
    # He et al. (2015), Fig. 5 right: 1x1 (stride 2), 3x3, 1x1 with 4x expansion.
    get = functools.partial(_layer, block)
    f = relu(np_bn(np_conv(x, get("b_1_conv"), stride=2), get("b_1_bn")))
    f = relu(np_bn(np_conv(f, get("b_2_conv"), pad=1), get("b_2_bn")))
    f = np_bn(np_conv(f, get("b_3_conv")), get("b_3_bn"))
    s = np_bn(np_conv(x, get("b_0_conv"), stride=2), get("b_0_bn"))
    return relu(f + s)


def ref_preact_bottleneck(block, x):
    # He et al. (2016), Fig. 4e: BN-ReLU first; the projection reads the pre-activated x.
    get = functools.partial(_layer, block)
    p = relu(np_bn(x, get("b_preact_bn")))
    f = relu(np_bn(np_conv(p, get("b_1_conv")), get("b_1_bn")))
    f = relu(np_bn(np_conv(f, get("b_2_conv"), stride=2, pad=1), get("b_2_bn")))
    f = np_conv(f, get("b_3_conv"))
    return f + np_conv(p, get("b_0_conv"), stride=2)


def ref_resnext(block, x):
    # Xie et al. (2017), Fig. 3c: the 3x3 in 4 groups; stride on the 3x3.
    get = functools.partial(_layer, block)
    f = relu(np_bn(np_conv(x, get("b_1_conv")), get("b_1_bn")))
    f = relu(np_bn(np_conv(f, get("b_2_conv"), stride=2, pad=1, groups=4), get("b_2_bn")))
    f = np_bn(np_conv(f, get("b_3_conv")), get("b_3_bn"))
    s = np_bn(np_conv(x, get("b_0_conv"), stride=2), get("b_0_bn"))
    return relu(f + s)


def ref_dense_batch(block, x):
    get = functools.partial(_layer, block)
    f = relu(np_bn(np_dense(x, get("b_1_dense")), get("b_1_norm")))
    f = np_bn(np_dense(f, get("b_2_dense")), get("b_2_norm"))
    return f + np_dense(x, get("b_0_conv"))


def ref_dense_layer_norm(block, x):
    get = functools.partial(_layer, block)
    f = np.tanh(np_layer_norm(np_dense(x, get("b_1_dense")), get("b_1_norm")))
    f = np_layer_norm(np_dense(f, get("b_2_dense")), get("b_2_norm"))
    return relu(x + f)


def ref_gru(block, x):
    get = functools.partial(_layer, block)
    f = np_gru(np_gru(x, get("b_1_gru")), get("b_2_gru"))
    # The projection is a 1x1 Conv1D: the same matmul at every step.
    projection = get("b_0_conv")
    return f + x @ _np(projection.kernel)[0] + _np(projection.bias)


def ref_lstm(block, x):
    return x + np_lstm(x, _layer(block, "b_1_lstm"))


REFERENCES = [
    (lambda: B.basic_block(6, stride=2, shortcut="projection", name="b"), (6, 6, 4), ref_basic),
    (lambda: B.bottleneck_block(3, stride=2, shortcut="projection", name="b"), (6, 6, 8),
     ref_bottleneck),
    (lambda: B.bottleneck_block(3, stride=2, stride_on="3x3", placement="full_preact",
                                shortcut="projection", name="b"), (6, 6, 8),
     ref_preact_bottleneck),
    (lambda: B.resnext_block(64, cardinality=4, bottleneck_width=2, stride=2,
                             shortcut="projection", name="b"), (4, 4, 8), ref_resnext),
    (lambda: B.dense_block(5, hidden_units=7, normalization="batch", shortcut="projection",
                           name="b"), (3,), ref_dense_batch),
    (lambda: B.dense_block(4, hidden_units=6, activation="tanh", normalization="layer",
                           post_activation="relu", name="b"), (4,), ref_dense_layer_norm),
    (lambda: B.recurrent_block(5, cell="gru", num_layers=2, shortcut="projection", name="b"),
     (4, 3), ref_gru),
    (lambda: B.recurrent_block(5, cell="lstm", name="b"), (4, 5), ref_lstm),
]


@pytest.mark.parametrize("make, input_shape, reference", REFERENCES,
                         ids=[r[2].__name__ for r in REFERENCES])
def test_factory_matches_numpy_reference(make, input_shape, reference):
    rng = np.random.default_rng(5)
    block = make()
    block.build((None, *input_shape))
    _randomize(block, rng)
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    got = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(got, reference(block, x.astype("float64")), atol=2e-4, rtol=2e-4)
