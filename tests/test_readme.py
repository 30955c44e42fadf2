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


@pytest.mark.backends("tensorflow", reason="reads README.md; no backend runs")
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


def _check_quick_start(namespace, tmp_path):
    assert (tmp_path / "cnn.keras").is_file()
    assert tuple(namespace["rnn"].output.shape) == (None, 10)
    assert sum(type(layer).__name__ == "Residual" for layer in namespace["cnn"].layers) == 3


def _check_options(namespace, tmp_path):
    import keras
    import numpy as np

    import keras_residual as kr

    # The reloaded lambda merge is x + 0.5 Dense(x), computed here with NumPy.
    model = namespace["reloaded"]
    dense = model.layers[1].layer
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (dense.kernel, dense.bias))
    x = np.random.default_rng(0).random((4, 8), dtype="float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), x + 0.5 * (x @ kernel + bias),
                               rtol=1e-5, atol=1e-6)
    # The deleted block is relu(x + 0) = 1 for x = 1; the lesion state is restored after.
    np.testing.assert_array_equal(namespace["deleted"], np.ones((2, 8)))
    assert namespace["block"].get_lesion_state() is None or (
        namespace["block"].get_lesion_state() == kr.LesionState())
    parts = [(p.role, p.inputs) for p in namespace["block"].parts()]
    assert parts == [("preactivation", ("x",)), ("branch", ("preactivated",)),
                     ("shortcut", ("x",)), ("merge", ("shortcut", "branch", "preactivated")),
                     ("activation", ("merged",))]


def _check_builders(namespace, tmp_path):
    import keras
    import numpy as np

    # He et al. 2015, Table 1 and keras.applications: the same network, the same parameters.
    assert namespace["net"].count_params() == keras.applications.ResNet50(
        weights=None).count_params() == 25_636_712
    rates = [b.drop_rate for b in namespace["cifar"].layers if type(b).__name__ == "Residual"]
    # Huang et al. 2016: the l-th of L = 54 blocks drops with probability 0.5 l / L.
    np.testing.assert_allclose(rates, 0.5 * np.arange(1, 55) / 54, rtol=1e-6)


def _check_visualization(namespace, tmp_path):
    import numpy as np

    # conv1 7x7/2, pool 3x3/2, three 3x3 blocks at jump 4, then conv3_block1's 3x3 at jump 8.
    rf = namespace["rf"]
    size = 7 + 2 * 2 + 3 * 2 * 4 + 2 * 8
    assert (tuple(rf.size), tuple(rf.jump)) == ((size, size), (8, 8))
    x = namespace["x"]
    top = namespace["top"]["conv3_block1"]
    assert top.indices.shape == (512, 9)
    # Each channel's top-9 are its 9 largest per-image maxima, in order.
    assert np.all(np.diff(top.values, axis=1) <= 0)
    assert namespace["patches"].shape[:2] == (512, 9)
    assert namespace["g"].shape == namespace["d"].shape == x[:9].shape
    assert namespace["cam"].shape == (4, 2, 2) and np.all(namespace["cam"] >= 0)
    assert namespace["up"].shape == (4, 64, 64) and namespace["ggc"].shape == x[:4].shape
    # Completeness (Sundararajan et al. 2017, Prop. 1) against the logits computed in NumPy from
    # the pooled features: the attributions sum to logit(x) - logit(zeros) of the top class.
    import keras

    model = namespace["model"]
    pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = pooled.predict(np.concatenate([x[:1], 0 * x[:1]]), verbose=0) @ kernel + bias
    top = int(logits[0].argmax())
    np.testing.assert_allclose(namespace["ig"].sum(), logits[0, top] - logits[1, top], rtol=0.02)
    assert namespace["sg"].shape == x[:2].shape and np.abs(namespace["sg"]).max() > 0
    assert namespace["unit"].shape == x[:1].shape
    images = namespace["images"]
    assert images.shape == (3, 64, 64, 3) and 0 <= images.min() and images.max() <= 255


def _check_lesion(namespace, tmp_path):
    import numpy as np
    from scipy import stats

    single = namespace["single"]
    assert len(single.errors) == 9
    # Fig. 6a: the number of paths of each length is binomial(54, 1/2).
    np.testing.assert_allclose(namespace["lesion"].path_length_distribution(54),
                               stats.binom(54, 0.5).pmf(np.arange(55)), rtol=1e-9, atol=1e-15)


def _check_transformers(namespace, tmp_path):
    import numpy as np

    from keras_residual.surgery import remove_layers, residual_blocks

    lm, x, y = namespace["lm"], namespace["x"], namespace["y"]
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token

    def error(model):
        return float(np.mean(model.predict(x, verbose=0).argmax(-1) != y))

    # Each sub-layer deleted by rebuilding the model without it (the study: the stacked sweep);
    # the first and the last whole block likewise.
    subs = residual_blocks(lm)
    assert [b.name for b in subs] == list(namespace["sublayers"].names)
    for block, reported in zip(subs, namespace["sublayers"].errors, strict=True):
        assert reported == error(remove_layers(lm, [block]))
    for i in (0, 3):
        assert namespace["blocks"].errors[i] == error(remove_layers(lm, subs[2 * i: 2 * i + 2]))
    # Sun et al.'s "skip": the middle blocks 2 and 3 removed.
    skip = list(namespace["middle"].names).index("skip")
    assert namespace["middle"].errors[skip] == error(remove_layers(lm, subs[2:6]))
    assert namespace["g"].n_blocks == 8 and len(namespace["swaps"].errors) == 3


def _check_hub(namespace, tmp_path):
    names = [layer.name for layer in namespace["net"].layers]
    assert names[-4:] == ["conv2_block1", "conv2_block2", "conv3_block1", "conv3_block2"]
    # The lesioned decoder copied back into a 2-layer keras-hub backbone: keras-hub's own
    # implementation of the two remaining layers gives the lesioned network's outputs.
    import numpy as np

    from keras_residual import models

    back = models.to_keras_hub(namespace["lesioned"], namespace["gpt2"])
    assert back.num_layers == 2
    tokens = np.arange(16).reshape(2, 8) % 50
    inputs = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    np.testing.assert_allclose(back.predict(inputs, verbose=0),
                               namespace["lesioned"].predict(inputs, verbose=0),
                               rtol=1e-5, atol=1e-5)
    full = namespace["decoder"].predict(inputs, verbose=0)
    assert np.abs(full - back.predict(inputs, verbose=0)).max() > 1e-3  # layer 1 mattered


def _check_growing(namespace, tmp_path):
    import numpy as np

    net, deeper = namespace["net"], namespace["deeper"]
    assert len(deeper.layers) == len(net.layers) + 2
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype="float32")
    np.testing.assert_allclose(deeper.predict(x, verbose=0), net.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


#: What each section's snippets must have computed, checked another way.
CHECKS = {
    "Quick start": _check_quick_start,
    "`Residual` options": _check_options,
    "Blocks and model builders": _check_builders,
    "Visualization": _check_visualization,
    "Lesion studies": _check_lesion,
    "Transformers and the residual stream": _check_transformers,
    "keras-hub models": _check_hub,
    "Growing a trained network": _check_growing,
}


@pytest.mark.backends("tensorflow", reason="reads README.md; no backend runs")
def test_every_section_with_code_is_checked():
    assert set(SECTIONS) == set(CHECKS)


#: Expensive sections that run on PyTorch instead of TensorFlow, and why.
ON_TORCH = {"Transformers and the residual stream": "rebuilds a network per rearrangement and "
            "runs it once, eagerly: 18 s on TensorFlow, 2 s on PyTorch; the library code is the "
            "same on every backend (tests/test_transformer.py)"}


def _marks(title: str):
    if title in CHEAP:
        return pytest.mark.multibackend
    if title in ON_TORCH:
        return pytest.mark.backends("torch", reason=ON_TORCH[title])
    return pytest.mark.backends("tensorflow", reason="builds ResNet-50s or runs lesion sweeps "
                                "(a minute); the cheap sections run on every backend")


@pytest.mark.parametrize("title", [pytest.param(t, marks=_marks(t)) for t in SECTIONS])
def test_section_runs(title, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets save models into the working directory
    namespace = run_section(title)
    CHECKS[title](namespace, tmp_path)
