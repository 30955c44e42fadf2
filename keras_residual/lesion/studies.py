"""The lesion and gradient studies of Veit et al. (2016), as functions over a model.

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
single-block deletion (Fig. 3, 4), deletion of k random blocks (Fig. 5a),
reordering (Fig. 5b) and the gradient that reaches the input through paths
of each length (Fig. 6b, 6c). Each study takes a seed, shows a progress bar,
leaves the user's model as it found it (lesion state restored in `finally`)
and returns a dataclass of NumPy arrays; `keras_residual.lesion.plots` draws
them.

Speed: `single_block_deletion` runs the network once per batch. A rebuilt
graph over the same layers carries one extra copy of the batch per lesion:
at the i-th unit the intact activations are split off into a new copy that
skips the unit, and every copy then runs the rest of the network. The part
of the network in front of a lesion is computed once, and the whole sweep
is one compiled function, traced once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from scipy import stats
from tqdm import tqdm

from keras_residual.gradients import input_gradient
from keras_residual.lesion import paths
from keras_residual.lesion.surgery import (
    passes_input_when_deleted,
    preserved_lesion_state,
    rebuild_model,
    removable_layers,
    remove_layers,
    reorder_blocks,
    residual_blocks,
    swappable,
)
from keras_residual.residual import Residual, lesion_ready
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


def _checked_data(
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


def _evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, compiled: bool = True
) -> float:
    """Error of `model` on (x, y); `compiled=False` for a model evaluated only once.

    A compiled predict function pays off over many evaluations of the same
    model (its gates change, it is not retraced); a model built for one
    evaluation (a reordering) runs eagerly instead of being traced.
    """
    if compiled:
        return classification_error(model.predict(x, batch_size=batch_size, verbose=0), y)
    outputs = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
        for i in range(0, len(x), batch_size)
    ]
    return classification_error(np.concatenate(outputs), y)


def _deletable(block: Residual) -> bool:
    # A plain layer (shortcut="none") that changes the shape has no identity to fall back to.
    return block.shortcut != "none" or tuple(block.input.shape[1:]) == tuple(
        block.output.shape[1:]
    )


def lesion_units(model: keras.Model) -> list:
    """What single-block deletion deletes: Residual blocks, else removable plain layers.

    Blocks with `shortcut="none"` (plain layers wrapped for the lesion tools,
    as in the plain twins of `keras_residual.models`) count only where their
    input and output shapes match.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
        ...                           keras.layers.Dense(2)])
        >>> [layer.units for layer in lesion_units(model)]
        [4]
    """
    units = [block for block in residual_blocks(model) if _deletable(block)]
    return units if units else removable_layers(model)


def _is_downsampling(unit) -> bool:
    return isinstance(unit, Residual) and not passes_input_when_deleted(unit)


@dataclasses.dataclass
class SingleDeletionResult:
    """Error with each unit deleted in turn (Veit et al. 2016, Fig. 3, 4).

    Attributes:
        names: (n,) str. Block (or plain layer) names in network order.
        errors: (n,) float. Error (1 - accuracy) with that unit deleted.
        intact_error: float. Error of the intact network.
        downsampling: (n,) bool. Units whose deletion keeps a projection.
    """

    names: np.ndarray
    errors: np.ndarray
    intact_error: float
    downsampling: np.ndarray


class _NotAChain(Exception):
    """The units do not form a chain the stacked sweep can follow."""


def _stacked_sweep_model(model: keras.Model, units: list, batch: int) -> tuple[keras.Model, list]:
    """One graph that evaluates the intact model and every single-unit lesion.

    The batch dimension holds `1 + len(units)` copies of a batch of size
    `batch`. At unit i the first copy (the intact activations) is split off:
    a new copy gets what the unit outputs when deleted (its input, or the
    shortcut of a deleted twin for projection blocks) and all earlier copies
    run through the unit. Returns the model and the twins that need weights.
    """
    index = {id(unit): i for i, unit in enumerate(units)}
    seen: list[int] = []
    twins: list[tuple[Residual, Residual]] = []

    def replace(layer, args, kwargs):
        tensors = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        if len({t.shape[0] for t in tensors}) > 1:
            raise _NotAChain(f"layer {layer.name!r} mixes activations of different lesions")
        if id(layer) not in index:
            return None
        if id(layer) in seen or len(args) != 1:
            raise _NotAChain(f"unit {layer.name!r} is shared or takes several inputs")
        seen.append(id(layer))
        x = args[0]
        out = layer(x, **kwargs)
        intact = keras.ops.split(x, [batch], axis=0)[0]
        if passes_input_when_deleted(layer):
            deleted = intact
        else:
            config = dict(layer.get_config(), name=f"{layer.name}_deleted", lesion_ready=True)
            twin = type(layer).from_config(config)
            deleted = twin(intact, **kwargs)
            twins.append((layer, twin))
        return keras.ops.concatenate([out, deleted], axis=0)

    try:
        stacked = rebuild_model(model, replace, batch_size=batch)
    except ValueError as error:  # e.g. a subclassed model: the gated sweep still works
        raise _NotAChain(str(error)) from error
    if len(seen) != len(units) or stacked.outputs[0].shape[0] != batch * (len(units) + 1):
        raise _NotAChain("not every unit lies on the path to the output")
    for block, twin in twins:
        twin.set_weights(block.get_weights())
        twin.branch_enabled = False
    order = [index[i] for i in seen]
    return stacked, order


def _single_deletion_stacked(model, units, x, y, batch_size, progress) -> tuple[float, np.ndarray]:
    # A stacked pass holds about 4 * batch_size rows: 1 + n copies of `batch` images.
    # Small batches keep the growing activations in cache (measured on CPU).
    batch = min(max(1, round(4 * batch_size / (len(units) + 1))), len(x))
    stacked, order = _stacked_sweep_model(model, units, batch)
    pad = -len(x) % batch
    x_padded = np.concatenate([x, x[:pad]]) if pad else x
    outputs = []
    for start in tqdm(range(0, len(x_padded), batch), desc="single-block deletion",
                      disable=not progress):
        outputs.append(keras.ops.convert_to_numpy(
            stacked.predict_on_batch(x_padded[start:start + batch])))
    outputs = np.stack(outputs)  # (batches, (1 + n) * batch, classes)
    outputs = outputs.reshape(outputs.shape[0], len(units) + 1, batch, -1)
    outputs = outputs.transpose(1, 0, 2, 3).reshape(len(units) + 1, len(x_padded), -1)[:, : len(x)]
    errors = np.empty(len(units))
    for copy, unit_index in enumerate(order, start=1):
        errors[unit_index] = classification_error(outputs[copy], y)
    return classification_error(outputs[0], y), errors


def _single_deletion_each(model, units, x, y, batch_size, progress) -> tuple[float, np.ndarray]:
    """One evaluation per lesion: gates for blocks, a rebuilt model for plain layers."""
    intact = _evaluate(model, x, y, batch_size)
    errors = np.empty(len(units))
    for i, unit in enumerate(tqdm(units, desc="single-block deletion", disable=not progress)):
        if isinstance(unit, Residual):
            with preserved_lesion_state([unit]):
                unit.branch_enabled = False
                errors[i] = _evaluate(model, x, y, batch_size)
        else:
            errors[i] = _evaluate(remove_layers(model, [unit]), x, y, batch_size, compiled=False)
    return intact, errors


def single_block_deletion(
    model: keras.Model,
    data: Data,
    batch_size: int = 64,
    method: str = "auto",
    progress: bool = True,
) -> SingleDeletionResult:
    """Delete each residual block in turn and record the error (Veit et al. 2016, Fig. 3, 4).

    A deleted block keeps everything but its branch: it outputs
    `act(merge(h(y_{i-1}), 0))`, which is `y_{i-1}` for an identity block
    without a post-merge activation, and the (projected) shortcut of a
    downsampling block. On a network without `Residual`
    blocks (the plain VGG-style twin) each `removable_layers` layer is
    replaced by the identity instead.

    Args:
        model: keras.Model returning class scores.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches; y holds
            integer labels or one-hot rows.
        batch_size: int. Images per evaluation batch; the stacked sweep
            runs about `4 * batch_size` rows at once (`1 + n` copies of
            `4 * batch_size / (1 + n)` images). Defaults to 64.
        method: str. "stacked" (one compiled pass per batch that reuses the
            intact activations in front of every lesion), "each" (one
            evaluation per lesion, toggling the branch gate) or "auto"
            (stacked where the units form a chain, else each).
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        SingleDeletionResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           keras.layers.Softmax()])
        >>> result = single_block_deletion(model, (np.eye(2), np.array([0, 1])), progress=False)
        >>> result.errors.shape
        (1,)
    """
    if method not in ("auto", "stacked", "each"):
        raise ValueError(
            f"`method` must be 'auto', 'stacked' or 'each'. Received: method={method!r}"
        )
    x, y = _checked_data(model, data, batch_size)
    units = lesion_units(model)
    if not units:
        raise ValueError(
            f"Model {model.name!r} has no Residual blocks and no layer with equal input "
            "and output shape that could be deleted."
        )
    with lesion_ready(model):
        if method == "each":
            intact, errors = _single_deletion_each(model, units, x, y, batch_size, progress)
        else:
            try:
                intact, errors = _single_deletion_stacked(
                    model, units, x, y, batch_size, progress
                )
            except _NotAChain as reason:
                if method == "stacked":
                    raise ValueError(
                        f"The blocks of model {model.name!r} do not form one chain from "
                        f"input to output ({reason}), which the stacked sweep needs; use "
                        "method='each' (or 'auto', which falls back to it). "
                        "Received: method='stacked'"
                    ) from None
                intact, errors = _single_deletion_each(model, units, x, y, batch_size, progress)
    return SingleDeletionResult(
        names=np.array([unit.name for unit in units]),
        errors=errors,
        intact_error=intact,
        downsampling=np.array([_is_downsampling(unit) for unit in units], dtype=bool),
    )


@dataclasses.dataclass
class KDeletionResult:
    """Error after deleting k random blocks (Veit et al. 2016, Fig. 5a).

    Attributes:
        ks: (m,) int. Numbers of deleted blocks.
        errors: (m, samples) float. One error per random set.
        mean: (m,) float. Mean error over the sets.
        std: (m,) float. Standard deviation over the sets.
        intact_error: float. Error of the intact network.
        n_blocks: int. Number of blocks in the network.
    """

    ks: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intact_error: float
    n_blocks: int


def _check_ks(ks: Sequence[int], limit: int, what: str) -> np.ndarray:
    ks = np.asarray(list(ks), dtype="int64")
    if ks.ndim != 1 or ks.size == 0 or np.any(ks < 0) or np.any(ks > limit):
        raise ValueError(
            f"`ks` must be a non-empty list of integers between 0 and {limit} ({what}). "
            f"Received: ks={ks.tolist()}"
        )
    return ks


def k_block_deletion(
    model: keras.Model,
    data: Data,
    ks: Sequence[int],
    samples: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> KDeletionResult:
    """Delete `k` random blocks at once, `samples` times per k (Veit et al. 2016, Fig. 5a).

    Args:
        model: keras.Model with Residual blocks, returning class scores.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches.
        ks: sequence of int. Numbers of blocks to delete.
        samples: int. Random sets per k. Defaults to 10.
        batch_size: int. Evaluation batch size. Defaults to 256.
        seed: int. Seed of the random sets. Defaults to 0.
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        KDeletionResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> result = k_block_deletion(model, (np.eye(2), np.array([0, 1])), [0, 1], samples=2,
        ...                           progress=False)
        >>> result.errors.shape
        (2, 2)
    """
    x, y = _checked_data(model, data, batch_size, samples)
    blocks = [block for block in residual_blocks(model) if _deletable(block)]
    ks = _check_ks(ks, len(blocks), f"the model has {len(blocks)} deletable blocks")
    rng = np.random.default_rng(seed)
    errors = np.empty((len(ks), samples))
    with lesion_ready(model), tqdm(
        total=errors.size, desc="k-block deletion", disable=not progress
    ) as bar:
        intact = _evaluate(model, x, y, batch_size)
        for row, k in enumerate(ks):
            for s in range(samples):
                deleted = set(rng.choice(len(blocks), size=k, replace=False).tolist())
                for i, block in enumerate(blocks):
                    block.branch_enabled = i not in deleted
                errors[row, s] = _evaluate(model, x, y, batch_size)
                bar.update()
    return KDeletionResult(ks, errors, errors.mean(1), errors.std(1), intact, len(blocks))


@dataclasses.dataclass
class ReorderingResult:
    """Error after swapping k random pairs of compatible blocks (Veit et al. 2016, Fig. 5b).

    Attributes:
        ks: (m,) int. Numbers of swapped pairs.
        kendall_tau: (m, samples) float. Kendall's tau between the original
            and the new order of all blocks.
        errors: (m, samples) float. Error of each reordered network.
        orders: (m, samples, n) int. The block order of each network
            (position p ran block `orders[..., p]`).
        intact_error: float. Error of the original order.
    """

    ks: np.ndarray
    kendall_tau: np.ndarray
    errors: np.ndarray
    orders: np.ndarray
    intact_error: float


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
            groups.setdefault(tuple(block.input.shape[1:]), []).append(i)
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
    measured with `scipy.stats.kendalltau`.

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
    x, y = _checked_data(model, data, batch_size, samples)
    n = len(residual_blocks(model))
    groups = compatible_groups(model)
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    ks = _check_ks(ks, pairs, f"numbers of distinct pairs to swap: the model has {pairs} pairs "
                   "of compatible blocks")
    rng = np.random.default_rng(seed)
    taus, errors = np.empty((len(ks), samples)), np.empty((len(ks), samples))
    orders = np.empty((len(ks), samples, n), dtype="int64")
    intact = _evaluate(model, x, y, batch_size)
    with tqdm(total=errors.size, desc="reordering", disable=not progress) as bar:
        for row, k in enumerate(ks):
            for s in range(samples):
                order = random_swaps(groups, n, int(k), rng)
                orders[row, s] = order
                taus[row, s] = stats.kendalltau(np.arange(n), order).statistic
                errors[row, s] = (
                    intact if order == list(range(n))
                    else _evaluate(reorder_blocks(model, order), x, y, batch_size, compiled=False)
                )
                bar.update()
    return ReorderingResult(ks, taus, errors, orders, intact)


@dataclasses.dataclass
class GradientPathResult:
    """Gradient reaching the first block through paths of each length (Veit et al. 2016, Fig. 6).

    Attributes:
        lengths: (m,) int. The measured path lengths k.
        norms: (m, samples) float. Gradient norm of each sampled path, one
            sample (one input, one random path) each.
        mean_norm: (m,) float. Mean over samples (Fig. 6b).
        n_blocks: int. Number of blocks n.
        distribution: (n + 1,) float. Fraction of paths of each length (Fig. 6a).
        per_path: (n + 1,) float. Gradient of one path of each length,
            measured at `lengths` and interpolated in between
            (`paths.gradient_per_length`).
        total: (n + 1,) float. `distribution * per_path` normalized to sum to
            1: the share of the gradient from each path length (Fig. 6c).
        effective_range: (2,) int. Shortest range of lengths holding
            `mass` of `total`: the effective paths.
        measured: (n + 1,) bool. True at the measured lengths, False where
            `per_path` is interpolated or extrapolated.
        effective_share: float. The share of `total` that `effective_range` holds.
        at: str. Where the gradient was measured: "block" (the first
            block's input) or "input" (the model's input).
    """

    lengths: np.ndarray
    norms: np.ndarray
    mean_norm: np.ndarray
    n_blocks: int
    distribution: np.ndarray
    per_path: np.ndarray
    total: np.ndarray
    effective_range: np.ndarray
    measured: np.ndarray | None = None
    effective_share: float = float("nan")
    at: str = "block"

    @property
    def samples_per_length(self) -> int:
        """Number of sampled paths behind each measured length."""
        return int(self.norms.shape[1])

    @property
    def interpolated_lengths(self) -> np.ndarray:
        """The path lengths whose `per_path` value was not measured."""
        measured = np.isin(np.arange(self.n_blocks + 1), self.lengths)
        return np.flatnonzero(~measured)


def _route(x: Any, keep: Any) -> Any:
    """`x` forward; the gradient times `keep` (a per-sample 0/1 mask) backward."""
    keep = keras.ops.cast(keep, x.dtype)
    return keras.ops.add(
        keras.ops.multiply(x, keep), keras.ops.multiply(keras.ops.stop_gradient(x), 1.0 - keep)
    )


class _RouteContext:
    """The per-sample routes (B, n) and the first block's input offset of the current call."""

    def __init__(self) -> None:
        self.routes = None
        self.offset = None


class _SampleRoutedBlock(keras.layers.Layer):
    """Runs `block` as built (inference), gradient routed per sample through branch or shortcut.

    Sample j of the batch passes its gradient through the branch where
    `routes[j, index]` is 1 and through the shortcut where it is 0: the
    per-sample form of `Residual.gradient_route` ("branch" / "shortcut"),
    applied at the same places (after the shortcut layer and after the
    branch, before the merge).
    """

    def __init__(self, block: Residual, index: int, context: _RouteContext, **kwargs):
        super().__init__(name=f"{block.name}_routed", **kwargs)
        self.block, self.index, self.context = block, index, context

    def call(self, x):
        block, context = self.block, self.context
        if self.index == 0 and context.offset is not None:
            x = keras.ops.add(x, keras.ops.cast(context.offset, x.dtype))
        pre = x
        if block.preactivation_layer is not None:
            pre = block.preactivation_layer(x, training=False)
        s = x if block.shortcut_from == "input" else pre
        if block.shortcut_layer is not None:
            s = block._call_shortcut(s, False)
        f = block._scale_for_inference(block._call_branch(pre, False, None), False)
        if context.routes is not None:
            keep = keras.ops.reshape(
                context.routes[:, self.index], (-1,) + (1,) * (len(f.shape) - 1)
            )
            f, s = _route(f, keep), _route(s, 1.0 - keep)
        return block._as_output(block._merge(s, f, pre, False))

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(input_shape)


def _sample_routed_model(model: keras.Model, blocks: list) -> tuple[keras.Model, _RouteContext]:
    """`model` over the same layers, its blocks replaced by `_SampleRoutedBlock`s."""
    for block in blocks:
        if block.shortcut == "none":
            raise ValueError(
                f"Block {block.name!r} has no shortcut (shortcut='none'): a path cannot "
                "skip it, so paths of a given length are not defined. Measure a network "
                "whose blocks all have shortcuts."
            )
        if block.lesion_ready and not block.get_lesion_state().is_default:
            raise ValueError(
                f"Block {block.name!r} is lesioned ({block.get_lesion_state()}); the "
                "gradient per path length is measured on the intact network. Restore it "
                "with `set_lesion_state(LesionState())`."
            )
    context = _RouteContext()
    index = {id(block): i for i, block in enumerate(blocks)}
    replaced: set[int] = set()

    def replace(layer, args, kwargs):
        if id(layer) not in index:
            return None
        replaced.add(id(layer))
        return _SampleRoutedBlock(layer, index[id(layer)], context)(args[0])

    routed = rebuild_model(model, replace)
    if len(replaced) != len(blocks):
        missing = [b.name for b in blocks if id(b) not in replaced]
        raise ValueError(
            f"The blocks {missing} of model {model.name!r} are not called by its graph "
            "directly (nested inside another block's branch?), so their gradient cannot "
            "be routed per sample."
        )
    return routed, context


def _default_lengths(n: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, n, min(n + 1, 10))).astype(int))


def _routed_gradient(routed, context, first_shape, x, y, routes, loss_fn, at) -> np.ndarray:
    """Per-sample gradients of `sum(loss)` at the first block's input or the model input."""
    labels = keras.ops.convert_to_tensor(y)
    try:
        context.routes = keras.ops.convert_to_tensor(np.asarray(routes, dtype="float32"))
        if at == "block":

            def fn(offset):
                context.offset = offset
                return keras.ops.sum(loss_fn(labels, routed(x, training=False)))

            return input_gradient(fn, np.zeros((len(x),) + first_shape, "float32"))
        return input_gradient(
            lambda t: keras.ops.sum(loss_fn(labels, routed(t, training=False))), x
        )
    finally:
        context.routes = context.offset = None


def path_gradients(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    routes: np.ndarray,
    loss: str | Callable = "sparse_categorical_crossentropy",
    at: str = "block",
) -> np.ndarray:
    """Gradient of each sample's loss along its own path, in one backward pass.

    Veit et al. 2016, Sec. 5: sample j passes gradient only through the
    branches of the blocks with `routes[j, i] = 1` and only through the
    shortcuts of the others; the forward pass is the intact network in
    inference mode. Equal, sample by sample, to setting
    `Residual.gradient_route` on every block and differentiating one sample
    at a time (`surgery.routed_gradients`).

    Args:
        model: keras.Model (Functional or Sequential) with Residual blocks.
        x: (B, ...) inputs.
        y: (B,) labels for `loss`.
        routes: (B, n) 0/1 array, n = number of blocks in network order.
        loss: str or callable `(y_true, y_pred) -> per-sample losses`.
            Defaults to "sparse_categorical_crossentropy".
        at: str. "block" (gradient at the first block's input) or "input".
            Defaults to "block".

    Returns:
        np.ndarray: (B, ...) per-sample gradients, shaped like the first
        block's input (`at="block"`) or like `x`.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((1,)), Residual(keras.layers.Dense(
        ...     1, kernel_initializer=keras.initializers.Constant(3.0), use_bias=False))])
        >>> path_gradients(model, np.ones((2, 1)), np.zeros(2), np.array([[0], [1]]),
        ...                loss=lambda y, p: p[:, 0]).ravel().tolist()
        [1.0, 3.0]
    """
    if at not in ("block", "input"):
        raise ValueError(f"`at` must be 'block' or 'input'. Received: at={at!r}")
    blocks = residual_blocks(model)
    routes = np.asarray(routes, dtype="float32")
    x = np.asarray(x, dtype="float32")
    if routes.shape != (len(x), len(blocks)) or not np.isin(routes, (0.0, 1.0)).all():
        raise ValueError(
            f"`routes` must be a 0/1 array of shape (samples, blocks) = {(len(x), len(blocks))}. "
            f"Received: routes.shape={routes.shape}"
        )
    routed, context = _sample_routed_model(model, blocks)
    first_shape = tuple(blocks[0]._input_shape[1:])
    return _routed_gradient(
        routed, context, first_shape, x, np.asarray(y), routes, keras.losses.get(loss), at
    )


def gradient_per_path_length(
    model: keras.Model,
    data: Data,
    lengths: Sequence[int] | None = None,
    samples: int = 1000,
    batch_size: int = 500,
    loss: str | Callable = "sparse_categorical_crossentropy",
    mass: float = paths.EFFECTIVE_MASS,
    seed: int = 0,
    at: str = "block",
    progress: bool = True,
) -> GradientPathResult:
    """Gradient norm through single paths of length k (Veit et al. 2016, Sec. 5, Fig. 6b, 6c).

    As the paper samples it: for a path of length k, k random blocks pass
    gradient only through their branch and the other n - k only through
    their shortcut, the forward pass unchanged; the norm of the gradient
    of one training example's loss arriving at the first block's input
    (`at="block"`, the paper's "first layer"; `at="input"` measures at the
    pixels, through the stem) is one sample. Routes are per sample: one
    backward pass over a batch of B inputs gives B samples, each with its
    own random path and length (the network runs in inference mode, so
    samples do not interact). The paper takes 1,000 samples per length.

    The gradient of a path of each length 0..n (Fig. 6b) is measured at
    `lengths` and interpolated in log space in between (`result.measured`,
    `result.interpolated_lengths`); multiplied by the number of paths of
    each length it gives the gradient share per length (Fig. 6c) and the
    effective-path range with the share it holds.

    Args:
        model: keras.Model (Functional or Sequential) with Residual blocks,
            all with a shortcut.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches; each
            sample draws one input at random.
        lengths: sequence of int in [0, n], at least 2, or None for 10
            lengths evenly spread over 0..n. Defaults to None.
        samples: int. Sampled paths per length. Defaults to 1000.
        batch_size: int. Samples per backward pass. Defaults to 500.
        loss: str or callable `(y_true, y_pred) -> per-sample losses`.
            Defaults to "sparse_categorical_crossentropy".
        mass: float. Fraction of the total gradient the effective range
            holds. Defaults to 0.97 (`paths.effective_path_range`).
        seed: int. Seed of the path and input draws. Defaults to 0.
        at: str. "block" (the first block's input) or "input". Defaults to "block".
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        GradientPathResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           keras.layers.Softmax()])
        >>> result = gradient_per_path_length(model, (np.eye(2), np.array([0, 1])), [0, 1],
        ...                                   samples=2, batch_size=4, progress=False)
        >>> result.norms.shape
        (2, 2)
    """
    if not 0 < mass <= 1:
        raise ValueError(f"`mass` must be in (0, 1]. Received: mass={mass!r}")
    if at not in ("block", "input"):
        raise ValueError(f"`at` must be 'block' or 'input'. Received: at={at!r}")
    x, y = _checked_data(model, data, batch_size, samples)
    blocks = residual_blocks(model)
    n = len(blocks)
    if n == 0:
        raise ValueError(f"Model {model.name!r} has no Residual blocks.")
    lengths = _default_lengths(n) if lengths is None else lengths
    lengths = np.unique(_check_ks(lengths, n, f"the model has {n} blocks"))
    if len(lengths) < 2:
        raise ValueError(
            "At least 2 distinct path lengths are needed to interpolate the others. "
            f"Received: lengths={lengths.tolist()}"
        )
    loss_fn = keras.losses.get(loss)
    routed, context = _sample_routed_model(model, blocks)
    rng = np.random.default_rng(seed)
    # Every (length, sample) pair once, shuffled so that each batch mixes lengths.
    jobs = np.repeat(np.arange(len(lengths)), samples)
    jobs = jobs[rng.permutation(jobs.size)]
    norms = np.empty((len(lengths), samples))
    filled = np.zeros(len(lengths), dtype=int)
    first_shape = tuple(blocks[0]._input_shape[1:])
    with tqdm(total=jobs.size, desc="gradient per path length", disable=not progress) as bar:
        for start in range(0, jobs.size, batch_size):
            rows_of = jobs[start : start + batch_size]
            b = rows_of.size
            routes = np.zeros((b, n), dtype="float32")
            for j, row in enumerate(rows_of):
                routes[j, rng.choice(n, size=int(lengths[row]), replace=False)] = 1.0
            picks = rng.integers(0, len(x), size=b)
            xb, labels = x[picks], y[picks]
            grad = _routed_gradient(routed, context, first_shape, xb, labels, routes, loss_fn, at)
            sample_norms = np.linalg.norm(grad.reshape(b, -1).astype("float64"), axis=1)
            for row, value in zip(rows_of, sample_norms, strict=True):
                norms[row, filled[row]] = value
                filled[row] += 1
            bar.update(b)
    mean_norm = norms.mean(1)
    distribution = paths.path_length_distribution(n)
    per_path = paths.gradient_per_length(n, lengths, np.maximum(mean_norm, 1e-30))
    total = distribution * per_path
    total = total / total.sum()
    effective = paths.effective_path_range(total, mass)
    return GradientPathResult(
        lengths=lengths,
        norms=norms,
        mean_norm=mean_norm,
        n_blocks=n,
        distribution=distribution,
        per_path=per_path,
        total=total,
        effective_range=np.array(effective),
        measured=np.isin(np.arange(n + 1), lengths),
        effective_share=paths.range_share(total, effective),
        at=at,
    )
