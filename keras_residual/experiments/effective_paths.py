"""Effective-path training, taken apart: which factor keeps it from matching normal training.

Veit, Wilber and Belongie (2016, Sec. 5) train a 54-block ResNet-110 with
exactly 23 random blocks per mini-batch and reach 5.96 % test error against
6.10 % for normal training. At MNIST scale (the 54-block residual MLP of
`experiments.ensemble`) the same recipe is several points worse after a few
epochs. `effective_path_ablation` varies one factor per row against the
default (`m="auto"`, the n/m branch rescale, Adam, the study's epochs):

- `m = n`: every block in every batch; must equal normal training within
  seed noise (it checks the machinery: the lesion-ready train step, the
  callback, precise BatchNorm);
- the n/m rescale of the trained branches on and off;
- m from the measured effective paths (`"auto"`) and the paper's
  round(23/54 n);
- Adam against SGD with momentum and He et al. (2015, Sec. 4.2)'s steps;
- the study's epochs against 5x as many (each block is trained in only m/n
  of the mini-batches, so it sees m/n of the updates normal training gives).

Every row trains, per seed, the normal network and the effective-path
network with the same optimizer and epochs, and reports for both the test
and training error of the full network after precise BatchNorm statistics
(`lesion.precise_batchnorm`), and for the effective-path network also the
mean test error of random m-block sub-networks (`lesion.subnetwork_error`,
with the moving statistics training left, which average over those
sub-networks). Networks of one optimizer share one compiled train step: a
run resets the weights to a fresh seeded initialization and the optimizer
to its initial state, so the 54 conditional branches of the lesion-ready
step are traced once, not once per run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import keras
import numpy as np


class AblationRow(TypedDict):
    """One row of the ablation: a setting and, per seed, what it trained to.

    `normal_error` / `effective_error`: test error of the full normally
    trained / effective-path network after precise BatchNorm, per seed;
    `normal_train_error` / `train_error`: the same on the training set;
    `running_train_error`: the effective-path network's running training
    error of its last epoch (the sampled sub-networks, training mode);
    `subnetwork_error`: mean test error of random m-block sub-networks.
    """

    setting: str
    m: int
    rescale: bool
    optimizer: str
    epochs: int
    normal_error: list[float]
    effective_error: list[float]
    normal_train_error: list[float]
    train_error: list[float]
    running_train_error: list[float]
    subnetwork_error: list[float]
    seconds: float


@dataclasses.dataclass(frozen=True)
class AblationSetting:
    """One factor setting of effective-path training.

    Attributes:
        setting: str. The row's name.
        m: int or str. Blocks per mini-batch: an int, "auto" (from the
            gradient per path length), "n" (all) or "paper" (round(23/54 n)).
        rescale: bool. Scale the trained branches by n / m. Defaults to True.
        optimizer: str. "adam" or "sgd" (with He et al.'s steps). Defaults to "adam".
        epoch_factor: int. Multiple of the study's epochs. Defaults to 1.
    """

    setting: str
    m: int | str
    rescale: bool = True
    optimizer: str = "adam"
    epoch_factor: int = 1

    def blocks(self, n: int, auto: int) -> int:
        """The m of this setting for `n` blocks and the measured `auto` m.

        Example:
            >>> AblationSetting("paper", "paper").blocks(54, 16)
            23
        """
        return {"auto": auto, "n": n, "paper": max(1, round(23 / 54 * n))}.get(self.m, self.m)


#: The rows of `effective_path_ablation`; the second is the study's default.
ABLATION: tuple[AblationSetting, ...] = (
    AblationSetting("m = n (control)", "n"),
    AblationSetting("default: m auto, rescale, Adam", "auto"),
    AblationSetting("no rescale", "auto", rescale=False),
    AblationSetting("m = round(23/54 n)", "paper"),
    AblationSetting("SGD + momentum, steps", "auto", optimizer="sgd"),
    AblationSetting("5x epochs", "auto", epoch_factor=5),
    AblationSetting("no rescale, 5x epochs", "auto", rescale=False, epoch_factor=5),
)


class _Networks:
    """One compiled network per (optimizer, lesion-ready), reset to a seeded start per run."""

    def __init__(self, build: Callable[..., keras.Model]):
        self.build, self.models = build, {}

    def fresh(self, seed: int, optimizer: str, lesion_ready: bool) -> keras.Model:
        keras.utils.set_random_seed(seed)
        start = self.build(optimizer=optimizer, lesion_ready=lesion_ready)
        key = (optimizer, lesion_ready)
        if key not in self.models:
            start.optimizer.build(start.trainable_variables)
            self.models[key] = (start, [v.numpy() for v in start.optimizer.variables])
            return start
        model, initial = self.models[key]
        for target, source in zip(model.weights, start.weights, strict=True):
            target.assign(source)
        for variable, value in zip(model.optimizer.variables, initial, strict=True):
            variable.assign(value)
        return model


def _errors(model: keras.Model, data: Any, seed: int) -> tuple[float, float]:
    """(test, training) error of the full network after precise BatchNorm statistics."""
    from keras_residual.lesion import classification_error, precise_batchnorm

    precise_batchnorm(model, data.x_train, batches=20, seed=seed)

    def error(x, y):
        return classification_error(model.predict(x, batch_size=500, verbose=0), y)

    return error(data.x_test, data.y_test), error(data.x_train, data.y_train)


def _fit(model: keras.Model, data: Any, epochs: int, optimizer: str, callbacks: list) -> float:
    """Train; the running training error of the last epoch."""
    from keras_residual.experiments.ensemble import sgd_steps

    if optimizer == "sgd":
        callbacks = [*callbacks, sgd_steps(epochs)]
    history = model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=128, verbose=0,
                        callbacks=callbacks)
    return 1.0 - float(history.history["accuracy"][-1])


def _run_row(networks: _Networks, normal_cache: dict, data: Any, row: AblationSetting,
             m: int, epochs: int, seed: int, draws: int) -> dict[str, float]:
    """One seed of one row: the normal network (cached per optimizer/epochs) and the m-block one."""
    from keras_residual.lesion import EffectivePathTraining, subnetwork_error

    key = (row.optimizer, epochs, seed)
    if key not in normal_cache:
        model = networks.fresh(seed, row.optimizer, lesion_ready=False)
        _fit(model, data, epochs, row.optimizer, [])
        normal_cache[key] = _errors(model, data, seed)
    model = networks.fresh(seed, row.optimizer, lesion_ready=True)
    running = _fit(model, data, epochs, row.optimizer,
                   [EffectivePathTraining(m, seed=seed, rescale=row.rescale)])
    sub = subnetwork_error(model, (data.x_test, data.y_test), m, rescale=row.rescale,
                           draws=draws, seed=seed)
    test, train = _errors(model, data, seed)
    return {"normal_error": normal_cache[key][0], "normal_train_error": normal_cache[key][1],
            "effective_error": test, "train_error": train, "running_train_error": running,
            "subnetwork_error": float(sub.mean())}


def effective_path_ablation(
    data: Any,
    build: Callable[..., keras.Model],
    auto: int,
    n: int,
    epochs: int,
    seeds: int = 3,
    rows: Sequence[AblationSetting] = ABLATION,
    draws: int = 5,
    checkpoint: Callable[[list[AblationRow]], None] | None = None,
) -> list[AblationRow]:
    """Effective-path training against normal training, one factor per row (Veit et al. 2016, Sec. 5).

    Args:
        data: an object with `x_train`, `y_train`, `x_test`, `y_test`.
        build: `build(optimizer=..., lesion_ready=...)` returns the compiled
            n-block network (e.g. `functools.partial(residual_mlp, blocks=54)`).
        auto: int. The m that `m="auto"` stands for (from the gradient per
            path length, `lesion.effective_training_blocks`).
        n: int. Number of blocks.
        epochs: int. The study's epochs (a row trains `epoch_factor` times as many).
        seeds: int. Seeds per row. Defaults to 3.
        rows: the settings. Defaults to `ABLATION`.
        draws: int. Random sub-networks per seed for `subnetwork_error`. Defaults to 5.
        checkpoint: called with the rows after every seed (to write them out).

    Returns:
        A list of `AblationRow`.

    Example:
        One row on random digits (a few seconds per backend;
        `examples/lesion_study.py --quick --preset ensemble54` runs all seven
        rows in the test suite):

        >>> import functools
        >>> from types import SimpleNamespace
        >>> from keras_residual.experiments.ensemble import residual_mlp
        >>> rng = np.random.default_rng(0)
        >>> digits = SimpleNamespace(x_train=rng.random((256, 784), "float32"),
        ...     y_train=np.arange(256) % 10, x_test=rng.random((32, 784), "float32"),
        ...     y_test=np.arange(32) % 10)
        >>> rows = effective_path_ablation(digits, functools.partial(residual_mlp, blocks=2),
        ...     auto=1, n=2, epochs=1, seeds=1, rows=ABLATION[:1], draws=1)  # doctest: +SKIP
        [ablation] m = n (control): m=2, 1 epochs, ...
        >>> rows[0]["m"], len(rows[0]["effective_error"])  # doctest: +SKIP
        (2, 1)
    """
    networks, normal_cache, results = _Networks(build), {}, []
    for row in rows:
        m, start = row.blocks(n, auto), time.perf_counter()
        record: AblationRow = {
            "setting": row.setting, "m": m, "rescale": row.rescale, "optimizer": row.optimizer,
            "epochs": epochs * row.epoch_factor, "normal_error": [], "effective_error": [],
            "normal_train_error": [], "train_error": [], "running_train_error": [],
            "subnetwork_error": [], "seconds": 0.0,
        }
        results.append(record)
        for seed in range(seeds):
            for name, value in _run_row(networks, normal_cache, data, row, m,
                                        record["epochs"], seed, draws).items():
                record[name].append(value)
            record["seconds"] = time.perf_counter() - start
            if checkpoint is not None:
                checkpoint(results)
        print(f"[ablation] {row.setting}: m={m}, {record['epochs']} epochs, normal "
              f"{np.mean(record['normal_error']):.4f}, effective "
              f"{np.mean(record['effective_error']):.4f}, sub-networks "
              f"{np.mean(record['subnetwork_error']):.4f} ({record['seconds']:.0f} s)")
    return results


def ablation_table(rows: Sequence[AblationRow]) -> str:
    """The ablation as a markdown table: mean +- std over seeds, in percent.

    Example:
        >>> row = {"setting": "m = n", "m": 4, "rescale": True, "optimizer": "adam",
        ...        "epochs": 2, "normal_error": [0.1, 0.3], "effective_error": [0.2, 0.2],
        ...        "normal_train_error": [0.0], "train_error": [0.0],
        ...        "running_train_error": [0.1], "subnetwork_error": [0.5]}
        >>> print(ablation_table([row]).splitlines()[2])
        | m = n | 4 | on | adam | 2 | 0.0 | 20.0 +- 0.0 | 20.0 +- 10.0 | +0.0 | 50.0 +- 0.0 |
    """

    def pct(values):
        values = 100 * np.asarray(values, dtype="float64")
        return f"{values.mean():.1f} +- {values.std():.1f}"

    lines = ["| setting | m | rescale | optimizer | epochs | train error (%) | effective-path "
             "test error (%) | normal test error (%) | difference (points) | m-block "
             "sub-networks (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gap = 100 * (np.mean(r["effective_error"]) - np.mean(r["normal_error"]))
        lines.append(
            f"| {r['setting']} | {r['m']} | {'on' if r['rescale'] else 'off'} | "
            f"{r['optimizer']} | {r['epochs']} | {100 * np.mean(r['train_error']):.1f} | "
            f"{pct(r['effective_error'])} | {pct(r['normal_error'])} | {gap:+.1f} | "
            f"{pct(r['subnetwork_error'])} |")
    return "\n".join(lines) + "\n"
