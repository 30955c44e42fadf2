"""Shortcut variants and activation placements: He et al. (2016), Tables 1 and 2.

"Identity Mappings in Deep Residual Networks": on one CIFAR ResNet, replace
the identity shortcut of every unit by constant scaling, exclusive gating,
shortcut-only gating, a 1x1 convolution or dropout (Fig. 2, Table 1), and
move BN and ReLU around the addition (Fig. 4, Table 2). Each variant is a
one-argument change: `merge=` / `shortcut=` (through
`keras_residual.experiments.networks.rewire`) or the builders' `placement=`.
The paper trains ResNet-110: multiplicative shortcuts hamper optimization,
full pre-activation is best.

    python examples/identity_mappings.py --out runs/identity            # MNIST digits, CPU
    python examples/identity_mappings.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py \\
        --depth 110 --widths 16,32,64 --seeds 5 --out runs/identity_cifar   # the paper, GPU
    python examples/identity_mappings.py --quick --out /tmp/identity    # seconds

By default a reduced setting on the offline MNIST digits (depth 20, widths
8/16/32, 14x14 inputs, 10 epochs). Writes `results.json` (`table1` and
`table2`: training and test error, parameters, curves, and the paper's
ResNet-110 numbers) and `identity_mappings_table1.png` / `_table2.png` to
`--out`, and prints both tables beside the paper's; rerunning the command
resumes.
"""

from __future__ import annotations

import argparse
import functools
import time

from keras_residual_cli import light_module

# The options load without Keras, so --help answers at once; the rest is imported where used.
add_common_arguments = light_module("keras_residual.experiments.arguments").add_common_arguments

DEFAULTS = {"mnist": {"epochs": 10}, "cifar10": {}}
DEFAULT_DEPTH = {"mnist": 20, "cifar10": 110}
QUICK_DEPTH = 8
TABLES = ("1", "2", "both")
ORIGINAL = "original"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring).

    Example:
        >>> parse_args(["--table", "2"]).table
        '2'
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("--depth", type=int, default=None,
                        help="6n+2 (None: 20 on MNIST, 110 on CIFAR-10 as in the paper)")
    parser.add_argument("--table", default="both", choices=TABLES,
                        help="Table 1 (shortcuts), Table 2 (placements) or both")
    return parser.parse_args(argv)


def make_variants(args: argparse.Namespace, depth: int, settings: dict, input_shape) -> dict:
    """Variant name -> builder; Table 2's "(a) original" is Table 1's "original"."""
    from keras_residual.experiments import networks

    common = dict(widths=settings["widths"], input_shape=input_shape,
                  bn_momentum=settings["bn_momentum"])
    variants = {}
    if args.table in ("1", "both"):
        for name in networks.SHORTCUT_VARIANTS:
            variants[name] = functools.partial(networks.shortcut_variant, name, depth, **common)
    if args.table in ("2", "both"):
        for name, placement in networks.PLACEMENT_VARIANTS.items():
            key = ORIGINAL if placement == "original" else name
            variants[key] = functools.partial(networks.cifar_net, depth, placement=placement,
                                              **common)
    return variants


def main(argv: list[str] | None = None) -> dict:
    """Trains every variant; writes results.json and one figure per table.

    Example:
        >>> main(["--quick", "--out", "/tmp/identity"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # The distribution first: joining a cluster must precede anything that starts JAX.
    from keras_residual.distribution import distribution_setup

    out = distribution_setup().output_dir(args.out)  # results and figures: the chief's only
    from keras_residual.experiments import published
    from keras_residual.experiments.results import identity_mappings_results
    from keras_residual.experiments.runner import prepare, run_variants, write_results
    from keras_residual.experiments.tables import identity_tables

    start = time.time()
    data, recipe, settings = prepare(args, DEFAULTS)
    depth = args.depth or (QUICK_DEPTH if args.quick else DEFAULT_DEPTH[args.dataset])
    print(f"Data: {data.name}, {data.source}, {data.input_shape}; {settings['distribution']}; "
          f"mixed precision {'on' if settings['mixed_precision'] else 'off'}")
    print(f"ResNet-{depth}, widths {settings['widths']}, BN momentum {settings['bn_momentum']}; "
          f"{recipe}")
    variants = make_variants(args, depth, settings, data.input_shape)
    summaries = run_variants(variants, data, recipe, settings["seeds"], args.out,
                             progress=not args.no_progress)
    settings["seconds"] = round(time.time() - start, 1)
    tables = ("1", "2") if args.table == "both" else (args.table,)
    results = identity_mappings_results(summaries, depth, settings, tables, original=ORIGINAL)
    path = write_results(out, results)
    from keras_residual.experiments.plots import plot_table
    from keras_residual.viz.plots import save_figure

    figures = []
    for key, table, title in (("table1", published.SHORTCUT_VARIANTS_RESNET110, "Table 1"),
                              ("table2", published.PLACEMENTS_RESNET110, "Table 2")):
        if key in results:
            fig = plot_table(results[key], table, f"He et al. 2016, {title} (ours: ResNet-{depth})",
                             "He et al. 2016, ResNet-110, CIFAR-10")
            figures.append(save_figure(fig, f"{out}/identity_mappings_{key}.png"))
    print(identity_tables(results))
    print(f"Wrote {path} and {', '.join(figures)} ({settings['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
