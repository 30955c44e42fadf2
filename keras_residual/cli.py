"""The `keras-residual` command.

    keras-residual summary resnet34
    keras-residual summary resnet50 --input-shape 224,224,3
    keras-residual summary cifar_resnet110

`summary` prints He et al. (2015)'s Table 1 (seed 002, Figure 2) for a named
builder: per stage, output size, block shape, parameters and multiply-adds.
Other commands register themselves as further argparse subparsers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--input-shape takes integers separated by commas, e.g. 224,224,3. Received: {text!r}"
        ) from error


def _summary(args: argparse.Namespace) -> int:
    # Imported here so that `keras-residual --help` answers without loading a backend.
    from keras_residual.models import architecture_table, get_model

    kwargs = {}
    if args.input_shape is not None:
        kwargs["input_shape"] = args.input_shape
    if args.classes is not None:
        kwargs["classes"] = args.classes
    print(architecture_table(get_model(args.model, **kwargs)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command.

    Example:
        >>> build_parser().parse_args(["summary", "resnet34"]).model
        'resnet34'
    """
    parser = argparse.ArgumentParser(
        prog="keras-residual", description="Build, inspect and dissect residual networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summary",
        help="print the architecture table (He et al. 2015, Table 1) of a named model",
        description="Per stage: output size, block shape, parameters, multiply-adds.",
    )
    summary.add_argument(
        "model",
        help="builder name: resnet18 ... resnet152, resnet50_v2, resnext50_32x4d, plain34, "
        "cifar_resnet20, cifar_preact_resnet164, mnist_resnet, vgg_plain, alexnet, ...",
    )
    summary.add_argument("--input-shape", type=_shape, default=None,
                         help="e.g. 224,224,3 (default: the builder's)")
    summary.add_argument("--classes", type=int, default=None, help="classifier outputs")
    summary.set_defaults(handler=_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-residual` console script.

    Args:
        argv: list of str or None. The arguments; None reads `sys.argv`.

    Returns:
        The exit status.

    Example:
        >>> main(["summary", "mnist_resnet"])  # doctest: +ELLIPSIS
        layer name  output size  mnist_resnet ...
        0
    """
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
