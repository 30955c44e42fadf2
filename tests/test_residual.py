"""Behaviour of the `Residual` wrapper, its shortcuts and its merges.

Every expected value is computed another way: NumPy from the layer's weights,
Jacobians worked out by hand on a linear block, binomial bounds, or the same
model run on an unpadded sequence.
"""

import keras
import numpy as np
import pytest
from keras import layers
from layer_test_utils import random_input, to_numpy
from scipy import stats

import keras_residual as kr
from keras_residual import Residual

pytestmark = pytest.mark.multibackend

BACKEND = keras.backend.backend()


@keras.saving.register_keras_serializable(package="keras_residual_tests")
def half_sum(shortcut, branch):
    """A user merge function, registered so that it serializes."""
    return 0.5 * (shortcut + branch)


def _dense_submodel() -> keras.Model:
    inputs = keras.Input((4,))
    hidden = layers.Dense(6, activation="relu")(inputs)
    return keras.Model(inputs, layers.Dense(4)(hidden), name="functional_branch")


def _conv_down(filters: int = 6) -> layers.Layer:
    return layers.Conv2D(filters, 3, strides=2, padding="same")


# ------------- the configurations tests/test_residual_core.py runs through the layer harness

WRAPPED_LAYERS = {
    "dense": (lambda: Residual(layers.Dense(4)), (2, 4)),
    "conv1d": (lambda: Residual(layers.Conv1D(3, 3, padding="same")), (2, 5, 3)),
    "conv2d": (lambda: Residual(layers.Conv2D(3, 3, padding="same")), (2, 5, 5, 3)),
    "conv3d": (lambda: Residual(layers.Conv3D(2, 3, padding="same")), (2, 3, 3, 3, 2)),
    "depthwise_conv2d": (
        lambda: Residual(layers.DepthwiseConv2D(3, padding="same")),
        (2, 5, 5, 3),
    ),
    "gru": (lambda: Residual(layers.GRU(3, return_sequences=True)), (2, 4, 3)),
    "lstm": (lambda: Residual(layers.LSTM(3, return_sequences=True)), (2, 4, 3)),
    "bidirectional_sum": (
        lambda: Residual(
            layers.Bidirectional(layers.GRU(4, return_sequences=True), merge_mode="sum")
        ),
        (2, 4, 4),
    ),
    "bidirectional_concat_half_units": (
        lambda: Residual(layers.Bidirectional(layers.GRU(2, return_sequences=True))),
        (2, 4, 4),
    ),
    "layer_normalization": (lambda: Residual(layers.LayerNormalization()), (2, 4)),
    "sequential": (
        lambda: Residual(keras.Sequential([layers.Dense(6, activation="relu"), layers.Dense(4)])),
        (2, 4),
    ),
    "functional": (lambda: Residual(_dense_submodel()), (2, 4)),
    "nested_residual": (lambda: Residual(Residual(layers.Dense(4))), (2, 4)),
}

OPTIONS = {
    "shortcut_projection_dense": (lambda: Residual(layers.Dense(6), shortcut="projection"), (2, 4)),
    "shortcut_projection_conv_bn": (
        lambda: Residual(_conv_down(), shortcut=kr.ProjectionShortcut(batchnorm=True)),
        (2, 6, 6, 3),
    ),
    "shortcut_zero_pad": (lambda: Residual(_conv_down(), shortcut="zero_pad"), (2, 6, 6, 3)),
    "shortcut_avg_down": (lambda: Residual(_conv_down(), shortcut="avg_down"), (2, 6, 6, 3)),
    "shortcut_none": (lambda: Residual(layers.Dense(6), shortcut="none"), (2, 4)),
    "shortcut_user_layer": (
        lambda: Residual(layers.Dense(6), shortcut=layers.Dense(6, use_bias=False)),
        (2, 4),
    ),
    **{
        f"merge_{kind}": ((lambda kind=kind: Residual(layers.Dense(4), merge=kind)), (2, 4))
        for kind in kr.merges.MERGE_KINDS
    },
    "merge_highway_strided_conv": (
        lambda: Residual(_conv_down(), shortcut="projection", merge="highway"),
        (2, 6, 6, 3),
    ),
    "merge_instance": (
        lambda: Residual(
            layers.Dense(4), merge=kr.GatedMerge("shortcut", bias_initializer=-2.0)
        ),
        (2, 4),
    ),
    "merge_user_layer": (lambda: Residual(layers.Dense(4), merge=layers.Maximum()), (2, 4)),
    "merge_registered_callable": (lambda: Residual(layers.Dense(4), merge=half_sum), (2, 4)),
    "activation_relu": (lambda: Residual(layers.Dense(4), activation="relu"), (2, 4)),
    "preactivation_bn_relu_from_input": (
        lambda: Residual(layers.Conv2D(3, 3, padding="same"), preactivation="bn_relu"),
        (2, 5, 5, 3),
    ),
    "preactivation_bn_relu_from_preactivated": (
        lambda: Residual(
            _conv_down(),
            preactivation="bn_relu",
            shortcut="projection",
            shortcut_from="preactivated",
        ),
        (2, 6, 6, 3),
    ),
    "preactivation_user_layer": (
        lambda: Residual(layers.Dense(4), preactivation=layers.LayerNormalization()),
        (2, 4),
    ),
    **{
        f"drop_{mode}_{scaling}": (
            (
                lambda mode=mode, scaling=scaling: Residual(
                    layers.Dense(4), drop_rate=0.3, drop_mode=mode, drop_scaling=scaling
                )
            ),
            (2, 4),
        )
        for mode in ("batch", "sample")
        for scaling in ("train", "inference")
    },
}


# ------------------------------------------------- shortcuts against NumPy


def _weights(layer: layers.Layer) -> tuple:
    """Kernel and bias of a Dense or conv layer as NumPy."""
    return to_numpy(layer.kernel), to_numpy(layer.bias)


def _subsample(x: np.ndarray, stride: int, rank: int) -> np.ndarray:
    """Every `stride`-th position along each spatial axis of a channels-last array."""
    return x[(slice(None),) + (slice(None, None, stride),) * rank]


def _conv1x1(x: np.ndarray, layer: layers.Layer) -> np.ndarray:
    """A 1x1 (or Dense) layer applied to already-subsampled channels-last data."""
    kernel, bias = _weights(layer)
    return x @ kernel.reshape(kernel.shape[-2:]) + bias


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_projection_shortcut_is_strided_1x1(rank):
    # Odd sizes: a stride-2 1x1 maps 5 positions to ceil(5 / 2) = 3.
    conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}.get(rank)
    branch = layers.Dense(6) if rank == 0 else conv(6, 1, strides=2)
    block = Residual(branch, shortcut="projection")
    x = random_input((2,) + (5,) * rank + (3,))
    y = to_numpy(block(x))
    xs = _subsample(x, 2, rank)
    expected = _conv1x1(xs, block.shortcut_layer.proj) + _conv1x1(xs, block.layer)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_projection_shortcut_channels_first():
    branch = layers.Conv2D(6, 1, strides=2, data_format="channels_first")
    block = Residual(branch, shortcut="projection", data_format="channels_first")
    x = random_input((2, 3, 5, 5))
    y = to_numpy(block(x))
    xs = np.moveaxis(x, 1, -1)[:, ::2, ::2]
    expected = _conv1x1(xs, block.shortcut_layer.proj) + _conv1x1(xs, block.layer)
    np.testing.assert_allclose(y, np.moveaxis(expected, -1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_zero_pad_shortcut_subsamples_and_appends_zero_channels(data_format):
    branch = layers.Conv2D(5, 1, strides=2, data_format=data_format)
    block = Residual(branch, shortcut="zero_pad", data_format=data_format)
    x_last = random_input((2, 5, 5, 3))
    x = x_last if data_format == "channels_last" else np.moveaxis(x_last, -1, 1)
    y = to_numpy(block(x))
    if data_format == "channels_first":
        y = np.moveaxis(y, 1, -1)
    xs = x_last[:, ::2, ::2]
    shortcut = np.concatenate([xs, np.zeros(xs.shape[:-1] + (2,), "float32")], axis=-1)
    np.testing.assert_allclose(y, shortcut + _conv1x1(xs, block.layer), rtol=1e-5, atol=1e-5)
    assert block.shortcut_layer.weights == []


def test_avg_down_shortcut_pools_then_projects():
    block = Residual(layers.Conv2D(6, 1, strides=2), shortcut="avg_down")
    x = random_input((2, 6, 6, 3))
    y = to_numpy(block(x))
    pooled = x.reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4))
    expected = _conv1x1(pooled, block.shortcut_layer.proj) + _conv1x1(x[:, ::2, ::2], block.layer)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_projection_with_batchnorm_at_inference():
    block = Residual(layers.Dense(6), shortcut=kr.ProjectionShortcut(batchnorm=True))
    x = random_input((3, 4))
    y = to_numpy(block(x, training=False))
    # A fresh BN has moving mean 0 and variance 1: it only divides by sqrt(1 + eps).
    kernel = to_numpy(block.shortcut_layer.proj.kernel)
    assert block.shortcut_layer.proj.bias is None
    shortcut = x @ kernel / np.sqrt(1.0 + 1.001e-5)
    np.testing.assert_allclose(y, shortcut + _conv1x1(x, block.layer), rtol=1e-5, atol=1e-5)


def test_user_shortcut_layer_and_plain_twin():
    x = random_input((3, 4))
    user = Residual(layers.Dense(6), shortcut=layers.Dense(6))
    y = to_numpy(user(x))
    expected = _conv1x1(x, user.shortcut_layer) + _conv1x1(x, user.layer)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    plain = Residual(layers.Dense(6), shortcut="none", activation="relu")
    np.testing.assert_allclose(
        to_numpy(plain(x)), np.maximum(_conv1x1(x, plain.layer), 0.0), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------- merges against NumPy


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _block_and_parts(merge, **kwargs):
    """A Dense residual block on (3, 4) data, its output, x and F(x) in NumPy."""
    block = Residual(layers.Dense(4), merge=merge, **kwargs)
    x = random_input((3, 4))
    y = to_numpy(block(x, training=False))
    return block, x, y, _conv1x1(x, block.layer)


@pytest.mark.parametrize(
    "merge, formula",
    [
        ("add", lambda x, f: x + f),
        ("multiply", lambda x, f: x * f),
        ("scaled", lambda x, f: 0.5 * x + 0.5 * f),
        (kr.ScaledMerge(0.3, 2.0), lambda x, f: 0.3 * x + 2.0 * f),
        ("shortcut_dropout", lambda x, f: x + f),  # inference: dropout is the identity
        (layers.Maximum(), np.maximum),
        (half_sum, lambda x, f: 0.5 * (x + f)),
        ("rezero", lambda x, f: x),
    ],
    ids=["add", "multiply", "scaled", "scaled_custom", "shortcut_dropout", "maximum",
         "callable", "rezero"],
)
def test_stateless_merges_match_formula(merge, formula):
    _, x, y, f = _block_and_parts(merge)
    np.testing.assert_allclose(y, formula(x, f), rtol=1e-5, atol=1e-6)


def test_activation_applies_after_the_merge():
    _, x, y, f = _block_and_parts("add", activation="relu")
    np.testing.assert_allclose(y, np.maximum(x + f, 0.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "merge, bias, exclusive",
    [("highway", -1.0, True), ("exclusive_gating", -6.0, True), ("shortcut_gating", -6.0, False),
     (kr.GatedMerge("shortcut", bias_initializer=0.0), 0.0, False)],
    ids=["highway", "exclusive_gating", "shortcut_gating", "shortcut_gating_bias0"],
)
def test_gated_merges_match_formula(merge, bias, exclusive):
    block, x, y, f = _block_and_parts(merge)
    gate_kernel, gate_bias = _weights(block.merge_layer.gate.proj)
    np.testing.assert_allclose(gate_bias, np.full(4, bias))
    t = _sigmoid(x @ gate_kernel + gate_bias)
    expected = t * f + (1.0 - t) * x if exclusive else (1.0 - t) * x + f
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_highway_gate_on_strided_conv_uses_the_branch_stride():
    block = Residual(layers.Conv2D(6, 1, strides=2), shortcut="projection", merge="highway")
    x = random_input((2, 5, 5, 3))
    y = to_numpy(block(x))
    xs = x[:, ::2, ::2]
    t = _sigmoid(_conv1x1(xs, block.merge_layer.gate.proj))
    shortcut = _conv1x1(xs, block.shortcut_layer.proj)
    expected = t * _conv1x1(xs, block.layer) + (1.0 - t) * shortcut
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_shortcut_dropout_in_training_drops_or_doubles_the_shortcut():
    block, x, _, f = _block_and_parts("shortcut_dropout")
    shortcut = to_numpy(block(x, training=True)) - f
    dropped = np.isclose(shortcut, 0.0, atol=1e-5)
    doubled = np.isclose(shortcut, 2.0 * x, atol=1e-5)
    assert np.all(dropped | doubled)
    assert dropped.any() and doubled.any()


def test_rezero_is_exactly_the_identity_then_learns():
    inputs = keras.Input((4,))
    block = Residual(layers.Dense(4), merge="rezero")
    model = keras.Model(inputs, block(inputs))
    x = random_input((8, 4))
    np.testing.assert_array_equal(to_numpy(model(x)), x)

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, random_input((8, 4), seed=1), batch_size=8, epochs=1, verbose=0)
    alpha = float(to_numpy(block.merge_layer.alpha))
    assert alpha != 0.0
    expected = x + alpha * _conv1x1(x, block.layer)
    np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shortcut_from", ["input", "preactivated"])
def test_preactivation_and_shortcut_source(shortcut_from):
    block = Residual(layers.Dense(4), preactivation="relu", shortcut_from=shortcut_from)
    x = random_input((3, 4))
    y = to_numpy(block(x))
    pre = np.maximum(x, 0.0)
    shortcut = x if shortcut_from == "input" else pre
    np.testing.assert_allclose(y, shortcut + _conv1x1(pre, block.layer), rtol=1e-5, atol=1e-6)


# ------------------------------------------- lesion state: gate and gradient route


def _jacobian_tensorflow(fn, x):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.jacobian(y, x).numpy()


def _jacobian_jax(fn, x):
    import jax

    return np.asarray(jax.jacobian(fn)(jax.numpy.asarray(x)))


def _jacobian_torch(fn, x):
    import torch

    return torch.autograd.functional.jacobian(fn, torch.tensor(x)).cpu().numpy()


def jacobian(fn, x: np.ndarray) -> np.ndarray:
    """`J[i, j] = d fn(x)[0, j] / d x[0, i]` for a (1, n) input `x`."""
    jac = {"tensorflow": _jacobian_tensorflow, "jax": _jacobian_jax, "torch": _jacobian_torch}
    full = jac[BACKEND](fn, x)  # (1, m, 1, n)
    return full[0, :, 0, :].T


def _linear_block(shortcut: str = "identity", out: int = 3) -> tuple:
    """Residual(Dense(no bias)) on row vectors: y = x S + x K, S = I or W_s."""
    block = Residual(layers.Dense(out, use_bias=False), shortcut=shortcut, lesion_ready=True)
    x = random_input((1, 3))
    block(x)
    if shortcut == "projection":
        block.shortcut_layer.proj.bias.assign(np.zeros(out, "float32"))
        s = to_numpy(block.shortcut_layer.proj.kernel)
    else:
        s = np.eye(3, dtype="float32")
    return block, x, s, to_numpy(block.layer.kernel)


@pytest.mark.parametrize("shortcut", ["identity", "projection"])
@pytest.mark.parametrize("route", ["both", "branch", "shortcut"])
def test_gradient_route_jacobian(shortcut, route):
    block, x, s, k = _linear_block(shortcut, out=3 if shortcut == "identity" else 5)
    forward = to_numpy(block(x))
    block.gradient_route = route
    assert block.gradient_route == route
    np.testing.assert_allclose(to_numpy(block(x)), forward)  # the forward value is unchanged
    expected = {"both": s + k, "branch": k, "shortcut": s}[route]
    np.testing.assert_allclose(jacobian(block, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shortcut", ["identity", "projection", "none"])
def test_disabled_branch_leaves_the_shortcut(shortcut):
    block, x, s, _ = _linear_block(shortcut)
    block.branch_enabled = False
    assert block.branch_enabled is False
    # Veit et al.: y_i = y_{i-1}, a projection kept; a plain layer becomes the identity.
    np.testing.assert_allclose(to_numpy(block(x)), x @ s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jacobian(block, x), s, rtol=1e-5, atol=1e-6)
    block.branch_enabled = True
    k = to_numpy(block.layer.kernel)
    enabled = k if shortcut == "none" else s + k
    np.testing.assert_allclose(jacobian(block, x), enabled, rtol=1e-5, atol=1e-6)


def test_lesion_properties_validate():
    block = Residual(layers.Dense(4), lesion_ready=True)
    with pytest.raises(ValueError, match="not built"):
        block.branch_enabled = False
    block(random_input((1, 4)))
    with pytest.raises(ValueError, match="Received: gradient_route='sideways'"):
        block.gradient_route = "sideways"
    plain = Residual(layers.Dense(6), shortcut="none", lesion_ready=True)
    plain(random_input((1, 4)))
    with pytest.raises(ValueError, match="cannot be replaced by the identity"):
        plain.branch_enabled = False


class TraceCounter(layers.Layer):
    """The identity; counts how often its Python `call` runs (once per trace)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, inputs):
        self.traces += 1
        return inputs


def test_lesion_changes_compiled_predict_without_retracing():
    inputs = keras.Input((3,))
    block = Residual(layers.Dense(3, use_bias=False), lesion_ready=True)
    counter = TraceCounter()
    model = keras.Model(inputs, counter(block(inputs)))
    x = random_input((4, 3))
    full = model.predict(x, verbose=0)
    np.testing.assert_allclose(full, x + x @ to_numpy(block.layer.kernel), rtol=1e-5, atol=1e-6)
    traces, predict_function = counter.traces, model.predict_function

    block.branch_enabled = False
    np.testing.assert_allclose(model.predict(x, verbose=0), x, rtol=1e-6)
    block.branch_enabled = True
    np.testing.assert_allclose(model.predict(x, verbose=0), full, rtol=1e-6)
    if BACKEND != "torch":  # torch runs eagerly: there is no trace to reuse
        assert counter.traces == traces
        assert model.predict_function is predict_function


def test_gradient_route_changes_compiled_training_without_retracing():
    inputs = keras.Input((3,))
    block = Residual(layers.Dense(5), shortcut="projection", lesion_ready=True)
    counter = TraceCounter()
    model = keras.Model(inputs, counter(block(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, target = random_input((4, 3)), random_input((4, 5), seed=1)

    def step() -> tuple:
        """One SGD step; did the branch and the projection move?"""
        before = [to_numpy(block.layer.kernel), to_numpy(block.shortcut_layer.proj.kernel)]
        model.fit(x, target, batch_size=4, epochs=1, verbose=0)
        after = [to_numpy(block.layer.kernel), to_numpy(block.shortcut_layer.proj.kernel)]
        return tuple(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))

    assert step() == (True, True)
    traces, train_function = counter.traces, model.train_function
    block.gradient_route = "shortcut"
    assert step() == (False, True)
    block.gradient_route = "branch"
    assert step() == (True, False)
    block.gradient_route = "both"
    block.branch_enabled = False
    assert step() == (False, True)
    if BACKEND != "torch":
        assert counter.traces == traces
        assert model.train_function is train_function


# ------------------------------------------------------------ stochastic depth

SURVIVAL = 0.7


def _sd_block(mode: str, scaling: str = "train", seed=None) -> Residual:
    # A nonzero bias makes F(x) != 0, so a kept branch is told apart from a dropped one.
    branch = layers.Dense(4, bias_initializer="ones")
    return Residual(
        branch, drop_rate=1.0 - SURVIVAL, drop_mode=mode, drop_scaling=scaling, seed=seed
    )


def _kept_rows(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Which rows kept their branch: a dropped row is exactly x."""
    return ~np.all(y == x, axis=-1)


class AlwaysTraining(layers.Wrapper):
    """Calls its layer in training mode, so that `predict` runs many compiled draws."""

    def call(self, inputs):
        return self.layer(inputs, training=True)


def _expectation_within_clt(draws, block, x, scaling) -> None:
    """Mean training output = inference output, within 5 CLT standard errors."""
    inference = to_numpy(block(x, training=False))[0]
    f = _conv1x1(x, block.layer)[0]
    # Each draw's branch term is F/p or 0 ("train" scaling), F or 0 ("inference").
    kept_value = f / SURVIVAL if scaling == "train" else f
    sigma = np.abs(kept_value) * np.sqrt(SURVIVAL * (1 - SURVIVAL) / len(draws))
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - inference), 5 * sigma + 1e-5)
    expected = x[0] + (f if scaling == "train" else SURVIVAL * f)
    np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling", ["train", "inference"])
def test_sample_mode_survival_and_expectation(scaling):
    n, block, x = 4000, _sd_block("sample", scaling), random_input((1, 4))
    draws = to_numpy(block(np.repeat(x, n, axis=0), training=True))
    low, high = stats.binom.interval(0.999, n, SURVIVAL)
    assert low <= _kept_rows(draws, x).sum() <= high
    _expectation_within_clt(draws, block, x, scaling)


@pytest.mark.parametrize("scaling", ["train", "inference"])
def test_batch_mode_survival_and_expectation(scaling):
    calls, batch, block, x = 400, 4, _sd_block("batch", scaling), random_input((1, 4))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, AlwaysTraining(block)(inputs))
    draws = model.predict(np.repeat(x, calls * batch, axis=0), batch_size=batch, verbose=0)
    draws = draws.reshape(calls, batch, 4)
    kept = _kept_rows(draws, x)
    assert np.all(kept.all(axis=1) | ~kept.any(axis=1))  # the rows of a batch share one draw
    low, high = stats.binom.interval(0.999, calls, SURVIVAL)
    assert low <= kept[:, 0].sum() <= high
    # One independent draw per batch: the CLT counts calls, not rows.
    _expectation_within_clt(draws[:, 0], block, x, scaling)


def test_stochastic_depth_is_reproducible_under_set_random_seed():
    x = random_input((64, 4))

    def draws(global_seed: int, seed=None) -> list:
        keras.utils.set_random_seed(global_seed)
        block = _sd_block("sample", seed=seed)
        return [_kept_rows(to_numpy(block(x, training=True)), x).tolist() for _ in range(3)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert draws(1, seed=5) == draws(2, seed=5)  # an explicit seed wins


@pytest.mark.multibackend
def test_branch_scale_multiplies_the_branch_in_a_compiled_predict():
    inputs = keras.Input((3,))
    block = Residual(layers.Dense(3), name="block", lesion_ready=True)
    model = keras.Model(inputs, block(inputs))
    x = random_input((4, 3))
    kernel, bias = (to_numpy(w) for w in block.layer.weights)
    branch = x @ kernel + bias
    np.testing.assert_allclose(model.predict(x, verbose=0), x + branch, rtol=1e-5, atol=1e-6)
    block.branch_scale = 2.5  # read by the already compiled predict function
    np.testing.assert_allclose(model.predict(x, verbose=0), x + 2.5 * branch, rtol=1e-5,
                               atol=1e-6)
    assert block.branch_scale == 2.5 and block.branch_enabled
    block.branch_enabled = False  # the gate still wins: y = x
    np.testing.assert_allclose(model.predict(x, verbose=0), x, rtol=1e-6)


# --------------------------------------------------------------------- masking


def _masked_gru_model(final_gru: bool) -> keras.Model:
    inputs = keras.Input((None,), dtype="int32")
    x = layers.Embedding(10, 4, mask_zero=True)(inputs)
    x = Residual(layers.GRU(4, return_sequences=True))(x)
    if final_gru:
        x = layers.GRU(3)(x)  # reads the last valid step only if the mask reached it
    return keras.Model(inputs, x)


def test_mask_reaches_the_branch_and_padded_steps_change_nothing():
    model = _masked_gru_model(final_gru=False)
    tokens = np.array([[3, 4, 5]])
    unpadded = to_numpy(model(tokens))
    end_padded = to_numpy(model(np.array([[3, 4, 5, 0, 0]])))
    start_padded = to_numpy(model(np.array([[0, 0, 3, 4, 5]])))
    np.testing.assert_allclose(end_padded[:, :3], unpadded, rtol=1e-5, atol=1e-6)
    # Leading pads change the GRU state unless the GRU skips them by the mask.
    np.testing.assert_allclose(start_padded[:, 2:], unpadded, rtol=1e-5, atol=1e-6)


def test_mask_propagates_past_the_block():
    model = _masked_gru_model(final_gru=True)
    unpadded = to_numpy(model(np.array([[3, 4, 5]])))
    padded = to_numpy(model(np.array([[3, 4, 5, 0, 0]])))
    np.testing.assert_allclose(padded, unpadded, rtol=1e-5, atol=1e-6)
    block = model.layers[2]
    mask = keras.ops.convert_to_tensor([[True, False]])
    np.testing.assert_array_equal(to_numpy(block.compute_mask(None, mask)), to_numpy(mask))


@pytest.mark.filterwarnings("ignore:Layer .* does not support masking")
def test_no_mask_past_a_block_that_changes_the_number_of_steps():
    inputs = keras.Input((6,), dtype="int32")
    x = layers.Embedding(10, 4, mask_zero=True)(inputs)
    block = Residual(layers.Conv1D(4, 3, strides=2, padding="same"), shortcut="projection")
    y = block(x)
    assert tuple(y.shape) == (None, 3, 4)
    mask = keras.ops.convert_to_tensor(np.array([[True] * 4 + [False] * 2]))
    assert block.compute_mask(None, mask) is None
    # A GRU after it runs over all three steps instead of failing on a 6-step mask.
    model = keras.Model(inputs, layers.GRU(2)(y))
    assert to_numpy(model(np.array([[1, 2, 3, 4, 0, 0]]))).shape == (1, 2)


# --------------------------------------------------------- the mismatch error


@pytest.mark.parametrize(
    "branch, shape, input_text, output_text, fixes",
    [
        (layers.Dense(6, name="widen"), (4,), "(None, 4)", "(None, 6)", ["'projection'", "'none'"]),
        (
            layers.Conv2D(6, 3, strides=2, padding="same", name="down"),
            (8, 8, 3),
            "(None, 8, 8, 3)",
            "(None, 4, 4, 6)",
            ["'projection'", "'zero_pad'", "'avg_down'", "'none'"],
        ),
    ],
    ids=["dense", "conv"],
)
def test_mismatch_error_at_build_names_layer_shapes_and_fixes(
    branch, shape, input_text, output_text, fixes
):
    with pytest.raises(ValueError) as info:
        Residual(branch)(keras.Input(shape))
    message = str(info.value)
    for text in [f"'{branch.name}'", input_text, output_text, *fixes]:
        assert text in message
    # Each suggested string shortcut does build.
    for fix in fixes:
        rebuilt = type(branch).from_config(branch.get_config())
        Residual(rebuilt, shortcut=fix.strip("'"))(keras.Input(shape))


def test_unbridgeable_projection_is_a_clear_build_error():
    branch = layers.Conv2D(4, 6, padding="valid", name="shrink")  # 9 -> 4: no integer stride
    with pytest.raises(ValueError, match="'shrink'.*shortcut='projection'.*No integer stride"):
        Residual(branch, shortcut="projection")(keras.Input((9, 9, 3)))


def test_projection_bridges_a_valid_strided_conv():
    # 5 -> 2 positions needs stride 3 (round(5 / 2) = 2 would give 3 positions).
    block = Residual(layers.Conv2D(4, 3, strides=2, padding="valid"), shortcut="projection")
    y = block(random_input((1, 5, 5, 3)))
    assert tuple(y.shape) == (1, 2, 2, 4)
    assert tuple(block.shortcut_layer.strides) == (3, 3)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"shortcut": "diagonal"}, "shortcut='diagonal'"),
        ({"merge": "concat"}, "merge='concat'"),
        ({"shortcut_from": "output"}, "shortcut_from='output'"),
        ({"drop_rate": 1.0}, "drop_rate=1.0"),
        ({"drop_mode": "layer"}, "'layer'"),
        ({"drop_scaling": "never"}, "'never'"),
        ({"preactivation": "gelu"}, "preactivation='gelu'"),
        ({"preactivation": "bn-relu"}, "preactivation='bn-relu'"),
        ({"drop_rate": 0.2, "shortcut": "none"}, "shortcut='none'"),
        ({"data_format": "NHWC"}, "data_format='NHWC'"),
    ],
)
def test_invalid_arguments_say_what_was_received(kwargs, text):
    # Every option is checked in __init__, before the block is called.
    with pytest.raises(ValueError, match="Received") as info:
        Residual(layers.Dense(4), **kwargs)
    assert text in str(info.value)


# ------------------------------------------------------------------- XLA (TF)


def _xla_model() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = Residual(
        _conv_down(4), shortcut=kr.ProjectionShortcut(batchnorm=True), merge="highway",
        activation="relu",
    )(inputs)
    x = Residual(layers.Conv2D(4, 3, padding="same"), preactivation="bn_relu", merge="rezero")(x)
    x = Residual(layers.Conv2D(6, 3, padding="same"), shortcut="zero_pad")(x)
    outputs = layers.Dense(2)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@pytest.mark.backends("tensorflow", reason="jit_compile=True is XLA through tf.function; "
                      "JAX always compiles and PyTorch's jit_compile is torch.compile")
def test_jit_compile_training_matches_graph_training():
    x, target = random_input((8, 6, 6, 3)), random_input((8, 2), seed=1)
    losses = []
    weights = None
    for jit in (False, True):
        model = _xla_model()
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit)
        history = model.fit(x, target, batch_size=4, epochs=2, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


# ------------------------------------------------- call arguments of the branch

STEPS, DIM = 5, 8


def _attention_causal():
    mha = layers.MultiHeadAttention(2, 4, name="mha")
    inputs = [keras.Input((STEPS, DIM))]
    outputs = Residual(mha, name="block")(inputs[0], use_causal_mask=True)
    return mha, inputs, outputs, lambda x, _: mha(x, x, use_causal_mask=True)


def _attention_mask():
    mha = layers.MultiHeadAttention(2, 4, name="mha")
    inputs = [keras.Input((STEPS, DIM)), keras.Input((STEPS, STEPS), dtype="bool")]
    outputs = Residual(mha, name="block")(inputs[0], attention_mask=inputs[1])
    return mha, inputs, outputs, lambda x, extra: mha(x, x, attention_mask=extra)


def _gru_initial_state():
    gru = layers.GRU(DIM, return_sequences=True, name="gru")
    inputs = [keras.Input((STEPS, DIM)), keras.Input((DIM,))]
    outputs = Residual(gru, name="block")(inputs[0], initial_state=[inputs[1]])
    return gru, inputs, outputs, lambda x, extra: gru(x, initial_state=[extra])


CALL_ARGUMENTS = {"use_causal_mask": _attention_causal, "attention_mask": _attention_mask,
                  "initial_state": _gru_initial_state}


@pytest.mark.parametrize("argument", list(CALL_ARGUMENTS))
def test_call_arguments_reach_the_wrapped_layer_and_survive_saving(argument, tmp_path):
    layer, inputs, outputs, unwrapped = CALL_ARGUMENTS[argument]()
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, STEPS, DIM)).astype("float32")
    extra = {"use_causal_mask": None,
             "attention_mask": rng.random((3, STEPS, STEPS)) < 0.6,
             "initial_state": rng.normal(size=(3, DIM)).astype("float32")}[argument]
    data = [x] if extra is None else [x, extra]
    # The unwrapped layer plus x, called with the argument and without it.
    tensor = None if extra is None else keras.ops.convert_to_tensor(extra)
    expected = to_numpy(unwrapped(keras.ops.convert_to_tensor(x), tensor)) + x
    plain = to_numpy(layer(x, x) if argument != "initial_state" else layer(x)) + x
    assert not np.allclose(expected, plain, atol=1e-4)  # the argument changes the output
    np.testing.assert_allclose(model.predict(data, verbose=0), expected, rtol=1e-5, atol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(data, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_call_arguments_the_wrapped_layer_does_not_take_are_refused_by_name():
    x = np.zeros((2, STEPS, DIM), "float32")
    with pytest.raises(ValueError, match=r"branch 'fc' \(Dense\), whose call takes no further "
                                         r"arguments .*Received: call arguments "
                                         r"\['use_causal_mask'\]"):
        Residual(layers.Dense(DIM, name="fc"))(x, use_causal_mask=True)
    with pytest.raises(ValueError, match=r"whose call takes attention_mask, key_mask, "
                                         r"use_causal_mask .*Received: call arguments "
                                         r"\['initial_state'\]"):
        Residual(layers.MultiHeadAttention(2, 4))(x, initial_state=[x[:, 0]])


def test_a_skipped_branch_gets_zero_gradients_and_no_warning(recwarn):
    # drop_rate 0.999: every step of this fit skips the branch (seeded draws).
    inputs = keras.Input((4,))
    block = Residual(layers.Dense(4), drop_rate=0.999, seed=1, name="block")
    model = keras.Model(inputs, layers.Dense(2, name="head")(block(layers.Dense(4)(inputs))))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    branch = [to_numpy(v) for v in block.layer.weights]
    head = to_numpy(model.get_layer("head").kernel)
    model.fit(np.ones((16, 4), "float32"), np.ones((16, 2), "float32"), batch_size=4, verbose=0)
    assert not [w for w in recwarn if "Gradients do not exist" in str(w.message)]
    # Plain SGD moves a weight only by its gradient: zero for the skipped branch.
    for before, variable in zip(branch, block.layer.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(variable), before)
    assert not np.array_equal(to_numpy(model.get_layer("head").kernel), head)
