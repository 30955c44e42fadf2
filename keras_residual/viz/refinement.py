"""Do residual blocks refine their input's features? Channel statistics across layers (Chu, Yang and Tadinada, "Visualizing Residual Networks", 2017).

Chu et al. (2017, Sec. 3) follow one channel through the blocks of a stage (res2a,
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

Chance levels come in two kinds. The closed forms (k^2/N for an overlap, a
hypergeometric tail for a match) assume independent, uniformly random
top-k sets; real channels favour the same high-contrast images, so their
chance overlap is higher. The empirical nulls measure that from the data:
the overlap of *different* channels of the later layer with each other
(`null_overlap`, `null_matched_fraction`), and the same-channel overlap
after a random permutation of the later layer's channels
(`permutation_null`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from scipy import sparse, stats

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
        images: int. Number of images the top-k sets were drawn from (0:
            unknown; the chance baselines then raise).
        shared_within: int64 array (C_b, C_b) or None. Top-k images shared
            by each pair of channels of layer b (`shared_topk(b, b)`; the
            diagonal is k): the empirical null. None: not measured (the
            empirical nulls then raise).

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
    images: int = 0
    shared_within: np.ndarray | None = None

    def _require_images(self) -> int:
        if self.images < self.k:
            raise ValueError(
                "The chance baselines need the number of images the top-k sets come from "
                f"(at least k={self.k}). Received: images={self.images}"
            )
        return int(self.images)

    def chance_overlap(self) -> float:
        """Expected overlap of two random k-image sets out of `images`: k^2 / N.

        The baseline for every overlap: 81 / N of 9 for top-9 sets
        (3.4 of 9 with 24 images).
        """
        return self.k * self.k / self._require_images()

    def chance_matched_fraction(self, min_shared: int = 2) -> float:
        """`matched_fraction(min_shared)` expected for random top-k sets.

        Each pair of random k-sets out of N shares a hypergeometric number
        of images; a channel of b matches when any of the C_a channels of a
        shares at least `min_shared` (independent sets).
        """
        n = self._require_images()
        p = float(stats.hypergeom(n, self.k, self.k).sf(min_shared - 1))
        return 1.0 - (1.0 - p) ** self.shared.shape[1]

    def _require_within(self) -> np.ndarray:
        within = self.shared_within
        if within is None or within.shape[0] < 2:
            raise ValueError(
                f"The empirical nulls need the top-k images shared between channels of "
                f"{self.path_b!r} (at least two channels; `compare_layers` measures them). "
                f"Received: shared_within={None if within is None else within.shape}"
            )
        return within

    def null_overlap(self) -> float:
        """Mean top-k overlap of two *different* channels of layer b: the empirical chance overlap.

        The counterpart of `chance_overlap()` that keeps what the closed
        form drops: images that many channels of the layer rank high.

        Example:
            >>> import numpy as np
            >>> within = np.array([[3, 2, 0], [2, 3, 1], [0, 1, 3]])
            >>> c = LayerComparison("a", "b", 3, np.zeros((3, 3), int), np.eye(3), 10, within)
            >>> c.null_overlap()
            1.0
        """
        within = self._require_within()
        off = ~np.eye(within.shape[0], dtype=bool)
        return float(within[off].mean())

    def null_matched_fraction(self, min_shared: int = 2) -> float:
        """Fraction of b's channels that share at least `min_shared` top-k images with another channel of b.

        The empirical counterpart of `chance_matched_fraction()`; each
        channel is compared with the C_b - 1 other channels of its own
        layer (not with the C_a channels of a).

        Example:
            >>> import numpy as np
            >>> within = np.array([[3, 2, 0], [2, 3, 1], [0, 1, 3]])
            >>> c = LayerComparison("a", "b", 3, np.zeros((3, 3), int), np.eye(3), 10, within)
            >>> c.null_matched_fraction(min_shared=2)
            0.6666666666666666
        """
        within = self._require_within().copy()
        np.fill_diagonal(within, -1)
        return float(np.mean(within.max(axis=1) >= min_shared))

    def permutation_null(self, draws: int = 1000, seed: int = 0) -> dict:
        """The mean same-channel overlap against randomly permuted channels of b.

        Channel c of b is paired with channel pi(c) of a for `draws` uniform
        random permutations pi; the p-value is the share of permutations
        (the observed pairing counted once) whose mean overlap is at least
        the observed one.

        Args:
            draws: int. Random permutations. Defaults to 1000.
            seed: int. Seed of NumPy's generator. Defaults to 0.

        Returns:
            dict with `observed` (mean same-channel overlap), `mean` (its
            expectation under permutation: the mean of all entries of
            `shared`), `std` (over the draws), `p_value` and `draws`.

        Example:
            >>> import numpy as np
            >>> c = LayerComparison("a", "b", 2, np.array([[2, 0], [0, 2]]), np.eye(2))
            >>> c.permutation_null(draws=99)["mean"]
            1.0
        """
        self._require_square()
        if draws < 1:
            raise ValueError(f"`draws` must be a positive integer. Received: draws={draws}")
        channels = self.shared.shape[0]
        observed = float(np.diagonal(self.shared).mean())
        rng = np.random.default_rng(seed)
        rows = np.arange(channels)
        null = np.array([self.shared[rows, rng.permutation(channels)].mean()
                         for _ in range(draws)])
        return {
            "observed": observed,
            "mean": float(self.shared.mean()),
            "std": float(null.std()),
            "p_value": float((1 + np.sum(null >= observed)) / (draws + 1)),
            "draws": int(draws),
        }

    def summary(self, min_shared: int = 2) -> dict:
        """Every overlap statistic beside its closed-form and empirical chance levels, as one dict.

        Keys: `same_channel_overlap` (mean over channels; None where the
        layers differ in width), `chance_overlap` (k^2/N), `null_overlap`
        (different channels of b), `permutation_p` (p-value of the
        same-channel overlap against permuted channels, 1,000 draws; None
        where the widths differ), `matched_fraction`,
        `chance_matched_fraction` (hypergeometric), `null_matched_fraction`
        (within b), `k`, `images`. The empirical keys are None where
        `shared_within` was not measured.
        """
        square = self.shared.shape[0] == self.shared.shape[1]
        empirical = self.shared_within is not None and self.shared_within.shape[0] > 1
        return {
            "pair": (self.path_a, self.path_b),
            "k": self.k,
            "images": self.images,
            "same_channel_overlap": float(self.same_channel_overlap().mean()) if square else None,
            "chance_overlap": self.chance_overlap(),
            "null_overlap": self.null_overlap() if empirical else None,
            "permutation_p": self.permutation_null()["p_value"] if square else None,
            "matched_fraction": self.matched_fraction(min_shared),
            "chance_matched_fraction": self.chance_matched_fraction(min_shared),
            "null_matched_fraction": self.null_matched_fraction(min_shared) if empirical else None,
        }

    def _require_square(self) -> None:
        if self.shared.shape[0] != self.shared.shape[1]:
            raise ValueError(
                f"{self.path_a!r} has {self.shared.shape[1]} channels and {self.path_b!r} "
                f"{self.shared.shape[0]}: channel c of one does not continue channel c of "
                "the other. Use correspondences() instead."
            )

    def same_channel_overlap(self) -> np.ndarray:
        """Top-k images channel c shares with channel c (identity shortcuts; Chu et al. 2017, Sec. 3)."""
        self._require_square()
        return np.diagonal(self.shared).copy()

    def same_channel_correlation(self) -> np.ndarray:
        """Correlation of channel c's per-image maxima in the two layers."""
        self._require_square()
        return np.diagonal(self.correlation).copy()

    def correspondences(self, top: int = 1) -> Correspondence:
        """The `top` channels of layer a that share the most top-k images with each channel of b.

        Chu et al. (2017), future work 2: across a projection boundary there is no
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

        Chu et al. (2017), Sec. 4: in AlexNet "the units which matched on more than 1
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

    Reproduces Chu et al.'s (2017) refinement analysis: pass the blocks of a stage
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
        Refinement with the top-k of each path and one LayerComparison per
        pair, which also holds the overlaps between the later layer's own
        channels (`shared_within`) for the empirical nulls.

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
    images = 0
    for start, per_layer in stream_maxima(
        model, paths, data, batch_size=batch_size, progress=progress, data_format=data_format
    ):
        maxima = {}
        for path, (values, positions) in zip(paths, per_layer, strict=True):
            accumulators[path].update(start, values, positions)
            maxima[path] = values
            images = max(images, start + len(values))
        for correlation, (a, b) in zip(correlations, pairs, strict=True):
            correlation.update(maxima[a], maxima[b])
    topk = {path: acc.result() for path, acc in accumulators.items()}
    comparisons = [
        LayerComparison(a, b, k, shared_topk(topk[a], topk[b]), correlation.result(), images,
                        shared_within=shared_topk(topk[b], topk[b]))
        for correlation, (a, b) in zip(correlations, pairs, strict=True)
    ]
    return Refinement(topk=topk, comparisons=comparisons)


def label_purity(top: TopK, labels: np.ndarray) -> np.ndarray:
    """Share of each channel's top-k images that carry its most common label.

    The ResNet-50 visualization study describes refinement as the top-9 of
    a channel converging on one class from block to block ("1 tandem
    bicycle ... all of the top-9"); this measures it: 1.0 when all k images
    share a label, 1/k at least.

    Args:
        top: TopK of one layer.
        labels: (N,) int array, the label of every image of the data.

    Returns:
        float64 array (C,).

    Example:
        >>> import numpy as np
        >>> top = TopK(np.ones((2, 3)), np.array([[0, 1, 2], [2, 3, 4]]), np.zeros((2, 3, 0), int))
        >>> label_purity(top, np.array([7, 7, 5, 5, 5])).tolist()
        [0.6666666666666666, 1.0]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or top.indices.size and top.indices.max() >= labels.size:
        raise ValueError(
            "`labels` must be a 1-D array with one label per image of the data. Received: "
            f"labels.shape={labels.shape}, largest image index {int(top.indices.max())}"
        )
    _, codes = np.unique(labels, return_inverse=True)
    picked = codes[top.indices]  # (C, k)
    counts = np.stack([(picked == c).sum(axis=1) for c in np.unique(picked)], axis=1)
    return counts.max(axis=1) / top.indices.shape[1]


def chance_label_purity(labels: np.ndarray, k: int = 9, draws: int = 2000, seed: int = 0) -> float:
    """Expected `label_purity` of k images drawn at random (without replacement) from `labels`.

    Example:
        >>> chance_label_purity(np.zeros(10, int), k=3)
        1.0
    """
    labels = np.asarray(labels)
    if not 1 <= k <= labels.size:
        raise ValueError(f"`k` must be between 1 and len(labels)={labels.size}. Received: k={k}")
    rng = np.random.default_rng(seed)
    _, codes = np.unique(labels, return_inverse=True)
    picks = np.stack([rng.choice(labels.size, size=k, replace=False) for _ in range(draws)])
    top = TopK(np.zeros(picks.shape), picks, np.zeros(picks.shape + (0,), int))
    return float(label_purity(top, codes).mean())


def stage_label_purity(result: Refinement, labels: np.ndarray) -> dict[str, float]:
    """Mean `label_purity` of every layer of `result`, in order, plus the chance level.

    Pass the blocks of one stage to `compare_layers` and read whether the
    top-k sets get purer from block to block (refinement) against
    `"chance"`, random k-sets of the same labels.

    Example:
        >>> import numpy as np
        >>> top = TopK(np.ones((1, 2)), np.array([[0, 1]]), np.zeros((1, 2, 0), int))
        >>> stage_label_purity(Refinement({"b1": top}, []), np.array([3, 3, 4]))["b1"]
        1.0
    """
    k = next(iter(result.topk.values())).indices.shape[1] if result.topk else 1
    out = {path: float(label_purity(top, labels).mean()) for path, top in result.topk.items()}
    out["chance"] = chance_label_purity(labels, k)
    return out


def compare_twins(residual: Refinement, plain: Refinement, min_shared: int = 2) -> dict:
    """The same all-pairs statistics for a ResNet and its plain twin, each beside chance.

    The ResNet-50 visualization study compares AlexNet's conv4 and conv5 over
    all channel pairs (`matched_fraction`) but follows ResNet channels one
    to one; this applies one statistic to both networks' layer pairs.

    Returns:
        {"residual": [summary, ...], "plain": [summary, ...]} with one
        `LayerComparison.summary(min_shared)` per compared pair.

    Example:
        >>> import numpy as np
        >>> c = LayerComparison("a", "b", 1, np.array([[1]]), np.eye(1), images=4)
        >>> compare_twins(Refinement({}, [c]), Refinement({}, [c]), 1)["plain"][0]["chance_overlap"]
        0.25
    """
    return {
        "residual": [c.summary(min_shared) for c in residual.comparisons],
        "plain": [c.summary(min_shared) for c in plain.comparisons],
    }
