"""Precise BatchNorm: population statistics of the full network, recomputed after training.

Training schedules that run a sub-network per mini-batch (effective-path
training, Veit et al. 2016, Sec. 5; stochastic depth, Huang et al. 2016)
leave every BatchNormalization layer with moving statistics averaged over
the sub-networks seen in training, while the test network is the full one.
`precise_batchnorm` replaces them by the population statistics of the full
network over a number of training batches (the "precise BN" of Wu and
Johnson, "Rethinking 'Batch' in BatchNorm", 2021, Sec. 3). It imports no
lesion tool, so builders and training scripts can use it on their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual import graph


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def batchnorm_layers(model: layers.Layer) -> list[layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested ones (in blocks, sub-models) included.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.BatchNormalization()])
        >>> len(batchnorm_layers(model))
        1
    """
    return graph.find_layers(model, layers.BatchNormalization)


class _Moments:
    """Running sums of x and x^2 per channel, in float64."""

    def __init__(self, layer: layers.BatchNormalization) -> None:
        self.layer = layer
        self.total = self.squares = 0.0
        self.count = 0

    def add(self, inputs: Any) -> None:
        x = np.asarray(keras.ops.convert_to_numpy(inputs), dtype="float64")
        axis = self.layer.axis % x.ndim
        axes = tuple(i for i in range(x.ndim) if i != axis)
        self.total = self.total + x.sum(axes)
        self.squares = self.squares + np.square(x).sum(axes)
        self.count += x.size // x.shape[axis]

    def assign(self) -> None:
        mean = self.total / self.count
        variance = np.maximum(self.squares / self.count - np.square(mean), 0.0)
        self.layer.moving_mean.assign(mean.astype("float32"))
        self.layer.moving_variance.assign(variance.astype("float32"))


@contextlib.contextmanager
def _recording(bns: list[layers.BatchNormalization]) -> Iterator[list[_Moments]]:
    """Each BN layer normalizes with its batch statistics and records its inputs."""
    moments = [_Moments(layer) for layer in bns]
    for layer, record in zip(bns, moments, strict=True):
        original = layer.call

        def call(inputs, training=None, mask=None, original=original, record=record):
            record.add(inputs)
            return original(inputs, training=True, mask=mask)

        layer.call = call
    try:
        yield moments
    finally:
        for layer in bns:
            del layer.call


def _concrete_control_flow() -> contextlib.AbstractContextManager:
    """JAX traces both branches of `ops.cond` even when called eagerly, which a lesion-ready
    block's gate uses: a recorded input would then be a tracer. Without jit, JAX runs the
    branch the (concrete) predicate picks. Other backends run eagerly as they are."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


def _batches(data: Any, batches: int, batch_size: int, shuffle: bool, seed: int) -> Iterator[Any]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and not np.isscalar(data[0]):
        data = data[0]
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        x = np.asarray(data)
        order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
        starts = range(0, len(x), batch_size)
        for _, start in zip(range(batches), starts, strict=False):
            yield x[order[start : start + batch_size]]
        return
    for _, batch in zip(range(batches), data, strict=False):  # a dataset of (x, y) or x
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def precise_batchnorm(
    model: keras.Model,
    data: Any,
    batches: int = 100,
    batch_size: int = 128,
    shuffle: bool = True,
    seed: int = 0,
) -> list[layers.BatchNormalization]:
    """Recompute every BN layer's moving statistics as the full network's population statistics.

    The network runs on `batches` training batches in inference mode
    except that each BatchNormalization layer normalizes with the batch's
    statistics, as in training; each layer's inputs are accumulated over
    all batches and its `moving_mean` / `moving_variance` set to their mean
    and (biased) variance per channel (Wu and Johnson 2021, Sec. 3). Run
    it after effective-path training or stochastic depth (Veit et al. 2016,
    Sec. 5-6), whose moving statistics average over sub-networks, before
    evaluating the full network. Residual blocks run as they are (lesion
    state, if any, included): restore the full network first.

    Args:
        model: keras.Model.
        data: an array of inputs, (x, y) arrays, or an iterable of (x, y) or
            x batches (e.g. a tf.data.Dataset).
        batches: int. Number of batches to accumulate. Defaults to 100.
        batch_size: int. Batch size when `data` holds arrays. Defaults to 128.
        shuffle: bool. Draw the array batches in a random order. Defaults to True.
        seed: int. Seed of that order. Defaults to 0.

    Returns:
        The BatchNormalization layers whose statistics were set.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization()])
        >>> _ = precise_batchnorm(model, np.array([[1.0], [3.0]]), batches=1)
        >>> model.layers[0].moving_mean.numpy().tolist(), model.layers[0].moving_variance.numpy().tolist()
        ([2.0], [1.0])
    """
    _positive_int("batches", batches)
    _positive_int("batch_size", batch_size)
    bns = batchnorm_layers(model)
    if not bns:
        return []
    seen = 0
    with _recording(bns) as moments, _concrete_control_flow():
        for x in _batches(data, batches, batch_size, shuffle, seed):
            model(keras.ops.convert_to_tensor(np.asarray(x, dtype="float32")), training=False)
            seen += 1
    if seen == 0 or any(record.count == 0 for record in moments):
        unused = [r.layer.name for r in moments if r.count == 0]
        raise ValueError(
            "No statistics were gathered for the BatchNormalization layers "
            f"{unused or [b.name for b in bns]}: `data` yielded {seen} batches, or those "
            "layers are not on the path the model runs (a deleted branch?). Received: "
            f"batches={batches}"
        )
    for record in moments:
        record.assign()
    return bns
