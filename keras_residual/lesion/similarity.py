"""Deleting the sub-layers a Transformer barely uses, chosen by input/output similarity.

- `contiguous_deletion`: the run of n consecutive units whose input and
  output are closest in angular distance (Gromov et al., "The Unreasonable
  Ineffectiveness of the Deeper Layers", ICLR 2025, Fig. 1).
- `similarity_drop`: the k attention (or MLP) sub-layers whose output is
  most like their input (He et al., "What Matters in Transformers? Not All
  Attention is Needed", 2024, arXiv 2406.15786).

Both read the residual stream with `stream_states` and delete through the
units and gates of `keras_residual.lesion.stream`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from keras_residual import graph
from keras_residual.lesion.evaluation import Data, check_ks, checked_data, evaluate
from keras_residual.lesion.stream import error_without, has_attention, study_units, unit_names
from keras_residual.lesion_state import lesion_ready
from keras_residual.probe import probe


def stream_states(model: keras.Model, x: np.ndarray, granularity: str = "block",
                  batch_size: int = 256) -> list[np.ndarray]:
    """The residual stream before each unit and after the last: `n + 1` arrays.

    The representations Gromov et al. (ICLR 2025, Fig. 1) compare,
    read through `probe` (the first block's input, then each unit's last
    block's output) on the model's own layers.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(2)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> [s.shape for s in stream_states(model, data[0])]
        [(2, 2), (2, 2), (2, 2)]
    """
    units = study_units(model, granularity)
    # Paths, not names: blocks inside a nested model (a converted keras-hub decoder) too.
    path = {id(graph.resolve_path(model, p)): p for p in graph.block_paths(model)}
    names = [f"{path[id(units[0][0])]}/input"] + [path[id(unit[-1])] for unit in units]
    states = probe(model, names).predict(x, batch_size=batch_size, verbose=0)
    return [np.asarray(state) for state in states]


def angular_distances(states: Sequence[np.ndarray], n: int, position: int | None = None
                      ) -> np.ndarray:
    """Angular distance between the stream before unit l and after unit l + n - 1, for every l.

    Gromov et al. (ICLR 2025, Fig. 1): `d(x, y) = arccos(x.y /
    (|x| |y|)) / pi`, averaged over the samples; Gromov et al. take the
    last token (`position=-1`), None averages over every position too.

    Args:
        states: the `n_units + 1` stream states of `stream_states`.
        n: int. Length of the run, 1 <= n <= n_units.
        position: int or None. The sequence position to compare. Defaults to None.

    Returns:
        np.ndarray of shape (n_units - n + 1,).

    Example:
        >>> s = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])]
        >>> angular_distances(s, 1).tolist()
        [0.5, 0.0]
    """
    if int(n) != n or not 1 <= n < len(states):
        raise ValueError(f"`n` must be between 1 and {len(states) - 1}. Received: n={n!r}")

    def flat(state):
        state = np.asarray(state, dtype="float64")
        if position is not None:
            state = state[:, position]
        return state.reshape(-1, state.shape[-1])

    distances = []
    for start in range(len(states) - int(n)):
        a, b = flat(states[start]), flat(states[start + int(n)])
        cosine = (a * b).sum(-1) / np.maximum(
            np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        distances.append(np.mean(np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi))
    return np.array(distances)


@dataclasses.dataclass
class ContiguousDeletionResult:
    """Error after deleting the most similar run of n units (Gromov et al., ICLR 2025).

    Attributes:
        ns: (m,) int. Lengths of the deleted runs.
        starts: (m,) int. First unit of the run chosen for each n.
        distances: (m, n_units) float. Angular distance of the run starting
            at each unit (NaN where no run of that length starts).
        errors: (m,) float. Error with that run deleted.
        intact_error: float.
        names: (n_units,) str. Unit names.

    Example:
        >>> r = ContiguousDeletionResult(np.array([1]), np.array([2]), np.zeros((1, 3)),
        ...                              np.array([0.2]), 0.1, np.array(["a", "b", "c"]))
        >>> str(r.names[r.starts[0]])
        'c'
    """

    ns: np.ndarray
    starts: np.ndarray
    distances: np.ndarray
    errors: np.ndarray
    intact_error: float
    names: np.ndarray


def contiguous_deletion(
    model: keras.Model, data: Data, ns: Sequence[int], granularity: str = "block",
    position: int | None = None, batch_size: int = 256,
) -> ContiguousDeletionResult:
    """Delete the run of n consecutive units whose input and output are most alike.

    Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers"
    (ICLR 2025, Fig. 1): for each n the run `l .. l + n - 1` minimizing the
    angular distance between the stream before it and after it
    (`angular_distances`, measured on `data`) is deleted, and the error
    recorded (without the healing fine-tune of the paper).

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        ns: sequence of int. Run lengths, each in [1, n_units].
        granularity: str. "block" (default) or "sublayer".
        position: int or None. The position compared (-1: the last token,
            as Gromov et al.); None averages over every position.
        batch_size: int. Defaults to 256.

    Returns:
        ContiguousDeletionResult.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(3)] + [
        ...     keras.layers.Softmax()])  # no attention: each block is a unit
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> contiguous_deletion(model, data, [1, 2]).distances.shape
        (2, 3)
    """
    units = study_units(model, granularity)
    x, y = checked_data(model, data, batch_size)
    ns = check_ks(ns, len(units), f"the model has {len(units)} units")
    if np.any(ns < 1):
        raise ValueError(f"`ns` must be at least 1. Received: ns={ns.tolist()}")
    states = stream_states(model, x, granularity, batch_size)
    distances = np.full((len(ns), len(units)), np.nan)
    starts, errors = np.empty(len(ns), dtype="int64"), np.empty(len(ns))
    with lesion_ready(model):
        intact = evaluate(model, x, y, batch_size=batch_size)
        for row, n in enumerate(ns):
            found = angular_distances(states, int(n), position)
            distances[row, : len(found)] = found
            starts[row] = int(np.argmin(found))
            run = units[starts[row]: starts[row] + int(n)]
            errors[row] = error_without(model, run, x, y, batch_size)
    return ContiguousDeletionResult(ns, starts, distances, errors, intact, unit_names(units))


#: Which sub-layers `similarity_drop` may drop.
KINDS = ("attention", "mlp", "any")


@dataclasses.dataclass
class SimilarityDropResult:
    """Error after dropping the k sub-layers most alike in input and output (He et al. 2024).

    Attributes:
        ks: (m,) int. Numbers of dropped sub-layers.
        order: (c,) int. The candidate sub-layers (indices into `names`),
            most alike first: the first k are dropped.
        distances: (n,) float. Angular distance between each sub-layer's
            input and output (NaN for those not of the chosen kind).
        errors: (m,) float. Error with the first k of `order` dropped.
        intact_error: float.
        names: (n,) str. Sub-layer names in network order.

    Example:
        >>> r = SimilarityDropResult(np.array([1]), np.array([2, 0]), np.array([0.3, np.nan, 0.1]),
        ...                          np.array([0.2]), 0.1, np.array(["a1", "m1", "a2"]))
        >>> r.names[r.order[: r.ks[0]]].tolist()
        ['a2']
    """

    ks: np.ndarray
    order: np.ndarray
    distances: np.ndarray
    errors: np.ndarray
    intact_error: float
    names: np.ndarray


def similarity_drop(
    model: keras.Model, data: Data, ks: Sequence[int], kind: str = "attention",
    position: int | None = None, batch_size: int = 256,
) -> SimilarityDropResult:
    """Drop the k attention (or MLP) sub-layers whose output is most like their input.

    He et al., "What Matters in Transformers? Not All Attention is Needed"
    (2024, arXiv 2406.15786): attention and MLP sub-layers are scored by the
    similarity of their input and output and the most redundant ones
    dropped, attention far more safely than MLP. Here the score is the
    angular distance of `angular_distances` with n = 1 (smaller: more
    alike) and the k lowest of `kind` are deleted together.

    Args:
        model: keras.Model built from Residual sub-layers.
        data: (x, y) arrays or a dataset of batches.
        ks: sequence of int. Numbers of sub-layers to drop.
        kind: str. "attention" (default), "mlp" or "any" (`KINDS`).
        position: int or None. The sequence position compared; None: all.
        batch_size: int. Defaults to 256.

    Returns:
        SimilarityDropResult.

    Example:
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,))] + [
        ...     Residual(keras.layers.Dense(2), name=f"b{i}") for i in range(3)] + [
        ...     keras.layers.Softmax()])
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> similarity_drop(model, data, [1, 2], kind="mlp").errors.shape
        (2,)
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    units = study_units(model, "sublayer")
    x, y = checked_data(model, data, batch_size)
    wanted = [i for i, (block,) in enumerate(units)
              if kind == "any" or has_attention(block) == (kind == "attention")]
    ks = check_ks(ks, len(wanted), f"the model has {len(wanted)} sub-layers of kind {kind!r}")
    distances = np.full(len(units), np.nan)
    found = angular_distances(stream_states(model, x, "sublayer", batch_size), 1, position)
    distances[wanted] = found[wanted]
    order = np.array(sorted(wanted, key=lambda i: distances[i]), dtype="int64")
    with lesion_ready(model):
        intact = evaluate(model, x, y, batch_size=batch_size)
        errors = np.array([error_without(model, [units[i] for i in order[:k]], x, y, batch_size)
                           for k in ks])
    return SimilarityDropResult(ks, order, distances, errors, intact, unit_names(units))
