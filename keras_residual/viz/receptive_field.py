"""Receptive fields of convolutional units, through nested residual blocks.

Along each spatial axis a layer's units see a window of the input described
by three numbers (Dumoulin & Visin, "A guide to convolution arithmetic",
2016; Araujo et al., "Computing receptive fields of convolutional neural
networks", Distill 2019):

- `size`: how many input pixels one unit's field spans (its bounding box:
  a dilated kernel leaves holes inside it);
- `jump`: how far apart, in input pixels, the fields of neighbouring units
  start (the product of the strides so far);
- `offset`: where the field of unit 0 starts; negative where padding put
  the field partly outside the image.

A window layer (kernel `k`, stride `s`, dilation `d`, `p` pixels of padding
before the data) maps `(size, jump, offset)` to
`(size + (d (k - 1)) jump, jump s, offset - p jump)`. Where several tensors
meet (an addition, the merge of a residual block) the field is the union of
theirs, so a block's field is the larger of its branch's and its shortcut's.
Chu et al. (2017) crops each top-9 unit's field from its image, "gray where the box
runs off the image" (Fig. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from keras_residual.graph import (
    INPUT,
    fresh_inputs,
    is_container,
    resolve_path,
    split_path,
    trace,
)
from keras_residual.residual import Residual
from keras_residual.shortcuts import (
    AvgDownShortcut,
    ProjectionShortcut,
    ZeroPadShortcut,
    infer_strides,
)


@dataclass(frozen=True)
class ReceptiveField:
    """The input window of the units of one layer, one entry per spatial axis.

    Attributes:
        size: tuple of int. Field extent in input pixels (bounding box).
        jump: tuple of int. Input distance between neighbouring units' fields.
        offset: tuple of int. Input coordinate where unit 0's field starts
            (negative where padding extends it beyond the image).

    Example:
        >>> field = ReceptiveField(size=(7, 7), jump=(2, 2), offset=(-3, -3))
        >>> field.box(1, 2)
        (-1, 1, 6, 8)
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    offset: tuple[int, ...]

    def box(self, *position: int) -> tuple[int, ...]:
        """Input box of the unit at `position`: all starts, then all ends.

        For 2D fields this is `(top, left, bottom, right)`; ends are
        exclusive (`image[top:bottom, left:right]`), and the box may extend
        beyond the image.

        Args:
            *position: int. The unit's index along each spatial axis.

        Returns:
            tuple of int of length 2 * number of spatial axes.

        Example:
            >>> ReceptiveField(size=(3,), jump=(1,), offset=(-1,)).box(0)
            (-1, 2)
        """
        if len(position) != len(self.size):
            raise ValueError(
                f"This field has {len(self.size)} spatial axes; pass one index per axis. "
                f"Received: position={position}"
            )
        starts = tuple(o + int(p) * j for o, p, j in zip(self.offset, position, self.jump, strict=True))
        return starts + tuple(s + n for s, n in zip(starts, self.size, strict=True))

    def center(self, *position: int) -> tuple[float, ...]:
        """Input coordinates of the centre of the unit's field.

        Example:
            >>> ReceptiveField(size=(3,), jump=(2,), offset=(-1,)).center(2)
            (4.0,)
        """
        box = self.box(*position)
        n = len(self.size)
        return tuple((box[i] + box[n + i] - 1) / 2 for i in range(n))


def _identity(rank: int) -> ReceptiveField:
    return ReceptiveField((1,) * rank, (1,) * rank, (0,) * rank)


def _window(
    field: ReceptiveField, kernel, strides, dilation, pad_before
) -> ReceptiveField:
    size, jump, offset = [], [], []
    for n, j, o, k, s, d, p in zip(
        field.size, field.jump, field.offset, kernel, strides, dilation, pad_before, strict=True
    ):
        size.append(n + d * (k - 1) * j)
        jump.append(j * s)
        offset.append(o - p * j)
    return ReceptiveField(tuple(size), tuple(jump), tuple(offset))


def _union(fields: list[ReceptiveField], where: str) -> ReceptiveField:
    first = fields[0]
    if any(f.jump != first.jump for f in fields):
        raise ValueError(
            f"{where} merges tensors whose units are spaced differently in the input "
            f"(jumps {[f.jump for f in fields]}); their receptive fields cannot be joined."
        )
    start = tuple(min(f.offset[i] for f in fields) for i in range(len(first.size)))
    end = tuple(max(f.offset[i] + f.size[i] for f in fields) for i in range(len(first.size)))
    return ReceptiveField(tuple(e - s for s, e in zip(start, end, strict=True)), first.jump, start)


def _spatial(shape, data_format: str | None) -> tuple:
    return tuple(shape[2:]) if data_format == "channels_first" else tuple(shape[1:-1])


def _pad_before(padding: str, sizes, kernel, strides, dilation, layer) -> tuple[int, ...]:
    """Pixels of padding before the data, per axis, as Keras' "same" pads (less on the left)."""
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "causal":
        return tuple(d * (k - 1) for k, d in zip(kernel, dilation, strict=True))
    pads = []
    for n, k, s, d in zip(sizes, kernel, strides, dilation, strict=True):
        effective = d * (k - 1) + 1
        if n is None:
            if s != 1:
                raise ValueError(
                    f"Layer {layer.name!r} pads 'same' with stride {s} on an axis of unknown "
                    "size, so its padding is unknown. Build the model with a fixed input size."
                )
            pads.append((effective - 1) // 2)
            continue
        total = max((math.ceil(n / s) - 1) * s + effective - n, 0)
        pads.append(total // 2)
    return tuple(pads)


_CONVS = (
    layers.Conv1D, layers.Conv2D, layers.Conv3D,
    layers.DepthwiseConv1D, layers.DepthwiseConv2D,
    layers.SeparableConv1D, layers.SeparableConv2D,
)
_POOLS = (
    layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
    layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
)
_PADS = (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)
_CROPS = (layers.Cropping1D, layers.Cropping2D, layers.Cropping3D)
# Layers that act on each position separately (or on channels only): the
# field of their output is the union of their inputs' fields.
_POINTWISE = (
    layers.InputLayer, layers.Activation, layers.ReLU, layers.LeakyReLU, layers.PReLU,
    layers.ELU, layers.Softmax, layers.BatchNormalization, layers.LayerNormalization,
    layers.GroupNormalization, layers.UnitNormalization, layers.Dropout,
    layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
    layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout, layers.Rescaling,
    layers.Normalization, layers.Identity, layers.Masking, layers.Add, layers.Subtract,
    layers.Multiply, layers.Average, layers.Maximum, layers.Minimum, layers.Concatenate,
    layers.Dense, layers.EinsumDense,
)


def _transfer(layer, fields, input_shape, output_shape):
    """The field of a leaf layer's output, or a string saying why there is none."""
    reasons = [f for f in fields if isinstance(f, str)]
    if reasons:
        return reasons[0]
    if not fields:
        return f"layer {layer.name!r} has no tensor inputs"
    if len(output_shape) < 3:
        return f"layer {layer.name!r} ({type(layer).__name__}) outputs no spatial positions"
    data_format = getattr(layer, "data_format", None)
    sizes = _spatial(input_shape, data_format)
    if isinstance(layer, _CONVS):
        kernel, strides, dilation = layer.kernel_size, layer.strides, layer.dilation_rate
        pad = _pad_before(layer.padding, sizes, kernel, strides, dilation, layer)
        return _window(fields[0], kernel, strides, dilation, pad)
    if isinstance(layer, _POOLS):
        rank = len(layer.pool_size)
        pad = _pad_before(layer.padding, sizes, layer.pool_size, layer.strides, (1,) * rank, layer)
        return _window(fields[0], layer.pool_size, layer.strides, (1,) * rank, pad)
    if isinstance(layer, (_PADS, _CROPS)):
        amounts = layer.padding if isinstance(layer, _PADS) else layer.cropping
        if isinstance(amounts[0], int):  # the 1D layers store one (before, after) pair
            amounts = (amounts,)
        sign = 1 if isinstance(layer, _PADS) else -1
        rank = len(amounts)
        return _window(fields[0], (1,) * rank, (1,) * rank, (1,) * rank,
                       tuple(sign * a[0] for a in amounts))
    if isinstance(layer, _POINTWISE) and len(output_shape) == len(input_shape):
        return _union(fields, f"Layer {layer.name!r}")
    return (
        f"the receptive field through layer {layer.name!r} ({type(layer).__name__}) is "
        "unknown: only convolutions, pooling, padding, cropping, pointwise layers, "
        "Residual blocks and functional/Sequential models are supported"
    )


def _shortcut_field(shortcut, field, input_shape):
    """Our shortcut layers: 1x1 projections and subsampling with their stride."""
    if isinstance(field, str):
        return field
    strides = tuple(shortcut.strides)
    rank = len(strides)
    ones = (1,) * rank
    if isinstance(shortcut, AvgDownShortcut) and any(s != 1 for s in strides):
        sizes = _spatial(input_shape, shortcut.data_format)
        pad = _pad_before("same", sizes, strides, strides, ones, shortcut)
        return _window(field, strides, strides, ones, pad)
    return _window(field, ones, strides, ones, (0,) * rank)


class _FieldTracer:
    """Walks a model on symbolic tensors, carrying each tensor's field alongside."""

    def __init__(self):
        self.fields = {}
        self.by_path = {}

    def field(self, tensor):
        return self.fields.get(id(tensor), "a tensor that does not come from the model input")

    def record(self, path, value):
        if path in self.by_path:
            value = f"layer path {'/'.join(path)!r} is called more than once, so it is ambiguous"
        self.by_path[path] = value

    def call(self, layer, args, kwargs, path):
        tensors = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
        in_fields = [self.field(t) for t in tensors]
        self.record(path + (INPUT,), in_fields[0] if len(in_fields) == 1 else "several inputs")
        if isinstance(layer, Residual):
            outputs = layer(*args, **kwargs)
            self.fields[id(outputs)] = self._residual(layer, tensors[0], path)
        elif is_container(layer):
            inputs = args[0] if len(args) == 1 else list(args)
            outputs, _ = trace(layer, inputs, self._hook(path))
        elif isinstance(layer, (ProjectionShortcut, ZeroPadShortcut)):
            outputs = layer(*args, **kwargs)
            self.fields[id(outputs)] = _shortcut_field(layer, in_fields[0], tensors[0].shape)
        else:
            outputs = layer(*args, **kwargs)
            flat = keras.tree.flatten(outputs)
            field = _transfer(layer, in_fields, tensors[0].shape if tensors else (), flat[0].shape)
            for out in flat:
                self.fields[id(out)] = field
        flat = keras.tree.flatten(outputs)
        self.record(path, self.field(flat[0]) if len(flat) == 1 else "several outputs")
        return outputs

    def _hook(self, path):
        def hook(layer, args, kwargs, capture):
            return self.call(layer, args, kwargs, path + (layer.name,))
        return hook

    def _gate_field(self, block, block_input, merged_size_tensor):
        """A gate reads the block input through a 1x1 window with the branch's stride."""
        field = self.field(block_input)
        if isinstance(field, str):
            return field
        data_format = "channels_last"
        if len(block_input.shape) >= 4:
            data_format = block.data_format or keras.config.image_data_format()
        strides = infer_strides(block_input.shape, merged_size_tensor.shape, data_format)
        rank = len(strides)
        return _window(field, (1,) * rank, strides, (1,) * rank, (0,) * rank)

    def _residual(self, block, x, path):
        """The field of `block`'s output, following its description part by part."""

        def apply(part, tensors):
            if part.passes_input:  # an identity part passes its tensor on
                if part.role != "activation":
                    self.record(path + (part.role,), self.field(tensors[0]))
                return tensors[0]
            if part.role in ("preactivation", "branch", "shortcut"):
                return self.call(part.layer, (tensors[0],), {}, path + (part.role,))
            if part.role == "activation":  # element-wise: the field passes through
                return tensors[0]
            out = block.run_part(part, tensors)
            fields = [self.field(t) for t in tensors[: 2 if "branch" in part.inputs else 1]]
            if part.layer.reads_inputs:
                fields.append(self._gate_field(block, tensors[-1], tensors[0]))
            reasons = [f for f in fields if isinstance(f, str)]
            self.fields[id(out)] = reasons[0] if reasons else _union(fields, f"Residual {block.name!r}")
            return out

        return self.field(block.wire(x, apply))


def receptive_fields(model: keras.Model) -> dict[str, ReceptiveField]:
    """The receptive field of every layer path of `model` that has one.

    One walk of the model's graph, descending into every Residual block
    (branch, shortcut, pre-activation) and nested model; see
    `keras_residual.probe` for the path grammar. Paths whose units have no
    spatial field (after a Flatten, an RNN, an unsupported layer) are left
    out.

    Args:
        model: keras.Model. A functional or Sequential model with spatial
            inputs.

    Returns:
        dict from path (str) to ReceptiveField.

    Example:
        >>> import keras
        >>> inputs = keras.Input((32, 32, 3))
        >>> x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
        >>> x = keras.layers.MaxPooling2D(name="pool")(x)
        >>> receptive_fields(keras.Model(inputs, x))["pool"]
        ReceptiveField(size=(4, 4), jump=(2, 2), offset=(0, 0))
    """
    return {
        path: field for path, field in _walk(model).items() if not isinstance(field, str)
    }


def _walk(model: keras.Model) -> dict[str, ReceptiveField | str]:
    tracer = _FieldTracer()
    inputs = fresh_inputs(model)
    for tensor in keras.tree.flatten(inputs):
        tracer.fields[id(tensor)] = _identity(len(tensor.shape) - 2)
    trace(model, inputs, tracer._hook(()))  # fills tracer.by_path
    return {"/".join(path): field for path, field in tracer.by_path.items()}


def receptive_field(model: keras.Model, path: str) -> ReceptiveField:
    """The receptive field of the units at a layer path.

    Follows convolutions (any stride, dilation, "same"/"valid"/"causal"
    padding), pooling, zero-padding and cropping (the keras.applications
    stems: `ZeroPadding2D(3)` then a "valid" 7x7 conv), pointwise layers,
    nested models and Residual blocks, whose field is the union of the
    branch's and the shortcut's. Chu et al. (2017) crops this box around each of a
    channel's top-9 units.

    Args:
        model: keras.Model. A functional or Sequential model with spatial
            inputs.
        path: str. A layer path, e.g. `"conv2_block1/branch/conv2_block1_2_conv"`.

    Returns:
        ReceptiveField.

    Raises:
        ValueError: if the path does not exist or its units have no spatial
            receptive field (the message says which layer stops it).

    Example:
        >>> import keras
        >>> inputs = keras.Input((224, 224, 3))
        >>> x = keras.layers.ZeroPadding2D(3, name="pad")(inputs)
        >>> x = keras.layers.Conv2D(8, 7, strides=2, name="conv1")(x)
        >>> receptive_field(keras.Model(inputs, x), "conv1")
        ReceptiveField(size=(7, 7), jump=(2, 2), offset=(-3, -3))
    """
    segments = split_path(path)
    if segments[-1] != INPUT:
        resolve_path(model, path)  # raises a helpful error for a wrong path
    fields = _walk(model)
    if path not in fields:
        raise ValueError(f"Path {path!r} is not on the graph of model {model.name!r}.")
    field = fields[path]
    if isinstance(field, str):
        raise ValueError(f"Path {path!r} has no receptive field: {field}.")
    return field
