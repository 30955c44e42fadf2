"""Every python snippet of README.md runs as written.

The snippets of one `## ` section (its `### ` subsections included) run in
order in one fresh namespace, in a temporary working directory: a later
snippet of a section may use what an earlier one defined, never what
another section defined.
"""

import linecache
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sections whose snippets are quick on every backend; the others build
# ResNet-50 or run lesion sweeps and run on TensorFlow only.
CHEAP = {"Quick start", "`Residual` options"}


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def python_snippets() -> dict[str, list[str]]:
    """The python blocks of README.md, grouped by `## ` section, in order."""
    sections: dict[str, list[str]] = {}
    for part in re.split(r"^## ", readme(), flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        blocks = re.findall(r"^```python\n(.*?)^```", part, flags=re.S | re.M)
        if blocks:
            sections[title] = blocks
    return sections


SECTIONS = python_snippets()


def test_every_snippet_is_collected():
    assert sum(map(len, SECTIONS.values())) == readme().count("```python")
    assert "Quick start" in SECTIONS and "Lesion studies" in SECTIONS


def run_section(title: str) -> dict:
    namespace = {"__name__": "readme"}
    for i, code in enumerate(SECTIONS[title]):
        filename = f"README.md, {title}, python block {i + 1}"
        # As doctest does: tracebacks and inspect.getsource (Keras reads a lambda's
        # source when it saves one) find the snippet's lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        exec(compile(code, filename, "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    "title",
    [pytest.param(t, marks=pytest.mark.multibackend) if t in CHEAP else t for t in SECTIONS],
)
def test_section_runs(title, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets save models into the working directory
    namespace = run_section(title)
    if title == "Quick start":
        assert (tmp_path / "cnn.keras").is_file()
        assert tuple(namespace["rnn"].output.shape) == (None, 10)
        assert sum(type(layer).__name__ == "Residual" for layer in namespace["cnn"].layers) == 3
    if title == "`Residual` options":
        import keras
        import numpy as np

        # The reloaded lambda merge is x + 0.5 Dense(x), computed here with NumPy.
        model = namespace["reloaded"]
        dense = model.layers[1].layer
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
        x = np.random.default_rng(0).random((4, 8), dtype="float32")
        np.testing.assert_allclose(model.predict(x, verbose=0), x + 0.5 * (x @ kernel + bias),
                                   rtol=1e-5, atol=1e-6)
