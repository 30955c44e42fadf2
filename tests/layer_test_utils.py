"""One layer-test helper in the style of Keras' own `run_layer_test`.

`run_layer_test(make_layer, input_shape)` checks, for a layer built fresh by
`make_layer()`: the config round trip, the JSON round trip, a symbolic
(functional) call against `compute_output_shape`, an eager call, one `fit`
step, and a call under `mixed_float16` and `mixed_bfloat16` compared with the
float32 output.
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


def _check_symbolic_call(make_layer: Callable[[], keras.layers.Layer], input_shape: tuple):
    """Functional call; its shape must equal the unbuilt layer's `compute_output_shape`."""
    symbolic_shape = (None,) + tuple(input_shape[1:])
    expected = tuple(make_layer().compute_output_shape(symbolic_shape))
    inputs = keras.Input(input_shape[1:])
    outputs = make_layer()(inputs)
    assert tuple(outputs.shape) == expected
    return keras.Model(inputs, outputs)


def _check_fit_step(model: keras.Model, x, expect_update: bool) -> None:
    """One SGD step runs, gives a finite loss and (if expected) moves a weight."""
    shape = (len(x),) + tuple(model.output.shape[1:])
    target = np.random.default_rng(1).normal(size=shape).astype("float32")
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    history = model.fit(x, target, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(w) for w in model.trainable_weights]
    moved = any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    assert moved or not expect_update


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


def run_layer_test(
    make_layer: Callable[[], keras.layers.Layer],
    input_shape: tuple,
    *,
    fit: bool = True,
    expect_update: bool = True,
    mixed_precision: bool = True,
) -> None:
    """Run the standard layer checks on layers built fresh by `make_layer()`.

    Args:
        make_layer: callable returning a new, unbuilt layer each time.
        input_shape: tuple. Concrete input shape, batch dimension first.
        fit: bool. Also train a one-layer model for one step.
        expect_update: bool. Require that step to change a weight (False
            where the step may legitimately skip every weight, e.g. a
            stochastic-depth block that drops its branch for the whole batch).
        mixed_precision: bool. Also call the layer under mixed policies.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> run_layer_test(lambda: Residual(keras.layers.Dense(4)), (2, 4))
    """
    x = random_input(input_shape)

    layer = make_layer()
    expected_shape = tuple(layer.compute_output_shape(tuple(input_shape)))
    y = to_numpy(layer(x, training=False))
    assert y.shape == expected_shape
    assert np.all(np.isfinite(y))

    _check_config_round_trip(layer, x, y)
    _check_json_round_trip(layer, x, y)
    model = _check_symbolic_call(make_layer, input_shape)
    if fit:
        _check_fit_step(model, x, expect_update)
    if mixed_precision:
        _check_mixed_precision(make_layer, x, layer.get_weights(), y)
