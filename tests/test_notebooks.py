"""Every notebook in notebooks/ runs top to bottom, and what it prints holds.

After a notebook's own cells, the test runs cells of its own in the same
kernel (`CHECKS`; the notebook file is not changed): each recomputes what the
notebook printed another way (NumPy from the models it trained, SciPy's
binomial, the papers' numbers) and asserts it.

The kernel is this interpreter (`sys.executable`), whatever kernelspecs the
machine has installed: a kernelspec pointing at it is written into a
temporary directory and handed to nbclient through its own KernelManager.
"""

import glob
import json
import os
import sys

import ipykernel  # noqa: E402, F401  (the test extra has all three: missing, the suite fails)
import nbclient  # noqa: E402
import nbformat  # noqa: E402
import pytest
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


#: Check cells per notebook: `(anchor, code)` runs `code` right after the first code cell
#: whose source contains `anchor` (before later cells change the models), None at the end.
CHECKS = {
    "quickstart.ipynb": [(None, """
import numpy as np
predicted = model.predict(data.x_test, verbose=0).argmax(-1)
assert abs(accuracy - np.mean(predicted == data.y_test)) < 1e-3, accuracy
assert accuracy > 0.4, accuracy  # 24 steps on 768 digits; chance is 0.10
assert lesioned < accuracy - 0.1, (lesioned, accuracy)  # block1's branch carries the features
""")],
    "visualization.ipynb": [("top = top_activations(", """
import numpy as np
predicted = model.predict(data.x_test, verbose=0).argmax(-1)
assert np.mean(predicted == data.y_test) > 0.6
# stem 3x3 (3), pool 2/2 (4, jump 2), then two 3x3 convs per block at jump 2 (+8 each).
rf = receptive_field(model, "block3")
assert tuple(rf.size) == (4 + 3 * 8, 4 + 3 * 8) and tuple(rf.jump) == (2, 2), rf
# Each block's top-9 per channel, ranked by NumPy from the per-image maxima.
for path in blocks:
    features = keras.Model(model.inputs, model.get_layer(path).output).predict(images, verbose=0)
    maxima = features.max(axis=(1, 2))
    ranked = np.argsort(-maxima, axis=0, kind="stable").T
    for c, order in enumerate(ranked):
        if maxima[order[8], c] > maxima[order[9], c]:  # no tie at the cut
            assert set(order[:9]) == set(top[path].indices[c]), (path, c)
# The residual difference y - x of block1, from two sub-models and NumPy.
x_in, y_out = (keras.Model(model.inputs, model.get_layer(p).output).predict(digit[None], verbose=0)
               for p in ("pool", "block1"))
np.testing.assert_allclose(diffs["block1"], (y_out - x_in)[0], rtol=1e-4, atol=1e-5)
"""), ("from keras_residual.viz import integrated_gradients", """
# Completeness (Sundararajan et al. 2017, Prop. 1): each map sums to the top class's logit change
# from a black image; the logits from the flattened features and the last Dense, in NumPy.
dense = model.layers[-1]
kernel, bias = dense.get_weights()
features = keras.Model(model.inputs, dense.input).predict(np.concatenate([digits, 0 * digits]),
                                                          verbose=0)
logits = features @ kernel + bias
change = logits[:3][np.arange(3), classes] - logits[3:][np.arange(3), classes]
np.testing.assert_allclose(ig.sum(axis=(1, 2, 3)), change, rtol=0.02)
assert (classes == logits[:3].argmax(-1)).all()
assert sg.shape == digits.shape and np.abs(sg).max() > 0
"""), ("from keras_residual.viz import feature_visualization", """
# Olah et al. (2017): each image drives its channel of block3 harder than any of the 300 digits.
feature_model = keras.Model(model.inputs, model.get_layer("block3").output)
on_vis = feature_model.predict(vis, verbose=0).mean(axis=(1, 2))
on_digits = feature_model.predict(data.x_test[:300], verbose=0).mean(axis=(1, 2))
for i, c in enumerate(vis_channels):
    assert on_vis[i, c] > on_digits[:, c].max(), (c, on_vis[i, c], on_digits[:, c].max())
assert vis.shape == (4, 28, 28, 1) and vis.min() >= 0 and vis.max() <= 1
"""), ("site = atlas(", """
# The atlas reads the same 300 digits: its intact error is the model's, three equal-shape blocks
# form one stage, and the chance overlap of two top-9 sets is 81/300.
predicted = model.predict(data.x_test[:300], verbose=0).argmax(-1)
assert abs(site.intact_error - np.mean(predicted != data.y_test[:300])) < 1e-9
assert site.stages == [["block1", "block2", "block3"]] and len(site.overlaps) == 2
assert abs(site.overlaps[0]["chance"] - 81 / 300) < 1e-12
assert max(site.deletion_errors.values()) > site.intact_error  # some block matters
"""), (None, """
assert sorted(events.Tags()["tensors"]) == sorted(
    [f"activations/{p}" for p in ("block1", "block2", "block3", "stem")] + ["filters/stem"]
    + ["refinement/correlation/block2", "refinement/overlap/block2"]
    + [f"residual/block{i}" for i in (1, 2, 3)] + ["topk/guided"])
""")],
    "papers.ipynb": [(None, """
from keras_residual.experiments import published
errors = degradation["final_train_error"]
depths = sorted(errors["plain"], key=int)
# He et al. 2015, Fig. 6: deeper plain nets train worse; the ResNets of every depth train better.
assert [errors["plain"][d] for d in depths] == sorted(errors["plain"][d] for d in depths)
assert all(errors["residual"][d] < errors["plain"][d] for d in depths[1:])
# The tables put the papers' own numbers beside ours.
for name, row in identity["table1"].items():
    assert row["published_test_error"] == published.SHORTCUT_VARIANTS_RESNET110[name]
for row in cardinality["table3"].values():
    assert row["published_test_error"] == published.CARDINALITY_RESNEXT50[row["cardinality"]]
""")],
    "transformer.ipynb": [("sublayers = stream.unit_deletion(", """
import numpy as np
from keras_residual.surgery import remove_layers, residual_blocks
# Sub-layers deleted by rebuilding the model without them (the study used the stacked sweep).
def error_of(m):
    return float(np.mean(m.predict(x_test, verbose=0).argmax(-1) != y_test))
subs = residual_blocks(model)
assert len(subs) == 12 and abs(blocks.intact_error - error_of(model)) < 1e-9
assert abs(blocks.intact_error - (1 - accuracy)) < 1e-6
for i in (0, 1, 11):  # the first block's attention and MLP, the last MLP
    assert abs(sublayers.errors[i] - error_of(remove_layers(model, [subs[i]]))) < 1e-9, i
# Lad et al. 2024: the first block matters most.
assert blocks.errors.argmax() == 0, blocks.errors
"""), (None, """
import numpy as np
from scipy import stats
# Sun et al.'s "skip" is the model without blocks 2-5; Fig. 6a's path lengths are binomial.
skip = list(middle.names).index("skip")
assert abs(middle.errors[skip] - error_of(remove_layers(model, subs[2:10]))) < 1e-9
np.testing.assert_allclose(g.distribution, stats.binom(12, 0.5).pmf(np.arange(13)), rtol=1e-9)
assert 0 <= low <= high <= 12 and g.n_blocks == 12
""")],
    "lesion.ipynb": [("single = lesion.single_block_deletion(", """
import numpy as np
# Veit et al. 2016, Fig. 3: deleting one block hurts the plain net far more than the ResNet.
assert single.errors.mean() < single_plain.errors.min(), (single.errors, single_plain.errors)
assert abs(single.intact_error - np.mean(residual.predict(x_test, verbose=0).argmax(-1) != y_test)) < 1e-6
"""), (None, """
import numpy as np
from scipy import stats
# Fig. 5a: the error grows smoothly with the number of deleted blocks.
assert np.all(np.diff(k_result.mean) > 0), k_result.mean
# Fig. 6a: 95% of the paths of a 54-block network, from SciPy's binomial.
assert lesion.path_length_interval(54) == tuple(int(v) for v in stats.binom(54, 0.5).interval(0.95))
""")],
}


#: Notebooks whose kernel runs another backend than TensorFlow, and why. transformer.ipynb
#: rebuilds 19 networks for its rearrangement studies and runs each eagerly once: 23 s on
#: TensorFlow, 2 s on PyTorch (the whole notebook: about 50 s against 20 s).
KERNEL_BACKENDS = {"transformer.ipynb": "torch"}


def _with_checks(notebook, checks):
    """`notebook` with each check cell inserted after its anchor cell (the file is unchanged)."""
    for anchor, code in checks:
        cell = nbformat.v4.new_code_cell(code)
        if anchor is None:
            notebook.cells.append(cell)
            continue
        (index,) = [i for i, c in enumerate(notebook.cells)
                    if c.cell_type == "code" and anchor in c.source][:1]
        notebook.cells.insert(index + 1, cell)
    return notebook


@pytest.mark.backends("tensorflow", reason="lists files; no backend runs")
def test_every_notebook_is_checked():
    assert {os.path.basename(p) for p in NOTEBOOKS} == set(CHECKS)


@pytest.mark.slow
@pytest.mark.backends("tensorflow", reason="each notebook runs in a kernel of its own, on "
                      "TensorFlow, its fastest backend (tests/script_runs.py), or the backend "
                      "KERNEL_BACKENDS names; what they call runs on every backend")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    backend = KERNEL_BACKENDS.get(os.path.basename(path), "tensorflow")
    monkeypatch.setenv("KERAS_BACKEND", backend)
    if backend == "torch":  # as `make test-backends`: OpenMP threads that spin slow the others
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
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
    notebook = _with_checks(notebook, CHECKS[os.path.basename(path)])
    # Raises CellExecutionError (with the cell and its traceback) on the first failing cell,
    # the checks included.
    client.execute()
    errors = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.backends("tensorflow", reason="lists files; no backend runs")
def test_notebooks_are_found():
    assert any(p.endswith("quickstart.ipynb") for p in NOTEBOOKS)
