"""keras-hub's ResNets as networks of `Residual` blocks, weights copied by structure.

keras-hub's `ResNetBackbone` (ResNet and ResNet-v2 of He et al. 2015 and 2016
with the stride on the 3x3, and the ResNet-vd family of He et al. 2019, "Bag
of Tricks", Sec. 4.1) is one flat functional graph: no block to delete,
reorder, probe inside or grow. `from_keras_hub` builds the same network with
`build_resnet`, one `Residual` per keras-hub block, and copies every weight
from the keras-hub layer that plays the same part (`stack{s}_block{b}_{k}_conv`
is `conv{s+2}_block{b+1}_{k}_conv`), never by flat order. `to_keras_hub` copies
the other way.

Any other keras-hub backbone goes to `hub_transformers`: the pre-norm
Transformers (GPT-2, OPT, ViT) convert into attention and MLP `Residual`
pairs; post-norm and parallel blocks are refused with the reason.

keras-hub is an optional dependency (`pip install keras-residual[hub]`),
imported only when these functions run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual.graph import variable_paths
from keras_residual.models.hub_transformers import (
    transformer_from_keras_hub,
    transformer_to_keras_hub,
)
from keras_residual.models.imagenet import build_resnet

_BLOCK = re.compile(r"^stack(\d+)_block(\d+)_(.+)$")
_STEM = re.compile(r"^conv(\d+)_(conv|bn)$")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "Converting keras-hub models needs keras-hub: `pip install keras-residual[hub]` "
            "(or `pip install keras-hub`)."
        ) from error
    return keras_hub


def _load_preset(keras_hub, preset: str, include_top: bool):
    loader = keras_hub.models.ImageClassifier if include_top else keras_hub.models.Backbone
    try:
        return loader.from_preset(preset)
    except Exception as error:  # keras-hub raises many kinds (network, Kaggle, unknown name)
        raise ValueError(
            f"keras-hub could not load the preset {preset!r} ({type(error).__name__}: "
            f"{str(error)[:300]}). keras-hub downloads presets from Kaggle or Hugging Face, "
            "which needs network access; offline, pass a `keras_hub.models.ResNetBackbone` "
            f"(or ResNetImageClassifier) instance instead. Received: backbone_or_preset={preset!r}"
        ) from error


def _is_transformer(keras_hub, backbone: Any) -> bool:
    """Whether `backbone` goes to `hub_transformers` (any keras-hub backbone but a ResNet)."""
    return (isinstance(backbone, keras_hub.models.Backbone)
            and not isinstance(backbone, keras_hub.models.ResNetBackbone))


def _our_name(name: str, deep_stem: bool) -> str:
    """The name of our layer that plays the part of keras-hub's layer `name`."""
    block = _BLOCK.match(name)
    if block:
        stage, number, part = int(block.group(1)) + 2, int(block.group(2)) + 1, block.group(3)
        part = part.replace("pre_activation_", "preact_")
        return f"conv{stage}_block{number}_{part}"
    stem = _STEM.match(name)
    if stem and deep_stem:
        return f"conv1_{stem.group(1)}_{stem.group(2)}"
    return name


def _spec(backbone) -> dict:
    """`build_resnet` keywords for the layout of a keras-hub `ResNetBackbone`."""
    filters, kernels = list(backbone.input_conv_filters), list(backbone.input_conv_kernel_sizes)
    if len(filters) == 1 and (kernels[0] != 7 or filters[0] != backbone.stackwise_num_filters[0]):
        raise ValueError(
            "A one-conv stem converts only as the 7x7 stem of stage 2's width. Received: "
            f"input_conv_filters={filters}, input_conv_kernel_sizes={kernels}"
        )
    if len(filters) > 1 and set(kernels) != {3}:
        raise ValueError(
            "A multi-conv stem converts only as ResNet-C's 3x3 convs. Received: "
            f"input_conv_kernel_sizes={kernels}"
        )
    block_type, preact = backbone.block_type, bool(backbone.use_pre_activation)
    stages = len(backbone.stackwise_num_filters)
    bn = next(lyr for lyr in backbone.layers if isinstance(lyr, layers.BatchNormalization))
    return dict(
        block="basic" if block_type.startswith("basic") else "bottleneck",
        blocks=tuple(backbone.stackwise_num_blocks),
        filters=tuple(backbone.stackwise_num_filters),
        strides=tuple(backbone.stackwise_num_strides),
        stride_block="first",
        stride_on="3x3",
        placement="full_preact" if preact else "original",
        stem="deep" if len(filters) > 1 else "imagenet",
        stem_widths=tuple(filters),
        stem_pool_padding="-inf" if preact else "zeros",
        shortcut="avg_down" if block_type.endswith("_vd") else "projection",
        use_bias=False,
        # keras-hub projects the first block of every stage, except stage 2 of basic_block.
        project_first=tuple(block_type != "basic_block" or i > 0 for i in range(stages)),
        bn_momentum=float(bn.momentum),
        bn_epsilon=float(bn.epsilon),
        data_format=backbone.data_format,
    )


def _weighted_layers(model: keras.Model) -> list[layers.Layer]:
    """keras-hub's weighted layers, a classifier's backbone flattened into it."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _weighted_layers(layer)
        elif layer.weights:
            found.append(layer)
    return found


def _pairs(hub_model: keras.Model, ours: keras.Model, deep_stem: bool) -> list[tuple]:
    """(their variable, our variable) for every weight, matched by layer and variable name."""
    by_layer: dict[str, dict[str, keras.Variable]] = {}
    for path, variable in variable_paths(ours).items():
        *_, layer_name, var_name = path.split("/")
        if var_name != "lesion_state":
            by_layer.setdefault(layer_name, {})[var_name] = variable
    pairs = []
    for hub_layer in _weighted_layers(hub_model):
        name = _our_name(hub_layer.name, deep_stem)
        target = by_layer.pop(name, None)
        if target is None or {w.name for w in hub_layer.weights} != set(target):
            raise ValueError(
                f"keras-hub layer {hub_layer.name!r} has no counterpart {name!r} with the "
                f"variables {[w.name for w in hub_layer.weights]} in {ours.name!r}."
            )
        for weight in hub_layer.weights:
            if tuple(weight.shape) != tuple(target[weight.name].shape):
                raise ValueError(
                    f"{hub_layer.name}/{weight.name} has shape {tuple(weight.shape)} but "
                    f"{name}/{weight.name} has {tuple(target[weight.name].shape)}."
                )
            pairs.append((weight, target[weight.name]))
    if by_layer:
        raise ValueError(
            f"Layers of {ours.name!r} with no keras-hub counterpart: {sorted(by_layer)[:10]}."
        )
    return pairs


def _check_outputs(source: keras.Model, target: keras.Model) -> None:
    shape = [d if d is not None else 64 for d in target.input.shape[1:]]
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, *shape)).astype("float32")
    expected = keras.ops.convert_to_numpy(source(x, training=False))
    got = keras.ops.convert_to_numpy(target(x, training=False))
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4 * scale):
        raise ValueError(
            f"The converted model's outputs differ from keras-hub's (max |difference| "
            f"{np.abs(got - expected).max() if got.shape == expected.shape else 'shape'}): "
            f"this layout is not supported. Received: {source.name!r}"
        )


def from_keras_hub(
    backbone_or_preset: Any,
    include_top: bool = False,
    input_shape: tuple | None = None,
    name: str | None = None,
    check: bool = True,
) -> keras.Model:
    """Our equivalent of a keras-hub ResNet or pre-norm Transformer, same weights.

    A GPT-2, OPT or ViT backbone converts with
    `hub_transformers.transformer_from_keras_hub` (each Transformer layer an
    attention `Residual` and an MLP `Residual`; BERT, RoBERTa and GPT-NeoX
    are refused, saying why); the rest of this docstring is about ResNets,
    one `Residual` per block.

    Every keras-hub block type converts (`basic_block`, `bottleneck_block`,
    `basic_block_vd`, `bottleneck_block_vd`, with or without
    `use_pre_activation`): ResNet-v1.5 (stride on the 3x3, He et al. 2019's
    ResNet-B), ResNet-v2 (He et al. 2016, full pre-activation) and ResNet-vd
    (deep stem and average-pool shortcuts: ResNet-C and -D). Weights are
    copied layer by layer by name correspondence (`stack0_block0_1_conv` to
    the branch's `conv2_block1_1_conv`, `stack0_block0_0_conv` to the
    shortcut's `conv2_block1_0_conv`, `..._pre_activation_bn` to
    `..._preact_bn`), never by flat order. (keras-hub's vd blocks with
    pre-activation build only without strides: keras-hub projects the
    un-pooled input there.) The model is float32 whatever keras-hub's dtype
    policy, and a classifier's dropout before `predictions` is left out.

    Args:
        backbone_or_preset: a `keras_hub.models.ResNetBackbone`, a keras-hub
            `ImageClassifier` over one, or a preset name such as
            "resnet_50_imagenet" (keras-hub downloads it; without network
            access this raises a ValueError saying so).
        include_top: bool. Also convert the classifier head (global pooling
            and the `predictions` Dense layer, with keras-hub's activation:
            logits by default). Needs a classifier or a preset. Defaults to False.
        input_shape: tuple or None. None: the backbone's `image_shape`.
        name: str or None. Model name; None: "{backbone name}_residual".
        check: bool. Run both models on a random batch and raise a ValueError
            if their outputs differ. Defaults to True.

    Returns:
        A functional `keras.Model` (inputs as keras-hub's: no preprocessing).

    Raises:
        ImportError: keras-hub is not installed.
        ValueError: the preset cannot be loaded, or the layout has no
            counterpart here.

    Example:
        >>> import keras_hub
        >>> hub = keras_hub.models.ResNetBackbone(
        ...     input_conv_filters=[64], input_conv_kernel_sizes=[7],
        ...     stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
        ...     stackwise_num_strides=[1, 2], block_type="basic_block",
        ...     image_shape=(32, 32, 3))
        >>> ours = from_keras_hub(hub)
        >>> [lyr.name for lyr in ours.layers if lyr.name.endswith("_block1")]
        ['conv2_block1', 'conv3_block1']
    """
    keras_hub = _keras_hub()
    source = backbone_or_preset
    if isinstance(source, str):
        source = _load_preset(keras_hub, source, include_top)
    classifier = source if isinstance(source, keras_hub.models.ImageClassifier) else None
    backbone = classifier.backbone if classifier is not None else source
    if _is_transformer(keras_hub, backbone):
        if include_top or input_shape is not None:
            raise ValueError(
                "A keras-hub Transformer converts as its backbone, with keras-hub's inputs: "
                f"include_top and input_shape are for ResNets. Received: include_top="
                f"{include_top}, input_shape={input_shape}"
            )
        return transformer_from_keras_hub(backbone, name=name, check=check)
    if not isinstance(backbone, keras_hub.models.ResNetBackbone):
        raise TypeError(
            "from_keras_hub converts keras-hub ResNets: a ResNetBackbone, an ImageClassifier "
            f"over one, or a preset name. Received: {type(backbone_or_preset).__name__}"
        )
    if include_top and classifier is None:
        raise ValueError(
            "include_top=True needs keras-hub's classifier head: pass an ImageClassifier or a "
            "preset name, or include_top=False. Received: a ResNetBackbone"
        )
    spec = _spec(backbone)
    options = {key: spec.pop(key) for key in ("bn_momentum", "bn_epsilon", "data_format")}
    model = build_resnet(
        spec, include_top=False, **options, input_shape=input_shape or tuple(backbone.image_shape),
        pooling=classifier.pooling if include_top else None,
        name=name or f"{backbone.name}_residual",
    )
    hub_model = backbone
    if include_top:
        head = classifier.output_dense
        outputs = layers.Dense(head.units, activation=head.activation, use_bias=head.use_bias,
                               name="predictions")(model.output)
        model = keras.Model(model.input, outputs, name=model.name)
        hub_model = classifier
    for theirs, ours in _pairs(hub_model, model, spec["stem"] == "deep"):
        ours.assign(keras.ops.convert_to_numpy(theirs))
    if check:
        _check_outputs(hub_model, model)
    return model


def to_keras_hub(model: keras.Model, backbone: Any) -> Any:
    """Copy the weights of a model made by `from_keras_hub` into a keras-hub backbone.

    For a Transformer backbone this is `hub_transformers.transformer_to_keras_hub`
    (which returns a new backbone when blocks were deleted); for a ResNet:

    The reverse of `from_keras_hub`, by the same layer correspondence. Our
    model does not record keras-hub's constructor arguments, so pass a
    backbone (or classifier) built with the layout the model came from, e.g.
    the one it was converted from, or `keras_hub.models.ResNetBackbone(**config)`.

    Args:
        model: keras.Model. A model made by `from_keras_hub` (then trained,
            edited in place...), or one built with the same layout.
        backbone: a `keras_hub.models.ResNetBackbone` or an `ImageClassifier`
            over one, to receive the weights (changed in place).

    Returns:
        `backbone`, with `model`'s weights.

    Example:
        >>> import keras_hub
        >>> config = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
        ...               stackwise_num_filters=[64], stackwise_num_blocks=[1],
        ...               stackwise_num_strides=[1], block_type="basic_block",
        ...               image_shape=(32, 32, 3))
        >>> ours = from_keras_hub(keras_hub.models.ResNetBackbone(**config))
        >>> hub = to_keras_hub(ours, keras_hub.models.ResNetBackbone(**config))
        >>> import numpy as np
        >>> np.array_equal(keras.ops.convert_to_numpy(hub.get_layer("conv1_conv").kernel),
        ...                keras.ops.convert_to_numpy(ours.get_layer("conv1_conv").kernel))
        True
    """
    keras_hub = _keras_hub()
    inner = backbone.backbone if isinstance(backbone, keras_hub.models.ImageClassifier) else backbone
    if _is_transformer(keras_hub, inner):
        return transformer_to_keras_hub(model, inner)
    if not isinstance(inner, keras_hub.models.ResNetBackbone):
        raise TypeError(
            "to_keras_hub fills a keras-hub ResNetBackbone or an ImageClassifier over one. "
            f"Received: {type(backbone).__name__}"
        )
    for theirs, ours in _pairs(backbone, model, len(inner.input_conv_filters) > 1):
        theirs.assign(keras.ops.convert_to_numpy(ours))
    return backbone


def load_keras_hub_classifier(
    preset: str, input_shape: tuple | None = None
) -> tuple[keras.Model, Callable[[np.ndarray], np.ndarray]]:
    """A keras-hub image-classifier preset as our model (head included) and its preprocessing.

    keras-hub downloads the preset once; the classifier converts with
    `from_keras_hub(..., include_top=True)` (its `predictions` layer outputs
    what keras-hub's does, logits for the ResNet presets), and `preprocess`
    is the preset's own image converter (resizing and the scale / offset
    its weights were trained with) applied to RGB images in [0, 255].

    Args:
        preset: str. A keras-hub ResNet preset, e.g. "resnet_50_imagenet".
        input_shape: tuple or None. Our model's input shape; None: keras-hub's.

    Returns:
        `(model, preprocess)`; `model(preprocess(images))` classifies `images`.

    Raises:
        ImportError: keras-hub is not installed.
        ValueError: the preset cannot be loaded (e.g. no network access).

    Example:
        A preset is a keras-hub name (downloaded once) or a preset folder; here
        a small classifier saved with `save_to_preset`, so nothing downloads:

        >>> import tempfile, keras_hub
        >>> backbone = keras_hub.models.ResNetBackbone(
        ...     input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64],
        ...     stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        ...     image_shape=(32, 32, 3))
        >>> converter = keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=1 / 255)
        >>> classifier = keras_hub.models.ResNetImageClassifier(
        ...     backbone=backbone, num_classes=3,
        ...     preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
        >>> preset = tempfile.mkdtemp()
        >>> classifier.save_to_preset(preset)
        >>> model, preprocess = load_keras_hub_classifier(preset)
        >>> images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
        >>> expected = classifier.predict(images, verbose=0)
        >>> bool(np.abs(keras.ops.convert_to_numpy(model(preprocess(images))) - expected).max() < 1e-4)
        True
    """
    keras_hub = _keras_hub()
    classifier = _load_preset(keras_hub, preset, include_top=True)
    model = from_keras_hub(classifier, include_top=True, input_shape=input_shape)
    converter = classifier.preprocessor.image_converter

    def preprocess(images: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(converter(np.asarray(images, dtype="float32")))

    return model, preprocess
