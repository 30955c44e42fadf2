"""The gradient per path length (Veit et al. 2016, Sec. 5, Fig. 6).

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
for a path of length k, k blocks pass gradient only through their branch
and the others only through their shortcut; the norm of the gradient that
reaches the first block is one sample. Here the routing is per sample: a
transform of each block's own description (`Residual.parts`) routes the
branch, the shortcut and any gate a merge computes from the block input
(the gate goes with the branch: it is part of the residual module), so one
backward pass over a batch measures as many paths as it has samples.

`gradient_per_path_length(..., mode="batch")` measures as the paper does
instead: one random path shared by a whole mini-batch, the network in
training mode (BatchNorm with the batch's statistics), the norm of the
gradient of the mini-batch's mean loss as one measurement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from keras_residual import graph
from keras_residual.gradients import (
    input_gradient,
    input_gradient_function,
    traced_input_gradient,
)
from keras_residual.lesion import parallel, paths
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
        mode: str. "sample" (one input per measurement, inference mode) or
            "batch" (one mini-batch gradient per measurement, training
            mode; Veit et al.'s measurement).
        batch_size: int or None. The mini-batch size of a "batch" measurement.
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
    mode: str = "sample"
    batch_size: int | None = None

    @property
    def decay_per_block(self) -> float:
        """exp of the slope of log(mean_norm) against the length: the factor per block (Fig. 6b).

        Fitted over the measured lengths whose mean norm is positive: a
        gradient that underflowed float32 to 0 (a long path through a deep
        trained network) says nothing about the rate.

        Example:
            >>> r = GradientPathResult(np.array([0, 1, 2, 3]), np.ones((4, 1)),
            ...     np.array([1.0, 0.5, 0.25, 0.0]), 3, np.ones(4), np.ones(4), np.ones(4),
            ...     np.array([0, 2]))
            >>> round(r.decay_per_block, 6)
            0.5
        """
        norms = np.asarray(self.mean_norm, dtype="float64")
        fit = np.isfinite(norms) & (norms > 0)
        if fit.sum() < 2:
            return float("nan")
        lengths = np.asarray(self.lengths, dtype="float64")[fit]
        return float(np.exp(np.polyfit(lengths, np.log(norms[fit]), 1)[0]))

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


def routed_block(
    block: Residual, x: Any, keep: Any, training: bool = False, mask: Any = None,
    call_kwargs: dict | None = None,
) -> Any:
    """`block` on `x` as built, its gradient routed per sample by `keep`.

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
        training: bool. Run the block's layers in training mode (BatchNorm
            with batch statistics); stochastic depth never drops here.
            Defaults to False.
        mask: the sequence mask of `x`, for the branch, as `Residual.call` takes it.
        call_kwargs: dict or None. The branch's other call arguments
            (`use_causal_mask`, `attention_mask`, `initial_state`), as the
            block was called with them.

    Returns:
        The block output, equal to `block(x, training=False)` in value
        (with `training=False`).

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
        part, inputs, training=training, mask=mask, route=route, call_kwargs=call_kwargs))


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

    def call(self, x, training=None, mask=None, attention_mask=None, use_causal_mask=None,
             initial_state=None):
        # The block's call arguments, named as Residual.call names them, passed on as it does.
        named = {"attention_mask": attention_mask, "use_causal_mask": use_causal_mask,
                 "initial_state": initial_state}
        call_kwargs = {name: value for name, value in named.items() if value is not None}
        context = self.context
        if self.index == 0 and context.offset is not None:
            x = keras.ops.add(x, keras.ops.cast(context.offset, x.dtype))
        if context.routes is None:
            return self.block(x, training=False, mask=mask, **call_kwargs)
        keep = keras.ops.reshape(context.routes[:, self.index], (-1,) + (1,) * (len(x.shape) - 1))
        return routed_block(self.block, x, keep, training=bool(training), mask=mask,
                            call_kwargs=call_kwargs)

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
        passed = {k: v for k, v in kwargs.items() if k != "training"}
        return _SampleRoutedBlock(layer, index[id(layer)], context)(args[0], **passed)

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
    first_shape = _block_input_shape(model, blocks[0], x)
    return _routed_gradient(
        routed, context, first_shape, x, np.asarray(y), routes, keras.losses.get(loss), at
    )


MODES = ("sample", "batch")


def _batch_gradient_function(routed, context, loss_fn, at: str) -> Callable[..., np.ndarray]:
    """`g(t, x, labels, routes)`: gradient of one mini-batch's mean loss, training mode.

    `t` is the offset at the first block's input (`at="block"`) or the
    inputs themselves. The forward pass runs in a `keras.StatelessScope`,
    so the BatchNorm statistics it computes are not written to the model.
    """

    def fn(t, x, labels, routes):
        context.routes = routes
        context.offset = t if at == "block" else None
        with keras.StatelessScope():
            predictions = routed(x if at == "block" else t, training=True)
        return keras.ops.mean(loss_fn(labels, predictions))

    gradient = input_gradient_function(fn)

    def run(t, x, labels, routes):
        try:
            return gradient(t, x, labels, routes)
        finally:
            context.routes = context.offset = None

    return run


class _RowGradientNorms(keras.layers.Layer):
    """Per-row norms of `_routed_gradient`'s gradients, in a `call` that `predict` can split.

    Takes `[x, labels, routes]`; the gradient is taken inside the call
    (`traced_input_gradient`), so a data-parallel `predict`
    (`keras_residual.lesion.parallel`) measures each device's rows there.
    """

    def __init__(self, routed, context, loss_fn, at: str, first_shape: tuple, **kwargs):
        super().__init__(**kwargs)
        self.routed, self.context, self.loss_fn = routed, context, loss_fn
        self.at, self.first_shape = at, tuple(first_shape)

    def call(self, inputs):
        x, labels, routes = inputs
        context = self.context

        def loss(t):
            if self.at == "block":
                context.offset = t
            return keras.ops.sum(self.loss_fn(labels, self.routed(
                x if self.at == "block" else t, training=False)))

        try:
            context.routes = keras.ops.cast(routes, "float32")
            start = (keras.ops.zeros((keras.ops.shape(x)[0], *self.first_shape))
                     if self.at == "block" else x)
            grad = traced_input_gradient(loss, start)
        finally:
            context.routes = context.offset = None
        grad = keras.ops.reshape(grad, (keras.ops.shape(grad)[0], -1))
        return keras.ops.sqrt(keras.ops.sum(keras.ops.square(grad), axis=1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)


def _distributed_norms(routed, context, first_shape, x, y, routes, loss_fn, at,
                       batch_size) -> np.ndarray:
    """The norms of `_routed_gradient`'s per-sample gradients, by a data-parallel `predict`."""
    inputs = [keras.Input(x.shape[1:]), keras.Input(y.shape[1:], dtype=str(y.dtype)),
              keras.Input(routes.shape[1:])]
    norms = keras.Model(inputs, _RowGradientNorms(routed, context, loss_fn, at, first_shape)(inputs))
    return parallel.predict(norms, [x, y, routes], batch_size).astype("float64")


def _sample_norms(routed, context, first_shape, x, y, steps, loss_fn, at, batch_size,
                  bar) -> np.ndarray:
    """Gradient norm of every drawn `(routes, picks)` step, one per row, in draw order."""
    if parallel.current_split(routed).active:  # every measurement in one split predict
        routes = np.concatenate([routes for routes, _ in steps])
        picks = np.concatenate([picks for _, picks in steps])
        values = _distributed_norms(routed, context, first_shape, x[picks], y[picks], routes,
                                    loss_fn, at, batch_size)
        bar.update(len(picks))
        return values
    values = []
    for routes, picks in steps:
        grad = _routed_gradient(routed, context, first_shape, x[picks], y[picks], routes,
                                loss_fn, at)
        values.append(np.linalg.norm(grad.reshape(len(picks), -1).astype("float64"), axis=1))
        bar.update(len(picks))
    return np.concatenate(values)


def _draw_routes(rng: np.random.Generator, n: int, lengths: np.ndarray) -> np.ndarray:
    """One 0/1 row per entry of `lengths`: that many random blocks pass through the branch."""
    routes = np.zeros((len(lengths), n), dtype="float32")
    for j, length in enumerate(lengths):
        routes[j, rng.choice(n, size=int(length), replace=False)] = 1.0
    return routes


def _block_input_shape(model: keras.Model, block: Residual, x: np.ndarray) -> tuple:
    """`block`'s input shape per sample, read from one input where the graph leaves it open.

    A keras-hub decoder takes sequences of any length: its blocks' input
    shapes are (None, None, d) until data arrive.
    """
    shape = tuple(layer_shape(block, "input")[1:])
    if None not in shape:
        return shape
    from keras_residual.probe import probe

    path = next(p for p in graph.block_paths(model) if graph.resolve_path(model, p) is block)
    return tuple(np.shape(probe(model, [f"{path}/input"]).predict(x[:1], verbose=0))[1:])


def _measure(routed, context, blocks, x, y, lengths, samples, batch_size, loss_fn, at, mode,
             seed, progress, first_shape) -> np.ndarray:
    """(len(lengths), samples) gradient norms, per sample or per mini-batch (`mode`)."""
    n, rng = len(blocks), np.random.default_rng(seed)
    # Every (length, sample) pair once, shuffled so that the lengths mix.
    jobs = np.repeat(np.arange(len(lengths)), samples)
    jobs = jobs[rng.permutation(jobs.size)]
    norms = np.empty((len(lengths), samples))
    filled = np.zeros(len(lengths), dtype=int)
    with tqdm(total=jobs.size, desc="gradient per path length", disable=not progress) as bar:
        if mode == "sample":  # the draws first (in the order one step after another makes them)
            steps = []
            for start in range(0, jobs.size, batch_size):
                routes = _draw_routes(rng, n, lengths[jobs[start : start + batch_size]])
                steps.append((routes, rng.integers(0, len(x), size=len(routes))))
            values = _sample_norms(routed, context, first_shape, x, y, steps, loss_fn, at,
                                   batch_size, bar)
        else:  # one mini-batch, one path: a training step's gradient
            batch_gradient = _batch_gradient_function(routed, context, loss_fn, at)
            values = []
            for row in jobs:
                routes = _draw_routes(rng, n, lengths[[row]])
                picks = rng.choice(len(x), size=batch_size, replace=False)
                t = (np.zeros((batch_size,) + first_shape, "float32") if at == "block"
                     else x[picks])
                grad = batch_gradient(t, x[picks], y[picks], routes)
                values.append(float(np.linalg.norm(np.asarray(grad, dtype="float64"))))
                bar.update()
    for row, value in zip(jobs, values, strict=True):
        norms[row, filled[row]] = value
        filled[row] += 1
    return norms


def _checked_mode(mode: str, mass: float, at: str) -> None:
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if not 0 < mass <= 1:
        raise ValueError(f"`mass` must be in (0, 1]. Received: mass={mass!r}")
    if at not in ("block", "input"):
        raise ValueError(f"`at` must be 'block' or 'input'. Received: at={at!r}")


def gradient_per_path_length(
    model: keras.Model,
    data: Data,
    lengths: Sequence[int] | None = None,
    samples: int = 1000,
    batch_size: int | None = None,
    loss: str | Callable = "sparse_categorical_crossentropy",
    mass: float = paths.EFFECTIVE_MASS,
    seed: int = 0,
    at: str = "block",
    progress: bool = True,
    mode: str = "sample",
) -> GradientPathResult:
    """Gradient norm through single paths of length k (Veit et al. 2016, Sec. 5, Fig. 6b, 6c).

    For a path of length k, k random blocks pass gradient only through
    their branch and the other n - k only through their shortcut, the
    forward pass unchanged; the norm of the gradient arriving at the first
    block's input (`at="block"`, the paper's "first layer"; `at="input"`
    measures at the pixels, through the stem) is one measurement. Two ways
    to take it (`mode`):

    - `"sample"` (default): one training example's loss, the network in
      inference mode; routes are per sample, so one backward pass over
      `batch_size` inputs (default 500) gives that many measurements, each
      with its own random path and length.
    - `"batch"`: as Veit et al. describe it ("we sample 1,000 measurements
      for each length k using random batches from the training set"): one
      random mini-batch of `batch_size` inputs (default 128) and one random
      path per measurement, the network in training mode (BatchNorm with the
      batch's statistics, which are not written back), the norm of the
      gradient of the batch's mean loss. One backward pass per measurement.

    `samples` measurements are taken per length (the paper: 1,000). The
    gradient of a path of each length 0..n (Fig. 6b) is measured at
    `lengths` and interpolated in log space in between (`result.measured`,
    `result.interpolated_lengths`); multiplied by the number of paths of
    each length it gives the gradient share per length (Fig. 6c) and the
    effective-path range with the share it holds.

    Under a distribution (`keras_residual.lesion.parallel`), in `"sample"`
    mode: the routes and inputs are drawn from `seed` alike in every
    process, and the per-sample gradients are taken inside one data-parallel
    prediction (each device differentiates its rows; across JAX processes
    each process its slice, the norms gathered in order), which gives the
    single-device norms within float32 round-off. `"batch"` mode is not
    split: every process computes every mini-batch gradient.

    Args:
        model: keras.Model (Functional or Sequential) with Residual blocks,
            all with a shortcut.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches.
        lengths: sequence of int in [0, n], at least 2, or None for 10
            lengths evenly spread over 0..n. Defaults to None.
        samples: int. Measurements per length. Defaults to 1000.
        batch_size: int or None. Inputs per backward pass ("sample", default
            500) or per mini-batch ("batch", default 128). Defaults to None.
        loss: str or callable `(y_true, y_pred) -> per-sample losses`.
            Defaults to "sparse_categorical_crossentropy".
        mass: float. Fraction of the total gradient the effective range
            holds. Defaults to 0.97 (`paths.effective_path_range`).
        seed: int. Seed of the path and input draws. Defaults to 0.
        at: str. "block" (the first block's input) or "input". Defaults to "block".
        progress: bool. Show a tqdm progress bar. Defaults to True.
        mode: str. "sample" or "batch" (see above). Defaults to "sample".

    Returns:
        GradientPathResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           keras.layers.Softmax()])
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> gradient_per_path_length(model, data, [0, 1], samples=2, batch_size=4,
        ...                          progress=False).norms.shape
        (2, 2)
        >>> gradient_per_path_length(model, data, [0, 1], samples=3, batch_size=2,
        ...                          mode="batch", progress=False).norms.shape
        (2, 3)
    """
    _checked_mode(mode, mass, at)
    if batch_size is None:
        batch_size = 500 if mode == "sample" else 128
    x, y = checked_data(model, data, batch_size, samples)
    if mode == "batch" and batch_size > len(x):
        raise ValueError(f"`batch_size` ({batch_size}) exceeds the {len(x)} inputs of `data`.")
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
    with parallel.distributed(model) as model:  # the routed model under the same strategy
        blocks = residual_blocks(model)
        routed, context = _sample_routed_model(model, blocks)
        norms = _measure(routed, context, blocks, x, y, lengths, samples, batch_size,
                         keras.losses.get(loss), at, mode, seed, progress,
                         _block_input_shape(model, blocks[0], x))
    mean_norm = norms.mean(1)
    distribution = paths.path_length_distribution(n)
    per_path = paths.gradient_per_length(n, lengths, np.maximum(mean_norm, 1e-30))
    total = distribution * per_path
    total = total / total.sum()
    effective = paths.effective_path_range(total, mass)
    return GradientPathResult(
        lengths=lengths, norms=norms, mean_norm=mean_norm, n_blocks=n,
        distribution=distribution, per_path=per_path, total=total,
        effective_range=np.array(effective), measured=np.isin(np.arange(n + 1), lengths),
        effective_share=paths.range_share(total, effective), at=at, mode=mode,
        batch_size=batch_size,
    )
