"""The README's quick start runs as written."""

import os
import re

import pytest

pytestmark = pytest.mark.multibackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_code() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block in the quick start, found {len(blocks)}"
    return blocks[0]


def test_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves cnn.keras into the working directory
    namespace = {"__name__": "readme_quick_start"}
    exec(compile(quick_start_code(), "README.md#quick-start", "exec"), namespace)
    assert (tmp_path / "cnn.keras").is_file()
    assert tuple(namespace["rnn"].output.shape) == (None, 10)
    assert sum(type(layer).__name__ == "Residual" for layer in namespace["cnn"].layers) == 3
