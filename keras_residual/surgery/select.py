"""Which blocks and layers of a model a lesion can take, read from the blocks' descriptions.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 4: blocks are deleted (the residual module goes, the
shortcut stays) and reordered; a plain network (VGG) loses whole layers.
Everything here follows `Residual.parts()`; nothing reads a block's
sub-layers by attribute.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from keras_residual import graph
from keras_residual.residual import BlockPart, Residual

BlockRef = int | str | Residual


def residual_blocks(model: keras.Model) -> list[Residual]:
    """The `Residual` blocks of `model` in network order, from nested models too.

    A block whose branch contains further `Residual` layers counts once: the
    lesion studies of Veit et al. (2016) delete whole blocks. The same as
    `graph.blocks(model)`.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((4,)), Residual(keras.layers.Dense(4)),
        ...                           Residual(keras.layers.Dense(4))])
        >>> len(residual_blocks(model))
        2
    """
    return graph.blocks(model, nested=False)


def layer_shape(layer: layers.Layer, attr: str) -> tuple:
    """The `input` or `output` shape of a layer called once in a functional graph.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
        >>> layer_shape(model.get_layer("fc"), "output")
        (None, 2)
    """
    try:
        value = getattr(layer, attr)
        if attr == "input" and isinstance(value, (list, tuple)):
            value = value[0]  # a call with tensor arguments (an attention mask): `x` comes first
        return tuple(value.shape)
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"Layer {layer.name!r} must be called exactly once in a functional graph "
            f"to be lesioned or moved; its {attr} shape is undefined ({error})."
        ) from error


def _keeps_shape(layer: layers.Layer) -> bool:
    return layer_shape(layer, "input")[1:] == layer_shape(layer, "output")[1:]


def removable_layers(model: keras.Model) -> list[layers.Layer]:
    """Layers of a plain network that the identity can replace, in network order.

    The plain-network counterpart of a residual block for the VGG comparison
    of Veit et al. (2016), Fig. 3: a layer (or nested sub-model) with weights
    whose output shape equals its input shape. Normalization layers alone
    are skipped: the paper removes whole conv layers.

    Example:
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
            same = _keeps_shape(layer)
        except ValueError:
            same = False
        if same:
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(removable_layers(layer))
    return graph.unique(found)


def resolve_units(model: keras.Model, refs: Sequence[BlockRef] | BlockRef, units: list) -> list:
    """The units named by `refs` (indices into `units`, names, or instances).

    Example:
        >>> dense = keras.layers.Dense(2, name="fc")
        >>> resolve_units(keras.Sequential([dense]), ["fc"], [dense])[0] is dense
        True
    """
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
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((4,)), Residual(keras.layers.Dense(4), name="a")])
        >>> resolve_blocks(model, [0])[0].name
        'a'
    """
    return resolve_units(model, blocks, residual_blocks(model))


def _passes_x(part: BlockPart, inputs: list) -> bool:
    """Whether `part` outputs the block input `x`, given which of its inputs are `x`."""
    if part.passes_input:
        return inputs[0]
    if part.role == "merge":
        return part.without_branch and part.layer.passes_shortcut and inputs[0]
    if part.role == "activation":
        return part.layer in (keras.activations.linear,) and inputs[0]
    return False


def passes_input_when_deleted(layer: layers.Layer) -> bool:
    """Whether deleting `layer` (branch gate off / plain layer removed) outputs its input.

    Follows the block's description with its branch deleted
    (`Residual.parts(deleted=True)`): the output is the input only where every
    part on the way passes it on unchanged: an identity shortcut taken from
    `x`, a merge whose `without_branch` returns the shortcut (add, multiply,
    rezero) and no post-merge activation; and for plain layers. False for
    projection, zero-pad or average-pool shortcuts, shortcuts taken after the
    pre-activation, gated or BN-after-add merges and post-merge ReLUs (He et
    al. 2015's original unit), which transform it.

    Example:
        >>> from keras_residual import Residual
        >>> passes_input_when_deleted(Residual(keras.layers.Dense(2), shortcut="projection"))
        False
    """
    if not isinstance(layer, Residual):
        return True
    return bool(layer.wire(True, _passes_x, deleted=True))


def identity_shortcut(block: Residual) -> bool:
    """Whether the shortcut of `block` passes the block input `x` on unchanged (or it has none).

    Example:
        >>> from keras_residual import Residual
        >>> identity_shortcut(Residual(keras.layers.Dense(2)))
        True
    """
    part = block.part("shortcut")
    return part is None or (part.passes_input and part.inputs == ("x",))


def swappable(block: Residual) -> bool:
    """Whether `block` may move: equal input and output shape and an identity shortcut.

    Veit et al. 2016, Sec. 4.3 reorder only "building blocks with compatible
    dimensionality, ignoring modules that perform downsampling".

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(3), shortcut="projection")])
        >>> [swappable(b) for b in residual_blocks(model)]
        [True, False]
    """
    return identity_shortcut(block) and _keeps_shape(block)


def downsampling(unit: layers.Layer) -> bool:
    """Whether a lesion unit changes the shape of its input (Veit et al. 2016, Fig. 3, 4).

    The "downsampling" blocks of the paper's deletion plots: a block whose
    output shape differs from its input shape (a strided branch with a
    projection or zero-padding shortcut). A post-merge ReLU does not make a
    block downsampling. Plain layers that a lesion can remove keep their
    shape, so they never are.

    Example:
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(2), activation="relu")
        >>> _ = block(keras.ops.ones((1, 2)))
        >>> downsampling(block)
        False
    """
    return isinstance(unit, Residual) and unit.changes_shape()
