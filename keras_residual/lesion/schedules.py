"""Training schedules over a network's residual blocks.

- Stochastic depth with linearly decaying survival (Huang et al., "Deep
  Networks with Stochastic Depth", 2016, Eq. 4), which Veit et al. (2016,
  Sec. 6, Fig. 8) compare against normal training under block deletion.
- Effective-path training (Veit et al. 2016, Sec. 5): exactly `m` of the
  `n` blocks are active in each mini-batch, so the paths seen in training
  are about `m / 2` blocks long.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_residual import graph
from keras_residual.blocks import linear_decay_drop_rates  # noqa: F401  (re-exported)
from keras_residual.lesion import paths
from keras_residual.lesion.batchnorm import precise_batchnorm
from keras_residual.lesion.deletion import SingleDeletionResult, single_block_deletion
from keras_residual.lesion.evaluation import Data, as_arrays, classification_error
from keras_residual.lesion.gradient_paths import GradientPathResult
from keras_residual.lesion_state import LesionState, lesion_ready
from keras_residual.residual import Residual
from keras_residual.surgery import residual_blocks


def with_stochastic_depth(
    model: keras.Model, final_survival: float = 0.5, drop_mode: str = "batch"
) -> keras.Model:
    """A copy of `model` (same weights) whose blocks use linearly decaying stochastic depth.

    `Residual.drop_rate` is fixed when a block is built, so the copy is
    made from the model's config with each block's `drop_rate` set
    (`linear_decay_drop_rates`, network order).

    Args:
        model: keras.Model. A Functional or Sequential model with Residual blocks.
        final_survival: float. Survival probability of the last block. Defaults to 0.5.
        drop_mode: str. "batch" or "sample" (see `Residual`). Defaults to "batch".

    Returns:
        A new, uncompiled keras.Model.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> [b.drop_rate for b in residual_blocks(with_stochastic_depth(model))]
        [0.25, 0.5]
    """
    blocks = residual_blocks(model)
    if not blocks:
        raise ValueError(f"Model {model.name!r} has no Residual blocks.")
    plain = [block.name for block in blocks if not block.has_shortcut]
    if plain:
        raise ValueError(
            f"Stochastic depth drops a block's branch and passes its shortcut on (Huang et al. "
            f"2016, Eq. 2), but {len(plain)} of the {len(blocks)} blocks of {model.name!r} have "
            f"no shortcut (shortcut='none', a plain network): {plain[:5]}"
            f"{' ...' if len(plain) > 5 else ''}. Dropping one would cut the network. Use the "
            "residual twin, or give those blocks a shortcut."
        )
    drop_rates = linear_decay_drop_rates(len(blocks), final_survival)
    rates = {id(block): rate for block, rate in zip(blocks, drop_rates, strict=True)}

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) in rates:
            config.update(drop_rate=float(rates[id(layer)]), drop_mode=drop_mode)
        return layer.__class__.from_config(config)

    return graph.clone(
        model, clone_function=clone_layer,
        instead="build it with `Residual(..., drop_rate=...)` instead.",
    )


def _sync_state(model: keras.Model) -> None:
    """Make variable assignments between training steps visible to the next step.

    The JAX trainer carries the model state from step to step outside the
    variables and writes it back only at the end of an epoch; syncing it
    makes the next step read the variables again.
    """
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _enable_sub_network(blocks: Sequence[Residual], saved: Sequence[LesionState],
                        enabled: np.ndarray, rescale: bool) -> None:
    """The sub-network of effective-path training: branches where `enabled`, scaled n / m."""
    active = int(np.sum(enabled))
    scale = len(blocks) / active if rescale and active else 1.0
    for block, state, on in zip(blocks, saved, enabled, strict=True):
        block.set_lesion_state(
            state,
            branch_enabled=bool(on) and state.branch_enabled,
            branch_scale=state.branch_scale * (scale if on else 1.0),
        )


class EffectivePathTraining(keras.callbacks.Callback):
    """Train with exactly `active` of the `n` blocks enabled in each mini-batch.

    Veit et al. 2016, Sec. 5: sampling 23 of 54 blocks per batch centres the
    paths seen in training at 11.5 blocks, the effective paths, and trains as
    well as the full network. The other blocks' branch gates are off for
    that batch (`Residual.branch_enabled`), which a compiled train step reads
    as data on every backend: a gated-off branch is not computed (TensorFlow,
    PyTorch) or its state updates are undone (JAX), so its BatchNorm
    statistics do not move. Gates and scales are restored for validation and
    after training. With `steps_per_execution > 1` one draw covers a whole
    execution.

    `active="auto"` chooses m from a measured gradient per path length
    (`path_gradient`, Fig. 6c): twice the mean length of the
    gradient-weighted path distribution, so that the training paths,
    Binomial(m, 1/2), are centred on the effective paths
    (`paths.effective_training_blocks`).

    Scaling: the paper does not say how the m trained branches are scaled.
    `rescale=True` (default) multiplies each enabled branch by n / m, the
    inverted scaling of stochastic depth (Huang et al. 2016) for blocks that
    survive with probability m / n: on an additive trunk (pre-activation
    blocks, no activation after the merge) the sum of branch outputs then
    has the full network's mean. Its variance is about n / m times larger,
    so the moving BatchNorm statistics, averaged over sub-networks, do not
    fit the full test network: run `precise_batchnorm` on training batches
    after training and before evaluating. `rescale=False` trains the sampled
    sub-networks unscaled (the branches then add up to m / n of the full
    network's sum in training).

    Args:
        active: int or "auto". Number of blocks enabled per batch,
            0 <= active <= n.
        seed: int or None. Seed of the draws. Defaults to None.
        rescale: bool. Scale the enabled branches by n / active. Defaults to True.
        path_gradient: GradientPathResult, a sequence of gradient shares per
            path length 0..n, or None. Needed for `active="auto"`.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 2)), verbose=0,
        ...               callbacks=[EffectivePathTraining(active=1, seed=0)])
        >>> [b.branch_enabled for b in residual_blocks(model)]
        [True, True]
    """

    def __init__(
        self,
        active: int | str,
        seed: int | None = None,
        rescale: bool = True,
        path_gradient: GradientPathResult | Sequence[float] | None = None,
    ):
        super().__init__()
        if active == "auto":
            if path_gradient is None:
                raise ValueError(
                    "active='auto' chooses the number of blocks from a measured gradient "
                    "per path length: pass path_gradient=gradient_per_path_length(...) "
                    "(or its `total`). Received: path_gradient=None"
                )
            weights = getattr(path_gradient, "total", path_gradient)
            active = paths.effective_training_blocks(weights)
            self._expected_blocks = len(weights) - 1
        else:
            self._expected_blocks = None
        if isinstance(active, bool) or int(active) != active or active < 0:
            raise ValueError(
                f"`active` must be a non-negative integer. Received: {active!r}. Or pass "
                "active='auto' with path_gradient= to choose it from a measured gradient."
            )
        self.active = int(active)
        self.seed = seed
        self.rescale = bool(rescale)
        self._rng = np.random.default_rng(seed)
        self._blocks: list[Residual] = []
        self._saved: list[LesionState] = []
        self._lesion_mode = contextlib.ExitStack()
        self.history: list[np.ndarray] = []

    def on_train_begin(self, logs=None):
        self._blocks = residual_blocks(self.model)
        if self._expected_blocks is not None and self._expected_blocks != len(self._blocks):
            raise ValueError(
                f"`path_gradient` describes a network of {self._expected_blocks} blocks, "
                f"the model has {len(self._blocks)}: measure it on the same architecture."
            )
        if self.active > len(self._blocks):
            raise ValueError(
                f"Cannot enable {self.active} blocks per batch: the model has "
                f"{len(self._blocks)} Residual blocks. Received: active={self.active}"
            )
        # The gates are data only inside `lesion_ready(model)`, held until
        # `on_train_end`; where it switched blocks on, retrace the train step
        # that `fit` made before calling us.
        retrace = not all(b.lesion_ready for b in graph.blocks(self.model, nested=True))
        self._lesion_mode.enter_context(lesion_ready(self.model))
        if retrace:
            self.model.make_train_function(force=True)
        self._saved = [b.get_lesion_state() for b in self._blocks]

    def _assign(self, enabled: np.ndarray) -> None:
        _sync_state(self.model)
        _enable_sub_network(self._blocks, self._saved, enabled, self.rescale)

    def on_train_batch_begin(self, batch, logs=None):
        enabled = np.zeros(len(self._blocks), dtype=bool)
        enabled[self._rng.choice(len(self._blocks), size=self.active, replace=False)] = True
        self.history.append(enabled)
        self._assign(enabled)

    def _restore(self) -> None:
        if self._blocks:
            _sync_state(self.model)
            for block, state in zip(self._blocks, self._saved, strict=True):
                block.set_lesion_state(state)

    def on_test_begin(self, logs=None):
        self._restore()

    def on_epoch_end(self, epoch, logs=None):
        self._restore()

    def on_train_end(self, logs=None):
        self._restore()
        self._lesion_mode.close()  # restores every block's mode and state


@dataclasses.dataclass
class ResilienceResult:
    """Single-block deletion of a normally trained and a stochastic-depth net (Fig. 8).

    Attributes:
        normal: SingleDeletionResult of the normally trained network.
        stochastic_depth: SingleDeletionResult of the stochastic-depth network.
        final_survival: float. Survival probability of the last block.

    Example:
        `stochastic_depth_resilience` returns one; by hand:

        >>> import numpy as np
        >>> from keras_residual.lesion import ResilienceResult, SingleDeletionResult
        >>> names, down = np.array(["b1", "b2"]), np.array([True, False])
        >>> result = ResilienceResult(
        ...     normal=SingleDeletionResult(names, np.array([0.6, 0.1]), 0.08, down),
        ...     stochastic_depth=SingleDeletionResult(names, np.array([0.3, 0.1]), 0.09, down),
        ...     final_survival=0.5)
        >>> float(result.normal.errors[0] - result.stochastic_depth.errors[0])
        0.3
    """

    normal: SingleDeletionResult
    stochastic_depth: SingleDeletionResult
    final_survival: float


def stochastic_depth_resilience(
    build_model: Callable[[float], keras.Model],
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: Data,
    epochs: int = 1,
    batch_size: int = 64,
    final_survival: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    precise_bn_batches: int = 50,
) -> ResilienceResult:
    """Train a network normally and with stochastic depth, then delete each block.

    Veit et al. 2016, Sec. 6, Fig. 8: stochastic depth improves resilience
    to single-block deletion only slightly, mostly at the downsampling
    blocks.

    Args:
        build_model: callable. `build_model(final_survival)` returns a compiled
            model whose blocks get `linear_decay_drop_rates(n, final_survival)`
            (1.0: no stochastic depth).
        train_data: (x, y) arrays to train on.
        test_data: (x, y) arrays or a tf.data.Dataset to evaluate the lesions on.
        epochs: int. Training epochs of each network. Defaults to 1.
        batch_size: int. Training batch size. Defaults to 64.
        final_survival: float. Survival probability of the last block. Defaults to 0.5.
        seed: int. Seed of both trainings. Defaults to 0.
        progress: bool. Show progress bars. Defaults to True.
        precise_bn_batches: int. Training batches over which every
            BatchNorm layer's statistics are recomputed for the full network
            after training (`precise_batchnorm`), both networks alike; 0
            keeps the moving averages. Defaults to 50.

    Returns:
        ResilienceResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> def build(survival):
        ...     rates = linear_decay_drop_rates(2, survival)
        ...     model = keras.Sequential([keras.Input((2,))] + [
        ...         Residual(keras.layers.Dense(2), drop_rate=r) for r in rates
        ...     ] + [keras.layers.Softmax()])
        ...     model.compile("sgd", "sparse_categorical_crossentropy")
        ...     return model
        >>> data = (np.eye(2), np.array([0, 1]))
        >>> result = stochastic_depth_resilience(build, data, data, progress=False)
        >>> result.stochastic_depth.errors.shape
        (2,)
    """
    results = []
    for survival in (1.0, final_survival):
        keras.utils.set_random_seed(seed)
        model = build_model(survival)
        model.fit(*train_data, epochs=epochs, batch_size=batch_size, verbose=int(progress))
        if precise_bn_batches:
            precise_batchnorm(model, train_data[0], batches=precise_bn_batches,
                              batch_size=batch_size, seed=seed)
        results.append(single_block_deletion(model, test_data, progress=progress))
    return ResilienceResult(results[0], results[1], final_survival)


def subnetwork_error(
    model: keras.Model,
    data: Data,
    active: int,
    rescale: bool = True,
    draws: int = 5,
    seed: int = 0,
    batch_size: int = 500,
) -> np.ndarray:
    """Test error of random `active`-block sub-networks, as effective-path training runs them.

    Veit et al. 2016, Sec. 5 train each mini-batch on a random sub-network
    of m blocks; this evaluates such sub-networks: each draw enables
    `active` random blocks (scaled by n / active with `rescale`, as
    `EffectivePathTraining` trains them), deletes the others, and measures
    the error with the BatchNorm statistics the model holds (after
    effective-path training: the moving averages over the sub-networks it
    trained). The model is restored afterwards.

    Args:
        model: keras.Model with Residual blocks.
        data: (x, y) arrays or a tf.data.Dataset.
        active: int. Blocks per sub-network, 0 <= active <= n.
        rescale: bool. Scale the enabled branches by n / active. Defaults to True.
        draws: int. Random sub-networks. Defaults to 5.
        seed: int. Seed of the draws. Defaults to 0.
        batch_size: int. Prediction batch size. Defaults to 500.

    Returns:
        np.ndarray of shape (draws,): the error of each sub-network.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(
        ...     2, kernel_initializer="identity")), keras.layers.Softmax()])
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0])
        >>> subnetwork_error(model, (x, y), active=1, draws=2).tolist()
        [0.5, 0.5]
    """
    x, y = as_arrays(data)
    rng = np.random.default_rng(seed)
    errors = []
    with lesion_ready(model):
        blocks = residual_blocks(model)
        if not 0 <= active <= len(blocks):
            raise ValueError(f"`active` must be in [0, {len(blocks)}]. Received: {active!r}")
        saved = [block.get_lesion_state() for block in blocks]
        for _ in range(draws):
            enabled = np.zeros(len(blocks), dtype=bool)
            enabled[rng.choice(len(blocks), size=active, replace=False)] = True
            _enable_sub_network(blocks, saved, enabled, rescale)
            errors.append(classification_error(
                model.predict(x, batch_size=batch_size, verbose=0), y))
    return np.array(errors)
