"""The `keras-residual` command.

    keras-residual models                          # every builder, one line each
    keras-residual summary resnet34                # He et al. (2015), Table 1
    keras-residual summary resnet50 --input-shape 224,224,3
    keras-residual summary cifar_resnet20 --blocks # the parts inside every block
    keras-residual --version

`summary` prints the architecture table of He et al. (2015), Table 1, for a
named builder (`keras_residual.models.get_model`): per stage, output size,
block shape, parameters and multiply-adds; `--blocks` adds
`keras_residual.summary(model)`, which opens every residual block.

This module imports only the standard library at the top: the console script
(`keras_residual_cli`) loads it by path, so `--help`, `--version` and usage
errors answer before Keras (and TensorFlow) are imported, and the commands
import the package inside `quiet_native_logs`.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

PROG = "keras-residual"

#: Lines that TensorFlow (and XLA) write to stderr from C++ while they load:
#: absl's notice before its logging is initialized, and glog-style records
#: such as "I0000 00:00:1796.0  6567 port.cc:153] oneDNN custom operations ...".
_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\]"
    r"|To enable the following instructions:)"
)

#: Builder families whose names carry the depth (`models.DEPTH_BUILDERS`, not imported before
#: parsing): pattern -> (builder, example depths).
_DEPTH_NAMES = {
    "cifar_resnet{depth}": ("cifar_resnet", (20, 32, 44, 56, 110, 1202)),
    "cifar_preact_resnet{depth}": ("cifar_preact_resnet", (110, 164, 1001)),
    "resnet{depth}_v2_paper": ("resnet_v2_paper", (50, 101, 152, 200)),
}


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Keep TensorFlow's start-up log lines off the terminal; pass everything else on.

    TensorFlow 2.21 logs through absl before absl's logging is initialized,
    so `TF_CPP_MIN_LOG_LEVEL` does not hold back its first lines (oneDNN,
    CUDA stubs). Inside the `with` body, file descriptor 2 goes to a
    temporary file; on exit every line that is not such a record is written
    back to stderr, so warnings and tracebacks still show.

    Example:
        >>> with quiet_native_logs():
        ...     print("kept")
        kept
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _NATIVE_LOG.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _quiet_environment() -> None:
    """Log levels for the libraries the commands load; a value the user set wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ logs after start-up


def _silence_absl() -> None:
    """absl's Python logger (used by TensorFlow and Keras) to errors only."""
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow and Keras; nothing to silence without it
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def version() -> str:
    """The installed version of keras-residual.

    Example:
        >>> version().count(".") >= 1
        True
    """
    from importlib import metadata

    try:
        return metadata.version("keras-residual")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        with quiet_native_logs():
            from keras_residual import __version__

        return __version__


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(
            f"--input-shape takes positive integers separated by commas, e.g. 224,224,3. "
            f"Received: {text!r}"
        )
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _load_models():
    """`keras_residual.models`, imported without TensorFlow's start-up log lines."""
    with quiet_native_logs():
        from keras_residual import models
    _silence_absl()
    return models


def _known_names(models) -> list[str]:
    return sorted(models.BUILDERS) + list(_DEPTH_NAMES)


def _closest(name: str, names: list[str]) -> list[str]:
    """Every name as similar to `name` as the most similar one, longest shared prefix first.

    One suggestion would hide a tie: "resnet35" is as close to resnet34 as to resnet50.
    """
    ratios = {other: difflib.SequenceMatcher(None, name, other).ratio() for other in names}
    best = max(ratios.values(), default=0.0)
    if best < 0.6:
        return []
    tied = [other for other, ratio in ratios.items() if ratio >= best - 1e-9]
    return sorted(tied, key=lambda other: (-len(os.path.commonprefix([name, other])), other))


def _check_name(parser: argparse.ArgumentParser, models, name: str) -> None:
    """A usage error, with the closest names, for a name `get_model` does not know."""
    if name in models.BUILDERS:
        return
    for pattern in _DEPTH_NAMES:
        if re.fullmatch(re.escape(pattern).replace(r"\{depth\}", r"\d+"), name):
            return
    examples = sorted(models.BUILDERS) + [
        pattern.format(depth=depth) for pattern, (_, depths) in _DEPTH_NAMES.items()
        for depth in depths
    ]
    close = _closest(name, examples)
    hint = f"; did you mean {' or '.join(close)}?" if close else ";"
    parser.error(f"unknown model {name!r}{hint} see `{PROG} models` for the list")


def _models(args: argparse.Namespace) -> int:
    models = _load_models()
    rows = []
    for name in models.BUILDERS:  # the registry's order: families together
        doc = (models.BUILDERS[name].__doc__ or "").strip()
        rows.append((name, doc.splitlines()[0] if doc else ""))
    for pattern, (builder_name, depths) in _DEPTH_NAMES.items():
        builder = getattr(models, builder_name)
        first = (builder.__doc__ or "").strip().splitlines()[0]
        rows.append((pattern, f"{first} Depths: {', '.join(map(str, depths))}, ..."))
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name.ljust(width)}  {description}")
    print(f"\n`{PROG} summary NAME` prints a model's architecture table; in Python, "
          "keras_residual.models.get_model(NAME, **kwargs) builds it.")
    return 0


def _summary(args: argparse.Namespace) -> int:
    models = _load_models()
    import keras  # loaded by `_load_models`

    _check_name(args.parser, models, args.model)
    kwargs = {}
    if args.input_shape is not None:
        kwargs["input_shape"] = args.input_shape
    if args.classes is not None:
        kwargs["classes"] = args.classes
    # The table reads shapes only: the weights are created uninitialized (Keras'
    # `StatelessScope(initialize_variables=False)`), which skips drawing their initial values,
    # most of a large model's build time (ResNet-152 on JAX: 5.9 s -> 0.6 s).
    with quiet_native_logs(), keras.StatelessScope(initialize_variables=False):
        try:
            model = models.get_model(args.model, **kwargs)
        except (TypeError, ValueError) as error:  # the builder's own check of the arguments
            args.parser.error(f"cannot build {args.model!r}: {error}")
    print(models.architecture_table(model))
    if args.blocks:
        from keras_residual.model_summary import summary

        print()
        summary(model)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per command.

    Example:
        >>> build_parser().parse_args(["summary", "resnet34"]).model
        'resnet34'
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, inspect and dissect residual networks.",
        epilog=f"`{PROG} COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "models", help="list the model builders",
        description="Every name that `summary` and keras_residual.models.get_model accept.",
    )
    listing.set_defaults(handler=_models, parser=listing)
    summary = commands.add_parser(
        "summary",
        help="print the architecture table (He et al. 2015, Table 1) of a named model",
        description="Per stage: output size, block shape, parameters, multiply-adds "
        "(He et al. 2015, Table 1).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    summary.add_argument(
        "model", help=f"builder name, e.g. resnet50 or cifar_resnet110; `{PROG} models` lists them"
    )
    summary.add_argument("--input-shape", type=_shape, default=None,
                         help="input size, e.g. 224,224,3 (None: the builder's)")
    summary.add_argument("--classes", type=_positive_int, default=None,
                         help="classifier outputs (None: the builder's)")
    summary.add_argument("--blocks", action="store_true",
                         help="also list every layer, opening each residual block "
                         "(keras_residual.summary)")
    summary.set_defaults(handler=_summary, parser=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-residual` console script.

    Args:
        argv: list of str or None. The arguments; None reads `sys.argv`.

    Returns:
        The exit status (argparse exits with 2 on a usage error).

    Example:
        >>> main(["summary", "mnist_resnet"])  # doctest: +ELLIPSIS
        layer name  output size  mnist_resnet ...
        0
    """
    _quiet_environment()
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
