"""The architecture table of He et al. (2015), Table 1 (as drawn by Ruiz 2018, "Understanding and visualizing ResNets", Fig. 2), from a built model.

Per stage: output size, block shape ("[3x3, 64; 3x3, 64] x 3"), parameters
and multiply-adds; totals at the bottom. Multiply-adds are counted from the
built layers' shapes, the way the paper counts "FLOPs": convolutions
(grouped and depthwise included, strides through the output size), dense and
recurrent layers; normalization, activations, pooling and additions are not
counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import keras
from keras import layers

from keras_residual import graph
from keras_residual.residual import Residual

_STAGE = re.compile(r"^conv(\d+)(_block\d+)?(?:_|$)")


@dataclass
class StageRow:
    """One row of the architecture table.

    Attributes:
        name: "conv1", "conv2_x", ..., or "head".
        output_size: spatial size of the row's output, e.g. "56x56".
        block_shape: the layers, e.g. "[3x3, 64; 3x3, 64] x 3".
        params: parameters of the row's layers (as `count_params()`).
        mult_adds: multiply-adds per example.

    Example:
        >>> from keras_residual.models import StageRow
        >>> row = StageRow("conv2_x", "56x56", "[3x3, 64; 3x3, 64] x 3", params=221952)
        >>> row.name, row.params
        ('conv2_x', 221952)
    """

    name: str
    output_size: str
    block_shape: str
    params: int = 0
    mult_adds: int = 0


@dataclass
class ArchitectureTable:
    """Rows per stage and totals; `str(table)` prints it.

    Attributes:
        model_name: the model's name.
        rows: the `StageRow`s, input to output.
        total_params: `model.count_params()`.
        total_mult_adds: multiply-adds per example of the whole model.

    Example:
        `architecture_table(model)` fills one from a built model; by hand:

        >>> from keras_residual.models import ArchitectureTable, StageRow
        >>> table = ArchitectureTable("tiny", [
        ...     StageRow("conv1", "8x8", "3x3, 16", params=448, mult_adds=27648),
        ...     StageRow("head", "1x1", "10-d fc", params=170, mult_adds=160)], 618, 27808)
        >>> print(table.to_string())
        layer name  output size  tiny     params  mult-adds
        ---------------------------------------------------
        conv1       8x8          3x3, 16     448   2.76e+04
        head        1x1          10-d fc     170   1.60e+02
        ---------------------------------------------------
        total                                618   2.78e+04
    """

    model_name: str
    rows: list[StageRow] = field(default_factory=list)
    total_params: int = 0
    total_mult_adds: int = 0

    def to_string(self) -> str:
        """The table as aligned text, totals in the last line."""
        header = ("layer name", "output size", self.model_name, "params", "mult-adds")
        lines = [
            (r.name, r.output_size, r.block_shape, f"{r.params:,}", f"{r.mult_adds:.2e}")
            for r in self.rows
        ]
        lines.append(("total", "", "", f"{self.total_params:,}", f"{self.total_mult_adds:.2e}"))
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(5)]

        def fmt(row):
            cells = [str(c).ljust(w) if i < 3 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths, strict=False))]
            return "  ".join(cells).rstrip()

        rule = "-" * len(fmt(header))
        return "\n".join([fmt(header), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])

    def __str__(self) -> str:
        return self.to_string()


def _leaf_mult_adds(layer: layers.Layer, in_shape: tuple, out_shape: tuple) -> int:
    if isinstance(layer, layers.RNN):
        cell = layer.cell
        per_step = math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape)
        return int(in_shape[1]) * per_step
    if isinstance(layer, layers.Bidirectional):
        return sum(
            _leaf_mult_adds(rnn, in_shape, out_shape)
            for rnn in (layer.forward_layer, layer.backward_layer)
        )
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    outputs = math.prod(out_shape[1:])
    if isinstance(layer, layers.DepthwiseConv2D):
        return outputs * math.prod(kernel.shape[:2])
    # Conv (grouped too: the kernel holds in/groups channels) and Dense: each
    # output element costs one multiply-add per kernel entry of its filter.
    return outputs * math.prod(kernel.shape[:-1])


def _block_walk(block: Residual, in_shape: tuple) -> tuple[tuple, int]:
    """Output shape and multiply-adds of a block, following its description (`parts()`)."""
    total = 0

    def apply(part, shapes):
        nonlocal total
        if part.passes_input or part.role == "activation":
            return shapes[0]
        out, count = _walk(part.layer, shapes[0])
        total += count
        if part.role == "merge":  # a gate computes on the shortcut's (= branch's) size
            return shapes[1] if "branch" in part.inputs else shapes[0]
        return out

    return block.wire(in_shape, apply), total


def _walk(layer: layers.Layer, in_shape: tuple) -> tuple[tuple, int]:
    """Output shape and multiply-adds of `layer` (nested layers included) on `in_shape`."""
    if isinstance(layer, Residual):
        return _block_walk(layer, in_shape)
    if isinstance(layer, keras.Sequential):
        shape, total = in_shape, 0
        for inner in graph.sublayers(layer):
            shape, count = _walk(inner, shape)
            total += count
        return shape, total
    if isinstance(layer, keras.Model):
        total = sum(_walk(inner, tuple(inner.input.shape))[1] for inner in graph.sublayers(layer))
        return tuple(layer.compute_output_shape(in_shape)), total
    out = graph.output_shape(layer, in_shape, layer.compute_dtype)
    own = _leaf_mult_adds(layer, in_shape, out)
    inner = graph.sublayers(layer) if not isinstance(layer, (layers.RNN, layers.Wrapper)) else []
    if own or not inner:
        return out, own
    # A layer made of layers (a shortcut's conv and BN, a merge's gate): each
    # weighted one produces the output size.
    return out, sum(_leaf_mult_adds(sub, in_shape, out) for sub in graph.walk(layer, False))


def count_mult_adds(model: keras.Model) -> int:
    """Multiply-adds per example of a built functional model, counted from its layers.

    Counts convolutions (grouped, depthwise, strided), dense and recurrent
    layers, including those nested in `Residual` branches and shortcuts, as
    He et al. (2015), Table 1 count "FLOPs". The model needs fixed spatial
    input sizes.

    Args:
        model: keras.Model. A functional model.

    Returns:
        An int.

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> m = keras.Model(inputs, keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs))
        >>> count_mult_adds(m)  # 4x4 outputs x 4 filters x 3x3x3 kernel
        1728
    """
    return sum(row.mult_adds for row in architecture_table(model).rows)


def _describe_kernel(layer: layers.Layer) -> str | None:
    if isinstance(layer, (layers.RNN, layers.Bidirectional)):
        return f"{type(layer).__name__}, {layer.units if hasattr(layer, 'units') else ''}".rstrip(", ")
    if isinstance(layer, layers.Dense):
        return f"fc, {layer.units}"
    kernel_size = getattr(layer, "kernel_size", None)
    if kernel_size is None or getattr(layer, "kernel", None) is None:
        return None
    text = f"{'x'.join(map(str, kernel_size))}, {getattr(layer, 'filters', None) or 'depthwise'}"
    if getattr(layer, "groups", 1) > 1:
        text += f", C={layer.groups}"
    return text


def _branch_kernels(layer: layers.Layer) -> list[str]:
    if isinstance(layer, Residual):
        return _branch_kernels(layer.layer)
    if isinstance(layer, keras.Model):
        return [d for inner in graph.sublayers(layer) for d in _branch_kernels(inner)]
    description = _describe_kernel(layer)
    return [description] if description else []


def _describe(layer: layers.Layer) -> str | None:
    """How one top-level layer reads in the table, or None for BN, ReLU, padding..."""
    if isinstance(layer, Residual):
        return "[" + "; ".join(_branch_kernels(layer)) + "]"
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        kind = "max" if isinstance(layer, layers.MaxPooling2D) else "average"
        return f"{'x'.join(map(str, layer.pool_size))} {kind} pool, stride {layer.strides[0]}"
    if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
        return "global " + ("average" if "Average" in type(layer).__name__ else "max") + " pool"
    if isinstance(layer, layers.Dense):
        activation = getattr(layer.activation, "__name__", "")
        return f"{layer.units}-d fc" + (f", {activation}" if activation not in ("linear", "") else "")
    text = _describe_kernel(layer)
    strides = getattr(layer, "strides", (1,))
    if text and max(strides) > 1:
        text += f", stride {strides[0]}"
    return text


def _group(descriptions: list[str]) -> str:
    """Consecutive equal entries as "entry x n", joined with ", "."""
    parts: list[list] = []
    for text in descriptions:
        if parts and parts[-1][0] == text:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    return ", ".join(text if n == 1 else f"{text} x {n}" for text, n in parts)


def _size(shape: tuple, data_format: str) -> str:
    if len(shape) <= 2:
        return "1x1"
    dims = shape[2:] if data_format == "channels_first" else shape[1:-1]
    return "x".join(str(d) for d in dims)


def _row_keys(model_layers: list[layers.Layer]) -> list[str]:
    """The table row of each top-level layer (see `architecture_table`)."""
    named: list[str | None] = []
    stage, last_size = 0, None
    for layer in model_layers:
        match = _STAGE.match(layer.name)
        if match:
            named.append(f"conv{match.group(1)}" + ("_x" if match.group(2) else ""))
        elif isinstance(layer, Residual):
            size = tuple(layer.output.shape[1:-1])
            if size != last_size:
                stage, last_size = stage + 1, size
            named.append(f"stage{stage}")
        else:
            named.append(None)
    last = max((i for i, key in enumerate(named) if key), default=-1)
    keys: list[str] = []
    for i, (layer, key) in enumerate(zip(model_layers, named, strict=False)):
        if key is None and i > last:
            key = "head"
        elif key is None:
            # Pooling and padding open the next stage (Table 1 lists the 3x3 max
            # pool under conv2_x); BN and ReLU close the previous one.
            opens = isinstance(
                layer, (layers.ZeroPadding2D, layers.MaxPooling2D, layers.AveragePooling2D)
            )
            following = next(k for k in named[i + 1:] if k)
            key = following if opens or not keys else keys[-1]
        keys.append(key)
    return keys


def architecture_table(model: keras.Model) -> ArchitectureTable:
    """He et al. (2015) Table 1 for a built model: per stage, size, blocks, params, multiply-adds.

    Rows follow the name grammar: `conv1_*` is "conv1", `conv{k}_block{i}` is
    "conv{k}_x" (pooling and padding before a stage open it, as the 3x3 max
    pool opens conv2_x in Table 1), and everything after the last stage is
    "head". Residual blocks with other names are grouped into "stage{k}"
    rows by output size. Multiply-adds are counted from the built layers
    (see `count_mult_adds`).

    Args:
        model: keras.Model. A functional model with fixed input sizes.

    Returns:
        An `ArchitectureTable`; `print(table)` shows it.

    Example:
        >>> from keras_residual.models import resnet34
        >>> table = architecture_table(resnet34())
        >>> [(r.name, r.output_size) for r in table.rows][:2]
        [('conv1', '112x112'), ('conv2_x', '56x56')]
        >>> table.rows[1].block_shape
        '3x3 max pool, stride 2, [3x3, 64; 3x3, 64] x 3'
        >>> round(table.total_mult_adds / 1e9, 1)
        3.7
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        raise ValueError(f"architecture_table needs a functional keras.Model. Received: {model!r}")
    model_layers = graph.sublayers(model)
    for layer in model_layers:
        shape = tuple(layer.input.shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"Layer {layer.name!r} sees input shape {shape}: multiply-adds need fixed "
                "sizes. Build the model with a full input_shape, e.g. (224, 224, 3)."
            )
    data_format = keras.config.image_data_format()
    rows: dict[str, StageRow] = {}
    descriptions: dict[str, list[str]] = {}
    for layer, key in zip(model_layers, _row_keys(model_layers), strict=False):
        out, mult_adds = _walk(layer, tuple(layer.input.shape))
        layer_format = getattr(layer, "data_format", None) or data_format
        row = rows.setdefault(key, StageRow(key, "", ""))
        row.output_size = _size(out, layer_format)
        row.params += layer.count_params()
        row.mult_adds += mult_adds
        text = _describe(layer)
        if text:
            descriptions.setdefault(key, []).append(text)
    for key, row in rows.items():
        row.block_shape = _group(descriptions.get(key, []))
    return ArchitectureTable(
        model_name=model.name,
        rows=list(rows.values()),
        total_params=model.count_params(),
        total_mult_adds=sum(r.mult_adds for r in rows.values()),
    )
