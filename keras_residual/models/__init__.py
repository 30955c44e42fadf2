"""Model builders: ImageNet and CIFAR ResNets, ResNeXt, plain twins, small comparison nets,
small Transformers.

Every builder returns a `keras.Model` whose residual blocks are each one
`keras_residual.Residual` layer; `architecture_table(model)` prints He et al.
(2015)'s Table 1 for any of them, and `get_model(name)` builds one by name
(the `keras-residual` command uses it). `from_keras_hub` converts keras-hub's
pretrained ResNets and pre-norm Transformers (GPT-2, OPT, ViT) into the same
kind of model (needs the `hub` extra).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras

from keras_residual.models.cifar import cifar_preact_resnet, cifar_resnet, resnet_v2_paper
from keras_residual.models.hub import from_keras_hub, load_keras_hub_classifier, to_keras_hub
from keras_residual.models.hub_transformers import (
    ClassToken,
    causal_lm_from_keras_hub,
    gelu_approximate,
    transformer_from_keras_hub,
    transformer_to_keras_hub,
)
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
from keras_residual.models.transformer import (
    PositionEmbedding,
    tiny_causal_lm,
    tiny_vit,
    transformer_classifier,
    transformer_stack,
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
        transformer_classifier, tiny_vit, tiny_causal_lm,
    )
}
#: Builders whose names carry the depth: a name pattern and its builder (see `get_model`).
DEPTH_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "cifar_resnet{depth}": cifar_resnet,
    "cifar_preact_resnet{depth}": cifar_preact_resnet,
    "resnet{depth}_v2_paper": resnet_v2_paper,
}


def get_model(name: str, **kwargs: Any) -> keras.Model:
    """Build a model by name: a key of `BUILDERS`, or a `DEPTH_BUILDERS` pattern with a depth.

    The depth patterns are "cifar_resnet{depth}" and "cifar_preact_resnet{depth}"
    (He et al. 2015, Sec. 4.2; He et al. 2016, Fig. 4e), e.g. "cifar_resnet110",
    and "resnet{depth}_v2_paper" (He et al. 2016's ImageNet layout,
    `resnet_v2_paper`), e.g. "resnet200_v2_paper".

    Args:
        name: str. The builder's name.
        **kwargs: passed to the builder.

    Returns:
        The `keras.Model`.

    Example:
        >>> get_model("cifar_resnet20").name
        'cifar_resnet20'
        >>> get_model("resnet50_v2_paper", input_shape=(32, 32, 3), classes=2).name
        'resnet50_v2_paper'
    """
    for pattern, builder in DEPTH_BUILDERS.items():
        match = re.fullmatch(re.escape(pattern).replace(r"\{depth\}", r"(\d+)"), name)
        if match:
            return builder(int(match.group(1)), **kwargs)
    if name not in BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}. Known: {sorted(BUILDERS)} and {list(DEPTH_BUILDERS)}."
        )
    return BUILDERS[name](**kwargs)


__all__ = [
    "ArchitectureTable",
    "ClassToken",
    "PositionEmbedding",
    "BUILDERS",
    "DEPTH_BUILDERS",
    "CIFAR_SPECS",
    "IMAGENET_SPECS",
    "StageRow",
    "WeightTransfer",
    "alexnet",
    "architecture_table",
    "build_resnet",
    "causal_lm_from_keras_hub",
    "cifar_preact_resnet",
    "cifar_resnet",
    "count_mult_adds",
    "fetch_keras_applications_weights",
    "from_keras_hub",
    "gelu_approximate",
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
    "resnet_v2_paper",
    "resnet200_v2",
    "resnet34",
    "resnet50",
    "resnet50_v2",
    "resnext101_32x4d",
    "resnext101_64x4d",
    "resnext50_32x4d",
    "tiny_causal_lm",
    "tiny_vit",
    "to_keras_hub",
    "transformer_classifier",
    "transformer_from_keras_hub",
    "transformer_stack",
    "transformer_to_keras_hub",
    "vgg_plain",
]
