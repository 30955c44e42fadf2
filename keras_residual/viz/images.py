"""Images of a network's insides as NumPy arrays (no plotting here).

- `kernel_map`: first-layer kernels as one pixel map, each kernel normalized
  on its own (Chu et al. 2017, Fig. 8 "pixel map of conv1 kernel values"; Bolte (2016),
  first-layer filters of an MNIST net).
- `activation_grid`: every channel of one layer's output on one input, tiled
  into one image (Bolte (2016), "activations of some convolutional filters at
  each layer of a ResNet model trained on MNIST").
- `preactivations`: what a layer feeds into its activation function (the
  conv output before its ReLU; the merged sum before a block's ReLU).
- `residual_difference` / `residual_differences`: what a residual block adds,
  F(x) = block output minus block input, or its branch output, on one input.

`keras_residual.viz.plots` turns these arrays into figures.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from keras_residual import graph
from keras_residual.graph import resolve_path
from keras_residual.probe import probe
from keras_residual.residual import Residual
from keras_residual.validation import check_model_input, check_single_input
from keras_residual.viz.gradcam import replaced_attribute

DIFFERENCE_KINDS = ("difference", "branch")


def normalize(array: Any, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """Min-max scale to [0, 1] over `axis` (all axes when None); constant parts map to 0.5.

    Example:
        >>> normalize([1.0, 3.0]).tolist()
        [0.0, 1.0]
    """
    array = np.asarray(array, dtype="float32")
    low = array.min(axis=axis, keepdims=True)
    span = array.max(axis=axis, keepdims=True) - low
    flat = span == 0
    return np.where(flat, 0.5, (array - low) / np.where(flat, 1.0, span)).astype("float32")


def tile(
    images: Any, columns: int | None = None, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tiles N equal-sized images into one grid image, row by row.

    Args:
        images: array (N, h, w) or (N, h, w, c).
        columns: int or None. Images per row; None: ceil(sqrt(N)).
        pad: int. Pixels between tiles. Defaults to 1.
        pad_value: float. Value of the separating pixels and of empty
            cells. Defaults to 1.0 (white in a [0, 1] image).

    Returns:
        array (rows*(h+pad)-pad, columns*(w+pad)-pad[, c]).

    Example:
        >>> import numpy as np
        >>> tile(np.zeros((5, 2, 3)), columns=3).shape
        (5, 11)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim not in (3, 4) or len(images) == 0:
        raise ValueError(
            "`images` must be a non-empty array of shape (N, h, w) or (N, h, w, c). "
            f"Received: shape {images.shape}"
        )
    n, h, w = images.shape[:3]
    columns = columns or math.ceil(math.sqrt(n))
    if columns < 1:
        raise ValueError(f"`columns` must be a positive int. Received: columns={columns}")
    rows = math.ceil(n / columns)
    grid = np.full(
        (rows * (h + pad) - pad, columns * (w + pad) - pad) + images.shape[3:],
        pad_value,
        dtype="float32",
    )
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return grid


def _kernel_of(source: Any) -> np.ndarray:
    if isinstance(source, keras.layers.Layer):
        kernel = getattr(source, "kernel", None)
        if kernel is None:
            raise ValueError(
                f"Layer {source.name!r} ({type(source).__name__}) has no `kernel`; pass a "
                "convolution layer or its kernel array."
            )
        return keras.ops.convert_to_numpy(kernel)
    return np.asarray(source, dtype="float32")


def kernel_map(source: Any, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """The kernels of a 2D convolution as one pixel map, each kernel normalized alone.

    Chu et al. (2017), Fig. 8: ResNet-50's conv1 kernels as RGB images; Bolte (2016): the
    first-layer filters of an MNIST net as a gray grid. Each kernel is
    min-max scaled over its own pixels and input channels, so weak and
    strong kernels are equally visible.

    Args:
        source: a Conv2D layer (its `kernel` is used) or a kernel array of
            shape (kh, kw, in_channels, filters).
        columns: int or None. Kernels per row; None: a near-square grid.
        pad: int. Pixels between kernels. Defaults to 1.

    Returns:
        float32 array in [0, 1]: (H, W, 3) when the kernels have 3 input
        channels (RGB), (H, W) when they have 1.

    Example:
        >>> import numpy as np
        >>> kernel_map(np.random.rand(7, 7, 3, 64)).shape
        (63, 63, 3)
    """
    kernel = _kernel_of(source)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(
            "kernel_map needs 2D convolution kernels (kh, kw, in_channels, filters) with "
            f"1 (gray) or 3 (RGB) input channels. Received: kernel of shape {kernel.shape}. "
            "For deeper layers, show activations instead (`activation_grid`)."
        )
    kernels = normalize(np.moveaxis(kernel, -1, 0), axis=(1, 2, 3))
    if kernel.shape[2] == 1:
        kernels = kernels[..., 0]
    return tile(kernels, columns=columns, pad=pad)


def _channels_to_front(array: np.ndarray) -> np.ndarray:
    """(h, w, c) -> (c, h, w) for the image data format in use."""
    if keras.config.image_data_format() == "channels_first":
        return array
    return np.moveaxis(array, -1, 0)


def _one_input(image: Any) -> np.ndarray:
    image = np.asarray(image, dtype="float32")
    return image[None]


def activation_grid(
    model: keras.Model,
    path: str,
    image: Any,
    columns: int | None = None,
    per_channel: bool = True,
) -> np.ndarray:
    """Every channel of the layer at `path` on one input, tiled into one image.

    Bolte's (2016) MNIST figure: the feature maps of each conv layer of a
    residual net on one digit.

    Args:
        model: keras.Model. Functional or Sequential; left unchanged.
        path: str. Layer path (see `keras_residual.probe`).
        image: array. One input, without the batch axis.
        columns: int or None. Channels per row; None: a near-square grid.
        per_channel: bool. Scale each channel to [0, 1] on its own (True,
            default) or all channels together (False, which keeps their
            relative strength).

    Returns:
        float32 array (H, W) in [0, 1].

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        >>> model = keras.Model(inputs, conv(inputs))
        >>> activation_grid(model, "conv", np.ones((8, 8, 1))).shape
        (13, 13)
    """
    check_single_input(model, np.asarray(image))
    maps = keras.ops.convert_to_numpy(probe(model, path)(_one_input(image), training=False))[0]
    if maps.ndim != 3:
        raise ValueError(
            f"activation_grid needs a layer with 2D feature maps; {path!r} outputs "
            f"shape {maps.shape} per input."
        )
    maps = _channels_to_front(maps)
    maps = normalize(maps, axis=(1, 2) if per_channel else None)
    return tile(maps, columns=columns)


def preactivations(model: keras.Model, path: str, images: Any) -> np.ndarray:
    """The input of the activation function of the layer at `path`.

    For a layer with `activation=` (Conv2D, Dense) it is the layer's output
    before that activation; for a `Residual` block, the merged sum before
    its post-merge activation; for an `Activation`/`ReLU` layer, its input.
    The activation is switched off only for the duration of one call and
    restored in `finally`.

    Args:
        model: keras.Model. Functional or Sequential.
        path: str. Layer path.
        images: array (N, ...). A batch of inputs.

    Returns:
        float32 array, one row per input.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((2,))
        >>> fc = keras.layers.Dense(1, activation="relu", kernel_initializer="ones", name="fc")
        >>> model = keras.Model(inputs, fc(inputs))
        >>> preactivations(model, "fc", np.array([[-1.0, -2.0]])).tolist()
        [[-3.0]]
    """
    images = np.asarray(images, dtype="float32")
    check_model_input(model, images, "images")
    layer = resolve_path(model, path)
    if isinstance(layer, Residual):
        return _block_preactivations(model, layer, path, images)
    inputs = probe(model, f"{path}/input")(images, training=False)
    if isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)):
        return keras.ops.convert_to_numpy(inputs).astype("float32")
    activation = getattr(layer, "activation", None)
    if activation is None:
        raise ValueError(
            f"Layer {path!r} ({type(layer).__name__}) has no activation function, so it "
            "has no pre-activation. Pick a layer with `activation=`, a Residual block or "
            "an Activation/ReLU layer."
        )
    try:
        layer.activation = keras.activations.linear
        outputs = layer(inputs)
    finally:
        layer.activation = activation
    return keras.ops.convert_to_numpy(outputs).astype("float32")


def _before_activation(block: Residual, inputs: Any, kwargs: dict) -> Any:
    """The value a block's post-merge activation reads, following the block's description.

    The parts run with the call arguments the model gave the block (`mask`,
    `use_causal_mask`, `attention_mask`, ...), as the block passes them on.
    """
    values = {}
    call_kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")
                   and v is not None}

    def apply(part, tensors):
        values[part.output] = block.passed_on(part, tensors, training=False,
                                              mask=kwargs.get("mask"), call_kwargs=call_kwargs)
        return values[part.output]

    block.wire(inputs, apply)
    return values[block.part("activation").inputs[0]]


def _block_preactivations(model: keras.Model, block: Residual, path: str, images: Any) -> np.ndarray:
    """`_before_activation` of `block` as `model` calls it: its input and call arguments."""
    seen = []
    original = block.call

    def tapped(inputs, *args, **kwargs):
        seen.append(_before_activation(block, inputs, kwargs))
        return original(inputs, *args, **kwargs)

    with replaced_attribute(block, "call", tapped):
        model(images, training=False)
    if len(seen) != 1:
        raise ValueError(
            f"Block {block.name!r} (path {path!r}) runs {len(seen)} times in one call of the "
            f"model; its pre-activation is defined for a block that runs once. Received: "
            f"path={path!r}"
        )
    return keras.ops.convert_to_numpy(seen[0]).astype("float32")


def residual_difference(
    model: keras.Model, path: str, image: Any, kind: str = "difference"
) -> np.ndarray:
    """What the residual block at `path` adds to its input, on one input.

    He et al. 2015 write a block as y = F(x) + x; this returns F(x) for one
    image: block output minus block input ("difference", the net change the
    block makes, including its post-merge activation) or the branch output
    ("branch", F(x) itself).

    Args:
        model: keras.Model.
        path: str. Path of a `Residual` block.
        image: array. One input, without the batch axis.
        kind: str. "difference" (needs equal input and output shapes) or
            "branch". Defaults to "difference".

    Returns:
        float32 array of the block's output shape, without the batch axis.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((3,))
        >>> block = Residual(keras.layers.Dense(3, kernel_initializer="identity"), name="block")
        >>> model = keras.Model(inputs, block(inputs))
        >>> residual_difference(model, "block", np.array([1.0, 2.0, 3.0])).tolist()
        [1.0, 2.0, 3.0]
    """
    if kind not in DIFFERENCE_KINDS:
        raise ValueError(f"`kind` must be one of {DIFFERENCE_KINDS}. Received: kind={kind!r}")
    block = resolve_path(model, path)
    if not isinstance(block, Residual):
        raise ValueError(
            f"Layer {path!r} is a {type(block).__name__}, not a Residual block. "
            f"Residual blocks of this model: {residual_paths(model)}"
        )
    check_single_input(model, np.asarray(image))
    x = _one_input(image)
    if kind == "branch":
        return keras.ops.convert_to_numpy(probe(model, f"{path}/branch")(x, training=False))[0]
    outputs, inputs = (
        keras.ops.convert_to_numpy(t)[0]
        for t in probe(model, [path, f"{path}/input"])(x, training=False)
    )
    if outputs.shape != inputs.shape:
        raise ValueError(
            f"Block {path!r} maps shape {inputs.shape} to {outputs.shape} (a projection "
            "block), so output minus input is undefined. Use kind='branch'."
        )
    return (outputs - inputs).astype("float32")


def residual_paths(model: keras.Model) -> list[str]:
    """Paths of every `Residual` block of `model`, nested ones included, in layer order.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, Residual(keras.layers.Dense(3), name="b1")(inputs))
        >>> residual_paths(model)
        ['b1']
    """
    return graph.block_paths(model)


def residual_differences(
    model: keras.Model, image: Any, kind: str = "difference"
) -> dict[str, np.ndarray]:
    """`residual_difference` for every block; projection blocks fall back to their branch.

    Args:
        model: keras.Model.
        image: array. One input, without the batch axis.
        kind: str. "difference" or "branch". Defaults to "difference".

    Returns:
        dict from block path to its array, in layer order.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, Residual(keras.layers.Dense(3), name="b1")(inputs))
        >>> list(residual_differences(model, np.ones(3)))
        ['b1']
    """
    check_single_input(model, np.asarray(image))
    out = {}
    for path in residual_paths(model):
        block = resolve_path(model, path)
        same = tuple(block.input.shape) == tuple(block.output.shape)
        out[path] = residual_difference(model, path, image, kind if same else "branch")
    return out
