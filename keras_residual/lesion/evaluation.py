"""Data handling and error measurement shared by the lesion studies (Veit et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_residual.lesion import parallel
from keras_residual.validation import check_model_input, positive_int

Data = Any  # (x, y) arrays or a tf.data.Dataset of (x, y) batches

def as_arrays(data: Data) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)` NumPy arrays from `(x, y)` arrays or a dataset of `(x, y)` batches.

    Example:
        >>> x, y = as_arrays(([[0.0], [1.0]], [0, 1]))
        >>> x.shape, y.shape
        ((2, 1), (2,))
    """
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(
                "`data` must hold as many labels as inputs, each with the samples on the "
                f"first axis. Received: x.shape={x.shape}, y.shape={y.shape}"
            )
        if len(x) == 0:
            raise ValueError(f"`data` holds no samples. Received: x.shape={x.shape}")
        return x, y
    try:
        batches = [(np.asarray(x), np.asarray(y)) for x, y in data]
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`data` must be a tuple (x, y) of arrays or an iterable (e.g. tf.data.Dataset) "
            f"of (x, y) batches. Received: {type(data).__name__}"
        ) from error
    if not batches:
        raise ValueError("`data` is empty: it yielded no (x, y) batches.")
    return as_arrays((np.concatenate([b[0] for b in batches]),
                      np.concatenate([b[1] for b in batches])))



def checked_data(
    model: keras.Model, data: Data, batch_size: int, samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`as_arrays(data)`, after the counts, and the inputs against the model's input shape."""
    positive_int("batch_size", batch_size)
    if samples is not None:
        positive_int("samples", samples)
    x, y = as_arrays(data)
    check_model_input(model, x)
    return x, y


def classification_error(predictions: np.ndarray, y: np.ndarray) -> float:
    """1 - accuracy of class scores `predictions` against labels (integer or one-hot).

    Example:
        >>> classification_error(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
        0.5
    """
    predictions = np.asarray(predictions)
    if predictions.shape[-1] == 1:
        predicted = (predictions[..., 0] > 0.5).astype("int64")
    else:
        predicted = predictions.argmax(-1)
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == predicted.ndim + 1 and y.shape[-1] > 1 else y
    return float(np.mean(predicted != labels.reshape(predicted.shape)))


def evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, compiled: bool = True
) -> float:
    """Error of `model` on (x, y); `compiled=False` for a model evaluated only once.

    A compiled predict function pays off over many evaluations of the same
    model (its gates change, it is not retraced); a model built for one
    evaluation (a reordering) runs eagerly instead of being traced.

    Under a distribution (`keras_residual.lesion.parallel`) every evaluation
    is a data-parallel `predict` over the devices (and processes), whose
    errors are the single-device errors.
    """
    if parallel.current_split(model).active:
        return classification_error(parallel.predict(model, x, batch_size), y)
    if compiled:
        return classification_error(model.predict(x, batch_size=batch_size, verbose=0), y)
    outputs = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return classification_error(np.concatenate(outputs), y)


def check_ks(ks: Sequence[int], limit: int, what: str) -> np.ndarray:
    ks = np.asarray(list(ks), dtype="int64")
    if ks.ndim != 1 or ks.size == 0 or np.any(ks < 0) or np.any(ks > limit):
        raise ValueError(
            f"`ks` must be a non-empty list of integers between 0 and {limit} ({what}). "
            f"Received: ks={ks.tolist()}"
        )
    return ks


