"""The 54-block study: every figure of Veit et al. (2016) at MNIST scale, and effective paths.

Veit, Wilber and Belongie, "Residual Networks Behave Like Ensembles of
Relatively Shallow Networks" (2016) lesion a 54-block pre-activation
ResNet-110 on CIFAR-10. `ensemble54_study` runs the same analysis on a
54-block pre-activation residual MLP (`residual_mlp(blocks=54)`) and its plain
twin on MNIST: single deletion (Fig. 3), the gradient per path length (Fig.
6) whose effective range fixes m, effective-path training against normal
training per seed (Sec. 5) and its ablation (`experiments.effective_paths`),
k-block deletion (Fig. 5a) with the joint
prediction from Figs. 6c and 7, stochastic depth (Fig. 8) and reordering
(Fig. 5b). `examples/lesion_study.py --preset ensemble54` is its command line.

The results schema (`Ensemble54Results`) is defined here; `results.json` is
written after every stage (`complete` is False until the end) and
`results_table` prints it beside the paper's numbers (`published.VEIT_2016`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypedDict

import keras
import numpy as np
from keras import layers

from keras_residual.blocks import linear_decay_drop_rates
from keras_residual.experiments import published
from keras_residual.residual import Residual


class SingleDeletionRecord(TypedDict):
    """Fig. 3: error with each block deleted, residual net and plain twin."""

    residual_intact: float
    residual_errors: list[float]
    plain_intact: float
    plain_errors: list[float]


class EffectivePathRecord(TypedDict):
    """Sec. 5: m blocks trained per mini-batch; test errors per seed (after precise BatchNorm).

    The default row of the ablation (`experiments.effective_paths`).
    """

    m: int
    normal_error: list[float]
    effective_error: list[float]


class Ensemble54Results(TypedDict, total=False):
    """The fields of the 54-block study's `results.json` (each stage adds its own).

    `gradient_*`, `effective_*` and `path_range_95` come from the gradient per
    path length (Fig. 6); `k_deletion` (Fig. 5a) holds `ks`, `mean`, `std`;
    `joint_prediction` the k-deletion error against the lost gradient-weighted
    share of paths; `stochastic_depth` (Fig. 8) `intact` and `errors`;
    `reordering` (Fig. 5b) `ks`, `kendall_tau`, `error`; `figures` the PNG
    file names by figure. `gradient_batch_mode` is Fig. 6 measured as the
    paper does (one mini-batch gradient per measurement, training mode):
    `decay_per_block`, `effective_path_range`, `effective_share`, `m_auto`;
    `effective_path_ablation` the rows of `effective_paths.AblationRow`.
    """

    dataset: str
    blocks: int
    epochs: int
    seeds: int
    train_samples: int
    test_samples: int
    complete: bool
    figures: dict[str, str]
    single_deletion: SingleDeletionRecord
    effective_path_range: list[int]
    effective_share: float
    effective_share_of_paths: float
    gradient_samples_per_length: int
    gradient_measured_lengths: list[int]
    gradient_interpolated_lengths: list[int]
    gradient_mean_norm: list[float]
    gradient_decay_per_block: float
    gradient_seconds: float
    path_range_95: list[int]
    remaining_paths_after_10: list[float]
    effective_path_training: EffectivePathRecord
    k_deletion: dict[str, list]
    joint_prediction: dict[str, Any]
    stochastic_depth: dict[str, Any]
    reordering: dict[str, list]
    gradient_batch_mode: dict[str, Any]
    effective_path_ablation: list[dict[str, Any]]


def residual_mlp(
    plain: bool = False, final_survival: float = 1.0, blocks: int = 12, width: int = 64,
    optimizer: str = "adam", lesion_ready: bool = False,
) -> keras.Model:
    """A pre-activation residual MLP for MNIST (or its plain twin with `plain=True`), compiled.

    Each block is `Residual(BN-ReLU-Dense)` (He et al. 2016, Fig. 4e, with a
    Dense layer); the plain twin has the same layers with `shortcut="none"`.
    `final_survival < 1` adds stochastic depth with linearly decaying
    survival (Huang et al. 2016, Eq. 4). Sparse cross-entropy and
    `optimizer="adam"` (Adam at 2e-3) or `"sgd"` (SGD at 0.1 with momentum
    0.9, He et al. 2015, Sec. 4.2; `sgd_steps` gives their step schedule as
    a callback). `lesion_ready=True` builds the blocks lesion-ready, so
    effective-path training traces its train step once.

    Example:
        >>> from keras_residual.surgery import residual_blocks
        >>> len(residual_blocks(residual_mlp(blocks=3)))
        3
    """
    rates = linear_decay_drop_rates(blocks, final_survival)
    inputs = keras.Input((784,))
    x = layers.Dense(width, name="stem")(inputs)
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(momentum=0.9, name="stem_bn")(x))
    for i, rate in enumerate(rates, start=1):
        branch = keras.Sequential(
            [layers.BatchNormalization(momentum=0.9), layers.ReLU(), layers.Dense(width)],
            name=f"block{i}_branch",
        )
        x = Residual(branch, shortcut="none" if plain else "identity", lesion_ready=lesion_ready,
                     drop_rate=0.0 if plain else float(rate), name=f"block{i}")(x)
    x = layers.ReLU(name="post_relu")(layers.BatchNormalization(momentum=0.9, name="post_bn")(x))
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="mnist_plain_mlp" if plain else "mnist_residual_mlp")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: {optimizer!r}")
    model.compile(keras.optimizers.Adam(2e-3) if optimizer == "adam"
                  else keras.optimizers.SGD(SGD_RATE, momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


OPTIMIZERS = ("adam", "sgd")
SGD_RATE = 0.1


def sgd_steps(epochs: int) -> keras.callbacks.Callback:
    """He et al. (2015, Sec. 4.2)'s steps over `epochs`: the rate / 10 at 1/2 and again at 3/4.

    Example:
        >>> steps = sgd_steps(8)
        >>> [round(steps.schedule(e), 6) for e in range(8)]
        [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, rate=None: SGD_RATE * 0.1 ** ((epoch >= epochs / 2) + (epoch >= 3 * epochs / 4)))


def joint_prediction(gradients: Any, kdel: Any) -> dict:
    """k-deletion error against the gradient-weighted share of paths surviving k deletions.

    Veit et al. 2016, Sec. 5: deleting d of n blocks leaves C(n-d, l)/C(n, l)
    of the paths of length l (Fig. 7); weighted by the gradient share of
    each length (Fig. 6c) this is the share of the effective paths that
    survive. If the effective paths carry the performance, the k-deletion
    error (Fig. 5a) rises as that share falls.

    Args:
        gradients: `lesion.GradientPathResult`.
        kdel: `lesion.KDeletionResult`.

    Returns:
        dict with the ks, the surviving share, the errors and two correlations.

    Example:
        >>> from types import SimpleNamespace
        >>> g = SimpleNamespace(n_blocks=3, total=np.array([0.1, 0.6, 0.3, 0.0]))
        >>> k = SimpleNamespace(ks=np.array([0, 1, 2, 3]), mean=np.array([0.1, 0.2, 0.4, 0.8]))
        >>> joint_prediction(g, k)["spearman_error_vs_lost_share"]
        1.0
    """
    from scipy import stats

    from keras_residual.lesion import remaining_path_fraction

    n = gradients.n_blocks
    share = np.array([float(np.dot(gradients.total, remaining_path_fraction(n, int(k))))
                      for k in kdel.ks])
    rho = stats.spearmanr(1.0 - share, kdel.mean).statistic if len(share) > 2 else float("nan")
    r = stats.pearsonr(1.0 - share, kdel.mean).statistic if len(share) > 2 else float("nan")
    return {"ks": [int(k) for k in kdel.ks], "surviving_gradient_share": share.tolist(),
            "k_deletion_error": np.asarray(kdel.mean).tolist(),
            "spearman_error_vs_lost_share": float(rho), "pearson_error_vs_lost_share": float(r)}


def _error(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) != y))


class _Study:
    """The state one `ensemble54_study` run carries from stage to stage."""

    def __init__(self, data: Any, out_dir: str, blocks: int, epochs: int, seeds: int,
                 progress: bool):
        self.data, self.out_dir, self.n, self.epochs, self.progress = (
            data, out_dir, blocks, epochs, progress)
        self.test = (data.x_test, data.y_test)
        self.results: Ensemble54Results = {
            "dataset": data.source, "blocks": blocks, "epochs": epochs, "seeds": seeds,
            "train_samples": len(data.x_train), "test_samples": len(data.x_test),
            "complete": False, "figures": {},
        }

    def train(self, seed: int, plain: bool = False, final_survival: float = 1.0,
              callbacks: tuple = ()) -> keras.Model:
        keras.utils.set_random_seed(seed)
        model = residual_mlp(plain=plain, final_survival=final_survival, blocks=self.n)
        model.fit(self.data.x_train, self.data.y_train, epochs=self.epochs, batch_size=128,
                  verbose=0, callbacks=list(callbacks))
        return model

    def figure(self, key: str, fig: Any, name: str) -> None:
        from keras_residual.figures import save_figure

        save_figure(fig, os.path.join(self.out_dir, name))
        self.results["figures"][key] = name

    def checkpoint(self) -> None:
        # Every stage adds its numbers at once: a long run leaves what it measured so far.
        with open(os.path.join(self.out_dir, "results.json"), "w") as file:
            json.dump(self.results, file, indent=1)


def _single_deletion_stage(study: _Study, residual: keras.Model, plain: keras.Model) -> Any:
    from keras_residual.lesion import plots, single_block_deletion

    single = single_block_deletion(residual, study.test, progress=study.progress)
    single_plain = single_block_deletion(plain, study.test, progress=study.progress)
    study.results["single_deletion"] = {
        "residual_intact": single.intact_error, "residual_errors": single.errors.tolist(),
        "plain_intact": single_plain.intact_error, "plain_errors": single_plain.errors.tolist(),
    }
    print(f"[ensemble54] single deletion: residual intact {single.intact_error:.3f}, mean "
          f"{single.errors.mean():.3f}, worst {single.errors.max():.3f}; plain intact "
          f"{single_plain.intact_error:.3f}, mean {single_plain.errors.mean():.3f}")
    study.figure("fig3", plots.plot_single_deletion(single, single_plain), "fig3_single.png")
    return single


def _gradient_stage(study: _Study, residual: keras.Model, samples: int) -> Any:
    from keras_residual.lesion import (
        gradient_per_path_length,
        path_length_interval,
        plots,
        range_share,
        remaining_path_fraction,
    )

    start = time.perf_counter()
    gradients = gradient_per_path_length(residual, (study.data.x_train, study.data.y_train),
                                         samples=samples, progress=study.progress)
    seconds = time.perf_counter() - start
    lo, hi = (int(v) for v in gradients.effective_range)
    study.results.update(
        effective_path_range=[lo, hi],
        effective_share=gradients.effective_share,
        effective_share_of_paths=range_share(gradients.distribution, (lo, hi)),
        gradient_samples_per_length=gradients.samples_per_length,
        gradient_measured_lengths=gradients.lengths.tolist(),
        gradient_interpolated_lengths=gradients.interpolated_lengths.tolist(),
        gradient_mean_norm=gradients.mean_norm.tolist(),
        gradient_decay_per_block=gradients.decay_per_block,
        gradient_seconds=seconds,
        path_range_95=[int(v) for v in path_length_interval(study.n, 0.95)],
        remaining_paths_after_10=remaining_path_fraction(study.n, min(10, study.n))[[lo, hi]].tolist(),
    )
    print(f"[ensemble54] gradient per path length: {gradients.samples_per_length} samples at "
          f"lengths {gradients.lengths.tolist()} in {seconds:.0f} s; decay "
          f"x{gradients.decay_per_block:.3f} per block; effective paths {lo}-{hi} "
          f"({gradients.effective_share:.3f} of the gradient)")
    study.figure("fig6", plots.plot_path_gradients(gradients), "fig6_path_gradients.png")
    study.figure("fig7", plots.plot_remaining_paths(study.n), "fig7_remaining_paths.png")
    return gradients


def _gradient_batch_stage(study: _Study, residual: keras.Model, samples: int) -> None:
    """Fig. 6 measured as Veit et al. describe it: one mini-batch gradient, training mode."""
    from keras_residual.lesion import gradient_per_path_length

    start = time.perf_counter()
    g = gradient_per_path_length(residual, (study.data.x_train, study.data.y_train),
                                 samples=samples, batch_size=min(128, len(study.data.x_train)),
                                 mode="batch", progress=study.progress)
    lo, hi = (int(v) for v in g.effective_range)
    study.results["gradient_batch_mode"] = {
        "samples_per_length": g.samples_per_length, "batch_size": g.batch_size,
        "measured_lengths": g.lengths.tolist(), "mean_norm": g.mean_norm.tolist(),
        "decay_per_block": g.decay_per_block, "effective_path_range": [lo, hi],
        "effective_share": g.effective_share, "m_auto": effective_m(g),
        "seconds": time.perf_counter() - start,
    }
    print(f"[ensemble54] gradient per path length, mini-batch mode ({g.samples_per_length} "
          f"batches of {g.batch_size} per length, training mode): decay "
          f"x{g.decay_per_block:.3f} per block; effective paths {lo}-{hi} "
          f"({g.effective_share:.3f} of the gradient)")


def effective_m(gradients: Any) -> int:
    """m for effective-path training from a gradient per path length (`m="auto"`).

    Twice the mean of the gradient-weighted path lengths
    (`lesion.effective_training_blocks`), so that Binomial(m, 1/2) is
    centred on the effective paths (Veit et al. 2016, Sec. 5).

    Example:
        >>> from types import SimpleNamespace
        >>> effective_m(SimpleNamespace(total=np.array([0.0, 0.0, 1.0, 0.0, 0.0])))
        4
    """
    from keras_residual.lesion import effective_training_blocks

    return effective_training_blocks(gradients.total)


def _effective_path_stage(study: _Study, gradients: Any, seeds: int, ablation: bool) -> None:
    """Sec. 5 per seed, inside the ablation (`experiments.effective_paths`) or its default row."""
    import functools

    from keras_residual.experiments import effective_paths

    rows = effective_paths.ABLATION if ablation else effective_paths.ABLATION[1:2]
    default = effective_paths.ABLATION[1]

    def checkpoint(done: list) -> None:
        if ablation:
            study.results["effective_path_ablation"] = done
        main = next((r for r in done if r["setting"] == default.setting), None)
        if main is not None:
            study.results["effective_path_training"] = {
                "m": main["m"], "normal_error": main["normal_error"],
                "effective_error": main["effective_error"]}
        study.checkpoint()

    effective_paths.effective_path_ablation(
        study.data, functools.partial(residual_mlp, blocks=study.n), effective_m(gradients),
        study.n, study.epochs, seeds, rows, checkpoint=checkpoint)


def _k_deletion_stage(study: _Study, residual: keras.Model, gradients: Any, draws: int) -> None:
    from keras_residual.lesion import k_block_deletion, plots

    ks = sorted({k for k in (0, 1, 2, 5, 10, 15, 20, 30, 40) if k <= study.n} | {study.n})
    kdel = k_block_deletion(residual, study.test, ks, draws, progress=study.progress)
    study.results["k_deletion"] = {"ks": ks, "mean": kdel.mean.tolist(), "std": kdel.std.tolist()}
    study.figure("fig5a", plots.plot_k_deletion(kdel), "fig5a_k_deletion.png")
    study.results["joint_prediction"] = joint_prediction(gradients, kdel)


def _stochastic_depth_stage(study: _Study, single: Any) -> None:
    from keras_residual.lesion import (
        ResilienceResult,
        plots,
        precise_batchnorm,
        single_block_deletion,
    )

    stochastic = study.train(0, final_survival=0.5)
    precise_batchnorm(stochastic, study.data.x_train, batches=20)
    sd_single = single_block_deletion(stochastic, study.test, progress=study.progress)
    study.results["stochastic_depth"] = {"intact": sd_single.intact_error,
                                         "errors": sd_single.errors.tolist()}
    study.figure("fig8", plots.plot_resilience(ResilienceResult(single, sd_single, 0.5)),
                 "fig8_stochastic_depth.png")


def _reordering_stage(study: _Study, residual: keras.Model, draws: int) -> None:
    from keras_residual.lesion import plots, reordering

    # Each reordered network is a new graph to compile: few swap counts.
    counts = [k for k in (0, 2, 5, 10) if k <= max(study.n // 3, 1)]
    swaps = reordering(residual, study.test, counts, draws, progress=study.progress)
    study.results["reordering"] = {"ks": swaps.ks.tolist(),
                                   "kendall_tau": swaps.kendall_tau.mean(1).tolist(),
                                   "error": swaps.errors.mean(1).tolist()}
    study.figure("fig5b", plots.plot_reordering(swaps), "fig5b_reordering.png")


def ensemble54_study(data: Any, out_dir: str, seeds: int = 3, epochs: int = 6,
                     samples: int = 1000, draws: int = 5, blocks: int = 54,
                     progress: bool = False, ablation: bool = True) -> Ensemble54Results:
    """The 54-block study on MNIST: every figure of Veit et al. (2016) and effective-path training.

    A 54-block pre-activation residual MLP (`residual_mlp(blocks=54)`) and its
    plain twin. Seed 0 gives the lesion figures (3, 5a, 5b, 6a-c, 7, 8) and
    the gradient per path length, measured per sample (`samples` per
    measured length, at the first block's input; its effective-path range
    fixes m, `m="auto"`) and per mini-batch in training mode as the paper
    does (`samples` mini-batches per length, `gradient_batch_mode`). Each
    seed then trains the network normally and with exactly m of the blocks
    per mini-batch, both followed by precise BatchNorm statistics, and the
    test errors are compared; with `ablation=True` every row of
    `effective_paths.ABLATION` is run (`effective_path_ablation`). Writes
    `results.json` (after every stage), `results.md` and the figures to
    `out_dir`.

    Args:
        data: an object with `x_train`, `y_train`, `x_test`, `y_test` (flat
            784-vectors) and `source` (e.g. `datasets.load_mnist(layout="flat")`).
        out_dir: str. Where the results and figures go.
        seeds: int. Seeds of normal against effective-path training.
        epochs: int. Training epochs of every network.
        samples: int. Gradient samples per measured path length.
        draws: int. Random sets per k (deletion) and per swap count.
        blocks: int. Residual blocks (54 as ResNet-110).
        progress: bool. tqdm bars.
        ablation: bool. Run the whole effective-path ablation (7 settings x
            `seeds`), not only its default row. Defaults to True.

    Returns:
        The results (`Ensemble54Results`), as written to `results.json`.

    Example:
        A 3-block run on random digits (about 15 s: six networks and six
        figures; `examples/lesion_study.py --quick --preset ensemble54` runs
        the same in the test suite):

        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> rng = np.random.default_rng(0)
        >>> digits = SimpleNamespace(x_train=rng.random((64, 784), "float32"),
        ...     y_train=np.arange(64) % 10, x_test=rng.random((32, 784), "float32"),
        ...     y_test=np.arange(32) % 10, source="random")
        >>> r = ensemble54_study(digits, tempfile.mkdtemp(), seeds=1, epochs=1, samples=4,
        ...                      draws=1, blocks=3, ablation=False)  # doctest: +SKIP
        >>> r["complete"], sorted(r["figures"])  # doctest: +SKIP
        (True, ['fig3', 'fig5a', 'fig5b', 'fig6', 'fig7', 'fig8'])
    """
    os.makedirs(out_dir, exist_ok=True)
    study = _Study(data, out_dir, blocks, epochs, seeds, progress)
    residual, plain = study.train(0), study.train(0, plain=True)
    single = _single_deletion_stage(study, residual, plain)
    study.checkpoint()
    gradients = _gradient_stage(study, residual, samples)
    study.checkpoint()
    stages: list[Callable[[], Any]] = [
        lambda: _gradient_batch_stage(study, residual, samples),
        lambda: _effective_path_stage(study, gradients, seeds, ablation),
        lambda: _k_deletion_stage(study, residual, gradients, draws),
        lambda: _stochastic_depth_stage(study, single),
        lambda: _reordering_stage(study, residual, draws),
    ]
    for stage in stages:
        stage()
        study.checkpoint()
    study.results["complete"] = True
    study.checkpoint()
    table = results_table(study.results)
    with open(os.path.join(out_dir, "results.md"), "w") as file:
        file.write(table)
    print(table)
    return study.results


def _mean_spread(values: Any) -> str:
    values = np.asarray(values, dtype="float64")
    return f"{values.mean():.4f} +- {values.std():.4f} (n={values.size})"


def _rows(r: dict) -> list[tuple[str, str, Callable[[], str]]]:
    paper = published.VEIT_2016
    ept, single = r.get("effective_path_training", {}), r.get("single_deletion", {})
    jp, batch = r.get("joint_prediction", {}), r.get("gradient_batch_mode", {})

    def k10():
        value = dict(zip(r["k_deletion"]["ks"], r["k_deletion"]["mean"], strict=True)).get(10)
        return "n/a (fewer blocks)" if value is None else f"{value:.4f}"

    return [
        ("Network", f"CIFAR-10, pre-act ResNet-110 ({paper['blocks']} blocks)",
         lambda: f"{r['dataset']}, pre-act residual MLP ({r['blocks']} blocks), "
                 f"{r['epochs']} epochs"),
        ("Paths holding 95% (Sec. 5, Fig. 6a)", paper["path_range_95"],
         lambda: "-".join(map(str, r["path_range_95"]))),
        ("Single deletion (Sec. 4.1, Fig. 3): residual", "no noticeable change except downsampling",
         lambda: f"intact {single['residual_intact']:.4f}, mean "
                 f"{np.mean(single['residual_errors']):.4f}, worst "
                 f"{np.max(single['residual_errors']):.4f}"),
        ("Single deletion (Fig. 3): plain twin", "chance (0.9)",
         lambda: f"intact {single['plain_intact']:.4f}, mean "
                 f"{np.mean(single['plain_errors']):.4f}"),
        ("Error after deleting 10 blocks (Sec. 4.2, Fig. 5a)", paper["k10_error"], k10),
        ("Gradient per block (Fig. 6b), per sample, inference mode", "roughly exponential decay",
         lambda: f"x{r['gradient_decay_per_block']:.3f} per block "
                 f"({r['gradient_samples_per_length']} samples per length)"),
        ("Effective paths (Sec. 5, Fig. 6c), per sample", paper["effective_path_range"],
         lambda: f"{r['effective_path_range'][0]}-{r['effective_path_range'][1]} "
                 f"({r['effective_share']:.3f} of the gradient)"),
        ("Gradient per block, mini-batch, training mode (the paper's measurement)",
         "roughly exponential decay",
         lambda: f"x{batch['decay_per_block']:.3f} per block ({batch['samples_per_length']} "
                 f"batches of {batch['batch_size']} per length)"),
        ("Effective paths, mini-batch, training mode", paper["effective_path_range"],
         lambda: f"{batch['effective_path_range'][0]}-{batch['effective_path_range'][1]} "
                 f"({batch['effective_share']:.3f} of the gradient; m auto {batch['m_auto']})"),
        ("Share of all paths that are effective", f"{100 * paper['effective_share_of_paths']:.2f}%",
         lambda: f"{100 * r['effective_share_of_paths']:.2f}%"),
        ("Effective-path training m (Sec. 5)", f"{paper['ept_m']} of {paper['blocks']}",
         lambda: f"{ept['m']} of {r['blocks']} (auto)"),
        ("Test error, normal training", f"{100 * paper['normal_error']:.2f}%",
         lambda: _mean_spread(ept["normal_error"])),
        ("Test error, effective-path training", f"{100 * paper['ept_error']:.2f}%",
         lambda: _mean_spread(ept["effective_error"])),
        ("Stochastic depth, single deletion (Sec. 6, Fig. 8)", "slightly more resilient",
         lambda: f"mean {np.mean(r['stochastic_depth']['errors']):.4f} vs normal "
                 f"{np.mean(single['residual_errors']):.4f}"),
        ("k-deletion error vs lost gradient-weighted paths (Figs. 5a + 6c + 7)", "(not tested)",
         lambda: f"Spearman {jp['spearman_error_vs_lost_share']:.3f}, "
                 f"Pearson {jp['pearson_error_vs_lost_share']:.3f}"),
    ]


def results_table(r: dict) -> str:
    """Our numbers beside Veit et al. (2016)'s, as a markdown table ("not run": stage missing).

    Example:
        >>> print(results_table({"dataset": "mnist", "blocks": 54, "epochs": 6}).splitlines()[2])
        | Network | CIFAR-10, pre-act ResNet-110 (54 blocks) | mnist, pre-act residual MLP (54 blocks), 6 epochs |
    """

    def cell(value):
        try:
            return value()
        except (KeyError, ValueError, TypeError):
            return "not run"

    lines = ["| Quantity | Veit et al. 2016 | Ours |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {cell(c)} |" for a, b, c in _rows(r)]
    table = "\n".join(lines) + "\n"
    if r.get("effective_path_ablation"):
        from keras_residual.experiments.effective_paths import ablation_table

        paper = published.VEIT_2016
        table += (f"\nEffective-path ablation (Sec. 5; the paper: m = {paper['ept_m']} of "
                  f"{paper['blocks']}, {100 * paper['ept_error']:.2f}% vs "
                  f"{100 * paper['normal_error']:.2f}% normal):\n\n"
                  + ablation_table(r["effective_path_ablation"]))
    return table
