"""Temporary lesions of a model in place: deleted branches and routed gradients.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 4-5. Both contexts switch the model's blocks into
the lesion-ready mode (`keras_residual.lesion_ready`), whose compiled
functions read the lesion state as data, so a sweep of lesions traces once;
every change is undone in `finally`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import keras

from keras_residual.lesion_state import LesionState, lesion_ready
from keras_residual.residual import Residual
from keras_residual.surgery.select import BlockRef, resolve_blocks


@contextlib.contextmanager
def preserved_lesion_state(blocks: Sequence[Residual]) -> Iterator[None]:
    """Restore the lesion state (gates, gradient routes, scales) of `blocks` on exit.

    The blocks must be lesion-ready (see `keras_residual.lesion_ready`) for
    a changed state to take effect.

    Example:
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
        >>> import numpy as np
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


@contextlib.contextmanager
def routed_gradients(
    model: keras.Model,
    branch: Sequence[BlockRef] = (),
    shortcut: Sequence[BlockRef] = (),
) -> Iterator[keras.Model]:
    """Route the backward pass of blocks through one path inside the `with` body.

    Veit et al. 2016, Sec. 5: to measure the gradient of one path, blocks on
    the path pass gradient only through their branch and all others only
    through their shortcut. The forward pass is unchanged. A gate a merge
    computes from the block input (highway, gated merges) is routed with the
    branch: it belongs to the residual module.

    Args:
        model: keras.Model holding the blocks.
        branch: blocks whose gradient flows through the branch only.
        shortcut: blocks whose gradient flows through the shortcut only.

    Example:
        >>> from keras_residual import Residual
        >>> from keras_residual.surgery import residual_blocks
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
