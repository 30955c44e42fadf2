"""Every lesion and path study of Veit et al. (2016) on a trained residual net and its plain twin.

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
deleting one block (Fig. 3), k blocks (Fig. 5a), reordering (Fig. 5b), path
lengths and the gradient per path length (Fig. 6), remaining paths (Fig. 7),
stochastic depth vs normal training (Fig. 8), and effective-path training
(Sec. 5: exactly m of the n blocks per mini-batch).

    python examples/lesion_study.py --out lesion_output            # MNIST, 12 blocks
    python examples/lesion_study.py --arch conv --epochs 6          # a 12-block CNN
    python examples/lesion_study.py --load models/ --out out/       # reuse trained nets
    python examples/lesion_study.py --preset cifar110            # ResNet-110 vs VGG-15, 164 epochs
    python examples/lesion_study.py --keras-hub resnet_50_imagenet  # a pretrained ImageNet net
    python examples/lesion_study.py --preset fig8 --seeds 4 --shard 0/2 --out fig8_0  # process 0
    python examples/lesion_study.py --preset fig8 --seeds 4 --shard 1/2 --out fig8_1  # process 1
    python examples/lesion_study.py --preset fig8 --merge fig8_0 fig8_1 --out fig8    # one file

MNIST networks (`--arch`, for `--preset mnist`): "mlp" (default) is a
12-block pre-activation residual MLP (width 64) and the same MLP without
shortcuts; it trains in seconds on a CPU. "conv" is `mnist_resnet` with 3
stages of 4 basic blocks and its plain twin. `--preset cifar110` needs CIFAR-10 on disk
(`keras_residual.datasets.load_cifar10`) and, to finish, a GPU: the
paper's pre-activation ResNet-110 (54 blocks) against a 15-layer VGG with
128 channels in every layer.

Every trained network (normal, plain twin, stochastic depth, effective-path)
gets precise BatchNorm statistics (`lesion.precise_batchnorm`, Wu and Johnson
2021) before it is evaluated, so none is favoured by better-fitting
statistics. `--preset cifar110` trains with He et al. (2015, Sec. 4.2)'s
recipe through `keras_residual.experiments.runner`: SGD with momentum 0.9,
Caffe-style weight decay 1e-4 on the kernels, learning rate 0.1 divided by
10 at 1/2 and 3/4 of the run, 0.01 for the first 400 iterations of
ResNet-110 (their warm-up), per-pixel mean subtraction, pad-and-crop and
flip augmentation, batch 128.

In a job of several JAX processes (Keras' cluster variables
`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `_NUM_PROCESSES`, `_PROCESS_ID` set in
every process, as for `train_cifar.py`; README, 'Past one machine'), the
studies of `--preset mnist` / `cifar110` run inside the job's
`DistributionSetup.scope()` on the networks rebuilt there: each lesion is
evaluated data-parallel, every process its part of the images on its
devices (`keras_residual.lesion.parallel`), with the single-process
numbers. The networks are trained (or read from `--load`) in every process
alike before that; only process 0 writes figures and saves networks.

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
import contextlib
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable


def shard_of(text: str) -> tuple[int, int]:
    """`--shard I/N` as `(I, N)`, with 0 <= I < N.

    Example:
        >>> shard_of("1/4")
        (1, 4)
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"--shard is I/N with 0 <= I < N, e.g. 0/2 and 1/2. Received: {text!r}")
    return index, count


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; standard library only, so it answers before Keras loads."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lesion_output", help="folder for the figures")
    parser.add_argument("--preset",
                        choices=("mnist", "cifar110", "resnet110", "ensemble54", "fig8"),
                        default="mnist",
                        help="MNIST-scale nets; ResNet-110 / VGG on CIFAR-10 (Veit et al. 2016; "
                             "'resnet110' = 'cifar110'); or 'ensemble54': the 54-block study "
                             "with results.json (every figure, effective-path training per seed); "
                             "or 'fig8': stochastic depth vs normal training, single deletion at "
                             "the downsampling and other blocks of the MNIST conv ResNet, per seed")
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
    parser.add_argument("--shard", default=None, type=shard_of, metavar="I/N",
                        help="fig8: run only seeds I, I+N, I+2N, ... (N processes, I = 0 ... N-1, "
                             "each with its own --out); --merge combines their results.json")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="fig8: merge the shards' DIR/results.json into --out/results.json "
                             "(and results.md), the file one unsharded run writes; trains nothing")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every study: 1 epoch on 1,000 digits, 500 test "
                             "digits, 1 random draw per point, every third path length; "
                             "ensemble54: a 6-block MLP, 1 epoch on 500 digits, 200 test digits, "
                             "20 gradient samples per path length, 1 draw; fig8: 1 epoch on 500 "
                             "digits, 200 test digits")
    return parser.parse_args(argv)


if __name__ == "__main__":  # --help and usage errors answer here, before Keras loads
    parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_residual.experiments.ensemble import (  # noqa: E402, F401  (re-exported for the tests)
    ensemble54_study,
    joint_prediction,
    residual_mlp,
    results_table,
)
from keras_residual.lesion import (  # noqa: E402
    EffectivePathTraining,
    ResilienceResult,
    gradient_per_path_length,
    k_block_deletion,
    plots,
    reordering,
    residual_blocks,
    single_block_deletion,
)


@dataclasses.dataclass
class Setting:
    """A network pair and how to train it.

    `he_recipe=True`: He et al. (2015, Sec. 4.2)'s recipe through
    `experiments.runner` (`data` is then an `ExperimentData`); otherwise the
    compiled model's own optimizer on arrays.
    """

    build: Callable[..., keras.Model]  # (plain: bool, final_survival: float) -> compiled model
    epochs: int
    batch_size: int
    flat: bool
    he_recipe: bool = False


#: Training batches behind each network's precise BatchNorm statistics.
PRECISE_BN_BATCHES = 50


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
                  metrics=["accuracy"])  # --preset cifar110 recompiles with He et al.'s recipe
    return model


def _mnist(flat: bool):
    from keras_residual.datasets import load_mnist

    return load_mnist(layout="flat" if flat else "image", verbose=False)


def _fit_he_recipe(model: keras.Model, setting: Setting, data, fit_kwargs: dict) -> None:
    """He et al. (2015, Sec. 4.2) through `experiments.runner`: SGD, steps, decay, augmentation."""
    from keras_residual import training
    from keras_residual.experiments import runner

    recipe = runner.Recipe(epochs=setting.epochs, batch_size=setting.batch_size)
    steps = data.steps_per_epoch(recipe.batch_size)
    training.add_weight_decay(model, recipe.weight_decay)
    # ResNet-110 (54 blocks) starts at 0.01 for 400 iterations (`runner.ConstantWarmup`).
    schedule = recipe.schedule(steps, len(residual_blocks(model)))
    model.compile(keras.optimizers.SGD(schedule, momentum=recipe.momentum),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = list(fit_kwargs.get("callbacks", []))
    arguments = data.fit_arguments(recipe.batch_size, seed=0)
    arguments.pop("validation_data", None)
    model.fit(**arguments, epochs=recipe.epochs, verbose=0, callbacks=callbacks)


def study_arrays(data):
    """The inputs as the network sees them: CIFAR-10 `(uint8 - mean) / 255` (`cifar_dataset`).

    Example:
        >>> from keras_residual.experiments.runner import ExperimentData
        >>> d = ExperimentData("cifar10", "two pixels", np.full((1, 2), 255, "uint8"), np.zeros(1),
        ...                    np.zeros((1, 2), "uint8"), np.zeros(1), mean=np.full(2, 255.0))
        >>> study_arrays(d).x_test.tolist()
        [[-1.0, -1.0]]
    """
    mean = getattr(data, "mean", None)
    if mean is None:
        return data

    def prepared(images):
        return ((images.astype("float32") - mean) / 255.0).astype("float32")

    return dataclasses.replace(data, x_train=prepared(data.x_train),
                               x_test=prepared(data.x_test), mean=None)


def _train_or_load(setting: Setting, data, plain: bool, final_survival: float,
                   load_dir: str | None, tag: str, fit_kwargs: dict | None = None,
                   save: bool = True):
    """Train (or load) one network; precise BatchNorm statistics either way.

    `save=False`: a network trained here is not written to `load_dir` (a
    process other than the chief of a job).
    """
    from keras_residual.lesion import precise_batchnorm

    path = os.path.join(load_dir, f"{tag}.keras") if load_dir else None
    arrays = study_arrays(data)
    if path and os.path.exists(path):
        print(f"[lesion] loading {path}")
        model = keras.models.load_model(path)
    else:
        keras.utils.set_random_seed(0)
        model = setting.build(plain=plain, final_survival=final_survival)
        if setting.he_recipe:
            _fit_he_recipe(model, setting, data, fit_kwargs or {})
        else:
            model.fit(data.x_train, data.y_train, epochs=setting.epochs,
                      batch_size=setting.batch_size, verbose=0, **(fit_kwargs or {}))
        if path and save:
            os.makedirs(load_dir, exist_ok=True)
            model.save(path)
    precise_batchnorm(model, arrays.x_train, batches=PRECISE_BN_BATCHES,
                      batch_size=setting.batch_size)
    error = 1.0 - model.evaluate(arrays.x_test, arrays.y_test, verbose=0)[1]
    print(f"[lesion] {tag}: test error {error:.4f} (precise BatchNorm)")
    return model


def in_scope(model: keras.Model, setup) -> keras.Model:
    """`model` rebuilt inside `setup.scope()` with its weights (`model` itself without a setup).

    The lesion studies then split their evaluations over the job's devices
    and processes (`keras_residual.lesion.parallel`).
    """
    if setup is None:
        return model
    with setup.scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def run_studies(setting: Setting, data, out_dir: str, load_dir: str | None = None,
                samples: int = 5, progress: bool = False, length_step: int = 1,
                effective_paths: bool = True, setup=None) -> list[tuple[str, str]]:
    """Train (or load) the pair, run every study, write the figures.

    `length_step` thins the path lengths of the gradient study;
    `effective_paths=False` skips the effective-path training run. `setup`:
    a `DistributionSetup` of a job of several processes, inside whose scope
    the studies run (only its chief writes `out_dir` and `load_dir`).

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    chief = setup is None or setup.is_chief
    out_dir = setup.output_dir(out_dir) if setup is not None else out_dir
    residual = _train_or_load(setting, data, False, 1.0, load_dir, "residual", save=chief)
    plain = _train_or_load(setting, data, True, 1.0, load_dir, "plain", save=chief)
    stochastic = _train_or_load(setting, data, False, 0.5, load_dir, "stochastic_depth",
                                save=chief)
    arrays = study_arrays(data)
    figures = []

    def save(fig, name, caption):
        plots.save_figure(fig, os.path.join(out_dir, name))
        figures.append((caption, name))

    with setup.scope() if setup is not None else contextlib.nullcontext():
        single = _studies(*(in_scope(m, setup) for m in (residual, plain, stochastic)), arrays,
                          save, samples, progress, length_step)
    if not effective_paths:
        return figures
    n = len(residual_blocks(residual))
    active = max(1, round(n * 23 / 54))
    effective = _train_or_load(setting, data, False, 1.0, load_dir, f"effective_{active}",
                               {"callbacks": [EffectivePathTraining(active, seed=0)]}, save=chief)
    error = 1.0 - effective.evaluate(arrays.x_test, arrays.y_test, verbose=0)[1]
    print(f"[lesion] effective-path training ({active} of {n} blocks per batch): "
          f"test error {error:.4f} vs full {single.intact_error:.4f} (both after precise "
          "BatchNorm)")
    return figures


def _studies(residual: keras.Model, plain: keras.Model, stochastic: keras.Model, arrays,
             save: Callable, samples: int, progress: bool, length_step: int):
    """Fig. 3 to 8 on the trained networks; returns the residual net's single deletion."""
    test = (arrays.x_test, arrays.y_test)
    n = len(residual_blocks(residual))
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

    x_sub, y_sub = arrays.x_train[:2000], arrays.y_train[:2000]
    gradients = gradient_per_path_length(residual, (x_sub, y_sub),
                                         list(range(0, n + 1, length_step)), samples,
                                         progress=progress)
    lo, hi = gradients.effective_range
    print(f"[lesion] effective paths: {lo} to {hi} blocks of {n}")
    save(plots.plot_path_gradients(gradients), "lesion_path_gradients.png",
         f"Fig. 6: path lengths, gradient per path, total gradient per length "
         f"(effective paths {lo}-{hi} of {n} blocks)")
    save(plots.plot_remaining_paths(54), "lesion_remaining_paths.png",
         "Fig. 7: fraction of paths of each length left after deleting 1, 10, 20 of 54 blocks")

    resilience = ResilienceResult(single, single_block_deletion(stochastic, test,
                                                                progress=progress), 0.5)
    save(plots.plot_resilience(resilience), "lesion_stochastic_depth.png",
         "Fig. 8: single-block deletion, normal vs stochastic-depth training")
    return single


def demo_section(data, out_dir: str, quick: bool = False) -> list[tuple[str, str]]:
    """The lesion part of `make demo`: the 12-block residual MLP on `data` (an `MnistData`).

    `quick=True` (`demo.py --quick`): 1 epoch on 1,000 digits, 500 test
    digits, one sample per point (the same subset as `--quick` here).
    The trained networks are saved in `out_dir/lesion_models`, where
    `--load` reads them (`--quick` with the quick demo's).

    Returns:
        `[(caption, png path relative to out_dir), ...]`.
    """
    train, test = (1000, 500) if quick else (len(data.x_train), len(data.x_test))
    flat = dataclasses.replace(
        data, x_train=data.x_train[:train].reshape(train, -1), y_train=data.y_train[:train],
        x_test=data.x_test[:test].reshape(test, -1), y_test=data.y_test[:test],
    )
    setting = Setting(residual_mlp, epochs=1 if quick else 3, batch_size=128, flat=True)
    return run_studies(setting, flat, out_dir, os.path.join(out_dir, "lesion_models"),
                       samples=1 if quick else 3, length_step=3 if quick else 2,
                       effective_paths=False)


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


SETTINGS = {
    "mlp": Setting(residual_mlp, epochs=4, batch_size=128, flat=True),
    "conv": Setting(mnist_conv, epochs=4, batch_size=64, flat=False),
    "cifar110": Setting(cifar110, epochs=164, batch_size=128, flat=False, he_recipe=True),
}


def fig8_main(args: argparse.Namespace) -> int:
    """`--preset fig8`: Veit et al. (2016), Fig. 8 on the 12-block MNIST conv ResNet, per seed.

    `--shard I/N` runs every N-th seed from I; `--merge` combines the shards.
    """
    import json

    from keras_residual.experiments.resilience import fig8_study, fig8_table, merge_fig8

    if args.merge:
        shards = []
        for folder in args.merge:
            with open(os.path.join(folder, "results.json")) as file:
                shards.append(json.load(file))
        result = merge_fig8(shards)
        print(f"[lesion] merged {len(shards)} shards: seeds {result['seed_ids']}")
        return _write_fig8(result, args.out, fig8_table)
    data = _mnist(False)
    epochs = args.epochs or SETTINGS["conv"].epochs
    if args.quick:
        data = dataclasses.replace(data, x_train=data.x_train[:500], y_train=data.y_train[:500],
                                   x_test=data.x_test[:200], y_test=data.y_test[:200])
        epochs = 1
    print(f"[lesion] data: {data.source}")
    result = fig8_study(lambda survival: mnist_conv(final_survival=survival), data,
                        seeds=args.seeds, epochs=epochs, batch_size=SETTINGS["conv"].batch_size,
                        progress=not args.quick, shard=args.shard or (0, 1))
    return _write_fig8(result, args.out, fig8_table)


def _write_fig8(result: dict, out: str, table_of: Callable[[dict], str]) -> int:
    import json

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as file:
        json.dump(result, file, indent=1)
    table = table_of(result)
    with open(os.path.join(out, "results.md"), "w") as file:
        file.write(table)
    print(table)
    print(f"[lesion] {os.path.join(out, 'results.json')}")
    return 0


def job_setup(args: argparse.Namespace):
    """The job's `DistributionSetup` when the cluster variables are set (`--preset mnist` or
    `cifar110`), else None; joins the cluster, so it runs before anything starts JAX."""
    from keras_residual.distribution import cluster_from_environment, distribution_setup

    if args.keras_hub or args.preset not in ("mnist", "cifar110", "resnet110"):
        return None
    if cluster_from_environment(os.environ) is None:
        return None
    setup = distribution_setup()
    print(f"[lesion] distribution: {setup.description}")
    return setup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = job_setup(args)

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
    if (args.shard or args.merge) and args.preset != "fig8":
        print("[lesion] --shard and --merge split --preset fig8 by seed; the other presets run "
              "in one process")
        return 1
    if args.preset == "fig8":
        return fig8_main(args)
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
    return studies_main(args, setup)


def studies_main(args: argparse.Namespace, setup) -> int:
    """`--preset mnist` and `cifar110`: train (or load) the networks, every study, the figures."""
    if args.dataset == "cifar10" and args.preset != "cifar110":
        print("[lesion] --dataset cifar10 goes with --preset resnet110")
        return 1
    if args.dataset == "mnist" and args.preset == "cifar110":
        print("[lesion] --preset cifar110 runs on CIFAR-10; use --preset mnist for MNIST")
        return 1
    if args.preset == "cifar110":
        from keras_residual.experiments import runner

        try:
            data = runner.load_data("cifar10")
        except FileNotFoundError as error:
            print(f"[lesion] --preset cifar110 needs CIFAR-10: {error}")
            return 1
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
                          length_step=length_step, setup=setup)
    for caption, path in figures if setup is None or setup.is_chief else ():
        print(f"[lesion] {os.path.join(args.out, path)}: {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
