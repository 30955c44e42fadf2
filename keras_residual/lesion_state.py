"""Lesion state of residual blocks, and the switch into the lesion-ready mode.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 4-5, delete blocks, route the gradient through one
path and rescale branches. A `Residual` block that is *lesion-ready* holds
these settings in one non-trainable 4-scalar variable that compiled
`predict` / `evaluate` / `fit` functions read as data, so one trace serves a
whole sweep of lesions; a block that is not lesion-ready holds nothing and
costs nothing.

This module sits below `residual.py` in the import graph (a block's `call`
reads the state): `LesionState` (the settings), `StateSlot` (the variable a
block owns only while lesion-ready) and the model-level switches
`lesion_ready(model)` / `set_lesion_ready(model)`, which find the blocks
through `keras_residual.graph` when they are called.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import layers

GRADIENT_ROUTES = ("both", "branch", "shortcut")

# Rows of the per-block lesion state vector.
GATE, ROUTE_BRANCH, ROUTE_SHORTCUT, BRANCH_SCALE = 0, 1, 2, 3
STATE_SIZE = 4
_ROUTE_VALUES = {"both": (1.0, 1.0), "branch": (1.0, 0.0), "shortcut": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class LesionState:
    """The lesion settings of one `Residual` block (Veit et al. 2016, Sec. 4).

    Attributes:
        branch_enabled: bool. False deletes the branch: the block outputs
            `activation(merge.without_branch(h(x)))`: `merge(h(x), 0)` for
            sums and gates, `h(x)` for a product. Defaults to True.
        gradient_route: str. "both", "branch" or "shortcut": the forward value
            is unchanged, the backward pass flows only through the chosen
            path (Sec. 5, gradient per path length). Defaults to "both".
        branch_scale: float. Factor on `F(x)` before the merge (effective-path
            training, Sec. 5). Defaults to 1.0.

    Example:
        >>> LesionState(branch_enabled=False).is_default
        False
    """

    branch_enabled: bool = True
    gradient_route: str = "both"
    branch_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.gradient_route not in GRADIENT_ROUTES:
            raise ValueError(
                f"`gradient_route` must be one of {GRADIENT_ROUTES}. "
                f"Received: gradient_route={self.gradient_route!r}"
            )
        if not np.isfinite(float(self.branch_scale)):
            raise ValueError(
                f"`branch_scale` must be a finite number. Received: {self.branch_scale!r}"
            )

    @property
    def is_default(self) -> bool:
        """True for the state of an untouched block."""
        return self == LesionState()

    def to_vector(self) -> np.ndarray:
        """The state as the 4-vector a lesion-ready block stores.

        Example:
            >>> LesionState(gradient_route="branch").to_vector().tolist()
            [1.0, 1.0, 0.0, 1.0]
        """
        branch, shortcut = _ROUTE_VALUES[self.gradient_route]
        gate = 1.0 if self.branch_enabled else 0.0
        return np.array([gate, branch, shortcut, float(self.branch_scale)], dtype="float32")

    @classmethod
    def from_vector(cls, vector: Any) -> LesionState:
        """The state stored in a lesion-ready block's variable.

        Example:
            >>> LesionState.from_vector([0.0, 1.0, 1.0, 2.0])
            LesionState(branch_enabled=False, gradient_route='both', branch_scale=2.0)
        """
        vector = np.asarray(vector, dtype="float32")
        pair = (float(vector[ROUTE_BRANCH]), float(vector[ROUTE_SHORTCUT]))
        route = next((k for k, v in _ROUTE_VALUES.items() if v == pair), "both")
        return cls(bool(vector[GATE] > 0.5), route, float(vector[BRANCH_SCALE]))


class StateSlot(layers.Layer):
    """Holds a block's lesion-state variable while the block is lesion-ready.

    A block creates its slot in `__init__`, so Keras tracks it, but the slot
    owns a variable only between `fill` and `empty`: a block that is not
    lesion-ready has no weight beyond its layers (`count_params` equals the
    plain network's), and one that is saves and restores its state with the
    model. The variable lives in a tracked list of this never-locked slot, so
    plain list operations add and remove it after the block is built, with
    no private Keras API.

    Example:
        >>> slot = StateSlot(name="block_lesion")
        >>> tuple(slot.fill("block").shape)
        (4,)
        >>> slot.empty()
        >>> slot.variable is None
        True
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.held = []
        # Nothing to build: an unbuilt layer would make Keras' trainers treat
        # the model as unbuilt (and retrace) on every call.
        self.built = True

    @property
    def variable(self) -> keras.Variable | None:
        """The state variable, or None while the block is not lesion-ready."""
        return self.held[0] if self.held else None

    def fill(self, scope: str) -> keras.Variable:
        """Create the variable (all ones: the default state) under the name scope `scope`."""
        if not self.held:
            with keras.name_scope(scope):
                self.held.append(keras.Variable(
                    np.ones(STATE_SIZE, "float32"), trainable=False, autocast=False,
                    name="lesion_state", dtype="float32",
                ))
        return self.held[0]

    def empty(self) -> None:
        """Drop the variable: the block owns no lesion state any more."""
        if self.held:
            self.held.remove(self.held[0])

    def call(self, inputs):  # never called: the block reads `variable` itself
        return inputs


def reset_compiled_functions(model: layers.Layer) -> None:
    """Drop `model`'s traced train / test / predict functions so the next call retraces.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> reset_compiled_functions(model)
        >>> model.predict_function is None
        True
    """
    if not isinstance(model, keras.Model):
        return
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def _all_blocks(model: layers.Layer) -> list:
    # Deferred: graph.py imports residual.py, which imports this module.
    from keras_residual import graph

    return graph.blocks(model, nested=True)


def set_lesion_ready(model: layers.Layer, ready: bool = True) -> list:
    """Make every `Residual` in `model` lesion-ready (or plain again), for good.

    A lesion-ready block reads a 4-scalar state variable (branch gate,
    gradient route, branch scale; Veit et al. 2016) in its traced graph, so
    compiled functions follow `branch_enabled` / `gradient_route` /
    `branch_scale` changes without retracing. The model's compiled functions
    are reset, the variable is saved with the model. `ready=False` needs
    every block back at its default state.

    Args:
        model: keras.Model (or a single Residual).
        ready: bool. Defaults to True.

    Returns:
        The blocks, in the order `graph.blocks(model, nested=True)` lists them.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> block = set_lesion_ready(model)[0]
        >>> block.branch_enabled = False
        >>> model.predict(keras.ops.ones((1, 2)), verbose=0).tolist()
        [[1.0, 1.0]]
    """
    blocks = _all_blocks(model)
    for block in blocks:
        block.switch_lesion_ready(ready)
    reset_compiled_functions(model)
    return blocks


@contextlib.contextmanager
def lesion_ready(model: layers.Layer) -> Iterator[list]:
    """Lesion-ready blocks inside the `with` body; state and mode restored in `finally`.

    The lesion studies (Veit et al. 2016, Sec. 4-5) run inside this context:
    it switches every `Residual` of `model` to the lesion-ready mode (the
    model retraces once), and on exit restores each block's lesion state and
    mode, resetting compiled functions again where the mode changed.

    Args:
        model: keras.Model holding the blocks (or a single Residual).

    Yields:
        The blocks, in the order `graph.blocks(model, nested=True)` lists them.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> with lesion_ready(model) as blocks:
        ...     blocks[0].branch_enabled = False
        ...     out = model.predict(np.ones((1, 2)), verbose=0)
        >>> out.tolist(), blocks[0].lesion_ready
        ([[1.0, 1.0]], False)
    """
    blocks = _all_blocks(model)
    saved = [(block.lesion_ready, block.get_lesion_state()) for block in blocks]
    changed = [block for block, (was, _) in zip(blocks, saved, strict=True) if not was]
    for block in changed:
        block.switch_lesion_ready(True)
    if changed:
        reset_compiled_functions(model)
    try:
        yield blocks
    finally:
        for block, (was, state) in zip(blocks, saved, strict=True):
            block.set_lesion_state(state)
            if not was:
                block.switch_lesion_ready(False)
        if changed:
            reset_compiled_functions(model)
