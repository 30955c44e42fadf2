"""The `Residual` wrapper: one residual block around any Keras layer or sub-model.

    y = activation(merge(h(x), F(x)))

with `F` the wrapped layer (the branch), `h` the shortcut and `merge` an
addition by default (He et al., "Deep Residual Learning for Image
Recognition", 2015, Eq. 1 and Fig. 2).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from keras_residual import merges as merges_lib
from keras_residual import shortcuts as shortcuts_lib
from keras_residual.ops import scale_gradient

Shape = Sequence[Any]

GRADIENT_ROUTES = ("both", "branch", "shortcut")
DROP_MODES = ("batch", "sample")
DROP_SCALINGS = ("train", "inference")
SHORTCUT_SOURCES = ("input", "preactivated")

# Rows of the per-block lesion state vector.
_GATE, _ROUTE_BRANCH, _ROUTE_SHORTCUT, _BRANCH_SCALE = 0, 1, 2, 3
_STATE_SIZE = 4
_ROUTE_VALUES = {"both": (1.0, 1.0), "branch": (1.0, 0.0), "shortcut": (0.0, 1.0)}


def _shapes_match(a: Shape, b: Shape) -> bool:
    """Equal rank and equal non-batch dims, with None matching anything."""
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:], strict=True))


def _accepts(layer: layers.Layer, arg: str) -> bool:
    try:
        return arg in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _output_shape(layer: layers.Layer, input_shape: Shape, dtype: str) -> tuple:
    try:
        shape = layer.compute_output_shape(tuple(input_shape))
    except (NotImplementedError, AttributeError, TypeError, ValueError):
        spec = layer.compute_output_spec(keras.KerasTensor(tuple(input_shape), dtype=dtype))
        shape = spec.shape if hasattr(spec, "shape") else spec
    if isinstance(shape, (list, dict)) and not all(isinstance(d, (int, type(None))) for d in shape):
        raise ValueError(
            f"Residual needs a layer with one output tensor; {layer.name!r} "
            f"({type(layer).__name__}) returns several: {shape}. For RNNs, set "
            "return_state=False."
        )
    return tuple(shape)


def make_preactivation(preactivation: str | layers.Layer | None, axis: int) -> layers.Layer | None:
    """The layer for `Residual(preactivation=...)`: None, a layer, or "bn_relu"."""
    if preactivation is None or isinstance(preactivation, layers.Layer):
        return preactivation
    if preactivation == "bn_relu":
        return keras.Sequential(
            [layers.BatchNormalization(axis=axis), layers.ReLU()], name="preact"
        )
    if preactivation == "relu":
        return layers.ReLU(name="preact")
    raise ValueError(
        "`preactivation` must be None, 'bn_relu', 'relu' or a Keras layer. "
        f"Received: preactivation={preactivation!r}"
    )


@keras.saving.register_keras_serializable(package="keras_residual")
class Residual(layers.Wrapper):
    """Wraps a layer `F` into a residual block `y = act(merge(h(x), F(x)))`.

    Any layer or sub-model whose output shape equals its input shape gets an
    identity shortcut (He et al. 2015, Eq. 1); where the shapes differ,
    `shortcut=` bridges them with a 1x1 projection (Eq. 2, option B),
    parameter-free zero-padding (option A) or ResNet-D average-pool
    projection. `merge=` selects addition, multiplication, highway gating or
    the shortcut variants of He et al., "Identity Mappings in Deep Residual
    Networks" (2016), Table 1. One `Residual` instance is one residual block:
    the lesion, path and visualization tools find blocks with
    `isinstance(layer, Residual)`.

    Each block also holds lesion state (Veit et al. 2016) in one
    non-trainable variable, so that changing it takes effect in an already
    compiled `predict`/`evaluate` without retracing:

    - `branch_enabled` (bool): False deletes the branch, `y = h(x)`; a
      projection shortcut is kept, as in Veit et al., Sec. 4.1. With
      `shortcut="none"` (a plain layer), False gives `y = x`.
    - `gradient_route` ("both", "branch" or "shortcut"): the forward value is
      unchanged; the backward pass flows only through the chosen path.
    - `branch_scale` (float, 1.0): a factor on `F(x)` before the merge; the
      effective-path training of Veit et al. (Sec. 5) sets n/m on the m
      blocks it trains, as inverted stochastic depth does.

    Because of this state `count_params()` counts 4 non-trainable scalars per
    block on top of the wrapped layers' weights.

    Args:
        layer: keras.layers.Layer. The branch `F`: any layer or sub-model
            (Dense, Conv1D/2D/3D, DepthwiseConv2D, GRU/LSTM with
            `return_sequences=True`, Bidirectional, LayerNormalization,
            Sequential or functional models, another Residual).
        shortcut: str or keras.layers.Layer. "identity" (default),
            "projection" (1x1 conv / Dense, see `ProjectionShortcut` for
            BatchNormalization), "zero_pad" (option A), "avg_down" (ResNet-D),
            "none" (`y = act(F(x))`, the plain twin), or a layer applied to `x`.
        merge: str, Merge, keras.layers.Layer or callable. "add" (default),
            "multiply", "highway", "exclusive_gating", "shortcut_gating",
            "scaled", "shortcut_dropout", "rezero" (learned branch scale
            initialized to 0: the block starts as the identity), a `Merge`
            instance for non-default options, a Keras merge layer called on
            `[h(x), F(x)]`, or a function `fn(h(x), F(x))`.
        activation: str, callable or None. Applied after the merge; "relu"
            for the original ResNet. Defaults to None.
        preactivation: str, keras.layers.Layer or None. Applied to `x` before
            the split ("bn_relu" or "relu" for the pre-activation units of He
            et al. 2016, Fig. 4e/4d). Defaults to None.
        shortcut_from: str. "input" (default): the shortcut sees `x`;
            "preactivated": it sees the pre-activated `x`, as keras.applications
            ResNetV2 does in its projection blocks.
        drop_rate: float. Stochastic depth (Huang et al. 2016): probability
            of skipping the branch while training. Defaults to 0.0.
        drop_mode: str. "batch" (the whole batch skips the branch together)
            or "sample" (an independent draw per sample). Defaults to "batch".
        drop_scaling: str. "train" (divide the kept branch by the survival
            probability while training; inverted, the default) or
            "inference" (multiply the branch by the survival probability at
            test time, as Huang et al.).
        data_format: str or None. Layout of image inputs for shortcuts and
            gates; None: `keras.config.image_data_format()` for inputs with 2+
            spatial dims, channels-last otherwise.
        seed: int or None. Seed of the stochastic-depth draws; None draws
            one from Python's `random`, which `keras.utils.set_random_seed` seeds.
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((28, 28, 16))
        >>> x = Residual(keras.layers.Conv2D(16, 3, padding="same"), activation="relu")(inputs)
        >>> x = Residual(keras.layers.Conv2D(32, 3, strides=2, padding="same"),
        ...              shortcut="projection")(x)
        >>> tuple(x.shape)
        (None, 14, 14, 32)
    """

    def __init__(
        self,
        layer: layers.Layer,
        shortcut: str | layers.Layer = "identity",
        merge: str | merges_lib.Merge | layers.Layer | Callable = "add",
        activation: str | Callable | None = None,
        preactivation: str | layers.Layer | None = None,
        shortcut_from: str = "input",
        drop_rate: float = 0.0,
        drop_mode: str = "batch",
        drop_scaling: str = "train",
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        if isinstance(shortcut, str) and shortcut not in shortcuts_lib.SHORTCUT_KINDS:
            raise ValueError(
                f"`shortcut` must be one of {shortcuts_lib.SHORTCUT_KINDS} or a Keras "
                f"layer. Received: shortcut={shortcut!r}"
            )
        if shortcut_from not in SHORTCUT_SOURCES:
            raise ValueError(
                f"`shortcut_from` must be one of {SHORTCUT_SOURCES}. "
                f"Received: shortcut_from={shortcut_from!r}"
            )
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ValueError(f"`drop_rate` must be in [0, 1). Received: drop_rate={drop_rate}")
        if drop_mode not in DROP_MODES:
            raise ValueError(f"`drop_mode` must be one of {DROP_MODES}. Received: {drop_mode!r}")
        if drop_scaling not in DROP_SCALINGS:
            raise ValueError(
                f"`drop_scaling` must be one of {DROP_SCALINGS}. Received: {drop_scaling!r}"
            )
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(f"Invalid data_format. Received: data_format={data_format!r}")
        self.shortcut = shortcut
        self.merge = merge
        self.activation = keras.activations.get(activation)
        self.preactivation = preactivation
        self.shortcut_from = shortcut_from
        self.drop_rate = float(drop_rate)
        self.drop_mode = drop_mode
        self.drop_scaling = drop_scaling
        self.data_format = data_format
        self.seed = seed
        self.supports_masking = True
        self.seed_generator = (
            keras.random.SeedGenerator(seed) if self.drop_rate > 0 else None
        )
        self.shortcut_layer = shortcuts_lib.make_shortcut(shortcut)
        self.merge_layer = merges_lib.make_merge(merge)
        self.preactivation_layer = None
        self._branch_accepts_mask = _accepts(layer, "mask")
        self._branch_accepts_training = _accepts(layer, "training")
        self._merge_accepts_training = _accepts(self.merge_layer, "training")
        self._shortcut_accepts_training = (
            self.shortcut_layer is not None and _accepts(self.shortcut_layer, "training")
        )

    # ------------------------------------------------------------------ build

    def _resolved_data_format(self, ndim: int) -> str:
        if self.data_format is not None:
            return self.data_format
        return keras.config.image_data_format() if ndim >= 4 else "channels_last"

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        data_format = self._resolved_data_format(len(input_shape))
        axis = shortcuts_lib.channel_axis(len(input_shape), data_format)
        self.preactivation_layer = make_preactivation(self.preactivation, axis)
        branch_input_shape = input_shape
        if self.preactivation_layer is not None:
            if not self.preactivation_layer.built:
                self.preactivation_layer.build(input_shape)
            branch_input_shape = _output_shape(
                self.preactivation_layer, input_shape, self.compute_dtype
            )
        if not self.layer.built:
            self.layer.build(branch_input_shape)
        branch_shape = _output_shape(self.layer, branch_input_shape, self.compute_dtype)
        self._branch_shape = branch_shape
        self._input_shape = input_shape
        source_shape = branch_input_shape if self.shortcut_from == "preactivated" else input_shape

        if self.shortcut == "identity" and not _shapes_match(source_shape, branch_shape):
            raise ValueError(self._mismatch_message(source_shape, branch_shape))
        if self.shortcut_layer is not None:
            try:
                if isinstance(self.shortcut_layer, shortcuts_lib._InferredShortcut):
                    self.shortcut_layer.adapt(source_shape, branch_shape, data_format)
                if not self.shortcut_layer.built:
                    self.shortcut_layer.build(source_shape)
                shortcut_shape = _output_shape(
                    self.shortcut_layer, source_shape, self.compute_dtype
                )
            except ValueError as error:
                # The shortcut's own error (no integer stride, fewer channels, no
                # spatial dims) does not say which of many blocks failed.
                raise ValueError(
                    f"Residual {self.name!r} cannot bridge its branch "
                    f"{self.layer.name!r} ({type(self.layer).__name__}), which maps "
                    f"{tuple(source_shape)} to {tuple(branch_shape)}, with "
                    f"shortcut={self._shortcut_label()}: {error}"
                ) from error
            if not _shapes_match(shortcut_shape, branch_shape):
                raise ValueError(
                    f"The shortcut layer {self.shortcut_layer.name!r} of Residual "
                    f"{self.name!r} maps {source_shape} to {shortcut_shape}, but the "
                    f"branch {self.layer.name!r} outputs {branch_shape}."
                )
        if self.shortcut != "none":
            if isinstance(self.merge_layer, merges_lib.GatedMerge) and self.merge_layer.data_format is None:
                self.merge_layer.data_format = data_format
            if not self.merge_layer.built:
                self.merge_layer.build(branch_shape, branch_shape, branch_input_shape)
        # Lesion state: [branch gate, gradient scale on the branch, on the
        # shortcut, forward scale on the branch].
        self.lesion_state = self.add_weight(
            name="lesion_state",
            shape=(_STATE_SIZE,),
            initializer="ones",
            trainable=False,
            dtype="float32",
            autocast=False,
        )
        self.built = True

    def _shortcut_label(self) -> str:
        return repr(self.shortcut) if isinstance(self.shortcut, str) else self.shortcut_layer.name

    def _mismatch_message(self, source_shape: Shape, branch_shape: Shape) -> str:
        fixes = ["'projection'", "'avg_down'", "'none'"]
        axis = shortcuts_lib.channel_axis(len(source_shape), self._resolved_data_format(len(source_shape)))
        if (
            len(source_shape) == len(branch_shape)
            and source_shape[axis] is not None
            and branch_shape[axis] is not None
            and branch_shape[axis] >= source_shape[axis]
            and len(source_shape) > 2
        ):
            fixes.insert(1, "'zero_pad'")
        if len(source_shape) <= 2:
            fixes.remove("'avg_down'")
        return (
            f"Residual {self.name!r} cannot add an identity shortcut around layer "
            f"{self.layer.name!r} ({type(self.layer).__name__}): the branch maps input "
            f"shape {tuple(source_shape)} to output shape {tuple(branch_shape)}. Pass "
            f"shortcut={' or '.join(fixes)}, or a Keras layer that maps the input to "
            f"the output shape. Received: shortcut='identity'"
        )

    def compute_output_shape(self, input_shape: Shape) -> tuple:
        if getattr(self, "_branch_shape", None) is not None:
            return tuple(input_shape[:1]) + tuple(self._branch_shape[1:])
        shape = input_shape
        if self.preactivation_layer is not None:
            shape = _output_shape(self.preactivation_layer, shape, self.compute_dtype)
        return _output_shape(self.layer, shape, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        # The mask is per time step; a branch that changes the number of steps
        # (a strided Conv1D with a projection) leaves no mask to pass on.
        if mask is None or getattr(self, "_branch_shape", None) is None:
            return mask
        if len(self._input_shape) >= 3 and self._input_shape[1] != self._branch_shape[1]:
            return None
        return mask

    # ------------------------------------------------------------------- call

    def call(self, inputs, training=None, mask=None):
        x = inputs
        pre = x
        if self.preactivation_layer is not None:
            pre = self.preactivation_layer(x, training=training)
        kwargs = {}
        if self._branch_accepts_training:
            kwargs["training"] = training
        if self._branch_accepts_mask and mask is not None:
            kwargs["mask"] = mask
        f = self.layer(pre, **kwargs)

        state = ops.cast(self.lesion_state, f.dtype)
        f = scale_gradient(f, state[_ROUTE_BRANCH])
        scale = state[_BRANCH_SCALE]
        f = ops.cond(ops.equal(scale, 1.0), lambda: f, lambda: ops.multiply(f, scale))
        keep = state[_GATE]

        if self.shortcut == "none":
            if not _shapes_match(tuple(x.shape), tuple(f.shape)):
                return self.activation(f)
            s = scale_gradient(x, state[_ROUTE_SHORTCUT])
            y = self.activation(f)
        else:
            s = x if self.shortcut_from == "input" else pre
            if self.shortcut_layer is not None:
                s = self._call_shortcut(s, training)
            s = scale_gradient(s, state[_ROUTE_SHORTCUT])
            f, keep = self._stochastic_depth(f, keep, training)
            merge_kwargs = {"training": training} if self._merge_accepts_training else {}
            y = self.activation(self.merge_layer(s, f, pre, **merge_kwargs))
        # keep is 1 for a normal block, 0 where the branch is deleted or dropped.
        s = ops.cast(s, y.dtype)
        if self.drop_rate > 0.0 and self.drop_mode == "sample" and training:
            return ops.where(ops.greater(keep, 0.5), y, s)
        # One decision for the whole batch: a scalar `cond` selects without the
        # broadcasting select of `where`, which costs ~10% of a conv block on TF.
        keep = ops.reshape(keep, ())
        return ops.cond(ops.greater(keep, 0.5), lambda: y, lambda: s)

    def _call_shortcut(self, x, training):
        if self._shortcut_accepts_training:
            return self.shortcut_layer(x, training=training)
        return self.shortcut_layer(x)

    def _stochastic_depth(self, f, keep, training):
        """Huang et al. 2016: drop the branch with probability `drop_rate`."""
        if self.drop_rate == 0.0:
            return f, keep
        survival = 1.0 - self.drop_rate
        if not training:
            if self.drop_scaling == "inference":
                f = ops.multiply(f, ops.cast(survival, f.dtype))
            return f, keep
        if self.drop_mode == "batch":
            shape = (1,) * len(f.shape)
        else:
            shape = (ops.shape(f)[0],) + (1,) * (len(f.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator)
        survived = ops.cast(ops.less(draw, survival), f.dtype)
        if self.drop_scaling == "train":
            f = ops.divide(f, ops.cast(survival, f.dtype))
        return f, ops.multiply(keep, survived)

    # ---------------------------------------------------------- lesion state

    def _state(self):
        """The lesion state as a NumPy copy (all ones before the block is built)."""
        if not self.built:
            return np.ones(_STATE_SIZE, dtype="float32")
        return keras.ops.convert_to_numpy(self.lesion_state.value).copy()

    def _update_state(self, rows: dict[int, float]) -> None:
        """Writes the given rows of the lesion state, keeping the others."""
        if not self.built:
            raise ValueError(
                f"Residual {self.name!r} is not built yet: call it on an input first."
            )
        state = self._state()
        for row, value in rows.items():
            state[row] = value
        self.lesion_state.assign(state)

    @property
    def branch_enabled(self) -> bool:
        """Whether the branch contributes (False: `y = h(x)`; Veit et al. 2016, Sec. 4)."""
        return bool(self._state()[_GATE] > 0.5)

    @branch_enabled.setter
    def branch_enabled(self, enabled: bool) -> None:
        if self.built and self.shortcut == "none" and not enabled and not _shapes_match(
            self._input_shape, self._branch_shape
        ):
            raise ValueError(
                f"Residual {self.name!r} has shortcut='none' and changes the shape "
                f"{self._input_shape} -> {self._branch_shape}: its layer cannot be "
                "replaced by the identity."
            )
        self._update_state({_GATE: 1.0 if enabled else 0.0})

    @property
    def gradient_route(self) -> str:
        """"both", "branch" or "shortcut": where the backward pass flows."""
        state = self._state()
        pair = (float(state[_ROUTE_BRANCH]), float(state[_ROUTE_SHORTCUT]))
        for name, value in _ROUTE_VALUES.items():
            if pair == value:
                return name
        return "both"

    @gradient_route.setter
    def gradient_route(self, route: str) -> None:
        if route not in GRADIENT_ROUTES:
            raise ValueError(
                f"`gradient_route` must be one of {GRADIENT_ROUTES}. Received: {route!r}"
            )
        branch, shortcut = _ROUTE_VALUES[route]
        self._update_state({_ROUTE_BRANCH: branch, _ROUTE_SHORTCUT: shortcut})

    @property
    def branch_scale(self) -> float:
        """Factor on the branch output `F(x)` (1.0: the block as built).

        Effective-path training (Veit et al. 2016, Sec. 5) trains m of n
        blocks per batch with their branches scaled by n/m, so that the sum
        of branch outputs matches the full network used at test time.
        """
        return float(self._state()[_BRANCH_SCALE])

    @branch_scale.setter
    def branch_scale(self, scale: float) -> None:
        self._update_state({_BRANCH_SCALE: float(scale)})

    # --------------------------------------------------------- serialization

    def get_config(self) -> dict:
        config = super().get_config()

        def ser(value):
            if value is None or isinstance(value, str):
                return value
            return keras.saving.serialize_keras_object(value)

        config.update(
            shortcut=ser(self.shortcut),
            merge=ser(self.merge),
            activation=keras.activations.serialize(self.activation),
            preactivation=ser(self.preactivation),
            shortcut_from=self.shortcut_from,
            drop_rate=self.drop_rate,
            drop_mode=self.drop_mode,
            drop_scaling=self.drop_scaling,
            data_format=self.data_format,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Residual:
        config = dict(config)
        for key in ("shortcut", "merge", "preactivation"):
            value = config.get(key)
            if isinstance(value, dict):
                config[key] = keras.saving.deserialize_keras_object(
                    value, custom_objects=custom_objects
                )
        return super().from_config(config, custom_objects=custom_objects)
