"""Every script in examples/ and benchmarks/ runs in its --quick mode and writes only where told.

Each script runs in a fresh, empty working folder with `--out` pointing
elsewhere (where it takes one): afterwards the working folder must still be
empty, and the outputs must be under `--out`. The benchmarks also check that
the variants they time compute the same outputs and exit 1 otherwise; a zero
exit status here is that check passing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
from script_runs import ROOT, SCRIPT_RUN, SCRIPT_RUN_TORCH, run_script

TESTS = os.path.dirname(os.path.abspath(__file__))

pytestmark = [pytest.mark.slow, SCRIPT_RUN]


def run(script: str, tmp_path, *args: str, out: bool = True, timeout: int = 420) -> tuple[str, str]:
    """Run `script --quick [--out tmp/out] args` in an empty folder; return (stdout, out dir)."""
    out_dir = tmp_path / "out"
    extra = ["--out", str(out_dir)] if out else []
    return run_script(script, tmp_path, "--quick", *args, *extra, timeout=timeout), str(out_dir)


def test_every_script_is_run_by_the_suite():
    """No script in examples/ or benchmarks/ goes untested: each is named in a test file."""
    scripts = [
        os.path.relpath(p, ROOT)
        for folder in ("examples", "benchmarks")
        for p in glob.glob(os.path.join(ROOT, folder, "*.py"))
        if not os.path.basename(p).startswith("_")
    ]
    text = "\n".join(open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(TESTS, "*.py")))
    missing = [s for s in scripts if os.path.basename(s) not in text]
    assert not missing, f"scripts no test runs: {missing}"
    quick = [s for s in scripts if "--quick" not in open(os.path.join(ROOT, s)).read()]
    assert not quick, f"scripts without --quick: {quick}"


@pytest.mark.parametrize(
    "script", ["benchmarks/guided_backprop.py",
               pytest.param("benchmarks/lesion_sweep.py", marks=SCRIPT_RUN_TORCH),
               "benchmarks/top_activations.py"]
)
def test_benchmark_quick_runs_and_its_variants_agree(script, tmp_path):
    stdout, _ = run(script, tmp_path, out=False)
    assert re.search(r"(agree|match|compute the model's)", stdout), stdout


@pytest.mark.parametrize(
    "script, header",
    [
        ("benchmarks/wrapper_overhead.py", "Residual ms"),
        pytest.param("benchmarks/resnet_throughput.py", "keras.app img/s",
                     marks=SCRIPT_RUN_TORCH),
        ("benchmarks/grad_cam.py", "Grad-CAM ms/img"),
        ("benchmarks/feature_vis.py", "step ms"),
    ],
)
def test_side_by_side_benchmark_quick_prints_its_table(script, header, tmp_path):
    # Each exits 1 before timing when its two variants compute different outputs.
    stdout, _ = run(script, tmp_path, out=False)
    assert header in stdout, stdout


#: `make test` runs the quick demo first, from the core install (`make demo-quick`), and
#: names its folder here, so that the demo runs once per `make test`.
SHARED_DEMO = os.environ.get("KERAS_RESIDUAL_DEMO_QUICK_OUT", "")


def test_lesion_study_quick_writes_every_figure(tmp_path):
    args = []
    if SHARED_DEMO:
        # The quick demo trained the same three networks (`demo_section`, same digits, seed and
        # epochs) and saved them: `--load` reuses a copy, and only the effective-path net trains.
        shutil.copytree(os.path.join(SHARED_DEMO, "lesion_models"), tmp_path / "models")
        args = ["--load", str(tmp_path / "models")]
    stdout, out = run("examples/lesion_study.py", tmp_path, *args)
    if SHARED_DEMO:
        assert stdout.count("[lesion] loading ") == 3, stdout
    expected = {"lesion_single.png", "lesion_k_blocks.png", "lesion_reorder.png",
                "lesion_path_gradients.png", "lesion_remaining_paths.png",
                "lesion_stochastic_depth.png"}
    assert expected <= set(os.listdir(out)), os.listdir(out)
    assert "effective-path training" in stdout
    match = re.search(r"single deletion: residual intact ([\d.]+), worst ([\d.]+); "
                      r"plain intact ([\d.]+), best ([\d.]+)", stdout)
    assert match, stdout
    intact, worst, plain_intact, plain_best = map(float, match.groups())
    # Ten classes: chance error is 0.9. Veit et al. 2016, Fig. 3: no single deletion hurts the
    # residual network as much as the mildest single deletion hurts its plain twin.
    assert intact < 0.5 and worst < plain_best, match.group(0)


@SCRIPT_RUN_TORCH
def test_visualize_imagenet_quick_writes_its_figures(tmp_path):
    stdout, out = run("examples/visualize_imagenet.py", tmp_path)
    written = re.findall(r"wrote (\S+\.png)", stdout)
    assert len(written) == 4, stdout  # top-9 + guided, branch vs block, conv1 kernels, Grad-CAM
    assert all(os.path.dirname(p) == out and os.path.getsize(p) > 0 for p in written)


@SCRIPT_RUN_TORCH
def test_sequence_gru_quick_writes_nothing(tmp_path):
    stdout, _ = run("examples/sequence_gru.py", tmp_path, out=False)
    assert re.search(r"MNIST rows test accuracy: residual \d\.\d{4}, plain \d\.\d{4}", stdout)
    assert "IMDB: skipped" in stdout


#: The quick demo's accuracy floor: `mnist_conv.QUICK` reaches about 0.87 on the 1,000 offline
#: test digits; chance is 0.10.
DEMO_QUICK_ACCURACY = 0.7

def test_demo_quick_runs_every_section_for_real(tmp_path):
    """The demo as `make demo` runs it (quick): real visualization and lesion sections."""
    if SHARED_DEMO:
        out = SHARED_DEMO
        assert os.path.isfile(os.path.join(out, "results.json")), f"no quick demo in {out}"
    else:
        _, out = run("examples/demo.py", tmp_path, timeout=600)
    results = json.load(open(os.path.join(out, "results.json"), encoding="utf-8"))
    assert results["failed sections"] == []
    assert {"visualize_mnist", "lesion_study"} <= set(results["sections"])
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    images = re.findall(r"<img src='([^']+)'", page)
    assert len(images) >= 6
    assert all(os.path.getsize(os.path.join(out, p)) > 0 for p in images)
    # The printed accuracies, recomputed from the saved models.
    import keras

    from keras_residual.datasets import load_mnist

    data = load_mnist(verbose=False)
    for name, key in (("mnist_residual", "residual CNN test accuracy"),
                      ("mnist_plain", "plain CNN test accuracy")):
        model = keras.saving.load_model(os.path.join(out, f"{name}.keras"))
        predicted = model.predict(data.x_test, batch_size=500, verbose=0).argmax(-1)
        assert results[key] == pytest.approx(np.mean(predicted == data.y_test), abs=6e-5)
        assert results[key] > DEMO_QUICK_ACCURACY, (key, results[key])
    # The atlas of the residual CNN (linked from the index) reads the same 1,000 test digits:
    # its intact error is one minus the accuracy above, and in this two-block network each
    # deletion costs accuracy (Veit et al. 2016, Fig. 3).
    assert results["atlas"] == "atlas/index.html" and "href='atlas/index.html'" in page
    record = json.load(open(os.path.join(out, "atlas", "atlas.json"), encoding="utf-8"))
    assert record["images"] == len(data.y_test) and record["labels"] == "given labels"
    assert record["intact_error"] == pytest.approx(1 - results["residual CNN test accuracy"],
                                                   abs=6e-5)
    assert min(record["deletion_errors"].values()) > record["intact_error"]
    # The Transformer section: its errors recomputed from the network it saved, a deleted
    # sub-layer by rebuilding the network without it (the section used the stacked sweep).
    from keras_residual.surgery import remove_layers, residual_blocks

    assert "transformer_lesion" in results["sections"]
    record = json.load(open(os.path.join(out, "transformer_demo.json"), encoding="utf-8"))
    rows = data.x_test[: record["test_digits"]].reshape(-1, 28, 28)
    labels = data.y_test[: record["test_digits"]]
    transformer = keras.saving.load_model(os.path.join(out, "transformer_demo.keras"))

    def error(network):
        return float(np.mean(network.predict(rows, verbose=0).argmax(-1) != labels))

    assert record["intact_error"] == pytest.approx(error(transformer), abs=1e-9)
    blocks = residual_blocks(transformer)
    assert record["names"] == [b.name for b in blocks] and len(blocks) == 8
    assert record["errors"][0] == pytest.approx(error(remove_layers(transformer, blocks[:1])),
                                                abs=1e-9)
