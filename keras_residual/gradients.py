"""Gradient of a scalar function with respect to its input, on every backend.

Keras 3 has no backend-neutral "gradient with respect to an input tensor", so
this module keeps the one small function per backend that the analysis tools
need (Veit et al. 2016, Sec. 5, gradient per path length; guided
backpropagation). Everything else in keras_residual stays backend-neutral.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

ScalarFn = Callable[[Any], Any]


def _tape_gradient(fn: ScalarFn, x: Any, *args: Any) -> Any:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x, *args)
    return tape.gradient(value, x)


def _tensorflow_gradient(fn: ScalarFn, x: np.ndarray, *args: Any) -> np.ndarray:
    import tensorflow as tf

    return _tape_gradient(fn, tf.convert_to_tensor(x), *args).numpy()


def _jax_gradient(fn: ScalarFn, x: np.ndarray, *args: Any) -> np.ndarray:
    import jax

    # Model variables are read as constants inside the traced function, so
    # jax.grad differentiates with respect to `x` only.
    return np.asarray(jax.grad(fn)(jax.numpy.asarray(x), *args))


def _torch_gradient(fn: ScalarFn, x: np.ndarray, *args: Any) -> np.ndarray:
    import torch

    # convert_to_tensor places the tensor on Keras' device.
    x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)
    args = tuple(keras.ops.convert_to_tensor(a) for a in args)
    (grad,) = torch.autograd.grad(fn(x, *args), x)
    return grad.detach().cpu().numpy()


_GRADIENTS = {
    "tensorflow": _tensorflow_gradient,
    "jax": _jax_gradient,
    "torch": _torch_gradient,
}


def input_gradient(fn: ScalarFn, x: Any) -> np.ndarray:
    """d fn(x) / d x as a NumPy array of the shape of `x`.

    Args:
        fn: callable. Maps a batch tensor (of the current backend) to a
            scalar tensor, e.g. `lambda t: keras.ops.sum(model(t))`.
        x: array-like. The input batch; converted to float32.

    Returns:
        np.ndarray with the shape of `x`.

    Raises:
        ValueError: on a backend other than tensorflow, jax or torch.

    Example:
        >>> import keras
        >>> input_gradient(lambda t: keras.ops.sum(t * t), [1.0, 2.0]).tolist()
        [2.0, 4.0]
    """
    return _backend_gradient("input_gradient")(fn, np.asarray(x, dtype="float32"))


def _backend_gradient(caller: str) -> Callable[..., np.ndarray]:
    backend = keras.backend.backend()
    if backend not in _GRADIENTS:
        raise ValueError(
            f"{caller} supports the tensorflow, jax and torch backends. "
            f"Received: backend={backend!r}"
        )
    return _GRADIENTS[backend]


def input_gradient_function(fn: Callable[..., Any]) -> Callable[..., np.ndarray]:
    """`g(x, *args)` = d fn(x, *args) / d x, compiled once where that is safe.

    For gradients of many batches through one function (guided backprop over
    many units, Chu et al. (2017)). On TensorFlow the gradient runs in one
    `tf.function` (traced once per input signature; variables are read when
    it runs, so later weight updates are seen); this also avoids a crash of
    TensorFlow 2.21's eager oneDNN kernels on some narrow 1x1 stride-2
    convolutions. On JAX and PyTorch it is `input_gradient` with extra
    arguments (a jitted JAX function would freeze the weights it traced).

    Args:
        fn: callable. `fn(x, *args)` returns a scalar tensor; `args` are
            tensors or arrays (channel indices, unit positions).

    Returns:
        A function `(x, *args) -> np.ndarray` shaped like `x`.

    Example:
        >>> import keras
        >>> grad = input_gradient_function(lambda t, w: keras.ops.sum(t * t * w))
        >>> grad([1.0, 2.0], 3.0).tolist()
        [6.0, 12.0]
    """
    gradient = _backend_gradient("input_gradient_function")
    if keras.backend.backend() != "tensorflow":
        return lambda x, *args: gradient(fn, np.asarray(x, dtype="float32"), *args)

    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def compiled(x, *args):
        return _tape_gradient(fn, x, *args)

    def run(x: Any, *args: Any) -> np.ndarray:
        x = tf.convert_to_tensor(np.asarray(x, dtype="float32"))
        return compiled(x, *(tf.convert_to_tensor(a) for a in args)).numpy()

    return run


def traced_input_gradient(fn: ScalarFn, x: Any) -> Any:
    """d fn(x) / d x for a backend tensor `x`, as a backend tensor, inside a compiled function.

    For gradients taken in a layer's `call` (a `predict` that Keras splits
    over devices, `keras_residual.lesion.parallel`): a `tf.GradientTape` on
    TensorFlow, `jax.grad` on JAX, `torch.autograd.grad` (with gradients
    enabled, as `predict` disables them) on PyTorch.

    Example:
        >>> import keras
        >>> x = keras.ops.convert_to_tensor([1.0, 2.0])
        >>> keras.ops.convert_to_numpy(traced_input_gradient(
        ...     lambda t: keras.ops.sum(t * t), x)).tolist()
        [2.0, 4.0]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tape_gradient(fn, x)
    if backend == "jax":
        import jax

        return jax.grad(fn)(x)
    _backend_gradient("traced_input_gradient")  # raises on other backends
    import torch

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), x)
    return grad
