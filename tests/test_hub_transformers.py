"""keras-hub's pre-norm Transformers (GPT-2, OPT, ViT) as attention + MLP `Residual` pairs, and back."""

import keras
import keras_hub  # noqa: E402  (in the test extra: missing, the suite fails)
import numpy as np
import pytest

from keras_residual import Residual, graph
from keras_residual.models import from_keras_hub, to_keras_hub
from keras_residual.surgery import delete_blocks, parallel_blocks, reorder_blocks

multibackend = pytest.mark.multibackend

DECODER = dict(vocabulary_size=50, num_heads=2, hidden_dim=8, intermediate_dim=16,
               max_sequence_length=16)
LENGTH = 8


def _randomized(backbone, seed=0):
    """Every weight random (biases, norms' gamma and beta too), so a misplaced role shows."""
    rng = np.random.default_rng(seed)
    for weight in backbone.weights:
        weight.assign(rng.normal(0, 0.3, tuple(weight.shape)).astype("float32"))
    return backbone


def _token_batch(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((2, LENGTH), "int32")
    mask[1, 5:] = 0  # a padded row: keras-hub merges this with the causal mask
    return {"token_ids": rng.integers(0, 50, (2, LENGTH)).astype("int32") * mask,
            "padding_mask": mask}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@multibackend
@pytest.mark.parametrize("kind", [
    "GPT2Backbone",
    pytest.param("OPTBackbone", marks=pytest.mark.backends(
        "tensorflow", "torch", reason="OPT is GPT-2's TransformerDecoder with ReLU and its "
        "own embedding layer; JAX runs the GPT-2 case (JAX's CPU compiles cost ~2 s a model)")),
])
def test_decoders_are_residual_pairs_with_keras_hub_outputs_and_copy_back(kind):
    cls = getattr(keras_hub.models, kind)
    backbone = _randomized(cls(num_layers=2, **DECODER))
    model = from_keras_hub(backbone, check=False)
    assert [b.name for b in graph.blocks(model)] == [
        f"transformer_layer_{i}_{part}" for i in (0, 1) for part in ("attention", "mlp")]
    assert graph.resolve_path(model, "transformer_layer_0_attention/preactivation").epsilon == 1e-5
    batch = _token_batch()
    np.testing.assert_allclose(_numpy(model(batch, training=False)),
                               _numpy(backbone(batch, training=False)), atol=1e-5)
    dense = graph.resolve_path(model, "transformer_layer_0_mlp/branch/transformer_layer_0_mlp_1_dense")
    expected = "keras_residual>gelu_approximate" if kind == "GPT2Backbone" else "relu"
    assert keras.saving.get_registered_name(dense.activation) == expected  # no keras-hub to load
    filled = to_keras_hub(model, cls(num_layers=2, **DECODER))
    assert all(np.array_equal(_numpy(a.value), _numpy(b.value))
               for a, b in zip(filled.weights, backbone.weights, strict=True))


@multibackend
def test_vit_is_residual_pairs_with_keras_hub_outputs_and_copies_back():
    config = dict(image_shape=(8, 8, 3), patch_size=4, num_heads=2, hidden_dim=8, mlp_dim=16)
    backbone = _randomized(keras_hub.models.ViTBackbone(num_layers=2, **config))
    model = from_keras_hub(backbone, check=False)
    assert len([lyr for lyr in model.layers if isinstance(lyr, Residual)]) == 4
    images = np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(_numpy(model(images, training=False)),
                               _numpy(backbone(images, training=False)), atol=1e-5)
    filled = to_keras_hub(model, keras_hub.models.ViTBackbone(num_layers=2, **config))
    assert all(np.array_equal(_numpy(a.value), _numpy(b.value))
               for a, b in zip(filled.weights, backbone.weights, strict=True))
    # Sun et al. 2025's "repeat": block 1 runs twice, block 2 never; keras-hub gets it twice.
    repeated = reorder_blocks(model, [0, 1, 0, 1], repeats=True)
    filled = to_keras_hub(repeated, filled)
    np.testing.assert_allclose(_numpy(filled(images)), _numpy(repeated(images, training=False)),
                               atol=1e-5)


@pytest.mark.backends("tensorflow", "torch", reason="keras-hub's generate compiles its sampling "
                      "loop (~8 s on JAX's CPU); the conversion, deletion and copy-back it "
                      "relies on run on JAX in the tests above and the doctests")
def test_lesioned_gpt2_back_in_keras_hub_generates_with_its_cache():
    backbone = _randomized(keras_hub.models.GPT2Backbone(num_layers=3, **DECODER), seed=2)
    model = from_keras_hub(backbone, check=False)
    lesioned = delete_blocks(model, ["transformer_layer_1_attention", "transformer_layer_1_mlp"])
    lesioned = reorder_blocks(lesioned, [2, 3, 0, 1, 4, 5])  # layer 1 (deleted) runs first
    hub = to_keras_hub(lesioned, backbone)
    assert hub.num_layers == 2 and hub is not backbone
    batch = _token_batch()
    np.testing.assert_allclose(_numpy(hub(batch)), _numpy(lesioned(batch, training=False)),
                               atol=1e-5)
    prompt = 3
    tokens = np.zeros((2, LENGTH), "int32")
    tokens[:, :prompt] = np.random.default_rng(3).integers(1, 50, (2, prompt))
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=hub, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    generated = causal_lm.generate(
        {"token_ids": tokens, "padding_mask": np.tile(np.arange(LENGTH) < prompt, (2, 1))},
        stop_token_ids=None)
    embedding = lesioned.get_layer("token_embedding")
    for position in range(prompt, LENGTH):  # our model, no cache: argmax of the next token
        mask = np.broadcast_to(np.arange(LENGTH) < position, (2, LENGTH)).astype("int32")
        sequence = lesioned({"token_ids": tokens, "padding_mask": mask}, training=False)
        logits = _numpy(embedding(sequence, reverse=True))
        tokens[:, position] = logits[:, position - 1].argmax(-1)
    np.testing.assert_array_equal(_numpy(generated["token_ids"]), tokens)


@pytest.mark.backends("tensorflow", reason="error messages, the same on every backend; "
                      "the conversions they guard run on all three above")
def test_post_norm_parallel_gemma_and_half_deleted_blocks_are_refused_with_the_reason():
    small = dict(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                 intermediate_dim=16, max_sequence_length=8)
    for cls in (keras_hub.models.BertBackbone, keras_hub.models.RobertaBackbone):
        with pytest.raises(ValueError, match=r"post-norm .*LayerNorm\(x \+ F\(x\)\).*Received"):
            from_keras_hub(cls(**small))
    with pytest.raises(ValueError, match="parallel blocks.*two branches on one shortcut"):
        from_keras_hub(keras_hub.models.GPTNeoXBackbone(**small))
    gemma = keras_hub.models.GemmaBackbone(
        vocabulary_size=50, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=8,
        intermediate_dim=16, head_dim=4)
    with pytest.raises(ValueError, match="rotary position embeddings.*not converted yet"):
        from_keras_hub(gemma)
    backbone = keras_hub.models.GPT2Backbone(num_layers=2, **DECODER)
    half = delete_blocks(from_keras_hub(backbone), ["transformer_layer_0_mlp"])
    with pytest.raises(ValueError, match="only one of its two sub-layers deleted"):
        to_keras_hub(half, backbone)
    side_by_side = parallel_blocks(from_keras_hub(backbone), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="do not run as one chain"):
        to_keras_hub(side_by_side, backbone)
