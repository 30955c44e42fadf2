"""Cardinality at an equal parameter budget: Xie et al. (2017), Tables 2 and 3, in spirit.

"Aggregated Residual Transformations for Deep Neural Networks": a ResNeXt
block splits its bottleneck into C groups of width d; Table 2 picks d for
each C so that a block keeps the parameters (and multiply-adds) of the
ResNet bottleneck (C=1, d=64; 2x40d, 4x24d, 8x14d, 32x4d), and Table 3 shows
ImageNet error falling as C grows at that fixed budget (ResNet-50 23.9%,
ResNeXt-50 32x4d 22.2%). Here the same five networks, a CIFAR-style ResNeXt
(three stages of `--blocks` bottlenecks, Xie et al.'s CIFAR layout), are
trained with one recipe.

    python examples/cardinality.py --out runs/cardinality               # MNIST digits, CPU
    python examples/cardinality.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py \\
        --widths 64,128,256 --blocks 3 --seeds 3 --out runs/cardinality_cifar   # GPU
    python examples/cardinality.py --quick --out /tmp/cardinality       # seconds

By default a reduced setting on the offline MNIST digits (stage widths
16/32/64, so outputs of 64/128/256 channels, 1 block per stage, the first
1,000 training digits pooled to 7x7, 6 epochs: grouped convolutions are slow
on CPUs). Writes `results.json` (`table3`: cardinality -> group
width, parameters, training and test error, curves, the paper's number) and
`cardinality.png` to `--out`; rerunning the command resumes.
"""

from __future__ import annotations

import argparse
import functools
import time

from keras_residual_cli import light_module

# The options load without Keras, so --help answers at once; the rest is imported where used.
add_common_arguments = light_module("keras_residual.experiments.arguments").add_common_arguments

CARDINALITIES = (1, 2, 4, 8, 32)
DEFAULTS = {
    # Grouped convolutions are slow on CPUs: 1,000 digits pooled to 7x7, 6 epochs.
    "mnist": {"widths": (16, 32, 64), "epochs": 6, "image_size": 7, "train_size": 1000},
    "cifar10": {"widths": (64, 128, 256), "epochs": 164},
    "quick": {"widths": (16, 32, 64)},
}
DEFAULT_BLOCKS = {"mnist": 1, "cifar10": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring).

    Example:
        >>> parse_args(["--cardinalities", "1,32"]).cardinalities
        '1,32'
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("--blocks", type=int, default=None,
                        help="bottleneck blocks per stage (1 on MNIST, 3 on CIFAR-10)")
    parser.add_argument("--cardinalities", default=None,
                        help="subset of 1,2,4,8,32 (Xie et al. 2017, Table 2)")
    return parser.parse_args(argv)


def variant_name(cardinality: int) -> str:
    """Xie et al.'s notation, "Cxd" at the 64-filter stage (`results.cardinality_variant`).

    Example:
        >>> variant_name(32)
        '32x4d'
    """
    from keras_residual.experiments.results import cardinality_variant

    return cardinality_variant(cardinality)


def main(argv: list[str] | None = None) -> dict:
    """Trains the ResNeXt of every cardinality; writes results.json and cardinality.png.

    Example:
        >>> main(["--quick", "--out", "/tmp/cardinality"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # The distribution first: joining a cluster must precede anything that starts JAX.
    from keras_residual.distribution import distribution_setup

    out = distribution_setup().output_dir(args.out)  # results and figures: the chief's only
    from keras_residual.experiments import networks, published
    from keras_residual.experiments.results import cardinality_results
    from keras_residual.experiments.runner import prepare, run_variants, write_results
    from keras_residual.experiments.tables import cardinality_table

    start = time.time()
    data, recipe, settings = prepare(args, DEFAULTS)
    blocks = args.blocks or (1 if args.quick else DEFAULT_BLOCKS[args.dataset])
    cardinalities = ([int(c) for c in args.cardinalities.split(",")] if args.cardinalities
                     else list(CARDINALITIES))
    for c in cardinalities:
        networks.group_width(c)  # unknown cardinalities fail before any training
    print(f"Data: {data.name}, {data.source}, {data.input_shape}; {settings['distribution']}; "
          f"mixed precision {'on' if settings['mixed_precision'] else 'off'}")
    print(f"ResNeXt, {blocks} blocks per stage, widths {settings['widths']}; {recipe}")
    variants = {
        variant_name(c): functools.partial(
            networks.resnext_net, c, blocks=blocks, widths=settings["widths"],
            input_shape=data.input_shape, bn_momentum=settings["bn_momentum"],
        )
        for c in cardinalities
    }
    summaries = run_variants(variants, data, recipe, settings["seeds"], args.out,
                             progress=not args.no_progress)
    settings["seconds"] = round(time.time() - start, 1)
    results = cardinality_results(summaries, cardinalities, blocks, settings)
    path = write_results(out, results)
    from keras_residual.experiments.plots import plot_table
    from keras_residual.viz.plots import save_figure

    fig = plot_table(results["table3"], {variant_name(c): published.CARDINALITY_RESNEXT50[c]
                                         for c in cardinalities},
                     "Xie et al. 2017, Table 3 (ours: MNIST-scale ResNeXt)",
                     "Xie et al. 2017, ResNeXt-50, ImageNet top-1")
    figure = save_figure(fig, f"{out}/cardinality.png")
    print(cardinality_table(results))
    print(f"Wrote {path} and {figure} ({settings['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
