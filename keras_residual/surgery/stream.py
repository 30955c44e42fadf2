"""Edits of the residual stream: blocks moved with their own call arguments, blocks run in parallel.

A Transformer's blocks are called with arguments (a causal flag, an
attention mask) that only some of them take: an MLP sub-layer moved into an
attention sub-layer's place must not receive `use_causal_mask`, and an
attention sub-layer moved elsewhere must keep it. `moved_call_arguments`
gives a moved block its own arguments; `parallel_blocks` runs a run of
blocks side by side, `mean_i g_i(h)`, which for additive blocks `g_i(h) = h +
f_i(h)` is the parallel execution `h + mean_i f_i(h)` of Sun et al.,
"Transformer Layers as Painters" (AAAI 2025; "parallel" layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from keras_residual import graph
from keras_residual.residual import Residual
from keras_residual.surgery.select import BlockRef, residual_blocks, resolve_blocks

# Arguments of the call site (the slot), never of the moved block.
_SITE = ("training", "mask")


def _is_tensor(value) -> bool:
    return any(isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(value))


def block_call_arguments(model: keras.Model) -> dict[int, dict]:
    """The keyword arguments each `Residual` block of `model` is called with, by `id(block)`.

    Tensor values (an attention mask) belong to a throwaway graph: use
    them by name only (`moved_call_arguments`).

    Example:
        >>> from keras_residual.blocks import transformer_block
        >>> inputs = keras.Input((4, 8))
        >>> attention, mlp = transformer_block(8, num_heads=2)
        >>> model = keras.Model(inputs, mlp(attention(inputs, use_causal_mask=True)))
        >>> found = block_call_arguments(model)
        >>> found[id(attention)].get("use_causal_mask"), "use_causal_mask" in found[id(mlp)]
        (True, False)
    """
    found: dict[int, dict] = {}

    def record(layer, args, kwargs):
        if isinstance(layer, Residual):
            found[id(layer)] = dict(kwargs)

    graph.rebuild(model, record)
    return found


def moved_call_arguments(block: Residual, own: dict, site: dict, seen: dict) -> dict:
    """The call arguments of `block` run in another block's place (`site` its arguments).

    `training` and `mask` come from the site; every other argument is the
    block's own (`own`, from `block_call_arguments`): flags as they were,
    tensors by name from the site or else from `seen` (the tensors of that
    name earlier blocks of the new graph received).

    Example:
        >>> moved_call_arguments(None, {"use_causal_mask": True}, {"training": False}, {})
        {'training': False, 'use_causal_mask': True}
    """
    kwargs = {name: value for name, value in site.items() if name in _SITE}
    for name, value in own.items():
        if name in _SITE:
            continue
        if not _is_tensor(value):
            kwargs[name] = value
        elif name in site or name in seen:
            kwargs[name] = site[name] if name in site else seen[name]
        else:
            raise ValueError(
                f"Block {block.name!r} is called with the tensor {name!r}, which no block "
                f"before its new place receives. Received: {name}"
            )
    return kwargs


def record_call_tensors(seen: dict, kwargs: dict) -> None:
    """Add the tensor call arguments in `kwargs` (not `training`, `mask`) to `seen`, by name.

    Example:
        >>> seen = {}
        >>> record_call_tensors(seen, {"use_causal_mask": True, "training": False})
        >>> seen
        {}
    """
    seen.update({name: value for name, value in kwargs.items()
                 if name not in _SITE and _is_tensor(value)})


def _checked_groups(model: keras.Model, groups) -> list[list[Residual]]:
    resolved = [resolve_blocks(model, group) for group in groups]
    chain = residual_blocks(model)
    flat = [next(i for i, b in enumerate(chain) if b is block) for g in resolved for block in g]
    if len(resolved) < 2 or any(not g for g in resolved) or flat != list(
            range(flat[0], flat[0] + len(flat))):
        raise ValueError(
            "`groups` must be at least two non-empty groups of blocks that together form a "
            "run of consecutive blocks, in network order. Received: groups="
            f"{[[b.name for b in g] for g in resolved]}"
        )
    return resolved


def parallel_blocks(
    model: keras.Model, groups: Sequence[Sequence[BlockRef]], share_weights: bool = False
) -> keras.Model:
    """A new model that runs consecutive groups of blocks side by side on the same input.

    Sun et al., "Transformer Layers as Painters" (AAAI 2025): the middle layers of a
    Transformer run in parallel, `h + mean_i f_i(h)`. Here each group (one
    block, or the attention and MLP sub-layers of one Transformer block) runs
    in its own order on the input `h` of the run, and the run outputs the
    mean of the groups' outputs, `mean_i g_i(h)`: for additive blocks
    `g_i(h) = h + f_i(h)` that is `h + mean_i f_i(h)`. Each block keeps its
    own call arguments (`moved_call_arguments`).

    Args:
        model: keras.Model. A Functional or Sequential model whose blocks form a chain.
        groups: sequence of sequences of block references (indices in
            network order, names or instances); together a run of
            consecutive blocks, at least two groups.
        share_weights: bool. False (default): an independent copy; True: over
            `model`'s own layers (training the result trains `model`).

    Returns:
        A functional keras.Model.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2, kernel_initializer="ones")) for _ in range(2)])
        >>> parallel = parallel_blocks(model, [[0], [1]])
        >>> parallel.predict(keras.ops.ones((1, 2)), verbose=0).tolist()  # 1 + mean(2, 2)
        [[3.0, 3.0]]
    """
    positions = [[residual_blocks(model).index(b) for b in g] for g in _checked_groups(model, groups)]
    working = model if share_weights else graph.clone(
        model, instead="pass share_weights=True to run it over its own layers.")
    chain = residual_blocks(working)
    run = [[chain[i] for i in group] for group in positions]
    members = {id(block) for group in run for block in group}
    own, seen, state = block_call_arguments(working), {}, {}

    def replace(layer, args, kwargs):
        if isinstance(layer, Residual):
            record_call_tensors(seen, kwargs)
        if id(layer) not in members:
            return None
        if "output" not in state:
            outputs = []
            for group in run:
                y = args[0]
                for block in group:
                    y = block(y, **moved_call_arguments(block, own[id(block)], kwargs, seen))
                outputs.append(y)
            state["output"] = layers.Average(name=f"{run[0][0].name}_parallel")(outputs)
        return state["output"]

    return graph.rebuild(working, replace)
