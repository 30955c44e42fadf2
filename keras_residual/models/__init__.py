"""Model builders: ImageNet and CIFAR ResNets, ResNeXt, plain twins, small comparison nets.

Every builder returns a `keras.Model` whose residual blocks are each one
`keras_residual.Residual` layer; `architecture_table(model)` prints He et al.
(2015)'s Table 1 for any of them, and `get_model(name)` builds one by name
(the `keras-residual` command uses it). `from_keras_hub` converts keras-hub's
pretrained ResNets into the same kind of model (needs the `hub` extra).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras

from keras_residual.models.cifar import cifar_preact_resnet, cifar_resnet
from keras_residual.models.hub import from_keras_hub, load_keras_hub_classifier, to_keras_hub
from keras_residual.models.imagenet import (
    build_resnet,
    plain18,
    plain34,
    resnet18,
    resnet18_vd,
    resnet34,
    resnet34_vd,
    resnet50,
    resnet50_v2,
    resnet50_vd,
    resnet101,
    resnet101_v2,
    resnet101_vd,
    resnet152,
    resnet152_v2,
    resnet152_vd,
    resnet200_v2,
    resnet200_vd,
    resnext50_32x4d,
    resnext101_32x4d,
    resnext101_64x4d,
)
from keras_residual.models.small import alexnet, mnist_resnet, vgg_plain
from keras_residual.models.specs import CIFAR_SPECS, IMAGENET_SPECS
from keras_residual.models.table import (
    ArchitectureTable,
    StageRow,
    architecture_table,
    count_mult_adds,
)
from keras_residual.models.weights import (
    WeightTransfer,
    fetch_keras_applications_weights,
    load_keras_applications_weights,
)

#: Builders by name; CIFAR nets are named with their depth (see `get_model`).
BUILDERS: dict[str, Callable[..., keras.Model]] = {
    f.__name__: f
    for f in (
        resnet18, resnet34, resnet50, resnet101, resnet152, resnet50_v2, resnet101_v2,
        resnet152_v2, resnet200_v2,
        resnet18_vd, resnet34_vd, resnet50_vd, resnet101_vd, resnet152_vd, resnet200_vd,
        resnext50_32x4d, resnext101_32x4d, resnext101_64x4d,
        plain18, plain34, mnist_resnet, vgg_plain, alexnet,
    )
}
_CIFAR_NAME = re.compile(r"^(cifar_resnet|cifar_preact_resnet)(\d+)$")


def get_model(name: str, **kwargs: Any) -> keras.Model:
    """Build a model by name: a key of `BUILDERS`, or "cifar_resnet{depth}" /
    "cifar_preact_resnet{depth}" (e.g. "cifar_resnet110").

    Args:
        name: str. The builder's name.
        **kwargs: passed to the builder.

    Returns:
        The `keras.Model`.

    Example:
        >>> get_model("cifar_resnet20").name
        'cifar_resnet20'
    """
    match = _CIFAR_NAME.match(name)
    if match:
        builder = cifar_resnet if match.group(1) == "cifar_resnet" else cifar_preact_resnet
        return builder(int(match.group(2)), **kwargs)
    if name not in BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}. Known: {sorted(BUILDERS)}, cifar_resnet{{depth}} and "
            "cifar_preact_resnet{depth}."
        )
    return BUILDERS[name](**kwargs)


__all__ = [
    "ArchitectureTable",
    "BUILDERS",
    "CIFAR_SPECS",
    "IMAGENET_SPECS",
    "StageRow",
    "WeightTransfer",
    "alexnet",
    "architecture_table",
    "build_resnet",
    "cifar_preact_resnet",
    "cifar_resnet",
    "count_mult_adds",
    "fetch_keras_applications_weights",
    "from_keras_hub",
    "get_model",
    "load_keras_applications_weights",
    "load_keras_hub_classifier",
    "mnist_resnet",
    "plain18",
    "plain34",
    "resnet101",
    "resnet101_v2",
    "resnet152",
    "resnet152_v2",
    "resnet18",
    "resnet18_vd",
    "resnet34_vd",
    "resnet50_vd",
    "resnet101_vd",
    "resnet152_vd",
    "resnet200_vd",
    "resnet200_v2",
    "resnet34",
    "resnet50",
    "resnet50_v2",
    "resnext101_32x4d",
    "resnext101_64x4d",
    "resnext50_32x4d",
    "to_keras_hub",
    "vgg_plain",
]
