"""Lesion surgery: find, delete, reorder and re-route residual blocks.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 4: a trained residual network keeps working when a
block's branch is deleted at test time (`y_i = act(merge(h(y_{i-1}), 0))`:
the shortcut, a projection too, stays) or when blocks are reordered, while deleting one layer of a
plain network (VGG) breaks it.

Deleting uses each block's branch gate (`Residual.branch_enabled`) and
gradient routing its `gradient_route`. Both live in the lesion state of
lesion-ready blocks (`keras_residual.lesion_ready`), which compiled predict
functions read as data, so a sweep of lesions traces once. Every temporary
change to a user's model is undone in `finally`. Reordering and removing plain
layers build a new functional model that calls the same layer instances.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual import merges as merges_lib
from keras_residual.residual import LesionState, Residual, lesion_ready, set_lesion_ready

BlockRef = int | str | Residual
CallReplacement = Callable[[layers.Layer, tuple, dict], Any]


def _walk(model: layers.Layer) -> Iterator[layers.Layer]:
    """Layers in network order, recursing into nested models but not into blocks."""
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def _unique(items: Iterator[layers.Layer]) -> list[layers.Layer]:
    seen: set[int] = set()
    return [x for x in items if not (id(x) in seen or seen.add(id(x)))]


def residual_blocks(model: keras.Model) -> list[Residual]:
    """The `Residual` blocks of `model` in network order, from nested models too.

    A block whose branch contains further `Residual` layers counts once: the
    lesion studies of Veit et al. (2016) delete whole blocks.

    Args:
        model: keras.Model. A Functional or Sequential model.

    Returns:
        list of Residual layers, each once, in the order the graph runs them.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((4,)), Residual(keras.layers.Dense(4)),
        ...                           Residual(keras.layers.Dense(4))])
        >>> len(residual_blocks(model))
        2
    """
    return _unique(layer for layer in _walk(model) if isinstance(layer, Residual))


def _shape_of(layer: layers.Layer, attr: str) -> tuple:
    try:
        return tuple(getattr(layer, attr).shape)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Layer {layer.name!r} must be called exactly once in a functional graph "
            f"to be lesioned or moved; its {attr} shape is undefined ({error})."
        ) from error


def removable_layers(model: keras.Model) -> list[layers.Layer]:
    """Layers of a plain network that the identity can replace, in network order.

    The plain-network counterpart of a residual block for the VGG comparison
    of Veit et al. (2016), Fig. 3: a layer (or nested sub-model) with weights
    whose output shape equals its input shape. Normalization layers alone
    are skipped: the paper removes whole conv layers.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
        ...                           keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> [layer.units for layer in removable_layers(model)]
        [8]
    """
    skip = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)
    found = []
    for layer in getattr(model, "layers", ()):
        if not layer.weights or isinstance(layer, skip):
            continue
        try:
            same = _shape_of(layer, "input")[1:] == _shape_of(layer, "output")[1:]
        except ValueError:
            same = False
        if same:
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(removable_layers(layer))
    return _unique(iter(found))


def _resolve(model: keras.Model, refs: Sequence[BlockRef] | BlockRef, units: list) -> list:
    refs = [refs] if isinstance(refs, (int, str, layers.Layer)) else list(refs)
    by_name = {unit.name: unit for unit in units}
    resolved = []
    for ref in refs:
        if isinstance(ref, (int, np.integer)) and -len(units) <= ref < len(units):
            resolved.append(units[ref])
        elif isinstance(ref, str) and ref in by_name:
            resolved.append(by_name[ref])
        elif isinstance(ref, layers.Layer) and any(ref is unit for unit in units):
            resolved.append(ref)
        else:
            raise ValueError(
                f"{ref!r} is not a block of model {model.name!r}: pass an index in "
                f"[0, {len(units)}), a block name ({sorted(by_name)[:5]}...) or a block "
                f"of the model. Received: {ref!r}"
            )
    return resolved


def resolve_blocks(model: keras.Model, blocks: Sequence[BlockRef] | BlockRef) -> list[Residual]:
    """Blocks of `model` from indices (network order), names or instances.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((4,)), Residual(keras.layers.Dense(4), name="a")])
        >>> resolve_blocks(model, [0])[0].name
        'a'
    """
    return _resolve(model, blocks, residual_blocks(model))


@contextlib.contextmanager
def preserved_lesion_state(blocks: Sequence[Residual]) -> Iterator[None]:
    """Restore the lesion state (gates, gradient routes, scales) of `blocks` on exit.

    The blocks must be lesion-ready (see `keras_residual.lesion_ready`) for
    a changed state to take effect.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(4), lesion_ready=True)
        >>> _ = block(keras.ops.ones((1, 4)))
        >>> with preserved_lesion_state([block]):
        ...     block.branch_enabled = False
        >>> block.branch_enabled
        True
    """
    saved: list[LesionState] = [block.get_lesion_state() for block in blocks]
    try:
        yield
    finally:
        for block, state in zip(blocks, saved, strict=True):
            block.set_lesion_state(state)


@contextlib.contextmanager
def deleted_blocks(model: keras.Model, blocks: Sequence[BlockRef] | BlockRef) -> Iterator[keras.Model]:
    """Delete the branches of `blocks` inside the `with` body, then restore them.

    Veit et al. 2016, Sec. 4.1: the residual module goes, the rest of the
    block stays: `y_i = act(merge(h(y_{i-1}), 0))`, with the shortcut (or the
    downsampling projection). The blocks are lesion-ready inside the body
    (the model retraces once on entry and once after exit).

    Args:
        model: keras.Model holding the blocks.
        blocks: indices in network order, names, or Residual instances.

    Yields:
        The same model, lesioned.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> with deleted_blocks(model, [0]):
        ...     out = model.predict(np.ones((1, 2)), verbose=0)
        >>> out.tolist()
        [[1.0, 1.0]]
    """
    targets = resolve_blocks(model, blocks)
    with lesion_ready(model):
        for block in targets:
            block.branch_enabled = False
        yield model


def clone_with_weights(
    model: keras.Model, instead: str, clone_function: Callable | None = None
) -> keras.Model:
    """A copy of `model` made from its config (layers through `clone_function`), same weights.

    Args:
        model: keras.Model. Functional or Sequential.
        instead: str. What the user can do when the model cannot be cloned;
            ends the error message.
        clone_function: callable or None. Passed to `keras.models.clone_model`
            (recursively, into nested models).

    Returns:
        The new keras.Model.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> clone_with_weights(model, "do something else") is model
        False
    """
    try:
        clone = keras.models.clone_model(
            model, clone_function=clone_function, recursive=clone_function is not None
        )
    except ValueError as error:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) cannot be cloned from its "
            f"config; {instead}"
        ) from error
    clone.set_weights(model.get_weights())
    return clone


def delete_blocks(model: keras.Model, blocks: Sequence[BlockRef] | BlockRef) -> keras.Model:
    """A copy of `model` (same weights) with the branches of `blocks` deleted.

    Veit et al. 2016, Sec. 4.1. The user's model is not changed.

    Args:
        model: keras.Model. A Functional or Sequential model.
        blocks: indices in network order, names, or Residual instances.

    Returns:
        A new keras.Model, lesion-ready (`keras_residual.set_lesion_ready`),
        whose copies of the blocks have `branch_enabled=False`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> lesioned = delete_blocks(model, [0])
        >>> residual_blocks(lesioned)[0].branch_enabled, residual_blocks(model)[0].branch_enabled
        (False, True)
    """
    indices = [
        next(i for i, b in enumerate(residual_blocks(model)) if b is block)
        for block in resolve_blocks(model, blocks)
    ]
    clone = clone_with_weights(model, "use the `deleted_blocks` context manager on it instead.")
    set_lesion_ready(clone)
    clone_blocks = residual_blocks(clone)
    for i in indices:
        clone_blocks[i].branch_enabled = False
    return clone


@contextlib.contextmanager
def routed_gradients(
    model: keras.Model,
    branch: Sequence[BlockRef] = (),
    shortcut: Sequence[BlockRef] = (),
) -> Iterator[keras.Model]:
    """Route the backward pass of blocks through one path inside the `with` body.

    Veit et al. 2016, Sec. 5: to measure the gradient of one path, blocks on
    the path pass gradient only through their branch and all others only
    through their shortcut. The forward pass is unchanged.

    Args:
        model: keras.Model holding the blocks.
        branch: blocks whose gradient flows through the branch only.
        shortcut: blocks whose gradient flows through the shortcut only.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> with routed_gradients(model, branch=[0]):
        ...     route = residual_blocks(model)[0].gradient_route
        >>> route, residual_blocks(model)[0].gradient_route
        ('branch', 'both')
    """
    on_branch, on_shortcut = resolve_blocks(model, branch), resolve_blocks(model, shortcut)
    if {id(b) for b in on_branch} & {id(b) for b in on_shortcut}:
        raise ValueError(
            "A block cannot route its gradient through the branch only and the shortcut "
            f"only. Received: branch={branch!r}, shortcut={shortcut!r}"
        )
    with lesion_ready(model):
        for block in on_branch:
            block.gradient_route = "branch"
        for block in on_shortcut:
            block.gradient_route = "shortcut"
        yield model


def rebuild_model(
    model: keras.Model, replace: CallReplacement, batch_size: int | None = None
) -> keras.Model:
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
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> same = rebuild_model(model, lambda layer, args, kwargs: None)
        >>> same.layers[-1] is model.layers[-1]
        True
    """

    def call_function(layer, *args, **kwargs):
        outputs = replace(layer, args, kwargs)
        if outputs is not None:
            return outputs
        if isinstance(layer, keras.Model):
            # Keep the static batch size of the tensors this sub-model receives.
            rows = keras.tree.flatten(args)[0].shape[0]
            return rebuild_model(layer, replace, batch_size=rows)(*args, **kwargs)
        return layer(*args, **kwargs)

    def new_input(tensor):
        return keras.Input(batch_shape=(batch_size,) + tuple(tensor.shape[1:]), dtype=tensor.dtype)

    if isinstance(model, keras.Sequential):
        inputs = new_input(model.inputs[0])
        x = inputs
        for layer in model.layers:
            x = call_function(layer, x)
        return keras.Model(inputs, x, name=f"{model.name}_rebuilt")
    message = (
        f"Model {model.name!r} ({type(model).__name__}) is not a Functional or Sequential "
        "model, so its graph cannot be rebuilt. Build it with the functional API."
    )
    try:
        inputs = keras.tree.map_structure(new_input, model.input)
    except AttributeError as error:  # subclassed models have no symbolic input
        raise ValueError(message) from error
    try:
        return keras.models.clone_model(
            model, clone_function=lambda layer: layer, call_function=call_function,
            input_tensors=inputs,
        )
    except ValueError as error:
        # clone_model refuses subclassed models; other errors come from the layers.
        if "only supported" not in str(error):
            raise
        raise ValueError(message) from error


def swappable(block: Residual) -> bool:
    """Whether `block` may move: equal input and output shape, deletion gives its input.

    Veit et al. 2016, Sec. 4.3 reorder only "building blocks with compatible
    dimensionality, ignoring modules that perform downsampling".

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(3), shortcut="projection")])
        >>> [swappable(b) for b in residual_blocks(model)]
        [True, False]
    """
    if not _identity_shortcut(block):
        return False
    return _shape_of(block, "input")[1:] == _shape_of(block, "output")[1:]


def _identity_shortcut(block: Residual) -> bool:
    return block.shortcut in ("identity", "none") and (
        block.shortcut_from == "input" or block.preactivation is None
    )


# Merges whose `without_branch` returns the shortcut itself.
_PASS_THROUGH_MERGES = (merges_lib.AddMerge, merges_lib.MultiplyMerge, merges_lib.ReZeroMerge)


def passes_input_when_deleted(layer: layers.Layer) -> bool:
    """Whether deleting `layer` (branch gate off / plain layer removed) outputs its input.

    A deleted block outputs `activation(merge(h(x), 0))`: its input only for
    an identity shortcut taken from `x`, a merge that passes the shortcut on
    (add, multiply, rezero) and no post-merge activation; and for plain
    layers. False for projection, zero-pad or average-pool shortcuts,
    shortcuts taken after the pre-activation, gated or BN-after-add merges
    and post-merge ReLUs (He et al. 2015's original unit), which transform it.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> passes_input_when_deleted(Residual(keras.layers.Dense(2), shortcut="projection"))
        False
    """
    if not isinstance(layer, Residual):
        return True
    if layer.shortcut == "none":
        return True
    return (
        _identity_shortcut(layer)
        and isinstance(layer.merge_layer, _PASS_THROUGH_MERGES)
        and layer.activation in (None, keras.activations.linear)
    )


def reorder_blocks(model: keras.Model, order: Sequence[int]) -> keras.Model:
    """A new model that runs the blocks in another order (same layer instances).

    Veit et al. 2016, Sec. 4.3, Fig. 5b. Position `p` of the chain of blocks
    (network order) runs block `order[p]`. Only blocks that are `swappable`
    and have the same shape as the position they move to may move.

    Args:
        model: keras.Model. A Functional or Sequential model.
        order: a permutation of `range(len(residual_blocks(model)))`.

    Returns:
        A functional keras.Model sharing all weights with `model`.

    Raises:
        ValueError: if `order` is not a permutation or moves an incompatible block.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> swapped = reorder_blocks(model, [1, 0])
        >>> len(swapped.weights) == len(model.weights)
        True
    """
    blocks = residual_blocks(model)
    order = [int(i) for i in order]
    if sorted(order) != list(range(len(blocks))):
        raise ValueError(
            f"`order` must be a permutation of range({len(blocks)}) (one entry per block). "
            f"Received: order={order}"
        )
    for position, index in enumerate(order):
        if position == index:
            continue
        moved, slot = blocks[index], blocks[position]
        if not (swappable(moved) and swappable(slot)) or (
            _shape_of(moved, "input")[1:] != _shape_of(slot, "input")[1:]
        ):
            raise ValueError(
                f"Block {moved.name!r} cannot take the place of {slot.name!r}: only blocks "
                "with identity shortcuts and equal input and output shapes can be "
                f"reordered ({_shape_of(moved, 'input')} vs {_shape_of(slot, 'input')}). "
                f"Received: order={order}"
            )
    substitute = {id(blocks[p]): blocks[i] for p, i in enumerate(order) if p != i}

    def replace(layer, args, kwargs):
        if id(layer) in substitute:
            return substitute[id(layer)](*args, **kwargs)
        return None

    return rebuild_model(model, replace)


def remove_layers(
    model: keras.Model, targets: Sequence[int | str | layers.Layer] | int | str | layers.Layer
) -> keras.Model:
    """A new model (same layer instances) with plain layers replaced by the identity.

    The plain-network lesion of Veit et al. 2016, Fig. 3 (VGG). Works on
    Residual blocks too (the identity replaces the whole block).

    Args:
        model: keras.Model. A Functional or Sequential model.
        targets: indices into `removable_layers(model)`, layer names, or layers.

    Returns:
        A functional keras.Model sharing all remaining weights with `model`.

    Raises:
        ValueError: if a target changes the shape of its input.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> plain = remove_layers(model, [0])
        >>> plain.predict(keras.ops.ones((1, 2)), verbose=0).tolist()
        [[1.0, 1.0]]
    """
    candidates = _unique(iter(removable_layers(model) + list(_walk(model))))
    removed = _resolve(model, targets, candidates)
    for layer in removed:
        if _shape_of(layer, "input")[1:] != _shape_of(layer, "output")[1:]:
            raise ValueError(
                f"Layer {layer.name!r} maps {_shape_of(layer, 'input')} to "
                f"{_shape_of(layer, 'output')}: only layers with equal input and output "
                "shape can be replaced by the identity."
            )
    removed_ids = {id(layer) for layer in removed}

    def replace(layer, args, kwargs):
        return args[0] if id(layer) in removed_ids else None

    return rebuild_model(model, replace)
