"""A layer table that opens every residual block: `keras_residual.summary(model)`.

Keras' `model.summary()` shows a `Residual` as one row (also with
`expand_nested=True`: a wrapper is not a nested model). `summary` lists the
same layers and, below each block, its parts in call order -- the
pre-activation, the branch `F` (with the layers of a branch that is itself
a model or a block), the shortcut `h`, the merge and the activation of
`y = activation(merge(h(x), F(x)))` (He et al. 2015, Eq. 1 and Fig. 2;
the pre-activation of He et al. 2016, Fig. 4e) -- each with its output
shape and parameter count. The parts come from the block's own description
(`Residual.parts()`), followed with shapes only; nothing is run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras

from keras_residual import graph
from keras_residual.residual import Residual

Shape = tuple | None


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One line of `summary`.

    Attributes:
        depth: int. 0 for the model's own layers, one more per level inside
            a block or a nested model.
        role: str. "" for a layer of a model; inside a block "preactivation",
            "branch", "shortcut", "merge", "activation" or "lesion state".
        name: str. The layer's name ("identity" for an identity shortcut,
            the function's name for an activation).
        kind: str. The layer's class name ("" for parts without a layer).
        output_shape: tuple or None. Output shape with the batch axis; None
            where it is not defined (a layer called more than once).
        params: int. Number of weight scalars the part owns.
    """

    depth: int
    role: str
    name: str
    kind: str
    output_shape: Shape
    params: int


def _params(layer: keras.layers.Layer) -> int:
    return sum(math.prod(weight.shape) for weight in layer.weights)


def _output_shape(layer: keras.layers.Layer, shape: Shape) -> Shape:
    """What `layer` outputs for input `shape` (None where Keras cannot tell)."""
    if shape is None:
        return None
    try:
        return graph.output_shape(layer, shape, layer.compute_dtype)
    except Exception:  # an unknown shape is shown as such, not raised
        return None


def _tensor_shape(layer: keras.layers.Layer, attr: str) -> Shape:
    """`layer.input.shape` / `layer.output.shape`; None if undefined (unbuilt or shared)."""
    try:
        tensor = getattr(layer, attr)
    except (AttributeError, ValueError):
        return None
    if isinstance(tensor, (list, tuple)):
        return None
    return tuple(tensor.shape)


def _built_input_shape(layer: keras.layers.Layer) -> Shape:
    """The input shape `layer` was built with (`get_build_config`), batch axis as None.

    A layer called inside a subclassed model, or inside a block, has no
    graph node to read its input from, but Keras records what it was built for.
    """
    try:
        shape = (layer.get_build_config() or {}).get("input_shape")
    except Exception:  # a layer whose build config is not a single shape
        return None
    if not isinstance(shape, (list, tuple)) or not shape or isinstance(shape[0], (list, tuple)):
        return None
    return (None, *shape[1:])


class _PartShapes(keras.layers.Layer):
    """Runs a block's parts (`Residual.run_part`) in a shape-only trace and records each output.

    `compute_output_spec` traces `call` with the backend's symbolic tensors,
    so the block's sub-layers get no graph nodes and nothing is computed:
    the part shapes Keras derives, also for a branch that takes more than
    one input (a self-attention branch reads x as query and value).
    """

    def __init__(self, run: Callable):
        super().__init__()
        self._run = run

    def call(self, x):
        return self._run(x)


def _traced_part_shapes(block: Residual, in_shape: Shape) -> dict[str, Shape]:
    """Output shape of each of `block`'s parts by value name ("branch", "merged", ...), or {}."""
    if in_shape is None:
        return {}
    shapes: dict[str, Shape] = {}

    def apply(part, inputs):
        out = block.run_part(part, inputs)
        shapes[part.output] = (None, *tuple(out.shape)[1:])
        return out

    try:
        _PartShapes(lambda x: block.wire(x, apply)).compute_output_spec(
            keras.KerasTensor(in_shape, dtype=block.compute_dtype))
    except Exception:  # shapes are shown where Keras can derive them, never raised
        return {}
    return shapes


def _is_container(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.Model) and hasattr(layer, "layers")


def _activation_name(activation: Callable) -> str:
    return getattr(activation, "__name__", type(activation).__name__)


def _layer_rows(layer: keras.layers.Layer, depth: int, role: str, in_shape: Shape,
                out_shape: Shape) -> list[SummaryRow]:
    """The row of `layer` and, for a block or a nested model, the rows inside it."""
    rows = [SummaryRow(depth, role, layer.name, type(layer).__name__, out_shape, _params(layer))]
    if isinstance(layer, Residual):
        rows.extend(_block_rows(layer, depth + 1, in_shape))
    elif isinstance(layer, keras.Sequential):
        shape = in_shape
        for child in layer.layers:
            out = _tensor_shape(child, "output") or _output_shape(child, shape)
            rows.extend(_layer_rows(child, depth + 1, "", shape, out))
            shape = out
    elif _is_container(layer):
        rows.extend(_container_rows(layer, depth + 1))
    return rows


def _container_rows(model: keras.Model, depth: int) -> list[SummaryRow]:
    rows = []
    for layer in model.layers:
        # A subclassed model's layers have no graph nodes: the shape they were built with.
        in_shape = _tensor_shape(layer, "input") or _built_input_shape(layer)
        out_shape = _tensor_shape(layer, "output") or _output_shape(layer, in_shape)
        rows.extend(_layer_rows(layer, depth, "", in_shape, out_shape))
    return rows


def _block_rows(block: Residual, depth: int, in_shape: Shape) -> list[SummaryRow]:
    """The parts of `block` in call order (its description), fed with input shape `in_shape`."""
    rows = []
    traced: dict[str, Shape] | None = None

    def part_shape(part, shape):
        nonlocal traced
        out = _output_shape(part.layer, shape)
        if out is None and shape is not None:  # e.g. attention: query and value
            traced = _traced_part_shapes(block, in_shape) if traced is None else traced
            out = traced.get(part.output)
        return out

    def apply(part, shapes):
        shape = shapes[0]
        if part.role == "merge":
            out = shapes[1] if "branch" in part.inputs else shape
            out = shape if out is None else out
            rows.append(SummaryRow(depth, "merge", part.layer.name, type(part.layer).__name__,
                                   out, _params(part.layer)))
            return out
        if part.role == "activation":
            name = _activation_name(part.layer)
            if name != "linear":
                rows.append(SummaryRow(depth, "activation", name, "", shape, 0))
            return shape
        if part.passes_input:
            rows.append(SummaryRow(depth, part.role, "identity", "", shape, 0))
            return shape
        out = part_shape(part, shape)
        rows.extend(_layer_rows(part.layer, depth, part.role, shape, out))
        return out

    block.wire(in_shape, apply)
    state = block.lesion_state
    if state is not None:
        rows.append(SummaryRow(depth, "lesion state", "lesion_state", "Variable", None,
                               math.prod(state.shape)))
    return rows


def summary_rows(model: keras.layers.Layer) -> list[SummaryRow]:
    """The rows `summary` prints: every layer, and the parts inside every block.

    Args:
        model: keras.Model or Residual. A built functional or Sequential
            model, or one block called on an input.

    Returns:
        list of SummaryRow, in layer order, each block followed by its parts.

    Raises:
        ValueError: if `model` is not built.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8,))
        >>> outputs = Residual(keras.layers.Dense(8, name="fc"), name="block")(inputs)
        >>> [(row.role, row.name, row.params)
        ...  for row in summary_rows(keras.Model(inputs, outputs))[1:]]
        [('', 'block', 72), ('branch', 'fc', 72), ('shortcut', 'identity', 0), ('merge', 'merge', 0)]
    """
    if not model.built:
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is not built, so its layers have no "
            "shapes yet: build it with keras.Input (or call it once on data) before "
            f"summarizing it. Received: model={model.name!r} (built=False)"
        )
    if isinstance(model, Residual):
        in_shape = _tensor_shape(model, "input") or _built_input_shape(model)
        return _layer_rows(model, 0, "", in_shape,
                           _tensor_shape(model, "output") or _output_shape(model, in_shape))
    if not _is_container(model):
        raise TypeError(
            "`summary` takes a functional or Sequential keras.Model or a Residual block. "
            f"Received: {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        shape = tuple(model.inputs[0].shape) if model.inputs else None
        return _layer_rows(model, -1, "", shape, None)[1:]
    return _container_rows(model, 0)


def _format_shape(shape: Shape) -> str:
    return "?" if shape is None else str(tuple(shape))


def summary(
    model: keras.layers.Layer, print_fn: Callable[[str], Any] | None = None
) -> None:
    """Print the layers of `model` with the parts inside every residual block.

    Like `model.summary()` (name, class, output shape, parameters; totals at
    the end), but each `Residual` row is followed by its parts, indented:
    `preactivation`, `branch` (and the layers of a branch that is a model or
    another block), `shortcut` (`identity` when there is no shortcut layer),
    `merge` and `activation`; a lesion-ready block also shows its
    lesion-state variable (Veit et al. 2016, Sec. 4). The parts' parameters
    add up to the block's.

    Args:
        model: keras.Model or Residual. A built functional or Sequential
            model, or a block called on an input.
        print_fn: callable or None. Called with the whole table as one
            string; None prints it.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8, 8, 4), name="input_layer")
        >>> x = Residual(keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        ...              activation="relu", name="block")(inputs)
        >>> summary(keras.Model(inputs, x, name="net"))
        Model: "net"
        layer (type)              output shape     params
        -------------------------------------------------
        input_layer (InputLayer)  (None, 8, 8, 4)       0
        block (Residual)          (None, 8, 8, 4)     148
          branch: conv (Conv2D)   (None, 8, 8, 4)     148
          shortcut: identity      (None, 8, 8, 4)       0
          merge (AddMerge)        (None, 8, 8, 4)       0
          activation: relu        (None, 8, 8, 4)       0
        -------------------------------------------------
        Total params: 148 (trainable: 148, non-trainable: 0)
    """
    rows = summary_rows(model)
    cells = []
    for row in rows:
        # A part named after its role ("merge", "shortcut") is shown once.
        label = row.name if not row.role else row.role if row.name == row.role else (
            f"{row.role}: {row.name}"
        )
        if row.kind:
            label += f" ({row.kind})"
        shape = "" if row.role == "lesion state" else _format_shape(row.output_shape)
        cells.append(("  " * row.depth + label, shape, f"{row.params:,}"))
    header = ("layer (type)", "output shape", "params")
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(3)]

    def line(cell):
        return f"{cell[0].ljust(widths[0])}  {cell[1].ljust(widths[1])}  {cell[2].rjust(widths[2])}"

    rule = "-" * len(line(header))
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    non_trainable = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    text = "\n".join([
        f'Model: "{model.name}"', line(header).rstrip(), rule,
        *(line(cell).rstrip() for cell in cells), rule,
        f"Total params: {trainable + non_trainable:,} "
        f"(trainable: {trainable:,}, non-trainable: {non_trainable:,})",
    ])
    (print_fn or print)(text)
