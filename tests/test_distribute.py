"""`tf.distribute.MirroredStrategy` on two logical CPU devices, and mixed precision.

Logical devices must be configured before TensorFlow initializes its
runtime, which the test session has long done, so the training runs in a
fresh subprocess. The model has no BatchNormalization: per-replica batch
statistics legitimately differ from single-device ones.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.backends("tensorflow", reason="tf.distribute is TensorFlow's")

TRAIN = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

    import keras
    import numpy as np
    from keras import layers

    import keras_residual as kr

    def build():
        inputs = keras.Input((6, 6, 3))
        x = kr.Residual(
            layers.Conv2D(4, 3, strides=2, padding="same"), shortcut="projection",
            merge="highway", activation="relu",
        )(inputs)
        x = kr.Residual(layers.Conv2D(6, 3, padding="same"), shortcut="zero_pad")(x)
        x = kr.Residual(layers.Conv2D(6, 3, padding="same"), merge="rezero", seed=3,
                        drop_rate=0.3)(x)
        x = kr.Residual(layers.Dense(6), preactivation="relu", merge="scaled")(x)
        return keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 6, 6, 3)).astype("float32")
    y = rng.uniform(-1, 1, (16, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    initial = build().get_weights()

    def train(strategy, policy):
        keras.config.set_dtype_policy(policy)
        with strategy.scope():
            model = build()
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        keras.config.set_dtype_policy("float32")
        return {
            "replicas": strategy.num_replicas_in_sync,
            "loss": history.history["loss"],
            "weights": [np.asarray(w, "float32").ravel().tolist() for w in model.get_weights()],
            "dtypes": sorted({v.dtype for v in model.variables if "float" in v.dtype}),
        }

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print(json.dumps({
        "single": train(tf.distribute.OneDeviceStrategy("/cpu:0"), "float32"),
        "mirrored": train(mirrored, "float32"),
        "mixed": train(mirrored, "mixed_float16"),
    }))
    """
)


def _train_in_fresh_process() -> dict:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", TRAIN], capture_output=True, text=True, env=env,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_and_mixed_precision_training_match_single_device():
    # One test, one subprocess: a module fixture would run once per xdist worker.
    runs = _train_in_fresh_process()
    single, mirrored, mixed = runs["single"], runs["mirrored"], runs["mixed"]
    assert (single["replicas"], mirrored["replicas"], mixed["replicas"]) == (1, 2, 2)
    # Stochastic depth included: in "batch" mode both replicas read one seed state,
    # so they draw what the single device draws.
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)
    for got, want in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    assert mixed["dtypes"] == ["float32"]  # variables stay float32 under mixed_float16
    assert np.all(np.isfinite(mixed["loss"]))
    # float16 activations: the same trajectory within half-precision round-off.
    np.testing.assert_allclose(mixed["loss"], single["loss"], rtol=2e-2)


@pytest.mark.backends("jax", reason="keras.distribution.DataParallel is JAX's")
def test_jax_distribution_is_set_only_inside_the_scope(monkeypatch):
    import keras

    from keras_residual import distribution, training

    # Two entries for the one CPU: enough for DataParallel's mesh, no device flags needed.
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["cpu:0", "cpu:0"])
    monkeypatch.setattr(distribution, "_SETUP", None)  # this process' setup, made afresh
    assert keras.distribution.distribution() is None
    setup = distribution.distribution_setup()
    assert setup.description == "jax: DataParallel over 2 devices"
    assert distribution.distribution_setup() is setup  # once per process
    scope, description = training.distribution_scope()
    assert description == setup.description
    assert keras.distribution.distribution() is None  # calling it sets nothing
    for _ in range(2):  # a fresh scope each time, entered as often as needed
        with setup.scope():
            current = keras.distribution.distribution()
            assert isinstance(current, keras.distribution.DataParallel)
            assert current.device_mesh.shape == (2,)
        assert keras.distribution.distribution() is None  # restored on exit
