"""How the suite runs an example or benchmark script end to end, in a subprocess.

A whole script trains small networks for seconds to a minute; its parts (blocks,
studies, visualizations, training helpers) are tested on every backend in the unit
tests, so the script itself runs once, on the backend where it is fastest. That is
TensorFlow for most: the lesion sweeps, top-9 searches and notebooks evaluate one
traced graph many times, where PyTorch pays its per-op cost on every call (the lesion
notebook: 38 s on TensorFlow, 312 s on PyTorch). Three scripts train many networks
once each, where TensorFlow's tracing dominates, and run on PyTorch (`SCRIPT_RUN_TORCH`):
the 54-block study 80 s -> 50 s, identity_mappings 54 s -> 33 s, the ResNet throughput
benchmark 49 s -> 31 s (full suite runs on each backend, two xdist workers, this 2-core machine).

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
