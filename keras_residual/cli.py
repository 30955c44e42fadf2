"""The `keras-residual` command.

    keras-residual models                          # every builder, one line each
    keras-residual summary resnet34                # He et al. (2015), Table 1
    keras-residual summary resnet50 --input-shape 224,224,3
    keras-residual summary cifar_resnet20 --blocks # the parts inside every block
    keras-residual atlas model.keras --images mnist --out atlas  # a browsable HTML atlas
    keras-residual --version

`summary` prints the architecture table of He et al. (2015), Table 1, for a
named builder (`keras_residual.models.get_model`): per stage, output size,
block shape, parameters and multiply-adds; `--blocks` adds
`keras_residual.summary(model)`, which opens every residual block.
`atlas` writes `keras_residual.viz.atlas.atlas`'s static site for a saved
model (a `.keras` file, or a keras-hub image-classifier preset folder) and
the MNIST test digits or a folder of images.

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
from typing import Any

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


def _size(text: str) -> tuple[int, int]:
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"--size takes two positive integers, height and width, e.g. 128,128. "
            f"Received: {text!r}"
        )
    return size


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _is_hub_preset(model: str) -> bool:
    """A keras-hub preset folder (`save_to_preset` writes `metadata.json` and `config.json`)."""
    return os.path.isdir(model) and os.path.isfile(os.path.join(model, "metadata.json"))


def _folder_images(folder: str, size: tuple[int, int], channels: int, limit: int):
    """RGB or gray images of `folder` resized to `size`, in [0, 255], and labels by subfolder.

    Files directly in `folder` have no label (-1). Files in `folder/<class>/` get `<class>` as
    their class index when every subfolder is named by an integer (`folder/207/` for ImageNet's
    class 207), else the index of `<class>` among the sorted subfolder names, as
    `keras.utils.image_dataset_from_directory` numbers them.
    """
    import keras
    import numpy as np

    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = [(os.path.join(folder, f), -1) for f in sorted(os.listdir(folder))
             if f.lower().endswith(IMAGE_SUFFIXES)]
    numbered = bool(classes) and all(name.isdigit() for name in classes)
    for position, name in enumerate(classes):
        label = int(name) if numbered else position
        files += [(os.path.join(folder, name, f), label)
                  for f in sorted(os.listdir(os.path.join(folder, name)))
                  if f.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in {folder!r} or its "
                         "subfolders.")
    files = files[:limit]
    mode = "grayscale" if channels == 1 else "rgb"
    images = np.stack([
        keras.utils.img_to_array(keras.utils.load_img(path, color_mode=mode, target_size=size),
                                 data_format="channels_last")
        for path, _ in files
    ]).astype("float32")
    labels = np.array([label for _, label in files])
    names = None if numbered or not classes else classes
    return images, (labels if (labels >= 0).all() else None), names


def _atlas(args: argparse.Namespace) -> int:
    with quiet_native_logs():
        import keras
        import numpy as np

        import keras_residual  # noqa: F401  (registers the layers the saved model uses)
        from keras_residual.viz.atlas import atlas

    preprocess = None
    if _is_hub_preset(args.model):
        from keras_residual.models.hub import load_keras_hub_classifier

        with quiet_native_logs():
            model, preprocess = load_keras_hub_classifier(
                args.model, input_shape=(*args.size, 3) if args.size else None)
    elif args.model.endswith(".keras") and os.path.isfile(args.model):
        with quiet_native_logs():
            model = keras.saving.load_model(args.model, compile=False)
    else:
        args.parser.error(f"MODEL must be a .keras file or a keras-hub preset folder. "
                          f"Received: {args.model!r}")
    shape = tuple(model.inputs[0].shape[1:])
    first = keras.config.image_data_format() == "channels_first"
    if len(shape) != 3:
        args.parser.error(f"the atlas needs a model of images; {args.model!r} takes {shape}")
    depth, spatial = (shape[0], shape[1:]) if first else (shape[-1], shape[:2])
    size = tuple(args.size) if args.size else tuple(spatial)
    if None in size:
        size = (224, 224)
    labels, class_names = None, None
    if args.images == "mnist":
        from keras_residual.datasets import load_mnist

        data = load_mnist(allow_download=args.allow_download)
        images, labels = data.x_test[:args.limit], data.y_test[:args.limit]
        display = images
        class_names = [str(i) for i in range(10)]
        print(f"[atlas] images: {len(images)} MNIST test digits ({data.source})")
    elif os.path.isdir(args.images):
        if depth not in (1, 3):
            args.parser.error(f"folder images are gray or RGB, and {args.model!r} takes "
                              f"{depth} channels")
        raw, labels, class_names = _folder_images(args.images, size, depth, args.limit)
        display = raw / 255.0
        images = preprocess(raw) if preprocess is not None else raw * args.scale
        how = "the preset's preprocessing" if preprocess is not None else f"x {args.scale:g}"
        print(f"[atlas] images: {len(images)} from {args.images} ({how})")
    else:
        args.parser.error(f"--images must be 'mnist' or a folder. Received: {args.images!r}")
    if first:
        images, display = np.moveaxis(images, -1, 1), np.moveaxis(display, -1, 1)
    result = atlas(model, images, args.out, channels=args.channels, labels=labels,
                   display=display, class_names=class_names, k=args.k, steps=args.steps,
                   size=args.size, seed=args.seed)
    print(f"{result.index}: {result.seconds:.1f} s, {result.bytes / 1e6:.2f} MB")
    return 0


def _add_atlas_command(commands: Any) -> None:
    """Add the `atlas` command to `commands` (what `add_subparsers` returns)."""
    atlas = commands.add_parser(
        "atlas",
        help="write a browsable HTML atlas of a saved model, block by block",
        description="Index of stages and blocks; per block, the feature visualization and "
        "top-k patches with guided backprop of its first channels and its single-deletion "
        "error; per stage, the refinement overlap; a Grad-CAM gallery per class "
        "(keras_residual.viz.atlas.atlas). Open OUT/index.html from disk.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    atlas.add_argument("model", help="a .keras file, or a keras-hub image-classifier preset "
                       "folder (converted with keras_residual.models.load_keras_hub_classifier)")
    atlas.add_argument("--images", required=True,
                       help="'mnist' (the test digits), or a folder of images; images in "
                       "subfolders are labelled by subfolder, in sorted order")
    atlas.add_argument("--out", required=True, help="output folder")
    atlas.add_argument("--channels", type=_positive_int, default=8,
                       help="channels shown per block")
    atlas.add_argument("--steps", type=_positive_int, default=512,
                       help="feature-visualization steps")
    atlas.add_argument("--k", type=_positive_int, default=9, help="top-k images per channel")
    atlas.add_argument("--limit", type=_positive_int, default=1000, help="images used at most")
    atlas.add_argument("--size", type=_size, default=None,
                       help="image size H,W; unset: the model's input size, or 224,224 when "
                       "the model has none")
    atlas.add_argument("--scale", type=float, default=1 / 255,
                       help="folder images in [0, 255] are multiplied by this for a .keras "
                       "model (a keras-hub preset uses its own preprocessing)")
    atlas.add_argument("--seed", type=int, default=0, help="feature-visualization seed")
    atlas.add_argument("--allow-download", action="store_true",
                       help="download full MNIST when it is not in the Keras cache")
    atlas.set_defaults(handler=_atlas, parser=atlas)


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
    _add_atlas_command(commands)
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
