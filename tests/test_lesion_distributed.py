"""The lesion studies under a distribution give the single-device numbers (issue 22).

Single- and k-block deletion, reordering and the gradient per path length
(Veit et al. 2016, Fig. 3-6) run data-parallel inside the distribution
setup (`keras_residual.lesion.parallel`): on TensorFlow under a
`MirroredStrategy` over two logical CPU devices, in a fresh subprocess
(logical devices must be configured before TensorFlow starts); on JAX in a
job of two processes on localhost with two host devices each, under
`distribution_setup()`'s scope: the last part of the job that
tests/test_cluster.py launches (`check_jax_job` reads it), so that one
launch serves both. Each prints its results as JSON, and the references are
the same studies computed in the test process on one device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_cluster import ROOT, kill

#: The network, the data and the four studies, executed here and in the subprocesses.
STUDIES = textwrap.dedent(
    """
    import keras
    import numpy as np

    from keras_residual import Residual
    from keras_residual.lesion import (gradient_per_path_length, k_block_deletion, reordering,
                                       single_block_deletion)

    def build():
        # 5 blocks, one of them with a projection shortcut (it cannot be swapped), 2k weights.
        inputs = keras.Input((8,))
        x = keras.layers.Dense(16, activation="tanh")(inputs)
        for i in range(5):
            branch = keras.Sequential([keras.layers.Dense(16, activation="relu"),
                                       keras.layers.Dense(16 if i < 2 else 12)])
            x = Residual(branch, shortcut="projection" if i == 2 else "identity")(x)
        outputs = keras.layers.Softmax()(keras.layers.Dense(5)(x))
        return keras.Model(inputs, outputs)

    def weights(model):
        rng = np.random.default_rng(1)
        return [rng.normal(0.0, 0.3, w.shape).astype("float32") for w in model.weights]

    def inputs():
        return np.random.default_rng(2).normal(size=(100, 8)).astype("float32")

    def labels(model, x):
        y = model.predict(x, verbose=0).argmax(-1)  # the intact net's answers, 20 changed
        y[:20] = np.random.default_rng(3).integers(0, 5, 20)
        return y

    def studies(model, x, y):
        single = {m: single_block_deletion(model, (x, y), batch_size=24, method=m,
                                           progress=False) for m in ("stacked", "each")}
        k = k_block_deletion(model, (x, y), [1, 3], samples=2, batch_size=24, progress=False)
        swaps = reordering(model, (x, y), [1, 2], samples=1, batch_size=24, progress=False)
        gradient = gradient_per_path_length(model, (x, y), [0, 2, 5], samples=16,
                                            batch_size=48, progress=False)
        return {
            "single": {m: [r.intact_error, *r.errors.tolist()] for m, r in single.items()},
            "k": [k.intact_error, *k.errors.ravel().tolist()],
            "reorder": [swaps.intact_error, *swaps.errors.ravel().tolist()],
            "orders": swaps.orders.tolist(),
            "norms": gradient.norms.tolist(),
        }
    """
)

TENSORFLOW_JOB = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    exec(STUDIES)
    from keras_residual.lesion import parallel

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
    model.set_weights(weights(model))
    x = inputs()
    results = studies(model, x, labels(model, x))
    results["replicas"] = parallel.current_split(model).devices
    results["strategy"] = model.distribute_strategy.num_replicas_in_sync
    print(json.dumps(results))
    """
).replace("exec(STUDIES)", STUDIES)

JAX_JOB = textwrap.dedent(
    """
    import json, os
    from keras_residual.distribution import distribution_setup

    setup = distribution_setup()  # joins the cluster: before anything starts JAX
    exec(STUDIES)
    from keras_residual.lesion import parallel

    x, y = inputs(), np.array(json.loads(os.environ["LESION_LABELS"]))  # the test's
    rows = []  # what each predict call of this process evaluated
    predict = keras.Model.predict
    keras.Model.predict = lambda self, x, **kwargs: rows.append(
        len(keras.tree.flatten(x)[0])) or predict(self, x, **kwargs)
    with setup.scope():
        model = build()
        model.set_weights(weights(model))
        results = studies(model, x, y)
        split = parallel.current_split(model)
    results["split"] = [split.processes, split.process_id, split.devices]
    results["rows"] = rows
    print("RESULTS", json.dumps(results))
    """
).replace("exec(STUDIES)", STUDIES)


def single_device_network() -> tuple[dict, object, np.ndarray, np.ndarray]:
    """`STUDIES`' names, its network on one device, the inputs and the labels."""
    namespace: dict = {}
    exec(STUDIES, namespace)
    model = namespace["build"]()
    model.set_weights(namespace["weights"](model))
    x = namespace["inputs"]()
    return namespace, model, x, namespace["labels"](model, x)


def single_device_results() -> dict:
    namespace, model, x, y = single_device_network()
    return namespace["studies"](model, x, y)


def assert_same_numbers(got: dict, want: dict) -> None:
    assert got["single"] == want["single"]  # errors: exactly the same predictions
    assert got["k"] == want["k"] and got["reorder"] == want["reorder"]
    assert got["orders"] == want["orders"]
    np.testing.assert_allclose(got["norms"], want["norms"], rtol=1e-5, atol=1e-7)
    # The studies are not degenerate: deletions and swaps change the error, lengths the norm.
    errors = want["single"]["each"]
    assert len(set(errors)) > 2 and len(set(want["reorder"])) > 1
    assert len({round(float(np.mean(n)), 4) for n in want["norms"]}) == 3


@pytest.mark.backends("tensorflow", reason="tf.distribute.MirroredStrategy is TensorFlow's "
                      "(the JAX job is the test below)")
def test_lesion_studies_under_mirrored_strategy_give_the_single_device_numbers():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT)
    job = subprocess.Popen([sys.executable, "-c", TENSORFLOW_JOB], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        want = single_device_results()  # meanwhile, here
    except BaseException:
        kill([job])
        raise
    try:
        out, err = job.communicate(timeout=300)
    finally:
        kill([job])
    assert job.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["replicas"] == got["strategy"] == 2  # every evaluation split over both
    assert_same_numbers(got, want)


def check_jax_job(logs: list[str], want: dict) -> None:
    """The lesion part of the JAX job in tests/test_cluster.py: each process' numbers.

    That job (two processes of two host devices each) trains first and then
    runs `JAX_JOB`; one launch serves both tests' questions.
    """
    for i, log in enumerate(logs):
        got = json.loads([line for line in log.splitlines() if line.startswith("RESULTS ")][-1][8:])
        assert got["split"] == [2, i, 2]  # 2 processes, each over its 2 devices
        # Each process evaluated its half of the (padded) rows: the stacked sweep's 128 rows
        # (8 stacked batches of 16), then 144 rows (6 steps of 24) per network.
        assert got["rows"][:2] == [64, 72] and max(got["rows"]) < 100
        assert_same_numbers(got, want)
