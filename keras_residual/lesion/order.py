"""Reordering residual blocks (Veit et al. 2016, Sec. 4.3, Fig. 5b).

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
swapping k random pairs of blocks with the same shape degrades the error
smoothly with the corruption of the order, measured by Kendall's tau over
the blocks that can move (the paper ignores downsampling blocks, which
never move and would count as agreeing pairs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
from scipy import stats
from tqdm import tqdm

from keras_residual.lesion import parallel
from keras_residual.lesion.evaluation import Data, check_ks, checked_data, evaluate
from keras_residual.surgery import reorder_blocks, residual_blocks, swappable
from keras_residual.surgery.select import layer_shape


@dataclasses.dataclass
class ReorderingResult:
    """Error after swapping k random pairs of compatible blocks (Veit et al. 2016, Fig. 5b).

    Attributes:
        ks: (m,) int. Numbers of swapped pairs.
        kendall_tau: (m, samples) float. Kendall's tau between the original
            and the new order of the blocks that can move (those in
            `compatible_groups`), the corruption Veit et al. plot.
        errors: (m, samples) float. Error of each reordered network.
        orders: (m, samples, n) int. The block order of each network
            (position p ran block `orders[..., p]`).
        intact_error: float. Error of the original order.
        kendall_tau_all: (m, samples) float or None. Kendall's tau over all
            blocks, fixed ones included (higher: each fixed block adds
            agreeing pairs).

    Example:
        `reordering` returns one; by hand, one network per k with three blocks:

        >>> import numpy as np
        >>> from keras_residual.lesion import ReorderingResult
        >>> result = ReorderingResult(
        ...     ks=np.array([1]), kendall_tau=np.array([[1 / 3]]), errors=np.array([[0.2]]),
        ...     orders=np.array([[[1, 0, 2]]]), intact_error=0.08)
        >>> result.orders[0, 0].tolist(), result.kendall_tau_all is None
        ([1, 0, 2], True)
    """

    ks: np.ndarray
    kendall_tau: np.ndarray
    errors: np.ndarray
    orders: np.ndarray
    intact_error: float
    kendall_tau_all: np.ndarray | None = None


def movable_kendall_tau(order: Sequence[int], groups: list[list[int]]) -> float:
    """Kendall's tau between the original and `order`, over the positions in `groups` only.

    Blocks outside every group (downsampling or shape-changing blocks)
    never move; counting them would add only agreeing pairs and inflate tau.

    Example:
        >>> movable_kendall_tau([1, 0, 2, 3], [[0, 1]])  # block 2, 3 fixed: one discordant pair
        -1.0
    """
    positions = sorted(i for group in groups for i in group)
    if len(positions) < 2:
        return 1.0
    return float(stats.kendalltau(positions, [order[i] for i in positions]).statistic)


def compatible_groups(model: keras.Model) -> list[list[int]]:
    """Indices (network order) of swappable blocks, grouped by input shape.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> compatible_groups(model)
        [[0, 1]]
    """
    groups: dict[tuple, list[int]] = {}
    for i, block in enumerate(residual_blocks(model)):
        if swappable(block):
            groups.setdefault(layer_shape(block, "input")[1:], []).append(i)
    return [group for group in groups.values() if len(group) > 1]


def random_swaps(groups: list[list[int]], n: int, k: int, rng: np.random.Generator) -> list[int]:
    """An order of `n` blocks after swapping `k` distinct random pairs drawn inside `groups`.

    The pairs are drawn without repetition from all pairs of blocks that
    share a group and swapped one after another.

    Example:
        >>> random_swaps([[0, 1]], 3, 1, np.random.default_rng(0))
        [1, 0, 2]
    """
    pairs = [(a, b) for group in groups for i, a in enumerate(group) for b in group[i + 1 :]]
    if k > len(pairs):
        raise ValueError(
            f"Cannot swap {k} distinct pairs: the model has only {len(pairs)} pairs of "
            f"compatible blocks. Received: k={k}"
        )
    order = list(range(n))
    for index in rng.choice(len(pairs), size=k, replace=False):
        a, b = pairs[index]
        order[a], order[b] = order[b], order[a]
    return order


def reordering(
    model: keras.Model,
    data: Data,
    ks: Sequence[int],
    samples: int = 5,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> ReorderingResult:
    """Swap `k` random pairs of compatible blocks and record error vs Kendall's tau.

    Veit et al. 2016, Sec. 4.3, Fig. 5b: only blocks with the same shape
    and no downsampling are swapped; the corruption of the order is
    Kendall's tau (`scipy.stats.kendalltau`) over the blocks that can move
    (`movable_kendall_tau`; over all blocks in `kendall_tau_all`).

    Under a distribution (`keras_residual.lesion.parallel`): the swaps are
    drawn from `seed` alike in every process, each reordered network is
    built under the current strategy or distribution and evaluated
    data-parallel (a compiled prediction instead of eager calls, which would
    run on one device), which gives the single-device errors.

    Args:
        model: keras.Model with Residual blocks, returning class scores.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches.
        ks: sequence of int. Numbers of swapped pairs.
        samples: int. Random orders per k. Defaults to 5.
        batch_size: int. Evaluation batch size. Defaults to 256.
        seed: int. Seed of the swaps. Defaults to 0.
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        ReorderingResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> result = reordering(model, (np.eye(2), np.array([0, 1])), [1], samples=1,
        ...                     progress=False)
        >>> result.kendall_tau.tolist()
        [[-1.0]]
    """
    x, y = checked_data(model, data, batch_size, samples)
    n = len(residual_blocks(model))
    groups = compatible_groups(model)
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    ks = check_ks(ks, pairs, f"numbers of distinct pairs to swap: the model has {pairs} pairs "
                   "of compatible blocks")
    rng = np.random.default_rng(seed)
    taus, errors = np.empty((len(ks), samples)), np.empty((len(ks), samples))
    taus_all = np.empty((len(ks), samples))
    orders = np.empty((len(ks), samples, n), dtype="int64")
    with parallel.distributed(model) as model, tqdm(
        total=errors.size, desc="reordering", disable=not progress
    ) as bar:
        intact = evaluate(model, x, y, batch_size)
        for row, k in enumerate(ks):
            for s in range(samples):
                order = random_swaps(groups, n, int(k), rng)
                orders[row, s] = order
                taus[row, s] = movable_kendall_tau(order, groups)
                taus_all[row, s] = stats.kendalltau(np.arange(n), order).statistic
                errors[row, s] = (
                    intact if order == list(range(n))
                    else evaluate(reorder_blocks(model, order, share_weights=True), x, y, batch_size,
                                  compiled=False)
                )
                bar.update()
    return ReorderingResult(ks, taus, errors, orders, intact, taus_all)


