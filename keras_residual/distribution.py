"""Where training runs: one device, the local devices, or several processes.

`distribution_setup()` is called first thing in a script's `main`, before
data pipelines and models, once per process (a second call returns the same
setup). What it sets up:

- JAX with the cluster variables set (`CLUSTER_VARIABLES`, Keras' own names,
  read by `keras.distribution.initialize`): every process joins the cluster,
  then trains under `keras.distribution.DataParallel` over the devices of all
  processes. Each process feeds its part of every global batch
  (`DistributionSetup.process_batches`); process 0 is the chief, the only one
  that writes checkpoints, logs and results. On CPUs the processes talk
  through gloo collectives.
- JAX on one process: `DataParallel` over the local devices when there are
  several.
- TensorFlow: `tf.distribute.MirroredStrategy` over several local GPUs. Not
  across machines: Keras 3's `fit` does not support
  `MultiWorkerMirroredStrategy` (keras-team/keras issue 20585), so a
  `TF_CONFIG` cluster or the cluster variables stop the script at startup
  with an error that says to run the same script on JAX.
- PyTorch: one device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

#: Keras' own names for a cluster (`keras.distribution.initialize` reads them): set all three
#: in every process.
CLUSTER_VARIABLES = {
    "KERAS_DISTRIBUTION_JOB_ADDRESSES": "host:port of process 0 (the coordinator); a "
    "comma-separated list of every process' address also works",
    "KERAS_DISTRIBUTION_NUM_PROCESSES": "the number of processes N",
    "KERAS_DISTRIBUTION_PROCESS_ID": "this process' index, 0 ... N-1 (0 is the chief)",
}
#: Keras 3's `fit` under `tf.distribute.MultiWorkerMirroredStrategy` fails (open upstream).
KERAS_MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"

_SETUP: DistributionSetup | None = None


@dataclasses.dataclass(frozen=True)
class DistributionSetup:
    """What `distribution_setup()` chose for this process.

    Attributes:
        description: str. What was chosen, for logs.
        num_processes: int. Processes training together (1 without a cluster).
        process_id: int. This process' index; 0 is the chief.
        distribution: a `keras.distribution.Distribution` (JAX) or None.
        strategy: a `tf.distribute.Strategy` (TensorFlow) or None.

    Example:
        >>> setup = DistributionSetup("jax: one device")
        >>> setup.is_chief, setup.process_batch_size(128)
        (True, 128)
        >>> with setup.scope():
        ...     pass
    """

    description: str
    num_processes: int = 1
    process_id: int = 0
    distribution: Any = None
    strategy: Any = None

    @property
    def is_chief(self) -> bool:
        """Whether this process writes checkpoints, logs and results (process 0)."""
        return self.process_id == 0

    def scope(self) -> contextlib.AbstractContextManager:
        """A fresh context to build, compile and fit models in (enter it as often as needed).

        On JAX the distribution is current only inside it (the previous one is
        restored on exit); `fit` must run inside it too, since it shards its
        batches by the current distribution.
        """
        if self.distribution is not None:
            return self.distribution.scope()
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def process_batch_size(self, global_batch_size: int) -> int:
        """The rows of each global batch this process feeds: `global_batch_size / num_processes`."""
        if global_batch_size < 1 or global_batch_size % self.num_processes:
            raise ValueError(
                f"The global batch size must be a positive multiple of the {self.num_processes} "
                f"processes, since each feeds an equal part of every batch. Received: "
                f"batch_size={global_batch_size}"
            )
        return global_batch_size // self.num_processes

    def process_batches(self, dataset: Any, global_batch_size: int, pad: bool = False) -> Any:
        """This process' rows of every global batch of a batched `tf.data.Dataset`.

        The dataset, the same in every process (same seed), yields
        `(inputs, targets)` batches of `global_batch_size` rows; process `i` of
        `N` keeps rows `i * b ... (i + 1) * b - 1` of each (`b = global / N`),
        so the processes together train on exactly the single-process batches.
        With one process the dataset is returned unchanged.

        Args:
            dataset: tf.data.Dataset of `(inputs, targets)` batches.
            global_batch_size: int. Rows of a full batch.
            pad: bool. For evaluation: a last, shorter batch is padded to the
                full size with rows of sample weight 0, and every batch gets
                sample weights, so that metrics count each image once.
                Defaults to False (training batches must be full).

        Returns:
            The dataset this process passes to `fit` or `evaluate`.
        """
        part = self.process_batch_size(global_batch_size)
        if self.num_processes == 1:
            return dataset
        import tensorflow as tf

        start = self.process_id * part

        def padded(x, y):
            rows = tf.shape(y)[0]
            missing = global_batch_size - rows

            def pad_rows(t):
                return tf.pad(t, [[0, missing]] + [[0, 0]] * (len(t.shape) - 1))

            weights = tf.concat([tf.ones([rows]), tf.zeros([missing])], axis=0)
            return pad_rows(x), pad_rows(y), weights

        if pad:
            dataset = dataset.map(padded)
        return dataset.map(lambda *batch: tuple(t[start : start + part] for t in batch))

    def process_arrays(self, x: Any, y: Any, global_batch_size: int, shuffle: bool = False,
                       pad: bool = False) -> Any:
        """This process' part of every global batch of NumPy arrays, as a `keras.utils.PyDataset`.

        Each epoch's order is `np.random.permutation(len(x))` drawn at the
        start of the epoch (the draw `fit(x, y, shuffle=True)` makes on JAX),
        the same in every process once `keras.utils.set_random_seed` gave
        them one seed. A last, shorter batch cannot be split into equal parts:
        training (`pad=False`) leaves it out, since padding rows would enter
        BatchNorm's batch statistics; evaluation (`pad=True`) pads it with rows
        of sample weight 0.

        Example:
            >>> import numpy as np
            >>> setup = DistributionSetup("two processes", num_processes=2, process_id=1)
            >>> batches = setup.process_arrays(np.arange(10), np.arange(10), 4, pad=True)
            >>> [batches[i][0].tolist() for i in range(len(batches))]
            [[2, 3], [6, 7], [0, 0]]
            >>> batches[2][2].tolist()
            [0.0, 0.0]
        """
        return _ProcessArrays(self, x, y, global_batch_size, shuffle, pad)

    def sync(self, name: str) -> None:
        """Waits until every process has come here (at once with one process).

        For files: what the chief wrote before `sync(name)` every process
        reads after it. Uses `jax.experimental.multihost_utils.sync_global_devices`.
        """
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def output_dir(self, out_dir: str) -> str:
        """`out_dir` for the chief; a fresh temporary folder for the other processes."""
        return out_dir if self.is_chief else tempfile.mkdtemp(prefix="keras_residual_process_")


class _ProcessArrays(keras.utils.PyDataset):
    """`DistributionSetup.process_arrays`: this process' rows of each global batch."""

    def __init__(self, setup, x, y, global_batch_size, shuffle, pad):
        super().__init__()
        self.x, self.y, self.shuffle, self.pad = x, y, shuffle, pad
        self.size = global_batch_size
        self.part = setup.process_batch_size(global_batch_size)
        self.start = setup.process_id * self.part
        self.order = np.arange(len(x))

    def __len__(self):
        return (math.ceil if self.pad else math.floor)(len(self.x) / self.size)

    def on_epoch_begin(self):
        if self.shuffle:
            self.order = np.random.permutation(len(self.x))

    def __getitem__(self, index):
        rows = self.order[index * self.size : (index + 1) * self.size]
        weights = np.ones(self.size, "float32")
        if len(rows) < self.size:  # only with pad=True: weight-0 copies of row 0
            weights[len(rows):] = 0.0
            rows = np.concatenate([rows, np.zeros(self.size - len(rows), rows.dtype)])
        mine = rows[self.start : self.start + self.part]
        batch = (self.x[mine], self.y[mine])
        return (*batch, weights[self.start : self.start + self.part]) if self.pad else batch


def cluster_from_environment(environ: Mapping[str, str]) -> tuple[str, int, int] | None:
    """`(coordinator address, process count, process id)` from `CLUSTER_VARIABLES`, or None.

    Raises:
        ValueError: only some of the variables are set, or they do not parse.

    Example:
        >>> cluster_from_environment({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234",
        ...                           "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        ...                           "KERAS_DISTRIBUTION_PROCESS_ID": "1"})
        ('10.0.0.1:1234', 2, 1)
        >>> cluster_from_environment({}) is None
        True
    """
    values = {name: environ.get(name, "") for name in CLUSTER_VARIABLES}
    given = {name: value for name, value in values.items() if value}
    if not given:
        return None
    address, count, index = values.values()
    try:
        if len(given) < len(values):
            raise ValueError("set all three")
        count, index = int(count), int(index)
        if not 0 <= index < count:
            raise ValueError("the process id must be in 0 ... N-1")
    except ValueError as error:
        raise ValueError(
            f"A cluster needs all of {', '.join(CLUSTER_VARIABLES)} ({error}). Received: "
            + ", ".join(f"{name}={value!r}" for name, value in values.items())
        ) from None
    return address, count, index


def is_chief(tf_config: str | None) -> bool:
    """Whether this process is the chief of a TF_CONFIG cluster (True without a cluster).

    The chief is the task of type "chief", or worker 0 where the cluster has
    no chief.

    Example:
        >>> is_chief('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
        False
    """
    if not tf_config:
        return True
    config = json.loads(tf_config)
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if task.get("type") == "chief":
        return True
    return "chief" not in cluster and task.get("type") == "worker" and task.get("index", 0) == 0


def strategy_kind(tf_config: str | None, num_gpus: int) -> str:
    """Which `tf.distribute` strategy a TF_CONFIG and GPU count call for.

    "multi_worker" when TF_CONFIG names a cluster (which `distribution_setup`
    refuses, see the module docstring), "mirrored" over several local GPUs,
    else "default".

    Example:
        >>> strategy_kind(None, 4), strategy_kind(None, 1)
        ('mirrored', 'default')
    """
    if tf_config and json.loads(tf_config).get("cluster"):
        return "multi_worker"
    return "mirrored" if num_gpus > 1 else "default"


def distribution_setup() -> DistributionSetup:
    """Sets up this process' distribution once; later calls return the same setup.

    Call it first thing in `main`, before building data pipelines or models:
    joining a JAX cluster must come before anything starts JAX's runtime. See
    the module docstring for what each backend gets, and `CLUSTER_VARIABLES`.

    Raises:
        RuntimeError: a cluster was asked for on TensorFlow (Keras 3's `fit`
            does not support `MultiWorkerMirroredStrategy`, keras-team/keras
            issue 20585) or PyTorch, or JAX had started before this call.

    Example:
        >>> from keras_residual.distribution import distribution_setup
        >>> setup = distribution_setup()
        >>> setup is distribution_setup(), setup.num_processes
        (True, 1)
    """
    global _SETUP
    if _SETUP is None:
        _SETUP = _create_setup(keras.backend.backend(), os.environ)
    return _SETUP


def _create_setup(backend: str, environ: Mapping[str, str]) -> DistributionSetup:
    cluster = cluster_from_environment(environ)
    if backend == "tensorflow":
        return _tensorflow_setup(cluster, environ.get("TF_CONFIG"))
    if backend == "jax":
        return _jax_cluster_setup(*cluster) if cluster else _jax_local_setup()
    if cluster:
        raise RuntimeError(
            f"Training across processes runs on JAX; {backend} trains on one device here. Run "
            "the same command with KERAS_BACKEND=jax."
        )
    return DistributionSetup(f"{backend}: one device")


def _tensorflow_setup(cluster: tuple | None, tf_config: str | None) -> DistributionSetup:
    # Decided before anything touches TensorFlow's runtime: listing devices starts it, after
    # which no collective (multi-worker) strategy can be made.
    if cluster or strategy_kind(tf_config, 0) == "multi_worker":
        asked = "the KERAS_DISTRIBUTION_* variables" if cluster else "TF_CONFIG"
        raise RuntimeError(
            f"{asked} ask for training across processes, which this library does not do on "
            "TensorFlow: Keras 3's `fit` does not support tf.distribute.MultiWorkerMirroredStrategy "
            f"({KERAS_MULTI_WORKER_ISSUE}). Run the same script on JAX: unset TF_CONFIG, set "
            "KERAS_BACKEND=jax and, in every process, "
            + ", ".join(CLUSTER_VARIABLES) + " (see README, 'Past one machine')."
        )
    import tensorflow as tf

    gpus = len(tf.config.list_logical_devices("GPU"))
    if strategy_kind(None, gpus) == "mirrored":
        return DistributionSetup(f"tensorflow: MirroredStrategy over {gpus} local device(s)",
                                 strategy=tf.distribute.MirroredStrategy())
    return DistributionSetup("tensorflow: the default strategy over 1 local device(s)")


def _jax_local_setup() -> DistributionSetup:
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        return DistributionSetup("jax: one device")
    return DistributionSetup(f"jax: DataParallel over {len(devices)} devices",
                             distribution=keras.distribution.DataParallel(devices=devices))


def _jax_cluster_setup(address: str, count: int, index: int) -> DistributionSetup:
    import jax

    # CPU processes exchange gradients through gloo (JAX's default has no CPU collectives);
    # GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize(job_addresses=address, num_processes=count,
                                      process_id=index)
    except RuntimeError as error:
        raise RuntimeError(
            f"Could not join the cluster as process {index} of {count} at {address}: {error}. "
            "Call keras_residual.distribution.distribution_setup() first thing in main, before "
            "anything runs on JAX."
        ) from error
    devices = jax.devices()
    return DistributionSetup(
        f"jax: DataParallel over {len(devices)} devices in {count} processes "
        f"(this is process {index})",
        num_processes=count, process_id=index,
        # Each process feeds its own part of every batch (process_batches), so Keras must
        # not shard the datasets again.
        distribution=keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False),
    )
