"""Run a benchmark once per Keras backend, each in its own process, and gather its rows.

Keras picks its backend at import time, so `--backend all` re-runs the same
script with `KERAS_BACKEND` set and `--backend` fixed, and reads back the
JSON rows each child wrote. Used by every script in benchmarks/.

    rows = run_per_backend(__file__, sys.argv[1:], ["tensorflow", "jax", "torch"])
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """`--backend` (one backend, "all", or the current one) and the hidden `--rows-out`."""
    parser.add_argument(
        "--backend",
        default="current",
        choices=("current", "all") + BACKENDS,
        help="backend to measure: 'all' runs each in its own process; 'current' uses "
        "KERAS_BACKEND (default tensorflow)",
    )
    parser.add_argument("--rows-out", default=None, help=argparse.SUPPRESS)


def _strip_backend_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--backend", "--rows-out"):
            skip = True
            continue
        if arg.startswith(("--backend=", "--rows-out=")):
            continue
        out.append(arg)
    return out


def needs_dispatch(backend: str) -> bool:
    """True when this process must hand the run to child processes."""
    import keras

    return backend == "all" or (backend not in ("current", keras.backend.backend()))


def run_per_backend(script: str, argv: list[str], backend: str) -> list[dict]:
    """Run `script` once per requested backend; return all rows (each has "backend").

    A child that fails (non-zero exit: an error, or outputs that differ)
    makes this raise SystemExit with its exit code after all children ran.
    """
    backends = BACKENDS if backend == "all" else (backend,)
    rows: list[dict] = []
    failed = 0
    for name in backends:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, script, *_strip_backend_args(argv), "--backend", name,
                   "--rows-out", str(out)]
            result = subprocess.run(cmd, env=env, check=False)
            if result.returncode != 0:
                print(f"[{name}] failed with exit code {result.returncode}", file=sys.stderr)
                failed = failed or result.returncode
                continue
            rows.extend(json.loads(out.read_text()))
    if failed:
        raise SystemExit(failed)
    return rows


def write_rows(path: str | None, rows: list[dict]) -> None:
    """Write this process's rows for a parent `run_per_backend` (no-op without a path)."""
    if path:
        Path(path).write_text(json.dumps(rows))
