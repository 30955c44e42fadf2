"""Small Transformers made of residual sub-layers: a sequence classifier, a ViT, a causal LM.

Every Transformer block is the pair of `Residual` layers of
`blocks.transformer_block` (self-attention, then an MLP), so the lesion and
path tools of Veit et al. (2016) and the residual-stream studies
(`keras_residual.lesion.stream`: Lad et al. 2024, Sun et al. 2025, Gromov et
al. 2025) run on them as on a ResNet.

- `transformer_classifier`: token ids -> class probabilities (mean pooling).
- `tiny_vit`: Dosovitskiy et al., "An Image is Worth 16x16 Words" (2021),
  Sec. 3.1, with mean pooling over the patches instead of a class token.
- `tiny_causal_lm`: a GPT-style decoder (Radford et al. 2019): token ids ->
  next-token probabilities at every position.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from keras_residual.blocks import transformer_block


@keras.saving.register_keras_serializable(package="keras_residual")
class PositionEmbedding(layers.Layer):
    """Adds a learned embedding of each position to a sequence (Vaswani et al. 2017, Sec. 3.5).

    Args:
        sequence_length: int. The longest sequence; shorter ones use the first rows.
        initializer: initializer of the embedding. Defaults to "glorot_uniform".
        **kwargs: base Layer arguments.

    Example:
        >>> layer = PositionEmbedding(6)
        >>> tuple(layer(keras.ops.zeros((2, 4, 8))).shape)
        (2, 4, 8)
    """

    def __init__(self, sequence_length: int, initializer: Any = "glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(sequence_length) < 1:
            raise ValueError(
                f"`sequence_length` must be >= 1. Received: sequence_length={sequence_length!r}"
            )
        self.sequence_length = int(sequence_length)
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=(self.sequence_length, input_shape[-1]), initializer=self.initializer,
            name="embedding",
        )
        self.built = True

    def call(self, inputs):
        length = ops.shape(inputs)[1]
        return ops.add(inputs, ops.cast(self.embedding[None, :length], inputs.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }


def transformer_stack(
    x: Any, depth: int, *, d_model: int, num_heads: int, mlp_dim: int | None = None,
    dropout: float = 0.0, norm: str = "pre", causal: bool = False, attention_mask: Any = None,
    name: str = "block",
) -> Any:
    """`depth` Transformer blocks on the sequence `x` (B, T, d_model), then a final norm.

    Blocks are named `{name}{i}` (i from 1), their sub-layers
    `{name}{i}_attention` and `{name}{i}_mlp`; a pre-norm stack ends with
    LayerNormalization `final_norm`, as GPT-2 and ViT do (Radford et al.
    2019, Sec. 2.3).

    Args:
        x: tensor (B, T, d_model).
        depth: int. Number of blocks (>= 1).
        d_model: int. Width of the stream (`blocks.transformer_block`).
        num_heads: int. Attention heads.
        mlp_dim: int or None. Hidden width of each MLP; None: `4 * d_model`.
        dropout: float. Attention and MLP dropout.
        norm: str. "pre" or "post" (`blocks.transformer_block`).
        causal: bool. Each position attends only to itself and earlier ones.
        attention_mask: tensor (B, T, T) or None, passed to every attention layer.
        name: str. Prefix of the block names. Defaults to "block".

    Returns:
        The output sequence.

    Example:
        >>> y = transformer_stack(keras.Input((4, 8)), 2, d_model=8, num_heads=2)
        >>> tuple(y.shape)
        (None, 4, 8)
    """
    if int(depth) < 1:
        raise ValueError(f"`depth` must be >= 1. Received: depth={depth!r}")
    for index in range(1, int(depth) + 1):
        block = transformer_block(d_model, num_heads=num_heads, mlp_dim=mlp_dim, dropout=dropout,
                                  norm=norm, name=f"{name}{index}")
        x = block(x, use_causal_mask=causal, attention_mask=attention_mask)
    if norm == "pre":
        x = layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return x


def _embedded_tokens(inputs: Any, vocab_size: int, sequence_length: int, d_model: int) -> Any:
    x = layers.Embedding(vocab_size, d_model, name="token_embedding")(inputs)
    return PositionEmbedding(sequence_length, name="position_embedding")(x)


def transformer_classifier(
    sequence_length: int = 8,
    vocab_size: int = 32,
    classes: int = 2,
    depth: int = 2,
    d_model: int = 16,
    num_heads: int = 2,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    norm: str = "pre",
    name: str = "transformer_classifier",
) -> keras.Model:
    """A Transformer encoder over token ids with a mean-pooled softmax classifier.

    Vaswani et al. (2017), Sec. 3.1 (encoder), pre-norm by default; its
    `2 * depth` residual sub-layers are what the lesion studies delete.

    Args:
        sequence_length: int. Tokens per input. Defaults to 8.
        vocab_size: int. Defaults to 32.
        classes: int. Defaults to 2.
        depth: int. Transformer blocks. Defaults to 2.
        d_model: int. Width of the residual stream. Defaults to 16.
        num_heads: int. Defaults to 2.
        mlp_dim: int or None. None: `4 * d_model`.
        dropout: float. Defaults to 0.
        norm: str. "pre" or "post" (`blocks.transformer_block`).
        name: str. The model's name.

    Returns:
        A `keras.Model` from int token ids (B, sequence_length) to (B, classes).

    Example:
        >>> model = transformer_classifier(depth=3)
        >>> tuple(model.output.shape), len([l for l in model.layers if "block" in l.name])
        ((None, 2), 6)
    """
    inputs = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = _embedded_tokens(inputs, vocab_size, sequence_length, d_model)
    x = transformer_stack(x, depth, d_model=d_model, num_heads=num_heads, mlp_dim=mlp_dim,
                          dropout=dropout, norm=norm)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_vit(
    input_shape: tuple = (16, 16, 3),
    patch_size: int = 4,
    classes: int = 10,
    depth: int = 2,
    d_model: int = 16,
    num_heads: int = 2,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    name: str = "tiny_vit",
) -> keras.Model:
    """A small Vision Transformer (Dosovitskiy et al. 2021, Sec. 3.1, Eq. 1-4), pre-norm.

    Non-overlapping `patch_size` patches are projected to `d_model` (a
    strided convolution), given learned position embeddings, and run
    through `depth` blocks; the classifier reads the mean over patches
    (the "GAP" variant of the paper's appendix) instead of a class token.

    Args:
        input_shape: tuple. (height, width, channels), channels-last. Defaults to (16, 16, 3).
        patch_size: int. Must divide height and width. Defaults to 4.
        classes: int. Defaults to 10.
        depth: int. Transformer blocks. Defaults to 2.
        d_model: int. Defaults to 16.
        num_heads: int. Defaults to 2.
        mlp_dim: int or None. None: `4 * d_model`.
        dropout: float. Defaults to 0.
        name: str. The model's name.

    Returns:
        A `keras.Model` from images to class probabilities.

    Example:
        >>> tuple(tiny_vit().get_layer("patches").output.shape)
        (None, 16, 16)
    """
    height, width = input_shape[0], input_shape[1]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"`patch_size` must divide the image height and width. Received: "
            f"patch_size={patch_size}, input_shape={input_shape}"
        )
    patches = (height // patch_size) * (width // patch_size)
    inputs = keras.Input(input_shape, name="images")
    x = layers.Conv2D(d_model, patch_size, strides=patch_size, data_format="channels_last",
                      name="patch_embedding")(inputs)
    x = layers.Reshape((patches, d_model), name="patches")(x)
    x = PositionEmbedding(patches, name="position_embedding")(x)
    x = transformer_stack(x, depth, d_model=d_model, num_heads=num_heads, mlp_dim=mlp_dim,
                          dropout=dropout)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_causal_lm(
    vocab_size: int = 32,
    sequence_length: int = 8,
    depth: int = 2,
    d_model: int = 16,
    num_heads: int = 2,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    norm: str = "pre",
    name: str = "tiny_causal_lm",
) -> keras.Model:
    """A GPT-style causal language model (Radford et al. 2019, Sec. 2.3), pre-norm by default.

    Token and position embeddings, `depth` causal blocks (each attention
    sub-layer is called with `use_causal_mask=True`), a final
    LayerNormalization and a softmax over the vocabulary at every position:
    output t predicts token t + 1. `lesion.stream.next_token_data` makes the
    (inputs, targets) pairs the lesion studies take.

    Args:
        vocab_size: int. Defaults to 32.
        sequence_length: int. Tokens per input. Defaults to 8.
        depth: int. Transformer blocks. Defaults to 2.
        d_model: int. Defaults to 16.
        num_heads: int. Defaults to 2.
        mlp_dim: int or None. None: `4 * d_model`.
        dropout: float. Defaults to 0.
        norm: str. "pre" or "post".
        name: str. The model's name.

    Returns:
        A `keras.Model` from int token ids (B, T) to probabilities (B, T, vocab_size).

    Example:
        >>> tuple(tiny_causal_lm(vocab_size=11).output.shape)
        (None, 8, 11)
    """
    inputs = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = _embedded_tokens(inputs, vocab_size, sequence_length, d_model)
    x = transformer_stack(x, depth, d_model=d_model, num_heads=num_heads, mlp_dim=mlp_dim,
                          dropout=dropout, norm=norm, causal=True)
    outputs = layers.Dense(vocab_size, activation="softmax", name="next_token")(x)
    return keras.Model(inputs, outputs, name=name)
