"""Residual block factories: each returns ONE `Residual` layer.

- `basic_block` and `bottleneck_block`: He et al., "Deep Residual Learning for
  Image Recognition" (2015), Fig. 5.
- The five activation placements of He et al., "Identity Mappings in Deep
  Residual Networks" (2016), Fig. 4, as `placement=`.
- `resnext_block`: Xie et al., "Aggregated Residual Transformations" (2017),
  Fig. 3c (grouped convolution).
- `dense_block` and `recurrent_block`: residual MLPs and RNNs (Bolte 2016).
- `transformer_block`: the attention and MLP sub-layers of a Transformer
  (Vaswani et al. 2017, Sec. 3.1), pre-norm (Xiong et al. 2020) or post-norm,
  as two `Residual` layers.

Inner layers follow keras.applications' name grammar: with `name="conv2_block1"`
the branch holds `conv2_block1_1_conv`, `conv2_block1_1_bn`,
`conv2_block1_1_relu`, `conv2_block1_2_conv`, ...; a projection shortcut holds
`conv2_block1_0_conv` / `conv2_block1_0_bn`; a pre-activation holds
`conv2_block1_preact_bn` / `conv2_block1_preact_relu`. The `Residual` itself is
named `conv2_block1` and its post-merge activation plays keras.applications'
`conv2_block1_out`. The branch is the `Residual`'s `layer`, a
`keras.Sequential` named `conv2_block1_branch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual.merges import (
    BatchNormAddMerge,  # noqa: F401  (re-exported: its old home)
    LayerNormAddMerge,
)
from keras_residual.residual import Residual
from keras_residual.shortcuts import AvgDownShortcut, ProjectionShortcut, ZeroPadShortcut

#: Activation placements of He et al. (2016), Fig. 4 (a) to (e).
PLACEMENTS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")
#: Placements whose branch starts with an activation of the block input.
PREACT_PLACEMENTS = ("relu_preact", "full_preact")
#: Where a bottleneck puts its stride.
STRIDE_POSITIONS = ("1x1", "3x3")
#: Shortcut kinds the factories accept besides a Keras layer.
SHORTCUTS = ("identity", "projection", "zero_pad", "avg_down", "none")


@dataclass(frozen=True)
class BlockOptions:
    """Everything a convolutional block factory passes down, resolved and validated once.

    The factories build one of these from their keyword arguments
    (`BlockOptions.create`) and hand it to the helpers that make the branch,
    the shortcut and the pre-activation, instead of a dozen positional
    parameters.

    Attributes:
        name: str. Block name; inner layers are named from it.
        placement: str. One of `PLACEMENTS` (He et al. 2016, Fig. 4).
        shortcut: str or keras.layers.Layer. One of `SHORTCUTS` or a layer.
        shortcut_from: str or None. "input", "preactivated", or None for the
            rule: string shortcuts with weights read the pre-activated input
            in pre-activation units (keras.applications v2), others `x`.
        use_bias: bool or None. None: a bias only where no BN follows.
        bn_momentum: float.
        bn_epsilon: float.
        kernel_initializer: initializer of the convolutions.
        zero_init_last: bool. Start the branch at zero (Goyal et al. 2017).
        drop_rate: float. Stochastic depth rate (Huang et al. 2016).
        data_format: str or None. "channels_last" or "channels_first"
            (`create` resolves None to `keras.config.image_data_format()`).

    Example:
        >>> opts = BlockOptions.create("b", placement="full_preact", shortcut="projection")
        >>> opts.preact, opts.resolved_shortcut_from
        (True, 'preactivated')
    """

    name: str
    placement: str = "original"
    shortcut: Any = "identity"
    shortcut_from: str | None = None
    use_bias: bool | None = None
    bn_momentum: float = 0.99
    bn_epsilon: float = 1.001e-5
    kernel_initializer: Any = "he_normal"
    zero_init_last: bool = False
    drop_rate: float = 0.0
    data_format: str | None = None

    def __post_init__(self) -> None:
        # Every way of making options validates them and resolves data_format=None.
        object.__setattr__(self, "data_format", _validate(
            self.placement, self.shortcut, self.drop_rate, self.data_format, self.shortcut_from
        ))

    @classmethod
    def create(cls, name: str | None, prefix: str = "block", **options: Any) -> BlockOptions:
        """Validated options; `name=None` picks a unique `{prefix}_N`, `data_format=None` Keras'."""
        opts = cls(name="", **options)  # validated before naming: a failed call takes no name
        return dataclasses.replace(opts, name=_block_name(name, prefix))

    @property
    def axis(self) -> int:
        return 1 if self.data_format == "channels_first" else -1

    @property
    def preact(self) -> bool:
        return self.placement in PREACT_PLACEMENTS

    @property
    def resolved_shortcut_from(self) -> str:
        """Where the shortcut reads: the explicit choice, else the placement's rule."""
        if self.shortcut_from is not None:
            return self.shortcut_from
        weighted = isinstance(self.shortcut, str) and self.shortcut not in ("identity", "none")
        return "preactivated" if self.preact and weighted else "input"

    def bias(self, followed_by_bn: bool) -> bool:
        # A bias right before BatchNormalization is cancelled by its mean
        # subtraction, so None keeps biases only where no BN follows.
        return (not followed_by_bn) if self.use_bias is None else self.use_bias

    def bn(self, name: str, zero_gamma: bool = False) -> layers.BatchNormalization:
        return layers.BatchNormalization(
            axis=self.axis,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            gamma_initializer="zeros" if zero_gamma else "ones",
            name=name,
        )


def _validate(
    placement: str, shortcut: Any, drop_rate: float, data_format: str | None,
    shortcut_from: str | None = None,
) -> str:
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {PLACEMENTS}. Received: placement={placement!r}")
    if not isinstance(shortcut, layers.Layer) and shortcut not in SHORTCUTS:
        raise ValueError(
            f"`shortcut` must be one of {SHORTCUTS} or a Keras layer. Received: shortcut={shortcut!r}"
        )
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"`drop_rate` must be in [0, 1). Received: drop_rate={drop_rate}")
    if shortcut_from not in (None, "input", "preactivated"):
        raise ValueError(
            "`shortcut_from` must be None, 'input' or 'preactivated'. "
            f"Received: shortcut_from={shortcut_from!r}"
        )
    if data_format not in (None, "channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be None, 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    return data_format or keras.config.image_data_format()


def _block_name(name: str | None, prefix: str) -> str:
    return name if name is not None else f"{prefix}_{keras.backend.get_uid(prefix)}"


def _conv(
    opts: BlockOptions,
    index: int,
    filters: int,
    kernel_size: int,
    stride: int,
    groups: int,
    followed_by_bn: bool,
    zero_kernel: bool,
) -> list[layers.Layer]:
    """`{name}_{index}_conv`, with explicit symmetric padding when strided.

    A strided "same" convolution pads asymmetrically on TensorFlow (0 before,
    1 after for even sizes) but symmetrically elsewhere; explicit (1, 1)
    zero-padding plus a "valid" convolution is what keras.applications
    ResNetV2 and torchvision do, on every backend.
    """
    out = []
    padding = "valid" if kernel_size == 1 else "same"
    if kernel_size > 1 and stride > 1:
        out.append(
            layers.ZeroPadding2D(
                kernel_size // 2, data_format=opts.data_format, name=f"{opts.name}_{index}_pad"
            )
        )
        padding = "valid"
    out.append(
        layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding=padding,
            groups=groups,
            use_bias=opts.bias(followed_by_bn),
            kernel_initializer="zeros" if zero_kernel else opts.kernel_initializer,
            data_format=opts.data_format,
            name=f"{opts.name}_{index}_conv",
        )
    )
    return out


def _branch(opts: BlockOptions, convs: Sequence[tuple]) -> keras.Sequential:
    """The branch F as conv / BN / ReLU layers placed as `opts.placement` says.

    `convs` holds one `(filters, kernel_size, stride, groups)` per conv.
    """
    stack = []
    last = len(convs)
    zero_init_last = opts.zero_init_last
    for index, (filters, kernel_size, stride, groups) in enumerate(convs, start=1):
        is_last = index == last
        # (b) moves the last BN after the addition; (e) has no BN after the last conv.
        with_bn = not (is_last and opts.placement in ("bn_after_add", "full_preact"))
        with_relu = not is_last or opts.placement == "relu_before_add"
        # zero_init_last: the last BN's gamma, or the last conv's kernel where no BN follows.
        stack += _conv(
            opts, index, filters, kernel_size, stride, groups,
            followed_by_bn=with_bn, zero_kernel=zero_init_last and is_last and not with_bn,
        )
        if with_bn:
            stack.append(opts.bn(f"{opts.name}_{index}_bn", zero_gamma=zero_init_last and is_last))
        if with_relu:
            stack.append(layers.ReLU(name=f"{opts.name}_{index}_relu"))
    return keras.Sequential(stack, name=f"{opts.name}_branch")


def _shortcut(opts: BlockOptions, shortcut: str | layers.Layer) -> str | layers.Layer:
    """A named shortcut layer for the string kinds that carry weights or options."""
    if isinstance(shortcut, layers.Layer) or shortcut in ("identity", "none"):
        return shortcut
    if shortcut == "zero_pad":
        return ZeroPadShortcut(data_format=opts.data_format, name=f"{opts.name}_0")
    # Post-activation units normalize the projection (ResNet v1); pre-activation
    # units add a bare 1x1 conv to the pre-activated input (keras.applications v2).
    kind = ProjectionShortcut if shortcut == "projection" else AvgDownShortcut
    return kind(
        batchnorm=not opts.preact,
        use_bias=opts.bias(followed_by_bn=not opts.preact),
        bn_momentum=opts.bn_momentum,
        bn_epsilon=opts.bn_epsilon,
        kernel_initializer=opts.kernel_initializer,
        data_format=opts.data_format,
        name=f"{opts.name}_0",
    )


def _preactivation(opts: BlockOptions) -> layers.Layer | None:
    if opts.placement == "relu_preact":
        return layers.ReLU(name=f"{opts.name}_preact_relu")
    if opts.placement == "full_preact":
        return keras.Sequential(
            [opts.bn(f"{opts.name}_preact_bn"), layers.ReLU(name=f"{opts.name}_preact_relu")],
            name=f"{opts.name}_preact",
        )
    return None


def _residual(opts: BlockOptions, convs: Sequence[tuple]) -> Residual:
    """Wrap the branch of `convs` into one Residual with `opts.placement`'s wiring."""
    merge = "add"
    if opts.placement == "bn_after_add" and opts.shortcut != "none":
        merge = BatchNormAddMerge(
            momentum=opts.bn_momentum, epsilon=opts.bn_epsilon, data_format=opts.data_format,
            name=f"{opts.name}_add",
        )
    # The string shortcut kinds read the pre-activated input in pre-activation
    # units (He et al. 2016; keras.applications v2); a user's layer reads x.
    return Residual(
        _branch(opts, convs),
        shortcut=_shortcut(opts, opts.shortcut),
        merge=merge,
        activation="relu" if opts.placement in ("original", "bn_after_add") else None,
        preactivation=_preactivation(opts),
        shortcut_from=opts.resolved_shortcut_from,
        drop_rate=opts.drop_rate,
        data_format=opts.data_format,
        name=opts.name,
    )


def basic_block(
    filters: int,
    *,
    stride: int = 1,
    placement: str = "original",
    shortcut: str | layers.Layer = "identity",
    shortcut_from: str | None = None,
    use_bias: bool | None = None,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1.001e-5,
    kernel_initializer: Any = "he_normal",
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    data_format: str | None = None,
    name: str | None = None,
) -> Residual:
    """Two 3x3 convolutions around a shortcut: He et al. (2015), Fig. 5 left.

    Args:
        filters: int. Channels of both convolutions (the block's output).
        stride: int. Stride of the first 3x3 conv. Defaults to 1.
        placement: str. Where BN and ReLU sit (He et al. 2016, Fig. 4):
            "original" (a; BN after each conv, ReLU after the addition),
            "bn_after_add" (b), "relu_before_add" (c), "relu_preact" (d;
            ReLU-only pre-activation) or "full_preact" (e; BN-ReLU-conv).
            Defaults to "original".
        shortcut: str or keras.layers.Layer. "identity" (default),
            "projection" (1x1 conv `{name}_0_conv`, with `{name}_0_bn` in the
            post-activation placements; option B), "zero_pad" (option A),
            "avg_down" (ResNet-D), "none" (plain twin) or a layer applied to
            the block input. Shape-changing blocks need a non-identity one.
        shortcut_from: str or None. "input" or "preactivated": where the
            shortcut reads in a pre-activation unit. None (default): the
            weighted string shortcuts read the pre-activated input, as
            keras.applications ResNetV2 does, others the block input.
        use_bias: bool or None. Bias on the convolutions; None (default)
            keeps it only on convolutions that no BatchNormalization follows.
        bn_momentum: float. BatchNormalization momentum. Defaults to 0.99.
        bn_epsilon: float. BatchNormalization epsilon. Defaults to 1.001e-5
            (keras.applications).
        kernel_initializer: initializer of the convolutions. Defaults to
            "he_normal" (He et al. 2015).
        zero_init_last: bool. Start the branch at 0 so the block starts as
            its shortcut: the last BN's gamma is 0, or, where the branch ends
            in a convolution ("bn_after_add", "full_preact"), its kernel.
            Defaults to False.
        drop_rate: float. Stochastic depth rate of this block. Defaults to 0.
        data_format: str or None. None: `keras.config.image_data_format()`.
        name: str or None. Block name, e.g. "conv2_block1"; None picks a
            unique "basic_block_N".

    Returns:
        A `Residual` layer.

    Example:
        >>> import keras
        >>> block = basic_block(32, stride=2, shortcut="projection", name="conv3_block1")
        >>> tuple(block(keras.ops.ones((1, 8, 8, 16))).shape)
        (1, 4, 4, 32)
        >>> [l.name for l in block.layer.layers][:3]
        ['conv3_block1_1_pad', 'conv3_block1_1_conv', 'conv3_block1_1_bn']
    """
    opts = _options("basic_block", locals())
    return _residual(opts, [(filters, 3, stride, 1), (filters, 3, 1, 1)])


def _bottleneck(
    opts: BlockOptions, width: int, out_channels: int, groups: int, stride: int, stride_on: str
) -> Residual:
    if stride_on not in STRIDE_POSITIONS:
        raise ValueError(
            f"`stride_on` must be one of {STRIDE_POSITIONS}. Received: stride_on={stride_on!r}"
        )
    on_1x1 = stride_on == "1x1"
    convs = [
        (width, 1, stride if on_1x1 else 1, 1),
        (width, 3, 1 if on_1x1 else stride, groups),
        (out_channels, 1, 1, 1),
    ]
    return _residual(opts, convs)


_OPTION_FIELDS = (
    "placement", "shortcut", "shortcut_from", "use_bias", "bn_momentum", "bn_epsilon",
    "kernel_initializer", "zero_init_last", "drop_rate", "data_format",
)


def _options(prefix: str, scope: dict) -> BlockOptions:
    """The `BlockOptions` of a factory call, from the factory's keyword arguments."""
    return BlockOptions.create(scope["name"], prefix, **{k: scope[k] for k in _OPTION_FIELDS})


def bottleneck_block(
    filters: int,
    *,
    stride: int = 1,
    stride_on: str = "1x1",
    expansion: int = 4,
    placement: str = "original",
    shortcut: str | layers.Layer = "identity",
    shortcut_from: str | None = None,
    use_bias: bool | None = None,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1.001e-5,
    kernel_initializer: Any = "he_normal",
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    data_format: str | None = None,
    name: str | None = None,
) -> Residual:
    """1x1 reduce, 3x3, 1x1 expand: He et al. (2015), Fig. 5 right.

    Args:
        filters: int. Width of the 1x1 and 3x3 convolutions; the block
            outputs `expansion * filters` channels.
        stride: int. Defaults to 1.
        stride_on: str. "1x1" (default): on the first 1x1 conv, as the paper
            and keras.applications ResNet50; "3x3": on the 3x3 conv ("ResNet
            v1.5", torchvision), more multiply-adds and better accuracy.
        expansion: int. Output channels over `filters`. Defaults to 4.
        placement: As in `basic_block`.
        shortcut: As in `basic_block`.
        shortcut_from: As in `basic_block`.
        use_bias: As in `basic_block`.
        bn_momentum: As in `basic_block`.
        bn_epsilon: As in `basic_block`.
        kernel_initializer: As in `basic_block`.
        zero_init_last: As in `basic_block`.
        drop_rate: As in `basic_block`.
        data_format: As in `basic_block`.
        name: str or None. Block name; None picks "bottleneck_block_N".

    Returns:
        A `Residual` layer.

    Example:
        >>> import keras
        >>> block = bottleneck_block(8, stride=2, shortcut="projection", name="conv3_block1")
        >>> tuple(block(keras.ops.ones((1, 8, 8, 16))).shape)
        (1, 4, 4, 32)
        >>> block.part("shortcut").layer.name
        'conv3_block1_0'
    """
    opts = _options("bottleneck_block", locals())
    return _bottleneck(opts, filters, expansion * filters, 1, stride, stride_on)


def resnext_block(
    filters: int,
    *,
    cardinality: int = 32,
    bottleneck_width: int = 4,
    stride: int = 1,
    stride_on: str = "3x3",
    expansion: int = 4,
    placement: str = "original",
    shortcut: str | layers.Layer = "identity",
    shortcut_from: str | None = None,
    use_bias: bool | None = None,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1.001e-5,
    kernel_initializer: Any = "he_normal",
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    data_format: str | None = None,
    name: str | None = None,
) -> Residual:
    """A bottleneck whose 3x3 is a grouped convolution: Xie et al. (2017), Fig. 3c.

    The grouped 3x3 has `cardinality` groups of `bottleneck_width * filters /
    64` channels each, so `filters=64, cardinality=32, bottleneck_width=4`
    is the first stage of ResNeXt-50 (32x4d): 1x1 to 128, grouped 3x3 with 32
    groups of 4, 1x1 to 256.

    Args:
        filters: int. The matching ResNet bottleneck's width (64, 128, 256,
            512 by stage); the block outputs `expansion * filters` channels.
        cardinality: int. Number of groups `C`. Defaults to 32.
        bottleneck_width: int. Channels per group at `filters=64` (the `d`
            of "32x4d"). Defaults to 4.
        stride: int. Defaults to 1.
        stride_on: str. "3x3" (default, as Xie et al.) or "1x1".
        expansion: int. Output channels over `filters`. Defaults to 4.
        placement: As in `basic_block`.
        shortcut: As in `basic_block`.
        shortcut_from: As in `basic_block`.
        use_bias: As in `basic_block`.
        bn_momentum: As in `basic_block`.
        bn_epsilon: As in `basic_block`.
        kernel_initializer: As in `basic_block`.
        zero_init_last: As in `basic_block`.
        drop_rate: As in `basic_block`.
        data_format: As in `basic_block`.
        name: str or None. Block name; None picks "resnext_block_N".

    Returns:
        A `Residual` layer.

    Example:
        >>> import keras
        >>> block = resnext_block(64, shortcut="projection", name="conv2_block1")
        >>> tuple(block(keras.ops.ones((1, 4, 4, 64))).shape)
        (1, 4, 4, 256)
        >>> block.layer.get_layer("conv2_block1_2_conv").groups
        32
    """
    width = cardinality * (bottleneck_width * filters // 64)
    if width <= 0:
        raise ValueError(
            "`cardinality * bottleneck_width * filters / 64` must be a positive number of "
            f"channels. Received: filters={filters}, cardinality={cardinality}, "
            f"bottleneck_width={bottleneck_width}"
        )
    opts = _options("resnext_block", locals())
    return _bottleneck(opts, width, expansion * filters, cardinality, stride, stride_on)


def dense_block(
    units: int,
    *,
    hidden_units: int | None = None,
    num_layers: int = 2,
    activation: str = "relu",
    normalization: str | None = None,
    post_activation: str | None = None,
    shortcut: str | layers.Layer = "identity",
    use_bias: bool = True,
    zero_init_last: bool = False,
    drop_rate: float = 0.0,
    name: str | None = None,
) -> Residual:
    """A residual MLP: `y = post_activation(x + Dense(act(...Dense(x))))`.

    The fully connected residual unit of Bolte (2016) ("Mathematical Example":
    the second layer of a two-layer network expressed as a residual).

    Args:
        units: int. Output width (the input width for an identity shortcut).
        hidden_units: int or None. Width of the inner layers; None: `units`.
        num_layers: int. Dense layers in the branch (>= 1). Defaults to 2.
        activation: str. Activation between the Dense layers. Defaults to "relu".
        normalization: str or None. "batch" or "layer" normalization after
            each Dense layer, or None (default).
        post_activation: str or None. Activation after the addition.
        shortcut: str or keras.layers.Layer. "identity" (default),
            "projection" (a Dense layer `{name}_0_conv` inside a
            `ProjectionShortcut`), "none" or a layer.
        use_bias: bool. Bias on the Dense layers. Defaults to True.
        zero_init_last: bool. Zero the last normalization's gamma, or the last
            Dense kernel without normalization: the block starts as its
            shortcut. Defaults to False.
        drop_rate: float. Stochastic depth rate. Defaults to 0.
        name: str or None. Block name; None picks "dense_block_N". Inner
            layers are `{name}_{i}_dense`, `{name}_{i}_norm`, `{name}_{i}_act`.

    Returns:
        A `Residual` layer.

    Example:
        >>> import keras
        >>> block = dense_block(16, hidden_units=32, name="fc1")
        >>> tuple(block(keras.ops.ones((2, 16))).shape)
        (2, 16)
    """
    if num_layers < 1:
        raise ValueError(f"`num_layers` must be >= 1. Received: num_layers={num_layers}")
    if normalization not in (None, "batch", "layer"):
        raise ValueError(
            f"`normalization` must be None, 'batch' or 'layer'. Received: {normalization!r}"
        )
    if shortcut in ("zero_pad", "avg_down"):
        raise ValueError(
            f"dense_block needs shortcut 'identity', 'projection', 'none' or a layer. "
            f"Received: shortcut={shortcut!r}"
        )
    _validate("original", shortcut, drop_rate, None)
    name = _block_name(name, "dense_block")
    hidden_units = hidden_units or units
    stack = []
    for index in range(1, num_layers + 1):
        is_last = index == num_layers
        zero = zero_init_last and is_last
        stack.append(
            layers.Dense(
                units if is_last else hidden_units,
                use_bias=use_bias,
                kernel_initializer="zeros" if zero and normalization is None else "glorot_uniform",
                name=f"{name}_{index}_dense",
            )
        )
        gamma = "zeros" if zero else "ones"
        if normalization == "batch":
            stack.append(layers.BatchNormalization(gamma_initializer=gamma, name=f"{name}_{index}_norm"))
        elif normalization == "layer":
            stack.append(layers.LayerNormalization(gamma_initializer=gamma, name=f"{name}_{index}_norm"))
        if not is_last:
            stack.append(layers.Activation(activation, name=f"{name}_{index}_act"))
    if shortcut == "projection":
        shortcut = ProjectionShortcut(name=f"{name}_0")
    return Residual(
        keras.Sequential(stack, name=f"{name}_branch"),
        shortcut=shortcut,
        activation=post_activation,
        drop_rate=drop_rate,
        name=name,
    )


def recurrent_block(
    units: int,
    *,
    cell: str = "gru",
    num_layers: int = 1,
    dropout: float = 0.0,
    shortcut: str | layers.Layer = "identity",
    drop_rate: float = 0.0,
    name: str | None = None,
) -> Residual:
    """A residual RNN over sequences: `y = x + RNN(x)` with `return_sequences=True`.

    Bolte (2016) applies residual connections to recurrent layers (its GRU
    example); this stacks `num_layers` GRU or LSTM layers as the branch.

    Args:
        units: int. Units of every recurrent layer (the output width).
        cell: str. "gru" (default) or "lstm".
        num_layers: int. Recurrent layers in the branch (>= 1). Defaults to 1.
        dropout: float. Input dropout of each recurrent layer. Defaults to 0.
        shortcut: str or keras.layers.Layer. "identity" (default; needs
            input width == `units`), "projection" (a 1x1 Conv1D per time
            step), "none" or a layer.
        drop_rate: float. Stochastic depth rate. Defaults to 0.
        name: str or None. Block name; None picks "recurrent_block_N". Inner
            layers are `{name}_{i}_gru` / `{name}_{i}_lstm`.

    Returns:
        A `Residual` layer.

    Example:
        >>> import keras
        >>> block = recurrent_block(8, cell="lstm", name="rnn1")
        >>> tuple(block(keras.ops.ones((2, 5, 8))).shape)
        (2, 5, 8)
    """
    rnn = {"gru": layers.GRU, "lstm": layers.LSTM}.get(cell)
    if rnn is None:
        raise ValueError(f"`cell` must be 'gru' or 'lstm'. Received: cell={cell!r}")
    if num_layers < 1:
        raise ValueError(f"`num_layers` must be >= 1. Received: num_layers={num_layers}")
    if shortcut in ("zero_pad", "avg_down"):
        raise ValueError(
            "recurrent_block needs shortcut 'identity', 'projection', 'none' or a layer. "
            f"Received: shortcut={shortcut!r}"
        )
    _validate("original", shortcut, drop_rate, None)
    name = _block_name(name, "recurrent_block")
    stack = [
        rnn(units, return_sequences=True, dropout=dropout, name=f"{name}_{index}_{cell}")
        for index in range(1, num_layers + 1)
    ]
    if shortcut == "projection":
        shortcut = ProjectionShortcut(name=f"{name}_0")
    return Residual(
        keras.Sequential(stack, name=f"{name}_branch"),
        shortcut=shortcut,
        drop_rate=drop_rate,
        name=name,
    )


#: Where a Transformer sub-layer normalizes: before its branch or after the addition.
NORMS = ("pre", "post")


@dataclass(frozen=True)
class TransformerBlock:
    """The two sub-layers of one Transformer block, each a `Residual`; called in order.

    The pair `(attention, mlp)`, which unpacks like a tuple: the lesion tools
    see two blocks (the sub-layer granularity of He et al. 2024) and group
    them back into one (`keras_residual.lesion.stream.transformer_units`).
    Calling it runs `mlp(attention(x, **masks))`, passing the masks to the
    attention only.

    Args:
        attention: Residual. The attention sub-layer.
        mlp: Residual. The MLP sub-layer.

    Example:
        >>> import keras
        >>> attention, mlp = transformer_block(8, num_heads=2, name="t1")
        >>> attention.name, mlp.name
        ('t1_attention', 't1_mlp')
    """

    attention: Residual
    mlp: Residual

    def __iter__(self) -> Any:
        """`attention`, then `mlp`: `attention, mlp = block`."""
        return iter((self.attention, self.mlp))

    def __call__(self, x: Any, use_causal_mask: bool = False, attention_mask: Any = None,
                 training: bool | None = None) -> Any:
        """`mlp(attention(x))`, the causal and attention masks reaching the attention layer."""
        masks = {"use_causal_mask": True} if use_causal_mask else {}
        if attention_mask is not None:
            masks["attention_mask"] = attention_mask
        return self.mlp(self.attention(x, training=training, **masks), training=training)


def transformer_block(
    d_model: int,
    *,
    num_heads: int,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    norm: str = "pre",
    activation: str = "gelu",
    epsilon: float = 1e-6,
    drop_rate: float = 0.0,
    name: str | None = None,
) -> TransformerBlock:
    """A Transformer block as two residual sub-layers: self-attention, then an MLP.

    Vaswani et al., "Attention Is All You Need" (2017), Sec. 3.1, Fig. 1.
    With `norm="pre"` (GPT-2, ViT; Xiong et al. 2020) each sub-layer is
    `x + F(LayerNorm(x))`, a `Residual` whose pre-activation is the
    LayerNormalization: deleting it (Veit et al. 2016, Sec. 4.1) leaves
    exactly `x`, the residual stream. With `norm="post"` (the original) each
    is `LayerNorm(x + F(x))` (`LayerNormAddMerge`): deleting it leaves
    `LayerNorm(x)`, since the norm stays with the stream. Causal and
    attention masks are call arguments of the attention sub-layer
    (`attention(x, use_causal_mask=True)`), which passes them to its
    MultiHeadAttention.

    Args:
        d_model: int. Width of the residual stream.
        num_heads: int. Attention heads; `d_model` must divide by it.
        mlp_dim: int or None. Hidden width of the MLP; None: `4 * d_model`.
        dropout: float. Dropout on the attention weights and after each
            MLP Dense layer. Defaults to 0.
        norm: str. "pre" (default) or "post".
        activation: str. The MLP's activation. Defaults to "gelu".
        epsilon: float. LayerNormalization epsilon. Defaults to 1e-6.
        drop_rate: float. Stochastic depth rate of both sub-layers. Defaults to 0.
        name: str or None. Block name; None picks "transformer_block_N". The
            sub-layers are `{name}_attention` (branch `{name}_attention_mha`,
            norm `{name}_attention_norm`) and `{name}_mlp` (branch
            `{name}_mlp_branch` with `{name}_mlp_1_dense`, `{name}_mlp_2_dense`).

    Returns:
        TransformerBlock: the pair `(attention, mlp)` of `Residual` layers.

    Example:
        >>> import keras
        >>> block = transformer_block(8, num_heads=2, mlp_dim=16, name="t1")
        >>> tuple(block(keras.ops.ones((2, 5, 8)), use_causal_mask=True).shape)
        (2, 5, 8)
    """
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")
    if num_heads < 1 or d_model % num_heads:
        raise ValueError(
            f"`d_model` must be a multiple of `num_heads`. Received: d_model={d_model}, "
            f"num_heads={num_heads}"
        )
    name = _block_name(name, "transformer_block")
    mlp_dim = mlp_dim or 4 * d_model
    attention = layers.MultiHeadAttention(
        num_heads, d_model // num_heads, dropout=dropout, name=f"{name}_attention_mha"
    )
    mlp = keras.Sequential([
        layers.Dense(mlp_dim, activation=activation, name=f"{name}_mlp_1_dense"),
        layers.Dropout(dropout, name=f"{name}_mlp_1_dropout"),
        layers.Dense(d_model, name=f"{name}_mlp_2_dense"),
        layers.Dropout(dropout, name=f"{name}_mlp_2_dropout"),
    ], name=f"{name}_mlp_branch")
    return TransformerBlock(*(
        Residual(
            branch,
            preactivation=layers.LayerNormalization(epsilon=epsilon, name=f"{sub}_norm")
            if norm == "pre" else None,
            merge=LayerNormAddMerge(epsilon, name=f"{sub}_add") if norm == "post" else "add",
            drop_rate=drop_rate,
            name=sub,
        )
        for branch, sub in ((attention, f"{name}_attention"), (mlp, f"{name}_mlp"))
    ))


def linear_decay_drop_rates(n: int, final_survival: float = 0.5) -> np.ndarray:
    """Drop rates of `n` blocks whose survival falls linearly to `final_survival`.

    Huang et al. 2016, Eq. 4: block l of L survives with probability
    `1 - l / L * (1 - p_L)`, so the drop rate is `l / L * (1 - p_L)`;
    a one-block network gets `1 - p_L`.

    Args:
        n: int. Number of residual blocks.
        final_survival: float in (0, 1]. Survival probability of the last
            block. Defaults to 0.5 (Huang et al.).

    Returns:
        np.ndarray of shape (n,).

    Example:
        >>> linear_decay_drop_rates(4, 0.5).tolist()
        [0.125, 0.25, 0.375, 0.5]
    """
    if int(n) != n or n < 1:
        raise ValueError(f"`n` must be a positive integer. Received: n={n!r}")
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"`final_survival` must be in (0, 1]. Received: {final_survival!r}")
    return np.arange(1, n + 1) / n * (1.0 - final_survival)
