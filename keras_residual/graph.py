"""The one place that walks Keras graphs, on public Keras API.

Every tool of keras_residual that needs the structure of a model asks here:

- `sublayers(layer)` / `walk(layer)`: the layers inside a layer (a model's
  layers, a wrapper's layer, a `Residual`'s parts from its own description
  `Residual.parts()`), and all of them recursively;
- `blocks(model, nested=...)`: the `Residual` blocks, in network order;
- `trace(container, inputs, hook)`: run a functional or Sequential model's
  graph on new symbolic tensors with every layer call going through `hook`,
  which may capture tensors anywhere inside (nested models and blocks too);
- `rebuild(model, replace)` and `clone(model)`: a new model over the same
  layers with some calls replaced, or an independent copy with the same
  weights, copied by variable path (never by order);
- paths: `split_path`, `resolve_path`, `list_paths` (the grammar of
  `keras_residual.probe`) and `variable_paths` / `copy_weights`.

A path names a tensor of a model as segments joined by "/": a layer name
selects that layer of the current model and stands for its output; after a
`Residual` block a role keyword selects one of its parts (`"branch"`,
`"shortcut"`, `"preactivation"`); after any layer `"input"` selects the
tensor the layer receives. `"conv5_block2/branch/conv5_block2_3_conv"` is the
last convolution in the branch of block `conv5_block2` (Chu et al. 2017,
Fig. 7).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
from keras import layers

from keras_residual.residual import Residual, output_shape  # noqa: F401  (output_shape: one copy)

#: Keywords that select a part of a `Residual` block in a path.
RESIDUAL_PARTS = ("branch", "shortcut", "preactivation")
#: Keyword that selects the input of any layer.
INPUT = "input"
#: Ends every error about a path that does not exist.
LIST_PATHS_HINT = "keras_residual.list_paths(model) lists every valid path."

#: `hook(layer, args, kwargs, capture) -> outputs` calls one layer on symbolic tensors.
TraceHook = Callable[..., Any]
#: `replace(layer, args, kwargs) -> outputs or None` (None: call the layer as before).
CallReplacement = Callable[[layers.Layer, tuple, dict], Any]


# ----------------------------------------------------------------- layers


def is_container(layer: layers.Layer) -> bool:
    """Whether `layer` is a functional or Sequential model whose graph can be walked.

    Example:
        >>> is_container(keras.Sequential([keras.layers.Dense(2)])), is_container(keras.layers.Dense(2))
        (True, False)
    """
    if isinstance(layer, keras.Sequential):
        return True
    # Functional models (and their subclasses, e.g. keras-hub backbones) have
    # a public `operations` list; subclassed models raise AttributeError.
    return isinstance(layer, keras.Model) and hasattr(layer, "operations")


def _tracked_sublayers(layer: layers.Layer) -> list[layers.Layer]:
    # The one private Keras name in the package. Keras has no public accessor
    # for the sub-layers a layer tracks as attributes (on PyTorch they live in
    # the torch module's `_modules`, so `vars()` misses them). Checked on
    # Keras 3.0 through 3.15 (`_flatten_layers` exists with these arguments
    # since Keras 3.0).
    return list(layer._flatten_layers(include_self=False, recursive=False))


def unique(items: Sequence[layers.Layer]) -> list[layers.Layer]:
    """`items` in order, each layer once (by identity: layers need not be hashable by value).

    Example:
        >>> dense = keras.layers.Dense(2)
        >>> len(unique([dense, dense]))
        1
    """
    seen: set[int] = set()
    return [x for x in items if not (id(x) in seen or seen.add(id(x)))]


def _block_layers(block: Residual) -> list[tuple[str, layers.Layer]]:
    """(role, layer) for the parts of `block` that are layers, in call order (`parts()`)."""
    return [(p.role, p.layer) for p in block.parts() if isinstance(p.layer, layers.Layer)]


def sublayers(layer: layers.Layer) -> list[layers.Layer]:
    """The layers directly inside `layer`, each once, in a stable order.

    A model's `layers` (no InputLayer); a `Residual`'s parts in call order,
    from its description (`Residual.parts()`); a wrapper's layer; for other
    layers the sub-layers Keras tracks (a `ProjectionShortcut`'s conv and BN).

    Example:
        >>> block = Residual(keras.layers.Dense(2, name="fc"), shortcut="projection")
        >>> _ = block(keras.ops.ones((1, 3)))
        >>> [type(child).__name__ for child in sublayers(block)]
        ['Dense', 'ProjectionShortcut', 'AddMerge']
    """
    if isinstance(layer, Residual):
        found = [part for _, part in _block_layers(layer)]
    elif isinstance(layer, keras.Model):
        found = [child for child in layer.layers if not isinstance(child, layers.InputLayer)]
    elif isinstance(layer, layers.Bidirectional):
        found = [layer.forward_layer, layer.backward_layer]
    elif isinstance(layer, layers.Wrapper):
        found = [layer.layer]
    else:
        found = _tracked_sublayers(layer)
    return unique(found)


def walk(layer: layers.Layer, include_self: bool = True) -> Iterator[layers.Layer]:
    """Every layer inside `layer`, depth first, parents before children, each once.

    Example:
        >>> inner = keras.Sequential([keras.layers.Dense(2, name="fc")], name="inner")
        >>> model = keras.Sequential([keras.Input((2,)), Residual(inner, name="block")])
        >>> [l.name for l in walk(model, include_self=False)]
        ['block', 'inner', 'fc', 'merge']
    """
    seen: set[int] = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if include_self or current is not layer:
            yield current
        stack.extend(reversed(sublayers(current)))


def blocks(model: layers.Layer, nested: bool = False) -> list[Residual]:
    """The `Residual` blocks of `model`, each once.

    Args:
        model: keras.Model or layer.
        nested: bool. False (default): the blocks of the network in network
            order, looking into nested models but not into blocks: a block
            whose branch holds more blocks counts once, as Veit et al. (2016)
            delete whole blocks. True: every `Residual` at any depth, blocks
            inside branches included, parents first.

    Returns:
        list of Residual.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), Residual(Residual(keras.layers.Dense(2)))])
        >>> len(blocks(model)), len(blocks(model, nested=True))
        (1, 2)
    """
    if nested:
        return [layer for layer in walk(model) if isinstance(layer, Residual)]
    if isinstance(model, Residual):
        return [model]
    return [layer for layer in network_layers(model) if isinstance(layer, Residual)]


def network_layers(model: layers.Layer) -> list[layers.Layer]:
    """Layers in network order, recursing into nested models but not into blocks, each once.

    Example:
        >>> inner = keras.Sequential([keras.layers.Dense(2, name="fc")], name="inner")
        >>> model = keras.Sequential([keras.Input((2,)), inner])
        >>> [layer.name for layer in network_layers(model)]
        ['fc']
    """
    found = []
    for layer in getattr(model, "layers", ()):
        found.extend(network_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return unique(found)


def residual_layers(model: layers.Layer) -> list[Residual]:
    """Every `Residual` in `model`, nested ones (inside branches, sub-models) included.

    The same as `blocks(model, nested=True)`.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), Residual(Residual(keras.layers.Dense(2)))])
        >>> len(residual_layers(model))
        2
    """
    return blocks(model, nested=True)


def find_layers(model: layers.Layer, kind: type | tuple[type, ...]) -> list[layers.Layer]:
    """Every layer of class `kind` inside `model` at any depth (`model` itself included).

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
        >>> len(find_layers(model, keras.layers.BatchNormalization))
        1
    """
    return [layer for layer in walk(model) if isinstance(layer, kind)]


# ------------------------------------------------------------------ tracing


def fresh_inputs(model: keras.Model) -> Any:
    """New keras.Input tensors shaped like the inputs of `model`, in its input structure.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> tuple(fresh_inputs(model).shape)
        (None, 3)
    """
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


def _not_a_container(container: layers.Layer) -> ValueError:
    return ValueError(
        f"Cannot walk the graph of {container.name!r} ({type(container).__name__}): "
        "only functional and Sequential models have one. Build the model with the "
        "functional API or keras.Sequential."
    )


def _output_calls(container: keras.Model) -> list[tuple[int, int]]:
    """For each output of a functional model: (index of the layer call that makes it, position).

    One plain symbolic pass on fresh `keras.Input` tensors, through
    `keras.models.clone_model(call_function=...)`: with inputs from
    `keras.Input`, the cloned outputs are the very tensors the calls return.
    """
    made: list = []

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        made.append(keras.tree.flatten(out))
        return out

    clone = keras.models.clone_model(
        container, clone_function=lambda layer: layer, call_function=call,
        input_tensors=fresh_inputs(container),
    )
    found = []
    for tensor in keras.tree.flatten(clone.output):
        found.append(next((i, j) for i, outs in enumerate(made)
                          for j, out in enumerate(outs) if out is tensor))
    return found


def trace(container: keras.Model, inputs: Any, hook: TraceHook) -> tuple[Any, dict]:
    """Runs a functional or Sequential model's graph on new symbolic inputs.

    Every layer call goes through `hook(layer, args, kwargs, capture)`, which
    must return the layer's outputs (calling `layer(*args, **kwargs)` or
    anything equivalent) and may call `capture(key, tensor)` to keep any
    tensor it sees. The layers are not copied, and `inputs` may be
    intermediate tensors of another graph (a nested model traced inside its
    parent's trace). Functional graphs are run with
    `keras.models.clone_model(call_function=...)`, public Keras API.

    Args:
        container: a functional or Sequential keras.Model.
        inputs: KerasTensor(s) with the structure of `container.input`.
        hook: callable `(layer, args, kwargs, capture) -> outputs`.

    Returns:
        `(outputs, captured)`: the container's outputs on `inputs` and the
        captured tensors, by key.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> def hook(layer, args, kwargs, capture):
        ...     capture(layer.name, args[0])
        ...     return layer(*args, **kwargs)
        >>> out, captured = trace(model, keras.Input((3,)), hook)
        >>> list(captured), tuple(out.shape)
        (['fc'], (None, 2))
    """
    captured: dict = {}
    if isinstance(container, keras.Sequential):
        x = inputs
        for layer in sublayers(container):
            x = hook(layer, (x,), {}, captured.__setitem__)
        return x, captured
    if not is_container(container):
        raise _not_a_container(container)
    where = _output_calls(container)
    made: list = []

    def call(layer, *args, **kwargs):
        out = hook(layer, args, kwargs, captured.__setitem__)
        made.append(keras.tree.flatten(out))
        return out

    structure = keras.models.clone_model(
        container, clone_function=lambda layer: layer, call_function=call, input_tensors=inputs
    ).output
    outputs = [made[i][j] for i, j in where]
    return keras.tree.pack_sequence_as(structure, outputs), captured


def output_layer(model: keras.Model) -> layers.Layer | None:
    """The layer that computes the output of `model`, looking inside nested models.

    Returns None for a model with several outputs. A functional model's
    public `operations` run from the inputs (deepest) to the outputs (depth
    0), so with one output the last operation is the one that makes it. No
    tracing: it can be called inside a compiled function.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> output_layer(model).name
        'fc'
    """
    layer = model
    while is_container(layer):
        if isinstance(layer, keras.Sequential):
            children = sublayers(layer)
            if not children:
                return None
            layer = children[-1]
            continue
        if len(keras.tree.flatten(layer.output)) != 1:
            return None
        layer = layer.operations[-1]
    return layer


# ---------------------------------------------------------------- rebuilding


def rebuild(model: keras.Model, replace: CallReplacement, batch_size: int | None = None) -> keras.Model:
    """A new functional model that runs the graph of `model` on the same layer instances.

    For every layer call, `replace(layer, args, kwargs)` may return the
    outputs to use instead (e.g. call another block, or return the input to
    remove the layer); returning None calls the layer as before. Nested
    Functional and Sequential models are rebuilt the same way.

    Args:
        model: keras.Model. A Functional or Sequential model.
        replace: callable `(layer, args, kwargs) -> outputs or None`.
        batch_size: int or None. Fixes the batch dimension of the new inputs.

    Returns:
        A functional keras.Model sharing its weights with `model`.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> same = rebuild(model, lambda layer, args, kwargs: None)
        >>> same.layers[-1] is model.layers[-1]
        True
    """

    def call_function(layer, *args, **kwargs):
        outputs = replace(layer, args, kwargs)
        if outputs is not None:
            return outputs
        if isinstance(layer, keras.Model) and is_container(layer):
            # Keep the static batch size of the tensors this sub-model receives.
            rows = keras.tree.flatten(args)[0].shape[0]
            return rebuild(layer, replace, batch_size=rows)(*args, **kwargs)
        return layer(*args, **kwargs)

    def new_input(tensor):
        return keras.Input(batch_shape=(batch_size,) + tuple(tensor.shape[1:]), dtype=tensor.dtype)

    if isinstance(model, keras.Sequential):
        inputs = new_input(model.inputs[0])
        x = inputs
        for layer in sublayers(model):
            x = call_function(layer, x)
        return keras.Model(inputs, x, name=f"{model.name}_rebuilt")
    if not is_container(model):
        raise _not_a_container(model)
    inputs = keras.tree.map_structure(new_input, model.input)
    return keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_function,
        input_tensors=inputs,
    )


def clone(
    model: keras.Model, clone_function: Callable | None = None, instead: str = "",
    weights: bool = True,
) -> keras.Model:
    """An independent copy of `model` made from its config, with the same weights.

    The weights are copied by variable path (`copy_weights`), never by order.

    Args:
        model: keras.Model. Functional or Sequential.
        clone_function: callable or None. Passed to `keras.models.clone_model`
            (recursively, into nested models), e.g. to change blocks' configs.
        instead: str. What the user can do when the model cannot be cloned;
            ends the error message.
        weights: bool. Copy the weights (True, the default) or keep the
            copy's fresh initialization (a changed architecture).

    Returns:
        The new keras.Model.

    Example:
        >>> import numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> copy = clone(model)
        >>> copy is model, np.array_equal(copy.get_weights()[0], model.get_weights()[0])
        (False, True)
    """
    try:
        copy = keras.models.clone_model(
            model, clone_function=clone_function, recursive=clone_function is not None
        )
    except ValueError as error:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) cannot be cloned from its "
            f"config; {instead or 'build it with the functional API or keras.Sequential.'}"
        ) from error
    if weights:
        copy_weights(model, copy)
    return copy


# -------------------------------------------------------------------- paths


def split_path(path: str) -> tuple[str, ...]:
    """Splits `"a/branch/b"` into `("a", "branch", "b")`, rejecting empty segments.

    Example:
        >>> split_path("block/branch/conv")
        ('block', 'branch', 'conv')
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"A layer path must be a non-empty string. Received: path={path!r}")
    segments = tuple(path.split("/"))
    if any(not s for s in segments):
        raise ValueError(
            f"Layer path {path!r} has an empty segment; write segments joined by "
            "single slashes, e.g. 'conv5_block2/branch/conv5_block2_3_conv'."
        )
    return segments


def named_parts(layer: layers.Layer) -> list[tuple[str, layers.Layer]]:
    """(path segment, layer) for what a path can name one level below `layer`.

    A `Residual`'s parts that are layers, by role (from `Residual.parts()`);
    a container's layers by name; nothing for other layers.

    Example:
        >>> [name for name, _ in named_parts(Residual(keras.layers.Dense(2), shortcut="projection"))]
        ['branch', 'shortcut']
    """
    if isinstance(layer, Residual):
        return [(role, part) for role, part in _block_layers(layer) if role in RESIDUAL_PARTS]
    if is_container(layer):
        return [(child.name, child) for child in sublayers(layer)]
    return []


def child(layer: layers.Layer, segment: str, path: str) -> layers.Layer:
    """The layer one segment below `layer`; `path` (the whole path) is for the error message.

    Example:
        >>> child(Residual(keras.layers.Dense(2, name="fc")), "branch", "block/branch").name
        'fc'
    """
    if isinstance(layer, Residual) and segment in RESIDUAL_PARTS:
        part = layer.part(segment)
        if part is None or not isinstance(part.layer, layers.Layer):
            raise ValueError(
                f"Residual {layer.name!r} has no {segment} layer (its {segment} is the "
                f"identity), so path {path!r} cannot go below it. {LIST_PATHS_HINT} "
                f"Received: path={path!r}"
            )
        return part.layer
    if is_container(layer):
        return _container_child(layer, segment, path)
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


def _container_child(layer: keras.Model, segment: str, path: str) -> layers.Layer:
    children = sublayers(layer)
    for found in children:
        if found.name == segment:
            return found
    names = [c.name for c in children]
    close = difflib.get_close_matches(segment, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Model {layer.name!r} has no layer named {segment!r} (path {path!r}).{hint} "
        f"Its layers are: {names}. {LIST_PATHS_HINT}"
    )


def resolve_path(model: layers.Layer, path: str) -> layers.Layer:
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
        layer = child(layer, segment, path)
    return layer


def list_paths(model: layers.Layer, prefix: str = "") -> list[str]:
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
        >>> inputs = keras.Input((4,))
        >>> x = Residual(keras.layers.Dense(4, name="fc"), name="block")(inputs)
        >>> list_paths(keras.Model(inputs, x))
        ['block', 'block/branch']
    """
    paths = []
    for name, layer in named_parts(model):
        path = f"{prefix}{name}"
        paths.append(path)
        paths.extend(list_paths(layer, prefix=f"{path}/"))
    return paths


def block_paths(model: layers.Layer) -> list[str]:
    """The path of every `Residual` block of `model`, nested ones included, in layer order.

    Example:
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, Residual(keras.layers.Dense(3), name="b1")(inputs))
        >>> block_paths(model)
        ['b1']
    """
    return [path for path in list_paths(model) if isinstance(resolve_path(model, path), Residual)]


def _path_segments(layer: layers.Layer) -> list[tuple[str, layers.Layer]]:
    """(segment, child) for every layer inside `layer`: a block's parts by role."""
    if isinstance(layer, Residual):
        return _block_layers(layer)
    return [(c.name, c) for c in sublayers(layer)]


def variable_paths(model: layers.Layer) -> dict[str, keras.Variable]:
    """Every weight of `model` keyed by a path that does not depend on build order.

    A path joins layer names from `model` down (a `Residual`'s parts by their
    roles "preactivation", "branch", "shortcut" and "merge", as in
    `keras_residual.probe`) and ends in the variable's own name:
    `"conv2_block1/branch/conv2_block1_1_conv/kernel"`. Unlike
    `Variable.path`, which records the name scope a variable was created in,
    it is the same for a model and for a clone made from its config, however
    and in whatever order their layers were built.

    Args:
        model: keras.layers.Layer. A model or any layer.

    Returns:
        dict from path to variable, in `model.weights` order.

    Raises:
        ValueError: when two layers or two variables at one level share a
            name, so a path would be ambiguous.

    Example:
        >>> inputs = keras.Input((4,))
        >>> block = Residual(keras.layers.Dense(4, name="fc"), name="block")
        >>> model = keras.Model(inputs, block(inputs))
        >>> list(variable_paths(model))  # a one-layer branch is "block/branch" itself
        ['block/branch/kernel', 'block/branch/bias']
    """
    found: dict[int, str] = {}

    def visit(layer: layers.Layer, prefix: str) -> None:
        children = _path_segments(layer)
        names = [name for name, _ in children]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"Layer {prefix or layer.name!r} holds several layers named {duplicates}; "
                "weights are matched by path, so names must be unique at each level."
            )
        for name, inner_layer in children:
            visit(inner_layer, f"{prefix}{name}/")
        inner = {id(w) for _, c in children for w in c.weights}
        own = [w for w in layer.weights if id(w) not in inner and id(w) not in found]
        own_names = [w.name for w in own]
        if len(set(own_names)) != len(own_names):
            raise ValueError(
                f"Layer {prefix or layer.name!r} has several variables with one name: "
                f"{own_names}."
            )
        for w in own:
            found[id(w)] = prefix + w.name

    visit(model, "")
    return {found[id(w)]: w for w in model.weights if id(w) in found}


def copy_weights(source: layers.Layer, target: layers.Layer) -> None:
    """Copy every weight of `source` into `target`, matched by `variable_paths`.

    Never by order: a clone made from `source`'s config may create its
    variables in another order (a pre-activation made from a string is built
    later than one passed as a layer) and still receives the right values.

    Args:
        source: keras.layers.Layer. Built.
        target: keras.layers.Layer. Built, with the same layer and variable
            names (e.g. a clone from `source`'s config).

    Raises:
        ValueError: when a path is on one side only, or shapes differ,
            before anything is copied.

    Example:
        >>> import numpy as np
        >>> a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> b = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> copy_weights(a, b)
        >>> all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
        True
    """
    theirs, ours = variable_paths(source), variable_paths(target)
    if set(theirs) != set(ours):
        only_source = [p for p in theirs if p not in ours]
        only_target = [p for p in ours if p not in theirs]
        raise ValueError(
            f"Cannot copy the weights of {source.name!r} into {target.name!r}: their layers "
            f"differ. Only in the source: {only_source[:10]}; only in the target: "
            f"{only_target[:10]}. Received: source={source.name!r}, target={target.name!r}"
        )
    for path, variable in ours.items():
        if tuple(variable.shape) != tuple(theirs[path].shape):
            raise ValueError(
                f"Weight {path!r} has shape {tuple(theirs[path].shape)} in {source.name!r} "
                f"but {tuple(variable.shape)} in {target.name!r}."
            )
    for path, variable in ours.items():
        variable.assign(keras.ops.convert_to_numpy(theirs[path]))


def single_input(args: Sequence[Any], layer: layers.Layer) -> Any:
    """The one tensor a layer call receives; raises for calls with several.

    Example:
        >>> single_input(([1.0],), keras.layers.Dense(1))
        1.0
    """
    flat = keras.tree.flatten(args)
    if len(flat) != 1:
        raise ValueError(
            f"Layer {layer.name!r} receives {len(flat)} tensors; a path through it must "
            "name a single-input layer."
        )
    return flat[0]
