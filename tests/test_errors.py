"""Bad input fails at once, with a ValueError that names what was received and the fix.

Each test checks the message (what was received, what to change) and, where
work would otherwise start, that the error comes first: before the model is
copied, traced or run.
"""

import importlib

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual, lesion, list_paths, probe, resolve_path, viz
from keras_residual.lesion import paths as lesion_paths
from keras_residual.viz import gradcam, guided, images

pytestmark = pytest.mark.multibackend

RNG = np.random.default_rng(0)
X = RNG.random((6, 8, 8, 1), dtype="float32")
Y = np.arange(6) % 3


def chain(name="chain"):
    """stem -> b1 -> b2 -> pool -> softmax: two swappable identity blocks (one pair)."""
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = Residual(layers.Conv2D(4, 3, padding="same", name="conv"), name="b1")(x)
    x = Residual(layers.Conv2D(4, 3, padding="same", name="conv2"), name="b2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name=name)


@pytest.fixture(scope="module")
def model():
    return chain()


def never_run(monkeypatch):
    """Make the work of every study and visualization fail the test: checks come first."""
    from keras_residual.lesion import deletion, evaluation, gradient_paths, order

    # The module, not the function of the same name that keras_residual.viz exports.
    top_activations = importlib.import_module("keras_residual.viz.top_activations")

    def fail(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    for module, name in [(deletion, "evaluate"), (order, "evaluate"),
                         (evaluation, "classification_error"),
                         (deletion, "_single_deletion_stacked"),
                         (deletion, "_single_deletion_each"), (gradient_paths, "input_gradient"),
                         (top_activations, "_cached_reducer"), (guided, "rectified_copy"),
                         (images, "probe")]:
        monkeypatch.setattr(module, name, fail)


STUDIES = {
    "single_block_deletion": lambda m, d: lesion.single_block_deletion(m, d, progress=False),
    "single_block_deletion each": lambda m, d: lesion.single_block_deletion(
        m, d, method="each", progress=False),
    "k_block_deletion": lambda m, d: lesion.k_block_deletion(m, d, [1], samples=1,
                                                             progress=False),
    "reordering": lambda m, d: lesion.reordering(m, d, [1], samples=1, progress=False),
    "gradient_per_path_length": lambda m, d: lesion.gradient_per_path_length(
        m, d, [0, 1], samples=1, progress=False),
}


@pytest.mark.parametrize("study", list(STUDIES))
def test_studies_check_the_input_shape_first(model, study, monkeypatch):
    never_run(monkeypatch)
    bad = RNG.random((6, 9, 9, 1), dtype="float32")
    with pytest.raises(ValueError) as error:
        STUDIES[study](model, (bad, Y))
    assert str(error.value) == (
        "Model 'chain' takes inputs of shape (None, 8, 8, 1) (batch axis first), but `x` has "
        "shape (6, 9, 9, 1). Resize or crop the inputs to that shape, or build the model for "
        "this input size (e.g. input_shape=(9, 9, 1)). Received: x.shape=(6, 9, 9, 1)"
    )


@pytest.mark.parametrize(
    "shape, fix",
    [
        ((6, 8, 8), "Add the channel axis: pass x[..., None]."),
        ((8, 8, 1), "Add the batch axis: pass x[None] for a single sample."),
        ((6, 1, 8, 8), "The axes look permuted"),
    ],
)
def test_the_shape_error_names_the_likely_fix(model, shape, fix):
    with pytest.raises(ValueError, match=r"Received: x\.shape=") as error:
        lesion.k_block_deletion(model, (np.zeros(shape, "float32"), np.zeros(shape[0])), [1],
                                progress=False)
    assert fix in str(error.value)


VIZ = {
    "top_activations": lambda m, x: viz.top_activations(m, "b1", x, progress=False),
    "guided_backprop": lambda m, x: viz.guided_backprop(m, "b1", 0, x),
    "deconvnet": lambda m, x: viz.deconvnet(m, "b1", 0, x),
    "UnitGradient": lambda m, x: guided.UnitGradient(m, "plain")("b1", 0, x),
    "preactivations": lambda m, x: images.preactivations(m, "stem", x),
}


@pytest.mark.parametrize("function", list(VIZ))
def test_visualizations_check_the_input_shape_first(model, function, monkeypatch):
    never_run(monkeypatch)  # guided backprop copies the model: the check comes before
    bad = RNG.random((5, 8, 8, 3), dtype="float32")
    with pytest.raises(ValueError, match=r"takes inputs of shape \(None, 8, 8, 1\)") as error:
        VIZ[function](model, bad)
    assert "shape=(5, 8, 8, 3)" in str(error.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: viz.activation_grid(m, "stem", x),
        lambda m, x: images.residual_difference(m, "b1", x),
        lambda m, x: images.residual_differences(m, x),
    ],
    ids=["activation_grid", "residual_difference", "residual_differences"],
)
def test_one_image_functions_refuse_a_batch(model, call):
    with pytest.raises(ValueError) as error:
        call(model, X)
    assert str(error.value) == (
        "Model 'chain' takes one input of shape (8, 8, 1) here, without the batch axis, but "
        "`image` has shape (6, 8, 8, 1): pass one sample, e.g. image[0]. "
        "Received: image.shape=(6, 8, 8, 1)"
    )


def test_bad_method_string(model):
    with pytest.raises(ValueError, match=r"'auto', 'stacked' or 'each'\. Received: "
                                         r"method='stack'"):
        lesion.single_block_deletion(model, (X, Y), method="stack", progress=False)


def parallel_blocks():
    """Two blocks on the same input, added: no chain for the stacked sweep to follow."""
    inputs = keras.Input((6,))
    a = Residual(layers.Dense(6, name="fa"), name="a")(inputs)
    b = Residual(layers.Dense(6, name="fb"), name="b")(inputs)
    x = layers.Add()([a, b])
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name="fork")


def test_stacked_sweep_on_a_graph_that_is_not_a_chain():
    model = parallel_blocks()
    x = RNG.random((12, 6), dtype="float32")
    y = np.arange(12) % 3
    with pytest.raises(ValueError) as error:
        lesion.single_block_deletion(model, (x, y), method="stacked", progress=False)
    message = str(error.value)
    assert "do not form one chain" in message and "use method='each'" in message
    assert message.endswith("Received: method='stacked'")
    # 'auto' falls back to one evaluation per lesion, which 'each' computes directly.
    auto = lesion.single_block_deletion(model, (x, y), method="auto", progress=False)
    each = lesion.single_block_deletion(model, (x, y), method="each", progress=False)
    np.testing.assert_array_equal(auto.errors, each.errors)
    assert list(auto.names) == ["a", "b"]


@pytest.mark.parametrize("study", list(STUDIES))
def test_empty_data(model, study):
    with pytest.raises(ValueError, match=r"`data` holds no samples\. Received: x\.shape=\(0, 8"):
        STUDIES[study](model, (X[:0], Y[:0]))


def test_empty_dataset_and_mismatched_labels(model):
    with pytest.raises(ValueError, match=r"`data` is empty: it yielded no \(x, y\) batches"):
        lesion.single_block_deletion(model, iter([]), progress=False)
    with pytest.raises(ValueError, match=r"as many labels as inputs.*Received: "
                                         r"x\.shape=\(6, 8, 8, 1\), y\.shape=\(3,\)"):
        lesion.k_block_deletion(model, (X, Y[:3]), [1], progress=False)
    with pytest.raises(ValueError, match=r"holds no samples: give at least one\. Received: "
                                         r"data\.shape=\(0, 8, 8, 1\)"):
        viz.top_activations(model, "b1", X[:0], progress=False)


def test_too_many_swaps_before_any_evaluation(model, monkeypatch):
    never_run(monkeypatch)
    with pytest.raises(ValueError) as error:
        lesion.reordering(model, (X, Y), ks=[1, 2], samples=1, progress=False)
    assert str(error.value) == (
        "`ks` must be a non-empty list of integers between 0 and 1 (numbers of distinct pairs "
        "to swap: the model has 1 pairs of compatible blocks). Received: ks=[1, 2]"
    )


def test_overlapping_gradient_routes_change_nothing(model):
    with pytest.raises(ValueError, match=r"Received: branch=\[0\], shortcut=\['b1'\]"):
        with lesion.routed_gradients(model, branch=[0], shortcut=["b1"]):
            pass
    assert [b.gradient_route for b in lesion.residual_blocks(model)] == ["both", "both"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: lesion.k_block_deletion(m, (X, Y), [1], samples=-1, progress=False),
         "`samples` must be a positive integer. Received: samples=-1"),
        (lambda m: lesion.reordering(m, (X, Y), [1], samples=0, progress=False),
         "`samples` must be a positive integer. Received: samples=0"),
        (lambda m: lesion.single_block_deletion(m, (X, Y), batch_size=0, progress=False),
         "`batch_size` must be a positive integer. Received: batch_size=0"),
        (lambda m: lesion.k_block_deletion(m, (X, Y), [-1], progress=False),
         "Received: ks=[-1]"),
        (lambda m: lesion.gradient_per_path_length(m, (X, Y), [0, 3], progress=False),
         "between 0 and 2 (the model has 2 blocks). Received: ks=[0, 3]"),
        (lambda m: lesion.gradient_per_path_length(m, (X, Y), [0, 1], mass=0.0,
                                                   progress=False),
         "`mass` must be in (0, 1]. Received: mass=0.0"),
        (lambda m: viz.top_activations(m, "b1", X, k=0, progress=False),
         "`k` must be a positive integer. Received: k=0"),
        (lambda m: viz.top_activations(m, "b1", X, batch_size=-2, progress=False),
         "`batch_size` must be a positive integer. Received: batch_size=-2"),
        (lambda m: guided.UnitGradient(m, "plain")("b1", 0, X, batch_size=0),
         "`batch_size` must be a positive integer. Received: batch_size=0"),
        (lambda m: lesion.EffectivePathTraining(active=-1),
         "`active` must be a non-negative integer"),
        (lambda m: lesion_paths.path_length_distribution(-3),
         "The number of blocks must be a positive integer. Received: n=-3"),
    ],
    ids=["samples<0", "samples=0", "batch_size=0", "ks<0", "lengths>n", "mass=0", "k=0",
         "top batch_size<0", "gradient batch_size=0", "active<0", "n<0"],
)
def test_negative_and_zero_counts(model, monkeypatch, call, message):
    never_run(monkeypatch)
    with pytest.raises(ValueError) as error:
        call(model)
    assert message in str(error.value)


def test_nested_path_below_a_single_layer_branch_points_to_list_paths(model):
    for function in (lambda p: probe(model, p), lambda p: resolve_path(model, p),
                     lambda p: viz.receptive_field(model, p)):
        with pytest.raises(ValueError) as error:
            function("b1/branch/conv")
        assert str(error.value) == (
            "Path 'b1/branch' names layer 'conv' (Conv2D), which has no sub-layers, so path "
            "'b1/branch/conv' cannot continue with 'conv': use 'b1/branch' for that layer. "
            "keras_residual.list_paths(model) lists every valid path."
        )
    assert "b1/branch" in list_paths(model)  # the suggested path exists
    resolve_path(model, "b1/branch")


def test_unknown_path_segments_suggest_and_point_to_list_paths(model):
    with pytest.raises(ValueError, match=r"no layer named 'stme'.*Did you mean 'stem'\?.*"
                                         r"list_paths\(model\)"):
        probe(model, "stme")
    with pytest.raises(ValueError, match=r"must continue with one of \('branch', 'shortcut', "
                                         r"'preactivation'\) or 'input'\. keras_residual\."
                                         r"list_paths\(model\) lists every valid path\. "
                                         r"Received segment: 'brnch'"):
        resolve_path(model, "b1/brnch")
    with pytest.raises(ValueError, match=r"no shortcut layer \(its shortcut is the identity\)"
                                         r".*list_paths"):
        resolve_path(model, "b1/shortcut/x")


GRAD_CAM = {
    "grad_cam": lambda m, x: viz.grad_cam(m, "b1", None, x),
    "guided_grad_cam": lambda m, x: viz.guided_grad_cam(m, "b1", None, x),
    "GradCam": lambda m, x: gradcam.GradCam(m)("b1", 0, x),
    "GradCam.guided": lambda m, x: gradcam.GradCam(m).guided("b1", 0, x),
    "GradCam.gradients": lambda m, x: gradcam.GradCam(m).gradients("b1", 0, x),
}


@pytest.mark.parametrize(
    "shape, fix",
    [
        ((8, 8, 1), "Add the batch axis: pass x[None] for a single sample."),
        ((5, 8, 8), "Add the channel axis: pass x[..., None]."),
        ((5, 8, 8, 3), "Resize or crop the inputs to that shape, or build the model for this "
                       "input size (e.g. input_shape=(8, 8, 3))."),
        ((5, 10, 10, 1), "Resize or crop the inputs to that shape, or build the model for this "
                         "input size (e.g. input_shape=(10, 10, 1))."),
        ((5, 1, 8, 8), "The axes look permuted: the model reads channels_last inputs"),
    ],
    ids=["no batch axis", "no channel axis", "3 channels", "10x10", "channels_first"],
)
@pytest.mark.parametrize("function", list(GRAD_CAM))
def test_grad_cam_checks_the_input_shape_first(model, function, shape, fix, monkeypatch):
    never_run(monkeypatch)
    for name in ("input_gradient_function", "probe", "UnitGradient"):  # nothing is traced
        monkeypatch.setattr(gradcam, name, lambda *args, **kwargs: pytest.fail("traced"))
    with pytest.raises(ValueError) as error:
        GRAD_CAM[function](model, RNG.random(shape, dtype="float32"))
    assert str(error.value).startswith(
        f"Model 'chain' takes inputs of shape (None, 8, 8, 1) (batch axis first), but "
        f"`images` has shape {shape}. {fix}"
    )
    assert str(error.value).endswith(f"Received: images.shape={shape}")
