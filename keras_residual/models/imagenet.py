"""ImageNet ResNets, pre-activation ResNets, ResNeXt and their plain twins.

One generic builder, `build_resnet`, reads a stack specification (a preset of
`specs.IMAGENET_SPECS` plus keyword overrides); the named entry points are
thin. Every residual block is one `Residual` layer named `conv{stage}_block{i}`
holding keras.applications' inner layer names, and the stem and head use
keras.applications' names (`conv1_pad`, `conv1_conv`, `conv1_bn`,
`conv1_relu`, `pool1_pad`, `pool1_pool`, `post_bn`, `post_relu`, `avg_pool`,
`predictions`), so keras.applications checkpoints load by name.

The variants of He et al., "Bag of Tricks for Image Classification with
Convolutional Neural Networks" (2019), Sec. 4.1 and Fig. 2 are builder
options: ResNet-B puts a bottleneck's stride on its 3x3 (`stride_on="3x3"`),
ResNet-C replaces the 7x7 stem by three 3x3 convolutions (`stem="deep"`,
widths `stem_widths`), ResNet-D average-pools before the 1x1 projection of a
downsampling shortcut (`shortcut="avg_down"`). `resnet18_vd` ...
`resnet200_vd` combine all three in keras-hub's ResNet-vd layout.

Papers: He et al., "Deep Residual Learning for Image Recognition" (2015),
Table 1 and Fig. 3 (plain twins); He et al., "Identity Mappings in Deep
Residual Networks" (2016); Xie et al., "Aggregated Residual Transformations
for Deep Neural Networks" (2017), Table 1; He et al. (2019), Table 5.
"""

from __future__ import annotations

import os
from typing import Any

import keras
from keras import layers, ops

from keras_residual import blocks as blocks_lib
from keras_residual.models import weights as weights_lib
from keras_residual.models.specs import IMAGENET_SPECS

_SPEC_KEYS = (
    "block", "blocks", "filters", "strides", "stride_block", "stride_on", "placement",
    "stem", "shortcut", "use_bias", "cardinality", "bottleneck_width", "weights_name",
    "stem_widths", "stem_pool_padding", "project_first", "first_shortcut_from",
)
_DEFAULT_SIZES = {"imagenet": 224, "deep": 224, "cifar": 32}
_SPEC_DEFAULTS = {
    "cardinality": 32, "bottleneck_width": 4, "stem_widths": (32, 32, 64),
    "stem_pool_padding": "zeros", "project_first": False, "first_shortcut_from": None,
}


@keras.saving.register_keras_serializable(package="keras_residual")
class NegInfPadding2D(layers.ZeroPadding2D):
    """Pads with -inf, so that the max pool after it sees only real positions.

    keras-hub's pre-activation ResNets pad the stem's max pool this way (the
    stem output has no ReLU there, so zero padding could win the max);
    keras.applications' ResNetV2 pads with zeros. Takes ZeroPadding2D's
    arguments.

    Example:
        >>> import keras
        >>> x = -keras.ops.ones((1, 2, 2, 1))
        >>> y = keras.layers.MaxPooling2D(3, strides=2)(NegInfPadding2D(1)(x))
        >>> keras.ops.convert_to_numpy(y).ravel().tolist()
        [-1.0]
    """

    def call(self, inputs):
        if self.data_format == "channels_first":
            pad = ((0, 0), (0, 0), *self.padding)
        else:
            pad = ((0, 0), *self.padding, (0, 0))
        return ops.pad(inputs, pad, constant_values=float("-inf"))


def _check_arguments(spec: dict, weights: Any, include_top: bool, classes: int, pooling: Any) -> None:
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"Unknown stack specification keys {unknown}; known: {list(_SPEC_KEYS)}")
    if spec["block"] not in ("basic", "bottleneck", "resnext"):
        raise ValueError(
            f"`block` must be 'basic', 'bottleneck' or 'resnext'. Received: block={spec['block']!r}"
        )
    if spec["stem"] not in _DEFAULT_SIZES:
        raise ValueError(f"`stem` must be one of {list(_DEFAULT_SIZES)}. Received: {spec['stem']!r}")
    if spec["stem_pool_padding"] not in ("zeros", "-inf"):
        raise ValueError(
            "`stem_pool_padding` must be 'zeros' or '-inf'. "
            f"Received: stem_pool_padding={spec['stem_pool_padding']!r}"
        )
    if not spec["stem_widths"] or min(spec["stem_widths"]) < 1:
        raise ValueError(
            f"`stem_widths` needs one positive width per 3x3 conv. Received: {spec['stem_widths']}"
        )
    project = spec["project_first"]
    if not isinstance(project, bool) and len(project) != len(spec["blocks"]):
        raise ValueError(
            "`project_first` must be a bool or one bool per stage. Received: "
            f"project_first={project}, blocks={spec['blocks']}"
        )
    if not len(spec["blocks"]) == len(spec["filters"]) == len(spec["strides"]):
        raise ValueError(
            "`blocks`, `filters` and `strides` need one entry per stage. Received: "
            f"blocks={spec['blocks']}, filters={spec['filters']}, strides={spec['strides']}"
        )
    if min(spec["blocks"]) < 1:
        raise ValueError(f"Every stage needs at least one block. Received: blocks={spec['blocks']}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if weights == "imagenet":
        if spec.get("weights_name") is None:
            raise ValueError(
                "keras.applications publishes ImageNet weights only for ResNet50/101/152 and "
                "their V2 versions; this model has none. Received: weights='imagenet'"
            )
        if include_top and classes != 1000:
            raise ValueError(
                "With weights='imagenet' and include_top=True, `classes` must be 1000. "
                f"Received: classes={classes}"
            )


def _stem(x, spec: dict, preact: bool, bn_kwargs: dict, kernel_initializer: Any,
          data_format: str):
    """conv1 (+ pool1): He et al. 2015, Table 1 (ImageNet) or Sec. 4.2 (CIFAR).

    `stem="deep"` is ResNet-C (He et al. 2019, Fig. 2b): three 3x3 convs
    `conv1_{i}_conv` (the first with stride 2) of widths `stem_widths`, each
    but the last followed by `conv1_{i}_bn` and `conv1_{i}_relu`.
    Pre-activation nets leave out the last BN and ReLU: the first unit's
    pre-activation applies them (keras.applications v2).
    """
    axis = 1 if data_format == "channels_first" else -1
    # Without a BN after it the stem conv keeps its bias (keras.applications v2).
    use_bias = spec["use_bias"]
    bias = (preact if use_bias is None else use_bias)
    conv = dict(use_bias=bias, data_format=data_format, kernel_initializer=kernel_initializer)
    if spec["stem"] == "cifar":
        x = layers.Conv2D(spec["filters"][0], 3, padding="same", name="conv1_conv", **conv)(x)
    elif spec["stem"] == "deep":
        widths = spec["stem_widths"]
        x = layers.ZeroPadding2D(1, data_format=data_format, name="conv1_pad")(x)
        for i, width in enumerate(widths, start=1):
            last = i == len(widths)
            inner = {**conv, "use_bias": conv["use_bias"] if last else bool(use_bias)}
            x = layers.Conv2D(width, 3, strides=2 if i == 1 else 1,
                              padding="valid" if i == 1 else "same", name=f"conv1_{i}_conv",
                              **inner)(x)
            if not last:
                x = layers.BatchNormalization(axis=axis, name=f"conv1_{i}_bn", **bn_kwargs)(x)
                x = layers.ReLU(name=f"conv1_{i}_relu")(x)
    else:
        x = layers.ZeroPadding2D(3, data_format=data_format, name="conv1_pad")(x)
        x = layers.Conv2D(spec["filters"][0], 7, strides=2, name="conv1_conv", **conv)(x)
    if not preact:
        last = f"conv1_{len(spec['stem_widths'])}" if spec["stem"] == "deep" else "conv1"
        x = layers.BatchNormalization(axis=axis, name=f"{last}_bn", **bn_kwargs)(x)
        x = layers.ReLU(name=f"{last}_relu")(x)
    if spec["stem"] != "cifar":
        pad = NegInfPadding2D if spec["stem_pool_padding"] == "-inf" else layers.ZeroPadding2D
        x = pad(1, data_format=data_format, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, data_format=data_format, name="pool1_pool")(x)
    return x


def _head(x, include_top: bool, pooling: str | None, classes: int,
          classifier_activation: Any, data_format: str):
    if include_top:
        x = layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(data_format=data_format, name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(data_format=data_format, name="max_pool")(x)
    return x


def build_resnet(
    spec: dict | str,
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple | None = None,
    classes: int = 1000,
    pooling: str | None = None,
    classifier_activation: Any = "softmax",
    name: str | None = None,
    plain: bool = False,
    drop_rate: float = 0.0,
    zero_init_last: bool = False,
    bn_momentum: float = 0.99,
    bn_epsilon: float = 1.001e-5,
    kernel_initializer: Any = "he_normal",
    data_format: str | None = None,
    **overrides: Any,
) -> keras.Model:
    """Build a residual network from a stack specification.

    Stage `k` (named `conv{k+1}`) holds `blocks[k]` blocks of width
    `filters[k]`. The first block of a stage projects its shortcut where the
    channels change (`shortcut`, option B by default); a block that only
    strides gets keras.applications v2's parameter-free 1x1 max-pool shortcut.

    Args:
        spec: dict or str. A stack specification (see `specs`) or the name
            of a preset in `specs.IMAGENET_SPECS` ("resnet50", ...).
        include_top: bool. Add `avg_pool` and the `predictions` classifier.
            Defaults to True.
        weights: str or None. None (random), "imagenet" (keras.applications'
            published checkpoint, through keras' download cache) or the path
            of a `.h5` / `.weights.h5` / `.keras` checkpoint to load by name.
        input_shape: tuple or None. None: 224x224x3 (ImageNet stems) or
            32x32x3 (CIFAR), in `data_format` order.
        classes: int. Classifier outputs. Defaults to 1000.
        pooling: str or None. Without the top: None (4D features), "avg" or "max".
        classifier_activation: str, callable or None. Defaults to "softmax".
        name: str or None. Model name; None: the preset's name or "resnet".
        plain: bool. Drop every shortcut (`shortcut="none"`): the plain twin of
            He et al. 2015, Fig. 3 middle. Defaults to False.
        drop_rate: float. Stochastic depth rate of the last block, rising
            linearly from the first (Huang et al. 2016). Defaults to 0.
        zero_init_last: bool. Zero-initialize each block's last BN gamma (or
            last conv) so every block starts as its shortcut. Defaults to False.
        bn_momentum: float. Defaults to 0.99 (use 0.9 for short trainings).
        bn_epsilon: float. Defaults to 1.001e-5 (keras.applications).
        kernel_initializer: initializer of the convolutions. Defaults to "he_normal".
        data_format: str or None. None: `keras.config.image_data_format()`.
        **overrides: any specification key: `blocks` (depth), `filters`
            (width), `block`, `strides`, `stride_block`, `stride_on` ("1x1"
            or "3x3": v1.5, ResNet-B), `placement`, `stem` ("imagenet",
            "deep": ResNet-C, "cifar"), `stem_widths` (the deep stem's three
            widths, default (32, 32, 64)), `stem_pool_padding` ("zeros" or
            "-inf"), `shortcut` ("avg_down": ResNet-D), `project_first`
            (bool, or one per stage: the first block of a stage uses
            `shortcut` even where shapes match, as keras-hub's vd nets),
            `use_bias`, `cardinality`, `bottleneck_width`, `first_shortcut_from`
            ("preactivated": the first block's shortcut reads the activated
            stem output, He et al. 2016's CIFAR pre-activation nets).

    Returns:
        A `keras.Model`; every residual block is one `Residual` layer.

    Example:
        >>> m = build_resnet("resnet18", blocks=(1, 1), filters=(8, 16), strides=(1, 2),
        ...                  input_shape=(32, 32, 3), classes=5)
        >>> [lyr.name for lyr in m.layers if lyr.name.startswith("conv")][-2:]
        ['conv2_block1', 'conv3_block1']
        >>> tuple(m.output.shape)
        (None, 5)
    """
    preset, spec = resolve_spec(spec, **overrides)
    _check_arguments(spec, weights, include_top, classes, pooling)
    if plain and zero_init_last:
        raise ValueError(
            "zero_init_last=True makes every block start as its shortcut, but plain=True "
            "removes the shortcuts: the network would output zeros. Pass one of them."
        )
    data_format = data_format or keras.config.image_data_format()
    # Fetch (or fail offline) before spending time on building the model.
    checkpoint = _checkpoint(spec, weights, include_top)
    if input_shape is None:
        size = _DEFAULT_SIZES[spec["stem"]]
        input_shape = (3, size, size) if data_format == "channels_first" else (size, size, 3)

    inputs = keras.Input(input_shape)
    preact = spec["placement"] in blocks_lib.PREACT_PLACEMENTS
    x = _stem(inputs, spec, preact, dict(momentum=bn_momentum, epsilon=bn_epsilon),
              kernel_initializer, data_format)
    options = dict(
        placement=spec["placement"], use_bias=spec["use_bias"], bn_momentum=bn_momentum,
        bn_epsilon=bn_epsilon, kernel_initializer=kernel_initializer,
        zero_init_last=zero_init_last, data_format=data_format,
    )
    x = build_stages(x, spec, plain=plain, drop_rate=drop_rate, **options)
    if preact:
        axis = 1 if data_format == "channels_first" else -1
        x = layers.BatchNormalization(axis=axis, momentum=bn_momentum, epsilon=bn_epsilon,
                                      name="post_bn")(x)
        x = layers.ReLU(name="post_relu")(x)
    outputs = _head(x, include_top, pooling, classes, classifier_activation, data_format)
    model = keras.Model(inputs, outputs, name=name or preset or "resnet")
    if checkpoint is not None:
        weights_lib.load_keras_applications_weights(model, checkpoint)
    return model


def resolve_spec(spec: dict | str, **overrides: Any) -> tuple[str | None, dict]:
    """A stack specification with its defaults and overrides: `(preset name or None, spec)`.

    Example:
        >>> preset, spec = resolve_spec("resnet34", blocks=(1, 1, 1, 1))
        >>> preset, spec["block"], spec["blocks"]
        ('resnet34', 'basic', (1, 1, 1, 1))
    """
    preset = None
    if isinstance(spec, str):
        if spec not in IMAGENET_SPECS:
            raise ValueError(f"Unknown preset {spec!r}; known: {sorted(IMAGENET_SPECS)}")
        preset, spec = spec, IMAGENET_SPECS[spec]
    return preset, {**_SPEC_DEFAULTS, **spec, **overrides}


def _checkpoint(spec: dict, weights: str | None, include_top: bool) -> str | None:
    if weights == "imagenet":
        return weights_lib.fetch_keras_applications_weights(spec["weights_name"], include_top)
    if weights is not None and not os.path.exists(weights):
        raise ValueError(
            "`weights` must be None, 'imagenet' or the path of a checkpoint file. "
            f"No file at {weights!r}. Received: weights={weights!r}"
        )
    return weights


def _block_shortcut(spec: dict, stage: int, number: int, stride: int, channels: int,
                    out_channels: int, plain: bool, data_format: str) -> Any:
    """The shortcut of block `number` of `stage`: none, the spec's kind, a max-pool or identity."""
    project = spec["project_first"]
    project = project if isinstance(project, bool) else project[stage - 2]
    if plain:
        return "none"
    if channels != out_channels or (number == 1 and project):
        return spec["shortcut"]
    if stride > 1:
        return layers.MaxPooling2D(1, strides=stride, data_format=data_format,
                                   name=f"conv{stage}_block{number}_0_pool")
    return "identity"


def _make_block(spec: dict, filters: int, **options: Any) -> Any:
    if spec["block"] == "basic":
        return blocks_lib.basic_block(filters, **options)
    if spec["block"] == "bottleneck":
        return blocks_lib.bottleneck_block(filters, stride_on=spec["stride_on"], **options)
    return blocks_lib.resnext_block(
        filters, cardinality=spec["cardinality"], bottleneck_width=spec["bottleneck_width"],
        stride_on=spec["stride_on"], **options,
    )


def build_stage(x: Any, spec: dict, stage: int, channels: int, rates: Any, first_index: int,
                plain: bool = False, **options: Any) -> Any:
    """The blocks of one stage (`conv{stage}`) on `x`, from a resolved specification.

    Args:
        x: the stage input (a KerasTensor).
        spec: dict. A resolved specification (`resolve_spec`).
        stage: int. 2 for the first stage (`conv2`), as keras.applications.
        channels: int. Channels of `x`.
        rates: array. Stochastic-depth rate of every block of the network.
        first_index: int. Index of the stage's first block in the network.
        plain: bool. No shortcuts (the plain twin).
        **options: block options (`blocks.BlockOptions` fields) shared by every block.

    Returns:
        The stage output.

    Example:
        >>> _, spec = resolve_spec("resnet18", blocks=(1, 1), filters=(8, 16), strides=(1, 2))
        >>> y = build_stage(keras.Input((8, 8, 8)), spec, 3, 8, [0.0, 0.0], 1)
        >>> tuple(y.shape)
        (None, 4, 4, 16)
    """
    count, filters, stride = (spec[k][stage - 2] for k in ("blocks", "filters", "strides"))
    out_channels = filters * (1 if spec["block"] == "basic" else 4)
    strided = 1 if spec["stride_block"] == "first" else count
    data_format = options.get("data_format") or keras.config.image_data_format()
    for number in range(1, count + 1):
        block_stride = stride if number == strided else 1
        index = first_index + number - 1
        shortcut = _block_shortcut(spec, stage, number, block_stride, channels, out_channels,
                                   plain, data_format)
        first = index == 0 and shortcut != "none" and spec["first_shortcut_from"] is not None
        x = _make_block(
            spec, filters, stride=block_stride, shortcut=shortcut, name=f"conv{stage}_block{number}",
            drop_rate=float(rates[index]),
            shortcut_from=spec["first_shortcut_from"] if first else None, **options,
        )(x)
        channels = out_channels
    return x


def build_stages(x: Any, spec: dict, plain: bool = False, drop_rate: float = 0.0,
                 **options: Any) -> Any:
    """Every stage of a resolved specification on the stem output `x`.

    Stochastic depth rises linearly to `drop_rate` over the blocks (Huang et
    al. 2016, Eq. 4: block l of L drops with probability l / L * drop_rate).

    Example:
        >>> _, spec = resolve_spec("resnet18", blocks=(1, 1), filters=(8, 16), strides=(1, 2))
        >>> tuple(build_stages(keras.Input((8, 8, 8)), spec).shape)
        (None, 4, 4, 16)
    """
    channels = spec["stem_widths"][-1] if spec["stem"] == "deep" else spec["filters"][0]
    rates = blocks_lib.linear_decay_drop_rates(sum(spec["blocks"]), 1.0 - drop_rate)
    index = 0
    for stage in range(2, 2 + len(spec["blocks"])):
        x = build_stage(x, spec, stage, channels, rates, index, plain=plain, **options)
        channels = int(x.shape[1 if options.get("data_format") == "channels_first" else -1])
        index += spec["blocks"][stage - 2]
    return x


def _named(preset: str, kwargs: dict, **defaults: Any) -> keras.Model:
    # User keywords override the entry point's defaults.
    return build_resnet(preset, **{"name": preset, **defaults, **kwargs})


def resnet18(**kwargs: Any) -> keras.Model:
    """ResNet-18 (He et al. 2015, Table 1): basic blocks 2-2-2-2, bias-free convs.

    11,689,512 trainable parameters with the 1000-way classifier. Takes
    every `build_resnet` argument.

    Example:
        >>> resnet18(weights=None).count_params()
        11699112
    """
    return _named("resnet18", kwargs)


def resnet34(**kwargs: Any) -> keras.Model:
    """ResNet-34 (He et al. 2015, Table 1): basic blocks 3-4-6-3.

    21,797,672 trainable parameters, 3.6e9 multiply-adds at 224x224. Takes
    every `build_resnet` argument.

    Example:
        >>> len([lyr for lyr in resnet34().layers if lyr.name.endswith("_block1")])
        4
    """
    return _named("resnet34", kwargs)


def resnet50(**kwargs: Any) -> keras.Model:
    """ResNet-50 in keras.applications ResNet50's layout (He et al. 2015, Table 1).

    Bottleneck blocks 3-4-6-3, stride on the first 1x1 (pass
    `stride_on="3x3"` for v1.5), a bias on every conv so that
    `weights="imagenet"` loads keras.applications' checkpoint (pass
    `use_bias=None` for the bias-free 25,557,032-parameter layout). Takes
    every `build_resnet` argument.

    Example:
        >>> m = resnet50(input_shape=(64, 64, 3))
        >>> m.get_layer("conv2_block1").layer.get_layer("conv2_block1_1_conv").name
        'conv2_block1_1_conv'
    """
    return _named("resnet50", kwargs)


def resnet101(**kwargs: Any) -> keras.Model:
    """ResNet-101 in keras.applications ResNet101's layout: bottlenecks 3-4-23-3.

    Takes every `build_resnet` argument (see `resnet50`).

    Example:
        Its parameters are keras.applications ResNet101's 44,707,176. Counting
        them needs only the weights' shapes, so the model can be built without
        drawing 44.7M initial values (a fifth of the build time):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     model = resnet101()
        >>> model.count_params(), len(model.layers)
        (44707176, 42)
    """
    return _named("resnet101", kwargs)


def resnet152(**kwargs: Any) -> keras.Model:
    """ResNet-152 in keras.applications ResNet152's layout: bottlenecks 3-8-36-3.

    Takes every `build_resnet` argument (see `resnet50`).

    Example:
        keras.applications ResNet152's 60,419,944 parameters (built with
        uninitialized weights, as in `resnet101`):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     model = resnet152()
        >>> model.count_params(), model.output.shape[-1]
        (60419944, 1000)
    """
    return _named("resnet152", kwargs)


def resnet50_v2(**kwargs: Any) -> keras.Model:
    """Pre-activation ResNet-50 in keras.applications ResNet50V2's layout.

    He et al. 2016 full pre-activation units; as keras.applications, the
    stride sits on the 3x3 of the last block of stages 2-4, strided identity
    shortcuts are 1x1 max-pools, the first block of a stage projects from the
    pre-activated input, and `post_bn`/`post_relu` end the trunk. Takes every
    `build_resnet` argument.

    Example:
        >>> resnet50_v2(input_shape=(64, 64, 3)).get_layer("post_bn").name
        'post_bn'
    """
    return _named("resnet50_v2", kwargs)


def resnet101_v2(**kwargs: Any) -> keras.Model:
    """Pre-activation ResNet-101 in keras.applications ResNet101V2's layout (see `resnet50_v2`).

    Example:
        keras.applications ResNet101V2's 44,675,560 parameters, less its
        1000-way classifier (built with uninitialized weights, as in `resnet101`):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     model = resnet101_v2(classes=10, weights=None)
        >>> model.count_params() == 44_675_560 - 2049 * 1000 + 2049 * 10
        True
    """
    return _named("resnet101_v2", kwargs)


def resnet152_v2(**kwargs: Any) -> keras.Model:
    """Pre-activation ResNet-152 in keras.applications ResNet152V2's layout (see `resnet50_v2`).

    Example:
        keras.applications ResNet152V2's 60,380,648 parameters (built with
        uninitialized weights, as in `resnet101`):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     model = resnet152_v2()
        >>> model.count_params(), model.get_layer("post_relu").output.shape[-1]
        (60380648, 2048)
    """
    return _named("resnet152_v2", kwargs)


def resnet200_v2(**kwargs: Any) -> keras.Model:
    """Pre-activation ResNet-200 in keras.applications' ResNetV2 layout: bottlenecks 3-24-36-3.

    He et al. (2016, Table 5)'s depth and block counts, with
    keras.applications' strides (the last block of stages 2-4 strides
    through a max-pool shortcut, as in `resnet50_v2`), not the paper's. He
    et al.'s own layout, the 66-module network Veit et al. (2016, Sec. 4)
    lesion, is `resnet_v2_paper(200)` ("resnet200_v2_paper" for
    `get_model`). No published Keras checkpoint.

    Example:
        Built with uninitialized weights (as in `resnet101`): 66 blocks.

        >>> import keras
        >>> from keras_residual import Residual
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     m = resnet200_v2(include_top=False)
        >>> sum(isinstance(lyr, Residual) for lyr in m.layers)
        66
    """
    return _named("resnet200_v2", kwargs)


def resnext50_32x4d(**kwargs: Any) -> keras.Model:
    """ResNeXt-50 (32x4d), Xie et al. 2017, Table 1: about 25.0M parameters.

    Grouped 3x3 convolutions with 32 groups of 4 channels in the first stage
    (128 channels), stride on the 3x3, bias-free convs. Takes every
    `build_resnet` argument.

    Example:
        >>> m = resnext50_32x4d(input_shape=(64, 64, 3))
        >>> m.get_layer("conv2_block1").layer.get_layer("conv2_block1_2_conv").filters
        128
    """
    return _named("resnext50_32x4d", kwargs)


def resnext101_32x4d(**kwargs: Any) -> keras.Model:
    """ResNeXt-101 (32x4d), Xie et al. 2017: 21.2% top-1 error. See `resnext50_32x4d`.

    Example:
        Built with uninitialized weights (as in `resnet101`):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     model = resnext101_32x4d(input_shape=(64, 64, 3), classes=3)
        >>> model.output.shape[-1]
        3
    """
    return _named("resnext101_32x4d", kwargs)


def resnext101_64x4d(**kwargs: Any) -> keras.Model:
    """ResNeXt-101 (64x4d), Xie et al. 2017: 20.4% top-1 error. See `resnext50_32x4d`.

    Example:
        Built with uninitialized weights (as in `resnet101`):

        >>> import keras
        >>> with keras.StatelessScope(initialize_variables=False):
        ...     m = resnext101_64x4d(input_shape=(64, 64, 3))
        >>> m.get_layer("conv2_block1").layer.get_layer("conv2_block1_2_conv").groups
        64
    """
    return _named("resnext101_64x4d", kwargs)


def plain18(**kwargs: Any) -> keras.Model:
    """The 18-layer plain twin of ResNet-18 (He et al. 2015, Fig. 3 middle, Fig. 4 left).

    ResNet-18 with `plain=True`: every block is a `Residual` with
    `shortcut="none"`, so the lesion tools still find the layers.

    Example:
        >>> from keras_residual import Residual
        >>> {lyr.shortcut for lyr in plain18().layers if isinstance(lyr, Residual)}
        {'none'}
    """
    return _named("resnet18", kwargs, plain=True, name="plain18")


def plain34(**kwargs: Any) -> keras.Model:
    """The 34-layer plain net of He et al. 2015, Fig. 3 middle (the degradation experiment).

    Example:
        >>> plain34().name
        'plain34'
    """
    return _named("resnet34", kwargs, plain=True, name="plain34")


def _vd_doc(depth: int, blocks: str, params: str) -> str:
    return (
        f"""ResNet-{depth}-vd as keras-hub's `resnet_vd_{depth}_imagenet`: {blocks}.

    He et al. (2019), "Bag of Tricks", Sec. 4.1, Fig. 2: the deep stem of
    ResNet-C (3x3 convs of 32, 32, 64 channels), the stride on the 3x3
    (ResNet-B) and average pooling before every projection shortcut
    (ResNet-D, `shortcut="avg_down"`); the first block of every stage
    projects its shortcut, as keras-hub's backbone does. Bias-free convs.
    {params} parameters with the 1000-way classifier, BN statistics included
    (keras-hub's preset metadata). Takes every `build_resnet` argument;
    `keras_residual.models.from_keras_hub` loads keras-hub's weights.
"""
    )


def resnet18_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet18_vd", kwargs)


def resnet34_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet34_vd", kwargs)


def resnet50_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet50_vd", kwargs)


def resnet101_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet101_vd", kwargs)


def resnet152_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet152_vd", kwargs)


def resnet200_vd(**kwargs: Any) -> keras.Model:
    return _named("resnet200_vd", kwargs)


resnet18_vd.__doc__ = _vd_doc(18, "basic blocks 2-2-2-2", "11,722,824") + """
    Example:
        >>> m = resnet18_vd(input_shape=(64, 64, 3))
        >>> [lyr.name for lyr in m.layers[2:9:3]]
        ['conv1_1_conv', 'conv1_2_conv', 'conv1_3_conv']
"""
resnet34_vd.__doc__ = _vd_doc(34, "basic blocks 3-4-6-3", "21,838,408") + """
    Example:
        >>> type(resnet34_vd(input_shape=(64, 64, 3)).get_layer("conv3_block1").part("shortcut").layer).__name__
        'AvgDownShortcut'
"""
resnet50_vd.__doc__ = _vd_doc(50, "bottleneck blocks 3-4-6-3", "25,629,512") + """
    Example:
        >>> m = resnet50_vd(input_shape=(64, 64, 3))
        >>> m.get_layer("conv3_block1").layer.get_layer("conv3_block1_2_conv").strides
        (2, 2)
"""
resnet101_vd.__doc__ = _vd_doc(101, "bottleneck blocks 3-4-23-3", "44,673,864") + """
    Example:
        >>> from keras_residual.models import IMAGENET_SPECS
        >>> IMAGENET_SPECS["resnet101_vd"]["stem"], IMAGENET_SPECS["resnet101_vd"]["shortcut"]
        ('deep', 'avg_down')
"""
resnet152_vd.__doc__ = _vd_doc(152, "bottleneck blocks 3-8-36-3", "60,363,592") + """
    Example:
        >>> from keras_residual.models import IMAGENET_SPECS
        >>> IMAGENET_SPECS["resnet152_vd"]["blocks"]
        (3, 8, 36, 3)
"""
resnet200_vd.__doc__ = _vd_doc(200, "bottleneck blocks 3-12-48-3", "74,933,064") + """
    Example:
        >>> from keras_residual.models import IMAGENET_SPECS
        >>> IMAGENET_SPECS["resnet200_vd"]["blocks"]
        (3, 12, 48, 3)
"""
