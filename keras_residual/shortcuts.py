"""Shortcut connections: the `h(x)` of a residual unit `y = merge(h(x), F(x))`.

He et al., "Deep Residual Learning for Image Recognition" (2015), Sec. 3.3:
identity shortcuts where shapes match; where they differ, (A) zero-padding
with parameter-free subsampling or (B) a 1x1 projection. He et al., "Bag of
Tricks" (2019) adds ResNet-D: average pooling before the 1x1 projection.

The shortcut classes here take `filters=None, strides=None` by default: the
`Residual` wrapper fills them in from the shapes it sees when it is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

Shape = Sequence[Any]

#: Names accepted by `Residual(shortcut=...)`.
SHORTCUT_KINDS = ("identity", "projection", "zero_pad", "avg_down", "none")


def channel_axis(ndim: int, data_format: str) -> int:
    """Index of the channel axis of a rank-`ndim` tensor."""
    return 1 if (data_format == "channels_first" and ndim > 2) else ndim - 1


def spatial_dims(shape: Shape, data_format: str) -> tuple:
    """The spatial (non-batch, non-channel) dimensions of `shape`."""
    if len(shape) <= 2:
        return ()
    return tuple(shape[2:]) if data_format == "channels_first" else tuple(shape[1:-1])


def infer_strides(input_shape: Shape, output_shape: Shape, data_format: str) -> tuple:
    """Strides that take the spatial size of `input_shape` to `output_shape`.

    A 1x1 kernel with stride `s` and "valid" padding maps a length `n` to
    `ceil(n / s)`, which is also what a strided 3x3 "same" conv gives, so
    the same stride aligns the shortcut with a strided branch. The smallest
    such stride is `ceil(n / n_out)`; rounding `n / n_out` instead misses
    cases such as a 3x3 "valid" conv with stride 2 on 5 positions (5 -> 2,
    bridged by stride 3).

    Raises:
        ValueError: if no integer stride maps one size to the other.
    """
    if len(input_shape) != len(output_shape):
        raise ValueError(
            "A strided shortcut needs input and output of the same rank. "
            f"Received: input_shape={tuple(input_shape)}, output_shape={tuple(output_shape)}"
        )
    strides = []
    for n_in, n_out in zip(
        spatial_dims(input_shape, data_format),
        spatial_dims(output_shape, data_format),
        strict=True,
    ):
        if n_in is None or n_out is None or n_in == n_out:
            strides.append(1)
            continue
        s = max(1, math.ceil(n_in / n_out))
        if math.ceil(n_in / s) != n_out:
            raise ValueError(
                f"No integer stride maps spatial size {n_in} to {n_out}. "
                f"Received: input_shape={tuple(input_shape)}, "
                f"output_shape={tuple(output_shape)}"
            )
        strides.append(s)
    return tuple(strides)


class _InferredShortcut(layers.Layer):
    """Base for shortcuts whose output size is set by the `Residual` around them."""

    def __init__(
        self,
        filters: int | None = None,
        strides: int | Sequence[int] | None = None,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Position-wise (a strided 1x1 map): a sequence mask still holds.
        self.supports_masking = True
        self.filters = filters
        self.strides = strides
        self.data_format = data_format

    def adapt(self, input_shape: Shape, output_shape: Shape, data_format: str) -> None:
        """Fill in `filters`, `strides` and `data_format` from the shapes to bridge."""
        if self.data_format is None:
            self.data_format = data_format
        if self.filters is None:
            self.filters = output_shape[channel_axis(len(output_shape), self.data_format)]
        if self.strides is None:
            self.strides = infer_strides(input_shape, output_shape, self.data_format)
        elif isinstance(self.strides, int):
            self.strides = (self.strides,) * max(len(input_shape) - 2, 0)
        else:
            self.strides = tuple(self.strides)

    def _rank(self, input_shape: Shape) -> int:
        return len(input_shape) - 2

    def get_config(self) -> dict:
        config = super().get_config()
        strides = list(self.strides) if isinstance(self.strides, tuple) else self.strides
        config.update(filters=self.filters, strides=strides, data_format=self.data_format)
        return config


def _conv_or_dense(rank: int, filters: int, strides: tuple, data_format: str, **kwargs):
    if rank == 0:
        return layers.Dense(filters, **kwargs)
    conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}.get(rank)
    if conv is None:
        raise ValueError(f"Projection shortcuts support 0 to 3 spatial dims. Received: {rank}")
    return conv(filters, 1, strides=strides, data_format=data_format, **kwargs)


@keras.saving.register_keras_serializable(package="keras_residual")
class ProjectionShortcut(_InferredShortcut):
    """Projection shortcut (He et al. 2015, Eq. 2, option B): `W_s x`.

    A 1x1 convolution for 1D/2D/3D inputs (stride taken from the spatial
    shapes) or a Dense layer for vectors, optionally followed by
    BatchNormalization as in the ImageNet ResNets.

    Args:
        filters: int or None. Output channels; None takes the branch's.
        strides: int, tuple or None. None infers them from the shapes.
        batchnorm: bool. Add BatchNormalization after the projection.
            Defaults to False.
        use_bias: bool. Bias on the projection. Defaults to `not batchnorm`.
        bn_momentum: float. BatchNormalization momentum. Defaults to 0.99.
        bn_epsilon: float. BatchNormalization epsilon. Defaults to 1.001e-5.
        kernel_initializer: initializer of the projection kernel.
        data_format: str or None. None takes the Residual's.
        **kwargs: base Layer arguments. With `name="conv2_block1_0"` the inner
            layers are `conv2_block1_0_conv` and `conv2_block1_0_bn`
            (keras.applications' names).

    Example:
        >>> import keras
        >>> from keras_residual import Residual, ProjectionShortcut
        >>> block = Residual(keras.layers.Conv2D(8, 3, strides=2, padding="same"),
        ...                  shortcut=ProjectionShortcut(batchnorm=True))
        >>> tuple(block(keras.ops.ones((1, 8, 8, 4))).shape)
        (1, 4, 4, 8)
    """

    def __init__(
        self,
        filters: int | None = None,
        strides: int | Sequence[int] | None = None,
        batchnorm: bool = False,
        use_bias: bool | None = None,
        bn_momentum: float = 0.99,
        bn_epsilon: float = 1.001e-5,
        kernel_initializer: Any = "glorot_uniform",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(filters, strides, data_format, **kwargs)
        self.batchnorm = batchnorm
        self.use_bias = (not batchnorm) if use_bias is None else use_bias
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.proj = None
        self.bn = None

    def build(self, input_shape: Shape) -> None:
        rank = self._rank(input_shape)
        if self.strides is None or self.filters is None:
            self.adapt(input_shape, input_shape, self.data_format or "channels_last")
        self.proj = _conv_or_dense(
            rank,
            self.filters,
            self.strides,
            self.data_format,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            name=f"{self.name}_conv",
            dtype=self.dtype_policy,
        )
        self.proj.build(input_shape)
        if self.batchnorm:
            out_shape = self.proj.compute_output_shape(input_shape)
            self.bn = layers.BatchNormalization(
                axis=channel_axis(len(input_shape), self.data_format),
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                name=f"{self.name}_bn",
                dtype=self.dtype_policy,
            )
            self.bn.build(out_shape)

    def call(self, inputs, training=None):
        x = self.proj(inputs)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return x

    def compute_output_shape(self, input_shape: Shape) -> tuple:
        return self.proj.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            batchnorm=self.batchnorm,
            use_bias=self.use_bias,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_residual")
class ZeroPadShortcut(_InferredShortcut):
    """Parameter-free shortcut, option A of He et al. (2015), Sec. 3.3 and 4.2.

    Subsamples spatially by taking every `stride`-th position (a 1x1
    max-pool with that stride) and appends zero channels up to `filters`.
    This is the shortcut of the CIFAR-10 ResNets (Table 6).

    Args:
        filters: int or None. Output channels (>= input channels); None takes
            the branch's.
        strides: int, tuple or None. None infers them from the shapes.
        data_format: str or None. None takes the Residual's.
        **kwargs: base Layer arguments.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Conv2D(32, 3, strides=2, padding="same"),
        ...                  shortcut="zero_pad")
        >>> tuple(block(keras.ops.ones((1, 8, 8, 16))).shape)
        (1, 4, 4, 32)
    """

    def build(self, input_shape: Shape) -> None:
        if self.strides is None or self.filters is None:
            self.adapt(input_shape, input_shape, self.data_format or "channels_last")
        axis = channel_axis(len(input_shape), self.data_format)
        in_channels = input_shape[axis]
        if in_channels is not None and self.filters < in_channels:
            raise ValueError(
                "ZeroPadShortcut can only add channels: the branch has "
                f"{self.filters} output channels but the input has {in_channels}. "
                "Use shortcut='projection' instead."
            )

    def call(self, inputs):
        x = inputs
        if any(s != 1 for s in self.strides):
            x = ops.max_pool(
                x, pool_size=1, strides=self.strides, padding="valid",
                data_format=self.data_format,
            )
        axis = channel_axis(len(x.shape), self.data_format)
        extra = self.filters - x.shape[axis]
        if extra > 0:
            pad = [[0, 0]] * len(x.shape)
            pad[axis] = [0, extra]
            x = ops.pad(x, pad)
        return x

    def compute_output_shape(self, input_shape: Shape) -> tuple:
        shape = list(input_shape)
        axis = channel_axis(len(shape), self.data_format)
        offset = 2 if self.data_format == "channels_first" else 1
        for i, s in enumerate(self.strides):
            if shape[offset + i] is not None:
                shape[offset + i] = math.ceil(shape[offset + i] / s)
        shape[axis] = self.filters
        return tuple(shape)


@keras.saving.register_keras_serializable(package="keras_residual")
class AvgDownShortcut(ProjectionShortcut):
    """ResNet-D shortcut (He et al., "Bag of Tricks", 2019, Fig. 2c).

    Average pooling with the block's stride, then a stride-1 1x1 projection
    (and optional BatchNormalization), so that the projection sees every
    input position instead of one in four.

    It takes the arguments of `ProjectionShortcut`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Conv2D(8, 3, strides=2, padding="same"),
        ...                  shortcut="avg_down")
        >>> tuple(block(keras.ops.ones((1, 8, 8, 4))).shape)
        (1, 4, 4, 8)
    """

    def build(self, input_shape: Shape) -> None:
        rank = self._rank(input_shape)
        if rank == 0:
            raise ValueError("avg_down needs spatial inputs; use 'projection' for vectors.")
        if self.strides is None or self.filters is None:
            self.adapt(input_shape, input_shape, self.data_format or "channels_last")
        self.pool = None
        pooled_shape = input_shape
        if any(s != 1 for s in self.strides):
            pool = {1: layers.AveragePooling1D, 2: layers.AveragePooling2D,
                    3: layers.AveragePooling3D}[rank]
            self.pool = pool(
                self.strides, strides=self.strides, padding="same",
                data_format=self.data_format, name=f"{self.name}_pool",
                dtype=self.dtype_policy,
            )
            pooled_shape = self.pool.compute_output_shape(input_shape)
        strides, self.strides = self.strides, (1,) * rank
        try:
            super().build(pooled_shape)
        finally:
            self.strides = strides

    def call(self, inputs, training=None):
        x = inputs if self.pool is None else self.pool(inputs)
        return super().call(x, training=training)

    def compute_output_shape(self, input_shape: Shape) -> tuple:
        if self.pool is not None:
            input_shape = self.pool.compute_output_shape(input_shape)
        return self.proj.compute_output_shape(input_shape)


def make_shortcut(kind: str | layers.Layer) -> layers.Layer | None:
    """The shortcut layer for a `Residual(shortcut=...)` value (None: identity or none)."""
    if isinstance(kind, layers.Layer):
        return kind
    if kind in ("identity", "none"):
        return None
    if kind == "projection":
        return ProjectionShortcut(name="shortcut")
    if kind == "zero_pad":
        return ZeroPadShortcut(name="shortcut")
    if kind == "avg_down":
        return AvgDownShortcut(name="shortcut")
    raise ValueError(
        f"`shortcut` must be one of {SHORTCUT_KINDS} or a Keras layer. Received: shortcut={kind!r}"
    )


# ------------------------------------------------------- shape diagnostics

# Layers that drop the axes a shortcut would need: no shortcut can bridge them.
_RANK_REDUCING = (
    layers.Flatten,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
)


def shapes_match(a: Shape, b: Shape) -> bool:
    """Equal rank and equal non-batch dims, with None matching anything.

    Example:
        >>> shapes_match((None, 4, 4, 8), (2, None, 4, 8)), shapes_match((None, 4), (None, 5))
        (True, False)
    """
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:], strict=True))


def suggest_shortcuts(
    source_shape: Shape, branch_shape: Shape, data_format: str | None = None
) -> list[str]:
    """The shortcut kinds that really map `source_shape` to `branch_shape`.

    Each candidate of He et al. (2015), Sec. 3.3 (option B: "projection",
    option A: "zero_pad") and He et al. (2019), "Bag of Tricks", ResNet-D
    ("avg_down") is built on the shapes; the kinds whose output matches are
    returned, in that order.

    Args:
        source_shape: shape of what the shortcut reads (with the batch axis).
        branch_shape: shape of the branch output it must match.
        data_format: "channels_last", "channels_first" or None (Keras' image
            data format for inputs with 2+ spatial dims, else channels-last).

    Returns:
        list of str.

    Example:
        >>> suggest_shortcuts((None, 8, 8, 4), (None, 4, 4, 8))
        ['projection', 'zero_pad', 'avg_down']
        >>> suggest_shortcuts((None, 8), (None, 16))
        ['projection', 'zero_pad']
    """
    if data_format is None:
        data_format = keras.config.image_data_format() if len(source_shape) >= 4 else "channels_last"
    working = []
    for kind in ("projection", "zero_pad", "avg_down"):
        candidate = make_shortcut(kind)
        try:
            candidate.adapt(source_shape, branch_shape, data_format)
            candidate.build(source_shape)
            out = candidate.compute_output_shape(tuple(source_shape))
        except (ValueError, TypeError):
            continue
        if shapes_match(out, branch_shape):
            working.append(kind)
    return working


def branch_fix(layer: layers.Layer, source_shape: Shape, branch_shape: Shape) -> str:
    """The change to a branch layer that removes a shape mismatch, for common layers ("" if none).

    Example:
        >>> branch_fix(keras.layers.Conv2D(4, 3), (None, 8, 8, 4), (None, 6, 6, 4))[:32]
        " Conv2D(padding='valid') shrinks"
    """
    if isinstance(layer, _RANK_REDUCING):
        return (
            f" {type(layer).__name__} drops axes that a shortcut cannot restore, so "
            "it cannot be wrapped: wrap the layers before it and apply it after "
            "the block."
        )
    if len(source_shape) != len(branch_shape) and getattr(layer, "return_sequences", True) is False:
        return (
            f" {type(layer).__name__} returns only its last step: pass "
            "return_sequences=True to keep one output per step."
        )
    padding = getattr(layer, "padding", None)
    kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if (
        padding == "valid"
        and kernel is not None
        and any(k > 1 for k in np.atleast_1d(kernel))
        and len(source_shape) == len(branch_shape)
    ):
        return (
            f" {type(layer).__name__}(padding='valid') shrinks every spatial size by "
            "kernel_size - 1: pass padding='same' to keep the size."
        )
    return ""


def identity_mismatch_message(
    block_name: str, layer: layers.Layer, source_shape: Shape, branch_shape: Shape,
    data_format: str | None = None,
) -> str:
    """The error for an identity shortcut around a shape-changing branch, with the fixes.

    Example:
        >>> message = identity_mismatch_message(
        ...     "block", keras.layers.Dense(8, name="fc"), (None, 4), (None, 8))
        >>> "Pass shortcut='projection' or 'zero_pad'" in message
        True
    """
    fix = branch_fix(layer, source_shape, branch_shape)
    working = [repr(k) for k in suggest_shortcuts(source_shape, branch_shape, data_format)]
    text = (
        f"Residual {block_name!r} cannot add an identity shortcut around layer "
        f"{layer.name!r} ({type(layer).__name__}): the branch maps input "
        f"shape {tuple(source_shape)} to output shape {tuple(branch_shape)}."
    )
    if fix:
        text += fix
    if working:
        text += (
            f" {'Or pass' if fix else 'Pass'} shortcut={' or '.join(working)} to "
            "bridge the shapes"
        )
        text += ", or shortcut='none' for a plain layer."
    elif not fix:
        text += (
            " No shortcut of this library maps one shape to the other: change the "
            "branch, pass a Keras layer that does as `shortcut=`, or shortcut='none'."
        )
    return text + " Received: shortcut='identity'"
