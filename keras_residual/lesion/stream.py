"""Lesion studies on the residual stream of a Transformer, at block or sub-layer granularity.

Each Transformer block is two `Residual` sub-layers (attention, then MLP;
`blocks.transformer_block`, or a converted keras-hub model made of such
pairs). `transformer_units(model, granularity)` groups them: "sublayer"
gives one unit per `Residual` (He et al. 2024, arXiv 2406.15786, drop
attention and MLP separately), "block" one unit per attention + MLP pair.
The studies:

- `unit_deletion`, `k_unit_deletion`: single and k-unit deletion (Veit et al.
  2016, Fig. 3, 5a; Lad et al. 2024, arXiv 2406.19384; Bhojanapalli
  et al. 2021, ICCV). At "sublayer" they are the ResNet studies
  (`single_block_deletion`, its stacked sweep, and `k_block_deletion`).
- `adjacent_swaps` (Lad et al. 2024) and `unit_reordering` (Veit et
  al. 2016, Fig. 5b: error against Kendall's tau).
- `middle_arrangements`: skip, reverse, shuffle, repeat and run in parallel the
  middle units (Sun et al., "Transformer Layers as Painters", AAAI 2025).
- `keras_residual.lesion.similarity`: deleting the units whose input and
  output are most alike (Gromov et al. 2025; He et al. 2024).
- `compare_effective_paths`: Veit et al.'s effective-path range of a
  Transformer and a ResNet on one axis, as a fraction of the number of units.

The metric is `evaluate`'s classification error; for a causal language
model it is the next-token error over all positions
(`next_token_data` makes the pairs; `position_errors` gives it per position).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from keras_residual import graph
from keras_residual.lesion import paths
from keras_residual.lesion.deletion import (
    KDeletionResult,
    SingleDeletionResult,
    k_block_deletion,
    single_block_deletion,
)
from keras_residual.lesion.evaluation import Data, check_ks, checked_data, evaluate
from keras_residual.lesion.gradient_paths import GradientPathResult
from keras_residual.lesion.order import (
    ReorderingResult,
    movable_kendall_tau,
    random_swaps,
    reordering,
)
from keras_residual.lesion_state import lesion_ready
from keras_residual.residual import Residual
from keras_residual.surgery import (
    parallel_blocks,
    preserved_lesion_state,
    reorder_blocks,
    residual_blocks,
)

#: "block": attention + MLP pairs; "sublayer": every Residual on its own.
GRANULARITIES = ("block", "sublayer")
#: The arrangements of the middle units of Sun et al. (2025).
ARRANGEMENTS = ("skip", "reverse", "shuffle", "repeat", "parallel")
_ATTENTION = (layers.MultiHeadAttention, layers.GroupQueryAttention)


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"`granularity` must be one of {GRANULARITIES}. Received: granularity={granularity!r}"
        )


def has_attention(block: Residual) -> bool:
    """Whether the branch of `block` holds an attention layer (at any depth).

    The attention sub-layer of a Transformer block (Vaswani et al. 2017,
    Sec. 3.1); `transformer_units` starts a block there.

    Example:
        >>> has_attention(Residual(keras.layers.MultiHeadAttention(2, 4)))
        True
    """
    return any(isinstance(layer, _ATTENTION) for layer in graph.walk(block.layer))


def transformer_units(model: keras.Model, granularity: str = "block") -> list[list[Residual]]:
    """The lesion units of `model`: its `Residual` blocks, grouped by `granularity`.

    "sublayer": one unit per block. "block": a block whose branch holds an
    attention layer starts a unit and the next block without attention (the
    MLP) joins it, so a Transformer block (Vaswani et al. 2017, Fig. 1) is
    one unit; every other block is a unit of its own.

    Example:
        >>> model = keras.Sequential([keras.Input((3, 4))] + [
        ...     Residual(layer, name=f"{kind}{i}") for i in (1, 2) for kind, layer in (
        ...         ("attention", keras.layers.MultiHeadAttention(1, 4)),
        ...         ("mlp", keras.layers.Dense(4)))])
        >>> [[b.name for b in unit] for unit in transformer_units(model)][0]
        ['attention1', 'mlp1']
        >>> len(transformer_units(model, "sublayer"))
        4
    """
    _check_granularity(granularity)
    units: list[list[Residual]] = []
    for block in residual_blocks(model):
        joins = (granularity == "block" and not has_attention(block) and units
                 and len(units[-1]) == 1 and has_attention(units[-1][0]))
        if joins:
            units[-1].append(block)
        else:
            units.append([block])
    return units


def unit_names(units: Sequence[Sequence[Residual]]) -> np.ndarray:
    """One name per unit: its blocks' names joined by "+" (the labels of the studies' results).

    Example:
        >>> unit_names([[Residual(keras.layers.Dense(2), name="a"),
        ...              Residual(keras.layers.Dense(2), name="b")]]).tolist()
        ['a+b']
    """
    return np.array(["+".join(block.name for block in unit) for unit in units])


def next_token_data(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for a causal LM: `tokens[:, :-1]` and the next tokens `tokens[:, 1:]`.

    With these, `evaluate`'s classification error is the next-token error
    averaged over all positions (Lad et al. 2024 report next-token accuracy).

    Example:
        >>> x, y = next_token_data(np.array([[1, 2, 3]]))
        >>> x.tolist(), y.tolist()
        ([[1, 2]], [[2, 3]])
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(
            f"`tokens` must be (sequences, length >= 2) integer ids. Received: shape={tokens.shape}"
        )
    return tokens[:, :-1], tokens[:, 1:]


def position_errors(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Next-token error at each position: the mean over sequences of argmax != target.

    Lad et al. (2024, arXiv 2406.19384) measure next-token accuracy; per
    position it shows how a lesion hurts early and late tokens.

    Example:
        >>> p = np.array([[[0.9, 0.1], [0.9, 0.1]]])  # (1 sequence, 2 positions, 2 tokens)
        >>> position_errors(p, np.array([[0, 1]])).tolist()
        [0.0, 1.0]
    """
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.ndim != 3 or predictions.shape[:2] != targets.shape:
        raise ValueError(
            "`predictions` must be (sequences, positions, vocabulary) and `targets` "
            f"(sequences, positions). Received: {predictions.shape} and {targets.shape}"
        )
    return (predictions.argmax(-1) != targets).mean(0)


def study_units(model: keras.Model, granularity: str, at_least: int = 1) -> list[list[Residual]]:
    """`transformer_units`, with a ValueError where fewer than `at_least` units are found.

    The units every study of this module (and of `lesion.similarity`) lesions.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> len(study_units(model, "block"))
        1
    """
    units = transformer_units(model, granularity)
    if len(units) < at_least:
        raise ValueError(
            f"This study needs at least {at_least} units; model {model.name!r} has "
            f"{len(units)} at granularity {granularity!r}. Received: granularity={granularity!r}"
        )
    return units


def error_without(model: keras.Model, units: Sequence[Sequence[Residual]], x: np.ndarray,
                  y: np.ndarray, batch_size: int) -> float:
    """Error of the lesion-ready `model` with every block of `units` deleted, then restored.

    Veit et al. (2016), Sec. 4.2: several blocks deleted at once; the
    lesion state of each block is restored on exit.

    Example:
        >>> from keras_residual.lesion_state import lesion_ready
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           keras.layers.Softmax()])
        >>> with lesion_ready(model):
        ...     error = error_without(model, study_units(model, "block"), np.eye(2),
        ...                           np.array([0, 1]), 2)
        >>> error
        0.0
    """
    blocks = [block for unit in units for block in unit]
    with preserved_lesion_state(blocks):
        for block in blocks:
            block.branch_enabled = False
        return evaluate(model, x, y, batch_size=batch_size)


def unit_deletion(
    model: keras.Model, data: Data, granularity: str = "block", batch_size: int = 64,
    progress: bool = True,
) -> SingleDeletionResult:
    """Delete each unit in turn and record the error (Veit et al. 2016, Fig. 3; Lad et al. 2024).

    Lad, Lee, Gurnee, Tegmark, "The Remarkable Robustness of LLMs" (2024, arXiv
    2406.19384): deleting one layer of a trained Transformer keeps most of its next-token
    accuracy, except for the first and last layers. A deleted pre-norm
    sub-layer passes the residual stream on unchanged; a deleted post-norm one
    leaves `LayerNorm(x)` (`LayerNormAddMerge`). At "sublayer" this is
    `single_block_deletion` (its stacked sweep); at "block" each attention +
    MLP pair is deleted together.

    Args:
        model: keras.Model built from Residual sub-layers, returning class scores.
        data: (x, y) arrays or a dataset of batches (`next_token_data` for an LM).
        granularity: str. "block" (default) or "sublayer".
        batch_size: int. Evaluation batch size. Defaults to 64.
        progress: bool. Show a progress bar (sub-layer sweep). Defaults to True.

    Returns:
        SingleDeletionResult, one entry per unit (`unit_names`).

    Example:
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(2)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> unit_deletion(model, data).names.tolist()
        ['b0', 'b1']
    """
    units = study_units(model, granularity)
    if granularity == "sublayer":
        return single_block_deletion(model, data, batch_size=batch_size, progress=progress)
    x, y = checked_data(model, data, batch_size)
    with lesion_ready(model):
        intact = evaluate(model, x, y, batch_size=batch_size)
        errors = np.array([error_without(model, [unit], x, y, batch_size) for unit in units])
    return SingleDeletionResult(
        names=unit_names(units), errors=errors, intact_error=intact,
        downsampling=np.array([any(b.changes_shape() for b in unit) for unit in units]),
    )


def k_unit_deletion(
    model: keras.Model, data: Data, ks: Sequence[int], samples: int = 10,
    granularity: str = "block", batch_size: int = 256, seed: int = 0, progress: bool = True,
) -> KDeletionResult:
    """Delete `k` random units at once, `samples` times per k (Veit et al. 2016, Fig. 5a).

    At "sublayer" this is `k_block_deletion`; at "block" k attention + MLP
    pairs go together (Gromov et al. 2025 and Sun et al. 2025 delete whole
    layers).

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        ks: sequence of int. Numbers of deleted units.
        samples: int. Random sets per k. Defaults to 10.
        granularity: str. "block" (default) or "sublayer".
        batch_size: int. Defaults to 256.
        seed: int. Seed of the random sets. Defaults to 0.
        progress: bool. Progress bar (sub-layer study). Defaults to True.

    Returns:
        KDeletionResult; `n_blocks` counts units.

    Example:
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(2)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> k_unit_deletion(model, data, [1, 2], samples=2).errors.shape
        (2, 2)
    """
    units = study_units(model, granularity)
    if granularity == "sublayer":
        return k_block_deletion(model, data, ks, samples=samples, batch_size=batch_size, seed=seed,
                                progress=progress)
    x, y = checked_data(model, data, batch_size, samples)
    ks = check_ks(ks, len(units), f"the model has {len(units)} units")
    rng = np.random.default_rng(seed)
    errors = np.empty((len(ks), samples))
    with lesion_ready(model):
        intact = evaluate(model, x, y, batch_size=batch_size)
        for row, k in enumerate(ks):
            for s in range(samples):
                chosen = rng.choice(len(units), size=int(k), replace=False)
                errors[row, s] = error_without(model, [units[i] for i in chosen], x, y,
                                                batch_size)
    return KDeletionResult(ks, errors, errors.mean(1), errors.std(1), intact, len(units))


def block_order(model: keras.Model, units: Sequence[Sequence[Residual]],
                unit_order: Sequence[int], repeats: bool = False) -> list[int]:
    """The order of all `Residual` blocks (for `reorder_blocks`) that runs the units in `unit_order`.

    Veit et al. (2016), Sec. 4.3 reorder blocks; a Transformer unit moves
    its attention and MLP sub-layers together. With `repeats`, a unit may run
    at several positions (all units must then have the same number of
    blocks; Sun et al. 2025's "repeat").

    Example:
        >>> model = keras.Sequential([keras.Input((3, 4))] + [
        ...     Residual(layer, name=f"{kind}{i}") for i in (1, 2) for kind, layer in (
        ...         ("attention", keras.layers.MultiHeadAttention(1, 4)),
        ...         ("mlp", keras.layers.Dense(4)))])
        >>> block_order(model, transformer_units(model), [1, 0])
        [2, 3, 0, 1]
    """
    position = {id(block): i for i, block in enumerate(residual_blocks(model))}
    valid = sorted(unit_order) == list(range(len(units))) or repeats and len(unit_order) == len(
        units) and all(0 <= i < len(units) and len(units[i]) == len(units[0]) for i in unit_order)
    if not valid:
        raise ValueError(
            f"`unit_order` must be a permutation of range({len(units)}) (with `repeats`, "
            f"indices of units of equal size). Received: unit_order={list(unit_order)}"
        )
    return [position[id(block)] for i in unit_order for block in units[i]]


def _order_error(model, units, unit_order, x, y, batch_size, repeats=False) -> float:
    """Error of `model` with its units run in `unit_order` (a rebuilt graph over its layers)."""
    reordered = reorder_blocks(model, block_order(model, units, unit_order, repeats),
                               share_weights=True, repeats=repeats)
    return evaluate(reordered, x, y, batch_size=batch_size, compiled=False)


@dataclasses.dataclass
class ArrangementResult:
    """Error of a network with its units rearranged (Lad et al. 2024; Sun et al. 2025).

    Attributes:
        names: (m,) str. One label per arrangement ("block1<->block2",
            "reverse", ...).
        errors: (m,) float. Error of each arrangement.
        intact_error: float. Error of the network as built.
        granularity: str. "block" or "sublayer".

    Example:
        >>> result = ArrangementResult(np.array(["reverse"]), np.array([0.3]), 0.1, "block")
        >>> float(result.errors[0] - result.intact_error)
        0.19999999999999998
    """

    names: np.ndarray
    errors: np.ndarray
    intact_error: float
    granularity: str


def adjacent_swaps(
    model: keras.Model, data: Data, granularity: str = "block", batch_size: int = 256,
) -> ArrangementResult:
    """Swap each pair of neighbouring units in turn and record the error.

    Lad, Lee, Gurnee, Tegmark, "The Remarkable Robustness of LLMs" (2024, arXiv
    2406.19384): swapping adjacent layers keeps 72-95 % of next-token accuracy, the first
    and last layers most sensitive. Every unit keeps its own call arguments
    (an attention sub-layer its causal mask).

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        granularity: str. "block" (default) or "sublayer".
        batch_size: int. Defaults to 256.

    Returns:
        ArrangementResult with `n - 1` entries named "a<->b".

    Example:
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(2)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> adjacent_swaps(model, data).names.tolist()
        ['b0<->b1']
    """
    units = study_units(model, granularity, at_least=2)
    names = unit_names(units)
    x, y = checked_data(model, data, batch_size)
    labels, errors = [], []
    for i in range(len(units) - 1):
        order = list(range(len(units)))
        order[i], order[i + 1] = i + 1, i
        labels.append(f"{names[i]}<->{names[i + 1]}")
        errors.append(_order_error(model, units, order, x, y, batch_size))
    return ArrangementResult(np.array(labels), np.array(errors),
                             evaluate(model, x, y, batch_size=batch_size), granularity)


def unit_reordering(
    model: keras.Model, data: Data, ks: Sequence[int], samples: int = 5,
    granularity: str = "block", batch_size: int = 256, seed: int = 0, progress: bool = True,
) -> ReorderingResult:
    """Swap `k` random pairs of units; error against Kendall's tau (Veit et al. 2016, Fig. 5b).

    At "sublayer" this is `reordering` (any two sub-layers may swap, an
    attention sub-layer with an MLP); at "block" whole attention + MLP pairs
    swap and Kendall's tau is taken over the block order.

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        ks: sequence of int. Numbers of swapped pairs.
        samples: int. Random orders per k. Defaults to 5.
        granularity: str. "block" (default) or "sublayer".
        batch_size: int. Defaults to 256.
        seed: int. Seed of the swaps. Defaults to 0.
        progress: bool. Progress bar (sub-layer study). Defaults to True.

    Returns:
        ReorderingResult; `orders` are unit orders.

    Example:
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(2)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> unit_reordering(model, data, [1], samples=1).kendall_tau.tolist()
        [[-1.0]]
    """
    units = study_units(model, granularity, at_least=2)
    if granularity == "sublayer":
        return reordering(model, data, ks, samples=samples, batch_size=batch_size, seed=seed,
                          progress=progress)
    x, y = checked_data(model, data, batch_size, samples)
    n, groups = len(units), [list(range(len(units)))]
    ks = check_ks(ks, n * (n - 1) // 2, f"the model has {n * (n - 1) // 2} pairs of units")
    rng = np.random.default_rng(seed)
    taus, errors = np.empty((len(ks), samples)), np.empty((len(ks), samples))
    orders = np.empty((len(ks), samples, n), dtype="int64")
    intact = evaluate(model, x, y, batch_size=batch_size)
    for row, k in enumerate(ks):
        for s in range(samples):
            order = random_swaps(groups, n, int(k), rng)
            orders[row, s], taus[row, s] = order, movable_kendall_tau(order, groups)
            errors[row, s] = intact if order == list(range(n)) else _order_error(
                model, units, order, x, y, batch_size)
    return ReorderingResult(ks, taus, errors, orders, intact, taus.copy())


def _arrangement_error(model, units, middle, arrangement, rng, x, y, batch_size) -> float:
    """Error of `model` with the units at `middle` skipped, reversed, shuffled, repeated or parallel."""
    if arrangement == "skip":
        with lesion_ready(model):
            return error_without(model, [units[i] for i in middle], x, y, batch_size)
    if arrangement == "parallel":
        run = parallel_blocks(model, [units[i] for i in middle], share_weights=True)
        return evaluate(run, x, y, batch_size=batch_size, compiled=False)
    moved = {"reverse": middle[::-1], "repeat": [middle[len(middle) // 2]] * len(middle)}.get(
        arrangement) or rng.permutation(middle).tolist()
    order = list(range(middle[0])) + list(moved) + list(range(middle[-1] + 1, len(units)))
    return _order_error(model, units, order, x, y, batch_size, arrangement == "repeat")


def middle_arrangements(
    model: keras.Model, data: Data, first: int = 1, last: int = 1,
    arrangements: Sequence[str] = ARRANGEMENTS, granularity: str = "block",
    batch_size: int = 256, seed: int = 0,
) -> ArrangementResult:
    """Skip, reverse, shuffle, repeat or parallelize the middle units (Sun et al., AAAI 2025).

    "Transformer Layers as Painters" (AAAI 2025): with the first
    and last layers kept in place, the middle layers of a trained
    Transformer are skipped, run in reverse or random order, replaced by
    the middle-most one run as many times ("repeat"), or run in parallel
    on the same input, `h + mean_i f_i(h)` (`surgery.parallel_blocks`).
    The middle is every unit but the first `first` and the last `last`.

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        first: int. Units kept in front. Defaults to 1.
        last: int. Units kept at the end. Defaults to 1.
        arrangements: sequence of str, from `ARRANGEMENTS`. Defaults to all.
        granularity: str. "block" (default) or "sublayer".
        batch_size: int. Defaults to 256.
        seed: int. Seed of the shuffle. Defaults to 0.

    Returns:
        ArrangementResult, one entry per arrangement.

    Example:
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(4)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> middle_arrangements(model, data).names.tolist()
        ['skip', 'reverse', 'shuffle', 'repeat', 'parallel']
    """
    units = study_units(model, granularity)
    middle = list(range(int(first), len(units) - int(last)))
    if first < 0 or last < 0 or len(middle) < 2:
        raise ValueError(
            f"`first` and `last` must leave at least 2 of the {len(units)} units in the "
            f"middle. Received: first={first}, last={last}"
        )
    unknown = [a for a in arrangements if a not in ARRANGEMENTS]
    if unknown or not arrangements:
        raise ValueError(
            f"`arrangements` must be a non-empty list from {ARRANGEMENTS}. "
            f"Received: arrangements={list(arrangements)}"
        )
    x, y = checked_data(model, data, batch_size)
    rng = np.random.default_rng(seed)
    errors = [_arrangement_error(model, units, middle, a, rng, x, y, batch_size)
              for a in arrangements]
    return ArrangementResult(np.array(list(arrangements)), np.array(errors),
                             evaluate(model, x, y, batch_size=batch_size), granularity)


@dataclasses.dataclass
class PathComparison:
    """Veit et al.'s path statistics of several networks on one axis: path length / n.

    Attributes:
        labels: (m,) str. One per network ("ResNet", "Transformer", ...).
        n_blocks: (m,) int. Residual units n (sub-layers for a Transformer).
        path_range: (m, 2) float. The central 95 % of Binomial(n, 1/2)
            path lengths (Veit et al. 2016, Sec. 5, Fig. 6a), divided by n.
        effective_range: (m, 2) float. The effective paths (Fig. 6c), divided by n.
        effective_share: (m,) float. Share of the gradient they carry.
        decay_per_block: (m,) float. Gradient factor per unit on a path (Fig. 6b).

    Example:
        >>> c = PathComparison(np.array(["a"]), np.array([54]), np.array([[0.37, 0.63]]),
        ...                    np.array([[0.09, 0.31]]), np.array([0.97]), np.array([0.25]))
        >>> c.effective_range[0].tolist()
        [0.09, 0.31]
    """

    labels: np.ndarray
    n_blocks: np.ndarray
    path_range: np.ndarray
    effective_range: np.ndarray
    effective_share: np.ndarray
    decay_per_block: np.ndarray


def compare_effective_paths(results: dict[str, GradientPathResult]) -> PathComparison:
    """Path-length and effective-path ranges of several networks as fractions of their depth.

    Veit et al. (2016), Sec. 5, Fig. 6, for networks of different depths:
    a ResNet's n blocks against a Transformer's 2 * depth sub-layers
    (`gradient_per_path_length` on each). Veit et al.'s ResNet-110 (54
    blocks): effective paths 5-17, 0.09-0.31 of n
    (`keras_residual.experiments.published.VEIT_2016`).

    Args:
        results: dict label -> GradientPathResult.

    Returns:
        PathComparison, in the order of `results`.

    Example:
        >>> r = GradientPathResult(np.array([0, 4]), np.ones((2, 1)), np.array([1.0, 0.1]), 4,
        ...     paths.path_length_distribution(4), np.ones(5), np.ones(5) / 5, np.array([1, 2]))
        >>> compare_effective_paths({"t": r}).effective_range.tolist()
        [[0.25, 0.5]]
    """
    if not results:
        raise ValueError(f"`results` must name at least one result. Received: {results!r}")
    n = np.array([r.n_blocks for r in results.values()])
    path_range = np.array([paths.path_length_interval(int(k)) for k in n], dtype="float64")
    effective = np.array([r.effective_range for r in results.values()], dtype="float64")
    return PathComparison(
        labels=np.array(list(results)), n_blocks=n, path_range=path_range / n[:, None],
        effective_range=effective / n[:, None],
        effective_share=np.array([r.effective_share for r in results.values()]),
        decay_per_block=np.array([r.decay_per_block for r in results.values()]),
    )
