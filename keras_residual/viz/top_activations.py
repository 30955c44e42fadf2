"""Top-k activating images per channel, and the image patches behind them (Chu, Yang and Tadinada, "Visualizing Residual Networks", 2017).

Chu et al. (2017) (Sec. 2) visualizes each channel of a layer by "the top-9 images
maximally activating" it: for every image, the channel's maximum over all
spatial positions; over the dataset, the 9 images with the largest such
maximum, each with the position where it occurs. `top_activations` finds
them for several layers in one streaming pass, keeping only a running top-k
per channel (memory does not grow with the dataset); `crop_patches` cuts the
receptive field of each of those units out of its image, gray where the
field runs off the image ("the large gray borders", Fig. 2).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from keras_residual.probe import probe
from keras_residual.validation import check_model_input, positive_int
from keras_residual.viz.receptive_field import ReceptiveField


@dataclass
class TopK:
    """The k strongest images of every channel of one layer, strongest first.

    Ties in value are broken by the lower image index; within an image the
    position is the first maximal one in row-major order.

    Attributes:
        values: float32 array (C, k). The channel's maximum over positions.
        indices: int64 array (C, k). Image indices in the order of the data.
        positions: int64 array (C, k, ndim). Spatial index of the maximum
            (ndim = 0 for layers without spatial axes).

    Example:
        >>> import numpy as np
        >>> top = TopK(np.array([[3.0, 1.0]]), np.array([[4, 0]]), np.zeros((1, 2, 2), int))
        >>> top.indices[0].tolist()
        [4, 0]
    """

    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray


def iterate_batches(data: Any, batch_size: int = 32) -> Iterator[Any]:
    """The model inputs of each batch of `data`.

    Args:
        data: a NumPy array (split into batches of `batch_size`), a
            `tf.data.Dataset`, a `keras.utils.PyDataset`, or any iterable of
            batches. A tuple element is read as `(x, y[, sample_weight])`, the
            Keras convention, and only `x` is kept.
        batch_size: int. Used for arrays only.

    Yields:
        The inputs of one batch.

    Example:
        >>> import numpy as np
        >>> [b.shape[0] for b in iterate_batches(np.zeros((5, 2)), batch_size=2)]
        [2, 2, 1]
    """
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    if isinstance(data, keras.utils.PyDataset):
        elements: Iterable = (data[i] for i in range(len(data)))
    elif hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset, without importing TF
        elements = data.as_numpy_iterator()
    elif isinstance(data, Iterable):
        elements = data
    else:
        raise ValueError(
            "`data` must be a NumPy array, a tf.data.Dataset, a keras.utils.PyDataset or "
            f"an iterable of batches. Received: {type(data).__name__}"
        )
    for element in elements:
        yield element[0] if isinstance(element, tuple) else element


def _num_batches(data: Any, batch_size: int) -> int | None:
    if isinstance(data, np.ndarray):
        return math.ceil(len(data) / batch_size)
    if hasattr(data, "cardinality"):
        count = int(data.cardinality())
        return count if count >= 0 else None
    try:
        return len(data)
    except TypeError:
        return None


# Reducers already built, per model: a second pass (a callback every few
# epochs, a benchmark) reuses the compiled function instead of tracing again.
_REDUCERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached_reducer(
    model: keras.Model, paths: list[str], data_format: str
) -> tuple[keras.Model, list[tuple[int, ...]]]:
    per_model = _REDUCERS.setdefault(model, {})
    key = (tuple(paths), data_format)
    if key not in per_model:
        per_model[key] = _reducer(model, paths, data_format)
    return per_model[key]


def _reducer(
    model: keras.Model, paths: list[str], data_format: str
) -> tuple[keras.Model, list[tuple[int, ...]]]:
    """The probe, followed in the same compiled graph by max and argmax over positions.

    Returns the reducing model and each layer's spatial shape.

    Reducing in the compiled graph sends (batch, C) arrays to the host
    instead of whole feature maps (which matters most on an accelerator).
    """
    probed = probe(model, paths)
    outputs, shapes = [], []
    for path, out in zip(paths, probed.outputs, strict=True):
        if data_format == "channels_first" and len(out.shape) > 2:
            out = keras.ops.moveaxis(out, 1, -1)
        spatial = tuple(out.shape[1:-1])
        if any(n is None for n in spatial):
            raise ValueError(
                f"Layer {path!r} has spatial shape {spatial} with unknown sizes; build the "
                "model with a fixed input size to stream its top activations."
            )
        shapes.append(spatial)
        flat = keras.ops.reshape(out, (-1, math.prod(spatial), out.shape[-1]))
        flat = keras.ops.cast(flat, "float32")
        # The first position of the maximum, as argmax gives it, from two plain
        # reductions: XLA's and TensorFlow's CPU argmax over a middle axis is
        # 2-6x slower than a max and a min (benchmarks/top_activations.py).
        size = math.prod(spatial)
        maxima = keras.ops.max(flat, axis=1, keepdims=True)
        iota = keras.ops.reshape(keras.ops.arange(size, dtype="int32"), (1, size, 1))
        first = keras.ops.min(keras.ops.where(keras.ops.equal(flat, maxima), iota, size), axis=1)
        outputs.append(keras.ops.squeeze(maxima, 1))
        outputs.append(keras.ops.minimum(first, size - 1))  # a NaN channel matches nowhere
    return keras.Model(probed.input, outputs, name=f"reduce_{model.name}"), shapes


def stream_maxima(
    model: keras.Model,
    paths: Sequence[str],
    data: Any,
    batch_size: int = 32,
    progress: bool = True,
    data_format: str | None = None,
) -> Iterator[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]:
    """One pass over `data`: each channel's maximum over positions, batch by batch.

    The building block of `top_activations` and of the refinement statistics:
    one compiled probe computes every layer at once.

    Args:
        model: keras.Model. A functional or Sequential model.
        paths: sequence of str. Layer paths (see `keras_residual.probe`).
        data: see `iterate_batches`.
        batch_size: int. Batch size for NumPy arrays.
        progress: bool. Show a `keras.utils.Progbar`.
        data_format: str or None. Layout of the layers' outputs; None takes
            `keras.config.image_data_format()`.

    Yields:
        `(start, per_layer)`: the index of the batch's first image and, for
        each path, `(maxima, positions)`: float32 (B, C) and int64
        (B, C, ndim) spatial indices of the maxima.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4, 4, 1))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="c")(inputs))
        >>> start, [(m, p)] = next(stream_maxima(model, ["c"], np.ones((3, 4, 4, 1)),
        ...                                      progress=False))
        >>> m.shape, p.shape
        ((3, 2), (3, 2, 2))
    """
    paths = list(paths)
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(data, np.ndarray):  # checked before the probe is built and compiled
        check_model_input(model, data, "data")
    data_format = data_format or keras.config.image_data_format()
    reducer, spatial = _cached_reducer(model, paths, data_format)
    bar = keras.utils.Progbar(_num_batches(data, batch_size), unit_name="batch") if progress else None
    start = 0
    for step, x in enumerate(iterate_batches(data, batch_size), start=1):
        check_model_input(model, x, "data")
        results = reducer.predict_on_batch(x)
        per_layer = []
        for i, dims in enumerate(spatial):
            maxima = np.asarray(results[2 * i], dtype=np.float32)
            flat = np.asarray(results[2 * i + 1], dtype=np.int64)
            positions = np.stack(np.unravel_index(flat, dims), axis=-1) if dims else (
                np.zeros(flat.shape + (0,), np.int64)
            )
            per_layer.append((maxima, positions))
        yield start, per_layer
        start += len(per_layer[0][0])
        if bar is not None:
            bar.update(step)


class TopKAccumulator:
    """A running top-k per channel over batches of per-image maxima.

    Keeps at most k candidates per channel, so memory does not depend on
    the number of images. Batches must arrive in image order.

    Args:
        k: int. How many images to keep per channel.

    Example:
        >>> import numpy as np
        >>> acc = TopKAccumulator(k=2)
        >>> acc.update(0, np.array([[1.0], [5.0], [3.0]]), np.zeros((3, 1, 0), int))
        >>> acc.result().indices.tolist()
        [[1, 2]]
    """

    def __init__(self, k: int):
        if int(k) < 1:
            raise ValueError(f"`k` must be a positive integer. Received: k={k}")
        self.k = int(k)
        self.values = None
        self.indices = None
        self.positions = None

    def update(self, start: int, maxima: np.ndarray, positions: np.ndarray) -> None:
        """Merges one batch: maxima (B, C) and positions (B, C, ndim), images start.. start+B-1."""
        batch, channels = maxima.shape
        values = maxima.T
        indices = np.broadcast_to(np.arange(start, start + batch, dtype=np.int64), (channels, batch))
        positions = np.swapaxes(positions, 0, 1)
        if self.values is not None:
            values = np.concatenate([self.values, values], axis=1)
            indices = np.concatenate([self.indices, indices], axis=1)
            positions = np.concatenate([self.positions, positions], axis=1)
        keep = _top_columns(values, indices, self.k)
        self.values = np.take_along_axis(values, keep, axis=1)
        self.indices = np.take_along_axis(indices, keep, axis=1)
        self.positions = np.take_along_axis(positions, keep[..., None], axis=1)

    def result(self) -> TopK:
        """The top-k so far, strongest first."""
        if self.values is None:
            raise ValueError("No batches were seen: `data` is empty.")
        return TopK(self.values.copy(), self.indices.copy(), self.positions.copy())


def _top_columns(values: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k best entries per row, ordered by (-value, index)."""
    n = values.shape[1]
    if n > k:
        # argpartition picks a top-k set in linear time; only rows where a tie
        # at the k-th value straddles the cut need a full sort to be exact.
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(values, part, axis=1)
        kth = chosen.min(axis=1, keepdims=True)
        ambiguous = (values == kth).sum(axis=1) > (chosen == kth).sum(axis=1)
        for row in np.flatnonzero(ambiguous):
            part[row] = np.lexsort((indices[row], -values[row]))[:k]
    else:
        part = np.broadcast_to(np.arange(n), values.shape).copy()
    order = np.lexsort(
        (np.take_along_axis(indices, part, axis=1), -np.take_along_axis(values, part, axis=1)),
        axis=1,
    )
    return np.take_along_axis(part, order, axis=1)


def top_activations(
    model: keras.Model,
    paths: str | Sequence[str],
    data: Any,
    k: int = 9,
    batch_size: int = 32,
    progress: bool = True,
    data_format: str | None = None,
) -> dict[str, TopK]:
    """The k images that activate each channel most, for several layers in one pass.

    Chu et al. (2017), Sec. 2: "the units that are visualized are those with the
    highest activation values, across spatial dimensions, and across all
    images in the dataset". One compiled probe computes every requested
    layer (paths may reach inside residual branches) and reduces each
    channel to its maximum over positions on the device; a running top-k
    per channel keeps memory independent of the dataset size.

    Args:
        model: keras.Model. A functional or Sequential model.
        paths: str or sequence of str. Layer paths (see `keras_residual.probe`).
        data: NumPy array, tf.data.Dataset, PyDataset or iterable of batches
            (see `iterate_batches`). Image indices count from 0 in this order.
        k: int. Images per channel. Defaults to 9.
        batch_size: int. Batch size for NumPy arrays. Defaults to 32.
        progress: bool. Show a progress bar. Defaults to True.
        data_format: str or None. Layout of the layers' outputs; None takes
            `keras.config.image_data_format()`.

    Returns:
        dict from path to TopK (with min(k, number of images) columns).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(3, 3, name="c")(inputs))
        >>> images = np.random.default_rng(0).random((20, 8, 8, 1), dtype="float32")
        >>> top = top_activations(model, "c", images, k=4, progress=False)["c"]
        >>> top.values.shape, top.positions.shape
        ((3, 4), (3, 4, 2))
    """
    path_list = [paths] if isinstance(paths, str) else list(paths)
    accumulators = [TopKAccumulator(k) for _ in path_list]
    for start, per_layer in stream_maxima(
        model, path_list, data, batch_size=batch_size, progress=progress, data_format=data_format
    ):
        for accumulator, (maxima, positions) in zip(accumulators, per_layer, strict=True):
            accumulator.update(start, maxima, positions)
    return {path: acc.result() for path, acc in zip(path_list, accumulators, strict=True)}


def crop_patches(
    images: np.ndarray,
    topk: TopK,
    field: ReceptiveField,
    fill: float | None = None,
    data_format: str | None = None,
) -> np.ndarray:
    """Each top unit's receptive-field box, cut from its image.

    Where the box runs off the image (padding let the unit see past the
    border) the patch is filled with gray: Chu et al.'s (2017) "large gray borders"
    (Fig. 2). All patches of a layer have the field's size.

    Args:
        images: array (N, *spatial, channels) (or (N, channels, *spatial)
            for channels_first, or (N, *spatial) without a channel axis), in
            the order of the data given to `top_activations`. Display images
            (e.g. uint8 before preprocessing) of the same size work too.
        topk: TopK. From `top_activations`.
        field: ReceptiveField. Of the same layer, from `receptive_field`.
        fill: float or None. Value off the image; None: the middle of the
            value range of the selected images.
        data_format: str or None. Layout of `images`; None takes
            `keras.config.image_data_format()`.

    Returns:
        array (C, k, *field.size, channels) (channels_first:
        (C, k, channels, *field.size)), with the dtype of `images`.

    Example:
        >>> import numpy as np
        >>> images = np.arange(16.0).reshape(1, 4, 4, 1)
        >>> top = TopK(np.ones((1, 1)), np.zeros((1, 1), int), np.zeros((1, 1, 2), int))
        >>> field = ReceptiveField(size=(3, 3), jump=(1, 1), offset=(-1, -1))
        >>> crop_patches(images, top, field, fill=-1.0)[0, 0, :, :, 0].tolist()
        [[-1.0, -1.0, -1.0], [-1.0, 0.0, 1.0], [-1.0, 4.0, 5.0]]
    """
    images = np.asarray(images)
    ndim = len(field.size)
    channels_first = (data_format or keras.config.image_data_format()) == "channels_first"
    if channels_first and images.ndim > ndim + 1:
        images = np.moveaxis(images, 1, -1)
    if images.ndim < ndim + 1:
        raise ValueError(
            f"`images` must have a batch axis and {ndim} spatial axes. "
            f"Received shape: {images.shape}"
        )
    if topk.positions.shape[-1] != ndim:
        raise ValueError(
            f"The top-k positions have {topk.positions.shape[-1]} spatial axes but the "
            f"receptive field has {ndim}; pass the field of the same layer."
        )
    selected = images[np.unique(topk.indices)]
    if fill is None:
        fill = (selected.min() + selected.max()) / 2
    channels, k = topk.indices.shape
    extent = images.shape[1:ndim + 1]
    patches = np.full((channels, k) + tuple(field.size) + images.shape[ndim + 1:],
                      fill, dtype=images.dtype)
    for c in range(channels):
        for j in range(k):
            box = field.box(*topk.positions[c, j])
            starts, ends = box[:ndim], box[ndim:]
            source = tuple(
                slice(max(s, 0), min(e, n)) for s, e, n in zip(starts, ends, extent, strict=True)
            )
            target = tuple(
                slice(sl.start - s, sl.stop - s) for sl, s in zip(source, starts, strict=True)
            )
            if all(sl.stop > sl.start for sl in source):
                patches[(c, j) + target] = images[(topk.indices[c, j],) + source]
    if channels_first and images.ndim > ndim + 1:
        patches = np.moveaxis(patches, -1, 2)
    return patches
