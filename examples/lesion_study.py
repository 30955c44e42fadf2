"""Every lesion and path study of Veit et al. (2016) on a trained residual net and its plain twin.

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
deleting one block (Fig. 3), k blocks (Fig. 5a), reordering (Fig. 5b), path
lengths and the gradient per path length (Fig. 6), remaining paths (Fig. 7),
stochastic depth vs normal training (Fig. 8), and effective-path training
(Sec. 5: exactly m of the n blocks per mini-batch).

    python examples/lesion_study.py --out lesion_output            # MNIST, 12 blocks
    python examples/lesion_study.py --arch conv --epochs 6          # a 12-block CNN
    python examples/lesion_study.py --load models/ --out out/       # reuse trained nets
    python examples/lesion_study.py --preset cifar110 --epochs 160  # ResNet-110 vs VGG-15
    python examples/lesion_study.py --keras-hub resnet_50_imagenet  # a pretrained ImageNet net

MNIST presets: "mlp" (default) is a 12-block pre-activation residual MLP
(width 64) and the same MLP without shortcuts; it trains in seconds on a
CPU. "conv" is `mnist_resnet` with 3 stages of 4 basic blocks and
its plain twin. `--preset cifar110` needs CIFAR-10 on disk
(`keras_residual.datasets.load_cifar10`) and, to finish, a GPU: the
paper's pre-activation ResNet-110 (54 blocks) against a 15-layer VGG with
128 channels in every layer.

`--keras-hub PRESET` runs the deletion studies (Fig. 3, Fig. 5a) on a
pretrained keras-hub ResNet converted into `Residual` blocks
(`keras_residual.models.load_keras_hub_classifier`; keras-hub downloads the
preset, so this needs network access and stops with a message offline). The
images are random crops of `--images` (default: scikit-learn's two sample
photographs); without ImageNet labels, the "error" is the fraction of images
whose top-1 class differs from the intact network's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from keras_residual import Residual
from keras_residual.lesion import (
    EffectivePathTraining,
    ResilienceResult,
    gradient_per_path_length,
    k_block_deletion,
    linear_decay_drop_rates,
    plots,
    reordering,
    residual_blocks,
    single_block_deletion,
)


@dataclasses.dataclass
class Setting:
    """A network pair and how to train it."""

    build: Callable[..., keras.Model]  # (plain: bool, final_survival: float) -> compiled model
    epochs: int
    batch_size: int
    flat: bool


def residual_mlp(
    plain: bool = False, final_survival: float = 1.0, blocks: int = 12, width: int = 64
) -> keras.Model:
    """A pre-activation residual MLP for MNIST (or its plain twin with `plain=True`).

    Each block is `Residual(BN-ReLU-Dense)`; the plain twin has the same layers
    with `shortcut="none"`. `final_survival < 1` adds stochastic depth with
    linearly decaying survival (Huang et al. 2016).

    Example:
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
        x = Residual(branch, shortcut="none" if plain else "identity",
                     drop_rate=0.0 if plain else float(rate), name=f"block{i}")(x)
    x = layers.ReLU(name="post_relu")(layers.BatchNormalization(momentum=0.9, name="post_bn")(x))
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="mnist_plain_mlp" if plain else "mnist_residual_mlp")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def mnist_conv(plain: bool = False, final_survival: float = 1.0) -> keras.Model:
    """`mnist_resnet` with 3 stages of 4 basic blocks (12 blocks), or its plain twin.

    Example:
        >>> len(residual_blocks(mnist_conv()))
        12
    """
    from keras_residual.models import mnist_resnet

    model = mnist_resnet(blocks=(4, 4, 4), filters=(16, 32, 64), plain=plain,
                         drop_rate=1.0 - final_survival, bn_momentum=0.9)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def cifar110(plain: bool = False, final_survival: float = 1.0) -> keras.Model:
    """Veit et al.'s CIFAR-10 pair: pre-activation ResNet-110, or the 15-layer VGG (128 channels).

    Example:
        >>> len(residual_blocks(cifar110()))
        54
    """
    from keras_residual.models import cifar_preact_resnet, vgg_plain

    if plain:
        model = vgg_plain(depth=15, filters=128)
    else:
        model = cifar_preact_resnet(110, drop_rate=1.0 - final_survival, bn_momentum=0.9)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _mnist(flat: bool):
    from keras_residual.datasets import load_mnist

    return load_mnist(layout="flat" if flat else "image", verbose=False)


def _train_or_load(setting: Setting, data, plain: bool, final_survival: float,
                   load_dir: str | None, tag: str, fit_kwargs: dict | None = None):
    path = os.path.join(load_dir, f"{tag}.keras") if load_dir else None
    if path and os.path.exists(path):
        print(f"[lesion] loading {path}")
        return keras.models.load_model(path)
    keras.utils.set_random_seed(0)
    model = setting.build(plain=plain, final_survival=final_survival)
    model.fit(data.x_train, data.y_train, epochs=setting.epochs, batch_size=setting.batch_size,
              verbose=0, **(fit_kwargs or {}))
    error = 1.0 - model.evaluate(data.x_test, data.y_test, verbose=0)[1]
    print(f"[lesion] trained {tag}: test error {error:.4f}")
    if path:
        os.makedirs(load_dir, exist_ok=True)
        model.save(path)
    return model


def run_studies(setting: Setting, data, out_dir: str, load_dir: str | None = None,
                samples: int = 5, progress: bool = False, length_step: int = 1,
                effective_paths: bool = True) -> list[tuple[str, str]]:
    """Train (or load) the pair, run every study, write the figures.

    `length_step` thins the path lengths of the gradient study;
    `effective_paths=False` skips the effective-path training run.

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    test = (data.x_test, data.y_test)
    residual = _train_or_load(setting, data, False, 1.0, load_dir, "residual")
    plain = _train_or_load(setting, data, True, 1.0, load_dir, "plain")
    n = len(residual_blocks(residual))
    figures = []

    def save(fig, name, caption):
        plots.save_figure(fig, os.path.join(out_dir, name))
        figures.append((caption, name))

    single = single_block_deletion(residual, test, progress=progress)
    single_plain = single_block_deletion(plain, test, progress=progress)
    print(f"[lesion] single deletion: residual intact {single.intact_error:.3f}, worst "
          f"{single.errors.max():.3f}; plain intact {single_plain.intact_error:.3f}, best "
          f"{single_plain.errors.min():.3f}")
    save(plots.plot_single_deletion(single, single_plain), "lesion_single.png",
         "Fig. 3: test error with one block deleted, plain net (left) vs residual net (right)")

    ks = sorted(set(np.linspace(0, n, 7).round().astype(int).tolist()))
    save(plots.plot_k_deletion(k_block_deletion(residual, test, ks, samples, progress=progress)),
         "lesion_k_blocks.png", "Fig. 5a: error after deleting k random blocks (mean, std)")

    swaps = reordering(residual, test, [0, 1, 2, 4, 8], samples, progress=progress)
    save(plots.plot_reordering(swaps), "lesion_reorder.png",
         "Fig. 5b: error after swapping random pairs of blocks vs Kendall's tau")

    x_sub, y_sub = data.x_train[:2000], data.y_train[:2000]
    gradients = gradient_per_path_length(residual, (x_sub, y_sub), list(range(0, n + 1, length_step)), samples,
                                         progress=progress)
    lo, hi = gradients.effective_range
    print(f"[lesion] effective paths: {lo} to {hi} blocks of {n}")
    save(plots.plot_path_gradients(gradients), "lesion_path_gradients.png",
         f"Fig. 6: path lengths, gradient per path, total gradient per length "
         f"(effective paths {lo}-{hi} of {n} blocks)")
    save(plots.plot_remaining_paths(54), "lesion_remaining_paths.png",
         "Fig. 7: fraction of paths of each length left after deleting 1, 10, 20 of 54 blocks")

    stochastic = _train_or_load(setting, data, False, 0.5, load_dir, "stochastic_depth")
    resilience = ResilienceResult(single, single_block_deletion(stochastic, test,
                                                                progress=progress), 0.5)
    save(plots.plot_resilience(resilience), "lesion_stochastic_depth.png",
         "Fig. 8: single-block deletion, normal vs stochastic-depth training")

    if not effective_paths:
        return figures
    active = max(1, round(n * 23 / 54))
    effective = _train_or_load(setting, data, False, 1.0, load_dir, f"effective_{active}",
                               {"callbacks": [EffectivePathTraining(active, seed=0)]})
    error = 1.0 - effective.evaluate(*test, verbose=0)[1]
    print(f"[lesion] effective-path training ({active} of {n} blocks per batch): "
          f"test error {error:.4f} vs full {single.intact_error:.4f}")
    return figures


def demo_section(data, out_dir: str, quick: bool = False) -> list[tuple[str, str]]:
    """The lesion part of `make demo`: the 12-block residual MLP on `data` (an `MnistData`).

    `quick=True` (`demo.py --quick`): 1 epoch on 1,000 digits, 500 test
    digits, one sample per point (the same subset as `--quick` here).

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    train, test = (1000, 500) if quick else (len(data.x_train), len(data.x_test))
    flat = dataclasses.replace(
        data, x_train=data.x_train[:train].reshape(train, -1), y_train=data.y_train[:train],
        x_test=data.x_test[:test].reshape(test, -1), y_test=data.y_test[:test],
    )
    setting = Setting(residual_mlp, epochs=1 if quick else 3, batch_size=128, flat=True)
    return run_studies(setting, flat, out_dir, samples=1 if quick else 3,
                       length_step=3 if quick else 2, effective_paths=False)


def keras_hub_studies(model: keras.Model, preprocess: Callable, preset: str, out_dir: str,
                      folder: str | None, crops: int = 64,
                      samples: int = 5) -> list[tuple[str, str]]:
    """Single and k-block deletion on a converted keras-hub preset (`load_keras_hub_classifier`).

    The labels are the intact network's top-1 classes.

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "visualize_imagenet.py")
    spec = importlib.util.spec_from_file_location("examples_visualize_imagenet", path)
    images_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(images_module)
    display, source = images_module.load_images(folder, 224, crops)
    x = preprocess(display)
    y = np.argmax(model.predict(x, batch_size=32, verbose=0), axis=-1)
    print(f"[lesion] {preset}: {len(residual_blocks(model))} blocks; data: {source}, labelled "
          "with the intact network's top-1 class")
    figures = []
    single = single_block_deletion(model, (x, y), progress=True)
    print(f"[lesion] single deletion: worst top-1 change {single.errors.max():.3f}, median "
          f"{np.median(single.errors):.3f}")
    plots.save_figure(plots.plot_single_deletion(single, chance=None),
                      os.path.join(out_dir, "lesion_single.png"))
    figures.append((f"Fig. 3 on {preset}: top-1 changes with one block deleted",
                    "lesion_single.png"))
    n = len(residual_blocks(model))
    ks = sorted(set(np.linspace(0, n, 7).round().astype(int).tolist()))
    result = k_block_deletion(model, (x, y), ks, samples, batch_size=32, progress=True)
    plots.save_figure(plots.plot_k_deletion(result), os.path.join(out_dir, "lesion_k_blocks.png"))
    figures.append((f"Fig. 5a on {preset}: top-1 changes after deleting k random blocks",
                    "lesion_k_blocks.png"))
    return figures


# ------------------------------------------------------------------ ensemble54

# Veit et al. (2016) on CIFAR-10 (Sec. 4-6), for the table beside ours.
PAPER = {
    "blocks": 54,
    "path_range_95": "19-35",
    "effective_path_range": "5-17",
    "effective_share_of_paths": 0.0045,
    "ept_m": 23,
    "ept_error": 0.0596,
    "normal_error": 0.0610,
    "k10_error": "about 0.2",
}


def joint_prediction(gradients, kdel) -> dict:
    """k-deletion error against the gradient-weighted share of paths surviving k deletions.

    Veit et al. 2016, Sec. 5: deleting d of n blocks leaves C(n-d, l)/C(n, l)
    of the paths of length l (Fig. 7); weighted by the gradient share of
    each length (Fig. 6c) this is the share of the effective paths that
    survive. If the effective paths carry the performance, the k-deletion
    error (Fig. 5a) rises as that share falls.
    """
    from scipy import stats

    from keras_residual.lesion import remaining_path_fraction

    n = gradients.n_blocks
    share = np.array([float(np.dot(gradients.total, remaining_path_fraction(n, int(k))))
                      for k in kdel.ks])
    rho = stats.spearmanr(1.0 - share, kdel.mean).statistic if len(share) > 2 else float("nan")
    r = stats.pearsonr(1.0 - share, kdel.mean).statistic if len(share) > 2 else float("nan")
    return {"ks": kdel.ks.tolist(), "surviving_gradient_share": share.tolist(),
            "k_deletion_error": kdel.mean.tolist(), "spearman_error_vs_lost_share": float(rho),
            "pearson_error_vs_lost_share": float(r)}


def _error(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) != y))


def ensemble54_study(data, out_dir: str, seeds: int = 3, epochs: int = 6, samples: int = 1000,
                     draws: int = 5, blocks: int = 54, progress: bool = False) -> dict:
    """The 54-block study on MNIST: every figure of Veit et al. (2016) and effective-path training.

    A 54-block pre-activation residual MLP (`residual_mlp(blocks=54)`) and its
    plain twin. Seed 0 gives the lesion figures (3, 5a, 5b, 6a-c, 7, 8) and
    the gradient per path length (`samples` per measured length, at the
    first block's input), whose effective-path range fixes m (`m="auto"`);
    each seed then trains the network normally and with exactly m of the
    blocks per mini-batch (followed by precise BatchNorm statistics), and
    the test errors are compared. Writes `results.json`, `results.md` and
    the figures to `out_dir`.
    """
    import json

    from keras_residual.lesion import (
        effective_training_blocks,
        path_length_interval,
        precise_batchnorm,
        range_share,
        remaining_path_fraction,
    )

    os.makedirs(out_dir, exist_ok=True)
    x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
    test = (x_test, y_test)
    n = blocks

    def build(plain=False, final_survival=1.0):
        return residual_mlp(plain=plain, final_survival=final_survival, blocks=n)

    def train(seed, plain=False, final_survival=1.0, callbacks=()):
        keras.utils.set_random_seed(seed)
        model = build(plain, final_survival)
        model.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0,
                  callbacks=list(callbacks))
        return model

    def save(fig, name):
        plots.save_figure(fig, os.path.join(out_dir, name))
        return name

    results: dict = {"dataset": data.source, "blocks": n, "epochs": epochs, "seeds": seeds,
                     "train_samples": len(x_train), "test_samples": len(x_test), "complete": False}
    figures: dict = {}
    results["figures"] = figures

    def checkpoint():
        # Every stage adds its numbers at once: a long run leaves what it measured so far.
        with open(os.path.join(out_dir, "results.json"), "w") as file:
            json.dump(results, file, indent=1)

    residual = train(0)
    plain = train(0, plain=True)
    single = single_block_deletion(residual, test, progress=progress)
    single_plain = single_block_deletion(plain, test, progress=progress)
    results["single_deletion"] = {
        "residual_intact": single.intact_error, "residual_errors": single.errors.tolist(),
        "plain_intact": single_plain.intact_error, "plain_errors": single_plain.errors.tolist(),
    }
    print(f"[ensemble54] single deletion: residual intact {single.intact_error:.3f}, mean "
          f"{single.errors.mean():.3f}, worst {single.errors.max():.3f}; plain intact "
          f"{single_plain.intact_error:.3f}, mean {single_plain.errors.mean():.3f}")
    figures["fig3"] = save(plots.plot_single_deletion(single, single_plain), "fig3_single.png")
    checkpoint()

    start = time.perf_counter()
    gradients = gradient_per_path_length(residual, (x_train, y_train), samples=samples,
                                         progress=progress)
    seconds = time.perf_counter() - start
    lo, hi = (int(v) for v in gradients.effective_range)
    decay = float(np.exp(np.polyfit(gradients.lengths, np.log(np.maximum(gradients.mean_norm,
                                                                         1e-30)), 1)[0]))
    results.update(
        effective_path_range=[lo, hi],
        effective_share=gradients.effective_share,
        effective_share_of_paths=range_share(gradients.distribution, (lo, hi)),
        gradient_samples_per_length=gradients.samples_per_length,
        gradient_measured_lengths=gradients.lengths.tolist(),
        gradient_interpolated_lengths=gradients.interpolated_lengths.tolist(),
        gradient_mean_norm=gradients.mean_norm.tolist(),
        gradient_decay_per_block=decay,
        gradient_seconds=seconds,
        path_range_95=list(path_length_interval(n, 0.95)),
        remaining_paths_after_10=remaining_path_fraction(n, min(10, n))[[lo, hi]].tolist(),
    )
    print(f"[ensemble54] gradient per path length: {gradients.samples_per_length} samples at "
          f"lengths {gradients.lengths.tolist()} in {seconds:.0f} s; decay x{decay:.3f} per "
          f"block; effective paths {lo}-{hi} ({gradients.effective_share:.3f} of the gradient)")
    figures["fig6"] = save(plots.plot_path_gradients(gradients), "fig6_path_gradients.png")
    figures["fig7"] = save(plots.plot_remaining_paths(n), "fig7_remaining_paths.png")
    checkpoint()

    m = effective_training_blocks(gradients.total)
    ept = {"m": m, "normal_error": [single.intact_error], "effective_error": []}
    results["effective_path_training"] = ept
    for seed in range(seeds):
        if seed:
            ept["normal_error"].append(_error(train(seed), x_test, y_test))
        model = train(seed, callbacks=[EffectivePathTraining(m, seed=seed)])
        precise_batchnorm(model, x_train, batches=20, seed=seed)
        ept["effective_error"].append(_error(model, x_test, y_test))
        print(f"[ensemble54] seed {seed}: normal {ept['normal_error'][-1]:.4f}, effective-path "
              f"({m} of {n}) {ept['effective_error'][-1]:.4f}")
        checkpoint()

    ks = sorted({k for k in (0, 1, 2, 5, 10, 15, 20, 30, 40) if k <= n} | {n})
    kdel = k_block_deletion(residual, test, ks, draws, progress=progress)
    results["k_deletion"] = {"ks": ks, "mean": kdel.mean.tolist(), "std": kdel.std.tolist()}
    figures["fig5a"] = save(plots.plot_k_deletion(kdel), "fig5a_k_deletion.png")
    results["joint_prediction"] = joint_prediction(gradients, kdel)
    checkpoint()

    stochastic = train(0, final_survival=0.5)
    precise_batchnorm(stochastic, x_train, batches=20)
    sd_single = single_block_deletion(stochastic, test, progress=progress)
    results["stochastic_depth"] = {"intact": sd_single.intact_error,
                                   "errors": sd_single.errors.tolist()}
    figures["fig8"] = save(plots.plot_resilience(ResilienceResult(single, sd_single, 0.5)),
                           "fig8_stochastic_depth.png")
    checkpoint()

    # Each reordered network is a new graph to compile: few swap counts.
    swaps = reordering(residual, test, [k for k in (0, 2, 5, 10) if k <= max(n // 3, 1)],
                       draws, progress=progress)
    results["reordering"] = {"ks": swaps.ks.tolist(),
                             "kendall_tau": swaps.kendall_tau.mean(1).tolist(),
                             "error": swaps.errors.mean(1).tolist()}
    figures["fig5b"] = save(plots.plot_reordering(swaps), "fig5b_reordering.png")
    results["complete"] = True
    checkpoint()
    table = results_table(results)
    with open(os.path.join(out_dir, "results.md"), "w") as file:
        file.write(table)
    print(table)
    return results


def _mean_spread(values) -> str:
    values = np.asarray(values, dtype="float64")
    return f"{values.mean():.4f} +- {values.std():.4f} (n={values.size})"


def results_table(r: dict) -> str:
    """Our numbers beside Veit et al. (2016)'s, as a markdown table ("not run": stage missing)."""
    ept = r.get("effective_path_training", {})
    single = r.get("single_deletion", {})
    jp = r.get("joint_prediction", {})

    def k10():
        value = dict(zip(r["k_deletion"]["ks"], r["k_deletion"]["mean"], strict=True)).get(10)
        return "n/a (fewer blocks)" if value is None else f"{value:.4f}"

    rows = [
        ("Network", "CIFAR-10, pre-act ResNet-110 (54 blocks)",
         lambda: f"{r['dataset']}, pre-act residual MLP ({r['blocks']} blocks), "
                 f"{r['epochs']} epochs"),
        ("Paths holding 95% (Sec. 5, Fig. 6a)", "19-35",
         lambda: "-".join(map(str, r["path_range_95"]))),
        ("Single deletion (Sec. 4.1, Fig. 3): residual", "no noticeable change except downsampling",
         lambda: f"intact {single['residual_intact']:.4f}, mean "
                 f"{np.mean(single['residual_errors']):.4f}, worst "
                 f"{np.max(single['residual_errors']):.4f}"),
        ("Single deletion (Fig. 3): plain twin", "chance (0.9)",
         lambda: f"intact {single['plain_intact']:.4f}, mean "
                 f"{np.mean(single['plain_errors']):.4f}"),
        ("Error after deleting 10 blocks (Sec. 4.2, Fig. 5a)", "about 0.2", k10),
        ("Gradient per block (Fig. 6b)", "roughly exponential decay",
         lambda: f"x{r['gradient_decay_per_block']:.3f} per block "
                 f"({r['gradient_samples_per_length']} samples per length)"),
        ("Effective paths (Sec. 5, Fig. 6c)", "5-17",
         lambda: f"{r['effective_path_range'][0]}-{r['effective_path_range'][1]} "
                 f"({r['effective_share']:.3f} of the gradient)"),
        ("Share of all paths that are effective", "0.45%",
         lambda: f"{100 * r['effective_share_of_paths']:.2f}%"),
        ("Effective-path training m (Sec. 5)", "23 of 54",
         lambda: f"{ept['m']} of {r['blocks']} (auto)"),
        ("Test error, normal training", "6.10%", lambda: _mean_spread(ept["normal_error"])),
        ("Test error, effective-path training", "5.96%",
         lambda: _mean_spread(ept["effective_error"])),
        ("Stochastic depth, single deletion (Sec. 6, Fig. 8)", "slightly more resilient",
         lambda: f"mean {np.mean(r['stochastic_depth']['errors']):.4f} vs normal "
                 f"{np.mean(single['residual_errors']):.4f}"),
        ("k-deletion error vs lost gradient-weighted paths (Figs. 5a + 6c + 7)", "(not tested)",
         lambda: f"Spearman {jp['spearman_error_vs_lost_share']:.3f}, "
                 f"Pearson {jp['pearson_error_vs_lost_share']:.3f}"),
    ]

    def cell(value):
        try:
            return value()
        except (KeyError, ValueError, TypeError):
            return "not run"

    lines = ["| Quantity | Veit et al. 2016 | Ours |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {cell(c)} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


SETTINGS = {
    "mlp": Setting(residual_mlp, epochs=4, batch_size=128, flat=True),
    "conv": Setting(mnist_conv, epochs=4, batch_size=64, flat=False),
    "cifar110": Setting(cifar110, epochs=160, batch_size=128, flat=False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lesion_output", help="folder for the figures")
    parser.add_argument("--preset", choices=("mnist", "cifar110", "resnet110", "ensemble54"),
                        default="mnist",
                        help="MNIST-scale nets; ResNet-110 / VGG on CIFAR-10 (Veit et al. 2016; "
                             "'resnet110' = 'cifar110'); or 'ensemble54': the 54-block study "
                             "with results.json (every figure, effective-path training per seed)")
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default=None,
                        help="None: the preset's (cifar10 for cifar110/resnet110, else mnist)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="ensemble54: seeds of normal vs effective-path training")
    parser.add_argument("--arch", choices=("mlp", "conv"), default="mlp", help="MNIST network")
    parser.add_argument("--load", default=None, help="folder to load trained models from "
                        "(and to save them to when missing)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (None: the preset's)")
    parser.add_argument("--samples", type=int, default=5, help="random draws per point")
    parser.add_argument("--keras-hub", default=None, metavar="PRESET",
                        help="a keras-hub ResNet preset, e.g. resnet_50_imagenet (needs network "
                             "access and keras-hub: pip install keras-residual[hub])")
    parser.add_argument("--images", default=None,
                        help="image folder for --keras-hub (None: sklearn's sample photos)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every study: 1 epoch on 1,000 digits, 500 test "
                             "digits, 1 random draw per point, every third path length")
    args = parser.parse_args(argv)

    if args.keras_hub:
        from keras_residual.models import load_keras_hub_classifier

        try:
            model, preprocess = load_keras_hub_classifier(args.keras_hub, (224, 224, 3))
        except (ImportError, ValueError) as error:
            print(f"[lesion] --keras-hub {args.keras_hub}: {error}")
            return 1
        figures = keras_hub_studies(model, preprocess, args.keras_hub, args.out, args.images,
                                    samples=args.samples)
        for caption, path in figures:
            print(f"[lesion] {os.path.join(args.out, path)}: {caption}")
        return 0

    if args.preset == "resnet110":
        args.preset = "cifar110"
    if args.preset == "ensemble54":
        if args.dataset == "cifar10":
            print("[lesion] --preset ensemble54 runs on MNIST; use --dataset cifar10 "
                  "--preset resnet110 for the paper's CIFAR-10 setting")
            return 1
        data = _mnist(True)
        options = dict(seeds=args.seeds, epochs=args.epochs or 6, draws=args.samples,
                       progress=not args.quick)
        if args.quick:
            data = dataclasses.replace(data, x_train=data.x_train[:500],
                                       y_train=data.y_train[:500], x_test=data.x_test[:200],
                                       y_test=data.y_test[:200])
            options.update(epochs=1, samples=20, draws=1, blocks=6)
        print(f"[lesion] data: {data.source}")
        ensemble54_study(data, args.out, **options)
        print(f"[lesion] {os.path.join(args.out, 'results.json')}")
        return 0
    if args.dataset == "cifar10" and args.preset != "cifar110":
        print("[lesion] --dataset cifar10 goes with --preset resnet110")
        return 1
    if args.preset == "cifar110":
        from keras_residual.datasets import load_cifar10

        try:
            cifar = load_cifar10()
        except FileNotFoundError as error:
            print(f"[lesion] --preset cifar110 needs CIFAR-10: {error}")
            return 1
        data = dataclasses.replace(cifar, x_train=cifar.x_train.astype("float32") / 255.0,
                                   x_test=cifar.x_test.astype("float32") / 255.0)
        setting = SETTINGS["cifar110"]
    else:
        setting = SETTINGS[args.arch]
        data = _mnist(setting.flat)
    if args.epochs is not None:
        setting = dataclasses.replace(setting, epochs=args.epochs)
    length_step = 1
    if args.quick:
        setting = dataclasses.replace(setting, epochs=1)
        data = dataclasses.replace(data, x_train=data.x_train[:1000], y_train=data.y_train[:1000],
                                   x_test=data.x_test[:500], y_test=data.y_test[:500])
        args.samples, length_step = 1, 3
    print(f"[lesion] data: {data.source}")
    figures = run_studies(setting, data, args.out, args.load, args.samples, progress=not args.quick,
                          length_step=length_step)
    for caption, path in figures:
        print(f"[lesion] {os.path.join(args.out, path)}: {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
