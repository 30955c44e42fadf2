"""The Residual core contract: Keras' own layer harness, zero cost unless
lesion-ready, reuse on other shapes, the public lesion-state API, what a
deleted or dropped block outputs, and errors that name the fix.

References are computed another way: NumPy from the layer weights, the
wrapped layer called on its own, the same network written with
`layers.Add`, and the traced graphs of both.
"""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest
from keras import layers
from keras.src import testing
from layer_test_utils import check_values_survive_round_trips, random_input, to_numpy
from test_residual import OPTIONS, WRAPPED_LAYERS

import keras_residual as kr
from keras_residual import LesionState, Residual

pytestmark = pytest.mark.multibackend

BACKEND = keras.backend.backend()


# ------------------------------------------------ Keras' own layer-test harness


def _init_kwargs(block: Residual) -> dict:
    """Constructor arguments that rebuild `block` (its sub-layers shared)."""
    return dict(
        layer=block.layer,
        shortcut=block.shortcut,
        merge=block.merge,
        activation=block.activation,
        preactivation=block.preactivation,
        shortcut_from=block.shortcut_from,
        drop_rate=block.drop_rate,
        drop_mode=block.drop_mode,
        drop_scaling=block.drop_scaling,
        data_format=block.data_format,
        seed=block.seed,
    )


def _keras_harness() -> testing.TestCase:
    harness = testing.TestCase()
    harness.setUp()
    return harness


# Every kind and option as users build them; the lesion-ready mode on a
# representative subset (its extra variable and ops do not depend on the branch).
HARNESS_CASES = [(case, False) for case in sorted(WRAPPED_LAYERS) + sorted(OPTIONS)] + [
    (case, True) for case in ("conv2d", "gru", "shortcut_projection_conv_bn", "shortcut_none")
]


@pytest.mark.parametrize("case, lesion_ready", HARNESS_CASES)
def test_keras_run_layer_test(case, lesion_ready):
    """Keras' `run_layer_test` (what Bidirectional passes), then the values it does not
    compare: round trips and mixed precision against float32 (`layer_test_utils`)."""
    make, shape = {**WRAPPED_LAYERS, **OPTIONS}[case]
    block = make()
    kwargs = dict(_init_kwargs(block), lesion_ready=lesion_ready)
    expected = tuple(block.compute_output_shape(shape))
    _keras_harness().run_layer_test(
        Residual,
        init_kwargs=kwargs,
        input_shape=shape,
        expected_output_shape=expected,
        expected_num_non_trainable_weights=None,
        supports_masking=True,
        # A stochastic-depth block may drop its branch on the one training step.
        run_training_check="drop" not in case,
    )
    if not lesion_ready:
        check_values_survive_round_trips(make, shape)


def test_mixed_precision_output_dtype_follows_the_wrapper_policy():
    inner = layers.Dense(4)  # float32, as a user's pretrained layer stays
    block = Residual(inner, dtype="mixed_float16")
    x = random_input((2, 4))
    y = block(x)
    spec = block.compute_output_spec(keras.KerasTensor((2, 4), dtype="float16"))
    assert keras.backend.standardize_dtype(y.dtype) == spec.dtype == "float16"
    expected = x.astype("float16").astype("float32") + (
        x.astype("float16").astype("float32") @ to_numpy(inner.kernel) + to_numpy(inner.bias)
    )
    np.testing.assert_allclose(to_numpy(y).astype("float32"), expected, rtol=5e-3, atol=5e-3)


# -------------------------------------------------------------- zero cost


def _conv_stacks(channels: int = 4, depth: int = 2) -> tuple[keras.Model, keras.Model]:
    """The same stack as Residual blocks and as Add + Activation, same weights."""
    inputs = keras.Input((6, 6, channels))
    x = inputs
    for _ in range(depth):
        x = Residual(layers.Conv2D(channels, 3, padding="same"), activation="relu")(x)
    wrapped = keras.Model(inputs, x)
    x = inputs
    for _ in range(depth):
        x = layers.Activation("relu")(layers.Add()([x, layers.Conv2D(channels, 3, padding="same")(x)]))
    plain = keras.Model(inputs, x)
    plain.set_weights(wrapped.get_weights())
    return wrapped, plain


def _traced_ops(model: keras.Model, x: np.ndarray) -> collections.Counter:
    """The primitive operations of one inference call, by name."""
    if BACKEND == "jax":
        import jax

        def run(trainable, non_trainable, data):
            return model.stateless_call(trainable, non_trainable, data)[0]

        jaxpr = jax.make_jaxpr(run)(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
        )
        return collections.Counter(eqn.primitive.name for eqn in jaxpr.jaxpr.eqns)
    import tensorflow as tf

    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec(x.shape, "float32")
    ).graph
    bookkeeping = {"Identity", "NoOp", "Const", "ReadVariableOp", "Placeholder"}
    return collections.Counter(
        op.type for op in graph.get_operations() if op.type not in bookkeeping
    )


@pytest.mark.backends("tensorflow", "jax", reason="PyTorch runs eagerly: there is no traced graph")
def test_a_block_nobody_lesions_traces_exactly_add_and_activation():
    wrapped, plain = _conv_stacks()
    x = random_input((2, 6, 6, 4))
    np.testing.assert_allclose(to_numpy(wrapped(x)), to_numpy(plain(x)), rtol=1e-6, atol=1e-6)
    assert _traced_ops(wrapped, x) == _traced_ops(plain, x)
    # A lesion-ready block adds the gate and the routes: the count must differ.
    kr.set_lesion_ready(wrapped)
    assert _traced_ops(wrapped, x) != _traced_ops(plain, x)


def test_count_params_equals_the_plain_network_unless_lesion_ready():
    wrapped, plain = _conv_stacks(depth=3)
    assert wrapped.count_params() == plain.count_params()
    with kr.lesion_ready(wrapped) as blocks:
        assert wrapped.count_params() == plain.count_params() + 4 * len(blocks)
    assert wrapped.count_params() == plain.count_params()


# ------------------------------------------------------------------ reuse


def test_reuse_on_other_sequence_lengths_gives_each_call_its_shape_and_values():
    gru = layers.GRU(8, return_sequences=True)
    block = Residual(gru)
    short, long = keras.Input((5, 8)), keras.Input((9, 8))
    assert tuple(block(short).shape) == (None, 5, 8)
    assert tuple(block(long).shape) == (None, 9, 8)
    for steps, batch in ((5, 2), (9, 3)):
        x = random_input((batch, steps, 8), seed=steps)
        np.testing.assert_allclose(
            to_numpy(block(x)), x + to_numpy(gru(x)), rtol=1e-5, atol=1e-5
        )


def test_reuse_on_other_spatial_sizes_and_a_model_using_both():
    conv = layers.Conv2D(8, 3, padding="same")
    block = Residual(conv)
    small, large = keras.Input((32, 32, 8)), keras.Input((64, 64, 8))
    y_small, y_large = block(small), block(large)
    assert tuple(y_small.shape) == (None, 32, 32, 8)
    assert tuple(y_large.shape) == (None, 64, 64, 8)
    pooled = [layers.GlobalAveragePooling2D()(y) for y in (y_small, y_large)]
    model = keras.Model([small, large], layers.Concatenate()(pooled))
    a, b = random_input((2, 32, 32, 8)), random_input((2, 64, 64, 8), seed=1)
    expected = np.concatenate(
        [(t + to_numpy(conv(t))).mean(axis=(1, 2)) for t in (a, b)], axis=-1
    )
    np.testing.assert_allclose(model.predict([a, b], verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_reuse_with_another_channel_count_fails_at_build_naming_both_shapes():
    block = Residual(layers.Conv1D(8, 3, padding="same"))
    block(keras.Input((5, 8)))
    with pytest.raises(ValueError, match=r"\(None, 5, 8\).*\(None, 7, 4\)"):
        block(keras.Input((7, 4)))


# --------------------------------------------------------- lesion-state API


def _dense_model(ready: bool = False) -> tuple[keras.Model, Residual]:
    inputs = keras.Input((3,))
    block = Residual(layers.Dense(3), name="block", lesion_ready=ready)
    return keras.Model(inputs, block(inputs)), block


def test_setting_a_lesion_on_a_block_that_is_not_ready_raises_with_the_fix():
    model, block = _dense_model()
    with pytest.raises(ValueError, match=r"not lesion-ready.*lesion_ready\(model\)"):
        block.branch_enabled = False
    block.branch_enabled = True  # the default is no lesion: accepted, nothing traced
    assert block.lesion_state is None


def test_lesion_ready_context_changes_compiled_predict_then_restores_everything():
    model, block = _dense_model()
    x = random_input((4, 3))
    kernel, bias = to_numpy(block.layer.kernel), to_numpy(block.layer.bias)
    full = x + x @ kernel + bias
    np.testing.assert_allclose(model.predict(x, verbose=0), full, rtol=1e-5, atol=1e-6)
    with kr.lesion_ready(model) as blocks:
        assert blocks == [block] and block.lesion_ready
        block.set_lesion_state(branch_enabled=False)
        np.testing.assert_allclose(model.predict(x, verbose=0), x, rtol=1e-6)
        block.set_lesion_state(LesionState(branch_scale=2.0))
        np.testing.assert_allclose(
            model.predict(x, verbose=0), x + 2.0 * (x @ kernel + bias), rtol=1e-5, atol=1e-6
        )
    assert not block.lesion_ready and block.get_lesion_state().is_default
    np.testing.assert_allclose(model.predict(x, verbose=0), full, rtol=1e-5, atol=1e-6)


def test_lesion_state_reads_and_writes_in_one_call_and_validates():
    _, block = _dense_model(ready=True)
    state = LesionState(branch_enabled=False, gradient_route="shortcut", branch_scale=0.5)
    block.set_lesion_state(state)
    assert block.get_lesion_state() == state
    assert to_numpy(block.lesion_state).tolist() == [0.0, 0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="Unknown lesion setting"):
        block.set_lesion_state(gate=0.0)
    with pytest.raises(ValueError, match="gradient_route='up'"):
        block.set_lesion_state(gradient_route="up")
    with pytest.raises(ValueError, match="restore it"):
        kr.set_lesion_ready(block, False)


def test_a_lesioned_model_saves_and_reloads_with_its_state(tmp_path):
    model, block = _dense_model()
    kr.set_lesion_ready(model)
    block.set_lesion_state(branch_enabled=False, gradient_route="branch")
    path = tmp_path / "lesioned.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    (copy,) = kr.graph.blocks(loaded, nested=True)
    assert copy.lesion_ready
    assert copy.get_lesion_state() == LesionState(False, "branch", 1.0)
    x = random_input((2, 3))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), x, rtol=1e-6)


# ------------------------------------------------ what a deleted block outputs


def _randomize_batchnorm(layer: keras.layers.Layer, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for bn in [v for v in layer.variables if "moving" in v.path or "gamma" in v.path or "beta" in v.path]:
        shape = tuple(bn.shape)
        if "variance" in bn.path:
            bn.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            bn.assign(rng.normal(0.0, 1.0, shape).astype("float32"))


def test_a_deleted_v1_block_keeps_its_projection_bn_and_relu():
    """Veit et al. (2016), Sec. 4.1 remove the residual module only; Huang et al. Eq. 2."""
    block = Residual(
        layers.Conv2D(8, 3, strides=2, padding="same"),
        shortcut=kr.ProjectionShortcut(batchnorm=True),
        activation="relu",
        lesion_ready=True,
    )
    x = random_input((2, 6, 6, 4))
    block(x)
    _randomize_batchnorm(block.shortcut_layer)
    block.branch_enabled = False
    proj, bn = block.shortcut_layer.proj, block.shortcut_layer.bn
    z = x[:, ::2, ::2, :] @ to_numpy(proj.kernel)[0, 0]
    z = (z - to_numpy(bn.moving_mean)) / np.sqrt(to_numpy(bn.moving_variance) + bn.epsilon)
    expected = np.maximum(z * to_numpy(bn.gamma) + to_numpy(bn.beta), 0.0)
    y = to_numpy(block(x, training=False))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert y.min() >= 0.0


def test_a_deleted_gated_block_passes_the_carried_shortcut():
    merge = kr.GatedMerge(bias_initializer=-1.0)
    block = Residual(layers.Dense(3), merge=merge, lesion_ready=True)
    x = random_input((2, 3))
    block(x)
    block.branch_enabled = False
    gate = merge.gate.proj
    g = 1.0 / (1.0 + np.exp(-(x @ to_numpy(gate.kernel) + to_numpy(gate.bias))))
    np.testing.assert_allclose(to_numpy(block(x)), (1.0 - g) * x, rtol=1e-5, atol=1e-6)


def test_a_deleted_multiplicative_block_passes_the_shortcut():
    block = Residual(layers.Dense(3), merge="multiply", lesion_ready=True)
    x = random_input((2, 3))
    block(x)
    block.branch_enabled = False
    np.testing.assert_allclose(to_numpy(block(x)), x, rtol=1e-6)


def _bn_branch_block(**kwargs) -> Residual:
    branch = keras.Sequential([layers.Dense(4, bias_initializer="ones"), layers.BatchNormalization()])
    return Residual(branch, **kwargs)


def test_a_deleted_branch_in_training_leaves_batchnorm_statistics_alone():
    inputs = keras.Input((4,))
    block = _bn_branch_block(lesion_ready=True)
    # A trainable head, so the loss has a gradient while the branch is deleted.
    model = keras.Model(inputs, layers.Dense(4)(block(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    bn = block.layer.layers[1]
    x, target = random_input((16, 4)), random_input((16, 4), seed=1)
    before = to_numpy(bn.moving_mean).copy()
    block.branch_enabled = False
    model.fit(x, target, batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(to_numpy(bn.moving_mean), before)
    block.branch_enabled = True
    model.fit(x, target, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(to_numpy(bn.moving_mean), before)


def test_stochastic_depth_moves_batchnorm_statistics_only_when_the_branch_survives():
    block = _bn_branch_block(drop_rate=0.5, seed=3)
    bn = block.layer.layers[1]
    x = random_input((8, 4))
    block(x)
    kept_seen = set()
    for _ in range(16):
        before = to_numpy(bn.moving_mean).copy()
        y = to_numpy(block(x, training=True))
        kept = not np.allclose(y, x)  # a dropped branch gives act(merge(x, 0)) = x
        moved = not np.array_equal(to_numpy(bn.moving_mean), before)
        assert kept == moved
        kept_seen.add(kept)
    assert kept_seen == {True, False}


# ------------------------------------------------------------------ attention


def test_multi_head_attention_is_wrapped_as_self_attention():
    attention = layers.MultiHeadAttention(2, 4)
    block = Residual(attention)
    x = random_input((2, 5, 8))
    expected = x + to_numpy(attention(x, x))
    np.testing.assert_allclose(to_numpy(block(x)), expected, rtol=1e-5, atol=1e-5)
    assert tuple(block(keras.Input((7, 8))).shape) == (None, 7, 8)


# ---------------------------------------------------------- errors that fix


@pytest.mark.parametrize(
    "branch, shape, fix, not_suggested",
    [
        (layers.Conv2D(4, 3), (6, 6, 4), "padding='same'", "'projection'"),
        (layers.LSTM(8), (5, 8), "return_sequences=True", "'projection'"),
        (layers.Flatten(), (5, 8), "cannot be wrapped", "'projection'"),
        (layers.GlobalAveragePooling2D(), (6, 6, 4), "cannot be wrapped", "'zero_pad'"),
    ],
    ids=["valid_conv", "lstm_last_step", "flatten", "global_pool"],
)
def test_mismatch_error_names_the_real_fix_and_no_shortcut_that_fails(
    branch, shape, fix, not_suggested
):
    with pytest.raises(ValueError) as info:
        Residual(branch)(keras.Input(shape))
    message = str(info.value)
    assert fix in message
    assert f"shortcut={not_suggested}" not in message and f"or {not_suggested}" not in message


def test_every_suggested_shortcut_builds():
    branch = layers.Conv2D(8, 3, strides=2, padding="same", name="down")
    with pytest.raises(ValueError) as info:
        Residual(branch)(keras.Input((8, 8, 4)))
    suggested = [k for k in ("projection", "zero_pad", "avg_down") if f"'{k}'" in str(info.value)]
    assert suggested == ["projection", "zero_pad", "avg_down"]
    for kind in suggested:
        fresh = layers.Conv2D(8, 3, strides=2, padding="same")
        assert tuple(Residual(fresh, shortcut=kind)(keras.Input((8, 8, 4))).shape) == (
            None, 4, 4, 8,
        )


# ---------------------------------------------------------- self-description


def _run_part(part, inputs, training=False):
    """Call one described part on tensors, as a tool following `parts()` would."""
    if part.layer is None:
        return inputs[0]
    if part.role == "merge":
        gate = inputs[-1] if part.layer.reads_inputs else None
        if "branch" not in part.inputs:  # deleted: (shortcut[, block input])
            return part.layer.without_branch(inputs[0], gate)
        return part.layer(inputs[0], inputs[1], gate)
    if part.role == "activation":
        return part.layer(inputs[0])
    return part.layer(inputs[0], training=training)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Residual(layers.Dense(3), activation="relu"),
        lambda: Residual(layers.Dense(5), shortcut="projection", merge="highway"),
        lambda: Residual(layers.Dense(3), preactivation="relu", shortcut="projection",
                         shortcut_from="preactivated", merge=kr.ScaledMerge(1.0, 0.5)),
        lambda: Residual(layers.Dense(3), shortcut="none", activation="tanh"),
    ],
    ids=["relu", "projection_highway", "preact_projection", "plain"],
)
def test_following_the_parts_reproduces_the_block_intact_and_deleted(make):
    block = make()
    x = random_input((2, 3))
    intact = to_numpy(block(x))
    np.testing.assert_allclose(to_numpy(block.wire(x, _run_part)), intact, rtol=1e-6, atol=1e-6)
    followed = to_numpy(block.wire(x, _run_part, deleted=True))
    kr.set_lesion_ready(block)
    block.branch_enabled = False
    np.testing.assert_allclose(followed, to_numpy(block(x)), rtol=1e-6, atol=1e-6)
    assert not np.allclose(followed, intact)


@pytest.mark.multibackend
def test_a_merge_reads_the_pre_activated_input():
    # Merge.call's `inputs` is what the branch reads: relu(x) here, not x (README options table).
    seen = []

    class Gate(kr.Merge):
        def call(self, shortcut, branch, inputs=None):
            seen.append(to_numpy(inputs))
            return shortcut + branch

    x = np.array([[-1.0, 2.0, -3.0]], "float32")
    block = kr.Residual(layers.Dense(3), preactivation="relu", merge=Gate())
    block(x)
    np.testing.assert_array_equal(seen[-1], np.maximum(x, 0.0))
