"""Every notebook in notebooks/ runs top to bottom without an error.

The kernel is this interpreter (`sys.executable`), whatever kernelspecs the
machine has installed: a kernelspec pointing at it is written into a
temporary directory and handed to nbclient through its own KernelManager.
"""

import glob
import json
import os
import sys

import pytest

import ipykernel  # noqa: E402, F401  (the test extra has all three: missing, the suite fails)
import nbclient  # noqa: E402
import nbformat  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
TIMEOUT_PER_NOTEBOOK = 300  # per cell; CI shares 2 cores with the other xdist worker
KERNEL_NAME = "keras-residual-tests"


def _kernel_manager(tmp_path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "keras_residual tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


@pytest.mark.slow
@pytest.mark.backends("tensorflow", reason="each notebook runs in a kernel of its own on the "
                      "default backend (a minute each); what they call runs on every backend")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    # Notebooks import keras_residual from this checkout even where it is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get(
        "PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path),
        timeout=TIMEOUT_PER_NOTEBOOK,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Raises CellExecutionError (with the cell and its traceback) on the first failing cell.
    client.execute()
    errors = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.backends("tensorflow", reason="lists files; no backend runs")
def test_notebooks_are_found():
    assert any(p.endswith("quickstart.ipynb") for p in NOTEBOOKS)
