"""Top-1 and top-5 accuracy of a model on an image folder in ImageNet's validation layout.

Single 224x224 center crop of the image resized to 256 on its shorter side,
the protocol of the single-model, single-crop numbers of He et al. (2015) and
keras.io (ResNet50 74.9 / 92.1, ResNet50V2 76.0 / 93.0).

    python examples/evaluate_imagenet.py --data /data/imagenet/val --model resnet50 --weights imagenet
    python examples/evaluate_imagenet.py --data val/ --weights runs/resnet50/model.keras

`--weights` is "imagenet" (keras.applications' published checkpoint, through
the builder), a saved `.keras` model, or a weights file (`.weights.h5` of a
`--model` build, or a keras.applications `.h5` checkpoint). The class
subfolders are sorted by name; ImageNet's synset folders (n01440764, ...)
sorted give keras.applications' class order.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

#: keras_residual.datasets.images.PREPROCESSING_MODES, written out so that --help answers
#: before Keras loads (tests/test_examples.py checks that they are the same).
PREPROCESSING_MODES = ("caffe", "tf", "torch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Example:
        >>> parse_args(["--data", "val/"]).weights
        'imagenet'
    """
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None,
                        help="folder with one subfolder per class (required without --quick)")
    parser.add_argument("--model", default="resnet50", help="a builder in keras_residual.models")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the builder")
    parser.add_argument("--weights", default="imagenet",
                        help='"imagenet", "random", a .keras model or a weights file')
    parser.add_argument("--image-size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch-size", type=int, default=64, help="images per evaluation batch")
    parser.add_argument("--steps", type=int, default=None, help="batches to evaluate (None: the whole folder)")
    parser.add_argument(
        "--preprocessing", choices=PREPROCESSING_MODES, default=None, help="input preprocessing (None: the model's own)"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke test: the tiny ResNet-18 of train_imagenet.py --quick, with random "
             "weights unless --weights is given; without --data, on random images written "
             "to --out/quick_data/val",
    )
    parser.add_argument("--out", default=".",
                        help="where --quick writes its random images")
    args = parser.parse_args(argv)
    if args.data is None and not args.quick:
        parser.error("--data is required (or pass --quick to evaluate on random images)")
    return args


def load(args: argparse.Namespace, classes: int) -> keras.Model:
    """The model to evaluate: a saved .keras model, or `--model` built with `--weights`.

    Example:
        >>> load(parse_args(["--data", "val/", "--weights", "run/model.keras"]), 1000)  # doctest: +SKIP
    """
    import keras

    from keras_residual import models  # importing the package registers its layers for load_model

    if args.weights == "random":
        return models.get_model(
            args.model, weights=None, input_shape=(args.image_size, args.image_size, 3),
            classes=classes, **json.loads(args.model_kwargs),
        )
    if args.weights.endswith(".keras"):
        # compile=False: the training run's optimizer and schedule are not needed here.
        return keras.models.load_model(args.weights, compile=False)
    kwargs = dict(
        input_shape=(args.image_size, args.image_size, 3),
        classes=classes,
        **json.loads(args.model_kwargs),
    )
    applications_checkpoint = args.weights.endswith(".h5") and not args.weights.endswith(
        ".weights.h5"
    )
    if args.weights == "imagenet" or applications_checkpoint:
        # keras.applications' checkpoints: the builder loads them itself.
        return models.get_model(args.model, weights=args.weights, **kwargs)
    model = models.get_model(args.model, weights=None, **kwargs)
    model.load_weights(args.weights)
    return model


def main(argv: list[str] | None = None) -> dict:
    """Evaluates the model on `--data`; returns `{"loss", "top1", "top5"}`.

    Example:
        >>> main(["--data", "imagenet/val", "--weights", "imagenet"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # Keras and TensorFlow load only now: --help and usage errors answer at once.
    import keras

    from keras_residual.datasets.images import image_folder_dataset, preprocessing_mode

    if args.quick:
        from train_imagenet import QUICK, write_random_image_folder  # this folder's script

        for key in ("model", "model_kwargs", "image_size", "batch_size"):
            setattr(args, key, QUICK[key])
        if args.weights == "imagenet":
            args.weights = "random"
        if args.data is None:
            root = write_random_image_folder(os.path.join(args.out, "quick_data"))
            args.data = os.path.join(root, "val")
    preprocessing = args.preprocessing or preprocessing_mode(args.model)
    folder = image_folder_dataset(
        args.data, args.image_size, args.batch_size, preprocessing=preprocessing
    )
    print(f"Evaluation data: {folder.source}")
    model = load(args, len(folder.class_names))
    if model.output_shape[-1] != len(folder.class_names):
        raise ValueError(
            f"The model predicts {model.output_shape[-1]} classes but {args.data!r} has "
            f"{len(folder.class_names)} class folders."
        )
    model.compile(
        loss="sparse_categorical_crossentropy",
        metrics=[
            keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ]
    )
    results = model.evaluate(folder.dataset, steps=args.steps, return_dict=True, verbose=1)
    print(f"top-1 accuracy: {results['top1']:.4f}  top-5 accuracy: {results['top5']:.4f}")
    return results


if __name__ == "__main__":
    main()
