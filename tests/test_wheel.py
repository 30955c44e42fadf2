"""The package as users install it: `pip wheel .`, installed into a scratch target.

The wheel (not the checkout) goes into an empty folder; a fresh interpreter
started outside the repository, with only that folder added to its path,
imports every subpackage that the source tree has and runs the README's quick
start. A module left out of the wheel's package list, or a data file the code
reads from the checkout, fails here.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.backends(
    "tensorflow", reason="packaging does not depend on the backend; one build is enough"
)


def _source_modules() -> list[str]:
    """Every module of the source tree, as dotted names."""
    names = []
    for path in glob.glob(os.path.join(ROOT, "keras_residual", "**", "*.py"), recursive=True):
        relative = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        names.append(relative.removesuffix(".__init__"))
    return sorted(names)


def _quick_start() -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)[0]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_quick_start_outside_the_repository(tmp_path):
    wheels, target, outside = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    outside.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", ROOT, "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   check=True, cwd=tmp_path, timeout=300)
    (wheel,) = glob.glob(str(wheels / "keras_residual-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name[:-3].replace("/", ".").removesuffix(".__init__")
                    for name in archive.namelist() if name.endswith(".py")}
    missing = set(_source_modules()) - packaged
    assert not missing, f"modules the wheel leaves out: {sorted(missing)}"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), wheel],
                   check=True, timeout=300)

    script = "\n".join([
        "import importlib, sys",
        "import keras_residual",
        f"assert keras_residual.__file__.startswith({str(target)!r}), keras_residual.__file__",
        f"for name in {_source_modules()!r}:",
        "    importlib.import_module(name)",
        _quick_start(),
        "print('quick start ran from', keras_residual.__file__)",
    ])
    # Only the wheel's folder: neither the checkout nor an editable install may be found.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")
    result = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, "
                             f"{str(target)!r}); exec(sys.stdin.read())"],
                            input=script, cwd=outside, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"quick start ran from {target}" in result.stdout
    assert (outside / "cnn.keras").is_file()
