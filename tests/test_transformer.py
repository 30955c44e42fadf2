"""Residual Transformers and their lesion studies, each against a reference computed another way.

NumPy forward passes of the pre-norm block, deletion as the identity on the
stream, swaps run by hand, parallel execution by hand, Gromov's choice from
NumPy angular distances, the causal mask through rebuilt graphs, and the
per-sample path routing summed over all paths.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras.src import testing
from layer_test_utils import check_values_survive_round_trips, to_numpy
from scipy import special

from keras_residual import LayerNormAddMerge, Residual
from keras_residual.blocks import transformer_block
from keras_residual.gradients import input_gradient
from keras_residual.lesion import gradient_per_path_length, path_gradients, similarity, stream
from keras_residual.models import PositionEmbedding, tiny_causal_lm
from keras_residual.surgery import delete_blocks, parallel_blocks, reorder_blocks

VOCAB, LENGTH = 11, 6


def _layer_norm(x, gamma, beta, eps=1e-6):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _attention(x, mha, causal):
    """NumPy multi-head self-attention with the weights of a Keras MultiHeadAttention."""
    wq, bq, wk, bk, wv, bv, wo, bo = (to_numpy(w).astype("float64") for w in mha.weights)
    q, k, v = (np.einsum("btd,dhk->bthk", x, w) + b for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    scores = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], bool)), scores, -1e9)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk,hkd->btd", weights, v, wo) + bo


def _numpy_block(x, attention, mlp, causal):
    """x + MHA(LN(x)), then + Dense(GELU(Dense(LN(.)))): the pre-norm block by hand."""
    g1, b1 = (to_numpy(w) for w in attention.preactivation_layer.weights)
    x = x + _attention(_layer_norm(x, g1, b1), attention.layer, causal)
    g2, b2 = (to_numpy(w) for w in mlp.preactivation_layer.weights)
    w1, c1, w2, c2 = (to_numpy(w) for w in mlp.layer.weights)
    h = _layer_norm(x, g2, b2) @ w1 + c1
    return x + (0.5 * h * (1 + special.erf(h / np.sqrt(2)))) @ w2 + c2


def _random_weights(model, seed=0):
    """Non-trivial weights (LayerNorm gains and biases too), so that errors show."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32")
                      + (1.0 if weight.path.endswith("gamma") else 0.0))


def _lm(depth=2, seed=0):
    model = tiny_causal_lm(vocab_size=VOCAB, sequence_length=LENGTH, depth=depth, d_model=8,
                           num_heads=2, mlp_dim=16)
    _random_weights(model, seed)
    return model


def _tokens(n=8, seed=1):
    return np.random.default_rng(seed).integers(0, VOCAB, (n, LENGTH)).astype("int32")


def _stream_in(model, tokens):
    """The residual stream entering the first block: embeddings by hand."""
    x = model.get_layer("token_embedding")(tokens)
    return model.get_layer("position_embedding")(x)


def _head(model, h):
    return to_numpy(model.get_layer("next_token")(model.get_layer("final_norm")(h)))


def _block(model, name, h):
    """One sub-layer of `model` by hand, the causal mask only for attention."""
    layer = model.get_layer(name)
    return layer(h, use_causal_mask=True) if "attention" in name else layer(h)


def _by_hand(model, names, tokens):
    h = _stream_in(model, tokens)
    for name in names:
        h = _block(model, name, h)
    return _head(model, h)


SUBLAYERS = ["block1_attention", "block1_mlp", "block2_attention", "block2_mlp"]


@pytest.mark.multibackend
@pytest.mark.parametrize("causal", [False, True])
def test_pre_norm_block_matches_numpy(causal):
    attention, mlp = transformer_block(8, num_heads=2, mlp_dim=16, name="t")
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    mlp(attention(x))  # build
    for layer in (attention, mlp):
        _random_weights(layer, seed=3)
    y = to_numpy(mlp(attention(x, use_causal_mask=causal)))
    np.testing.assert_allclose(y, _numpy_block(x.astype("float64"), attention, mlp, causal),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.multibackend
def test_causal_mask_reaches_attention_future_tokens_change_nothing_before():
    model = _lm()
    tokens = _tokens(2)
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    before, after = to_numpy(model(tokens)), to_numpy(model(changed))
    np.testing.assert_allclose(before[:, :-1], after[:, :-1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(before[:, -1], after[:, -1])
    # The same through rebuilt graphs: a sub-layer swap keeps the mask with the attention.
    swapped = reorder_blocks(model, [1, 0, 2, 3], share_weights=True)
    one, two = to_numpy(swapped(tokens)), to_numpy(swapped(changed))
    np.testing.assert_allclose(one[:, :-1], two[:, :-1], rtol=1e-5, atol=1e-6)


@pytest.mark.multibackend
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_deleted_sub_layer_is_identity_on_pre_norm_stream_and_layernorm_on_post_norm(norm):
    x = np.random.default_rng(0).normal(size=(2, 4, 8)).astype("float32")
    attention, _ = transformer_block(8, num_heads=2, norm=norm)
    inputs = keras.Input((4, 8))
    model = keras.Model(inputs, attention(inputs))
    _random_weights(model, seed=2)
    deleted = to_numpy(delete_blocks(model, [0])(x))
    if norm == "pre":
        np.testing.assert_allclose(deleted, x, atol=1e-6)
    else:
        gamma, beta = (to_numpy(w) for w in attention.merge_layer.weights)
        np.testing.assert_allclose(deleted, _layer_norm(x, gamma, beta), rtol=1e-4, atol=1e-4)


@pytest.mark.backends("tensorflow", reason="Keras' layer-test harness and the .keras round trip "
                      "are backend-neutral; the layers' math runs on every backend above")
def test_new_layers_pass_keras_harness_and_models_round_trip(tmp_path):
    harness = testing.TestCase()
    harness.setUp()
    harness.run_layer_test(PositionEmbedding, init_kwargs={"sequence_length": 6},
                           input_shape=(2, 4, 8), expected_output_shape=(2, 4, 8),
                           supports_masking=True)
    check_values_survive_round_trips(lambda: PositionEmbedding(6), (2, 4, 8))
    check_values_survive_round_trips(
        lambda: Residual(keras.layers.Dense(8), merge=LayerNormAddMerge()), (2, 4, 8))
    model = _lm()
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    tokens = _tokens(2)
    np.testing.assert_allclose(to_numpy(loaded(tokens)), to_numpy(model(tokens)), rtol=1e-5,
                               atol=1e-6)


def _lm_data(n=8, seed=1):
    tokens = np.random.default_rng(seed).integers(0, VOCAB, (n, LENGTH + 1)).astype("int32")
    return stream.next_token_data(tokens)


def _error(probabilities, y):
    return float(np.mean(probabilities.argmax(-1) != y))


def _names(depth):
    return [f"block{i}_{part}" for i in range(1, depth + 1) for part in ("attention", "mlp")]


@pytest.mark.backends("tensorflow", "torch", reason="the studies are NumPy over predict, "
                      "gates and rebuilt graphs, each checked on JAX in test_lesion; JAX's eager "
                      "hand-run references would cost 10 s")
def test_deletion_studies_equal_the_stream_run_without_the_units():
    model = _lm()
    x, y = _lm_data()
    blocks = stream.unit_deletion(model, (x, y), "block", batch_size=8)
    sublayers = stream.unit_deletion(model, (x, y), "sublayer", batch_size=8, progress=False)
    assert blocks.names.tolist() == ["block1_attention+block1_mlp", "block2_attention+block2_mlp"]
    expected_blocks = [_error(_by_hand(model, SUBLAYERS[2:], x), y),
                       _error(_by_hand(model, SUBLAYERS[:2], x), y)]
    expected_sublayers = [_error(_by_hand(model, [n for n in SUBLAYERS if n != gone], x), y)
                          for gone in SUBLAYERS]
    np.testing.assert_allclose(blocks.errors, expected_blocks)
    np.testing.assert_allclose(sublayers.errors, expected_sublayers)  # the stacked sweep
    assert np.ptp(expected_sublayers + expected_blocks) > 0  # the lesions do change the error
    assert blocks.intact_error == sublayers.intact_error == _error(_by_hand(model, SUBLAYERS, x), y)
    per_position = stream.position_errors(to_numpy(model(x)), y)
    assert per_position.shape == (LENGTH,)
    np.testing.assert_allclose(per_position.mean(), blocks.intact_error)
    k = stream.k_unit_deletion(model, (x, y), [2], samples=1, batch_size=8)
    np.testing.assert_allclose(k.errors, [[_error(_by_hand(model, [], x), y)]])


@pytest.mark.backends("tensorflow", "torch", reason="JAX runs a swap through the rebuilt "
                      "graph in the causal-mask test; its eager hand-run references cost 6 s")
def test_swaps_equal_the_blocks_run_in_swapped_order_by_hand():
    model = _lm()
    x, y = _lm_data()
    units = stream.transformer_units(model, "block")
    swapped = reorder_blocks(model, stream.block_order(model, units, [1, 0]), share_weights=True)
    order = SUBLAYERS[2:] + SUBLAYERS[:2]
    np.testing.assert_allclose(to_numpy(swapped(x)), _by_hand(model, order, x), rtol=1e-5,
                               atol=1e-6)
    result = stream.adjacent_swaps(model, (x, y), "sublayer", batch_size=8)
    expected = []
    for i in range(3):
        names = list(SUBLAYERS)
        names[i], names[i + 1] = names[i + 1], names[i]
        expected.append(_error(_by_hand(model, names, x), y))
    np.testing.assert_allclose(result.errors, expected)
    reordered = stream.unit_reordering(model, (x, y), [1], samples=1, batch_size=8)
    assert reordered.kendall_tau.tolist() == [[-1.0]]
    np.testing.assert_allclose(reordered.errors, [[_error(_by_hand(model, order, x), y)]])


@pytest.mark.backends("tensorflow", "torch", reason="the studies are NumPy over predict, "
                      "gates and rebuilt graphs, each checked on JAX in test_lesion; JAX's eager "
                      "hand-run references would cost 10 s")
def test_middle_arrangements_equal_skip_reverse_shuffle_repeat_and_h_plus_mean_f_by_hand():
    model = _lm(depth=4)
    x, y = _lm_data()
    names = _names(4)
    pairs = [names[i:i + 2] for i in range(0, 8, 2)]
    h = _stream_in(model, x)
    for name in pairs[0]:
        h = _block(model, name, h)
    branches = []
    for pair in pairs[1:3]:
        g = h
        for name in pair:
            g = _block(model, name, g)
        branches.append(to_numpy(g) - to_numpy(h))  # f_i(h) = g_i(h) - h
    out = to_numpy(h) + (branches[0] + branches[1]) / 2
    for name in pairs[3]:
        out = _block(model, name, out)
    parallel = parallel_blocks(model, [[2, 3], [4, 5]])
    np.testing.assert_allclose(to_numpy(parallel(x)), _head(model, out), rtol=1e-4, atol=1e-5)
    shuffled = np.random.default_rng(0).permutation([1, 2]).tolist()
    orders = {"skip": [0, 3], "reverse": [0, 2, 1, 3], "shuffle": [0, *shuffled, 3],
              "repeat": [0, 2, 2, 3]}  # the middle-most of units 1, 2 twice
    expected = [_error(_by_hand(model, [n for u in orders[a] for n in pairs[u]], x), y)
                for a in orders] + [_error(_head(model, out), y)]
    result = stream.middle_arrangements(model, (x, y), batch_size=8)
    assert result.names.tolist() == ["skip", "reverse", "shuffle", "repeat", "parallel"]
    np.testing.assert_allclose(result.errors, expected)


def _angular(states, start, n):
    a = states[start].reshape(-1, 8).astype("float64")
    b = states[start + n].reshape(-1, 8).astype("float64")
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.mean(np.arccos(np.clip(cosine, -1, 1)) / np.pi)


@pytest.mark.backends("tensorflow", "torch", reason="the choice is NumPy over stream states "
                      "that probe reads on every backend; JAX's eager reference costs 4 s")
def test_gromov_and_he_choices_minimize_the_angular_distance_computed_in_numpy():
    model = _lm(depth=3)
    x, y = _lm_data()
    names = _names(3)
    states = [to_numpy(_stream_in(model, x))]  # the stream before each sub-layer, and after
    for name in names:
        states.append(_by_hand_stream(model, [name], states[-1]))
    result = similarity.contiguous_deletion(model, (x, y), [1, 2], batch_size=8)
    for row, n in enumerate((1, 2)):  # Gromov et al.: runs of n blocks
        distances = [_angular(states[::2], start, n) for start in range(4 - n)]
        np.testing.assert_allclose(result.distances[row, : 4 - n], distances, rtol=1e-4)
        start = int(np.argmin(distances))
        assert result.starts[row] == start
        kept = [name for i, name in enumerate(names) if not start * 2 <= i < (start + n) * 2]
        assert result.errors[row] == _error(_by_hand(model, kept, x), y)
    # He et al.: the two attention sub-layers most alike in input and output (the
    # MLP kind runs in the docstring example).
    dropped = similarity.similarity_drop(model, (x, y), [2], kind="attention", batch_size=8)
    distances = {i: _angular(states, i, 1) for i in range(0, 6, 2)}
    np.testing.assert_allclose(dropped.distances[::2], list(distances.values()), rtol=1e-4)
    assert np.all(np.isnan(dropped.distances[1::2]))
    gone = sorted(distances, key=distances.get)[:2]
    assert dropped.order[:2].tolist() == gone
    kept = [name for i, name in enumerate(names) if i not in gone]
    assert dropped.errors[0] == _error(_by_hand(model, kept, x), y)


def _by_hand_stream(model, names, h):
    for name in names:
        h = _block(model, name, h)
    return to_numpy(h)


@pytest.mark.backends("tensorflow", "torch", reason="JAX differentiates the eager hand-run "
                      "reference op by op (10 s); test_lesion checks per-sample routing on JAX")
def test_path_routing_through_attention_sums_over_all_paths_to_the_full_gradient():
    model = _lm()
    x, y = _lm_data(n=2)
    routes = np.array([[(r >> i) & 1 for i in range(4)] for r in range(16)], "float32")
    per_path = path_gradients(model, np.repeat(x, 16, 0), np.repeat(y, 16, 0), np.tile(routes, (2, 1)))
    loss = keras.losses.get("sparse_categorical_crossentropy")

    def rest(h):
        for name in SUBLAYERS:
            h = _block(model, name, h)
        return keras.ops.sum(loss(y, model.get_layer("next_token")(model.get_layer("final_norm")(h))))

    full = input_gradient(rest, to_numpy(_stream_in(model, x)))
    np.testing.assert_allclose(per_path.reshape(2, 16, LENGTH, 8).sum(1), full, rtol=1e-3, atol=1e-5)


@pytest.mark.backends("tensorflow", reason="the routed gradient is checked on every backend "
                      "above; this runs the study and the comparison, backend-neutral NumPy")
def test_gradient_per_path_length_on_a_transformer_compared_with_a_resnet():
    x, y = _lm_data(n=16)
    transformer = gradient_per_path_length(_lm(), (x, y), samples=32, batch_size=64,
                                           progress=False)
    assert transformer.n_blocks == 4 and transformer.norms.shape == (5, 32)
    resnet = keras.Sequential([keras.Input((8,))] + [Residual(keras.layers.Dense(8))
                                                     for _ in range(6)] + [keras.layers.Softmax()])
    features = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    resnet_result = gradient_per_path_length(resnet, (features, y[:, 0] % 8), samples=32,
                                             batch_size=64, progress=False)
    compared = stream.compare_effective_paths({"transformer": transformer, "resnet": resnet_result})
    assert compared.labels.tolist() == ["transformer", "resnet"]
    np.testing.assert_allclose(compared.effective_range[0], transformer.effective_range / 4)
    np.testing.assert_allclose(compared.effective_range[1], resnet_result.effective_range / 6)
    assert np.all((compared.path_range >= 0) & (compared.path_range <= 1))


@pytest.mark.backends("tensorflow", reason="the graph edit is backend-neutral; the masks' "
                      "arithmetic runs on every backend in the causal-mask test")
def test_moved_and_parallel_blocks_keep_their_tensor_attention_masks():
    tokens = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8, name="embed")(tokens)
    padding = keras.layers.Lambda(lambda t: keras.ops.repeat(
        keras.ops.not_equal(t, 0)[:, None, :], LENGTH, axis=1), name="mask")(tokens)
    for i in (1, 2):
        x = transformer_block(8, num_heads=2, name=f"block{i}")(x, use_causal_mask=True,
                                                               attention_mask=padding)
    model = keras.Model(tokens, x)
    _random_weights(model, seed=4)
    data = _tokens(3)
    data[:, 2] = 0  # padding the mask hides
    mask = model.get_layer("mask")(data)
    h = model.get_layer("embed")(data)
    moved = model.get_layer("block1_attention")(model.get_layer("block1_mlp")(h),
                                                use_causal_mask=True, attention_mask=mask)
    for name in SUBLAYERS[2:]:
        layer = model.get_layer(name)
        moved = layer(moved, use_causal_mask=True, attention_mask=mask) if "attention" in name \
            else layer(moved)
    swapped = reorder_blocks(model, [1, 0, 2, 3], share_weights=True)
    np.testing.assert_allclose(to_numpy(swapped(data)), to_numpy(moved), rtol=1e-5, atol=1e-5)
    pairs = []
    for i in (1, 2):
        g = model.get_layer(f"block{i}_attention")(h, use_causal_mask=True, attention_mask=mask)
        pairs.append(to_numpy(model.get_layer(f"block{i}_mlp")(g)))
    parallel = parallel_blocks(model, [[0, 1], [2, 3]], share_weights=True)
    np.testing.assert_allclose(to_numpy(parallel(data)), (pairs[0] + pairs[1]) / 2, rtol=1e-5,
                               atol=1e-5)
    attention, mlp_out = model.get_layer("block1_attention"), model.get_layer("block1_mlp")(h)
    masked = to_numpy(attention(mlp_out, use_causal_mask=True, attention_mask=mask))
    assert not np.allclose(masked, to_numpy(attention(mlp_out, use_causal_mask=True)))
