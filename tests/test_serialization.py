"""Save a model with many Residual options, load it in a fresh process.

The fresh process imports only `keras_residual` (plus keras and numpy), so this
proves that every class the model uses is registered and that `get_config`
/ `from_config` / `build` rebuild the same variables in the same order.

Lesion state is a (non-trainable) weight, so it is saved and restored with
the model: a model saved with a block deleted loads with that block deleted.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers
from layer_test_utils import random_input

import keras_residual as kr
from keras_residual import Residual

pytestmark = pytest.mark.multibackend

LOAD_AND_PREDICT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import keras_residual

    model = keras.models.load_model(sys.argv[1])
    # An eager call: no tracing, which only costs time here.
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(np.load(sys.argv[2]), training=False)))
    state = {
        layer.name: [layer.branch_enabled, layer.gradient_route]
        for layer in model.layers
        if isinstance(layer, keras_residual.Residual)
    }
    print(json.dumps(state))
    """
)


def _conv(filters: int, strides: int = 1) -> layers.Layer:
    return layers.Conv2D(filters, 3, strides=strides, padding="same")


def _many_option_model() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = Residual(
        _conv(4, 2), shortcut=kr.ProjectionShortcut(batchnorm=True), merge="highway",
        activation="relu", name="projection_bn_highway",
    )(inputs)
    x = Residual(
        _conv(6), shortcut="zero_pad", merge="shortcut_gating", preactivation="bn_relu",
        drop_rate=0.2, name="zero_pad_gating",
    )(x)
    x = Residual(
        _conv(8, 2), shortcut="avg_down", merge="rezero", drop_rate=0.1, drop_mode="sample",
        drop_scaling="inference", name="avg_down_rezero",
    )(x)
    x = Residual(
        _conv(8), preactivation="bn_relu", shortcut="projection", shortcut_from="preactivated",
        merge=kr.ScaledMerge(1.0, 0.3), name="preact_projection_scaled",
    )(x)
    x = Residual(layers.Dense(8), merge=layers.Maximum(), name="user_merge")(x)
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_save_then_load_in_fresh_process_gives_identical_predictions(tmp_path):
    model = _many_option_model()
    x = random_input((4, 6, 6, 3))
    # One training step: BN statistics, gates and the ReZero scale leave their init.
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", run_eagerly=True)
    model.fit(x, random_input((4, 3), seed=1), batch_size=4, epochs=1, verbose=0)
    alpha = model.get_layer("avg_down_rezero").merge_layer.alpha
    assert float(keras.ops.convert_to_numpy(alpha)) != 0.0
    kr.set_lesion_ready(model)  # the lesion state is then a weight, saved with the model
    model.get_layer("user_merge").branch_enabled = False
    model.get_layer("avg_down_rezero").gradient_route = "branch"
    expected = keras.ops.convert_to_numpy(model(x, training=False))

    path, x_path, y_path = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "y.npy"
    model.save(path)
    np.save(x_path, x)
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(path), str(x_path), str(y_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(y_path), expected, rtol=1e-6, atol=1e-6)

    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["user_merge"] == [False, "both"]
    assert state["avg_down_rezero"] == [True, "branch"]
    assert state["projection_bn_highway"] == [True, "both"]
