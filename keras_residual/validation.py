"""Argument checks shared by the studies and the visualizations: fail early, say the fix.

Each check raises a `ValueError` that names the argument, what was received
and what to change, before any model is copied, traced or run: a wrong
image size reaching a compiled function otherwise surfaces as an error
about a layer or a rebuilt graph the user never made.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, or a ValueError if it is not an integer >= 1.

    Example:
        >>> positive_int("samples", 3)
        3
        >>> positive_int("samples", 0)
        Traceback (most recent call last):
        ...
        ValueError: `samples` must be a positive integer. Received: samples=0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _expected_shape(model: keras.Model) -> tuple | None:
    """The per-sample input shape of a single-input model; None where it is not one."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _matches(expected: tuple, got: tuple) -> bool:
    return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))


def _fix(expected: tuple, shape: tuple) -> str:
    """The most likely change that turns a batch of shape `shape` into one of `expected`."""
    per_sample = shape[1:]
    if _matches(expected, shape):
        return "Add the batch axis: pass x[None] for a single sample."
    if _matches(expected[:-1], per_sample) and expected[-1] == 1:
        return "Add the channel axis: pass x[..., None]."
    if _matches(expected[1:], per_sample) and expected[0] == 1:
        return "Add the channel axis: pass x[:, None]."
    if len(per_sample) == len(expected) and sorted(map(str, per_sample)) == sorted(
        map(str, expected)
    ):
        layout = keras.config.image_data_format()
        return (f"The axes look permuted: the model reads {layout} inputs, so move the "
                "channel axis (e.g. np.moveaxis(x, 1, -1) for channels_first data).")
    return ("Resize or crop the inputs to that shape, or build the model for this input "
            f"size (e.g. input_shape={per_sample}).")


def check_model_input(model: keras.Model, x: Any, name: str = "x") -> None:
    """Raise a ValueError, with the fix, if `x` is not a batch the model can take.

    Checks single-input models only (Keras checks the others when they are
    called); `None` sizes in the model's input match any size.

    Args:
        model: keras.Model. The model the data is for.
        x: array-like with a `shape`. A batch: samples on the first axis.
        name: str. The argument's name in the caller, for the message.

    Raises:
        ValueError: if `x` has no samples or its per-sample shape does not
            match the model's input.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()], name="net")
        >>> check_model_input(model, np.zeros((4, 28, 28, 1)))
        >>> check_model_input(model, np.zeros((4, 28, 28)), name="images")
        Traceback (most recent call last):
        ...
        ValueError: Model 'net' takes inputs of shape (None, 28, 28, 1) (batch axis first), but `images` has shape (4, 28, 28). Add the channel axis: pass x[..., None]. Received: images.shape=(4, 28, 28)
    """
    expected = _expected_shape(model)
    shape = getattr(x, "shape", None)
    if expected is None or shape is None:
        return
    got = tuple(int(n) if n is not None else None for n in shape)
    if got and got[0] == 0:
        raise ValueError(f"`{name}` holds no samples: give at least one. Received: "
                         f"{name}.shape={got}")
    if len(got) == len(expected) + 1 and _matches(expected, got[1:]):
        return
    raise ValueError(
        f"Model {model.name!r} takes inputs of shape {(None, *expected)} (batch axis first), "
        f"but `{name}` has shape {got}. {_fix(expected, got)} Received: {name}.shape={got}"
    )


def check_single_input(model: keras.Model, image: Any, name: str = "image") -> None:
    """Raise a ValueError, with the fix, if `image` is not one input (no batch axis) of `model`.

    Args:
        model: keras.Model. The model the input is for.
        image: array-like with a `shape`. One sample, without the batch axis.
        name: str. The argument's name in the caller, for the message.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()], name="net")
        >>> check_single_input(model, np.zeros((8, 8, 1)))
        >>> check_single_input(model, np.zeros((5, 8, 8, 1)))
        Traceback (most recent call last):
        ...
        ValueError: Model 'net' takes one input of shape (8, 8, 1) here, without the batch axis, but `image` has shape (5, 8, 8, 1): pass one sample, e.g. image[0]. Received: image.shape=(5, 8, 8, 1)
    """
    expected = _expected_shape(model)
    shape = getattr(image, "shape", None)
    if expected is None or shape is None:
        return
    got = tuple(int(n) if n is not None else None for n in shape)
    if _matches(expected, got):
        return
    if len(got) == len(expected) + 1 and _matches(expected, got[1:]):
        fix = f"pass one sample, e.g. {name}[0]."
    else:
        fix = _fix(expected, (1, *got)).replace("x[", f"{name}[")
    raise ValueError(
        f"Model {model.name!r} takes one input of shape {expected} here, without the batch "
        f"axis, but `{name}` has shape {got}: {fix[0].lower()}{fix[1:]} "
        f"Received: {name}.shape={got}"
    )
