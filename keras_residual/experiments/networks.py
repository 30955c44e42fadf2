"""The networks the papers compare, from the library's builders.

- `cifar_net`: the CIFAR ResNet of He et al. (2015), Sec. 4.2 (6n+2 layers,
  three stages, option A shortcuts), its plain twin (Fig. 6) and the
  activation placements of He et al. (2016), Fig. 4.
- `rewire`: the same network with another merge or shortcut in every
  residual unit: the shortcut variants of He et al. (2016), Fig. 2 / Table 1.
- `resnext_net`: a CIFAR-style ResNeXt (Xie et al. 2017, Sec. 5.3 layout)
  whose cardinality and group width follow Table 2's equal-budget pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras

from keras_residual import graph, models
from keras_residual.experiments import published
from keras_residual.merges import GatedMerge, ScaledMerge
from keras_residual.models.imagenet import build_resnet
from keras_residual.models.specs import CIFAR_SPECS

#: He et al. (2016), Table 1 rows as `rewire` arguments; "original" is the
#: unchanged network.
SHORTCUT_VARIANTS: dict[str, dict[str, Any]] = {
    "original": {},
    "constant scaling (0.5, 1)": {"merge": ScaledMerge(0.5, 1.0)},
    "constant scaling (0.5, 0.5)": {"merge": "scaled"},
    "exclusive gating (init -6)": {"merge": "exclusive_gating"},
    "shortcut-only gating (init 0)": {"merge": GatedMerge("shortcut", bias_initializer=0.0)},
    "shortcut-only gating (init -6)": {"merge": "shortcut_gating"},
    "1x1 conv shortcut": {"shortcut": "projection"},
    "dropout shortcut (0.5)": {"merge": "shortcut_dropout"},
}

#: He et al. (2016), Fig. 4 (a)-(e) as `placement=` values of the builders.
PLACEMENT_VARIANTS: dict[str, str] = {
    "(a) original": "original",
    "(b) BN after addition": "bn_after_add",
    "(c) ReLU before addition": "relu_before_add",
    "(d) ReLU-only pre-activation": "relu_preact",
    "(e) full pre-activation": "full_preact",
}


def cifar_net(
    depth: int,
    plain: bool = False,
    widths: Sequence[int] = (16, 32, 64),
    input_shape: Sequence[int] = (32, 32, 3),
    classes: int = 10,
    placement: str = "original",
    bn_momentum: float = 0.9,
) -> keras.Model:
    """He et al. (2015)'s CIFAR ResNet of `depth` = 6n+2 layers, or its plain twin.

    `models.cifar_resnet` with the stage widths, input shape and BN momentum
    of the experiment; `plain=True` removes every shortcut (Fig. 6, left).
    With the pre-activation placements (d) and (e) the first unit splits
    after its activation, as He et al. (2016, Sec. 4.1 and appendix) do for
    the unit that follows the stand-alone conv1 ("we adopt the first
    activation right after conv1 and before splitting into two paths"): its
    shortcut reads the pre-activated input (`shortcut_from="preactivated"`).

    Example:
        >>> m = cifar_net(8, plain=True, widths=(4, 8, 16), input_shape=(14, 14, 1))
        >>> m.name, m.output.shape[-1]
        ('plain8', 10)
        >>> pre = cifar_net(14, widths=(4, 8, 16), input_shape=(8, 8, 1), placement="full_preact")
        >>> [b.shortcut_from for b in graph.blocks(pre)][:2]
        ['preactivated', 'input']
    """
    net = models.cifar_resnet(
        depth, classes=classes, input_shape=tuple(input_shape), filters=tuple(widths),
        plain=plain, placement=placement, bn_momentum=bn_momentum,
        name=f"{'plain' if plain else 'resnet'}{depth}",
    )
    if plain or placement not in ("full_preact", "relu_preact"):
        return net
    first = graph.blocks(net)[0]

    def clone_layer(layer):
        config = layer.get_config()
        if layer is first:
            config["shortcut_from"] = "preactivated"
        return type(layer).from_config(config)

    return graph.clone(net, clone_function=clone_layer, weights=False)


def rewire(
    model: keras.Model,
    merge: str | keras.layers.Layer | None = None,
    shortcut: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """A fresh copy of `model` with another merge and/or shortcut in every `Residual`.

    The copy is built from `model.get_config()` with the `merge` / `shortcut`
    entry of each `Residual` replaced, so it has new, untrained weights (each
    block gets its own merge layer); `model` is not touched. This turns the
    network of He et al. (2016), Fig. 2(a) into (b)-(f): `merge="scaled"`,
    `"exclusive_gating"`, `"shortcut_gating"`, `"shortcut_dropout"`, or
    `shortcut="projection"` (the 1x1 conv shortcut on every unit).

    Args:
        model: keras.Model. A functional model holding `Residual` blocks.
        merge: str, `Merge` or None. The new merge of every block; None keeps each.
        shortcut: str or None. The new shortcut kind of every block (e.g.
            "projection"); None keeps each.
        name: str or None. The copy's name; None keeps `model.name`.

    Returns:
        A new, uncompiled `keras.Model`.

    Example:
        >>> net = cifar_net(8, widths=(4, 8, 16), input_shape=(8, 8, 1))
        >>> gated = rewire(net, merge="exclusive_gating")
        >>> type(gated.get_layer("conv2_block1").part("merge").layer).__name__
        'GatedMerge'
    """
    if merge is None and shortcut is None:
        raise ValueError("Pass `merge`, `shortcut` or both. Received: merge=None, shortcut=None")
    blocks = {id(block) for block in graph.blocks(model)}
    if not blocks:
        raise ValueError(f"Model {model.name!r} holds no Residual block to rewire.")
    if isinstance(merge, keras.layers.Layer):
        merge = keras.saving.serialize_keras_object(merge)
    changes = {"merge": merge, "shortcut": shortcut}
    changes = {key: value for key, value in changes.items() if value is not None}

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) in blocks:
            config.update(copy.deepcopy(changes))
        return type(layer).from_config(config)

    copy_ = graph.clone(model, clone_function=clone_layer, weights=False)
    return copy_ if name is None else keras.Model(copy_.inputs, copy_.outputs, name=name)


def shortcut_variant(variant: str, depth: int, **kwargs: Any) -> keras.Model:
    """The ResNet of `cifar_net(depth, **kwargs)` as a row of He et al. (2016), Table 1.

    Example:
        >>> m = shortcut_variant("1x1 conv shortcut", 8, widths=(4, 8, 16), input_shape=(8, 8, 1))
        >>> m.get_layer("conv2_block1").shortcut
        'projection'
    """
    if variant not in SHORTCUT_VARIANTS:
        raise ValueError(
            f"Unknown shortcut variant; known: {list(SHORTCUT_VARIANTS)}. Received: {variant!r}"
        )
    net = cifar_net(depth, **kwargs)
    change = SHORTCUT_VARIANTS[variant]
    return rewire(net, **change) if change else net


def group_width(cardinality: int) -> int:
    """Xie et al. (2017), Table 2: the group width d that keeps cardinality C at equal budget.

    Example:
        >>> [group_width(c) for c in (1, 2, 4, 8, 32)]
        [64, 40, 24, 14, 4]
    """
    if cardinality not in published.EQUAL_BUDGET_GROUP_WIDTH:
        raise ValueError(
            f"Table 2 of Xie et al. lists cardinalities {list(published.EQUAL_BUDGET_GROUP_WIDTH)}."
            f" Received: cardinality={cardinality}"
        )
    return published.EQUAL_BUDGET_GROUP_WIDTH[cardinality]


def resnext_net(
    cardinality: int,
    blocks: int = 3,
    widths: Sequence[int] = (64, 128, 256),
    input_shape: Sequence[int] = (32, 32, 3),
    classes: int = 10,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """A CIFAR ResNeXt with `blocks` bottlenecks per stage at Table 2's equal budget.

    Three stages of `resnext_block`s (outputs 4x `widths`, stride 2 on the 3x3
    at stages 2 and 3, 1x1 projection shortcuts where the shape changes)
    after a 3x3 stem; stage k's grouped 3x3 has `cardinality` groups of
    `group_width(cardinality) * widths[k] / 64` channels (Xie et al. 2017,
    Table 2 scales with the stage width). Cardinality 1 is the ResNet
    bottleneck of the same width (the "1x64d" baseline).

    Example:
        >>> m = resnext_net(4, blocks=1, widths=(16, 32, 64), input_shape=(8, 8, 1))
        >>> m.get_layer("conv2_block1").layer.get_layer("conv2_block1_2_conv").groups
        4
    """
    spec = {
        **CIFAR_SPECS["cifar"], "block": "resnext", "blocks": (blocks,) * len(widths),
        "filters": tuple(widths), "strides": (1,) + (2,) * (len(widths) - 1),
        "stride_on": "3x3", "shortcut": "projection", "cardinality": cardinality,
        "bottleneck_width": group_width(cardinality),
    }
    return build_resnet(
        spec, classes=classes, input_shape=tuple(input_shape), bn_momentum=bn_momentum,
        name=f"resnext_{cardinality}x{group_width(cardinality)}d",
    )
