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
from keras_residual.lesion import gradient_paths, path_gradients, stream
from keras_residual.models import PositionEmbedding, tiny_causal_lm, transformer_classifier
from keras_residual.surgery import delete_blocks, parallel_blocks, remove_layers, reorder_blocks

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
