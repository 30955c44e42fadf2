"""A residual ConvNet on MNIST beside its plain twin (Bolte's (2016) ConvNet example).

Every conv layer after the stem is wrapped in `Residual`; the plain twin has
the same layers, in the same order, with `shortcut="none"` (each block is
then `y = relu(F(x))`). Both train with the same data, seed and schedule, and
the script prints the test accuracy of each.

    python examples/mnist_conv.py            # about a minute on 2 CPU cores offline
    python examples/mnist_conv.py --quick    # a few seconds, for tests

Other scripts (examples/demo.py, the visualization and lesion examples) load
this file by path and call `train_pair`.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so that --help answers before Keras loads
    import keras

    from keras_residual.datasets import MnistData

#: BatchNormalization momentum: Keras' default 0.99 leaves the moving statistics far
#: from the batch statistics after a few hundred steps (measured on MNIST in this project).
BN_MOMENTUM = 0.9


def _branch(filters: int, strides: int, name: str) -> keras.Sequential:
    """conv-BN-ReLU-conv-BN: the basic block's branch F (He et al. 2015, Fig. 2)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          name=f"{name}_1_conv"),
            layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_1_bn"),
            layers.ReLU(name=f"{name}_1_relu"),
            layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv"),
            layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_2_bn"),
        ],
        name=f"{name}_branch",
    )


def build_mnist_cnn(
    residual: bool = True,
    widths: tuple[int, ...] = (16, 16, 32, 32),
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
) -> keras.Model:
    """A small ResNet for MNIST, or its plain twin.

    Stem conv (16 filters), then one basic block per entry of `widths`; a
    block that widens the network halves the resolution and, in the residual
    model, uses a projection shortcut (He et al. 2015, Eq. 2). Each block is
    one `Residual` layer named "block1", "block2", ... in both models, so the
    two models can be compared block by block.

    Args:
        residual: bool. True for identity/projection shortcuts, False for the
            plain twin (`shortcut="none"`, the same layers otherwise).
        widths: tuple of int. Filters of each block.
        input_shape: tuple. Shape of one image.
        num_classes: int. Size of the softmax output.

    Returns:
        An uncompiled `keras.Model` named "mnist_residual" or "mnist_plain".

    Example:
        >>> model = build_mnist_cnn(residual=True, widths=(8, 16))
        >>> [layer.name for layer in model.layers if isinstance(layer, Residual)]
        ['block1', 'block2']
    """
    import keras
    from keras import layers

    from keras_residual import Residual

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    channels = widths[0]
    for index, filters in enumerate(widths, start=1):
        strides = 2 if filters != channels else 1
        if not residual:
            shortcut = "none"
        else:
            shortcut = "identity" if strides == 1 else "projection"
        name = f"block{index}"
        x = Residual(_branch(filters, strides, name), shortcut=shortcut, activation="relu",
                     name=name)(x)
        channels = filters
    # A pooled, flattened head learns in a few dozen steps; global average pooling needs
    # several epochs before its test accuracy leaves chance level.
    x = layers.Flatten(name="flatten")(layers.MaxPooling2D(2, name="pool")(x))
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="mnist_residual" if residual else "mnist_plain")


def train_pair(
    data: MnistData,
    epochs: int = 3,
    batch_size: int = 64,
    max_train: int | None = None,
    log_dir: str | None = None,
    verbose: int = 2,
    widths: tuple[int, ...] = (16, 16, 32, 32),
    learning_rate: float = 3e-3,
) -> tuple[keras.Model, keras.Model, dict[str, float]]:
    """Train the residual CNN and its plain twin on the same data; return both and their accuracy.

    Both models start from the same global seed state (`keras.utils.set_random_seed(0)`
    before each build), see the same batches in the same order and use Adam
    with learning rate `learning_rate`.

    Args:
        data: MnistData in the "image" layout (`load_mnist()`).
        epochs: int. Training epochs for each model.
        batch_size: int. Mini-batch size.
        max_train: int or None. Use only the first `max_train` training images.
        log_dir: str or None. If given, TensorBoard logs go to `log_dir/residual`
            and `log_dir/plain`.
        verbose: int. Keras `fit` verbosity (0, 1 or 2).
        widths: tuple of int. Filters per block (see `build_mnist_cnn`).
        learning_rate: float. Adam's learning rate.

    Returns:
        `(residual_model, plain_model, accuracies)` with accuracies
        `{"residual": float, "plain": float}` on `data.x_test`.

    Example:
        >>> data = load_mnist(verbose=False)
        >>> res, plain, acc = train_pair(data, epochs=1, max_train=256, verbose=0, widths=(8,))
        >>> sorted(acc)
        ['plain', 'residual']
    """
    import keras

    if data.x_train.ndim != 4:
        raise ValueError(
            "train_pair needs images of shape (N, 28, 28, 1): load them with "
            f"load_mnist(layout='image'). Received: x_train.shape={data.x_train.shape}"
        )
    x_train, y_train = data.x_train[:max_train], data.y_train[:max_train]
    models, accuracies = {}, {}
    for kind in ("residual", "plain"):
        keras.utils.set_random_seed(0)
        model = build_mnist_cnn(residual=kind == "residual", widths=widths)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks = []
        if log_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(log_dir, kind)))
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                  validation_data=(data.x_test, data.y_test), callbacks=callbacks,
                  verbose=verbose)
        _, accuracy = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0)
        print(f"{kind:>8} CNN: test accuracy {accuracy:.4f} "
              f"({time.perf_counter() - start:.0f} s, {model.count_params():,} params)")
        models[kind], accuracies[kind] = model, float(accuracy)
    return models["residual"], models["plain"], accuracies


#: What `--quick` trains (here, in `demo.py --quick` and `visualize_mnist.py --quick`): 64
#: steps of 32 images, enough for about 0.87 test accuracy on the offline digits (chance 0.10).
QUICK = {"epochs": 2, "max_train": 1024, "batch_size": 32, "widths": (8, 16)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Command line: train both CNNs and print their test accuracy."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs on 1,024 images with narrow blocks (a smoke test)")
    parser.add_argument("--allow-download", action="store_true",
                        help="download full MNIST when it is not in the Keras cache")
    parser.add_argument("--out", default=None,
                        help="folder to save both trained models in, as mnist_residual.keras "
                             "and mnist_plain.keras (None: save nothing)")
    args = parser.parse_args(argv)
    from keras_residual.datasets import load_mnist  # Keras loads only now, after --help

    data = load_mnist(allow_download=args.allow_download)
    if args.quick:
        models = train_pair(data, verbose=0, **QUICK)
    else:
        models = train_pair(data, epochs=args.epochs, batch_size=args.batch_size)
    accuracies = models[2]
    if args.out is not None:
        os.makedirs(args.out, exist_ok=True)
        for model in models[:2]:
            model.save(os.path.join(args.out, f"{model.name}.keras"))
    print(f"test accuracy: residual {accuracies['residual']:.4f}, "
          f"plain {accuracies['plain']:.4f}")
    return accuracies


if __name__ == "__main__":
    main()
