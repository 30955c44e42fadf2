"""The gradient per path length (Veit et al. 2016, Sec. 5, Fig. 6).

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
for a path of length k, k blocks pass gradient only through their branch
and the others only through their shortcut; the norm of the gradient that
reaches the first block is one sample. Here the routing is per sample: a
transform of each block's own description (`Residual.parts`) routes the
branch, the shortcut and any gate a merge computes from the block input
(the gate goes with the branch: it is part of the residual module), so one
backward pass over a batch measures as many paths as it has samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from keras_residual import graph
from keras_residual.gradients import input_gradient
from keras_residual.lesion import paths
from keras_residual.lesion.evaluation import Data, check_ks, checked_data
from keras_residual.residual import Residual
from keras_residual.surgery import residual_blocks
from keras_residual.surgery.select import layer_shape


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


def routed_block(block: Residual, x: Any, keep: Any) -> Any:
    """`block` on `x` as built (inference), its gradient routed per sample by `keep`.

    The block's description run with per-sample routes
    (`Residual.passed_on(..., route=...)`, where the block says which values
    a route applies to): sample j passes its gradient through the branch
    where `keep[j]` is 1 and through the shortcut where it is 0. A merge that
    reads the block input (a highway or gated merge, `Merge.reads_inputs`)
    has that input routed with the branch, so no
    gradient reaches `x` through a third, unrouted path: with
    `y = (1 - g(x)) h(x) + g(x) F(x)` the shortcut path carries
    `(1 - g) h'` and the branch path `g F' + g' (F - h)`, and the two sum to
    the full derivative. The per-sample form of `Residual.gradient_route`.

    Args:
        block: Residual. Intact (default lesion state).
        x: tensor. The block input, shape (B, ...).
        keep: tensor broadcastable against the block output, 1 for the branch.

    Returns:
        The block output, equal to `block(x, training=False)` in value.

    Example:
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(2), merge="highway")
        >>> x = keras.ops.ones((3, 2))
        >>> y = routed_block(block, x, keras.ops.ones((3, 1)))
        >>> bool(keras.ops.all(keras.ops.abs(y - block(x)) < 1e-6))
        True
    """

    route = (lambda value: _route(value, keep), lambda value: _route(value, 1.0 - keep))
    return block.wire(x, lambda part, inputs: block.passed_on(
        part, inputs, training=False, route=route))


class _RouteContext:
    """The per-sample routes (B, n) and the first block's input offset of the current call."""

    def __init__(self) -> None:
        self.routes = None
        self.offset = None


class _SampleRoutedBlock(keras.layers.Layer):
    """Runs `routed_block(block, ...)` with the routes of the current call."""

    def __init__(self, block: Residual, index: int, context: _RouteContext, **kwargs):
        super().__init__(name=f"{block.name}_routed", **kwargs)
        self.block, self.index, self.context = block, index, context

    def call(self, x):
        context = self.context
        if self.index == 0 and context.offset is not None:
            x = keras.ops.add(x, keras.ops.cast(context.offset, x.dtype))
        if context.routes is None:
            return self.block(x, training=False)
        keep = keras.ops.reshape(context.routes[:, self.index], (-1,) + (1,) * (len(x.shape) - 1))
        return routed_block(self.block, x, keep)

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(input_shape)


def _sample_routed_model(model: keras.Model, blocks: list) -> tuple[keras.Model, _RouteContext]:
    """`model` over the same layers, its blocks replaced by `_SampleRoutedBlock`s."""
    for block in blocks:
        if not block.has_shortcut:
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

    routed = graph.rebuild(model, replace)
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
    first_shape = layer_shape(blocks[0], "input")[1:]
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
    x, y = checked_data(model, data, batch_size, samples)
    blocks = residual_blocks(model)
    n = len(blocks)
    if n == 0:
        raise ValueError(f"Model {model.name!r} has no Residual blocks.")
    lengths = _default_lengths(n) if lengths is None else lengths
    lengths = np.unique(check_ks(lengths, n, f"the model has {n} blocks"))
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
    first_shape = layer_shape(blocks[0], "input")[1:]
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
