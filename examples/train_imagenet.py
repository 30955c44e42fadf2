"""Train a residual network on an image folder in ImageNet's layout.

The recipe of He et al., "Deep Residual Learning for Image Recognition"
(2015), Sec. 3.4, with the schedule and large-batch rules of Goyal et al.
(2017), Sec. 2 and 5.1: SGD with momentum 0.9, learning rate 0.1 x batch / 256
after a linear warm-up, divided by 10 at 30, 60 and 80 of 90 epochs (Goyal et
al.; He et al. divide when the error plateaus) or cosine decay, weight decay 1e-4 on
kernels, random-resized crops and flips, the model's own input
preprocessing.

    python examples/train_imagenet.py --data /data/imagenet --model resnet50 \\
        --batch-size 256 --epochs 90 --mixed-precision --xla --out runs/resnet50

`--data` holds `train/` and optionally `val/`, each with one subfolder per
class. Training uses every local GPU (MirroredStrategy on TensorFlow,
DataParallel on JAX), or, on JAX, a cluster of processes when the
KERAS_DISTRIBUTION_* variables are set (README, "Past one machine").
Rerunning the same command
after an interruption resumes from `--out/backup`; TensorBoard logs are in
`--out/logs`, per-epoch weights in `--out/checkpoints`, the final model in
`--out/model.keras`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

#: The choices of --decay and --preprocessing: keras_residual.training.DECAYS and
#: keras_residual.datasets.images.PREPROCESSING_MODES, written out so that --help answers
#: before Keras loads (tests/test_examples.py checks that they are the same).
DECAYS = ("step", "cosine")
PREPROCESSING_MODES = ("caffe", "tf", "torch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; defaults are He et al.'s ImageNet recipe at batch 256.

    Example:
        >>> args = parse_args(["--data", "imagenet/"])
        >>> args.batch_size, args.epochs, args.weight_decay
        (256, 90, 0.0001)
    """
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None,
                        help="folder with train/ (and val/) class subfolders (required "
                             "without --quick)")
    parser.add_argument("--model", default="resnet50", help="a builder in keras_residual.models")
    parser.add_argument(
        "--model-kwargs", default="{}", help='JSON keyword arguments for the builder (any build_resnet argument), e.g. \'{"drop_rate": 0.1, "zero_init_last": true}\''
    )
    parser.add_argument("--image-size", type=int, default=224, help="training crop height and width")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch, all replicas")
    parser.add_argument("--epochs", type=int, default=90, help="training epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="None: images / batch")
    parser.add_argument("--validation-steps", type=int, default=None, help="None: all of val/")
    parser.add_argument("--warmup-epochs", type=float, default=5.0,
                        help="epochs of linear learning-rate warmup")
    parser.add_argument("--decay", choices=DECAYS, default="step",
                        help="learning-rate decay after the warmup")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="label smoothing of the cross-entropy")
    parser.add_argument(
        "--preprocessing", choices=PREPROCESSING_MODES, default=None, help="input preprocessing (None: the model's own)"
    )
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute, float32 weights")
    parser.add_argument("--xla", action="store_true",
                        help="always compile the train step (XLA; torch.compile on PyTorch); "
                        "without it Keras' jit_compile='auto' already uses XLA on JAX, and on "
                        "TensorFlow with a GPU and no tf.distribute strategy")
    parser.add_argument("--seed", type=int, default=None, help="random seed (None: unseeded)")
    parser.add_argument("--out", default="runs/imagenet", help="checkpoints, backup and logs")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"a smoke test: {QUICK_SUMMARY}; without --data, on random images written to "
             "--out/quick_data",
    )
    args = parser.parse_args(argv)
    if args.data is None and not args.quick:
        parser.error("--data is required (or pass --quick to train on random images)")
    return args


#: What --quick trains: a two-stage, narrow ResNet-18 for two epochs of two steps.
QUICK = {"model": "resnet18", "model_kwargs": '{"blocks": [1, 1], "filters": [8, 16], '
         '"strides": [1, 2]}', "image_size": 32, "batch_size": 4, "epochs": 2,
         "steps_per_epoch": 2, "warmup_epochs": 1.0}
QUICK_SUMMARY = "ResNet-18 cut to 2 stages of 8 and 16 filters, 32x32, 2 epochs of 2 steps of 4"


def write_random_image_folder(root: str, classes: int = 3, per_class: int = 4) -> str:
    """`root/train` and `root/val` with `classes` folders of random-noise PNGs; returns root.

    Example:
        >>> write_random_image_folder("/tmp/noise")  # doctest: +SKIP
        '/tmp/noise'
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", max(1, per_class // 2))):
        for label in range(classes):
            folder = os.path.join(root, split, f"class{label}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                keras.utils.save_img(os.path.join(folder, f"{i}.png"),
                                     rng.uniform(0, 255, (40, 40, 3)))
    return root


def apply_quick(args: argparse.Namespace, out: str | None = None) -> None:
    """--quick: the tiny settings of `QUICK`, and random images (in `out`, default --out) when no --data is given."""
    for key, value in QUICK.items():
        setattr(args, key, value)
    if args.data is None:
        args.data = write_random_image_folder(os.path.join(out or args.out, "quick_data"))


def main(argv: list[str] | None = None) -> keras.callbacks.History:
    """Trains `--model` on `--data/train`, validating on `--data/val`; returns the History.

    Example:
        >>> main(["--data", "imagenet/", "--model", "resnet50"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # Keras and TensorFlow load only now: --help and usage errors answer at once. The
    # distribution comes first: joining a cluster must precede anything that starts JAX.
    from keras_residual.distribution import distribution_setup

    setup = distribution_setup()
    print(f"Distribution: {setup.description}")
    import keras
    import tensorflow as tf

    from keras_residual import models, training
    from keras_residual.datasets.images import image_folder_dataset, preprocessing_mode

    if args.quick:
        apply_quick(args, setup.output_dir(args.out))
    if args.seed is None and setup.num_processes > 1:
        args.seed = 0  # every process must shuffle alike to split the same batches
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    preprocessing = args.preprocessing or preprocessing_mode(args.model)
    train = image_folder_dataset(
        os.path.join(args.data, "train"),
        args.image_size,
        args.batch_size,
        training=True,
        preprocessing=preprocessing,
        seed=args.seed,
    )
    print(f"Training data: {train.source}")
    classes = len(train.class_names)

    def one_hot(images, labels):
        # Label smoothing needs dense targets.
        return images, tf.one_hot(labels, classes)

    validation = None
    val_dir = os.path.join(args.data, "val")
    if os.path.isdir(val_dir):
        val = image_folder_dataset(
            val_dir, args.image_size, args.batch_size, preprocessing=preprocessing
        )
        print(f"Validation data: {val.source}")
        validation = setup.process_batches(val.dataset.map(one_hot), args.batch_size, pad=True)
    steps_per_epoch = args.steps_per_epoch or max(1, train.num_images // args.batch_size)

    with setup.scope():
        model = models.get_model(
            args.model,
            input_shape=(args.image_size, args.image_size, 3),
            classes=classes,
            weights=None,
            **json.loads(args.model_kwargs),
        )
        decayed = training.add_weight_decay(model, args.weight_decay)
        schedule = training.imagenet_schedule(
            args.batch_size, steps_per_epoch, args.epochs, args.warmup_epochs, args.decay
        )
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
            metrics=[
                keras.metrics.CategoricalAccuracy(name="top1"),
                keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"),
            ],
            jit_compile=True if args.xla else "auto",
        )
        print(
            f"Model {args.model}: {model.count_params():,} parameters, weight decay "
            f"{args.weight_decay} on {len(decayed)} kernels; peak learning rate "
            f"{schedule.peak_learning_rate:g}, {schedule.warmup_steps} warm-up steps, "
            f"{args.decay} decay over {schedule.total_steps} steps"
        )
        # fit inside the scope too: on JAX it shards batches by the current distribution.
        history = model.fit(
            # Global batches, the same images in every process; each feeds its part of each.
            setup.process_batches(train.dataset.map(one_hot), args.batch_size),
            epochs=args.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=validation,
            validation_steps=args.validation_steps,
            callbacks=training.training_callbacks(args.out),
            verbose=1,
        )
    if setup.is_chief:
        path = os.path.join(args.out, "model.keras")
        model.save(path)
        print(f"Saved {path}")
    return history


if __name__ == "__main__":
    main()
