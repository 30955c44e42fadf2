"""keras-hub's pre-norm Transformer backbones as pairs of `Residual` sub-layers, and back.

A keras-hub Transformer layer (`TransformerDecoder` in GPT-2 and OPT, the
`ViTEncoder`'s blocks in ViT) computes both sub-layers of a pre-norm block
inside one layer: nothing to delete, reorder or probe. `transformer_from_keras_hub`
builds the same network with `blocks.transformer_block`, each keras-hub layer
becoming an attention `Residual` (pre-activation the layer's first
LayerNormalization) and an MLP `Residual`, x + F(LayerNorm(x)) (Vaswani et al.
2017, Sec. 3.1; the pre-norm placement of Radford et al. 2019, Sec. 2.3), and
copies every weight from the keras-hub sub-layer that plays the same role
(`self_attention` is the attention block's branch, `feedforward_layer_norm`
the MLP block's pre-activation), never by flat order. `transformer_to_keras_hub`
copies back, also from a model whose blocks were deleted or reordered, so
keras-hub's own `generate` (with its key/value cache) runs the lesioned network.

`keras_residual.models.from_keras_hub` / `to_keras_hub` dispatch here for any
keras-hub backbone that is not a ResNet. keras-hub is imported only when these
functions run (their arguments are keras-hub objects).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual.blocks import TransformerBlock, transformer_block
from keras_residual.graph import blocks as residual_blocks
from keras_residual.graph import copy_weights, find_layers, fresh_inputs, trace, variable_paths
from keras_residual.models.transformer import PositionEmbedding
from keras_residual.residual import Residual

#: keras-hub backbones `transformer_from_keras_hub` converts.
SUPPORTED = ("GPT2Backbone", "OPTBackbone", "ViTBackbone")
# (keras-hub sub-layer, our sub-layer / path inside it); "{mlp}" is the MLP block's name.
_DECODER_ROLES = (
    ("self_attention_layer_norm", "attention/preactivation"),
    ("self_attention", "attention/branch"),
    ("feedforward_layer_norm", "mlp/preactivation"),
    ("feedforward_intermediate_dense", "mlp/branch/{mlp}_1_dense"),
    ("feedforward_output_dense", "mlp/branch/{mlp}_2_dense"),
)
_VIT_ROLES = (
    ("ln_1", "attention/preactivation"),
    ("mha", "attention/branch"),
    ("ln_2", "mlp/preactivation"),
    ("mlp/dense_1", "mlp/branch/{mlp}_1_dense"),
    ("mlp/dense_2", "mlp/branch/{mlp}_2_dense"),
)
# Pre-norm layouts whose sub-layers have no counterpart in `blocks.transformer_block` yet.
_NOT_YET = {
    "GemmaBackbone": "RMSNorm, rotary position embeddings inside the attention (Su et al. "
                     "2021) and a gated GELU MLP",
    "LlamaBackbone": "RMSNorm, rotary position embeddings and a gated SiLU MLP",
    "MistralBackbone": "RMSNorm, rotary position embeddings, sliding-window attention and a "
                       "gated SiLU MLP",
}
_SUPPORTED_TEXT = (
    "from_keras_hub converts keras-hub ResNets and the pre-norm keras-hub Transformers "
    f"{', '.join(SUPPORTED)}"
)


@keras.saving.register_keras_serializable(package="keras_residual")
def gelu_approximate(x: Any) -> Any:
    """GELU with the tanh approximation (Hendrycks & Gimpel 2016), GPT-2's MLP activation.

    keras-hub's own `gelu_approximate` would make a saved model need keras-hub
    to load; this one needs only `import keras_residual`.

    Example:
        >>> round(float(gelu_approximate(keras.ops.convert_to_tensor(1.0))), 4)
        0.8412
    """
    return keras.activations.gelu(x, approximate=True)


def _refusal(backbone: Any) -> str | None:
    """Why `backbone` has no pair-of-`Residual` form, or None where it converts."""
    import keras_hub

    name = type(backbone).__name__
    if isinstance(backbone, keras_hub.models.GPTNeoXBackbone):
        return (
            f"{name}'s layers are parallel blocks, x + Attention(LN1(x)) + MLP(LN2(x)) "
            "(Black et al. 2022): two branches on one shortcut, not an attention x + F(x) "
            "followed by an MLP x + F(x), so they have no two-Residual form"
        )
    post_norm = [lyr for lyr in backbone.layers if isinstance(
        lyr, (keras_hub.layers.TransformerEncoder, keras_hub.layers.TransformerDecoder))
        and not lyr.get_config()["normalize_first"]]
    if post_norm:
        return (
            f"{name} is post-norm ({post_norm[0].name!r} has normalize_first=False): each "
            "sub-layer is LayerNorm(x + F(x)) (Vaswani et al. 2017; Devlin et al. 2019), "
            "the norm on the shortcut path, so a sub-layer is not x + F(x) and deleting its "
            "branch would not leave the residual stream"
        )
    if name in _NOT_YET:
        return (
            f"{name}'s blocks are pre-norm, but with {_NOT_YET[name]}, which "
            "blocks.transformer_block (LayerNorm, MultiHeadAttention, a two-Dense MLP) does not "
            "build; they are not converted yet"
        )
    if name not in SUPPORTED:
        return f"{name} is not one of the supported layouts"
    if name == "ViTBackbone":
        config = backbone.get_config()
        if not (config["use_mha_bias"] and config["use_mlp_bias"]):
            return "a ViT without attention or MLP biases has no counterpart here"
    return None


def _check_supported(backbone: Any) -> None:
    why = _refusal(backbone)
    if why is not None:
        raise ValueError(f"{why}. {_SUPPORTED_TEXT}. Received: {type(backbone).__name__}")


def _activation(layer: layers.Layer) -> Any:
    """The MLP activation of keras-hub `layer`, as something that serializes without keras-hub."""
    name = keras.saving.get_registered_name(layer.activation)
    return gelu_approximate if name == "keras_hub>gelu_approximate" else layer.activation


def _decoders(backbone: Any) -> list[layers.Layer]:
    import keras_hub

    return [lyr for lyr in backbone.layers if isinstance(lyr, keras_hub.layers.TransformerDecoder)]


def _block_variables(block: TransformerBlock) -> dict[str, keras.Variable]:
    """Our variables of one (attention, mlp) pair by "attention/..." and "mlp/..." paths."""
    found = {}
    for role, sub in (("attention", block.attention), ("mlp", block.mlp)):
        for path, variable in variable_paths(sub).items():
            if path != "lesion_state":
                found[f"{role}/{path}"] = variable
    return found


def _role_pairs(hub_variables: dict[str, keras.Variable], block: TransformerBlock,
                roles: tuple, where: str) -> list[tuple[keras.Variable, keras.Variable]]:
    """(keras-hub variable, our variable) for one Transformer layer, matched by role."""
    ours, pairs = _block_variables(block), []
    for path, theirs in hub_variables.items():
        prefix, target = next(((p, t) for p, t in roles if path.startswith(p + "/")), (None, None))
        key = f"{target.format(mlp=block.mlp.name)}{path[len(prefix):]}" if prefix else None
        if key not in ours or tuple(ours[key].shape) != tuple(theirs.shape):
            raise ValueError(
                f"keras-hub variable {where}/{path} {tuple(theirs.shape)} has no counterpart "
                f"in ({block.attention.name}, {block.mlp.name}). Received: {sorted(ours)}"
            )
        pairs.append((theirs, ours.pop(key)))
    if ours:
        raise ValueError(
            f"Variables of ({block.attention.name}, {block.mlp.name}) with no keras-hub "
            f"counterpart in {where}. Received: {sorted(ours)}"
        )
    return pairs


def _decoder_block(layer: layers.Layer, hidden_dim: int) -> TransformerBlock:
    config = layer.get_config()
    return transformer_block(
        hidden_dim, num_heads=config["num_heads"], mlp_dim=config["intermediate_dim"],
        dropout=config["dropout"], activation=_activation(layer),
        epsilon=config["layer_norm_epsilon"], name=layer.name,
    )


def _clone_layer(layer: layers.Layer) -> layers.Layer:
    """A new layer from `layer`'s config (weights copied once it is built)."""
    return layer.__class__.from_config(layer.get_config())


def _decoder_model(backbone: Any, name: str) -> keras.Model:
    """keras-hub's graph, cloned, with every TransformerDecoder call made by our two blocks."""
    decoders = {id(lyr): lyr for lyr in _decoders(backbone)}
    made: dict[str, Any] = {}
    clones: list[tuple[layers.Layer, layers.Layer]] = []

    def clone_function(layer):
        if id(layer) in decoders:
            return layer
        copy = _clone_layer(layer)
        clones.append((layer, copy))
        return copy

    def call_function(layer, *args, **kwargs):
        if id(layer) not in decoders:
            return layer(*args, **kwargs)
        padding = kwargs.get("decoder_padding_mask")
        if padding is not None and "mask" not in made:
            # (B, T) -> (B, 1, T): every query sees only real keys, as keras-hub merges it.
            made["mask"] = layers.Reshape((1, -1), name="attention_mask")(padding)
        block = _decoder_block(layer, backbone.hidden_dim)
        made[layer.name] = block
        return block(args[0], use_causal_mask=True, attention_mask=made.get("mask"))

    inputs = {key: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=key)
              for key, t in backbone.input.items()}
    clone = keras.models.clone_model(backbone, clone_function=clone_function,
                                     call_function=call_function, input_tensors=inputs)
    model = keras.Model(inputs, clone.output, name=name)
    for theirs, ours in clones:
        if theirs.weights:
            copy_weights(theirs, ours)
    for layer in decoders.values():
        for theirs, ours in _role_pairs(variable_paths(layer), made[layer.name], _DECODER_ROLES,
                                        layer.name):
            ours.assign(keras.ops.convert_to_numpy(theirs))
    return model


@keras.saving.register_keras_serializable(package="keras_residual")
class ClassToken(layers.Layer):
    """Prepends one learned token to a sequence (Dosovitskiy et al. 2021, Sec. 3.1, Eq. 1).

    ViT's "[class]" embedding, whose final state is the image representation.

    Args:
        **kwargs: base Layer arguments (`name`, `dtype`, ...).

    Example:
        >>> tuple(ClassToken()(keras.ops.zeros((2, 4, 8))).shape)
        (2, 5, 8)
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.class_token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros",
                                           name="class_token")
        self.built = True

    def call(self, inputs):
        token = keras.ops.cast(self.class_token, inputs.dtype)
        token = keras.ops.tile(token, (keras.ops.shape(inputs)[0], 1, 1))
        return keras.ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])


# keras-hub's ViTPatchingAndEmbedding variables -> (our layer, its variable). Our own layers:
# keras-hub 0.32's get_config of that layer does not round-trip through from_config.
_VIT_EMBEDDING = {
    "class_token": ("class_token", "class_token"),
    "patch_embedding/kernel": ("patch_embedding", "kernel"),
    "patch_embedding/bias": ("patch_embedding", "bias"),
    "position_embedding/embeddings": ("position_embedding", "embedding"),
}


def _vit_embedding(images: Any, config: dict) -> Any:
    """Patches, class token and position embeddings as keras-hub's ViT makes them (Eq. 1)."""
    patch = tuple(config["patch_size"])
    grid = [size // step for size, step in zip(config["image_shape"][:2], patch, strict=True)]
    x = layers.Conv2D(config["hidden_dim"], patch, strides=patch, use_bias=config["use_patch_bias"],
                      data_format="channels_last", name="patch_embedding")(images)
    x = layers.Reshape((grid[0] * grid[1], config["hidden_dim"]), name="patches")(x)
    if config["use_class_token"]:
        x = ClassToken(name="class_token")(x)
    return PositionEmbedding(x.shape[1], name="position_embedding")(x)


def _vit_model(backbone: Any, name: str) -> keras.Model:
    """Our patch embedding, blocks and final norm for keras-hub's ViT."""
    config = backbone.get_config()
    images = keras.Input(tuple(config["image_shape"]), name="images")
    x = _vit_embedding(images, config)
    x = layers.Dropout(config["dropout_rate"], name="encoder_dropout")(x)
    made = []
    for index in range(1, config["num_layers"] + 1):
        made.append(transformer_block(
            config["hidden_dim"], num_heads=config["num_heads"], mlp_dim=config["mlp_dim"],
            dropout=config["dropout_rate"], activation="gelu",
            epsilon=config["layer_norm_epsilon"], name=f"transformer_block_{index}",
        ))
        x = made[-1](x)
    norm = layers.LayerNormalization(epsilon=config["layer_norm_epsilon"], name="layer_norm")
    model = keras.Model(images, norm(x), name=name)
    for theirs, ours in _vit_pairs(backbone, model, [tuple(block) for block in made]):
        ours.assign(keras.ops.convert_to_numpy(theirs))
    return model


def _vit_pairs(backbone: Any, model: keras.Model,
               pairs: list[tuple[Residual, Residual]]) -> list[tuple[keras.Variable, keras.Variable]]:
    """(keras-hub variable, ours) for a ViT: embedding, the encoder's blocks, its final norm."""
    found = []
    for path, theirs in variable_paths(backbone.get_layer("vit_patching_and_embedding")).items():
        layer, variable = _VIT_EMBEDDING[path]
        found.append((theirs, {w.name: w for w in model.get_layer(layer).weights}[variable]))
    encoder = variable_paths(backbone.get_layer("vit_encoder"))
    for index, block in enumerate(pairs, start=1):
        prefix = f"transformer_block_{index}/"
        own = {p[len(prefix):]: v for p, v in encoder.items() if p.startswith(prefix)}
        found += _role_pairs(own, TransformerBlock(*block), _VIT_ROLES, prefix[:-1])
    found += [(encoder[f"ln/{w.name}"], w) for w in model.get_layer("layer_norm").weights]
    for theirs, ours in found:
        if tuple(theirs.shape) != tuple(ours.shape):
            raise ValueError(f"{theirs.path} has shape {tuple(theirs.shape)} but {ours.path} "
                             f"has {tuple(ours.shape)}. Received: {model.name!r}")
    return found


def _check_outputs(backbone: Any, model: keras.Model) -> None:
    """Run both on a random batch (a padded row for token models) and compare in inference mode."""
    rng = np.random.default_rng(0)
    if not isinstance(model.input, dict):
        shape = tuple(backbone.get_config()["image_shape"])
        inputs = rng.uniform(-1, 1, size=(2, *shape)).astype("float32")
    else:
        length = min(8, int(backbone.get_config()["max_sequence_length"]))
        mask = np.ones((2, length), "int32")
        mask[1, length // 2:] = 0
        tokens = rng.integers(0, backbone.get_config()["vocabulary_size"], (2, length))
        inputs = {"token_ids": tokens.astype("int32") * mask, "padding_mask": mask}
    expected = keras.ops.convert_to_numpy(backbone(inputs, training=False))
    got = keras.ops.convert_to_numpy(model(inputs, training=False))
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4 * scale):
        raise ValueError(
            "The converted model's outputs differ from keras-hub's (max |difference| "
            f"{np.abs(got - expected).max() if got.shape == expected.shape else 'shape'}): "
            f"this layout is not supported. Received: {backbone.name!r}"
        )


def _block_chain(model: keras.Model) -> list[Residual]:
    """The `Residual` calls of `model` in the order they run (a repeated block more than once).

    Checked to be one chain, each block's input the previous block's output:
    a keras-hub backbone is one, so a model whose blocks run side by side
    (`surgery.parallel_blocks`) or inside a nested model has no counterpart.
    """
    calls: list[tuple[Residual, Any, Any]] = []

    def hook(layer, args, kwargs, capture):
        outputs = layer(*args, **kwargs)
        if isinstance(layer, Residual):
            calls.append((layer, args[0], outputs))
        return outputs

    trace(model, fresh_inputs(model), hook)
    chained = all(x is before for (_, _, before), (_, x, _) in pairwise(calls))
    if not chained or {id(c[0]) for c in calls} != {id(b) for b in residual_blocks(model)}:
        raise ValueError(
            f"The blocks of {model.name!r} do not run as one chain at the top level (blocks "
            "side by side, as `surgery.parallel_blocks` makes, or inside a nested model), "
            "and a keras-hub backbone runs its layers one after another. Received: "
            f"{[c[0].name for c in calls]}"
        )
    return [c[0] for c in calls]


def _remaining_pairs(model: keras.Model) -> list[tuple[Residual, Residual]]:
    """The (attention, MLP) pairs of `model` in the order they run, deleted sub-layers left out."""
    kept = []
    for block in _block_chain(model):
        if block.branch_scale != 1.0:
            raise ValueError(
                f"Block {block.name!r} scales its branch by {block.branch_scale}: keras-hub's "
                f"layers have no branch scale. Received: branch_scale={block.branch_scale}"
            )
        if block.branch_enabled:
            kept.append(block)
    kinds = ["attention" if find_layers(b, layers.MultiHeadAttention) else "mlp" for b in kept]
    for position, kind in enumerate(kinds):
        if kind != ("attention" if position % 2 == 0 else "mlp") or len(kinds) % 2:
            raise ValueError(
                "A keras-hub Transformer layer is one attention sub-layer followed by one MLP "
                f"sub-layer, but the sub-layers of {model.name!r} that remain (in the order "
                "they run, deleted ones left out) do not alternate so: a block with only one of "
                "its two sub-layers deleted has no keras-hub counterpart. Delete or move whole "
                f"blocks. Received: {[f'{b.name} ({k})' for b, k in zip(kept, kinds, strict=True)]}"
            )
    return list(zip(kept[0::2], kept[1::2], strict=True))


def transformer_from_keras_hub(
    backbone: Any, name: str | None = None, check: bool = True
) -> keras.Model:
    """Our equivalent of a pre-norm keras-hub Transformer: two `Residual`s per layer, same weights.

    GPT-2 (Radford et al. 2019), OPT (Zhang et al. 2022) and ViT (Dosovitskiy
    et al. 2021) put LayerNorm first in each sub-layer, so every keras-hub
    Transformer layer is exactly `blocks.transformer_block`'s pair: the
    attention sub-layer `x + MHA(LN1(x))` and the MLP sub-layer
    `x + MLP(LN2(x))` (Vaswani et al. 2017, Sec. 3.1), named after the
    keras-hub layer (`transformer_layer_0_attention`, `transformer_layer_0_mlp`;
    ViT: `transformer_block_1_attention`, ...). Weights are copied by role,
    never by order. The rest is keras-hub's own: for GPT-2 and OPT the
    backbone's graph is cloned (embedding layers and final `layer_norm` are
    new instances made from keras-hub's configs, weights copied), the
    padding mask reaches every attention sub-layer as a (B, 1, T) mask with
    the causal mask (as keras-hub merges them); for ViT the
    `vit_patching_and_embedding` layer is cloned, and the encoder's final
    norm is `layer_norm`. GPT-2's tanh-approximate GELU becomes
    `gelu_approximate`, which serializes without keras-hub.

    Outputs equal keras-hub's in inference mode. Training differs in
    dropout placement only: `transformer_block` drops the attention weights
    and after each MLP Dense layer; keras-hub drops the attention weights
    and each sub-layer's output (ViT: with `attention_dropout` and
    `dropout_rate`; here both use `dropout_rate`).

    Post-norm backbones (BERT, RoBERTa: LayerNorm(x + F(x)) is not x + F(x))
    and GPT-NeoX (one shortcut, two parallel branches) are refused.

    Args:
        backbone: a keras-hub `GPT2Backbone`, `OPTBackbone` or `ViTBackbone`.
        name: str or None. Model name; None: "{backbone name}_residual".
        check: bool. Run both on a random batch (with a padded row) and raise
            a ValueError if their outputs differ. Defaults to True.

    Returns:
        A functional `keras.Model` with keras-hub's inputs (`{"token_ids",
        "padding_mask"}`, or `images`) and its sequence output.

    Raises:
        ValueError: the backbone is post-norm, parallel, or another layout.

    Example:
        >>> import keras_hub
        >>> hub = keras_hub.models.GPT2Backbone(
        ...     vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        ...     intermediate_dim=16, max_sequence_length=16)
        >>> ours = transformer_from_keras_hub(hub)
        >>> [lyr.name for lyr in ours.layers if isinstance(lyr, Residual)]
        ['transformer_layer_0_attention', 'transformer_layer_0_mlp', \
'transformer_layer_1_attention', 'transformer_layer_1_mlp']
    """
    import keras_hub

    _check_supported(backbone)
    name = name or f"{backbone.name}_residual"
    if isinstance(backbone, keras_hub.models.ViTBackbone):
        model = _vit_model(backbone, name)
    else:
        model = _decoder_model(backbone, name)
    if check:
        _check_outputs(backbone, model)
    return model


def transformer_to_keras_hub(model: keras.Model, backbone: Any) -> Any:
    """Copy a model made by `transformer_from_keras_hub` (maybe lesioned) into a keras-hub backbone.

    The remaining sub-layers, in the order they run, fill keras-hub's layers
    in order: attention and MLP `Residual`s alternate, each pair one
    keras-hub layer (a whole block deleted with `surgery.delete_blocks` is
    left out; blocks moved with `surgery.reorder_blocks` go where they run,
    a block run twice with `repeats=True` fills two keras-hub layers). When
    their number differs from `backbone`'s `num_layers`, a new backbone of
    `backbone`'s config with that many layers is made, so keras-hub's
    `generate` (with its key/value cache, re-sized by keras-hub) runs the
    lesioned network (Veit et al. 2016's deletion, at generation time).
    The embeddings and final norm are copied by layer name.

    Args:
        model: keras.Model. Made by `transformer_from_keras_hub` from a
            backbone of `backbone`'s kind, then trained or edited.
        backbone: the keras-hub backbone to fill (changed in place when its
            number of layers fits).

    Returns:
        The filled backbone: `backbone`, or a new one with fewer or more layers.

    Raises:
        ValueError: a block has only one of its sub-layers deleted (or a
            branch scale), the blocks do not run as one chain (e.g.
            `surgery.parallel_blocks`), or a variable has no counterpart.

    Example:
        >>> import keras_hub
        >>> from keras_residual.surgery import delete_blocks
        >>> config = dict(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        ...               intermediate_dim=16, max_sequence_length=16)
        >>> ours = transformer_from_keras_hub(keras_hub.models.GPT2Backbone(**config))
        >>> lesioned = delete_blocks(ours, ["transformer_layer_0_attention",
        ...                                 "transformer_layer_0_mlp"])
        >>> transformer_to_keras_hub(lesioned, keras_hub.models.GPT2Backbone(**config)).num_layers
        1
    """
    import keras_hub

    _check_supported(backbone)
    pairs = _remaining_pairs(model)
    config = backbone.get_config()
    if config["num_layers"] != len(pairs):
        backbone = type(backbone).from_config({**config, "num_layers": len(pairs)})
    if isinstance(backbone, keras_hub.models.ViTBackbone):
        found = _vit_pairs(backbone, model, pairs)
    else:
        found = []
        for layer, pair in zip(_decoders(backbone), pairs, strict=True):
            found += _role_pairs(variable_paths(layer), TransformerBlock(*pair), _DECODER_ROLES,
                                 layer.name)
        decoders = {id(lyr) for lyr in _decoders(backbone)}
        for layer in backbone.layers:
            if layer.weights and id(layer) not in decoders:
                copy_weights(model.get_layer(layer.name), layer)
    for theirs, ours in found:
        theirs.assign(keras.ops.convert_to_numpy(ours))
    return backbone


def _token_embedding(decoder: keras.Model) -> layers.Layer:
    """The converted decoder's `ReversibleEmbedding` (GPT-2's own layer, OPT's inside `embeddings`)."""
    import keras_hub

    # keras-hub's own class, or Keras' (3.13+), which newer keras-hub releases use.
    kinds = tuple(kind for kind in (keras_hub.layers.ReversibleEmbedding,
                                    getattr(layers, "ReversibleEmbedding", None)) if kind)
    for layer in decoder.layers:
        if isinstance(layer, kinds):
            return layer
        if isinstance(getattr(layer, "token_embedding", None), kinds):
            return layer.token_embedding
    raise ValueError(f"No token embedding to read the logits with in {decoder.name!r}. "
                     f"Received: layers={[layer.name for layer in decoder.layers]}")


def causal_lm_from_keras_hub(causal_lm: Any, check: bool = True) -> keras.Model:
    """A keras-hub GPT-2 or OPT language model as one network of `Residual` sub-layers.

    `transformer_from_keras_hub` on its backbone, then the next-token
    distribution as keras-hub's `CausalLM` computes it (Radford et al. 2019,
    Sec. 2.3): the final hidden state times the transposed token embedding,
    then a softmax. The input is one array of token ids, every position
    real (no padding), so that the lesion studies (`keras_residual.lesion`,
    `lesion.stream`) take `(token_ids, next_tokens)` pairs
    (`lesion.stream.next_token_data`).

    Args:
        causal_lm: a keras-hub `GPT2CausalLM` / `OPTCausalLM`, or its backbone.
        check: bool. Compare the probabilities with keras-hub's own on a
            random batch and raise a ValueError where they differ. Defaults to True.

    Returns:
        A `keras.Model` from token ids (B, T) to next-token probabilities (B, T, vocabulary),
        sharing the converted decoder's layers.

    Example:
        >>> import keras_hub
        >>> hub = keras_hub.models.GPT2Backbone(
        ...     vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
        ...     intermediate_dim=16, max_sequence_length=16)
        >>> lm = causal_lm_from_keras_hub(hub)
        >>> tuple(lm.output.shape), len(residual_blocks(lm))
        ((None, None, 50), 4)
    """
    backbone = getattr(causal_lm, "backbone", causal_lm)
    decoder = transformer_from_keras_hub(backbone, check=check)
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    padding = keras.ops.ones_like(tokens)
    hidden = decoder({"token_ids": tokens, "padding_mask": padding})
    logits = _token_embedding(decoder)(hidden, reverse=True)
    probabilities = layers.Softmax(name="next_token", dtype="float32")(logits)
    model = keras.Model(tokens, probabilities, name=f"{backbone.name}_causal_lm_residual")
    if check:
        _check_causal_lm(backbone, model)
    return model


def _check_causal_lm(backbone: Any, model: keras.Model) -> None:
    tokens = np.random.default_rng(0).integers(0, backbone.vocabulary_size, (2, 8))
    hidden = backbone({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}, training=False)
    theirs = keras.ops.softmax(backbone.token_embedding(hidden, reverse=True), axis=-1)
    difference = float(np.max(np.abs(keras.ops.convert_to_numpy(theirs)
                                     - keras.ops.convert_to_numpy(model(tokens, training=False)))))
    if difference > 1e-4:
        raise ValueError(f"The converted language model's next-token probabilities differ from "
                         f"keras-hub's by up to {difference:.2e}. Received: backbone={backbone.name}")
