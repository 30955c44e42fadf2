"""Do residual blocks refine their input's features? Channel statistics across layers (seed 000).

Seed 000 (Sec. 3) follows one channel through the blocks of a stage (res2a,
res2b, res2c): an identity shortcut carries channel c of one block into
channel c of the next, and its top-9 images stay related while the feature
sharpens ("refinement"). Sec. 4 makes the same comparison between conv4 and
conv5 of AlexNet, which has no shortcuts, and finds few units that share
more than one top-9 image. Future work 2 asks, across a projection boundary
(res4f to res5a), which channels of the previous stage share the most top-9
images with each new channel.

`compare_layers` measures all of this in one streaming pass: for every pair
of layers, the number of top-k images shared by each pair of channels and
the Pearson correlation, over the dataset, of the channels' per-image
maxima.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from scipy import sparse

from keras_residual.viz.top_activations import TopK, TopKAccumulator, stream_maxima


def shared_topk(a: TopK, b: TopK) -> np.ndarray:
    """How many top-k images each channel of `b` shares with each channel of `a`.

    Args:
        a: TopK. The earlier layer (C_a channels).
        b: TopK. The later layer (C_b channels), over the same data.

    Returns:
        int64 array (C_b, C_a).

    Example:
        >>> import numpy as np
        >>> a = TopK(np.ones((2, 2)), np.array([[0, 1], [2, 3]]), np.zeros((2, 2, 0), int))
        >>> b = TopK(np.ones((1, 2)), np.array([[1, 2]]), np.zeros((1, 2, 0), int))
        >>> shared_topk(a, b).tolist()
        [[1, 1]]
    """
    images = int(max(a.indices.max(), b.indices.max())) + 1

    def membership(top: TopK) -> sparse.csr_matrix:
        rows = np.repeat(np.arange(top.indices.shape[0]), top.indices.shape[1])
        ones = np.ones(rows.size, dtype=np.int64)
        return sparse.csr_matrix(
            (ones, (rows, top.indices.ravel())), shape=(top.indices.shape[0], images)
        )

    return np.asarray((membership(b) @ membership(a).T).toarray(), dtype=np.int64)


@dataclass
class Correspondence:
    """For each channel of a later layer, its best-matching channels of an earlier one.

    Attributes:
        channels: int64 array (C_b, top). Channels of the earlier layer,
            most shared top-k images first (ties: higher correlation, then
            lower channel index).
        shared: int64 array (C_b, top). Top-k images shared with each.
        correlation: float64 array (C_b, top). Correlation of per-image maxima.

    Example:
        >>> import numpy as np
        >>> Correspondence(np.array([[2]]), np.array([[5]]), np.array([[0.9]])).channels.tolist()
        [[2]]
    """

    channels: np.ndarray
    shared: np.ndarray
    correlation: np.ndarray


@dataclass
class LayerComparison:
    """Channel-by-channel relation between two layers over one dataset.

    Attributes:
        path_a: str. The earlier layer.
        path_b: str. The later layer.
        k: int. Size of the top-k image sets.
        shared: int64 array (C_b, C_a). Top-k images shared by channel j of
            b (row) and channel i of a (column).
        correlation: float64 array (C_b, C_a). Pearson correlation, over the
            images, of the two channels' per-image maxima (NaN where a channel
            is constant).

    Example:
        >>> import numpy as np
        >>> c = LayerComparison("a", "b", 9, np.array([[9, 0], [1, 3]]), np.eye(2))
        >>> c.same_channel_overlap().tolist(), c.matched_fraction(min_shared=2)
        ([9, 3], 1.0)
    """

    path_a: str
    path_b: str
    k: int
    shared: np.ndarray
    correlation: np.ndarray

    def _require_square(self) -> None:
        if self.shared.shape[0] != self.shared.shape[1]:
            raise ValueError(
                f"{self.path_a!r} has {self.shared.shape[1]} channels and {self.path_b!r} "
                f"{self.shared.shape[0]}: channel c of one does not continue channel c of "
                "the other. Use correspondences() instead."
            )

    def same_channel_overlap(self) -> np.ndarray:
        """Top-k images channel c shares with channel c (identity shortcuts; seed 000 Sec. 3)."""
        self._require_square()
        return np.diagonal(self.shared).copy()

    def same_channel_correlation(self) -> np.ndarray:
        """Correlation of channel c's per-image maxima in the two layers."""
        self._require_square()
        return np.diagonal(self.correlation).copy()

    def correspondences(self, top: int = 1) -> Correspondence:
        """The `top` channels of layer a that share the most top-k images with each channel of b.

        Seed 000, future work 2: across a projection boundary there is no
        channel-to-channel identity, so correspondences are found by shared
        top-9 images.
        """
        top = min(int(top), self.shared.shape[1])
        if top < 1:
            raise ValueError(f"`top` must be a positive integer. Received: top={top}")
        correlation = np.nan_to_num(self.correlation, nan=-np.inf)
        columns = np.broadcast_to(np.arange(self.shared.shape[1]), self.shared.shape)
        order = np.lexsort((columns, -correlation, -self.shared), axis=1)[:, :top]
        return Correspondence(
            channels=order.astype(np.int64),
            shared=np.take_along_axis(self.shared, order, axis=1),
            correlation=np.take_along_axis(self.correlation, order, axis=1),
        )

    def matched_fraction(self, min_shared: int = 2) -> float:
        """Fraction of b's channels that share at least `min_shared` top-k images with some channel of a.

        Seed 000, Sec. 4: in AlexNet "the units which matched on more than 1
        input in common were few" (`min_shared=2`).
        """
        return float(np.mean(self.shared.max(axis=1) >= min_shared))


@dataclass
class Refinement:
    """Result of `compare_layers`.

    Attributes:
        topk: dict from path to TopK.
        comparisons: list of LayerComparison, one per pair of layers.

    Example:
        >>> Refinement(topk={}, comparisons=[]).comparisons
        []
    """

    topk: dict[str, TopK]
    comparisons: list[LayerComparison]


class _Correlation:
    """Streaming Pearson correlation between every channel of two layers."""

    def __init__(self):
        self.n = 0

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        a = a.astype(np.float64)
        b = b.astype(np.float64)
        if self.n == 0:
            # Sums of values shifted by the first batch's means lose less
            # precision to cancellation than raw sums of squares.
            self.shift_a, self.shift_b = a.mean(axis=0), b.mean(axis=0)
            self.sum_a = np.zeros(a.shape[1])
            self.sum_b = np.zeros(b.shape[1])
            self.sum_aa = np.zeros(a.shape[1])
            self.sum_bb = np.zeros(b.shape[1])
            self.sum_ab = np.zeros((b.shape[1], a.shape[1]))
        a = a - self.shift_a
        b = b - self.shift_b
        self.n += a.shape[0]
        self.sum_a += a.sum(axis=0)
        self.sum_b += b.sum(axis=0)
        self.sum_aa += (a * a).sum(axis=0)
        self.sum_bb += (b * b).sum(axis=0)
        self.sum_ab += b.T @ a

    def result(self) -> np.ndarray:
        mean_a, mean_b = self.sum_a / self.n, self.sum_b / self.n
        cov = self.sum_ab / self.n - np.outer(mean_b, mean_a)
        var_a = self.sum_aa / self.n - mean_a**2
        var_b = self.sum_bb / self.n - mean_b**2
        # A constant channel shifts to exact zeros, so its variance is 0: no correlation.
        valid = np.outer(var_b > 0, var_a > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(valid, cov / np.sqrt(np.outer(var_b, var_a)), np.nan)
        return np.clip(corr, -1.0, 1.0)


def compare_layers(
    model: keras.Model,
    paths: Sequence[str],
    data: Any,
    k: int = 9,
    pairs: Sequence[tuple[str, str]] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    data_format: str | None = None,
) -> Refinement:
    """Shared top-k images and activation correlation between layers, in one pass.

    Reproduces seed 000's refinement analysis: pass the blocks of a stage
    (e.g. `["conv2_block1", "conv2_block2", "conv2_block3"]`) and read
    `same_channel_overlap()` of each consecutive comparison (Sec. 3); pass
    two layers of a plain network (AlexNet conv4, conv5) and read
    `matched_fraction(2)` (Sec. 4); pass the last block of a stage and the
    first of the next (res4f, res5a) and read `correspondences()` (future
    work 2).

    Args:
        model: keras.Model. A functional or Sequential model.
        paths: sequence of str. Layer paths (see `keras_residual.probe`).
        data: NumPy array, tf.data.Dataset, PyDataset or iterable of batches.
        k: int. Size of the top-k image sets. Defaults to 9.
        pairs: sequence of (earlier, later) paths, or None for consecutive
            pairs of `paths`.
        batch_size: int. Batch size for NumPy arrays. Defaults to 32.
        progress: bool. Show a progress bar. Defaults to True.
        data_format: str or None. Layout of the layers' outputs.

    Returns:
        Refinement with the top-k of each path and one LayerComparison per pair.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8, 8, 2))
        >>> x = Residual(keras.layers.Conv2D(2, 3, padding="same"), name="b1")(inputs)
        >>> x = Residual(keras.layers.Conv2D(2, 3, padding="same"), name="b2")(x)
        >>> images = np.random.default_rng(0).random((30, 8, 8, 2), dtype="float32")
        >>> result = compare_layers(keras.Model(inputs, x), ["b1", "b2"], images, progress=False)
        >>> result.comparisons[0].same_channel_overlap().shape
        (2,)
    """
    paths = list(dict.fromkeys(paths))
    pairs = list(zip(paths[:-1], paths[1:], strict=True)) if pairs is None else list(pairs)
    for a, b in pairs:
        if a not in paths or b not in paths:
            raise ValueError(
                f"Every path in `pairs` must be in `paths`. Received: pair=({a!r}, {b!r}), "
                f"paths={paths}"
            )
    if not pairs:
        raise ValueError(f"Need at least two layers to compare. Received: paths={paths}")
    accumulators = {path: TopKAccumulator(k) for path in paths}
    correlations = [_Correlation() for _ in pairs]
    for start, per_layer in stream_maxima(
        model, paths, data, batch_size=batch_size, progress=progress, data_format=data_format
    ):
        maxima = {}
        for path, (values, positions) in zip(paths, per_layer, strict=True):
            accumulators[path].update(start, values, positions)
            maxima[path] = values
        for correlation, (a, b) in zip(correlations, pairs, strict=True):
            correlation.update(maxima[a], maxima[b])
    topk = {path: acc.result() for path, acc in accumulators.items()}
    comparisons = [
        LayerComparison(a, b, k, shared_topk(topk[a], topk[b]), correlation.result())
        for correlation, (a, b) in zip(correlations, pairs, strict=True)
    ]
    return Refinement(topk=topk, comparisons=comparisons)
