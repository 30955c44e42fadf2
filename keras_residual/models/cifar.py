"""CIFAR-10 ResNets: He et al. 2015, Sec. 4.2, and the pre-activation nets of He et al. 2016.

`cifar_resnet(depth)`: 6n+2 layers (20, 32, 44, 56, 110, 1202), a 3x3 conv
with 16 filters, three stages of n basic blocks with 16/32/64 filters (feature
maps 32/16/8), option A (zero-padding) shortcuts, global average pooling and a
10-way classifier (Table 6: ResNet-20 has 0.27M parameters, ResNet-110 1.7M).

`cifar_preact_resnet(depth)`: full pre-activation units (He et al. 2016,
Fig. 4e): ResNet-110 (basic, 6n+2) and ResNet-164 / ResNet-1001 (bottleneck,
9n+2), with 1x1 projection shortcuts where the shape changes and a final
BN-ReLU. The 110-layer one is Veit et al.'s 54-module network.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_residual.models.imagenet import build_resnet
from keras_residual.models.specs import CIFAR_SPECS


def _blocks_per_stage(depth: int, layers_per_block: int) -> int:
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest or n < 1:
        raise ValueError(
            f"A CIFAR ResNet with {layers_per_block}-layer blocks has "
            f"{3 * layers_per_block}n+2 layers (n >= 1). Received: depth={depth}"
        )
    return n


def cifar_resnet(depth: int = 20, classes: int = 10, **kwargs: Any) -> keras.Model:
    """The CIFAR-10 ResNet of He et al. (2015), Sec. 4.2 and Table 6.

    Args:
        depth: int. 6n+2 (20, 32, 44, 56, 110, 1202). Defaults to 20.
        classes: int. Defaults to 10.
        **kwargs: any `build_resnet` argument or specification key:
            `shortcut="projection"` for option B, `plain=True` for the plain
            twin (Fig. 6 left), `placement=` for the units of He et al.
            (2016), Fig. 4, `input_shape=` (default 32x32x3), `drop_rate=`,
            `bn_momentum=`, ...

    Returns:
        A `keras.Model` named `cifar_resnet{depth}`.

    Example:
        >>> from keras_residual import Residual
        >>> m = cifar_resnet(20)
        >>> sum(isinstance(l, Residual) for l in m.layers)
        9
    """
    n = _blocks_per_stage(depth, 2)
    defaults = {"name": f"cifar_resnet{depth}", "blocks": (n, n, n)}
    return build_resnet(CIFAR_SPECS["cifar"], classes=classes, **{**defaults, **kwargs})


def cifar_preact_resnet(
    depth: int = 110, classes: int = 10, block: str | None = None, **kwargs: Any
) -> keras.Model:
    """A pre-activation CIFAR-10 ResNet: He et al. (2016), Sec. 5, Tables 2 and 3.

    Args:
        depth: int. 6n+2 with basic blocks (110) or 9n+2 with bottlenecks
            (164, 1001). Defaults to 110.
        classes: int. Defaults to 10.
        block: str or None. "basic" or "bottleneck"; None: bottleneck from
            164 layers on, as the paper.
        **kwargs: any `build_resnet` argument or specification key.

    Returns:
        A `keras.Model` named `cifar_preact_resnet{depth}`.

    Example:
        >>> m = cifar_preact_resnet(164, input_shape=(16, 16, 3))
        >>> m.get_layer("conv4_block18").output.shape[-1]
        256
    """
    block = block or ("bottleneck" if depth >= 164 else "basic")
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"`block` must be 'basic' or 'bottleneck'. Received: block={block!r}")
    n = _blocks_per_stage(depth, 2 if block == "basic" else 3)
    defaults = {"name": f"cifar_preact_resnet{depth}", "blocks": (n, n, n), "block": block}
    return build_resnet(CIFAR_SPECS["cifar_preact"], classes=classes, **{**defaults, **kwargs})
