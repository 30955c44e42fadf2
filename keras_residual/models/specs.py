"""Stack specifications as data: the presets behind every named builder.

Each preset is a plain dict read by `keras_residual.models.imagenet.build_resnet`
(and `cifar.py` for the CIFAR nets). Keys:

- `block`: "basic", "bottleneck" or "resnext".
- `blocks`: blocks per stage; `filters`: the width of each stage (the
  bottleneck width for "bottleneck"/"resnext"; outputs are 4x that).
- `strides`: the stride of each stage; `stride_block`: "first" (the first
  block of a stage strides: the paper, keras.applications v1) or "last"
  (keras.applications v2: the last block of stages 2-4 strides).
- `stride_on`: "1x1" or "3x3", where a bottleneck puts its stride.
- `placement`: an activation placement of He et al. (2016), Fig. 4.
- `stem`: "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max pool), "deep" (ResNet-C
  of He et al. 2019, Fig. 2b: three 3x3 convs, the first strided, then the
  max pool) or "cifar" (3x3 conv, BN, ReLU); pre-activation placements leave
  out the stem's last BN and ReLU.
- `stem_widths`: the deep stem's conv widths (default (32, 32, 64)).
- `stem_pool_padding`: "zeros" (keras.applications) or "-inf" (keras-hub's
  pre-activation nets) before the stem's max pool.
- `shortcut`: the shortcut of shape-changing blocks ("projection", "zero_pad",
  "avg_down": ResNet-D of He et al. 2019, Fig. 2c).
- `project_first`: a bool or one per stage; the first block of a stage uses
  `shortcut` even where its shapes match (keras-hub's vd nets). Default False.
- `use_bias`: conv biases (see `keras_residual.blocks.basic_block`).
- `cardinality`, `bottleneck_width`: ResNeXt only.
- `weights_name`: keras.applications' checkpoint name, where one exists.

Figures: He et al. 2015, Table 1; He et al. 2016; Xie et al. 2017, Table 1;
He et al. 2019, Table 5; keras.applications' resnet.py and resnet_v2.py;
keras-hub's ResNet presets.
"""

from __future__ import annotations

_V1 = {
    "stem": "imagenet",
    "filters": (64, 128, 256, 512),
    "strides": (1, 2, 2, 2),
    "stride_block": "first",
    "stride_on": "1x1",
    "placement": "original",
    "shortcut": "projection",
}
# keras.applications ResNetV2: stride on the 3x3 of the LAST block of stages 2-4.
_V2 = {
    **_V1,
    "block": "bottleneck",
    "strides": (2, 2, 2, 1),
    "stride_block": "last",
    "stride_on": "3x3",
    "placement": "full_preact",
    "use_bias": None,
}
_RESNEXT = {**_V1, "block": "resnext", "stride_on": "3x3", "use_bias": None}
# keras-hub's ResNet-vd (He et al. 2019, ResNet-B + C + D), bias-free.
_VD = {
    **_V1, "stem": "deep", "stem_widths": (32, 32, 64), "stride_on": "3x3",
    "shortcut": "avg_down", "use_bias": None, "project_first": True,
}

#: ImageNet presets by builder name.
IMAGENET_SPECS: dict[str, dict] = {
    # 18/34: the paper's bias-free layout (no keras.applications counterpart).
    "resnet18": {**_V1, "block": "basic", "blocks": (2, 2, 2, 2), "use_bias": None},
    "resnet34": {**_V1, "block": "basic", "blocks": (3, 4, 6, 3), "use_bias": None},
    # 50/101/152: keras.applications ResNet50/101/152 (every conv has a bias).
    "resnet50": {**_V1, "block": "bottleneck", "blocks": (3, 4, 6, 3), "use_bias": True,
                 "weights_name": "resnet50"},
    "resnet101": {**_V1, "block": "bottleneck", "blocks": (3, 4, 23, 3), "use_bias": True,
                  "weights_name": "resnet101"},
    "resnet152": {**_V1, "block": "bottleneck", "blocks": (3, 8, 36, 3), "use_bias": True,
                  "weights_name": "resnet152"},
    "resnet50_v2": {**_V2, "blocks": (3, 4, 6, 3), "weights_name": "resnet50v2"},
    "resnet101_v2": {**_V2, "blocks": (3, 4, 23, 3), "weights_name": "resnet101v2"},
    "resnet152_v2": {**_V2, "blocks": (3, 8, 36, 3), "weights_name": "resnet152v2"},
    # He et al. 2016's ResNet-200 depth in keras.applications' stride layout (the paper's own
    # layout, Veit et al.'s 66 modules, is models.cifar.resnet_v2_paper).
    "resnet200_v2": {**_V2, "blocks": (3, 24, 36, 3)},
    "resnet18_vd": {**_VD, "block": "basic", "blocks": (2, 2, 2, 2)},
    "resnet34_vd": {**_VD, "block": "basic", "blocks": (3, 4, 6, 3)},
    "resnet50_vd": {**_VD, "block": "bottleneck", "blocks": (3, 4, 6, 3)},
    "resnet101_vd": {**_VD, "block": "bottleneck", "blocks": (3, 4, 23, 3)},
    "resnet152_vd": {**_VD, "block": "bottleneck", "blocks": (3, 8, 36, 3)},
    "resnet200_vd": {**_VD, "block": "bottleneck", "blocks": (3, 12, 48, 3)},
    "resnext50_32x4d": {**_RESNEXT, "blocks": (3, 4, 6, 3), "cardinality": 32,
                        "bottleneck_width": 4},
    "resnext101_32x4d": {**_RESNEXT, "blocks": (3, 4, 23, 3), "cardinality": 32,
                         "bottleneck_width": 4},
    "resnext101_64x4d": {**_RESNEXT, "blocks": (3, 4, 23, 3), "cardinality": 64,
                         "bottleneck_width": 4},
}

#: CIFAR-10 presets (He et al. 2015, Sec. 4.2; He et al. 2016, Sec. 5); the
#: number of blocks per stage comes from the depth.
CIFAR_SPECS: dict[str, dict] = {
    "cifar": {
        "stem": "cifar",
        "block": "basic",
        "filters": (16, 32, 64),
        "strides": (1, 2, 2),
        "stride_block": "first",
        "stride_on": "1x1",
        "placement": "original",
        "shortcut": "zero_pad",
        "use_bias": None,
    },
    "cifar_preact": {
        "stem": "cifar",
        "block": "basic",
        "filters": (16, 32, 64),
        "strides": (1, 2, 2),
        "stride_block": "first",
        "stride_on": "3x3",
        "placement": "full_preact",
        "shortcut": "projection",
        "use_bias": None,
    },
}
