"""Feature extraction at any layer, including layers inside a residual block.

A *path* names a tensor of a model as segments joined by "/":

- a layer name selects that layer of the current model (functional or
  Sequential) and stands for its output: `"conv5_block2"`;
- after a `Residual` block, a keyword selects one of its parts:
  `"branch"` (the wrapped layer `F`, fed with the pre-activated input),
  `"shortcut"` (`h(x)`; for an identity shortcut, the tensor it passes on),
  `"preactivation"` (the pre-activated input, when the block has one);
- after any layer, `"input"` selects the tensor that layer receives.

Segments chain to any depth: `"conv5_block2/branch/conv5_block2_3_conv"` is
the last convolution of the branch of block `conv5_block2` (Chu et al. 2017, Fig. 7
compares `res5b_branch2c` with `res5b`), and `"outer/branch/branch/conv"`
reaches into a Residual nested in a Residual.

`probe(model, paths)` composes the outer graph up to a block's input with
the inner graph of its branch (DESIGN.md, "Nested paths"): the same layer
instances are called on new symbolic tensors, so the probe shares the
model's weights and the model itself is not modified.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_residual.residual import Residual

#: Keywords that select a part of a `Residual` block.
RESIDUAL_PARTS = ("branch", "shortcut", "preactivation")
#: Keyword that selects the input of any layer.
INPUT = "input"

#: Ends every error about a path that does not exist.
LIST_PATHS_HINT = "keras_residual.list_paths(model) lists every valid path."

#: `hook(layer, args, kwargs) -> outputs` calls one layer on symbolic tensors.
CallHook = Callable[..., Any]


def split_path(path: str) -> tuple[str, ...]:
    """Splits `"a/branch/b"` into `("a", "branch", "b")`, rejecting empty segments."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"A layer path must be a non-empty string. Received: path={path!r}")
    segments = tuple(path.split("/"))
    if any(not s for s in segments):
        raise ValueError(
            f"Layer path {path!r} has an empty segment; write segments joined by "
            "single slashes, e.g. 'conv5_block2/branch/conv5_block2_3_conv'."
        )
    return segments


def is_container(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a functional or Sequential model whose graph can be walked."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")
    )


def _children(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [
        child for child in getattr(layer, "layers", [])
        if not isinstance(child, keras.layers.InputLayer)
    ]


def _child(layer: keras.layers.Layer, segment: str, path: str) -> keras.layers.Layer:
    """The layer one segment below `layer`."""
    if isinstance(layer, Residual) and segment in RESIDUAL_PARTS:
        part = {
            "branch": layer.layer,
            "shortcut": layer.shortcut_layer,
            "preactivation": layer.preactivation_layer,
        }[segment]
        if part is None:
            raise ValueError(
                f"Residual {layer.name!r} has no {segment} layer (its {segment} is the "
                f"identity), so path {path!r} cannot go below it. {LIST_PATHS_HINT} "
                f"Received: path={path!r}"
            )
        return part
    if is_container(layer):
        for child in _children(layer):
            if child.name == segment:
                return child
        names = [c.name for c in _children(layer)]
        close = difflib.get_close_matches(segment, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Model {layer.name!r} has no layer named {segment!r} (path {path!r}).{hint} "
            f"Its layers are: {names}. {LIST_PATHS_HINT}"
        )
    if isinstance(layer, Residual):
        raise ValueError(
            f"After the Residual block {layer.name!r}, path {path!r} must continue with "
            f"one of {RESIDUAL_PARTS} or {INPUT!r}. {LIST_PATHS_HINT} "
            f"Received segment: {segment!r}"
        )
    above = path.rpartition(f"/{segment}")[0]
    named = f"Path {above!r} names layer" if above else "Layer"
    fix = f": use {above!r} for that layer" if above else ""
    raise ValueError(
        f"{named} {layer.name!r} ({type(layer).__name__}), which has no sub-layers, so "
        f"path {path!r} cannot continue with {segment!r}{fix}. {LIST_PATHS_HINT}"
    )


def resolve_path(model: keras.layers.Layer, path: str) -> keras.layers.Layer:
    """The layer that a path names (see the module docstring for the grammar).

    Args:
        model: keras.Model or keras.layers.Layer. Where the path starts.
        path: str. Segments joined by "/", e.g. `"block/branch/conv"`.

    Returns:
        The layer instance (shared with `model`, not a copy).

    Raises:
        ValueError: if a segment does not exist, or the path ends in
            `"input"` (a tensor, not a layer).

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> branch = keras.Sequential([keras.layers.Dense(4, name="fc")], name="f")
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, Residual(branch, name="block")(inputs))
        >>> resolve_path(model, "block/branch/fc").name
        'fc'
    """
    segments = split_path(path)
    if segments[-1] == INPUT:
        raise ValueError(
            f"Path {path!r} names the input tensor of a layer, not a layer; drop the "
            f"trailing '/{INPUT}' to get the layer."
        )
    layer = model
    for segment in segments:
        layer = _child(layer, segment, path)
    return layer


def list_paths(model: keras.layers.Layer, prefix: str = "") -> list[str]:
    """Every layer path of `model`, parents before children, in layer order.

    Residual blocks list their parts (`block/preactivation`, `block/branch`,
    `block/shortcut`) and, below them, the layers of nested models and blocks.
    Any path can also be followed by "/input".

    Args:
        model: keras.Model or keras.layers.Layer.
        prefix: str. Prepended to every path (used for the recursion).

    Returns:
        list of str.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((4,))
        >>> x = Residual(keras.layers.Dense(4, name="fc"), name="block")(inputs)
        >>> list_paths(keras.Model(inputs, x))
        ['block', 'block/branch']
    """
    paths = []
    for name, layer in _named_parts(model):
        path = f"{prefix}{name}"
        paths.append(path)
        paths.extend(list_paths(layer, prefix=f"{path}/") if layer is not None else [])
    return paths


def _named_parts(layer: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer | None]]:
    if isinstance(layer, Residual):
        parts = []
        if layer.preactivation_layer is not None:
            parts.append(("preactivation", layer.preactivation_layer))
        parts.append(("branch", layer.layer))
        if layer.shortcut_layer is not None:  # identity and "none" have no layer
            parts.append(("shortcut", layer.shortcut_layer))
        return parts
    if is_container(layer):
        return [(child.name, child) for child in _children(layer)]
    return []


def trace(container: keras.Model, inputs: Any, hook: CallHook) -> Any:
    """Runs a functional or Sequential model's graph on new symbolic inputs.

    Every layer call goes through `hook(layer, *args, **kwargs)`, which must
    return the layer's outputs (calling `layer(*args, **kwargs)` or anything
    equivalent). The layers are not copied.

    Args:
        container: a functional or Sequential keras.Model.
        inputs: KerasTensor(s) with the structure of `container.input`.
        hook: callable. Called once per layer call, in topological order.

    Returns:
        The container's outputs on `inputs`.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> names = []
        >>> def hook(layer, *args, **kwargs):
        ...     names.append(layer.name)
        ...     return layer(*args, **kwargs)
        >>> out = trace(model, keras.Input((3,)), hook)
        >>> names
        ['fc']
    """
    if isinstance(container, keras.Sequential):
        x = inputs
        for layer in _children(container):
            x = hook(layer, x)
        return x
    if not is_container(container):
        raise ValueError(
            f"Cannot walk the graph of {container.name!r} ({type(container).__name__}): "
            "only functional and Sequential models have one. Build the model with the "
            "functional API or keras.Sequential."
        )
    # Keras has no public "run this graph on these tensors" call:
    # clone_model re-wires its result behind new tensors when the inputs are
    # not keras.Input tensors. Functional's graph runner is the one private
    # hook used here; `operation_fn` exists under this name since Keras 3.0.
    return container._run_through_graph(
        inputs, operation_fn=lambda layer: functools.partial(hook, layer)
    )


def fresh_inputs(model: keras.Model) -> Any:
    """New keras.Input tensors shaped like the inputs of `model`, in its input structure."""
    if not getattr(model, "inputs", None):
        raise ValueError(
            f"Model {model.name!r} has no defined inputs yet: build it with keras.Input "
            "(or call it once on data) before probing it."
        )
    # A Sequential model was never called itself, so only `inputs` is defined.
    structure = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    return keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), structure
    )


def _single(args: tuple, layer: keras.layers.Layer) -> Any:
    flat = keras.tree.flatten(args)
    if len(flat) != 1:
        raise ValueError(
            f"Layer {layer.name!r} receives {len(flat)} tensors; a path through it must "
            "name a single-input layer."
        )
    return flat[0]


class _Prober:
    """Calls layers on symbolic tensors, descending only where a path asks to."""

    def call(self, layer, args, kwargs, wanted, prefix):
        """Returns `(outputs, found)`: found maps each wanted sub-path to its tensor."""
        found = {}
        if (INPUT,) in wanted:
            found[(INPUT,)] = args[0] if len(args) == 1 else list(args)
        below = {w for w in wanted if w != (INPUT,)}
        if not below:
            return layer(*args, **kwargs), found
        if isinstance(layer, Residual):
            found.update(self._residual_parts(layer, _single(args, layer), below, prefix))
            return layer(*args, **kwargs), found
        if not is_container(layer):
            segment = min(below)[0]
            _child(layer, segment, _join(prefix + (segment,)))
        outputs, inner = self.walk(layer, args[0] if len(args) == 1 else list(args), below, prefix)
        found.update(inner)
        return outputs, found

    def walk(self, container, inputs, wanted, prefix):
        """Traces `container`, collecting the tensors of the wanted sub-paths."""
        by_child = _group(wanted)
        calls = {}
        found = {}

        def hook(layer, *args, **kwargs):
            sub = by_child.get(layer.name)
            if sub is None:
                return layer(*args, **kwargs)
            calls[layer.name] = calls.get(layer.name, 0) + 1
            if calls[layer.name] > 1:
                raise ValueError(
                    f"Layer {_join(prefix + (layer.name,))!r} is called more than once in "
                    f"{container.name!r}, so a path to it is ambiguous."
                )
            deeper = {s for s in sub if s}
            outputs, inner = self.call(layer, args, kwargs, deeper, prefix + (layer.name,))
            if () in sub:
                found[(layer.name,)] = outputs
            found.update({(layer.name,) + key: value for key, value in inner.items()})
            return outputs

        outputs = trace(container, inputs, hook)
        for name in sorted(set(by_child) - set(calls)):
            _child(container, name, _join(prefix + (name,)))
            raise ValueError(
                f"Layer {_join(prefix + (name,))!r} is not on the graph of model "
                f"{container.name!r} between its inputs and outputs."
            )
        return outputs, found

    def _residual_parts(self, block, x, wanted, prefix):
        by_part = _group(wanted)
        for segment in by_part:
            if segment not in RESIDUAL_PARTS:
                _child(block, segment, _join(prefix + (segment,)))
        found = {}

        def part(name, layer, tensor):
            sub = by_part.get(name, set())
            deeper = {s for s in sub if s}
            if layer is None:
                # An identity part passes its tensor on; it has nothing below it.
                if deeper:
                    _child(block, name, _join(prefix + (name,) + min(deeper)))
                out = tensor
            else:
                out, inner = self.call(layer, (tensor,), {}, deeper, prefix + (name,))
                found.update({(name,) + key: value for key, value in inner.items()})
            if () in sub:
                found[(name,)] = out
            return out

        pre = part("preactivation", block.preactivation_layer, x)
        if "branch" in by_part:
            part("branch", block.layer, pre)
        if "shortcut" in by_part:
            if block.shortcut == "none":
                raise ValueError(
                    f"Residual {block.name!r} has shortcut='none', so path "
                    f"{_join(prefix + ('shortcut',))!r} names nothing."
                )
            part("shortcut", block.shortcut_layer, x if block.shortcut_from == "input" else pre)
        return found


def _join(segments: tuple[str, ...]) -> str:
    return "/".join(segments)


def _group(wanted: set[tuple[str, ...]]) -> dict[str, set[tuple[str, ...]]]:
    """Groups sub-paths by their first segment: {"a": {(), ("b",)}} for a and a/b."""
    groups: dict[str, set[tuple[str, ...]]] = {}
    for path in wanted:
        groups.setdefault(path[0], set()).add(path[1:])
    return groups


def probe(model: keras.Model, paths: str | Sequence[str]) -> keras.Model:
    """A model that outputs the tensors at the given layer paths.

    Reproduces the feature extraction behind Chu et al.'s (2017) figures: the outputs
    of blocks (`res5b`) and of layers inside their branches
    (`res5b_branch2c`, Fig. 7, and future work 1). The probe shares the
    layers and weights of `model`, which is left unchanged.

    Args:
        model: keras.Model. A functional or Sequential model with defined
            inputs.
        paths: str or sequence of str. Layer paths (module docstring). A
            string gives a model with one output; a sequence gives a list of
            outputs in the same order.

    Returns:
        keras.Model with the inputs of `model`.

    Raises:
        ValueError: if a path does not name a tensor of `model`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> branch = keras.Sequential([keras.layers.Dense(4, name="fc1"),
        ...                            keras.layers.Dense(4, name="fc2")], name="f")
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, Residual(branch, name="block")(inputs))
        >>> p = probe(model, ["block", "block/branch/fc1"])
        >>> [tuple(o.shape) for o in p.outputs]
        [(None, 4), (None, 4)]
    """
    single = isinstance(paths, str)
    path_list = [paths] if single else list(paths)
    if not path_list:
        raise ValueError("`paths` must name at least one layer. Received: paths=[]")
    keys = [split_path(p) for p in path_list]
    inputs = fresh_inputs(model)
    if any(key == (INPUT,) for key in keys):
        raise ValueError(
            "Path 'input' names the model's input; use model.inputs instead, or "
            "'<layer>/input' for the input of a layer."
        )
    _, found = _Prober().walk(model, inputs, set(keys), ())
    outputs = [found[key] for key in keys]
    return keras.Model(inputs, outputs[0] if single else outputs, name=f"probe_{model.name}")
