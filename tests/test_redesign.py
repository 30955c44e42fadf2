"""The redesign's contracts: one encoding of a block's wiring, one graph walker, surgery
below lesion, and the three bugs that copies of the wiring caused (each fails on the
code before the redesign).

References are computed another way: NumPy closed forms of the blocks, and the
source tree read with `ast`.
"""

import ast
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import keras_residual as kr
from keras_residual import Residual, graph, models, surgery
from keras_residual.gradients import input_gradient
from keras_residual.lesion import path_gradients, single_block_deletion
from tests.layer_test_utils import random_input, to_numpy

PACKAGE = pathlib.Path(kr.__file__).parent
multibackend = pytest.mark.multibackend


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


# ------------------------------------------------------------- the three bugs


def _relu(x):
    return np.maximum(x, 0.0)


@multibackend
def test_lesion_ready_mode_keeps_the_stochastic_depth_inference_scale():
    # Three blocks y = relu(x + 0.5 * (x W + b)) (Huang et al. 2016, Sec. 3: a
    # branch of survival 0.5 is scaled by 0.5 at test time).
    model = keras.Sequential([keras.Input((8,))] + [
        Residual(layers.Dense(8), drop_rate=0.5, drop_scaling="inference", activation="relu")
        for _ in range(3)
    ])
    x = random_input((16, 8))
    expected = x
    for block in surgery.residual_blocks(model):
        kernel, bias = (to_numpy(w) for w in block.layer.weights)
        expected = _relu(expected + 0.5 * (expected @ kernel + bias))
    outside = model.predict(x, verbose=0)
    with kr.lesion_ready(model):
        inside = model.predict(x, verbose=0)
    np.testing.assert_allclose(outside, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inside, expected, rtol=1e-5, atol=1e-5)


@multibackend
def test_downsampling_flags_only_the_blocks_that_change_shape():
    model = models.cifar_resnet(20, input_shape=(8, 8, 3), filters=(4, 8, 16))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(4, 8, 8, 3)).astype("float32"), np.arange(4) % 10)
    result = single_block_deletion(model, data, batch_size=4, progress=False)
    assert len(result.names) == 9
    assert result.names[result.downsampling].tolist() == ["conv3_block1", "conv4_block1"]
    # The post-merge ReLU makes no block pass its input on when deleted.
    assert not any(surgery.passes_input_when_deleted(b) for b in surgery.residual_blocks(model))


@multibackend
def test_per_sample_routing_routes_the_gate_of_a_gated_merge():
    # y = (1 - g) x + g f, g = sigmoid(a x + c), f = w x + b, 1-D. The shortcut
    # path carries (1 - g); the branch path carries g w + g' (f - x) with
    # g' = g (1 - g) a: the gate is routed with the branch, so the two paths
    # sum to the full derivative and nothing reaches x unrouted.
    w, b, a, c = 1.5, 0.25, -0.8, 0.3
    block = Residual(
        layers.Dense(1, kernel_initializer=keras.initializers.Constant(w),
                     bias_initializer=keras.initializers.Constant(b)),
        merge=kr.GatedMerge(bias_initializer=c,
                            kernel_initializer=keras.initializers.Constant(a)),
    )
    model = keras.Sequential([keras.Input((1,)), block])
    x = np.array([[-1.0], [0.5], [2.0], [0.7]], dtype="float32")
    routes = np.array([[0], [0], [1], [1]])
    got = path_gradients(model, x, np.zeros(4), routes, loss=lambda y, p: p[:, 0]).ravel()
    g = 1.0 / (1.0 + np.exp(-(a * x[:, 0] + c)))
    f = w * x[:, 0] + b
    shortcut_path = 1.0 - g
    branch_path = g * w + g * (1.0 - g) * a * (f - x[:, 0])
    expected = np.where(routes[:, 0] == 1, branch_path, shortcut_path)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    full = shortcut_path + branch_path  # d/dx of (1 - g) x + g f
    h = 1e-3
    numeric = []
    for xi in x[:, 0]:
        up, down = (float(to_numpy(block(np.array([[xi + s]], "float32")))[0, 0]) for s in (h, -h))
        numeric.append((up - down) / (2 * h))
    np.testing.assert_allclose(full, numeric, rtol=1e-2, atol=1e-3)


@multibackend
def test_block_gradient_route_also_routes_the_gate():
    block = Residual(layers.Dense(1, kernel_initializer="ones"), merge="highway")
    model = keras.Sequential([keras.Input((1,)), block])
    x = np.array([[0.3], [1.2]], dtype="float32")
    routes = {"branch": np.ones((2, 1)), "shortcut": np.zeros((2, 1))}
    for route, per_sample in routes.items():
        expected = path_gradients(model, x, np.zeros(2), per_sample,
                                  loss=lambda y, p: p[:, 0]).ravel()
        with surgery.routed_gradients(model, **{route: [0]}):
            got = input_gradient(
                lambda t: keras.ops.sum(model(t, training=False)), x).ravel()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------ one encoding, one walker


@pytest.mark.backends("tensorflow", reason="reads source files; no backend runs")
def test_no_private_keras_name_outside_graph_py():
    ours = set()
    for _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                ours.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                ours.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
    foreign = {}
    for name, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and node.attr not in ours
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                foreign.setdefault(name, set()).add(node.attr)
    assert foreign == {"graph.py": {"_flatten_layers"}}


@pytest.mark.backends("tensorflow", reason="reads source files; no backend runs")
def test_only_the_wiring_modules_read_a_blocks_parts_by_attribute():
    parts = {"shortcut_layer", "merge_layer", "preactivation_layer", "shortcut_from"}
    allowed = {"residual.py", "shortcuts.py", "merges.py", "graph.py"}
    readers = {}
    for name, tree in _sources():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and (node.attr in parts or node.attr.startswith(
                    "_preact")) and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                readers.setdefault(name, set()).add(node.attr)
    assert not {k: v for k, v in readers.items() if k not in allowed}


@pytest.mark.backends("tensorflow", reason="reads source files; no backend runs")
def test_no_function_body_is_longer_than_60_lines():
    long = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                  ast.Constant):
                    body = body[1:]
                if body and body[-1].end_lineno - body[0].lineno + 1 > 60:
                    long.append(f"{name}:{node.name}")
    assert long == []


@multibackend
def test_importing_surgery_loads_no_lesion_module():
    code = (
        "import sys, keras_residual.surgery; "
        "print(sorted(m for m in sys.modules if m.startswith('keras_residual.lesion.') "
        "or m == 'keras_residual.lesion'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@multibackend
def test_call_runs_the_description_part_by_part():
    # A tool that follows parts() with run_part reproduces call, intact and
    # deleted, for every shortcut source and a gate that reads the input.
    block = Residual(layers.Dense(3), preactivation="relu", shortcut="projection",
                     shortcut_from="preactivated", merge="highway", activation="tanh")
    x = random_input((4, 3))
    y = to_numpy(block(x))
    pre = np.maximum(x, 0.0)
    kernel, bias = (to_numpy(w) for w in block.layer.weights)
    f = pre @ kernel + bias
    s = to_numpy(block.part("shortcut").layer(pre))
    g = 1.0 / (1.0 + np.exp(-to_numpy(block.part("merge").layer.gate(pre))))
    np.testing.assert_allclose(y, np.tanh((1 - g) * s + g * f), rtol=1e-5, atol=1e-6)
    deleted = to_numpy(block.wire(x, block.run_part, deleted=True))
    np.testing.assert_allclose(deleted, np.tanh((1 - g) * s), rtol=1e-5, atol=1e-6)
    assert [p.role for p in block.parts()] == [
        "preactivation", "branch", "shortcut", "merge", "activation"]
    assert block.part("merge").inputs == ("shortcut", "branch", "preactivated")


@multibackend
def test_graph_trace_reaches_nested_tensors_on_public_api():
    inner = keras.Sequential([layers.Dense(4, name="fc1"), layers.Dense(4, name="fc2")],
                             name="f")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="head")(Residual(inner, name="b")(inputs)))
    p = kr.probe(model, ["b/branch/fc1", "head/input"])
    x = random_input((3, 4))
    fc1, block_out = (to_numpy(t) for t in p(x))
    k1, b1 = (to_numpy(w) for w in inner.get_layer("fc1").weights)
    np.testing.assert_allclose(fc1, x @ k1 + b1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(block_out, to_numpy(model.get_layer("b")(x)), rtol=1e-5, atol=1e-6)
    assert graph.output_layer(model).name == "head"


@multibackend
def test_clone_copies_weights_by_path_not_order():
    a = keras.Sequential([keras.Input((3,)), Residual(layers.Dense(3), preactivation="bn_relu",
                                                      name="blk")])
    copy = graph.clone(a)
    x = random_input((5, 3))
    np.testing.assert_array_equal(to_numpy(copy(x)), to_numpy(a(x)))
    assert all(va is not vb for va, vb in zip(a.weights, copy.weights, strict=True))


@multibackend
def test_moved_names_keep_working_and_warn_once():
    import importlib
    import warnings

    from keras_residual import _deprecation

    _deprecation._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("keras_residual.lesion.surgery")
        assert old.delete_blocks is surgery.delete_blocks
        assert old.delete_blocks is surgery.delete_blocks
        studies = importlib.import_module("keras_residual.lesion.studies")
        assert studies.single_block_deletion is single_block_deletion
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(messages) == 2
    assert "keras_residual.surgery.edit.delete_blocks" in messages[0]
