"""Stacked residual GRUs (Bolte's (2016) recurrent example) beside the plain stack.

1. MNIST read row by row: 28 steps of 28 pixels, a Dense projection to the
   GRU width, then `depth` GRUs with `return_sequences=True`, each wrapped in
   `Residual` (identity shortcut: the GRU output has the input's shape), a
   last GRU that summarizes the sequence, and the plain twin with
   `shortcut="none"`.
2. IMDB sentiment with masking: `Embedding(mask_zero=True)`, then residual
   GRUs; the mask reaches every GRU through the `Residual` wrapper, so padded
   steps do not change the result. Runs only when `keras.datasets.imdb` is in
   the Keras cache (or `--allow-download`); otherwise the script says why it
   skipped it.

    python examples/sequence_gru.py            # MNIST rows, about a minute offline
    python examples/sequence_gru.py --quick    # a few seconds, for tests
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so that --help answers before Keras loads
    import keras
    import numpy as np

    from keras_residual.datasets import MnistData


def build_row_gru(residual: bool = True, units: int = 64, depth: int = 3) -> keras.Model:
    """GRU stack that classifies an MNIST digit read as 28 rows of 28 pixels.

    Args:
        residual: bool. Identity shortcuts around each GRU, or the plain twin.
        units: int. Width of the projection and of every GRU.
        depth: int. Number of stacked GRUs (each one `Residual` block).

    Returns:
        An uncompiled model from `(None, 28, 28)` to 10 softmax outputs.

    Example:
        >>> model = build_row_gru(units=8, depth=2)
        >>> tuple(model.output.shape)
        (None, 10)
    """
    import keras
    from keras import layers

    from keras_residual import Residual

    inputs = keras.Input((28, 28), name="rows")
    x = layers.Dense(units, name="project")(inputs)
    for index in range(1, depth + 1):
        gru = layers.GRU(units, return_sequences=True, name=f"gru{index}")
        x = Residual(gru, shortcut="identity" if residual else "none", name=f"block{index}")(x)
    x = layers.GRU(units, name="summary")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="rows_residual" if residual else "rows_plain")


def build_imdb_gru(
    vocabulary: int = 10000, units: int = 64, depth: int = 2, residual: bool = True
) -> keras.Model:
    """Sentiment classifier over padded word ids with `Embedding(mask_zero=True)`.

    Args:
        vocabulary: int. Number of word ids (0 is padding).
        units: int. Embedding and GRU width.
        depth: int. Number of residual GRU blocks before the final GRU.
        residual: bool. Identity shortcuts, or the plain twin.

    Returns:
        An uncompiled model from `(None, None)` int ids to one sigmoid output.

    Example:
        >>> model = build_imdb_gru(vocabulary=50, units=8, depth=1)
        >>> tuple(model.output.shape)
        (None, 1)
    """
    import keras
    from keras import layers

    from keras_residual import Residual

    inputs = keras.Input((None,), dtype="int32", name="words")
    x = layers.Embedding(vocabulary, units, mask_zero=True, name="embedding")(inputs)
    for index in range(1, depth + 1):
        gru = layers.GRU(units, return_sequences=True, name=f"gru{index}")
        x = Residual(gru, shortcut="identity" if residual else "none", name=f"block{index}")(x)
    x = layers.GRU(units, name="summary")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="positive")(x)
    return keras.Model(inputs, outputs, name="imdb_residual" if residual else "imdb_plain")


def _fit_and_score(model, x_train, y_train, x_test, y_test, loss, epochs, batch_size, verbose):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=loss, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(f"{model.name:>14}: test accuracy {accuracy:.4f} ({time.perf_counter() - start:.0f} s)")
    return float(accuracy)


def run_mnist_rows(
    data: MnistData,
    epochs: int = 2,
    max_train: int | None = None,
    units: int = 64,
    depth: int = 3,
    verbose: int = 2,
) -> dict[str, float]:
    """Train the residual and the plain row-GRU stacks; return `{"residual": acc, "plain": acc}`.

    Example:
        >>> data = load_mnist(layout="sequence", verbose=False)
        >>> sorted(run_mnist_rows(data, epochs=1, max_train=64, units=8, depth=1, verbose=0))
        ['plain', 'residual']
    """
    import keras

    if data.x_train.shape[1:] != (28, 28):
        raise ValueError(
            "run_mnist_rows reads images as 28 rows of 28 pixels: load them with "
            f"load_mnist(layout='sequence'). Received: x_train.shape={data.x_train.shape}"
        )
    accuracies = {}
    for kind in ("residual", "plain"):
        keras.utils.set_random_seed(0)
        model = build_row_gru(residual=kind == "residual", units=units, depth=depth)
        accuracies[kind] = _fit_and_score(
            model, data.x_train[:max_train], data.y_train[:max_train], data.x_test,
            data.y_test, "sparse_categorical_crossentropy", epochs, 64, verbose,
        )
    return accuracies


def load_imdb(
    vocabulary: int = 10000, maxlen: int = 200, allow_download: bool = False
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """IMDB reviews as word ids pre-padded with 0 to `maxlen`, or None when unavailable.

    Unavailable means: not in the Keras cache and `allow_download` is False,
    or the download failed; the reason is printed.

    Example:
        >>> load_imdb() is None or len(load_imdb()[0][0]) == 25000
        True
    """
    import keras

    from keras_residual.datasets.mnist import keras_cache_path

    if not os.path.isfile(keras_cache_path("imdb.npz")) and not allow_download:
        print(f"IMDB: skipped, {keras_cache_path('imdb.npz')} is not cached and "
              "--allow-download was not given")
        return None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data(
            num_words=vocabulary
        )
    except Exception as error:  # offline or a refused download: skip, and say why
        print(f"IMDB: skipped, keras.datasets.imdb failed ({type(error).__name__}: {error})")
        return None
    finally:
        socket.setdefaulttimeout(previous)
    pad = keras.utils.pad_sequences
    return (pad(x_train, maxlen=maxlen), y_train), (pad(x_test, maxlen=maxlen), y_test)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Command line: MNIST rows (always) and IMDB (when available)."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per dataset")
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch on 128 digits with a 2-layer stack of 8 units")
    parser.add_argument("--allow-download", action="store_true",
                        help="download MNIST / IMDB when they are not in the Keras cache")
    args = parser.parse_args(argv)
    import keras  # Keras loads only now, after --help and usage errors

    from keras_residual.datasets import load_mnist

    data = load_mnist(layout="sequence", allow_download=args.allow_download)
    if args.quick:
        rows = run_mnist_rows(data, epochs=1, max_train=128, units=8, depth=2, verbose=0)
    else:
        rows = run_mnist_rows(data, epochs=args.epochs)
    results = {f"mnist_rows_{kind}": value for kind, value in rows.items()}
    print(f"MNIST rows test accuracy: residual {rows['residual']:.4f}, "
          f"plain {rows['plain']:.4f}")
    imdb = None if args.quick else load_imdb(allow_download=args.allow_download)
    if args.quick:
        print("IMDB: skipped in --quick mode")
    if imdb is not None:
        (x_train, y_train), (x_test, y_test) = imdb
        for kind in ("residual", "plain"):
            keras.utils.set_random_seed(0)
            model = build_imdb_gru(residual=kind == "residual")
            results[f"imdb_{kind}"] = _fit_and_score(
                model, x_train, y_train, x_test, y_test, "binary_crossentropy",
                args.epochs, 128, 2,
            )
        print(f"IMDB test accuracy: residual {results['imdb_residual']:.4f}, "
              f"plain {results['imdb_plain']:.4f}")
    return results


if __name__ == "__main__":
    main()
