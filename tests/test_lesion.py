"""Lesion surgery and studies against hand-built equivalent models and closed forms."""

import itertools

import keras
import numpy as np
import pytest
from keras import layers
from scipy import stats
from script_runs import SCRIPT_RUN, SCRIPT_RUN_TORCH, run_script

from keras_residual import ProjectionShortcut, Residual, surgery
from keras_residual import lesion as studies
from keras_residual.gradients import input_gradient
from keras_residual.lesion import schedules

WIDTH = 4


def _chain():
    """stem, b0, [b1, b2 (projection)] nested, b3, b4, head; and its parts for hand-building."""
    parts = {
        "stem": layers.Dense(WIDTH, name="stem"),
        "b0": Residual(layers.Dense(WIDTH, activation="tanh"), name="b0"),
        "b1": Residual(layers.Dense(WIDTH, activation="tanh"), name="b1"),
        "proj": ProjectionShortcut(name="proj"),
        "b3": Residual(layers.Dense(WIDTH + 2, activation="tanh"), name="b3"),
        "b4": Residual(layers.Dense(WIDTH + 2, activation="tanh"), name="b4"),
        "head": layers.Dense(3, activation="softmax", name="head"),
    }
    parts["b2"] = Residual(layers.Dense(WIDTH + 2, activation="tanh"), shortcut=parts["proj"], name="b2")
    inputs = keras.Input((WIDTH,))
    x = parts["b0"](parts["stem"](inputs))
    stage = keras.Sequential([keras.Input((WIDTH,)), parts["b1"], parts["b2"]], name="stage")
    x = parts["b4"](parts["b3"](stage(x)))
    model = keras.Model(inputs, parts["head"](x))
    for block in surgery.residual_blocks(model):  # non-trivial branches
        block.layer.kernel.assign(keras.random.normal(block.layer.kernel.shape, seed=1))
    return model, parts


def _hand_built(parts, sequence):
    """A plain functional chain calling `parts[name]` for each name in order."""
    inputs = keras.Input((WIDTH,))
    x = inputs
    for name in sequence:
        x = parts[name](x)
    return keras.Model(inputs, x)


CHAIN = ["stem", "b0", "b1", "b2", "b3", "b4", "head"]


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, WIDTH)).astype("float32"), rng.integers(0, 3, n)


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _error(model, x, y):
    return float(np.mean(np.argmax(_predict(model, x), -1) != y))


def _snapshot(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def _assert_same(before, model):
    for a, b in zip(before, _snapshot(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.multibackend
def test_residual_blocks_in_network_order_through_nested_models():
    model, _ = _chain()
    assert [b.name for b in surgery.residual_blocks(model)] == ["b0", "b1", "b2", "b3", "b4"]
    assert [surgery.swappable(b) for b in surgery.residual_blocks(model)] == [
        True, True, False, True, True,
    ]


@pytest.mark.multibackend
def test_deleting_a_block_equals_the_hand_built_net_without_it():
    model, parts = _chain()
    x, _ = _data(8)
    before = _snapshot(model)
    for index in range(5):
        name = f"b{index}"
        # A deleted block leaves its shortcut: nothing, or the projection for b2.
        sequence = [("proj" if name == "b2" else None) if s == name else s for s in CHAIN]
        expected = _predict(_hand_built(parts, [s for s in sequence if s]), x)
        with surgery.deleted_blocks(model, [index]):
            np.testing.assert_allclose(_predict(model, x), expected, rtol=1e-5, atol=1e-6)
        if index == 2:  # the clone path, through the projection block
            lesioned = surgery.delete_blocks(model, [name])
            np.testing.assert_allclose(_predict(lesioned, x), expected, rtol=1e-5, atol=1e-6)
    _assert_same(before, model)
    assert all(b.branch_enabled for b in surgery.residual_blocks(model))


@pytest.mark.multibackend
def test_context_managers_restore_the_model_on_exceptions():
    model, _ = _chain()
    before = _snapshot(model)
    with pytest.raises(RuntimeError):
        with surgery.deleted_blocks(model, [0, "b3"]):
            raise RuntimeError("inside the lesion")
    with pytest.raises(RuntimeError):
        with surgery.routed_gradients(model, branch=[1], shortcut=[0, 2]):
            raise RuntimeError("inside the routing")
    _assert_same(before, model)
    assert [b.gradient_route for b in surgery.residual_blocks(model)] == ["both"] * 5
    with pytest.raises(ValueError, match="not a block"):
        with surgery.deleted_blocks(model, ["nope"]):
            pass


@pytest.mark.multibackend
def test_reordering_equals_the_hand_built_net_in_that_order():
    model, parts = _chain()
    x, _ = _data(8)
    reordered = surgery.reorder_blocks(model, [1, 0, 2, 4, 3])
    expected = _hand_built(parts, ["stem", "b1", "b0", "b2", "b4", "b3", "head"])
    np.testing.assert_allclose(
        reordered.predict(x, verbose=0), _predict(expected, x), rtol=1e-5, atol=1e-6
    )
    assert not {id(w) for w in reordered.weights} & {id(w) for w in model.weights}
    shared = surgery.reorder_blocks(model, [1, 0, 2, 4, 3], share_weights=True)
    np.testing.assert_allclose(
        shared.predict(x, verbose=0), _predict(expected, x), rtol=1e-5, atol=1e-6
    )
    assert {id(w) for w in shared.weights} == {id(w) for w in model.weights}


@pytest.mark.multibackend
def test_training_a_surgery_result_leaves_the_original_unchanged():
    model, _ = _chain()
    x, y = _data(16)
    before = _predict(model, x)
    results = {
        "delete_blocks": surgery.delete_blocks(model, [0]),
        "reorder_blocks": surgery.reorder_blocks(model, [1, 0, 2, 4, 3]),
        "insert_blocks": surgery.insert_blocks(model, after="b0", check_data=x),
        "remove_layers": surgery.remove_layers(model, ["b4"]),
    }
    for name, result in results.items():
        start = _predict(result, x)
        result.compile(
            optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy",
            run_eagerly=True,
        )
        result.fit(x, y, epochs=1, batch_size=8, verbose=0)
        assert not np.allclose(_predict(result, x), start), f"{name}: the fit changed nothing"
        np.testing.assert_array_equal(_predict(model, x), before, err_msg=name)


@pytest.mark.multibackend
def test_reordering_incompatible_blocks_is_a_value_error():
    model, _ = _chain()
    for order, match in [([2, 1, 0, 3, 4], "cannot take the place"),
                         ([3, 1, 2, 0, 4], "cannot take the place"),
                         ([0, 1, 2, 3], "permutation"), ([0, 0, 2, 3, 4], "permutation")]:
        with pytest.raises(ValueError, match=match):
            surgery.reorder_blocks(model, order)


@pytest.mark.multibackend
def test_the_reorder_error_names_the_block_that_cannot_move_and_why():
    def model(**second):
        inputs = keras.Input((WIDTH,))
        x = Residual(layers.Dense(WIDTH), name="first")(inputs)
        x = Residual(layers.Dense(WIDTH), name="second", **second)(x)
        return keras.Model(inputs, Residual(layers.Dense(WIDTH), name="third")(x))

    cases = [
        ({"shortcut": ProjectionShortcut(name="proj")},
         "block 'second' has a ProjectionShortcut shortcut ('proj'), not the identity"),
        ({"preactivation": "relu", "shortcut_from": "preactivated"},
         "the shortcut of block 'second' passes on its pre-activated input"),
    ]
    for second, why in cases:
        with pytest.raises(ValueError) as error:
            surgery.reorder_blocks(model(**second), [0, 2, 1])
        assert str(error.value).startswith(
            f"Block 'third' (block 2) cannot take the place of 'second' (block 1): {why}"
        )
    chain = _chain()[0]
    for order, why in [
        ([2, 1, 0, 3, 4], "Block 'b2' (block 2) cannot take the place of 'b0' (block 0): block "
                          "'b2' maps (None, 4) to (None, 6) (a downsampling block)."),
        ([3, 1, 2, 0, 4], "Block 'b3' (block 3) cannot take the place of 'b0' (block 0): block "
                          "'b3' takes inputs of shape (None, 6), block 'b0' of shape (None, 4)."),
    ]:
        with pytest.raises(ValueError) as error:
            surgery.reorder_blocks(chain, order)
        assert str(error.value).startswith(why)


def _plain():
    parts = {name: layers.Dense(WIDTH, activation="relu", name=name) for name in "abcd"}
    parts["head"] = layers.Dense(3, activation="softmax", name="head")
    parts["in"] = layers.Dense(WIDTH + 1, name="in")
    parts["out"] = layers.Dense(WIDTH, name="out")
    model = keras.Sequential([keras.Input((WIDTH,))] + [parts[n] for n in "abcd"] + [parts["head"]])
    return model, parts


@pytest.mark.multibackend
def test_removing_a_plain_layer_equals_the_hand_built_net_without_it():
    model, parts = _plain()
    x, _ = _data(8)
    assert [layer.name for layer in surgery.removable_layers(model)] == list("abcd")
    removed = surgery.remove_layers(model, ["b"])
    expected = _hand_built(parts, ["a", "c", "d", "head"])
    np.testing.assert_allclose(
        removed.predict(x, verbose=0), _predict(expected, x), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="equal input and output"):
        surgery.remove_layers(model, ["head"])


def _scalar_chain(weights):
    """Blocks y = x + w_i x (scalar Dense branches): a path's gradient is a product of w_i."""
    inputs = keras.Input((1,))
    x = inputs
    for i, w in enumerate(weights):
        block = Residual(layers.Dense(1, use_bias=False), name=f"s{i}")
        x = block(x)
        block.layer.kernel.assign([[w]])
    return keras.Model(inputs, x)


@pytest.mark.multibackend
def test_gradient_of_one_path_is_the_product_of_its_branch_weights():
    weights = [0.5, -2.0, 3.0, 0.25]
    model = _scalar_chain(weights)
    for on_path in itertools.chain.from_iterable(
        itertools.combinations(range(4), k) for k in range(5)
    ):
        off_path = [i for i in range(4) if i not in on_path]
        with surgery.routed_gradients(model, branch=on_path, shortcut=off_path):
            grad = input_gradient(lambda t: keras.ops.sum(model(t)), np.array([[1.7]]))
        assert grad[0, 0] == pytest.approx(np.prod([weights[i] for i in on_path]), rel=1e-5)
    # Both paths everywhere: d/dx of prod(1 + w_i) x.
    grad = input_gradient(lambda t: keras.ops.sum(model(t)), np.array([[1.7]]))
    assert grad[0, 0] == pytest.approx(np.prod(1 + np.array(weights)), rel=1e-5)


@pytest.mark.multibackend
def test_gradient_per_path_length_study_matches_the_closed_form():
    n, w = 6, 0.5
    model = _scalar_chain([w] * n)
    data = (np.array([[1.0]]), np.array([0]))
    result = studies.gradient_per_path_length(
        model, data, lengths=[0, 2, 4, 6], samples=3, batch_size=5,
        loss=lambda y, p: p[:, 0], progress=False,
    )
    # One path of length k through branches of weight w: gradient w^k, every sample.
    np.testing.assert_allclose(result.norms, np.repeat(w ** np.array([[0], [2], [4], [6]]), 3, 1),
                               rtol=1e-5)
    np.testing.assert_allclose(result.per_path, w ** np.arange(n + 1), rtol=1e-5)
    # C(n, k) w^k normalized is Binomial(n, w / (1 + w)).
    np.testing.assert_allclose(
        result.total, stats.binom.pmf(np.arange(n + 1), n, w / (1 + w)), rtol=1e-5
    )
    assert result.measured.tolist() == [True, False, True, False, True, False, True]
    assert result.interpolated_lengths.tolist() == [1, 3, 5]
    assert result.samples_per_length == 3
    lo, hi = result.effective_range
    assert result.effective_share == pytest.approx(result.total[lo : hi + 1].sum())
    assert [b.gradient_route for b in surgery.residual_blocks(model)] == ["both"] * n


@pytest.mark.multibackend
def test_batch_mode_gradient_is_the_numpy_training_mode_gradient_of_the_batch_mean_loss():
    # One block x + 3 * BN(x) (training mode: batch statistics), loss p^2 per sample,
    # the gradient of the batch's mean loss at the block input (Veit et al. 2016, Sec. 5).
    inputs = keras.Input((1,))
    branch = keras.Sequential([layers.BatchNormalization(epsilon=1e-3),
                               layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    block = Residual(branch)
    model = keras.Model(inputs, block(inputs))
    branch.layers[1].kernel.assign([[3.0]])
    bn = branch.layers[0]
    bn.moving_mean.assign([5.0])  # far from the batch's: inference mode would differ
    x = np.array([0.3, -1.2, 2.0, 0.7, -0.4, 1.1])
    mu, var = x.mean(), x.var()
    sigma = np.sqrt(var + 1e-3)
    xhat = (x - mu) / sigma
    p = x + 3.0 * xhat
    b = len(x)
    jacobian = (np.eye(b) - 1.0 / b - np.outer(xhat, xhat) / b) / sigma  # d xhat_i / d x_j
    shortcut_only = 2.0 * p / b
    branch_only = (2.0 * p * 3.0) @ jacobian / b
    result = studies.gradient_per_path_length(
        model, (x[:, None], np.zeros(b)), lengths=[0, 1], samples=2, batch_size=b,
        loss=lambda y, q: q[:, 0] ** 2, mode="batch", progress=False)
    expected = [np.linalg.norm(shortcut_only), np.linalg.norm(branch_only)]
    # (float32: the branch path's gradient nearly cancels, hence the absolute tolerance)
    np.testing.assert_allclose(result.norms, np.repeat(np.array(expected)[:, None], 2, 1),
                               rtol=1e-4, atol=1e-5)
    assert result.mode == "batch" and result.batch_size == b
    # The BatchNorm statistics of the measurement are not written to the model.
    assert keras.ops.convert_to_numpy(bn.moving_mean).tolist() == [5.0]


def _bn_conv_net():
    """A small pre-activation conv net with a strided projection block and random BN statistics."""
    rng = np.random.default_rng(3)
    inputs = keras.Input((4, 4, 2))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inputs)
    for i, stride in enumerate([1, 2]):
        branch = keras.Sequential([
            layers.Conv2D(4, 3, strides=stride, padding="same"), layers.BatchNormalization(),
            layers.ReLU(), layers.Conv2D(4, 3, padding="same"),
        ])
        x = Residual(branch, preactivation="bn_relu", name=f"block{i}",
                     shortcut="projection" if stride > 1 else "identity")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return model


@pytest.mark.multibackend
def test_per_sample_routes_equal_one_sample_at_a_time_gradient_routes():
    model = _bn_conv_net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    y = rng.integers(0, 3, 3)
    routes = np.array([[0, 0], [1, 1], [0, 1]])  # shortcuts only, branches only, mixed
    batched = studies.path_gradients(model, x, y, routes, at="input")
    loss = keras.losses.get("sparse_categorical_crossentropy")
    for j in range(3):
        on = [i for i in range(2) if routes[j, i]]
        off = [i for i in range(2) if not routes[j, i]]
        with surgery.routed_gradients(model, branch=on, shortcut=off):
            single = input_gradient(
                lambda t, j=j: keras.ops.sum(loss(y[j : j + 1], model(t, training=False))),
                x[j : j + 1],
            )
        np.testing.assert_allclose(batched[j], single[0], rtol=1e-4, atol=1e-6)
    # At the first block's input: the stem is a linear conv, so the input gradient is its
    # transposed convolution of the block-input gradient (chain rule, checked by autodiff).
    at_block = studies.path_gradients(model, x, y, routes, at="block")
    stem = model.get_layer("stem")
    for j in range(2):
        through_stem = input_gradient(
            lambda t, j=j: keras.ops.sum(stem(t) * keras.ops.convert_to_tensor(at_block[j:j + 1])),
            x[j : j + 1],
        )
        np.testing.assert_allclose(batched[j], through_stem[0], rtol=1e-4, atol=1e-6)


@pytest.mark.multibackend
@pytest.mark.parametrize("method", ["stacked", "each"])
def test_single_block_deletion_equals_hand_built_nets(method):
    model, parts = _chain()
    x, y = _data()
    before = _snapshot(model)
    result = studies.single_block_deletion(model, (x, y), batch_size=16, method=method,
                                           progress=False)
    expected = []
    for name in ["b0", "b1", "b2", "b3", "b4"]:
        sequence = [("proj" if name == "b2" else None) if s == name else s for s in CHAIN]
        expected.append(_error(_hand_built(parts, [s for s in sequence if s]), x, y))
    assert result.names.tolist() == ["b0", "b1", "b2", "b3", "b4"]
    np.testing.assert_allclose(result.errors, expected)
    assert result.intact_error == _error(_hand_built(parts, CHAIN), x, y)
    assert result.downsampling.tolist() == [False, False, True, False, False]
    _assert_same(before, model)


@pytest.mark.multibackend
def test_single_block_deletion_of_a_plain_net_removes_each_layer():
    model, parts = _plain()
    x, y = _data()
    result = studies.single_block_deletion(model, (x, y), batch_size=16, progress=False)
    expected = [
        _error(_hand_built(parts, [n for n in "abcd" if n != removed] + ["head"]), x, y)
        for removed in "abcd"
    ]
    np.testing.assert_allclose(result.errors, expected)


@pytest.mark.multibackend
def test_k_block_deletion_extremes_equal_hand_built_nets():
    model, parts = _chain()
    x, y = _data()
    result = studies.k_block_deletion(model, (x, y), ks=[0, 5], samples=2, progress=False)
    assert result.errors[0].tolist() == [_error(_hand_built(parts, CHAIN), x, y)] * 2
    all_deleted = _error(_hand_built(parts, ["stem", "proj", "head"]), x, y)
    assert result.errors[1].tolist() == [all_deleted] * 2
    with pytest.raises(ValueError, match="between 0 and 5"):
        studies.k_block_deletion(model, (x, y), ks=[6], progress=False)


def _tau(order):
    n = len(order)
    pairs = list(itertools.combinations(range(n), 2))
    return sum(np.sign(order[j] - order[i]) for i, j in pairs) / len(pairs)


@pytest.mark.multibackend
def test_reordering_study_errors_and_kendall_tau():
    model, parts = _chain()
    x, y = _data()
    names = ["b0", "b1", "b2", "b3", "b4"]
    result = studies.reordering(model, (x, y), ks=[0, 1, 2], samples=2, seed=3, progress=False)
    for row, k in enumerate(result.ks):
        for s in range(2):
            order = result.orders[row, s]
            assert np.sum(order != np.arange(5)) == 2 * k  # distinct compatible pairs
            assert order[2] == 2  # the downsampling block never moves
            # Veit et al. 2016, Sec. 4.3: tau over the blocks that can move (b0, b1, b3, b4).
            assert result.kendall_tau[row, s] == pytest.approx(_tau(order[[0, 1, 3, 4]]))
            assert result.kendall_tau_all[row, s] == pytest.approx(_tau(order))
            sequence = ["stem"] + [names[i] for i in order] + ["head"]
            assert result.errors[row, s] == _error(_hand_built(parts, sequence), x, y)


@pytest.mark.multibackend
def test_studies_leave_the_model_untouched_even_when_they_fail(monkeypatch):
    model, _ = _chain()
    x, y = _data(16)
    runs = {
        "single": lambda: studies.single_block_deletion(model, (x, y), method="each",
                                                        progress=False),
        "k": lambda: studies.k_block_deletion(model, (x, y), [2], samples=2, progress=False),
        "reorder": lambda: studies.reordering(model, (x, y), [1], samples=2, progress=False),
        "gradient": lambda: studies.gradient_per_path_length(
            model, (x, y), [1, 2], samples=1, progress=False),
        "gradient_batch": lambda: studies.gradient_per_path_length(
            model, (x, y), [1, 2], samples=2, batch_size=8, mode="batch", progress=False),
    }
    before = _snapshot(model)
    for run in runs.values():
        run()
        _assert_same(before, model)

    calls = []

    def failing(*args, **kwargs):
        # The first evaluation (the intact one) passes, a lesioned one fails.
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("evaluation failed")
        return 0.0

    from keras_residual.lesion import deletion, gradient_paths, order

    monkeypatch.setattr(deletion, "evaluate", failing)
    monkeypatch.setattr(order, "evaluate", failing)
    monkeypatch.setattr(gradient_paths, "input_gradient", lambda fn, x: failing())
    monkeypatch.setattr(gradient_paths, "input_gradient_function",
                        lambda fn: lambda *args: failing())
    for name, run in runs.items():
        calls.clear()
        if name.startswith("gradient"):
            calls.append(1)
        with pytest.raises(RuntimeError):
            run()
        _assert_same(before, model)


@pytest.mark.multibackend
def test_effective_path_training_enables_exactly_m_blocks_per_compiled_step():
    model, _ = _chain()
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    blocks = surgery.residual_blocks(model)
    before = [keras.ops.convert_to_numpy(b.layer.kernel).copy() for b in blocks]
    callback = schedules.EffectivePathTraining(active=1, seed=4)
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    assert len(callback.history) == 2 and all(h.sum() == 1 for h in callback.history)
    assert not np.array_equal(*callback.history)  # the seed draws two different blocks
    changed = [
        not np.allclose(b0, keras.ops.convert_to_numpy(b.layer.kernel))
        for b0, b in zip(before, blocks, strict=True)
    ]
    # Only the branches enabled in some step were trained, in every step.
    assert changed == (callback.history[0] | callback.history[1]).tolist()
    assert all(b.branch_enabled for b in blocks)
    assert all(b.branch_scale == 1.0 for b in blocks)  # restored after training
    with pytest.raises(ValueError, match="Cannot enable 6"):
        model.fit(x, y, verbose=0, callbacks=[schedules.EffectivePathTraining(active=6)])


@pytest.mark.multibackend
def test_effective_path_training_scales_the_trained_branches_by_n_over_m():
    model, _ = _chain()  # 5 blocks
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    blocks = surgery.residual_blocks(model)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append([(b.branch_enabled, b.branch_scale) for b in blocks])

    paths = schedules.EffectivePathTraining(active=2, seed=1)
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[paths, Record()])
    for step in seen:
        assert sum(on for on, _ in step) == 2
        assert [scale for _, scale in step] == [2.5 if on else 1.0 for on, _ in step]
    unscaled = schedules.EffectivePathTraining(active=2, seed=1, rescale=False)
    seen.clear()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[unscaled, Record()])
    assert all(scale == 1.0 for step in seen for _, scale in step)
    assert all(b.branch_scale == 1.0 and b.branch_enabled for b in blocks)


@pytest.mark.multibackend
def test_stochastic_depth_copy_has_linear_rates_and_the_same_function():
    model, _ = _chain()
    copy = schedules.with_stochastic_depth(model, final_survival=0.5)
    rates = [b.drop_rate for b in surgery.residual_blocks(copy)]
    np.testing.assert_allclose(rates, [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(schedules.linear_decay_drop_rates(1, 0.8), [0.2])
    x, _ = _data(8)
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.multibackend
def test_stochastic_depth_on_a_plain_twin_names_the_blocks_without_shortcut():
    inputs = keras.Input((3,))
    x = Residual(keras.layers.Dense(3), name="res")(inputs)
    x = Residual(keras.layers.Dense(3), shortcut="none", name="plain1")(x)
    model = keras.Model(inputs, Residual(keras.layers.Dense(3), shortcut="none", name="plain2")(x))
    with pytest.raises(ValueError, match=r"2 of the 3 blocks .* no shortcut .*\['plain1', 'plain2'\]"):
        schedules.with_stochastic_depth(model)


@pytest.mark.backends("tensorflow", reason="a tf.data pipeline feeds the TensorFlow backend; "
                      "JAX and PyTorch read NumPy arrays in the tests above")
def test_single_block_deletion_reads_a_tf_data_dataset():
    import tensorflow as tf

    model, _ = _chain()
    x, y = _data()
    from_arrays = studies.single_block_deletion(model, (x, y), progress=False)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    from_dataset = studies.single_block_deletion(model, dataset, progress=False)
    np.testing.assert_array_equal(from_arrays.errors, from_dataset.errors)


def _mnist_mlp(plain):
    """A residual MLP on MNIST (8 pre-activation blocks) or its plain twin."""
    inputs = keras.Input((784,))
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(layers.Dense(64)(inputs)))
    for i in range(8):
        branch = keras.Sequential(
            [layers.BatchNormalization(momentum=0.9), layers.ReLU(), layers.Dense(64)]
        )
        x = Residual(branch, shortcut="none" if plain else "identity", name=f"block{i}")(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    return model


@pytest.mark.backends("tensorflow", reason="trains two MNIST networks for 4 epochs (20 s); "
                      "deletion runs on every backend in the tests above")
@pytest.mark.slow
def test_trained_residual_net_survives_deletions_that_break_its_plain_twin():
    from keras_residual.datasets import load_mnist

    data = load_mnist(layout="flat", verbose=False)
    increases = {}
    for plain in (False, True):
        keras.utils.set_random_seed(0)
        model = _mnist_mlp(plain)
        model.fit(data.x_train, data.y_train, batch_size=128, epochs=4, verbose=0)
        result = studies.single_block_deletion(model, (data.x_test, data.y_test),
                                               progress=False)
        assert result.intact_error < 0.15
        increases[plain] = result.errors - result.intact_error
    # Veit et al., Fig. 3: residual blocks can go, plain layers cannot.
    assert increases[True].min() > 0.4
    assert increases[False].max() < 0.5 * increases[True].min()


def _bn_np(h, eps=1e-3):
    """Keras' BatchNormalization in training mode (gamma 1, beta 0): batch statistics."""
    return (h - h.mean(0)) / np.sqrt(h.var(0) + eps)


@pytest.mark.multibackend
def test_precise_batchnorm_sets_the_numpy_population_statistics_of_every_bn_input():
    from keras_residual.lesion import precise_batchnorm

    rng = np.random.default_rng(5)
    inputs = keras.Input((3,))
    stem = layers.Dense(4, name="stem")
    branch = keras.Sequential([layers.BatchNormalization(), layers.ReLU(), layers.Dense(4)])
    block = Residual(branch, name="block")
    head_bn = layers.BatchNormalization(name="head_bn")
    model = keras.Model(inputs, head_bn(block(stem(inputs))))
    x = (rng.normal(size=(40, 3)) * 3 + 1).astype("float32")
    batches = precise_batchnorm(model, x, batches=4, batch_size=10, shuffle=False)
    assert len(batches) == 2
    w1, b1 = (keras.ops.convert_to_numpy(v).astype("float64") for v in stem.weights)
    w2, b2 = (keras.ops.convert_to_numpy(v).astype("float64") for v in branch.layers[-1].weights)
    h = x.astype("float64") @ w1 + b1  # the branch BN's inputs
    # Each batch of 10 runs as in training: the branch BN normalizes by its batch statistics.
    out = np.concatenate([
        h[i : i + 10] + np.maximum(_bn_np(h[i : i + 10]), 0) @ w2 + b2 for i in range(0, 40, 10)
    ])
    for bn, values in ((branch.layers[0], h), (head_bn, out)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), values.mean(0),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), values.var(0),
                                   rtol=1e-4, atol=1e-5)
    # Only 2 of the 4 batches: the statistics of the first 20 samples.
    precise_batchnorm(model, (x, np.zeros(40)), batches=2, batch_size=10, shuffle=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(branch.layers[0].moving_mean),
                               h[:20].mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.multibackend
def test_effective_path_training_leaves_the_bn_statistics_of_skipped_branches_alone():
    # 4 blocks with a BN first in each branch, m = 1, 3 steps on the same batch, no
    # learning (lr 0): a block's BN moves in exactly the steps that enable it, and the
    # first block's BN input (the fixed stem output) gives the closed form
    # mean_t = mu * (1 - momentum^t) after t enabled steps.
    momentum = 0.5
    inputs = keras.Input((3,))
    x = layers.Dense(3, name="stem")(inputs)
    blocks = []
    for i in range(4):
        block = Residual(keras.Sequential([layers.BatchNormalization(momentum=momentum),
                                           layers.Dense(3)]), name=f"b{i}")
        blocks.append(block)
        x = block(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(2)
    xb = rng.normal(size=(8, 3)).astype("float32") + 2.0
    data = (np.tile(xb, (3, 1)), np.zeros(24))
    callback = schedules.EffectivePathTraining(active=1, seed=3)
    model.fit(*data, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    history = np.array(callback.history)
    assert history.shape == (3, 4) and (history.sum(1) == 1).all()
    for i, block in enumerate(blocks):
        bn = block.layer.layers[0]
        moved = not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0.0)
        assert moved == bool(history[:, i].any()), (i, history)
        if not history[:, i].any():
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_variance), 1.0)
    stem = model.get_layer("stem")
    w, b = (keras.ops.convert_to_numpy(v) for v in stem.weights)
    mu = (xb @ w + b).mean(0)
    t = int(history[:, 0].sum())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(blocks[0].layer.layers[0].moving_mean),
                               mu * (1 - momentum**t), rtol=1e-4, atol=1e-6)


@pytest.mark.multibackend
def test_effective_path_training_auto_chooses_m_from_the_gradient_shares():
    # The paper's reading: gradient shares Binomial(54, 0.2) (5-17 effective), m = 2 * 10.8.
    shares = stats.binom.pmf(np.arange(55), 54, 0.2)
    assert schedules.EffectivePathTraining("auto", path_gradient=shares).active == 22
    with pytest.raises(ValueError, match="path_gradient"):
        schedules.EffectivePathTraining("auto")


@pytest.mark.multibackend
def test_cifar_preact_first_unit_shortcut_reads_the_activated_stem_output():
    from keras_residual.models.cifar import cifar_preact_resnet

    model = cifar_preact_resnet(20, input_shape=(8, 8, 3))
    first = model.get_layer("conv2_block1")
    first.layer.layers[-1].kernel.assign(np.zeros(first.layer.layers[-1].kernel.shape))
    bn = first.preactivation_layer.layers[0]
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=16))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=16))
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    stem = keras.Model(model.input, model.get_layer("conv1_conv").output)
    h = keras.ops.convert_to_numpy(stem(x))
    gamma, beta, mean, var = (keras.ops.convert_to_numpy(v) for v in bn.weights)
    # He et al. 2016: conv1 -> BN -> ReLU, then the split; a zero branch passes that on.
    expected = np.maximum((h - mean) / np.sqrt(var + bn.epsilon) * gamma + beta, 0)
    out = keras.Model(model.input, first.output)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-4, atol=1e-5)
    assert [b.shortcut_from for b in surgery.residual_blocks(model)][:2] == ["preactivated", "input"]


@pytest.mark.multibackend
@pytest.mark.parametrize("placement", ["full_preact", "relu_preact"])
def test_experiment_preact_placements_split_the_first_unit_after_its_activation(placement):
    from keras_residual.experiments.networks import cifar_net

    model = cifar_net(14, widths=(4, 8, 16), input_shape=(6, 6, 3), placement=placement)
    first = model.get_layer("conv2_block1")
    kernel = [v for v in first.layer.weights if "kernel" in v.path][-1]
    kernel.assign(np.zeros(kernel.shape))  # a zero branch passes the shortcut on
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    h = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("conv1_conv").output)(x))
    if placement == "full_preact":
        bn = first.part("preactivation").layer.layers[0]
        bn.moving_mean.assign(rng.normal(size=4))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=4))
        gamma, beta, mean, var = (keras.ops.convert_to_numpy(v) for v in bn.weights)
        h = (h - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
    # He et al. 2016, appendix: conv1 -> (BN ->) ReLU, then the split.
    out = keras.ops.convert_to_numpy(keras.Model(model.input, first.output)(x))
    np.testing.assert_allclose(out, np.maximum(h, 0), rtol=1e-4, atol=1e-5)


@pytest.mark.shapes_only
@pytest.mark.multibackend
def test_paper_layout_v2_strides_and_projects_the_first_block_of_each_stage():
    from keras_residual.models.cifar import resnet_v2_paper
    from keras_residual.models.imagenet import resnet50_v2

    paper = resnet_v2_paper(50, input_shape=(64, 64, 3))
    keras_layout = resnet50_v2(input_shape=(64, 64, 3))

    def layout(model):
        return [(b.name, type(b.shortcut_layer).__name__ if b.shortcut_layer is not None else "id",
                 tuple(b.output.shape[1:3])) for b in surgery.residual_blocks(model)]

    rows = layout(paper)
    non_identity = [name for name, kind, _ in rows if kind != "id"]
    assert non_identity == ["conv2_block1", "conv3_block1", "conv4_block1", "conv5_block1"]
    # 64x64 input: stem to 16x16; stages at 16, 8, 4, 2, the stride in each first block.
    sizes = {name: size for name, _, size in rows}
    assert [sizes[f"conv{s}_block1"] for s in (2, 3, 4, 5)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert len([r for r in layout(keras_layout) if r[1] != "id"]) == 7
    assert paper.count_params() == keras_layout.count_params()  # max-pools carry no weights


@SCRIPT_RUN
@pytest.mark.slow
def test_gradient_paths_benchmark_quick_checks_its_routes(tmp_path):
    stdout = run_script("benchmarks/gradient_paths.py", tmp_path, "--quick")
    assert "match the one-at-a-time" in stdout


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_ensemble54_quick_writes_results_json(tmp_path):
    import json
    import os

    out = tmp_path / "out"
    run_script("examples/lesion_study.py", tmp_path, "--quick", "--preset", "ensemble54",
               "--seeds", "2", "--out", str(out))
    results = json.loads((out / "results.json").read_text())
    n = results["blocks"]
    ept = results["effective_path_training"]
    assert 1 <= ept["m"] <= n and len(ept["normal_error"]) == len(ept["effective_error"]) == 2
    lo, hi = results["effective_path_range"]
    assert 0 <= lo <= hi <= n
    single = results["single_deletion"]
    assert len(single["residual_errors"]) == len(single["plain_errors"]) == n
    assert results["gradient_samples_per_length"] == 20
    measured, interpolated = (results["gradient_measured_lengths"],
                              results["gradient_interpolated_lengths"])
    assert sorted(measured + interpolated) == list(range(n + 1))
    for name in results["figures"].values():
        assert os.path.exists(out / name)
    assert "| Veit et al. 2016 |" in (out / "results.md").read_text()
    batch = results["gradient_batch_mode"]
    assert batch["samples_per_length"] == 20 and 0 <= batch["effective_path_range"][0] <= n
    rows = {row["setting"]: row for row in results["effective_path_ablation"]}
    assert len(rows) == 7 and all(len(r["effective_error"]) == 2 for r in rows.values())
    assert rows["m = round(23/54 n)"]["m"] == round(23 / 54 * n)  # Veit et al. 2016, Sec. 5
    control = rows["m = n (control)"]
    assert control["m"] == n
    # Every block in every batch at scale 1 is normal training: same seeds, same result.
    np.testing.assert_allclose(control["effective_error"], control["normal_error"], atol=0.03)
    assert rows["5x epochs"]["epochs"] == 5 * results["epochs"]


@pytest.mark.multibackend
def test_precise_batchnorm_records_inside_a_lesion_ready_block():
    """A lesion-ready block gates its branch with `ops.cond` (which JAX traces even eagerly):
    the statistics of a BN layer inside the branch are still the NumPy moments of its inputs."""
    from keras_residual.lesion import precise_batchnorm

    inputs = keras.Input((3,))
    dense = layers.Dense(3)
    block = Residual(keras.Sequential([dense, layers.BatchNormalization()]))
    model = keras.Model(inputs, block(inputs))
    from keras_residual import set_lesion_ready

    set_lesion_ready(model)
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    precise_batchnorm(model, x, batches=1, batch_size=16, shuffle=False)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    h = x.astype("float64") @ kernel + bias
    bn = block.layer.layers[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), h.mean(0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), h.var(0),
                               rtol=1e-5, atol=1e-6)
