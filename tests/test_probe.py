"""probe / resolve_path / list_paths: probed tensors equal the layers called by hand."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual
from keras_residual.probe import list_paths, probe, resolve_path

# Probing builds symbolic graphs, so the value checks run on every backend;
# path parsing and error messages are backend-independent and run on TF only.
ON_ALL_BACKENDS = pytest.mark.multibackend
pytestmark = ON_ALL_BACKENDS


def np_(x):
    return keras.ops.convert_to_numpy(x)


def run(model, x):
    """Calls a probe eagerly (cheaper than compiling `predict` for one batch)."""
    outputs = model(x, training=False)
    return [np_(o) for o in outputs] if isinstance(outputs, (list, tuple)) else np_(outputs)


def nested_model():
    """stem -> outer Residual(functional branch: fa -> inner Residual(Sequential) -> fb)."""
    inner = Residual(
        keras.Sequential(
            [layers.Conv2D(4, 3, padding="same", name="c1"), layers.ReLU(name="r1")], name="seq"
        ),
        name="inner",
    )
    branch_in = keras.Input((8, 8, 4))
    t = layers.Conv2D(4, 1, name="fa")(branch_in)
    t = inner(t)
    t = layers.Conv2D(6, 3, strides=2, padding="same", name="fb")(t)
    branch = keras.Model(branch_in, t, name="fbranch")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = Residual(branch, shortcut="projection", preactivation="bn_relu", name="outer")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(2, name="head")(x))


@pytest.fixture(scope="module")
def shared_model():
    """One nested model for the tests that only read it (building is the slow part)."""
    return nested_model()


@ON_ALL_BACKENDS
def test_nested_paths_match_layers_called_by_hand():
    model = nested_model()
    outer = model.get_layer("outer")
    # Non-trivial batch-norm statistics, so that the pre-activation matters.
    bn = outer.preactivation_layer.layers[0]
    bn.moving_mean.assign(np.full((4,), 0.3, "float32"))
    bn.moving_variance.assign(np.full((4,), 2.0, "float32"))
    paths = [
        "outer/branch/inner/branch/c1",
        "outer",
        "outer/preactivation",
        "outer/branch/fa",
        "outer/shortcut",
        "outer/branch/inner",
        "outer/input",
        "outer/branch/inner/input",
        "outer/branch",
        "stem",
    ]
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype("float32")
    outputs = run(probe(model, paths), x)
    stem = model.get_layer("stem")(x)
    pre = np.maximum(
        (np_(stem) - 0.3) / np.sqrt(2.0 + bn.epsilon) * np_(bn.gamma) + np_(bn.beta), 0.0
    )
    branch = outer.layer
    fa = branch.get_layer("fa")(pre)
    inner = branch.get_layer("inner")
    c1 = inner.layer.get_layer("c1")(fa)
    inner_out = np_(fa) + np.maximum(np_(c1), 0.0)
    f = branch.get_layer("fb")(inner_out)
    shortcut = outer.shortcut_layer(stem)
    expected = [c1, np_(shortcut) + np_(f), pre, fa, shortcut, inner_out, stem, fa, f, stem]
    assert len(outputs) == len(paths)
    for path, got, want in zip(paths, outputs, expected, strict=True):
        np.testing.assert_allclose(got, np_(want), rtol=1e-5, atol=1e-5, err_msg=path)


@ON_ALL_BACKENDS
def test_dense_nested_residuals_against_numpy():
    """Residual(Residual(Dense)) inside a Sequential branch, checked with NumPy matmuls."""
    inner = Residual(layers.Dense(3, name="fc_in"), activation="relu", name="inner")
    inputs = keras.Input((3,))
    outer = Residual(keras.Sequential([layers.Dense(3, name="fc0"), inner], name="f"), name="outer")
    model = keras.Model(inputs, outer(inputs))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    fc0, fc_in = outer.layer.layers[0], inner.layer
    h0 = x @ np_(fc0.kernel) + np_(fc0.bias)
    h_in = h0 @ np_(fc_in.kernel) + np_(fc_in.bias)
    inner_out = np.maximum(h0 + h_in, 0.0)
    got = run(
        probe(model, ["outer/branch/inner/branch", "outer/branch/fc0", "outer/branch/inner", "outer"]),
        x,
    )
    for value, want in zip(got, [h_in, h0, inner_out, x + inner_out], strict=True):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)


@ON_ALL_BACKENDS
def test_sequential_model_and_single_path():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(2, 3, padding="same", name="c"),
            Residual(layers.Conv2D(2, 3, padding="same", name="rc"), activation="relu", name="r"),
        ]
    )
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 2)).astype("float32")
    single = probe(model, "r/branch")
    assert len(single.outputs) == 1
    c = model.get_layer("c")(x)
    branch = model.get_layer("r").layer(c)
    np.testing.assert_allclose(run(single, x), np_(branch), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        run(probe(model, "r"), x),
        np.maximum(np_(c) + np_(branch), 0.0),
        rtol=1e-5,
        atol=1e-5,
    )


@ON_ALL_BACKENDS
def test_model_untouched(shared_model):
    model = shared_model
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    before = run(model, x)
    config = json.dumps(model.get_config(), sort_keys=True, default=str)
    n_layers, n_weights = len(model.layers), len(model.weights)
    probe(model, ["outer/branch/inner/branch/c1", "outer/shortcut", "stem"])
    assert json.dumps(model.get_config(), sort_keys=True, default=str) == config
    assert (len(model.layers), len(model.weights)) == (n_layers, n_weights)
    np.testing.assert_array_equal(run(model, x), before)


def test_resolve_and_list_paths(shared_model):
    model = shared_model
    assert resolve_path(model, "outer/branch/inner/branch/c1").name == "c1"
    assert resolve_path(model, "outer/branch") is model.get_layer("outer").layer
    paths = list_paths(model)
    assert paths[:2] == ["stem", "outer"]
    for path in [
        "outer/preactivation",
        "outer/branch/fa",
        "outer/branch/inner/branch/r1",
        "outer/shortcut",
        "head",
    ]:
        assert path in paths
        resolve_path(model, path)  # every listed path resolves


@pytest.mark.parametrize(
    "path, match",
    [
        ("nope", "no layer named 'nope'.*stem"),
        ("outer/nope", "must continue with one of"),
        ("outer/branch/inner/shortcut/x", "no shortcut layer"),
        ("stem/x", "which has no sub-layers.*use .stem. for that layer.*list_paths"),
        ("outer//branch", "empty segment"),
    ],
)
def test_bad_paths_raise(shared_model, path, match):
    with pytest.raises(ValueError, match=match):
        probe(shared_model, [path])


def test_built_resnet50_block_and_branch():
    """Chu et al. (2017) Fig. 7 pairs res5b with res5b_branch2c: in our ResNet-50 these are
    `conv5_block2` and a layer inside its branch. The block is relu(input + branch)."""
    from keras_residual.models import resnet50

    model = resnet50(weights=None, input_shape=(64, 64, 3))
    paths = [
        "conv5_block2",
        "conv5_block2/input",
        "conv5_block2/branch",
        "conv5_block2/branch/conv5_block2_3_bn",
        "conv5_block2/branch/conv5_block2_3_conv",
    ]
    block, x, branch, bn, conv = run(probe(model, paths), np.ones((1, 64, 64, 3), "float32"))
    assert conv.shape == (1, 2, 2, 2048)
    np.testing.assert_allclose(bn, branch, rtol=1e-6)
    np.testing.assert_allclose(block, np.maximum(x + branch, 0.0), rtol=1e-5, atol=1e-5)
    layer = resolve_path(model, "conv5_block2/branch/conv5_block2_3_bn")
    gamma, beta, mean, var = (np_(w) for w in layer.weights)
    np.testing.assert_allclose(
        bn, (conv - mean) / np.sqrt(var + layer.epsilon) * gamma + beta, rtol=1e-4, atol=1e-4
    )


def test_a_branch_probe_sees_the_call_arguments_the_block_passes_on():
    mha = layers.MultiHeadAttention(2, 4, name="mha")
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, Residual(mha, name="block")(inputs, use_causal_mask=True))
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(mha(x, x, use_causal_mask=True))  # the unwrapped layer
    np.testing.assert_allclose(probe(model, "block/branch").predict(x, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)
