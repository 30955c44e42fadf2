"""Plain networks degrade with depth, residual networks do not: He et al. (2015), Fig. 6.

"Deep Residual Learning for Image Recognition", Sec. 4.2: CIFAR-style
networks of 6n+2 layers (a 3x3 conv, three stages of 2n 3x3 convs with
16/32/64 filters on 32/16/8 feature maps, global pooling, a 10-way
classifier), with option A (zero-padding, parameter-free) shortcuts, and
their plain twins (the same layers without shortcuts), trained with the same
recipe. The paper's plain-56 has higher training error than plain-20 (the
degradation problem), while ResNet-56 trains better than ResNet-20.

    python examples/degradation.py --out runs/degradation             # MNIST digits, CPU
    python examples/degradation.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py \\
        --widths 16,32,64 --full --seeds 3 --out runs/degradation_cifar   # the paper, GPU
    python examples/degradation.py --quick --out /tmp/deg             # seconds

By default it runs a reduced setting on the offline MNIST digits (4,000
training / 1,000 test images, pooled to 14x14, stage widths 8/16/32, 12
epochs, learning rate 0.02: see `DEFAULTS`); `--dataset cifar10` is the paper's setting (164 epochs = 64k
iterations). Writes `results.json` (final training and test error per family
and depth, per-epoch curves, parameters) and `degradation.png` in the form
of Fig. 6 to `--out`; rerunning the command resumes.
"""

from __future__ import annotations

import argparse
import functools
import time

from keras_residual_cli import light_module

# The options load without Keras, so --help answers at once; the rest is imported where used.
add_common_arguments = light_module("keras_residual.experiments.arguments").add_common_arguments

FAMILIES = ("plain", "residual")  # experiments.tables.FAMILIES (tested equal)
DEPTHS = (20, 32, 44, 56)
QUICK_DEPTHS = (8, 14)
#: The reduced MNIST setting trains at 0.02, not He et al.'s 0.1: its 12 epochs of 4,000 digits
#: are 384 iterations (the paper: 64k), and at 0.1 ResNet-56 had not finished fitting (0.54 +-
#: 0.57% training error vs 0.02 +- 0.03% for ResNet-20, 3 seeds); at 0.02 the deeper ResNet trains
#: at least as well (0.03 +- 0.06% vs 0.10 +- 0.04%), as in Fig. 6. CIFAR-10 keeps 0.1.
DEFAULTS = {"mnist": {"learning_rate": 0.02}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring).

    Example:
        >>> args = parse_args(["--quick", "--full"])
        >>> args.quick, args.full
        (True, True)
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("--depths", default=None, help="6n+2 depths, e.g. 20,32,44,56")
    parser.add_argument("--full", action="store_true", help="add ResNet-110 and plain-110")
    return parser.parse_args(argv)


def depths_of(args: argparse.Namespace) -> list[int]:
    """`--depths`, or 20/32/44/56 (8/14 with `--quick`), plus 110 with `--full`.

    Example:
        >>> depths_of(parse_args(["--full"]))
        [20, 32, 44, 56, 110]
    """
    if args.depths:
        depths = [int(d) for d in args.depths.split(",")]
    else:
        depths = list(QUICK_DEPTHS if args.quick else DEPTHS)
    if args.full and 110 not in depths:
        depths.append(110)
    bad = [d for d in depths if d < 8 or (d - 2) % 6]
    if bad:
        raise ValueError(f"Depths must be 6n+2 with n >= 1 (8, 14, 20, ...). Received: {bad}")
    return depths


def main(argv: list[str] | None = None) -> dict:
    """Trains every plain and residual depth; writes results.json and degradation.png.

    Example:
        >>> main(["--quick", "--out", "/tmp/degradation"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # The distribution first: joining a cluster must precede anything that starts JAX.
    from keras_residual.distribution import distribution_setup

    out = distribution_setup().output_dir(args.out)  # results and figures: the chief's only
    from keras_residual.experiments import networks, tables
    from keras_residual.experiments.results import degradation_results
    from keras_residual.experiments.runner import prepare, run_variants, write_results

    depths = depths_of(args)
    start = time.time()
    data, recipe, settings = prepare(args, DEFAULTS)
    print(f"Data: {data.name}, {data.source}, {data.input_shape}; {settings['distribution']}; "
          f"mixed precision {'on' if settings['mixed_precision'] else 'off'}")
    print(f"Recipe: {recipe}; widths {settings['widths']}, BN momentum {settings['bn_momentum']}")
    variants = {
        f"{family}-{depth}": functools.partial(
            networks.cifar_net, depth, plain=family == "plain", widths=settings["widths"],
            input_shape=data.input_shape, bn_momentum=settings["bn_momentum"],
        )
        for depth in depths for family in FAMILIES
    }
    summaries = run_variants(variants, data, recipe, settings["seeds"], args.out,
                             progress=not args.no_progress)
    settings["seconds"] = round(time.time() - start, 1)
    results = degradation_results(summaries, depths, settings)
    path = write_results(out, results)
    from keras_residual.experiments.plots import plot_degradation
    from keras_residual.viz.plots import save_figure

    figure = save_figure(plot_degradation(results), f"{out}/degradation.png")
    print(tables.degradation_table(results))
    print(f"Wrote {path} and {figure} ({settings['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
