"""How the suite runs an example or benchmark script end to end, in a subprocess.

A whole script trains small networks for seconds to a minute; its parts (blocks,
studies, visualizations, training helpers) are tested on every backend in the unit
tests, so the script itself runs once, on the backend where it is fastest. With
PyTorch on one OpenMP thread per process (`make test` sets OMP_NUM_THREADS=1 there: two
workers' spinning OpenMP threads had slowed each other down), scripts that train or
trace many small networks are faster on PyTorch (`SCRIPT_RUN_TORCH`; seconds, run
alone on this 2-core machine, TensorFlow -> PyTorch): cardinality 32 -> 14,
degradation 20 -> 12, the lesion-sweep benchmark 20 -> 13, grow 19 -> 14,
visualize_imagenet 28 -> 18, sequence_gru 12 -> 10, and the 54-block study,
identity_mappings and the ResNet throughput benchmark. The rest stay on TensorFlow
(`SCRIPT_RUN`): the top-9 benchmark (26 vs 35), the notebooks (their stored outputs
come from TensorFlow), and the tests that read the quick demo `make test` runs first.

A test that runs a script is collected in the pytest session of that script's backend,
so the test's own process (which reads what the script wrote) runs the same backend.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_run(backend: str) -> pytest.MarkDecorator:
    """The marker of a test that runs a script end to end on `backend`."""
    return pytest.mark.backends(
        backend, reason=f"runs a script end to end in a subprocess, once, on {backend} (the "
        "faster backend for it; tests/script_runs.py); its parts run on every backend")


SCRIPT_RUN = script_run("tensorflow")
SCRIPT_RUN_TORCH = script_run("torch")


def run_script(script: str, tmp_path, *args: str, timeout: int = 600) -> str:
    """Runs `python ROOT/script args` on the current backend in an empty folder; returns stdout.

    Keras' home is a fresh folder under `tmp_path` (nothing cached leaks in), and the
    run must leave its working folder empty: a script writes only where it is told.
    """
    import keras

    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               KERAS_HOME=str(tmp_path / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3",
               MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert os.listdir(cwd) == [], f"{script} wrote into its working folder: {os.listdir(cwd)}"
    return result.stdout
