"""The `Residual` wrapper: one residual block around any Keras layer or sub-model.

    y = activation(merge(h(x), F(x)))

with `F` the wrapped layer (the branch), `h` the shortcut and `merge` an
addition by default (He et al., "Deep Residual Learning for Image
Recognition", 2015, Eq. 1 and Fig. 2).

A block describes itself once: `Residual.parts()` lists its parts in call
order with the values each reads, `Residual.run_part()` runs one of them,
and `call` itself is a loop over that description. Every tool that follows
a block's wiring (probes, receptive fields, summaries, weight conversion,
guided backprop, surgery, per-sample path routing) loops over the same
description instead of reading sub-layers by attribute.

A block costs nothing beyond that formula unless it is *lesion-ready*
(`keras_residual.lesion_state`): only then does it own a lesion-state
variable (branch gate, gradient route, branch scale; Veit et al.,
"Residual Networks Behave Like Ensembles of Relatively Shallow Networks",
2016) that compiled functions read as data.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import layers, ops

from keras_residual import merges as merges_lib
from keras_residual import shortcuts as shortcuts_lib
from keras_residual.lesion_state import (
    BRANCH_SCALE,
    GATE,
    ROUTE_BRANCH,
    ROUTE_SHORTCUT,
    LesionState,
    StateSlot,
)
from keras_residual.ops import scale_gradient

Shape = Sequence[Any]

DROP_MODES = ("batch", "sample")
DROP_SCALINGS = ("train", "inference")
SHORTCUT_SOURCES = ("input", "preactivated")
PREACTIVATIONS = ("bn_relu", "relu")
#: The roles of a block's parts, in call order; also the path keywords of `probe`.
ROLES = ("preactivation", "branch", "shortcut", "merge", "activation")

# Layers called as `layer(query, value)`: wrapped as self-attention.
_ATTENTION = (layers.MultiHeadAttention, layers.GroupQueryAttention)


@dataclasses.dataclass(frozen=True)
class BlockPart:
    """One part of a residual block, in the order `Residual.call` runs them.

    Attributes:
        role: str. "preactivation", "branch", "shortcut", "merge" or
            "activation". A "merge" that does not read "branch" is the merge
            of a deleted block, `Merge.without_branch` (Veit et al. 2016,
            Sec. 4.1).
        layer: the Keras layer (or activation function) that computes it;
            None where the part passes its one input on (an identity
            shortcut, the output of a deleted plain layer).
        inputs: tuple of str. The values it reads, by name: "x" (the block
            input), "preactivated", "shortcut", "branch". A merge lists the
            block input (its third argument) only when it reads it
            (`Merge.reads_inputs`, a gate).
        output: str. The name of the value it produces ("output" at the end).

    Example:
        >>> BlockPart("shortcut", None, ("x",), "shortcut").passes_input
        True
    """

    role: str
    layer: Any
    inputs: tuple[str, ...]
    output: str

    @property
    def passes_input(self) -> bool:
        """True where the part computes nothing and passes its one input on."""
        return self.layer is None

    @property
    def without_branch(self) -> bool:
        """True for the merge of a deleted block (it reads no "branch" value)."""
        return self.role == "merge" and "branch" not in self.inputs


def _accepts(layer: layers.Layer, arg: str) -> bool:
    try:
        return arg in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


# Branch call arguments the block sets itself: self-attention's query, value
# and masks come from `x` and its mask, and the block needs one output tensor.
_SET_BY_BLOCK = ("training", "mask", "query", "value", "key", "query_mask", "value_mask",
                 "return_attention_scores")


def branch_call_arguments(layer: layers.Layer) -> tuple[str, ...] | None:
    """The call arguments a `Residual` passes on to `layer`; None where it takes any.

    The keyword arguments of `layer.call` after its input, except those the
    block sets itself (`training`, `mask`; self-attention's `query`, `value`,
    `key`, `query_mask`, `value_mask` and `return_attention_scores`). None
    where `call` takes `**kwargs`.

    Example:
        >>> branch_call_arguments(keras.layers.GRU(2, return_sequences=True))
        ('initial_state',)
        >>> branch_call_arguments(keras.layers.MultiHeadAttention(2, 4))
        ('attention_mask', 'key_mask', 'use_causal_mask')
    """
    parameters = list(inspect.signature(layer.call).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(sorted(
        p.name for p in parameters[1:]
        if p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name not in _SET_BY_BLOCK
    ))


def output_shape(layer: layers.Layer, input_shape: Shape, dtype: str = "float32") -> tuple:
    """The output shape of `layer` on `input_shape`, from its shape or spec inference.

    Self-attention layers are asked with `query = value = x`, as a block calls them.

    Example:
        >>> output_shape(keras.layers.Dense(3), (None, 5))
        (None, 3)
    """
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


def make_preactivation(
    preactivation: str | layers.Layer | None, axis: int, prefix: str | None = None
) -> layers.Layer | None:
    """The layer for `Residual(preactivation=...)`: None, a layer, "bn_relu" or "relu".

    He et al., "Identity Mappings in Deep Residual Networks" (2016), Fig. 4e
    (BN and ReLU before the weights) and Fig. 4d (ReLU only). With `prefix`
    (a block passes its name) the layers made from a string are named
    `{prefix}_preact_bn` and `{prefix}_preact_relu`, so a copy of the block
    made from its config has the same weight paths.

    Example:
        >>> [l.name for l in make_preactivation("bn_relu", -1, prefix="b1").layers]
        ['b1_preact_bn', 'b1_preact_relu']
    """
    _check_preactivation(preactivation)
    if preactivation is None or isinstance(preactivation, layers.Layer):
        return preactivation
    bn, relu = (f"{prefix}_preact_{kind}" if prefix else None for kind in ("bn", "relu"))
    if preactivation == "bn_relu":
        return keras.Sequential(
            [layers.BatchNormalization(axis=axis, name=bn), layers.ReLU(name=relu)], name="preact"
        )
    return layers.ReLU(name=relu or "preact")


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
            `[h(x), F(x)]`, or a function `fn(h(x), F(x))` (a function
            registered with `keras.saving.register_keras_serializable` is
            saved by name; a lambda is saved as bytecode and loads only with
            `safe_mode=False`, from a file you trust).
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

    Call arguments:
        inputs: the block input `x`.
        training, mask: passed on to the parts whose `call` takes them.
        **kwargs: passed on to the branch where its `call` takes them
            (`branch_call_arguments`): `attention_mask` and `use_causal_mask`
            for `MultiHeadAttention`, `initial_state` for an RNN. Any other
            raises a ValueError that lists the ones the branch takes.

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
        self._state_slot = StateSlot(name=f"{self.name}_lesion")
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

    @property
    def has_shortcut(self) -> bool:
        """False for a plain layer (`shortcut="none"`): `y = act(F(x))`."""
        return not (isinstance(self.shortcut, str) and self.shortcut == "none")

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        data_format = self._resolved_data_format(len(input_shape))
        self.preactivation_layer = make_preactivation(
            self.preactivation, self._channel_axis(len(input_shape)), prefix=self.name
        )
        branch_input_shape = input_shape
        if self.preactivation_layer is not None:
            if not self.preactivation_layer.built:
                self.preactivation_layer.build(input_shape)
            branch_input_shape = output_shape(
                self.preactivation_layer, input_shape, self.compute_dtype
            )
        self._build_branch(branch_input_shape)
        branch_shape = output_shape(self.layer, branch_input_shape, self.compute_dtype)
        self._input_shape = input_shape
        source_shape = branch_input_shape if self.shortcut_from == "preactivated" else input_shape

        if self.shortcut == "identity" and not shortcuts_lib.shapes_match(source_shape, branch_shape):
            raise ValueError(shortcuts_lib.identity_mismatch_message(
                self.name, self.layer, source_shape, branch_shape, data_format
            ))
        if self.shortcut_layer is not None:
            self._build_shortcut(source_shape, branch_shape, data_format)
        if self.has_shortcut:
            if getattr(self.merge_layer, "data_format", data_format) is None:
                self.merge_layer.data_format = data_format  # merges follow the block's layout
            if not self.merge_layer.built:
                self.merge_layer.build(branch_shape, branch_shape, branch_input_shape)
        if self._lesion_ready:
            self._state_slot.fill(self.name)
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
            shortcut_shape = output_shape(self.shortcut_layer, source_shape, self.compute_dtype)
        except ValueError as error:
            # The shortcut's own error (no integer stride, fewer channels, no
            # spatial dims) does not say which of many blocks failed.
            label = repr(self.shortcut) if isinstance(self.shortcut, str) else self.shortcut_layer.name
            raise ValueError(
                f"Residual {self.name!r} cannot bridge its branch "
                f"{self.layer.name!r} ({type(self.layer).__name__}), which maps "
                f"{tuple(source_shape)} to {tuple(branch_shape)}, with "
                f"shortcut={label}: {error}"
                f"{shortcuts_lib.branch_fix(self.layer, source_shape, branch_shape)}"
            ) from error
        if not shortcuts_lib.shapes_match(shortcut_shape, branch_shape):
            raise ValueError(
                f"The shortcut layer {self.shortcut_layer.name!r} of Residual "
                f"{self.name!r} maps {source_shape} to {shortcut_shape}, but the "
                f"branch {self.layer.name!r} outputs {branch_shape}."
            )

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
            shape = output_shape(self.preactivation_layer, shape, self.compute_dtype)
        return output_shape(self.layer, shape, self.compute_dtype)

    def changes_shape(self) -> bool:
        """Whether the block's output shape differs from its input shape (a downsampling block).

        The blocks whose deletion keeps a shape-changing shortcut (Veit et al.
        2016, Fig. 3: "downsampling" blocks).

        Example:
            >>> block = Residual(keras.layers.Dense(3), shortcut="projection")
            >>> _ = block(keras.ops.ones((1, 2)))
            >>> block.changes_shape()
            True
        """
        if not self.built:
            raise ValueError(f"Residual {self.name!r} is not built yet: call it on an input first.")
        out = self.compute_output_shape(self._input_shape)
        return tuple(out[1:]) != tuple(self._input_shape[1:])

    @property
    def deletable(self) -> bool:
        """Whether deleting the branch leaves a network: False only for a shape-changing plain layer.

        A block with a shortcut outputs `act(merge.without_branch(h(x)))` without its
        branch; a plain layer (`shortcut="none"`) becomes the identity, which
        exists only where its output shape equals its input shape (Veit et al.
        2016, Fig. 3, the VGG comparison).

        Example:
            >>> block = Residual(keras.layers.Dense(3), shortcut="none")
            >>> _ = block(keras.ops.ones((1, 2)))
            >>> block.deletable
            False
        """
        return self.has_shortcut or not self.changes_shape()

    def compute_mask(self, inputs, mask=None):
        # The mask is per time step; a branch that changes the number of steps
        # (a strided Conv1D with a projection) leaves no mask to pass on.
        if mask is None:
            return None
        shape = tuple(inputs.shape) if inputs is not None else getattr(self, "_input_shape", ())
        if len(shape) >= 3 and self.compute_output_shape(shape)[1] != shape[1]:
            return None
        return mask

    # ------------------------------------------------------- self-description

    def parts(self, deleted: bool = False) -> list[BlockPart]:
        """The block's parts in call order, each with the values it reads.

        This is the one encoding of the block's wiring: `call` runs it, and
        tools that follow a block (probes, receptive fields, the
        architecture table, summaries, guided-backprop copies, surgery,
        per-sample path routing) loop over it with `run_part` or `wire`.
        With `deleted=True` it describes the block without its branch (Veit
        et al. 2016, Sec. 4.1): the merge's `without_branch` on the shortcut;
        a deleted plain layer (`shortcut="none"`) passes its input on.

        Args:
            deleted: bool. Describe the block with its branch deleted.

        Returns:
            list of BlockPart.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), preactivation="relu", activation="relu")
            >>> [(p.role, p.inputs) for p in block.parts()]  # doctest: +NORMALIZE_WHITESPACE
            [('preactivation', ('x',)), ('branch', ('preactivated',)), ('shortcut', ('x',)),
             ('merge', ('shortcut', 'branch')), ('activation', ('merged',))]
        """
        pre = "preactivated" if self.preactivation is not None else "x"
        found = []
        if self.preactivation is not None:
            layer = self.preactivation_layer or self.preactivation
            found.append(BlockPart("preactivation", layer, ("x",), "preactivated"))
        if not deleted:
            found.append(BlockPart("branch", self.layer, (pre,), "branch"))
        if not self.has_shortcut:
            if deleted:  # a deleted plain layer is the identity (Veit et al. 2016, Fig. 3, VGG)
                return found + [BlockPart("shortcut", None, ("x",), "shortcut"),
                                BlockPart("activation", None, ("shortcut",), "output")]
            return found + [BlockPart("activation", self.activation, ("branch",), "output")]
        source = "x" if self.shortcut_from == "input" else pre
        found.append(BlockPart("shortcut", self.shortcut_layer, (source,), "shortcut"))
        gate = (pre,) if self.merge_layer.reads_inputs else ()
        reads = ("shortcut",) if deleted else ("shortcut", "branch")
        found.append(BlockPart("merge", self.merge_layer, reads + gate, "merged"))
        return found + [BlockPart("activation", self.activation, ("merged",), "output")]

    def part(self, role: str) -> BlockPart | None:
        """The part of the intact block with this role, or None where it has none.

        Example:
            >>> Residual(keras.layers.Dense(2)).part("preactivation") is None
            True
        """
        if role not in ROLES:
            raise ValueError(f"`role` must be one of {ROLES}. Received: role={role!r}")
        return next((p for p in self.parts() if p.role == role), None)

    def run_part(
        self, part: BlockPart, inputs: Sequence[Any], training: bool | None = None,
        mask: Any = None, call_kwargs: dict | None = None,
    ) -> Any:
        """Run one part of `parts()` on its input values, exactly as `call` does.

        Args:
            part: BlockPart. One of `self.parts()` or `self.parts(deleted=True)`.
            inputs: the values `part.inputs` names, in that order: tensors
                (eager or symbolic).
            training: bool or None. Passed to parts that take it.
            mask: the sequence mask of the block input, for the branch.
            call_kwargs: dict or None. Further call arguments of the branch
                (`branch_call_arguments`), e.g. `{"use_causal_mask": True}`.

        Returns:
            The part's output tensor.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), shortcut="projection")
            >>> x = keras.ops.ones((1, 3))
            >>> _ = block(x)
            >>> y = block.wire(x, block.run_part)
            >>> bool(keras.ops.all(y == block(x)))
            True
        """
        if part.passes_input:
            return self._as_output(inputs[0]) if part.role == "activation" else inputs[0]
        if part.role == "preactivation":
            return part.layer(inputs[0], training=training)
        if part.role == "branch":
            return self._call_branch(inputs[0], training, mask, call_kwargs)
        if part.role == "shortcut":
            kwargs = {"training": training} if self._shortcut_accepts_training else {}
            return part.layer(inputs[0], **kwargs)
        if part.role == "merge":
            return self._run_merge(part, inputs, training)
        return self._as_output(part.layer(inputs[0]))

    def _run_merge(self, part: BlockPart, inputs: Sequence[Any], training: bool | None) -> Any:
        kwargs = {"training": training} if self._merge_accepts_training else {}
        gate_input = inputs[-1] if self.merge_layer.reads_inputs else None
        if part.without_branch:
            return part.layer.without_branch(inputs[0], gate_input, **kwargs)
        if self._add_fast_path:
            return ops.add(inputs[0], inputs[1])
        return part.layer(inputs[0], inputs[1], gate_input, **kwargs)

    def wire(
        self, x: Any, apply: Callable[[BlockPart, list], Any], deleted: bool = False,
        values: dict | None = None,
    ) -> Any:
        """Run `apply(part, input_values)` over `parts()`, passing values by name.

        `x` and the values can be anything a tool propagates: tensors, shapes,
        receptive fields, multiply-add counts. `values` may hold outputs
        already computed (by name); those parts are not applied again.

        Example:
            >>> import keras
            >>> block = Residual(keras.layers.Dense(2), shortcut="projection")
            >>> block.wire("x", lambda part, ins: f"{part.role}({', '.join(ins)})")
            'activation(merge(shortcut(x), branch(x)))'
        """
        values = {"x": x, **(values or {})}
        for part in self.parts(deleted):
            if part.output not in values:
                values[part.output] = apply(part, [values[name] for name in part.inputs])
        return values["output"]

    # ------------------------------------------------------------------- call

    def call(self, inputs, training=None, mask=None, attention_mask=None, use_causal_mask=None,
             initial_state=None, **kwargs):
        # The branch arguments of Keras' attention layers and RNNs are named
        # here, not left to **kwargs: Keras binds each named argument on its
        # own, while one **kwargs dict may not mix tensors and flags.
        named = {"attention_mask": attention_mask, "use_causal_mask": use_causal_mask,
                 "initial_state": initial_state}
        kwargs = {**{n: v for n, v in named.items() if v is not None}, **kwargs}
        self._check_input_shape(inputs.shape)
        self._check_call_kwargs(kwargs)
        dropping = self.drop_rate > 0.0 and bool(training)
        if not self._lesion_ready and not dropping:
            # The default: exactly act(merge(h(x), F(x))), nothing else traced.
            return self.wire(inputs, functools.partial(
                self._passed_on, state=None, training=training, mask=mask, dropping=False,
                call_kwargs=kwargs))
        state = self._state_slot.variable.value if self._lesion_ready else None
        run = functools.partial(
            self._passed_on, state=state, training=training, mask=mask, dropping=dropping,
            call_kwargs=kwargs)
        shared = {"x": inputs}
        for part in self.parts():  # computed once, read by both alternatives
            if part.role in ("preactivation", "shortcut"):
                shared[part.output] = run(part, [shared[n] for n in part.inputs])

        def with_branch():
            return self.wire(inputs, run, values=shared)

        def without_branch():
            return self.wire(inputs, run, deleted=True, values=shared)

        if not self.deletable:
            return with_branch()
        keep = ops.greater(state[GATE], 0.5) if state is not None else None
        if dropping and self.drop_mode == "sample":
            draw = keras.random.uniform(
                (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1), seed=self.seed_generator
            )
            kept = ops.less(draw, 1.0 - self.drop_rate)
            if keep is not None:
                kept = ops.logical_and(kept, keep)
            return ops.where(kept, with_branch(), without_branch())
        if dropping:
            survived = ops.less(keras.random.uniform((), seed=self.seed_generator), 1.0 - self.drop_rate)
            keep = survived if keep is None else ops.logical_and(keep, survived)
        return self._select(keep, with_branch, without_branch, training)

    def passed_on(
        self, part: BlockPart, inputs: Sequence[Any], training: bool | None = None,
        mask: Any = None, route: tuple[Callable, Callable] | None = None,
        call_kwargs: dict | None = None,
    ) -> Any:
        """What the intact block passes on from one part: `run_part` and the block's own scaling.

        The same as `run_part`, except that a stochastic-depth branch with
        `drop_scaling="inference"` is scaled by its survival probability
        outside training (Huang et al. 2016, Sec. 3), as `call` does. Tools
        that transform the description run parts through this, so they
        compute what the block computes.

        `route=(branch, shortcut)` routes the backward pass as the block's
        own `gradient_route` does, with any function that keeps the forward
        value (per-sample masks, Veit et al. 2016, Sec. 5): `branch` is
        applied to the branch output and to the block input a merge reads (a
        gate belongs to the residual module), `shortcut` to the shortcut output.
        `call_kwargs` go to the branch (see `run_part`).

        Example:
            >>> block = Residual(keras.layers.Dense(2, kernel_initializer="ones"),
            ...                  drop_rate=0.5, drop_scaling="inference")
            >>> x = keras.ops.ones((1, 2))
            >>> _ = block(x)
            >>> branch = block.part("branch")
            >>> keras.ops.convert_to_numpy(block.passed_on(branch, [x], training=False)).tolist()
            [[1.0, 1.0]]
        """
        return self._passed_on(part, inputs, None, training, mask, dropping=False, route=route,
                               call_kwargs=call_kwargs)

    def _passed_on(self, part, inputs, state, training, mask, dropping, route=None,
                   call_kwargs=None):
        """`run_part`, plus what the block applies around it: drop scaling, routes, lesion state.

        The branch value is scaled by its survival probability at test time
        (`drop_scaling="inference"`, Huang et al. 2016, Sec. 3) or divided by
        it while dropping (`"train"`). A lesion-ready block routes the
        gradient with its state (`route` from `state`) and multiplies the
        branch by `branch_scale`.
        """
        if state is not None:
            route = (functools.partial(scale_gradient, scale=state[ROUTE_BRANCH]),
                     functools.partial(scale_gradient, scale=state[ROUTE_SHORTCUT]))
        branch_route, shortcut_route = route or (None, None)
        if branch_route is not None and part.role == "merge" and self.merge_layer.reads_inputs:
            inputs = [*inputs[:-1], branch_route(inputs[-1])]
        value = self.run_part(part, inputs, training, mask, call_kwargs)
        if part.role == "shortcut" and shortcut_route is not None:
            return shortcut_route(value)
        if part.role != "branch":
            return value
        if self.drop_rate > 0.0 and self.drop_scaling == "inference" and not training:
            value = ops.multiply(value, ops.cast(1.0 - self.drop_rate, value.dtype))
        if branch_route is not None:
            value = branch_route(value)
        if state is not None:
            value = ops.multiply(value, ops.cast(state[BRANCH_SCALE], value.dtype))
        if dropping and self.drop_scaling == "train":
            value = ops.divide(value, ops.cast(1.0 - self.drop_rate, value.dtype))
        return value

    def _as_output(self, y):
        # A layer returns its compute dtype (Keras' layer contract), also where
        # the wrapped layer runs in another precision.
        if keras.backend.standardize_dtype(y.dtype) != self.compute_dtype:
            return ops.cast(y, self.compute_dtype)
        return y

    def _check_call_kwargs(self, kwargs: dict) -> None:
        """A ValueError naming the branch's call arguments for any the branch does not take."""
        accepted = branch_call_arguments(self.layer)
        refused = sorted(set(kwargs) - set(accepted)) if accepted is not None else []
        if refused:
            own = [n for n in _SET_BY_BLOCK if _accepts(self.layer, n)]
            raise ValueError(
                f"Residual {self.name!r} passes call arguments on to its branch "
                f"{self.layer.name!r} ({type(self.layer).__name__}), whose call takes "
                f"{', '.join(accepted) or 'no further arguments'} (the block itself sets "
                f"{', '.join(own) or 'none'}). Received: call arguments {refused}"
            )

    def _call_branch(self, pre, training, mask, call_kwargs=None):
        kwargs = dict(call_kwargs or {})
        if self._branch_accepts_training:
            kwargs["training"] = training
        if self._is_attention:
            return self.layer(pre, pre, query_mask=mask, value_mask=mask, **kwargs)
        if self._branch_accepts_mask and mask is not None:
            kwargs["mask"] = mask
        return self.layer(pre, **kwargs)

    def _with_zero_gradients(self, y):
        """`y`, with a zero gradient for every trainable variable of the branch and merge.

        A skipped branch gets zero gradients, as under `tf.cond` in a compiled
        step and on JAX, not none: an eager cond (PyTorch) left its variables
        out of the backward pass, and Keras' optimizer warned "Gradients do not
        exist for variables" once per skipped block per step.
        """
        touched = [
            ops.multiply(ops.sum(ops.cast(v, "float32")), 0.0)
            for v in (*self.layer.trainable_variables, *self.merge_layer.trainable_variables)
        ]
        if not touched:
            return y
        return ops.add(y, ops.cast(ops.sum(ops.stack(touched)), y.dtype))

    def _select(self, keep, with_branch, without_branch, training):
        """`with_branch()` where `keep` else `without_branch()`, computing only one.

        On JAX a `lax.cond` branch cannot update Keras variables (BatchNorm
        statistics, seed states), so in training both are computed and the
        state updates of the discarded one are undone.
        """
        if not training:
            return ops.cond(keep, with_branch, without_branch)
        if keras.backend.backend() != "jax":
            return ops.cond(keep, with_branch, lambda: self._with_zero_gradients(without_branch()))
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

    # ---------------------------------------------------------- lesion state

    @property
    def lesion_ready(self) -> bool:
        """Whether this block reads its lesion state (see `set_lesion_ready`)."""
        return self._lesion_ready

    @property
    def lesion_state(self) -> keras.Variable | None:
        """The lesion-state variable of a built lesion-ready block, else None."""
        return self._state_slot.variable

    def switch_lesion_ready(self, ready: bool) -> None:
        """Switch this block's lesion-ready mode; the caller resets compiled functions.

        `keras_residual.lesion_ready(model)` and `set_lesion_ready(model)` do
        this for every block of a model and reset its compiled functions.

        Example:
            >>> block = Residual(keras.layers.Dense(2))
            >>> _ = block(keras.ops.ones((1, 2)))
            >>> block.switch_lesion_ready(True)
            >>> len(block.non_trainable_weights), block.lesion_ready
            (1, True)
        """
        ready = bool(ready)
        if ready == self._lesion_ready:
            return
        if ready:
            self._lesion_ready = True
            if self.built:
                self._state_slot.fill(self.name)
            return
        if not self.get_lesion_state().is_default:
            raise ValueError(
                f"Residual {self.name!r} is lesioned ({self.get_lesion_state()}); "
                "restore it with `set_lesion_state(LesionState())` before leaving the "
                "lesion-ready mode."
            )
        self._lesion_ready = False
        self._state_slot.empty()

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
        if not new.branch_enabled and self.built and not self.deletable:
            raise ValueError(
                f"Residual {self.name!r} has shortcut='none' and changes the shape "
                f"{self._input_shape} -> {self.compute_output_shape(self._input_shape)}: its "
                "layer cannot be replaced by the identity."
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
        """Whether the branch contributes (False: `y = act(merge.without_branch(h(x)))`, which is
        `act(merge(h(x), 0))` for a sum; Veit et al. 2016, Sec. 4)."""
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


_MOVED_TO_LESION_STATE = (
    "GRADIENT_ROUTES", "lesion_ready", "reset_compiled_functions", "set_lesion_ready",
)


def __getattr__(name: str) -> Any:
    # Model-level tools moved to keras_residual.graph and keras_residual.lesion_state
    # (one release of aliases, each warning once).
    from keras_residual import _deprecation

    if name == "residual_layers":
        from keras_residual import graph

        return _deprecation.moved(f"keras_residual.residual.{name}", "keras_residual.graph.blocks",
                                  functools.partial(graph.blocks, nested=True))
    if name in _MOVED_TO_LESION_STATE:
        from keras_residual import lesion_state

        _deprecation.warn_once(f"keras_residual.residual.{name}",
                               f"keras_residual.lesion_state.{name}")
        return getattr(lesion_state, name)
    raise AttributeError(f"module 'keras_residual.residual' has no attribute {name!r}")
