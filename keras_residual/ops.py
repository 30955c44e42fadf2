"""Small backend-neutral tensor operations with custom gradients.

Everything here is written with `keras.ops` only, so it runs unchanged on
TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _upstream(args: tuple, upstream: Any) -> Any:
    # keras.ops.custom_gradient calls grad(upstream) on TensorFlow and JAX and
    # grad(*inputs, upstream=...) on PyTorch.
    return args[-1] if upstream is None else upstream


@ops.custom_gradient
def _scaled_gradient_identity(x, scale):
    def grad(*args, upstream=None):
        dy = _upstream(args, upstream)
        # A scale of 1 (every block of a normally trained network) passes dy on
        # without a full-size multiply.
        scaled = ops.cond(
            ops.equal(scale, 1.0), lambda: dy, lambda: ops.multiply(dy, ops.cast(scale, dy.dtype))
        )
        return scaled, ops.zeros_like(scale)

    return x, grad


def scale_gradient(x: Any, scale: Any) -> Any:
    """Return `x` unchanged, but multiply the gradient flowing back through it.

    The forward value is exactly `x`; the backward pass returns
    `upstream * scale`. With `scale` read from a non-trainable variable this
    routes gradients through one path of a residual block without retracing
    a compiled function (Veit et al. 2016, Sec. 5, "gradient per path").

    Args:
        x: tensor. The value to pass through.
        scale: scalar tensor or variable. Multiplier applied to the gradient;
            0 blocks it, 1 lets it through.

    Returns:
        A tensor equal to `x`.

    Example:
        >>> import keras
        >>> x = keras.ops.ones((2,))
        >>> keras.ops.convert_to_numpy(scale_gradient(x, 0.0)).tolist()
        [1.0, 1.0]
    """
    if isinstance(scale, keras.Variable):
        scale = scale.value
    scale = ops.convert_to_tensor(scale, dtype="float32")
    return _scaled_gradient_identity(x, scale)
