"""Small networks for the experiments: an MNIST ResNet and the plain comparison nets.

- `mnist_resnet`: the small residual CNN trained on MNIST in Bolte (2016).
- `vgg_plain`: Veit et al. (2016)'s 15-layer VGG-style net with 128 channels in
  every layer, so that any layer can be deleted (Sec. 4.1, Fig. 3).
- `alexnet`: Krizhevsky et al. (2012), the non-residual comparison of Chu et al. (2017)
  (conv4 vs conv5 top-9 overlap).

Each middle layer of `vgg_plain` is a `Residual` with `shortcut="none"`, so the
lesion tools delete it (`branch_enabled = False` gives `y = x`) exactly as
they delete residual blocks.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_residual.models import weights as weights_lib
from keras_residual.models.imagenet import _head, build_resnet
from keras_residual.models.specs import CIFAR_SPECS
from keras_residual.residual import Residual


def _load_local(model: keras.Model, weights: str | None) -> keras.Model:
    if weights == "imagenet":
        raise ValueError(
            f"No published ImageNet weights exist for {model.name!r}. Pass weights=None or the "
            "path of a checkpoint. Received: weights='imagenet'"
        )
    if weights is not None:
        weights_lib.load_keras_applications_weights(model, weights)
    return model


def mnist_resnet(
    input_shape: tuple = (28, 28, 1),
    classes: int = 10,
    blocks: tuple = (2, 2),
    filters: tuple = (16, 32),
    bn_momentum: float = 0.9,
    **kwargs: Any,
) -> keras.Model:
    """A small residual CNN for MNIST (Bolte's (2016) visualized model).

    A 3x3 conv stem, then stages of basic blocks (the second one strided,
    with a projection shortcut), global average pooling and a classifier.

    Args:
        input_shape: tuple. Defaults to (28, 28, 1).
        classes: int. Defaults to 10.
        blocks: tuple. Basic blocks per stage. Defaults to (2, 2).
        filters: tuple. Width of each stage. Defaults to (16, 32).
        bn_momentum: float. Defaults to 0.9, so that moving statistics catch
            up within a short training (measured on MNIST in this project).
        **kwargs: any `build_resnet` argument (`plain=True` for the plain
            twin, `include_top`, `pooling`, `weights` (a path), `name`, ...).

    Returns:
        A `keras.Model` named "mnist_resnet" (or "mnist_plain").

    Example:
        >>> m = mnist_resnet()
        >>> tuple(m.output.shape)
        (None, 10)
    """
    defaults = {
        "name": "mnist_plain" if kwargs.get("plain") else "mnist_resnet",
        "shortcut": "projection",
        "strides": (1,) + (2,) * (len(filters) - 1),
    }
    return build_resnet(
        CIFAR_SPECS["cifar"], input_shape=input_shape, classes=classes, blocks=blocks,
        filters=filters, bn_momentum=bn_momentum, **{**defaults, **kwargs},
    )


def _plain_conv(filters: int, bn_momentum: float, name: str) -> Residual:
    branch = keras.Sequential(
        [
            layers.Conv2D(filters, 3, padding="same", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_conv"),
            layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn"),
        ],
        name=f"{name}_branch",
    )
    return Residual(branch, shortcut="none", activation="relu", name=name)


def vgg_plain(
    input_shape: tuple = (32, 32, 3),
    classes: int = 10,
    depth: int = 15,
    filters: int = 128,
    bn_momentum: float = 0.9,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classifier_activation: Any = "softmax",
    name: str = "vgg_plain",
) -> keras.Model:
    """Veit et al. (2016)'s plain comparison net: `depth` layers, `filters` channels each.

    conv1 (3x3, BN, ReLU) maps the image to `filters` channels; `depth - 2`
    more 3x3 conv-BN-ReLU layers follow in three stages separated by 2x2
    max-pools (`pool3_pool`, `pool4_pool`); then global average pooling and
    the classifier: 15 weighted layers by default. Deleting any middle layer
    drops accuracy to chance (Veit et al., Fig. 3).

    Args:
        input_shape: tuple. Defaults to (32, 32, 3) (CIFAR-10).
        classes: int. Defaults to 10.
        depth: int. Weighted layers, >= 5. Defaults to 15.
        filters: int. Channels of every conv layer. Defaults to 128.
        bn_momentum: float. Defaults to 0.9.
        include_top: bool. As in keras.applications.
        weights: None or the path of a checkpoint to load.
        pooling: As in keras.applications.
        classifier_activation: As in keras.applications.
        name: str. The model's name.

    Returns:
        A `keras.Model`; its middle layers are `Residual(shortcut="none")`
        named `conv{stage}_block{i}`.

    Example:
        >>> from keras_residual import Residual
        >>> m = vgg_plain()
        >>> sum(isinstance(l, Residual) for l in m.layers)
        13
        >>> [l.name for l in m.layers if isinstance(l, keras.layers.MaxPooling2D)]
        ['pool3_pool', 'pool4_pool']
    """
    if depth < 5:
        raise ValueError(f"`depth` must be >= 5 (conv1, three stages, classifier). Received: {depth}")
    middle = depth - 2
    stages = [middle // 3 + (1 if i < middle % 3 else 0) for i in range(3)]
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name="conv1_conv")(inputs)
    x = layers.BatchNormalization(momentum=bn_momentum, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    for stage, count in enumerate(stages, start=2):
        if stage > 2:
            x = layers.MaxPooling2D(2, name=f"pool{stage}_pool")(x)
        for number in range(1, count + 1):
            x = _plain_conv(filters, bn_momentum, f"conv{stage}_block{number}")(x)
    outputs = _head(x, include_top, pooling, classes, classifier_activation, "channels_last")
    return _load_local(keras.Model(inputs, outputs, name=name), weights)


def alexnet(
    input_shape: tuple = (227, 227, 3),
    classes: int = 1000,
    filters: tuple = (96, 256, 384, 384, 256),
    fc_units: int = 4096,
    dropout: float = 0.5,
    include_top: bool = True,
    weights: str | None = None,
    pooling: str | None = None,
    classifier_activation: Any = "softmax",
    name: str = "alexnet",
) -> keras.Model:
    """AlexNet (Krizhevsky et al. 2012), single tower, the comparison net of Chu et al. (2017).

    conv1 11x11/4, 3x3/2 max-pool, conv2 5x5, pool, conv3-5 3x3, pool, two
    fully connected layers with dropout, classifier. Local response
    normalization is left out (Keras has no such layer; later work found it
    of little use). Layers are named `conv1`...`conv5` (ReLU fused),
    `pool1`, `pool2`, `pool5`, `fc6`, `fc7`, `predictions`.

    Args:
        input_shape: tuple. Defaults to (227, 227, 3).
        classes: int. Defaults to 1000.
        filters: tuple. The five conv widths. Defaults to (96, 256, 384, 384, 256).
        fc_units: int. Width of fc6 and fc7. Defaults to 4096.
        dropout: float. Dropout rate after fc6 and after fc7. Defaults to 0.5.
        include_top: bool. As in keras.applications.
        weights: None or the path of a checkpoint to load.
        pooling: As in keras.applications.
        classifier_activation: As in keras.applications.
        name: str. The model's name.

    Returns:
        A `keras.Model`.

    Example:
        >>> m = alexnet()
        >>> tuple(m.get_layer("conv5").output.shape)
        (None, 13, 13, 256)
    """
    if len(filters) != 5:
        raise ValueError(f"`filters` needs the five conv widths. Received: filters={filters}")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(filters[0], 11, strides=4, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(filters[1], 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    for index, width in enumerate(filters[2:], start=3):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for index in (6, 7):
            x = layers.Dense(fc_units, activation="relu", name=f"fc{index}")(x)
            x = layers.Dropout(dropout, name=f"drop{index}")(x)
        outputs = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        outputs = _head(x, False, pooling, classes, classifier_activation, "channels_last")
    return _load_local(keras.Model(inputs, outputs, name=name), weights)
