"""Lesion studies under a distribution: data-parallel evaluation, single-device numbers.

Every study of `keras_residual.lesion` that evaluates many lesions of one
network -- single- and k-block deletion (Veit et al. 2016, Sec. 4.1-4.2,
Fig. 3, 4, 5a), reordering (Sec. 4.3, Fig. 5b) and the gradient per path
length (Sec. 5, Fig. 6) -- runs its forward passes through `predict` here,
which reads the current context; the studies take no extra argument:

- TensorFlow: the model's `distribute_strategy` (a model built under
  `strategy.scope()`, e.g. `DistributionSetup.scope()` over several GPUs).
  Every batch is split evenly over the replicas (`strategy.run` on one
  slice per replica; Keras' `predict` under a strategy gives the same
  numbers at about 0.5 s per call on CPUs); the models a study
  derives (the stacked sweep, reordered copies, the routed gradient model)
  are built under the same strategy's scope (`distributed`).
- JAX, one process: `keras.distribution.distribution()` (current inside
  `DistributionSetup.scope()`); `predict` shards every batch over its devices.
- JAX, several processes (`jax.process_count() > 1`): Keras' `predict` cannot
  gather outputs whose shards live in other processes, so each process
  evaluates its own contiguous slice of the rows on its own devices (a
  `DataParallel` over `jax.local_devices()`, with a copy of the model on
  them, `local_copy`) and the per-row outputs are gathered in row order with
  `jax.experimental.multihost_utils.process_allgather`.

Rows are padded (with copies of the first rows) to a multiple of what one
step takes on every device and process, and trimmed after. Random draws
(deleted sets, swaps, gradient routes and picks) come from the study's
seeded NumPy generator, the same in every process, and the reductions after
the gather are the single-device code's: the numbers are the single-device
numbers (errors exactly; gradient norms within float32 round-off). Nothing
is split without a distribution, nor on PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import weakref
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """How the rows of one evaluation are split (see the module docstring).

    Attributes:
        strategy: a `tf.distribute.Strategy` with several replicas, or None.
        distribution: a `keras.distribution.Distribution` over this process'
            devices (JAX), or None.
        processes: int. JAX processes that each evaluate a slice of the rows.
        process_id: int. This process' index.

    Example:
        >>> Split().devices, Split().step_rows(10), Split().padded_length(5, 4)
        (1, 10, 8)
    """

    strategy: Any = None
    distribution: Any = None
    processes: int = 1
    process_id: int = 0

    @property
    def active(self) -> bool:
        """Whether anything is split."""
        return self.strategy is not None or self.distribution is not None or self.processes > 1

    @property
    def devices(self) -> int:
        """Replicas (TensorFlow) or devices of this process (JAX) that share each step."""
        if self.strategy is not None:
            return int(self.strategy.num_replicas_in_sync)
        if self.distribution is not None:
            return int(np.asarray(self.distribution.device_mesh.devices).size)
        return 1

    def scope(self) -> contextlib.AbstractContextManager:
        """The context to build derived models and to evaluate in."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def step_rows(self, batch_size: int, fixed: bool = False) -> int:
        """Rows of one `predict` step of this process.

        `fixed`: the model takes exactly `batch_size` rows per call (per
        replica on TensorFlow, per step on JAX, where `batch_size` must then
        be a multiple of `devices`); otherwise `batch_size` rounded up to a
        multiple of `devices`.
        """
        if fixed:
            return batch_size * (self.devices if self.strategy is not None else 1)
        return math.ceil(batch_size / self.devices) * self.devices

    def padded_length(self, rows: int, batch_size: int, fixed: bool = False) -> int:
        """`rows` rounded up to a multiple of one step on every process."""
        unit = self.step_rows(batch_size, fixed) * self.processes
        return math.ceil(rows / unit) * unit


@functools.cache
def _local_data_parallel() -> Any:
    import jax

    return keras.distribution.DataParallel(devices=jax.local_devices(), auto_shard_dataset=False)


def current_split(model: keras.Model) -> Split:
    """How evaluations of `model` are split in the current context (module docstring).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> current_split(model).active
        False
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            return Split(strategy=strategy)
    elif backend == "jax" and keras.distribution.distribution() is not None:
        import jax

        if jax.process_count() > 1:
            return Split(distribution=_local_data_parallel(), processes=jax.process_count(),
                         process_id=jax.process_index())
        return Split(distribution=keras.distribution.distribution())
    return Split()


def local_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` on this process' devices, with its weights (JAX, several processes).

    The variables of a model built under a distribution over several
    processes span devices this process cannot address, and a computation
    over this process' devices cannot read them; the copy
    (`keras.models.clone_model` under a `DataParallel` over
    `jax.local_devices()`) holds this process' replica of every weight.

    Example:
        In one process it is a copy on the local devices all the same (JAX only):

        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> if keras.backend.backend() == "jax":
        ...     copy = local_copy(model)
        ...     np.testing.assert_allclose(copy.predict(np.ones((1, 2)), verbose=0),
        ...                                model.predict(np.ones((1, 2)), verbose=0))
    """
    with _local_data_parallel().scope():
        copy = keras.models.clone_model(model)
    if len(copy.weights) != len(model.weights):
        raise ValueError(
            f"keras.models.clone_model({model.name!r}) holds {len(copy.weights)} weights, the "
            f"model {len(model.weights)}: it cannot be evaluated on this process' devices."
        )
    # Data-parallel weights are replicated: this process' first shard is the whole value.
    copy.set_weights([np.asarray(v.value.addressable_data(0)) for v in model.weights])
    return copy


@contextlib.contextmanager
def distributed(model: keras.Model) -> Iterator[keras.Model]:
    """The model a study evaluates, in the scope its derived models are built in.

    Yields `model` itself, or its `local_copy` in a job of several JAX
    processes; inside, models are built under the current strategy or
    distribution (this process' devices across processes).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> with distributed(model) as evaluated:
        ...     evaluated is model
        True
    """
    split = current_split(model)
    if split.processes > 1:
        model = local_copy(model)
    with split.scope():
        yield model


def _rows(data: Any, index: np.ndarray) -> Any:
    return keras.tree.map_structure(lambda a: np.asarray(a)[index], data)


def _gather(outputs: np.ndarray, split: Split) -> np.ndarray:
    if split.processes == 1:
        return outputs
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(outputs, tiled=True))


_REPLICA_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _replica_call(model: keras.Model) -> Any:
    """`model(x, training=False)` as one `tf.function` per model and set of variables.

    Traced once per input shape; traced again when the model's variables
    change (`lesion_ready` creates the blocks' state variables afresh).
    """
    variables = tuple(id(v) for v in model.variables)
    cached = _REPLICA_CALLS.get(model)
    if cached is None or cached[0] != variables:
        import tensorflow as tf

        owner = weakref.ref(model)  # the cache must not keep the model alive
        cached = _REPLICA_CALLS[model] = (
            variables, tf.function(lambda x: owner()(x, training=False)))
    return cached[1]


def _replica_predict(model: keras.Model, x: Any, step: int, strategy: Any) -> np.ndarray:
    """`model` on `x`, `step` rows at a time, each step's rows split evenly over the replicas.

    `strategy.run` on per-replica slices: Keras' `predict` gives the same
    outputs, but distributes a dataset on every call (about 0.5 s each on CPU,
    for the many short evaluations of a study).
    """
    call, replicas = _replica_call(model), strategy.num_replicas_in_sync
    part = step // replicas
    outputs = []
    for start in range(0, len(keras.tree.flatten(x)[0]), step):
        def replica_rows(context, start=start):
            first = start + context.replica_id_in_sync_group * part
            return keras.tree.map_structure(
                lambda a: keras.ops.convert_to_tensor(a[first : first + part]), x)

        values = strategy.experimental_distribute_values_from_function(replica_rows)
        results = strategy.experimental_local_results(strategy.run(call, args=(values,)))
        outputs.extend(keras.ops.convert_to_numpy(r) for r in results)
    return np.concatenate(outputs)


def predict(model: keras.Model, x: Any, batch_size: int, fixed: bool = False) -> np.ndarray:
    """`model`'s outputs on every row of `x`, in row order, split as `current_split` says.

    In a job of several JAX processes, `model` must live on this process'
    devices: the model `distributed` yields, or one built inside it.

    Args:
        model: keras.Model with one output.
        x: array, or a list of arrays with the same number of rows.
        batch_size: int. Rows per step (per replica with `fixed`).
        fixed: bool. The model takes exactly `batch_size` rows per call (the
            stacked sweep); `x` must then hold `current_split(model).padded_length(
            rows, batch_size, fixed=True)` rows, and every row's outputs are
            returned, padding included. Defaults to False.

    Returns:
        np.ndarray: the outputs; without `fixed`, one row per row of `x`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
        >>> predict(model, np.ones((5, 2)), batch_size=2).shape
        (5, 3)
    """
    split = current_split(model)
    rows = len(keras.tree.flatten(x)[0])
    total = split.padded_length(rows, batch_size, fixed)
    if fixed and total != rows:
        raise ValueError(f"`x` must hold {total} rows with `fixed=True`. Received: {rows} rows")
    part = total // split.processes
    mine = np.arange(split.process_id * part, (split.process_id + 1) * part) % rows
    step = split.step_rows(batch_size, fixed)
    with split.scope():
        if split.strategy is not None:
            outputs = _replica_predict(model, _rows(x, mine), step, split.strategy)
        else:
            outputs = model.predict(_rows(x, mine), batch_size=step, verbose=0)
    outputs = _gather(np.asarray(outputs), split)
    return outputs if fixed else outputs[:rows]
