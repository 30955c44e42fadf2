"""One layer-test helper in the style of Keras' own `run_layer_test`.

Keras' own `run_layer_test` (run in tests/test_residual_core.py) checks
structure: config round trip, symbolic and eager calls, a training step,
dtypes. `check_values_survive_round_trips` adds the values it does not
compare: outputs after the config and JSON round trips, and under mixed
precision against float32.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import keras
import numpy as np


def to_numpy(x) -> np.ndarray:
    """A backend tensor (or a list of them) as NumPy."""
    return keras.ops.convert_to_numpy(x)


def random_input(shape: tuple, seed: int = 0) -> np.ndarray:
    """Deterministic float32 test data in [-1, 1)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=shape).astype("float32")


def _check_same_function(clone: keras.layers.Layer, weights: list, x, expected) -> None:
    """`clone`, given the original's weights, computes the same inference output."""
    if not clone.built:  # deserializing with a build config already built it
        clone.build(x.shape)
    clone.set_weights(weights)
    np.testing.assert_allclose(to_numpy(clone(x, training=False)), expected, rtol=1e-5, atol=1e-6)


def _check_config_round_trip(layer: keras.layers.Layer, x, expected) -> None:
    clone = type(layer).from_config(layer.get_config())
    _check_same_function(clone, layer.get_weights(), x, expected)
    assert clone.get_config() == layer.get_config()


def _check_json_round_trip(layer: keras.layers.Layer, x, expected) -> None:
    text = json.dumps(keras.saving.serialize_keras_object(layer))
    clone = keras.saving.deserialize_keras_object(json.loads(text))
    assert type(clone) is type(layer)
    _check_same_function(clone, layer.get_weights(), x, expected)


#: Tolerance of a mixed-precision output against float32, relative to the output's scale:
#: float16 keeps 11 significant bits, bfloat16 8 (unit roundoff 5e-4 and 4e-3), and
#: a layer accumulates a few roundings.
MIXED_TOLERANCE = {"float16": 1e-2, "bfloat16": 6e-2}


def _check_mixed_precision(make_layer: Callable[[], keras.layers.Layer], x, weights, expected):
    """Under a mixed policy, with the float32 layer's weights, the output is the float32
    output within the compute dtype's precision; float variables stay float32."""
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        try:
            layer = make_layer()
            layer(x, training=False)  # build
            layer.set_weights(weights)
            y = layer(x, training=False)
            compute_dtype = policy.split("_")[1]
            assert keras.backend.standardize_dtype(y.dtype) == compute_dtype, (policy, y.dtype)
            got = to_numpy(keras.ops.cast(y, "float32"))
            tol = MIXED_TOLERANCE[compute_dtype]
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale, err_msg=policy)
            # Integer state (seed generators) is exempt; every float variable is float32.
            floats = [v for v in layer.variables if keras.backend.is_float_dtype(v.dtype)]
            wrong = [v.path for v in floats if v.dtype != "float32"]
            assert not wrong, f"non-float32 variables under {policy}: {wrong}"
        finally:
            keras.config.set_dtype_policy("float32")


def check_values_survive_round_trips(
    make_layer: Callable[[], keras.layers.Layer], input_shape: tuple
) -> None:
    """What Keras' `run_layer_test` leaves out, on a layer built by `make_layer()`.

    Keras' harness checks the config round trip, symbolic and eager calls,
    one training step and the dtypes under mixed precision. This adds the
    values: the config and JSON round trips compute the same inference output
    with the original's weights, and under `mixed_float16` and
    `mixed_bfloat16` the output is the float32 output within the compute
    dtype's precision, with every float variable kept in float32.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> check_values_survive_round_trips(lambda: Residual(keras.layers.Dense(4)), (2, 4))
    """
    x = random_input(input_shape)
    layer = make_layer()
    y = to_numpy(layer(x, training=False))
    assert y.shape == tuple(layer.compute_output_shape(tuple(input_shape)))
    assert np.all(np.isfinite(y))
    _check_config_round_trip(layer, x, y)
    _check_json_round_trip(layer, x, y)
    _check_mixed_precision(make_layer, x, layer.get_weights(), y)
