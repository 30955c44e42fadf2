"""The `Residual` wrapper: one residual block around any Keras layer or sub-model.

    y = activation(merge(h(x), F(x)))

with `F` the wrapped layer (the branch), `h` the shortcut and `merge` an
addition by default (He et al., "Deep Residual Learning for Image
Recognition", 2015, Eq. 1 and Fig. 2).

A block costs nothing beyond that formula unless it is *lesion-ready*: only
then does it own a lesion-state variable (branch gate, gradient route,
branch scale; Veit et al., "Residual Networks Behave Like Ensembles of
Relatively Shallow Networks", 2016) that compiled functions read as data.
`lesion_ready(model)` switches a whole model into that mode for a study and
back in `finally`; `set_lesion_ready(model)` does it for good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Sequence
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
PREACTIVATIONS = ("bn_relu", "relu")

# Rows of the per-block lesion state vector.
_GATE, _ROUTE_BRANCH, _ROUTE_SHORTCUT, _BRANCH_SCALE = 0, 1, 2, 3
_STATE_SIZE = 4
_ROUTE_VALUES = {"both": (1.0, 1.0), "branch": (1.0, 0.0), "shortcut": (0.0, 1.0)}

# Layers called as `layer(query, value)`: wrapped as self-attention.
_ATTENTION = (layers.MultiHeadAttention, layers.GroupQueryAttention)
# Layers that drop the axes a shortcut would need: no shortcut can bridge them.
_RANK_REDUCING = (
    layers.Flatten,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
)


@dataclasses.dataclass(frozen=True)
class LesionState:
    """The lesion settings of one `Residual` block (Veit et al. 2016, Sec. 4).

    Attributes:
        branch_enabled: bool. False deletes the branch: the block outputs
            `activation(merge(h(x), 0))`. Defaults to True.
        gradient_route: str. "both", "branch" or "shortcut": the forward value
            is unchanged, the backward pass flows only through the chosen
            path (Sec. 4.2, gradient per path length). Defaults to "both".
        branch_scale: float. Factor on `F(x)` before the merge (effective-path
            training, Sec. 5). Defaults to 1.0.

    Example:
        >>> LesionState(branch_enabled=False).is_default
        False
    """

    branch_enabled: bool = True
    gradient_route: str = "both"
    branch_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.gradient_route not in GRADIENT_ROUTES:
            raise ValueError(
                f"`gradient_route` must be one of {GRADIENT_ROUTES}. "
                f"Received: gradient_route={self.gradient_route!r}"
            )
        if not np.isfinite(float(self.branch_scale)):
            raise ValueError(
                f"`branch_scale` must be a finite number. Received: {self.branch_scale!r}"
            )

    @property
    def is_default(self) -> bool:
        """True for the state of an untouched block."""
        return self == LesionState()

    def to_vector(self) -> np.ndarray:
        """The state as the 4-vector a lesion-ready block stores."""
        branch, shortcut = _ROUTE_VALUES[self.gradient_route]
        gate = 1.0 if self.branch_enabled else 0.0
        return np.array([gate, branch, shortcut, float(self.branch_scale)], dtype="float32")

    @classmethod
    def from_vector(cls, vector: Any) -> LesionState:
        """The state stored in a lesion-ready block's variable."""
        vector = np.asarray(vector, dtype="float32")
        pair = (float(vector[_ROUTE_BRANCH]), float(vector[_ROUTE_SHORTCUT]))
        route = next((k for k, v in _ROUTE_VALUES.items() if v == pair), "both")
        return cls(bool(vector[_GATE] > 0.5), route, float(vector[_BRANCH_SCALE]))


@dataclasses.dataclass(frozen=True)
class BlockPart:
    """One part of a residual block, in the order `Residual.call` runs them.

    Attributes:
        role: str. "preactivation", "branch", "shortcut", "merge" or
            "activation" ("merge" with the branch deleted is
            `Merge.without_branch`, which reads no branch value).
        layer: the Keras layer (or activation function) that computes it;
            None for an identity shortcut, which passes its input on.
        inputs: tuple of str. The values it reads, by name: "x" (the block
            input), "preactivated", "shortcut", "branch".
        output: str. The name of the value it produces ("output" at the end).
    """

    role: str
    layer: Any
    inputs: tuple[str, ...]
    output: str


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
    if isinstance(layer, _ATTENTION):
        return tuple(layer.compute_output_shape(tuple(input_shape), tuple(input_shape)))
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
    """The layer for `Residual(preactivation=...)`: None, a layer, "bn_relu" or "relu".

    He et al., "Identity Mappings in Deep Residual Networks" (2016), Fig. 4e
    (BN and ReLU before the weights) and Fig. 4d (ReLU only).

    Example:
        >>> make_preactivation("bn_relu", -1).name
        'preact'
    """
    _check_preactivation(preactivation)
    if preactivation is None or isinstance(preactivation, layers.Layer):
        return preactivation
    if preactivation == "bn_relu":
        return keras.Sequential(
            [layers.BatchNormalization(axis=axis), layers.ReLU()], name="preact"
        )
    return layers.ReLU(name="preact")


def _check_preactivation(preactivation: Any) -> None:
    if preactivation is None or isinstance(preactivation, layers.Layer):
        return
    if preactivation not in PREACTIVATIONS:
        raise ValueError(
            f"`preactivation` must be None, one of {PREACTIVATIONS} or a Keras layer. "
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

    A block computes exactly `activation(merge(h(x), F(x)))` (plus stochastic
    depth when `drop_rate > 0`). The lesion studies of Veit et al. (2016)
    need more: a *lesion-ready* block (`lesion_ready=True`, or the
    `lesion_ready(model)` context) owns one non-trainable 4-scalar variable
    that compiled `predict`/`evaluate`/`fit` functions read as data, so one
    trace serves a whole sweep of lesions:

    - `branch_enabled` (bool): False deletes the branch, `y = act(merge(h(x),
      0))` (`Merge.without_branch`): the residual module goes, the shortcut
      (a projection too), the merge and the activation stay (Veit et al.,
      Sec. 4.1; Huang et al. 2016, Eq. 2). With `shortcut="none"` (a plain
      layer) False gives `y = x`.
    - `gradient_route` ("both", "branch" or "shortcut"): the forward value is
      unchanged; the backward pass flows only through the chosen path.
    - `branch_scale` (float, 1.0): a factor on `F(x)` before the merge; the
      effective-path training of Veit et al. (Sec. 5) sets n/m on the m
      blocks it trains.

    `get_lesion_state()` / `set_lesion_state()` read and write all three at
    once. Setting a non-default value on a block that is not lesion-ready
    raises: a compiled function traced without the state would ignore it.
    Blocks that are not lesion-ready own no weights beyond their layers, so
    `count_params()` of a built ResNet equals keras.applications'.

    Args:
        layer: keras.layers.Layer. The branch `F`: any layer or sub-model
            (Dense, Conv1D/2D/3D, DepthwiseConv2D, GRU/LSTM with
            `return_sequences=True`, Bidirectional, LayerNormalization,
            MultiHeadAttention (as self-attention), Sequential or functional
            models, another Residual).
        shortcut: str or keras.layers.Layer. "identity" (default),
            "projection" (1x1 conv / Dense, see `ProjectionShortcut` for
            BatchNormalization), "zero_pad" (option A), "avg_down" (ResNet-D),
            "none" (`y = act(F(x))`, the plain twin), or a layer applied to `x`.
        merge: str, Merge, keras.layers.Layer or callable. "add" (default),
            "multiply", "highway", "exclusive_gating", "shortcut_gating",
            "scaled", "shortcut_dropout", "rezero" (learned branch scale
            initialized to 0: the block starts as the identity), a `Merge`
            instance for non-default options, a Keras merge layer called on
            `[h(x), F(x)]`, or a function `fn(h(x), F(x))` (a lambda does not
            serialize; register a named function with
            `keras.saving.register_keras_serializable`).
        activation: str, callable or None. Applied after the merge; "relu"
            for the original ResNet. Defaults to None.
        preactivation: str, keras.layers.Layer or None. Applied to `x` before
            the split ("bn_relu" or "relu" for the pre-activation units of He
            et al. 2016, Fig. 4e/4d). Defaults to None.
        shortcut_from: str. "input" (default): the shortcut sees `x`;
            "preactivated": it sees the pre-activated `x`, as keras.applications
            ResNetV2 does in its projection blocks.
        drop_rate: float. Stochastic depth (Huang et al. 2016): probability
            of skipping the branch while training. Needs a shortcut. A branch
            skipped for the whole batch is not computed (TensorFlow,
            PyTorch) or computed with its state updates discarded (JAX,
            where `lax.cond` cannot carry Keras' stateful updates): either
            way its BatchNormalization statistics do not move.
            Defaults to 0.0.
        drop_mode: str. "batch" (the whole batch skips the branch together)
            or "sample" (an independent draw per sample; the branch is
            computed for every sample). Defaults to "batch".
        drop_scaling: str. "train" (divide the kept branch by the survival
            probability while training; inverted, the default) or
            "inference" (multiply the branch by the survival probability at
            test time, as Huang et al.).
        data_format: str or None. Layout of image inputs for shortcuts and
            gates; None: `keras.config.image_data_format()` for inputs with 2+
            spatial dims, channels-last otherwise.
        seed: int or None. Seed of the stochastic-depth draws; None draws
            one from Python's `random`, which `keras.utils.set_random_seed` seeds.
        lesion_ready: bool. Own the lesion-state variable from the start
            (saved and restored with the model). Defaults to False.
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
        lesion_ready: bool = False,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self._validate(shortcut, shortcut_from, drop_rate, drop_mode, drop_scaling, data_format)
        _check_preactivation(preactivation)
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
        for made, given in ((self.shortcut_layer, shortcut), (self.merge_layer, merge)):
            if made is not None and made is not given:  # made here: follow our dtype policy
                made.dtype_policy = self.dtype_policy
        self.preactivation_layer = None
        self.lesion_state = None
        self._lesion_ready = bool(lesion_ready)
        self._add_fast_path = type(self.merge_layer) is merges_lib.AddMerge
        self._is_attention = isinstance(layer, _ATTENTION)
        self._branch_accepts_mask = _accepts(layer, "mask")
        self._branch_accepts_training = _accepts(layer, "training")
        self._merge_accepts_training = _accepts(self.merge_layer, "training")
        self._shortcut_accepts_training = (
            self.shortcut_layer is not None and _accepts(self.shortcut_layer, "training")
        )

    @staticmethod
    def _validate(shortcut, shortcut_from, drop_rate, drop_mode, drop_scaling, data_format):
        if isinstance(shortcut, str):
            valid = shortcut in shortcuts_lib.SHORTCUT_KINDS
        else:
            valid = isinstance(shortcut, layers.Layer)
        if not valid:
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
        if float(drop_rate) > 0.0 and shortcut == "none":
            raise ValueError(
                "Stochastic depth skips a branch and keeps the shortcut, so it needs "
                "one: a plain layer (shortcut='none') has none. Use drop_rate=0.0 or "
                f"a shortcut. Received: drop_rate={drop_rate}, shortcut='none'"
            )
        if drop_mode not in DROP_MODES:
            raise ValueError(f"`drop_mode` must be one of {DROP_MODES}. Received: {drop_mode!r}")
        if drop_scaling not in DROP_SCALINGS:
            raise ValueError(
                f"`drop_scaling` must be one of {DROP_SCALINGS}. Received: {drop_scaling!r}"
            )
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(f"Invalid data_format. Received: data_format={data_format!r}")

    # ------------------------------------------------------------------ build

    def _resolved_data_format(self, ndim: int) -> str:
        if self.data_format is not None:
            return self.data_format
        return keras.config.image_data_format() if ndim >= 4 else "channels_last"

    def _channel_axis(self, ndim: int) -> int:
        return shortcuts_lib.channel_axis(ndim, self._resolved_data_format(ndim))

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        data_format = self._resolved_data_format(len(input_shape))
        self.preactivation_layer = make_preactivation(
            self.preactivation, self._channel_axis(len(input_shape))
        )
        branch_input_shape = input_shape
        if self.preactivation_layer is not None:
            if not self.preactivation_layer.built:
                self.preactivation_layer.build(input_shape)
            branch_input_shape = _output_shape(
                self.preactivation_layer, input_shape, self.compute_dtype
            )
        self._build_branch(branch_input_shape)
        branch_shape = _output_shape(self.layer, branch_input_shape, self.compute_dtype)
        self._input_shape = input_shape
        source_shape = branch_input_shape if self.shortcut_from == "preactivated" else input_shape

        if self.shortcut == "identity" and not _shapes_match(source_shape, branch_shape):
            raise ValueError(self._mismatch_message(source_shape, branch_shape))
        if self.shortcut_layer is not None:
            self._build_shortcut(source_shape, branch_shape, data_format)
        if self.shortcut != "none":
            if isinstance(self.merge_layer, merges_lib.GatedMerge) and self.merge_layer.data_format is None:
                self.merge_layer.data_format = data_format
            if not self.merge_layer.built:
                self.merge_layer.build(branch_shape, branch_shape, branch_input_shape)
        if self._lesion_ready:
            self._create_lesion_state()
        self.built = True

    def _build_branch(self, shape: tuple) -> None:
        if self.layer.built:
            return
        if self._is_attention:  # self-attention: query = value = x
            self.layer.build(shape, shape)
        else:
            self.layer.build(shape)

    def _build_shortcut(self, source_shape: tuple, branch_shape: tuple, data_format: str):
        try:
            if isinstance(self.shortcut_layer, shortcuts_lib._InferredShortcut):
                self.shortcut_layer.adapt(source_shape, branch_shape, data_format)
            if not self.shortcut_layer.built:
                self.shortcut_layer.build(source_shape)
            shortcut_shape = _output_shape(self.shortcut_layer, source_shape, self.compute_dtype)
        except ValueError as error:
            # The shortcut's own error (no integer stride, fewer channels, no
            # spatial dims) does not say which of many blocks failed.
            raise ValueError(
                f"Residual {self.name!r} cannot bridge its branch "
                f"{self.layer.name!r} ({type(self.layer).__name__}), which maps "
                f"{tuple(source_shape)} to {tuple(branch_shape)}, with "
                f"shortcut={self._shortcut_label()}: {error}"
                f"{self._branch_fix(source_shape, branch_shape)}"
            ) from error
        if not _shapes_match(shortcut_shape, branch_shape):
            raise ValueError(
                f"The shortcut layer {self.shortcut_layer.name!r} of Residual "
                f"{self.name!r} maps {source_shape} to {shortcut_shape}, but the "
                f"branch {self.layer.name!r} outputs {branch_shape}."
            )

    def _shortcut_label(self) -> str:
        return repr(self.shortcut) if isinstance(self.shortcut, str) else self.shortcut_layer.name

    # ------------------------------------------------------ mismatch errors

    def _branch_fix(self, source_shape: Shape, branch_shape: Shape) -> str:
        """The change to the branch that removes the mismatch, for common layers."""
        layer = self.layer
        if isinstance(layer, _RANK_REDUCING):
            return (
                f" {type(layer).__name__} drops axes that a shortcut cannot restore, so "
                "it cannot be wrapped: wrap the layers before it and apply it after "
                "the block."
            )
        if len(source_shape) != len(branch_shape) and getattr(layer, "return_sequences", True) is False:
            return (
                f" {type(layer).__name__} returns only its last step: pass "
                "return_sequences=True to keep one output per step."
            )
        padding = getattr(layer, "padding", None)
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if (
            padding == "valid"
            and kernel is not None
            and any(k > 1 for k in np.atleast_1d(kernel))
            and len(source_shape) == len(branch_shape)
        ):
            return (
                f" {type(layer).__name__}(padding='valid') shrinks every spatial size by "
                "kernel_size - 1: pass padding='same' to keep the size."
            )
        return ""

    def _working_shortcuts(self, source_shape: Shape, branch_shape: Shape) -> list[str]:
        """The shortcut kinds that really map `source_shape` to `branch_shape`."""
        data_format = self._resolved_data_format(len(source_shape))
        working = []
        for kind in ("projection", "zero_pad", "avg_down"):
            candidate = shortcuts_lib.make_shortcut(kind)
            try:
                candidate.adapt(source_shape, branch_shape, data_format)
                candidate.build(source_shape)
                out = candidate.compute_output_shape(tuple(source_shape))
            except (ValueError, TypeError):
                continue
            if _shapes_match(out, branch_shape):
                working.append(repr(kind))
        return working

    def _mismatch_message(self, source_shape: Shape, branch_shape: Shape) -> str:
        fix = self._branch_fix(source_shape, branch_shape)
        working = self._working_shortcuts(source_shape, branch_shape)
        text = (
            f"Residual {self.name!r} cannot add an identity shortcut around layer "
            f"{self.layer.name!r} ({type(self.layer).__name__}): the branch maps input "
            f"shape {tuple(source_shape)} to output shape {tuple(branch_shape)}."
        )
        if fix:
            text += fix
        if working:
            text += (
                f" {'Or pass' if fix else 'Pass'} shortcut={' or '.join(working)} to "
                "bridge the shapes"
            )
            text += ", or shortcut='none' for a plain layer."
        elif not fix:
            text += (
                " No shortcut of this library maps one shape to the other: change the "
                "branch, pass a Keras layer that does as `shortcut=`, or shortcut='none'."
            )
        return text + " Received: shortcut='identity'"

    # ----------------------------------------------------------------- shapes

    def _check_input_shape(self, input_shape: Shape) -> None:
        """A built block accepts other sizes, lengths and batches, not other channels."""
        built = getattr(self, "_input_shape", None)
        if built is None:
            return
        shape = tuple(input_shape)
        axis = self._channel_axis(len(built))
        if len(shape) != len(built) or (
            shape[axis] is not None and built[axis] is not None and shape[axis] != built[axis]
        ):
            raise ValueError(
                f"Residual {self.name!r} was built for inputs of shape {built} and is now "
                f"called on shape {shape}. A block can be reused on other spatial sizes, "
                "sequence lengths and batch sizes, but its weights fix the rank and the "
                "number of channels: make a new block for this input."
            )

    def compute_output_shape(self, input_shape: Shape) -> tuple:
        self._check_input_shape(input_shape)
        shape = tuple(input_shape)
        if self.preactivation_layer is not None:
            shape = _output_shape(self.preactivation_layer, shape, self.compute_dtype)
        return _output_shape(self.layer, shape, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        # The mask is per time step; a branch that changes the number of steps
        # (a strided Conv1D with a projection) leaves no mask to pass on.
        if mask is None:
            return None
        shape = tuple(inputs.shape) if inputs is not None else getattr(self, "_input_shape", ())
        if len(shape) >= 3 and self.compute_output_shape(shape)[1] != shape[1]:
            return None
        return mask

    # ------------------------------------------------------------------- call

    def call(self, inputs, training=None, mask=None):
        self._check_input_shape(inputs.shape)
        x = inputs
        pre = x
        if self.preactivation_layer is not None:
            pre = self.preactivation_layer(x, training=training)
        if self.shortcut == "none":
            return self._as_output(self._call_plain(x, pre, training, mask))
        s = x if self.shortcut_from == "input" else pre
        if self.shortcut_layer is not None:
            s = self._call_shortcut(s, training)
        dropping = self.drop_rate > 0.0 and bool(training)
        if not self._lesion_ready and not dropping:
            # The default: exactly act(merge(h(x), F(x))), nothing else traced.
            f = self._scale_for_inference(self._call_branch(pre, training, mask), training)
            return self._as_output(self._merge(s, f, pre, training))

        state = self._lesion_vector() if self._lesion_ready else None
        if state is not None:
            s = scale_gradient(s, state[_ROUTE_SHORTCUT])

        def with_branch():
            f = self._call_branch(pre, training, mask)
            if state is not None:
                f = scale_gradient(f, state[_ROUTE_BRANCH])
                f = ops.multiply(f, ops.cast(state[_BRANCH_SCALE], f.dtype))
            if dropping and self.drop_scaling == "train":
                f = ops.divide(f, ops.cast(1.0 - self.drop_rate, f.dtype))
            return self._as_output(self._merge(s, f, pre, training))

        def without_branch():
            return self._as_output(self._merge_without_branch(s, pre, training))

        keep = ops.greater(state[_GATE], 0.5) if state is not None else None
        if dropping and self.drop_mode == "sample":
            draw = keras.random.uniform(
                (ops.shape(s)[0],) + (1,) * (len(s.shape) - 1), seed=self.seed_generator
            )
            kept = ops.less(draw, 1.0 - self.drop_rate)
            if keep is not None:
                kept = ops.logical_and(kept, keep)
            return ops.where(kept, with_branch(), without_branch())
        if dropping:
            survived = ops.less(keras.random.uniform((), seed=self.seed_generator), 1.0 - self.drop_rate)
            keep = survived if keep is None else ops.logical_and(keep, survived)
        return self._select(keep, with_branch, without_branch, training)

    def _as_output(self, y):
        # A layer returns its compute dtype (Keras' layer contract), also where
        # the wrapped layer runs in another precision.
        if keras.backend.standardize_dtype(y.dtype) != self.compute_dtype:
            return ops.cast(y, self.compute_dtype)
        return y

    def _call_branch(self, pre, training, mask):
        kwargs = {}
        if self._branch_accepts_training:
            kwargs["training"] = training
        if self._is_attention:
            return self.layer(pre, pre, query_mask=mask, value_mask=mask, **kwargs)
        if self._branch_accepts_mask and mask is not None:
            kwargs["mask"] = mask
        return self.layer(pre, **kwargs)

    def _call_shortcut(self, x, training):
        if self._shortcut_accepts_training:
            return self.shortcut_layer(x, training=training)
        return self.shortcut_layer(x)

    def _merge(self, s, f, pre, training):
        if self._add_fast_path:
            y = ops.add(s, f)
        else:
            kwargs = {"training": training} if self._merge_accepts_training else {}
            y = self.merge_layer(s, f, pre, **kwargs)
        return self.activation(y)

    def _merge_without_branch(self, s, pre, training):
        kwargs = {"training": training} if self._merge_accepts_training else {}
        return self.activation(self.merge_layer.without_branch(s, pre, **kwargs))

    def _scale_for_inference(self, f, training):
        """Huang et al. (2016), Sec. 3: at test time the branch is scaled by its survival."""
        if self.drop_rate > 0.0 and self.drop_scaling == "inference" and not training:
            return ops.multiply(f, ops.cast(1.0 - self.drop_rate, f.dtype))
        return f

    def _call_plain(self, x, pre, training, mask):
        f = self._call_branch(pre, training, mask)
        if not self._lesion_ready or not _shapes_match(tuple(x.shape), tuple(f.shape)):
            return self.activation(f)
        state = self._lesion_vector()
        f = scale_gradient(f, state[_ROUTE_BRANCH])
        f = ops.multiply(f, ops.cast(state[_BRANCH_SCALE], f.dtype))
        y = self._as_output(self.activation(f))
        s = self._as_output(scale_gradient(x, state[_ROUTE_SHORTCUT]))
        # A deleted plain layer is the identity (Veit et al. 2016, Fig. 3, VGG).
        return ops.cond(ops.greater(state[_GATE], 0.5), lambda: y, lambda: s)

    def _select(self, keep, with_branch, without_branch, training):
        """`with_branch()` where `keep` else `without_branch()`, computing only one.

        On JAX a `lax.cond` branch cannot update Keras variables (BatchNorm
        statistics, seed states), so in training both are computed and the
        state updates of the discarded one are undone.
        """
        if keras.backend.backend() != "jax" or not training:
            return ops.cond(keep, with_branch, without_branch)
        stateful = [
            v for part in (self.layer, self.merge_layer) for v in part.variables if not v.trainable
        ]
        before = [v.value for v in stateful]
        y_on = with_branch()
        after_on = [v.value for v in stateful]
        for variable, value in zip(stateful, before, strict=True):
            variable.assign(value)
        y_off = without_branch()
        for variable, on, off in zip(stateful, after_on, [v.value for v in stateful], strict=True):
            variable.assign(ops.where(keep, on, off))
        return ops.where(keep, y_on, y_off)

    # ------------------------------------------------------- self-description

    def parts(self, deleted: bool = False) -> list[BlockPart]:
        """The block's parts in call order, each with the values it reads.

        Tools that follow a block's wiring (probes, receptive fields, the
        architecture table, summaries, guided-backprop copies) loop over this
        list instead of re-coding `call`; `wire` runs such a loop. With
        `deleted=True` it describes the block without its branch (Veit et
        al. 2016, Sec. 4.1): the merge's `without_branch` on the shortcut.

        Args:
            deleted: bool. Describe the block with its branch deleted.

        Returns:
            list of BlockPart.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), preactivation="relu", activation="relu")
            >>> [(p.role, p.inputs) for p in block.parts()][:3]
            [('preactivation', ('x',)), ('branch', ('preactivated',)), ('shortcut', ('x',))]
        """
        pre = "preactivated" if self.preactivation is not None else "x"
        found = []
        if self.preactivation is not None:
            layer = self.preactivation_layer or self.preactivation
            found.append(BlockPart("preactivation", layer, ("x",), "preactivated"))
        plain = self.shortcut == "none"
        if not deleted:
            found.append(BlockPart("branch", self.layer, (pre,), "branch"))
        if plain:
            merged = "branch" if not deleted else "x"
        else:
            source = "x" if self.shortcut_from == "input" else pre
            found.append(BlockPart("shortcut", self.shortcut_layer, (source,), "shortcut"))
            reads = ("shortcut", pre) if deleted else ("shortcut", "branch", pre)
            found.append(BlockPart("merge", self.merge_layer, reads, "merged"))
            merged = "merged"
        if plain and deleted:  # a deleted plain layer is the identity
            return found + [BlockPart("activation", None, ("x",), "output")]
        return found + [BlockPart("activation", self.activation, (merged,), "output")]

    def wire(self, x: Any, apply: Callable[[BlockPart, list], Any], deleted: bool = False) -> Any:
        """Run `apply(part, input_values)` over `parts()`, passing values by name.

        `x` and the values can be anything a tool propagates: tensors, shapes,
        receptive fields, multiply-add counts.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), shortcut="projection")
            >>> block.wire("x", lambda part, ins: f"{part.role}({', '.join(ins)})")
            'activation(merge(shortcut(x), branch(x), x))'
        """
        values = {"x": x}
        for part in self.parts(deleted):
            values[part.output] = apply(part, [values[name] for name in part.inputs])
        return values["output"]

    # ---------------------------------------------------------- lesion state

    @property
    def lesion_ready(self) -> bool:
        """Whether this block reads its lesion state (see `set_lesion_ready`)."""
        return self._lesion_ready

    def _lesion_vector(self):
        return self.lesion_state.value

    def _create_lesion_state(self) -> None:
        if self.lesion_state is not None:
            return
        # Keras locks a built layer's state; this is the one place we add a
        # variable after build, the way Keras' own `quantize()` does.
        tracker = self._tracker
        locked = tracker.locked
        tracker.unlock()
        try:
            self.lesion_state = self.add_weight(
                name="lesion_state",
                shape=(_STATE_SIZE,),
                initializer="ones",
                trainable=False,
                dtype="float32",
                autocast=False,
            )
        finally:
            if locked:
                tracker.lock()

    def _set_lesion_ready(self, ready: bool) -> None:
        """Switch the lesion mode; the caller resets compiled functions."""
        ready = bool(ready)
        if ready == self._lesion_ready:
            return
        if ready:
            self._lesion_ready = True
            if self.built:
                self._create_lesion_state()
            return
        if not self.get_lesion_state().is_default:
            raise ValueError(
                f"Residual {self.name!r} is lesioned ({self.get_lesion_state()}); "
                "restore it with `set_lesion_state(LesionState())` before leaving the "
                "lesion-ready mode."
            )
        self._lesion_ready = False
        if self.lesion_state is not None:
            variable, self.lesion_state = self.lesion_state, None
            self._untrack_variable(variable)

    def get_lesion_state(self) -> LesionState:
        """All lesion settings of this block in one `LesionState`.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), lesion_ready=True)
            >>> _ = block(keras.ops.ones((1, 2)))
            >>> block.set_lesion_state(branch_enabled=False)
            >>> block.get_lesion_state()
            LesionState(branch_enabled=False, gradient_route='both', branch_scale=1.0)
        """
        if self.lesion_state is None:
            return LesionState()
        return LesionState.from_vector(keras.ops.convert_to_numpy(self.lesion_state.value))

    def set_lesion_state(self, state: LesionState | None = None, **changes: Any) -> None:
        """Write all lesion settings at once: `state`, then the keyword `changes`.

        Args:
            state: LesionState or None. The full state to write; None keeps the
                current one and applies only `changes`.
            **changes: any of `branch_enabled`, `gradient_route`, `branch_scale`.

        Raises:
            ValueError: for an unknown field, an invalid value, deleting a
                shape-changing plain layer, or a non-default state on a block
                that is not lesion-ready (the message gives the fix).
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(LesionState)}
        if unknown:
            raise ValueError(
                f"Unknown lesion setting(s) {sorted(unknown)}; the settings are "
                f"branch_enabled, gradient_route and branch_scale. Received: {changes}"
            )
        new = dataclasses.replace(state or self.get_lesion_state(), **changes)
        if not new.branch_enabled and self.shortcut == "none" and self.built:
            probe_shape = self.compute_output_shape(self._input_shape)
            if not _shapes_match(self._input_shape, probe_shape):
                raise ValueError(
                    f"Residual {self.name!r} has shortcut='none' and changes the shape "
                    f"{self._input_shape} -> {probe_shape}: its layer cannot be "
                    "replaced by the identity."
                )
        if not self._lesion_ready:
            if new.is_default:
                return
            raise ValueError(
                f"Residual {self.name!r} is not lesion-ready, so compiled functions "
                f"would ignore {new}. Run the study inside "
                "`with keras_residual.lesion_ready(model):` (or call "
                "`keras_residual.set_lesion_ready(model)` once), or build the block "
                "with `Residual(..., lesion_ready=True)`."
            )
        if not self.built:
            raise ValueError(
                f"Residual {self.name!r} is not built yet: call it on an input first."
            )
        self.lesion_state.assign(new.to_vector())

    @property
    def branch_enabled(self) -> bool:
        """Whether the branch contributes (False: `y = act(merge(h(x), 0))`; Veit et al. 2016, Sec. 4)."""
        return self.get_lesion_state().branch_enabled

    @branch_enabled.setter
    def branch_enabled(self, enabled: bool) -> None:
        self.set_lesion_state(branch_enabled=bool(enabled))

    @property
    def gradient_route(self) -> str:
        """"both", "branch" or "shortcut": where the backward pass flows."""
        return self.get_lesion_state().gradient_route

    @gradient_route.setter
    def gradient_route(self, route: str) -> None:
        self.set_lesion_state(gradient_route=route)

    @property
    def branch_scale(self) -> float:
        """Factor on the branch output `F(x)` (1.0: the block as built).

        Effective-path training (Veit et al. 2016, Sec. 5) trains m of n
        blocks per batch with their branches scaled by n/m, so that the sum
        of branch outputs matches the full network used at test time.
        """
        return self.get_lesion_state().branch_scale

    @branch_scale.setter
    def branch_scale(self, scale: float) -> None:
        self.set_lesion_state(branch_scale=float(scale))

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
            lesion_ready=self._lesion_ready,
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


# ------------------------------------------------------------ model-level tools


def _children(layer: layers.Layer) -> list:
    if isinstance(layer, Residual):
        return [layer.preactivation_layer, layer.layer, layer.shortcut_layer, layer.merge_layer]
    if isinstance(layer, layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, layers.Wrapper):
        return [layer.layer]
    return list(getattr(layer, "layers", None) or ())


def residual_layers(model: layers.Layer) -> list[Residual]:
    """Every `Residual` in `model`, nested ones (inside branches, sub-models) included.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), Residual(Residual(keras.layers.Dense(2)))])
        >>> len(residual_layers(model))
        2
    """
    found: list[Residual] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if layer is None or id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, Residual):
            found.append(layer)
        stack.extend(reversed(_children(layer)))
    return found


def reset_compiled_functions(model: keras.Model) -> None:
    """Drop `model`'s traced train / test / predict functions so the next call retraces.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> reset_compiled_functions(model)
        >>> model.predict_function is None
        True
    """
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def set_lesion_ready(model: layers.Layer, ready: bool = True) -> list[Residual]:
    """Make every `Residual` in `model` lesion-ready (or plain again), for good.

    A lesion-ready block reads a 4-scalar state variable (branch gate,
    gradient route, branch scale; Veit et al. 2016) in its traced graph, so
    compiled functions follow `branch_enabled` / `gradient_route` /
    `branch_scale` changes without retracing. The model's compiled functions
    are reset, the variable is saved with the model. `ready=False` needs
    every block back at its default state.

    Args:
        model: keras.Model (or a single Residual).
        ready: bool. Defaults to True.

    Returns:
        The blocks, in the order `residual_layers` lists them.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> block = set_lesion_ready(model)[0]
        >>> block.branch_enabled = False
        >>> model.predict(keras.ops.ones((1, 2)), verbose=0).tolist()
        [[1.0, 1.0]]
    """
    blocks = residual_layers(model)
    for block in blocks:
        block._set_lesion_ready(ready)
    if isinstance(model, keras.Model):
        reset_compiled_functions(model)
    return blocks


@contextlib.contextmanager
def lesion_ready(model: layers.Layer) -> Iterator[list[Residual]]:
    """Lesion-ready blocks inside the `with` body; state and mode restored in `finally`.

    The lesion studies (Veit et al. 2016, Sec. 4-5) run inside this context:
    it switches every `Residual` of `model` to the lesion-ready mode (the
    model retraces once), and on exit restores each block's lesion state and
    mode, resetting compiled functions again where the mode changed.

    Args:
        model: keras.Model holding the blocks (or a single Residual).

    Yields:
        The blocks, in the order `residual_layers` lists them.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2))])
        >>> with lesion_ready(model) as blocks:
        ...     blocks[0].branch_enabled = False
        ...     out = model.predict(np.ones((1, 2)), verbose=0)
        >>> out.tolist(), blocks[0].lesion_ready
        ([[1.0, 1.0]], False)
    """
    blocks = residual_layers(model)
    saved = [(block.lesion_ready, block.get_lesion_state()) for block in blocks]
    changed = [block for block, (was, _) in zip(blocks, saved, strict=True) if not was]
    for block in changed:
        block._set_lesion_ready(True)
    if changed and isinstance(model, keras.Model):
        reset_compiled_functions(model)
    try:
        yield blocks
    finally:
        for block, (was, state) in zip(blocks, saved, strict=True):
            block.set_lesion_state(state)
            if not was:
                block._set_lesion_ready(False)
        if changed and isinstance(model, keras.Model):
            reset_compiled_functions(model)
