"""Merge functions: how a residual unit combines its shortcut `h(x)` and branch `F(x)`.

Every merge here is a Keras layer called as `merge(shortcut, branch, inputs)`,
where `inputs` is the block's input `x` (gates are functions of `x`). The
variants follow He et al., "Identity Mappings in Deep Residual Networks"
(2016), Sec. 3.1 and Table 1; the highway gate follows Srivastava et al.,
"Highway Networks" (2015); the zero-initialized branch scale follows Chu et al. (2017)
(future work 4) and Bachlechner et al., "ReZero" (2020).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import layers, ops

from keras_residual.shortcuts import ProjectionShortcut

Shape = Sequence[Any]

#: Names accepted by `Residual(merge=...)`.
MERGE_KINDS = (
    "add",
    "multiply",
    "highway",
    "exclusive_gating",
    "shortcut_gating",
    "scaled",
    "shortcut_dropout",
    "rezero",
)


class Merge(layers.Layer):
    """Base class: `call(shortcut, branch, inputs)` returns the merged tensor.

    Subclass it to write a merge that needs the input the branch reads (a
    gate) or weights of its own; `Residual` builds it with the three shapes.
    That input, `inputs`, is the block input `x`, or the pre-activated `x`
    in a block with a pre-activation (He et al. 2016, Fig. 4e), as
    `Residual.parts` lists it.

    Two class attributes describe a merge to the tools that follow a block's
    description (`Residual.parts`) instead of reading its code:

    - `reads_inputs`: whether `call` uses `inputs`, the input the branch
      reads (a gate does). Per-sample path routing routes it with the branch; receptive
      fields and multiply-add counts follow it. Defaults to True, the safe
      answer for a subclass; the merges here that ignore it say False.
    - `passes_shortcut`: whether `without_branch(h)` is `h` itself, so a
      deleted block with an identity shortcut and no post-merge activation
      passes its input on (Veit et al. 2016, Sec. 4.1). Defaults to False.

    Example:
        An average of shortcut and branch (a merge that ignores the input):

        >>> import numpy as np
        >>> import keras
        >>> from keras import layers
        >>> from keras_residual import Merge, Residual
        >>> class Average(Merge):
        ...     reads_inputs = False
        ...     def call(self, shortcut, branch, inputs=None):
        ...         return (shortcut + branch) / 2
        >>> block = Residual(layers.Dense(4, kernel_initializer="ones"), merge=Average())
        >>> keras.ops.convert_to_numpy(block(np.ones((1, 4), "float32"))).tolist()
        [[2.5, 2.5, 2.5, 2.5]]
    """

    reads_inputs = True
    passes_shortcut = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Merges act position by position: a sequence mask on the inputs still
        # holds for the output (without this Keras warns that it drops the mask).
        self.supports_masking = True

    def build(self, shortcut_shape: Shape, branch_shape: Shape = None, inputs_shape: Shape = None):
        self.built = True

    def compute_output_shape(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        return tuple(branch_shape if branch_shape is not None else shortcut_shape)

    def without_branch(self, shortcut, inputs=None, **kwargs):
        """The merge with the branch deleted: `merge(h(x), 0)` here, `h(x)` for a product.

        What a residual block passes on when its branch is removed (Veit et
        al. 2016, Sec. 4.1: the residual module goes, the rest of the block
        stays; Huang et al. 2016, Eq. 2, for a dropped branch). The default
        calls the merge with a zero branch; merges whose "no branch" value
        is cheaper or different override it (`MultiplyMerge` returns `h(x)`,
        the value of a product without its factor, not `h(x) * 0`).

        Args:
            shortcut: tensor. The shortcut output `h(x)`.
            inputs: tensor or None. The input the branch reads: `x`, or the
                pre-activated `x` in a pre-activation block (for gated merges).
            **kwargs: call arguments such as `training`.

        Returns:
            A tensor shaped like `shortcut`.
        """
        return self(shortcut, ops.zeros_like(shortcut), inputs, **kwargs)


@keras.saving.register_keras_serializable(package="keras_residual")
class AddMerge(Merge):
    """`y = h(x) + F(x)`: the residual unit of He et al. (2015), Eq. 1.

    Example:
        >>> import keras
        >>> m = AddMerge()
        >>> keras.ops.convert_to_numpy(m(keras.ops.ones(2), keras.ops.ones(2), None)).tolist()
        [2.0, 2.0]
    """

    reads_inputs = False
    passes_shortcut = True

    def call(self, shortcut, branch, inputs=None):
        return ops.add(shortcut, branch)

    def without_branch(self, shortcut, inputs=None, **kwargs):
        return shortcut


@keras.saving.register_keras_serializable(package="keras_residual")
class MultiplyMerge(Merge):
    """`y = h(x) * F(x)`: the multiplicative merge named in Bolte (2016).

    Example:
        >>> import keras
        >>> m = MultiplyMerge()
        >>> keras.ops.convert_to_numpy(m(keras.ops.ones(2) * 2, keras.ops.ones(2) * 3, None)).tolist()
        [6.0, 6.0]
    """

    reads_inputs = False
    passes_shortcut = True

    def call(self, shortcut, branch, inputs=None):
        return ops.multiply(shortcut, branch)

    def without_branch(self, shortcut, inputs=None, **kwargs):
        """The deleted block's merge: `h(x)`, i.e. `merge(h(x), 1)`, not `merge(h(x), 0)`.

        The neutral element of a product is 1: a deleted multiplicative
        branch leaves the shortcut, as a deleted additive one does (Veit et
        al. 2016, Sec. 4.1: the residual module goes, the skip connection
        stays). `merge(h(x), 0)` would be 0 and delete the whole block.

        Example:
            >>> import keras
            >>> m = MultiplyMerge()
            >>> keras.ops.convert_to_numpy(m.without_branch(keras.ops.ones(2) * 2)).tolist()
            [2.0, 2.0]
        """
        return shortcut


@keras.saving.register_keras_serializable(package="keras_residual")
class ScaledMerge(Merge):
    """Constant scaling: `y = shortcut_scale * h(x) + branch_scale * F(x)`.

    He et al. (2016), Table 1, "constant scaling" (0.5 / 0.5: 12.35% error on
    CIFAR-10 ResNet-110; shortcut scale 0 is the plain net).

    Args:
        shortcut_scale: float. Factor on the shortcut. Defaults to 0.5.
        branch_scale: float. Factor on the branch. Defaults to 0.5.

    Example:
        >>> import keras
        >>> m = ScaledMerge(0.5, 2.0)
        >>> keras.ops.convert_to_numpy(m(keras.ops.ones(1), keras.ops.ones(1), None)).tolist()
        [2.5]
    """

    reads_inputs = False

    def __init__(self, shortcut_scale: float = 0.5, branch_scale: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.shortcut_scale = float(shortcut_scale)
        self.branch_scale = float(branch_scale)

    def call(self, shortcut, branch, inputs=None):
        return ops.add(
            ops.multiply(shortcut, self.shortcut_scale), ops.multiply(branch, self.branch_scale)
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "shortcut_scale": self.shortcut_scale,
            "branch_scale": self.branch_scale,
        }


@keras.saving.register_keras_serializable(package="keras_residual")
class GatedMerge(Merge):
    """Gated merges with a learned sigmoid gate `g(x) = sigmoid(W_g x + b_g)`.

    `W_g` is a 1x1 convolution (Dense for vectors and for channels-last
    sequences), with the branch's stride, from the input the branch reads
    (the block input `x`, or the pre-activated `x` in a block with a
    pre-activation) to the branch's channels.

    - `mode="exclusive"`: `y = (1 - g(x)) * h(x) + g(x) * F(x)`. With the gate
      on the branch this is a highway layer (Srivastava et al. 2015: `T(x) *
      H(x) + (1 - T(x)) * x`) and the "exclusive gating" of He et al. (2016),
      Table 1 (bias init -6: 8.70% error).
    - `mode="shortcut"`: `y = (1 - g(x)) * h(x) + F(x)`, "shortcut-only
      gating" (bias init 0: 12.86%; -6: 6.91%).

    Args:
        mode: str. "exclusive" or "shortcut". Defaults to "exclusive".
        bias_initializer: float or initializer. Initial gate bias; negative
            values start the block close to `h(x)`. Defaults to -1.0, the
            highway networks' suggestion.
        kernel_initializer: initializer of `W_g`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual, GatedMerge
        >>> block = Residual(keras.layers.Dense(4), merge=GatedMerge(bias_initializer=-6.0))
        >>> tuple(block(keras.ops.ones((2, 4))).shape)
        (2, 4)
    """

    def __init__(
        self,
        mode: str = "exclusive",
        bias_initializer: float | Any = -1.0,
        kernel_initializer: Any = "glorot_uniform",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in ("exclusive", "shortcut"):
            raise ValueError(f"`mode` must be 'exclusive' or 'shortcut'. Received: mode={mode!r}")
        self.mode = mode
        if isinstance(bias_initializer, (int, float)):
            bias_initializer = keras.initializers.Constant(float(bias_initializer))
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.data_format = data_format

    def build(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        if inputs_shape is None:
            raise ValueError("GatedMerge needs the block input to compute its gate.")
        branch_shape = shortcut_shape if branch_shape is None else branch_shape
        self.gate = ProjectionShortcut(
            use_bias=True,
            kernel_initializer=self.kernel_initializer,
            data_format=self.data_format,
            name="gate",
            dtype=self.dtype_policy,
        )
        self.gate.adapt(inputs_shape, branch_shape, self.data_format or "channels_last")
        self.gate.build(inputs_shape)
        bias = self.gate.proj.bias
        bias.assign(self.bias_initializer(bias.shape, dtype=bias.dtype))
        self.built = True

    def call(self, shortcut, branch, inputs=None):
        g = ops.sigmoid(self.gate(inputs))
        carry = ops.multiply(ops.subtract(1.0, g), shortcut)
        if self.mode == "exclusive":
            return ops.add(carry, ops.multiply(g, branch))
        return ops.add(carry, branch)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mode": self.mode,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="keras_residual")
class ShortcutDropoutMerge(Merge):
    """`y = dropout(h(x)) + F(x)`: He et al. (2016), Table 1, "dropout shortcut".

    Args:
        rate: float. Dropout rate on the shortcut. Defaults to 0.5 (the
            paper's setting, which fails to converge on ResNet-110).
        seed: int or None. Dropout seed.

    Example:
        >>> import keras
        >>> m = ShortcutDropoutMerge(0.5)
        >>> keras.ops.convert_to_numpy(m(keras.ops.ones(2), keras.ops.ones(2), None)).tolist()
        [2.0, 2.0]
    """

    reads_inputs = False

    def __init__(self, rate: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.dropout = layers.Dropout(self.rate, seed=seed, dtype=self.dtype_policy)

    def call(self, shortcut, branch, inputs=None, training=None):
        return ops.add(self.dropout(shortcut, training=training), branch)

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_residual")
class ReZeroMerge(Merge):
    """`y = h(x) + alpha * F(x)` with a learned scalar `alpha` initialized to 0.

    At insertion the block is exactly `h(x)`, so a new block wrapped around
    fresh layers inside a trained network leaves its function unchanged
    (Chu et al. 2017, future work 4; Bachlechner et al., "ReZero", 2020).

    Args:
        initial_value: float. Starting value of `alpha`. Defaults to 0.0.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(3), merge="rezero")
        >>> x = keras.ops.ones((1, 3))
        >>> bool(keras.ops.all(block(x) == x))
        True
    """

    reads_inputs = False
    passes_shortcut = True

    def __init__(self, initial_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_value = float(initial_value)

    def build(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_value),
            trainable=True,
        )
        self.built = True

    def call(self, shortcut, branch, inputs=None):
        return ops.add(shortcut, ops.multiply(ops.cast(self.alpha, branch.dtype), branch))

    def without_branch(self, shortcut, inputs=None, **kwargs):
        """The deleted block's merge: `h(x)`, which is `merge(h(x), 0)` for any `alpha`.

        Example:
            >>> import keras
            >>> m = ReZeroMerge(initial_value=0.5)
            >>> keras.ops.convert_to_numpy(m.without_branch(keras.ops.ones(2) * 2)).tolist()
            [2.0, 2.0]
        """
        return shortcut

    def get_config(self) -> dict:
        return {**super().get_config(), "initial_value": self.initial_value}


@keras.saving.register_keras_serializable(package="keras_residual")
class CallableMerge(Merge):
    """Adapts a Keras merge layer (`layers.Add()`, `layers.Maximum()`) or a
    function `fn(shortcut, branch)` to the `Merge` interface.

    Functions must be registered with `keras.saving.register_keras_serializable`
    for the model to be saved.

    Args:
        merge: a Keras layer called on `[shortcut, branch]`, or a callable
            called as `merge(shortcut, branch)`.

    Example:
        >>> import keras
        >>> m = CallableMerge(keras.layers.Maximum())
        >>> keras.ops.convert_to_numpy(m(keras.ops.ones(1), keras.ops.zeros(1), None)).tolist()
        [1.0]
    """

    reads_inputs = False

    def __init__(self, merge: layers.Layer | Callable, **kwargs):
        super().__init__(**kwargs)
        if not callable(merge):
            raise ValueError(f"`merge` must be callable. Received: merge={merge!r}")
        self.merge = merge

    def build(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        if isinstance(self.merge, layers.Layer) and not self.merge.built:
            self.merge.build([shortcut_shape, branch_shape or shortcut_shape])
        self.built = True

    def call(self, shortcut, branch, inputs=None):
        if isinstance(self.merge, layers.Layer):
            return self.merge([shortcut, branch])
        return self.merge(shortcut, branch)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "merge": keras.saving.serialize_keras_object(self.merge),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["merge"] = keras.saving.deserialize_keras_object(
            config["merge"], custom_objects=custom_objects
        )
        return cls(**config)


def make_merge(kind: str | Merge | layers.Layer | Callable) -> Merge:
    """The `Merge` layer for a `Residual(merge=...)` value.

    Example:
        >>> type(make_merge("highway")).__name__
        'GatedMerge'
    """
    if isinstance(kind, Merge):
        return kind
    if isinstance(kind, str):
        factories = {
            "add": lambda: AddMerge(name="merge"),
            "multiply": lambda: MultiplyMerge(name="merge"),
            "highway": lambda: GatedMerge("exclusive", -1.0, name="merge"),
            "exclusive_gating": lambda: GatedMerge("exclusive", -6.0, name="merge"),
            "shortcut_gating": lambda: GatedMerge("shortcut", -6.0, name="merge"),
            "scaled": lambda: ScaledMerge(0.5, 0.5, name="merge"),
            "shortcut_dropout": lambda: ShortcutDropoutMerge(0.5, name="merge"),
            "rezero": lambda: ReZeroMerge(name="merge"),
        }
        if kind not in factories:
            raise ValueError(
                f"`merge` must be one of {MERGE_KINDS}, a Merge or Keras layer, or a "
                f"callable. Received: merge={kind!r}"
            )
        return factories[kind]()
    if callable(kind):
        return CallableMerge(kind, name="merge")
    raise ValueError(
        f"`merge` must be one of {MERGE_KINDS}, a Merge or Keras layer, or a callable. "
        f"Received: merge={kind!r}"
    )


@keras.saving.register_keras_serializable(package="keras_residual")
class BatchNormAddMerge(Merge):
    """`y = BN(h(x) + F(x))`: the "BN after addition" unit of He et al. (2016), Fig. 4b.

    Args:
        momentum: float. BatchNormalization momentum. Defaults to 0.99.
        epsilon: float. BatchNormalization epsilon. Defaults to 1.001e-5.
        data_format: str or None. "channels_last" or "channels_first" for
            image inputs; None: the block's (a `Residual` passes its own),
            channels-last for vectors and sequences.
        axis: int or None. Deprecated: the channel axis, from before merges
            took `data_format`. None (default) derives it from `data_format`.
        **kwargs: base Layer arguments; with `name="conv2_block1_add"` the
            BatchNormalization is named `conv2_block1_add_bn`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(4), merge=BatchNormAddMerge())
        >>> tuple(block(keras.ops.ones((2, 4))).shape)
        (2, 4)
    """

    reads_inputs = False

    def __init__(
        self, momentum: float = 0.99, epsilon: float = 1.001e-5, data_format: str | None = None,
        axis: int | None = None, **kwargs,
    ):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(f"Invalid data_format. Received: data_format={data_format!r}")
        self.momentum = momentum
        self.epsilon = epsilon
        self.data_format = data_format
        self.axis = axis

    def build(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        shape = tuple(branch_shape if branch_shape is not None else shortcut_shape)
        axis = self.axis
        if axis is None:
            axis = 1 if self.data_format == "channels_first" and len(shape) >= 3 else -1
        self.bn = layers.BatchNormalization(
            axis=axis, momentum=self.momentum, epsilon=self.epsilon, name=f"{self.name}_bn",
            dtype=self.dtype_policy,
        )
        self.bn.build(shape)
        self.built = True

    def call(self, shortcut, branch, inputs=None, training=None):
        return self.bn(ops.add(shortcut, branch), training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "data_format": self.data_format,
            "axis": self.axis,
        }


@keras.saving.register_keras_serializable(package="keras_residual")
class LayerNormAddMerge(Merge):
    """`y = LayerNorm(h(x) + F(x))`: the post-norm sub-layer of Vaswani et al. (2017), Sec. 3.1.

    "The output of each sub-layer is LayerNorm(x + Sublayer(x))". Deleting
    such a sub-layer (Veit et al. 2016, Sec. 4.1: the residual module goes,
    the rest stays) leaves `LayerNorm(x)`, not `x`: the normalization is not
    part of the branch, so a post-norm stream is renormalized even where a
    sub-layer is gone (`without_branch`, inherited: the merge of a zero branch).

    Args:
        epsilon: float. LayerNormalization epsilon. Defaults to 1e-6.
        **kwargs: base Layer arguments; with `name="block1_attention_add"` the
            LayerNormalization is named `block1_attention_add_norm`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> block = Residual(keras.layers.Dense(4), merge=LayerNormAddMerge())
        >>> tuple(block(keras.ops.ones((2, 4))).shape)
        (2, 4)
    """

    reads_inputs = False

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, shortcut_shape, branch_shape=None, inputs_shape=None):
        shape = tuple(branch_shape if branch_shape is not None else shortcut_shape)
        self.norm = layers.LayerNormalization(
            epsilon=self.epsilon, name=f"{self.name}_norm", dtype=self.dtype_policy
        )
        self.norm.build(shape)
        self.built = True

    def call(self, shortcut, branch, inputs=None):
        return self.norm(ops.add(shortcut, branch))

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}
