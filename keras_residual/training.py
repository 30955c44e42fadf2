"""The reusable parts of the training recipes: learning-rate schedules, weight decay, resume.

The ImageNet recipe is He et al., "Deep Residual Learning for Image
Recognition" (2015), Sec. 3.4: SGD with momentum 0.9, weight decay 1e-4,
learning rate 0.1 divided by 10 in steps (He et al. divide "when the error
plateaus"; the fixed drops at epochs 30, 60 and 80 of 90 are Goyal et al.,
"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (2017), Sec.
5.1), scaled to other batch sizes with Goyal et al.'s linear rule and
gradual warm-up (Sec. 2.1-2.2). Cosine decay is
Loshchilov and Hutter, "SGDR" (2017). The CIFAR recipe is He et al. 2015,
Sec. 4.2: batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, stop at 64k.

`examples/train_imagenet.py` and `examples/train_cifar.py` are thin scripts
over these functions; where they train (one device, the local devices, a
cluster of processes) is `keras_residual.distribution`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence

import keras
from keras import ops

from keras_residual.distribution import (  # noqa: F401  (part of this module's API)
    distribution_setup,
    is_chief,
    strategy_kind,
)

DECAYS = ("step", "cosine")

#: Goyal et al. 2017's (Sec. 5.1) ImageNet schedule for He et al.'s recipe: 90 epochs, drops at 30, 60, 80,
#: as fractions of the run so that a shorter run keeps its shape.
IMAGENET_STEP_FRACTIONS = (30 / 90, 60 / 90, 80 / 90)
#: He et al. 2015's CIFAR schedule: drops at 32k and 48k of 64k iterations.
CIFAR_STEP_FRACTIONS = (32_000 / 64_000, 48_000 / 64_000)


@keras.saving.register_keras_serializable(package="keras_residual")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to a peak learning rate, then step or cosine decay.

    With `w = warmup_steps`, `T = total_steps` and `p = peak_learning_rate`,
    the rate at (0-based) optimizer step `t` is

    - `p * (t + 1) / w` for `t < w` (Goyal et al. 2017, Sec. 2.2: a constant
      increase per step that reaches `p` at the end of warm-up; the first step
      is not wasted on a zero rate);
    - step decay: `p * decay_factor ** (number of boundaries <= t)` (He et al.
      2015, Sec. 3.4 and 4.2: divide by 10 at fixed steps);
    - cosine decay: `f + (p - f) * (1 + cos(pi * min(1, (t - w) / (T - w)))) / 2`
      with `f = final_learning_rate` (Loshchilov and Hutter 2017).

    Args:
        peak_learning_rate: float. The rate after warm-up (0.1 in He et al.).
        total_steps: int. Steps in the whole run, warm-up included; the end
            of the cosine.
        warmup_steps: int. Steps of linear warm-up. Defaults to 0.
        decay: str. "step" or "cosine". Defaults to "step".
        boundaries: sequence of int. Steps (counted from the start of the
            run) at which step decay multiplies the rate by `decay_factor`.
            Defaults to none.
        decay_factor: float. Factor of each step drop. Defaults to 0.1.
        final_learning_rate: float. Where the cosine ends. Defaults to 0.0.
        name: str. Name of the schedule. Defaults to "warmup_decay".

    Example:
        >>> from keras_residual.training import WarmupDecay
        >>> schedule = WarmupDecay(0.1, total_steps=100, warmup_steps=10,
        ...                        boundaries=[50, 75])
        >>> [round(float(schedule(t)), 4) for t in (0, 9, 49, 50, 75)]
        [0.01, 0.1, 0.1, 0.01, 0.001]
    """

    def __init__(
        self,
        peak_learning_rate: float,
        total_steps: int,
        warmup_steps: int = 0,
        decay: str = "step",
        boundaries: Sequence[int] = (),
        decay_factor: float = 0.1,
        final_learning_rate: float = 0.0,
        name: str = "warmup_decay",
    ):
        if decay not in DECAYS:
            raise ValueError(f"`decay` must be one of {DECAYS}. Received: decay={decay!r}")
        if peak_learning_rate <= 0:
            raise ValueError(
                f"`peak_learning_rate` must be positive. Received: {peak_learning_rate}"
            )
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                "Need total_steps >= 1 and 0 <= warmup_steps <= total_steps. "
                f"Received: total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"`boundaries` must be increasing. Received: {list(boundaries)}")
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.boundaries = [int(b) for b in boundaries]
        self.decay_factor = float(decay_factor)
        self.final_learning_rate = float(final_learning_rate)
        self.name = name

    def __call__(self, step):
        t = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        if self.decay == "step":
            drops = sum(ops.cast(ops.greater_equal(t, float(b)), "float32") for b in self.boundaries)
            after = peak * ops.power(self.decay_factor, ops.cast(drops, "float32"))
        else:
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((t - self.warmup_steps) / span, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            after = self.final_learning_rate + (peak - self.final_learning_rate) * cosine
        if self.warmup_steps == 0:
            return ops.cast(after, "float32")
        warm = peak * (t + 1.0) / self.warmup_steps
        return ops.where(ops.less(t, float(self.warmup_steps)), warm, after)

    def get_config(self) -> dict:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "boundaries": list(self.boundaries),
            "decay_factor": self.decay_factor,
            "final_learning_rate": self.final_learning_rate,
            "name": self.name,
        }


def linear_scaled_learning_rate(
    batch_size: int, base_learning_rate: float = 0.1, base_batch_size: int = 256
) -> float:
    """The linear scaling rule of Goyal et al. 2017, Sec. 2.1: lr = 0.1 x batch / 256.

    Example:
        >>> from keras_residual.training import linear_scaled_learning_rate
        >>> linear_scaled_learning_rate(1024)
        0.4
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive. Received: batch_size={batch_size}")
    return base_learning_rate * batch_size / base_batch_size


def imagenet_schedule(
    batch_size: int,
    steps_per_epoch: int,
    epochs: int = 90,
    warmup_epochs: float = 5.0,
    decay: str = "step",
) -> WarmupDecay:
    """He et al. 2015's ImageNet recipe with Goyal et al. 2017's schedule, scaling and warm-up.

    Peak rate `0.1 x batch_size / 256`; step decay divides it by 10 at 30, 60
    and 80 of 90 epochs (Goyal et al. 2017, Sec. 5.1; He et al. 2015, Sec.
    3.4, divide when the error plateaus), the same fractions of a shorter or
    longer run;
    cosine decay runs to zero at the last step.

    Args:
        batch_size: int. The global batch size (all replicas together).
        steps_per_epoch: int. Optimizer steps per epoch.
        epochs: int. Length of the run. Defaults to 90.
        warmup_epochs: float. Linear warm-up length (Goyal et al.: 5).
            Defaults to 5.0; capped at the run length.
        decay: str. "step" or "cosine". Defaults to "step".

    Example:
        >>> from keras_residual.training import imagenet_schedule
        >>> schedule = imagenet_schedule(512, steps_per_epoch=100, epochs=90)
        >>> schedule.peak_learning_rate, schedule.boundaries
        (0.2, [3000, 6000, 8000])
    """
    total = max(1, int(epochs * steps_per_epoch))
    warmup = min(total, int(round(warmup_epochs * steps_per_epoch)))
    return WarmupDecay(
        linear_scaled_learning_rate(batch_size),
        total_steps=total,
        warmup_steps=warmup,
        decay=decay,
        boundaries=[int(round(f * total)) for f in IMAGENET_STEP_FRACTIONS],
    )


def cifar_schedule(iterations: int = 64_000, learning_rate: float = 0.1) -> WarmupDecay:
    """He et al. 2015, Sec. 4.2: lr 0.1, divided by 10 at 32k and 48k iterations, stop at 64k.

    A shorter run (`iterations`) keeps the drops at the same fractions (1/2
    and 3/4 of the run).

    Example:
        >>> from keras_residual.training import cifar_schedule
        >>> cifar_schedule().boundaries
        [32000, 48000]
    """
    if iterations < 1:
        raise ValueError(f"`iterations` must be positive. Received: iterations={iterations}")
    return WarmupDecay(
        learning_rate,
        total_steps=iterations,
        boundaries=[int(round(f * iterations)) for f in CIFAR_STEP_FRACTIONS],
    )


def decayed_variables(model: keras.Model) -> list:
    """The variables weight decay applies to: the kernels of convolutions, dense and RNN layers.

    Batch-norm scales and offsets, biases and other scalars (ReZero's gate,
    lesion state) are left out, as in Goyal et al. 2017, Sec. 5.1 and the
    usual ResNet recipes.

    Example:
        >>> import keras
        >>> from keras_residual.training import decayed_variables
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc"),
        ...                           keras.layers.BatchNormalization()], name="net")
        >>> [v.path for v in decayed_variables(model)]
        ['net/fc/kernel']
    """
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: build it (call it on an input) first."
        )
    # Keras names kernels "kernel", "depthwise_kernel", "pointwise_kernel",
    # "recurrent_kernel"; every other trainable weight is a bias, a BN
    # parameter or a gate scalar.
    return [v for v in model.trainable_variables if v.name.endswith("kernel")]


def add_weight_decay(model: keras.Model, weight_decay: float = 1e-4) -> list:
    """Adds He et al. 2015's weight decay to the kernels of a built model as L2 losses.

    Caffe's `weight_decay: 1e-4`, which He et al. used, adds `1e-4 * w` to
    each gradient before momentum; `keras.regularizers.L2(5e-5)` (a loss
    `5e-5 * sum(w**2)`, gradient `1e-4 * w`) is the same update, whereas the
    optimizers' own `weight_decay` is decoupled (AdamW-style) and bypasses
    momentum. Regularization losses are also averaged correctly across
    replicas under `tf.distribute`.

    Args:
        model: keras.Model. A built model; its kernels get the regularizer.
        weight_decay: float. Caffe-style decay coefficient. Defaults to 1e-4.

    Returns:
        The list of variables that got the regularizer.

    Example:
        >>> import keras
        >>> from keras_residual.training import add_weight_decay
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> len(add_weight_decay(model)), len(model.losses)
        (1, 1)
    """
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
    variables = decayed_variables(model)
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None
    for variable in variables:
        variable.regularizer = regularizer
    return variables


def distribution_scope() -> tuple[contextlib.AbstractContextManager, str]:
    """`(scope, description)` of this process' `distribution.distribution_setup()`.

    Kept for scripts written against earlier versions; new code calls
    `keras_residual.distribution.distribution_setup()` first thing in `main`
    and enters `setup.scope()` around model building, `compile` and `fit`.

    Example:
        >>> from keras_residual.training import distribution_scope
        >>> scope, description = distribution_scope()
        >>> with scope:
        ...     pass
    """
    setup = distribution_setup()
    return setup.scope(), setup.description


class StopAtStep(keras.callbacks.Callback):
    """Stops `fit` once the optimizer has made `total_steps` updates.

    He et al.'s CIFAR runs end at an iteration count (64k), not at an epoch
    boundary; `fit` checks `stop_training` after every batch.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual.training import StopAtStep
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.zeros((8, 2)), np.zeros((8, 1)), batch_size=2, epochs=5,
        ...               callbacks=[StopAtStep(6)], verbose=0)
        >>> int(model.optimizer.iterations)
        6
    """

    def __init__(self, total_steps: int):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be positive. Received: {total_steps}")
        self.total_steps = int(total_steps)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.total_steps:
            self.model.stop_training = True


def training_callbacks(out_dir: str) -> list:
    """Resume, checkpoints and TensorBoard logs for a training run in `out_dir`.

    - `out_dir/backup`: `keras.callbacks.BackupAndRestore`; rerunning the same
      command after an interruption resumes from the last finished epoch
      (weights, optimizer state and epoch counter).
    - `out_dir/checkpoints/epoch_XXX.weights.h5`: the weights after every epoch.
    - `out_dir/logs`: TensorBoard scalars (loss, metrics, learning rate).

    In a cluster (`distribution.distribution_setup()`) only the chief,
    process 0, writes to `out_dir`. The other processes run the same callbacks
    (saving creates variables, which under a multi-process distribution every
    process must do together) into a temporary folder, and on a restart
    restore from the chief's backup (`RestoreOnly`): `out_dir` must be a
    folder every process reads (shared storage across machines).

    Example:
        >>> import tempfile
        >>> from keras_residual.training import training_callbacks
        >>> [type(c).__name__ for c in training_callbacks(tempfile.mkdtemp())]
        ['BackupAndRestore', 'ModelCheckpoint', 'TensorBoard']
    """
    setup = distribution_setup()
    restore = [] if setup.is_chief else [RestoreOnly(os.path.join(out_dir, "backup"))]
    out_dir = setup.output_dir(out_dir)
    return [
        *restore,
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out_dir, "checkpoints", "epoch_{epoch:03d}.weights.h5"),
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs")),
    ]


class RestoreOnly(keras.callbacks.Callback):
    """Restores a run from a `BackupAndRestore` backup that another process writes.

    The processes of a cluster hold the same weights; the chief backs them up,
    and on a restart every process starts from that backup.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> from keras_residual.training import RestoreOnly
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> folder = tempfile.mkdtemp()
        >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0, callbacks=[
        ...     keras.callbacks.BackupAndRestore(folder, delete_checkpoint=False)])
        >>> history = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=3, verbose=0,
        ...                     callbacks=[RestoreOnly(folder)])
        >>> history.epoch
        [2]
    """

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup = keras.callbacks.BackupAndRestore(backup_dir)

    def set_model(self, model):
        super().set_model(model)
        self.backup.set_model(model)

    def on_train_begin(self, logs=None):
        self.backup.on_train_begin(logs)


def restore_backup(model: keras.Model, out_dir: str) -> int:
    """Restores a compiled model from `out_dir/backup`; returns the optimizer steps already taken.

    The backup is the one `training_callbacks(out_dir)` keeps
    (`keras.callbacks.BackupAndRestore`, written at the end of every epoch).
    `fit` restores it again by itself; calling this first tells a script how
    many batches of a seeded, repeatable data stream the run has trained on,
    so that it can skip them (`dataset.skip(steps)`) and a resumed run trains
    on exactly the batches of an uninterrupted one. Returns 0, and changes
    nothing, where there is no backup.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> from keras_residual.training import restore_backup, training_callbacks
        >>> def compiled():
        ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        ...     model.compile("sgd", "mse")
        ...     return model
        >>> out, model = tempfile.mkdtemp(), compiled()
        >>> restore_backup(model, out)
        0
        >>> class Preempted(keras.callbacks.Callback):  # the job is killed in epoch 2 (0-based)
        ...     def on_train_batch_begin(self, batch, logs=None):
        ...         if int(self.model.optimizer.iterations) == 7:
        ...             raise KeyboardInterrupt
        >>> try:
        ...     model.fit(np.ones((6, 2)), np.ones((6, 1)), batch_size=2, epochs=5, verbose=0,
        ...               callbacks=[*training_callbacks(out), Preempted()])
        ... except KeyboardInterrupt:
        ...     pass
        >>> restore_backup(compiled(), out)  # two finished epochs of three steps
        6
    """
    backup = keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup"))
    backup.set_model(model)
    backup.on_train_begin()
    return int(ops.convert_to_numpy(model.optimizer.iterations))
