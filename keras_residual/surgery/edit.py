"""New models with residual blocks deleted, reordered, or plain layers removed.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 4: a trained residual network keeps working when a
block's branch is deleted (`y_i = act(merge(h(y_{i-1}), 0))`: the shortcut,
a projection too, stays) or when blocks are reordered, while deleting one
layer of a plain network (VGG) breaks it. Every function returns an
independent model with copies of the weights, so training it leaves `model`
unchanged; `reorder_blocks` and `remove_layers` take `share_weights=True` to
build the new model over `model`'s own layer instances instead (no copy:
faster for a study that only evaluates, but training the result trains
`model`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from keras_residual import graph
from keras_residual.lesion_state import set_lesion_ready
from keras_residual.residual import Residual
from keras_residual.surgery.select import (
    BlockRef,
    identity_shortcut,
    layer_shape,
    removable_layers,
    residual_blocks,
    resolve_blocks,
    resolve_units,
)
from keras_residual.surgery.stream import (
    block_call_arguments,
    moved_call_arguments,
    record_call_tensors,
)


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
    clone = graph.clone(model, instead="use the `deleted_blocks` context manager on it instead.")
    set_lesion_ready(clone)
    clone_blocks = residual_blocks(clone)
    for i in indices:
        clone_blocks[i].branch_enabled = False
    return clone


def _why_fixed(block: Residual) -> str | None:
    """Why `block` cannot move (Veit et al. 2016, Sec. 4.3), or None where it can."""
    shape_in, shape_out = layer_shape(block, "input"), layer_shape(block, "output")
    if shape_in[1:] != shape_out[1:]:
        return f"block {block.name!r} maps {shape_in} to {shape_out} (a downsampling block)"
    if identity_shortcut(block):
        return None
    part = block.part("shortcut")
    if part.passes_input:
        return (f"the shortcut of block {block.name!r} passes on its pre-activated input "
                "(shortcut_from='preactivated'), not the block input")
    return (f"block {block.name!r} has a {type(part.layer).__name__} shortcut "
            f"({part.layer.name!r}), not the identity")


def _check_order(blocks: list[Residual], order: list[int], repeats: bool = False) -> None:
    valid = len(order) == len(blocks) and all(0 <= i < len(blocks) for i in order)
    if not (valid if repeats else sorted(order) == list(range(len(blocks)))):
        kind = "a list of block indices" if repeats else "a permutation"
        raise ValueError(
            f"`order` must be {kind} of range({len(blocks)}) (one entry per block). "
            f"Received: order={order}"
        )
    for position, index in enumerate(order):
        if position == index:
            continue
        moved, slot = blocks[index], blocks[position]
        why = _why_fixed(moved) or _why_fixed(slot)
        if why is None and layer_shape(moved, "input")[1:] != layer_shape(slot, "input")[1:]:
            why = (f"block {moved.name!r} takes inputs of shape {layer_shape(moved, 'input')}, "
                   f"block {slot.name!r} of shape {layer_shape(slot, 'input')}")
        if why is not None:
            raise ValueError(
                f"Block {moved.name!r} (block {index}) cannot take the place of {slot.name!r} "
                f"(block {position}): {why}. Only blocks with identity shortcuts and equal "
                "input and output shapes can be reordered (Veit et al. 2016, Sec. 4.3); "
                f"keep this one in place. Received: order={order}"
            )


def _working_model(model: keras.Model, share_weights: bool) -> keras.Model:
    """`model` itself when sharing its layers, else an independent copy with its weights."""
    if share_weights:
        return model
    return graph.clone(
        model, instead="pass share_weights=True to edit it over its own layers (training "
        "the result then trains it too)."
    )


def reorder_blocks(
    model: keras.Model, order: Sequence[int], share_weights: bool = False, repeats: bool = False
) -> keras.Model:
    """A new model that runs the blocks in another order.

    Veit et al. 2016, Sec. 4.3, Fig. 5b. Position `p` of the chain of blocks
    (network order) runs block `order[p]`. Only blocks that are `swappable`
    and have the same shape as the position they move to may move. A moved
    block keeps its own call arguments (`surgery.stream.moved_call_arguments`:
    an attention sub-layer its causal mask, an MLP sub-layer none).

    Args:
        model: keras.Model. A Functional or Sequential model.
        order: a permutation of `range(len(residual_blocks(model)))`.
        share_weights: bool. False (the default): the new model has its own
            copies of the weights, and `model` is not changed by anything done
            to it. True: it is built over `model`'s own layer instances (no
            copy, faster to make); training it then trains `model` too.
        repeats: bool. False (the default): `order` is a permutation. True:
            a block may run at several positions and others not at all (the
            "middle repeat" of Sun et al., "Transformer Layers as Painters",
            AAAI 2025, Sec. 3).

    Returns:
        A functional keras.Model.

    Raises:
        ValueError: if `order` is not a permutation (or, with `repeats`, not
            block indices) or moves an incompatible block.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> swapped = reorder_blocks(model, [1, 0])
        >>> any(w is v for w in swapped.weights for v in model.weights)
        False
        >>> shared = reorder_blocks(model, [1, 0], share_weights=True)
        >>> {id(w) for w in shared.weights} == {id(w) for w in model.weights}
        True
        >>> twice = reorder_blocks(model, [1, 1], repeats=True)  # block 1 runs twice
        >>> [layer.name for layer in twice.layers[1:]] == [model.layers[1].name]
        True
    """
    order = [int(i) for i in order]
    _check_order(residual_blocks(model), order, repeats)
    working = _working_model(model, share_weights)
    blocks = residual_blocks(working)
    substitute = {id(blocks[p]): blocks[i] for p, i in enumerate(order) if p != i}
    # A moved block keeps its own call arguments: an MLP sub-layer in an attention
    # sub-layer's place gets no causal mask, a moved attention sub-layer keeps it.
    own, seen = (block_call_arguments(working), {}) if substitute else ({}, {})

    def replace(layer, args, kwargs):
        if isinstance(layer, Residual):
            record_call_tensors(seen, kwargs)
        if id(layer) in substitute:
            moved = substitute[id(layer)]
            return moved(*args, **moved_call_arguments(moved, own[id(moved)], kwargs, seen))
        return None

    return graph.rebuild(working, replace)


def remove_layers(
    model: keras.Model,
    targets: Sequence[int | str | layers.Layer] | int | str | layers.Layer,
    share_weights: bool = False,
) -> keras.Model:
    """A new model with plain layers replaced by the identity.

    The plain-network lesion of Veit et al. 2016, Fig. 3 (VGG). Works on
    Residual blocks too (the identity replaces the whole block).

    Args:
        model: keras.Model. A Functional or Sequential model.
        targets: indices into `removable_layers(model)`, layer names, or layers.
        share_weights: bool. False (the default): the new model has its own
            copies of the remaining weights, and `model` is not changed by
            anything done to it. True: it is built over `model`'s own layer
            instances (no copy, faster to make); training it then trains
            `model` too.

    Returns:
        A functional keras.Model.

    Raises:
        ValueError: if a target changes the shape of its input.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> plain = remove_layers(model, [0])
        >>> plain.predict(keras.ops.ones((1, 2)), verbose=0).tolist()
        [[1.0, 1.0]]
    """
    candidates = graph.unique(removable_layers(model) + graph.network_layers(model))
    removed = resolve_units(model, targets, candidates)
    for layer in removed:
        if layer_shape(layer, "input")[1:] != layer_shape(layer, "output")[1:]:
            raise ValueError(
                f"Layer {layer.name!r} maps {layer_shape(layer, 'input')} to "
                f"{layer_shape(layer, 'output')}: only layers with equal input and output "
                "shape can be replaced by the identity."
            )
    positions = [next(i for i, unit in enumerate(candidates) if unit is layer) for layer in removed]
    working = _working_model(model, share_weights)
    working_candidates = graph.unique(removable_layers(working) + graph.network_layers(working))
    removed_ids = {id(working_candidates[i]) for i in positions}

    def replace(layer, args, kwargs):
        return args[0] if id(layer) in removed_ids else None

    return graph.rebuild(working, replace)
