"""Train a CIFAR-10 ResNet with He et al.'s recipe.

He et al., "Deep Residual Learning for Image Recognition" (2015), Sec. 4.2:
batch 128, SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1
divided by 10 at 32k and 48k iterations, stop at 64k; per-pixel mean
subtracted; 4-pixel padding, random 32x32 crop and horizontal flip. Expected
test error: 8.75% for ResNet-20 ... 6.43% for ResNet-110 (Table 6); 6.37%
for the pre-activation ResNet-110 (He et al. 2016, Table 2).

    python examples/train_cifar.py --model cifar_resnet --depth 110 --out runs/cifar110
    python examples/train_cifar.py --model cifar_preact_resnet --depth 164 --data cifar-10-python.tar.gz

A shorter run (`--iterations 6400`) keeps the learning-rate drops at 1/2 and
3/4 of it. The test set is the validation data, as in the paper's tables.
Rerunning the same command resumes from `--out/backup`; with `--seed`, on the
batches an uninterrupted run would have seen. On JAX the same command runs in
several processes when the KERAS_DISTRIBUTION_* variables are set (README,
"Past one machine"); `--batch-size` is then the global batch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; defaults are He et al.'s CIFAR-10 recipe.

    Example:
        >>> args = parse_args([])
        >>> args.batch_size, args.iterations, args.learning_rate
        (128, 64000, 0.1)
    """
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_resnet", choices=("cifar_resnet", "cifar_preact_resnet"),
                        help="He et al. 2015 (option A) or the pre-activation net of He et al. 2016")
    parser.add_argument("--depth", type=int, default=20, help="6n+2 layers with basic blocks; cifar_preact_resnet uses bottlenecks, 9n+2, "
                        "from depth 164")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments for the builder")
    parser.add_argument("--data", default=None, help="cifar-10-python.tar.gz, its folder, or an .npz")
    parser.add_argument("--download", action="store_true", help="allow keras.datasets to download")
    parser.add_argument("--iterations", type=int, default=64_000, help="training steps (He et al.: 64k)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--learning-rate", type=float, default=0.1,
                        help="initial SGD learning rate, divided by 10 at 1/2 and 3/4 of the "
                             "iterations (32k and 48k of 64k)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute, float32 weights")
    parser.add_argument("--xla", action="store_true",
                        help="always compile the train step (XLA; torch.compile on PyTorch); "
                        "without it Keras' jit_compile='auto' already uses XLA on JAX, and on "
                        "TensorFlow with a GPU and no tf.distribute strategy")
    parser.add_argument("--seed", type=int, default=None, help="random seed (None: unseeded)")
    parser.add_argument("--out", default="runs/cifar", help="checkpoints, backup and logs")
    parser.add_argument(
        "--quick", action="store_true",
        help="a smoke test: depth 8, 5 iterations of 8 images; without --data, on 32 random "
             "images written to --out/quick_cifar.npz",
    )
    return parser.parse_args(argv)


def write_random_npz(path: str, train: int = 32, test: int = 8) -> str:
    """An .npz in CIFAR-10's layout (uint8 32x32x3 images, labels 0-9) of random images.

    Example:
        >>> write_random_npz("/tmp/tiny.npz")  # doctest: +SKIP
        '/tmp/tiny.npz'
    """
    import numpy as np

    rng = np.random.default_rng(0)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (train, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, train),
        x_test=rng.integers(0, 256, (test, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, test),
    )
    return path


def main(argv: list[str] | None = None) -> keras.callbacks.History:
    """Trains `--model` of `--depth` layers on CIFAR-10, testing every epoch; returns the History.

    Example:
        >>> main(["--model", "cifar_resnet", "--depth", "110"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # Keras (and TensorFlow) load only now: --help and usage errors answer at once. The
    # distribution comes first: joining a cluster must precede anything that starts JAX.
    from keras_residual.distribution import distribution_setup

    setup = distribution_setup()
    print(f"Distribution: {setup.description}")
    import keras

    from keras_residual import models, training
    from keras_residual.datasets.cifar import cifar_dataset, load_cifar10, per_pixel_mean

    if args.quick:
        args.depth, args.iterations, args.batch_size = 8, 5, 8
        if args.data is None and not args.download:
            path = os.path.join(setup.output_dir(args.out), "quick_cifar.npz")
            args.data = write_random_npz(path)
    if args.seed is None and setup.num_processes > 1:
        args.seed = 0  # every process must shuffle and augment alike to split the same batches
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    data = load_cifar10(args.data, download=args.download)
    print(f"CIFAR-10 from {data.source}: {len(data.x_train)} training, {len(data.x_test)} test images")
    mean = per_pixel_mean(data.x_train)
    test = setup.process_batches(
        cifar_dataset(data.x_test, data.y_test, mean, args.batch_size), args.batch_size, pad=True)
    steps_per_epoch = min(args.iterations, max(1, len(data.x_train) // args.batch_size))

    with setup.scope():
        model = models.get_model(
            f"{args.model}{args.depth}", classes=10, **json.loads(args.model_kwargs)
        )
        decayed = training.add_weight_decay(model, args.weight_decay)
        schedule = training.cifar_schedule(args.iterations, args.learning_rate)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=True if args.xla else "auto",
        )
        print(
            f"Model {args.model}-{args.depth}: {model.count_params():,} parameters, weight decay "
            f"{args.weight_decay} on {len(decayed)} kernels; learning rate {args.learning_rate:g} "
            f"divided by 10 at iterations {schedule.boundaries}, stop at {args.iterations}"
        )
        # A rerun resumes from the last finished epoch: with --seed the batch stream repeats,
        # and skipping what the backup trained on gives the uninterrupted run's batches.
        done = training.restore_backup(model, args.out)
        if done:
            print(f"Resuming from {args.out}/backup after {done} iterations")
        # Global batches, the same in every process; each process feeds its part of each.
        train = setup.process_batches(
            cifar_dataset(data.x_train, data.y_train, mean, args.batch_size, training=True,
                          seed=args.seed).skip(done), args.batch_size)
        # fit inside the scope too: on JAX it shards batches by the current distribution.
        history = model.fit(
            train,
            epochs=math.ceil(args.iterations / steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            validation_data=test,
            callbacks=[training.StopAtStep(args.iterations), *training.training_callbacks(args.out)],
            verbose=1,
        )
    error = 100.0 * (1.0 - history.history["val_accuracy"][-1])
    print(f"Test error after {int(model.optimizer.iterations)} iterations: {error:.2f}%")
    if setup.is_chief:
        path = os.path.join(args.out, "model.keras")
        model.save(path)
        print(f"Saved {path}")
    return history


if __name__ == "__main__":
    main()
