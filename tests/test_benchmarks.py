"""The checks benchmarks/ run before timing can fail: each is shown a wrong variant.

benchmarks/_backends.py holds the shared checks (`compare_outputs`,
`degenerate`, `training_step_problems`, `randomize_batchnorm`); guided_backprop's
finite differences are checked on functions whose gradient is known. The
scripts themselves run in tests/test_scripts.py (`--quick`, exit status 0).
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

import _backends as bench  # noqa: E402
import guided_backprop  # noqa: E402

pytestmark = pytest.mark.multibackend


def test_degenerate_outputs_are_named():
    assert bench.degenerate([[1.0, 2.0], [1.0, 2.0]]) == "outputs are the same for every sample"
    assert bench.degenerate(np.zeros((3, 2))) == "outputs are all zero"
    assert bench.degenerate([[np.nan, 1.0], [1.0, 2.0]]) == "outputs are not all finite"
    assert bench.degenerate([[1.0, 2.0], [1.0, 2.5]]) is None


def test_compare_outputs_flags_differences_and_trivial_agreement():
    a = np.arange(6.0).reshape(3, 2)
    assert bench.compare_outputs({"a": a, "b": a + 1e-6}, "a") == []
    (problem,) = bench.compare_outputs({"a": a, "b": a * 1.01}, "a")
    assert problem.startswith("b: outputs differ from a by 0.01")
    # Identical but degenerate (one prediction for every sample): a failure too.
    same = np.ones((3, 2))
    (problem,) = bench.compare_outputs({"a": same, "b": same}, "a")
    assert "the same for every sample" in problem


def _mlp(seed, batchnorm=True):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(8, name="d1")]
    layers += [keras.layers.BatchNormalization(name="bn")] if batchnorm else []
    model = keras.Sequential(layers + [keras.layers.ReLU(), keras.layers.Dense(3, name="d2")])
    if batchnorm:
        bench.randomize_batchnorm(model)
    return model


def _batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")


def test_training_step_same_weights_pass_and_restores_them():
    x, y = _batch()
    a, b = _mlp(0), _mlp(0)
    before = a.get_weights()
    assert bench.training_step_problems({"a": a, "b": b}, x, y, "mse", bench.named_weights) == []
    assert all(np.array_equal(u, v) for u, v in zip(before, a.get_weights(), strict=True))


def test_training_step_catches_a_frozen_layer_a_wrong_copy_and_no_step():
    x, y = _batch()
    a, b = _mlp(0), _mlp(0)
    b.get_layer("d1").trainable = False  # the same forward pass, another training step
    problems = bench.training_step_problems({"a": a, "b": b}, x, y, "mse")
    assert any("update of weight 0" in p for p in problems), problems
    b = _mlp(0)
    gamma = b.get_layer("bn").gamma
    gamma.assign(keras.ops.convert_to_numpy(gamma)[::-1])  # a scale in the wrong channels
    problems = bench.training_step_problems({"a": a, "b": b}, x, y, "mse", bench.named_weights)
    assert "b: bn/gamma differs from a before the step" in problems, problems
    # (Without BatchNorm: its moving statistics move even at learning rate 0.)
    problems = bench.training_step_problems(
        {"a": _mlp(0, batchnorm=False), "b": _mlp(0, batchnorm=False)}, x, y, "mse",
        learning_rate=0.0)
    assert problems == ["a: one step changed no weight"]


def test_randomize_batchnorm_sets_every_parameter_and_statistic():
    model = _mlp(0)
    bn = model.get_layer("bn")
    values = [keras.ops.convert_to_numpy(v) for v in
              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
    fresh = [1.0, 0.0, 0.0, 1.0]
    for value, start in zip(values, fresh, strict=True):
        assert np.all(value != start) and len(np.unique(value)) == len(value)


def test_finite_differences_catch_a_scaled_or_misplaced_gradient():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    w = rng.normal(size=images.shape[1:]).astype("float64")

    def f(x):  # piecewise linear, as the nets: relu of a linear map per image
        return np.maximum((x.reshape(len(x), -1) @ w.ravel()), 0.0) + 0.0

    slope = (images.reshape(2, -1) @ w.ravel() > 0).astype("float64")
    gradient = slope[:, None, None, None] * w[None]
    if not slope.all():  # one image on the flat side: make both slopes 1
        images = np.abs(images) * np.sign(w)[None].astype("float32")
        gradient = np.broadcast_to(w, images.shape)
    error = guided_backprop.finite_difference_error(f, images, gradient)
    assert error < 1e-4
    assert guided_backprop.finite_difference_error(f, images, 1.01 * gradient) > 5e-3
    assert guided_backprop.finite_difference_error(f, images, np.roll(gradient, 1)) > 0.1
    assert guided_backprop.finite_difference_error(f, images, 0 * gradient) == float("inf")


@pytest.mark.backends("tensorflow", reason="times loops on one backend (the script's --backend "
                      "all runs the others); the reuse it checks is tested on every backend in "
                      "test_guided.py")
def test_viz_reuse_check_agrees_and_catches_a_stale_shared_copy(monkeypatch):
    """benchmarks/viz_reuse.py's check on its --quick model (the timing is left to the script)."""
    import viz_reuse

    from keras_residual.viz.guided import UnitGradient

    keras.utils.set_random_seed(0)
    model, path = viz_reuse._model(True, 16)
    bench.randomize_batchnorm(model)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    pair = viz_reuse.PAIRS[:1]  # guided_backprop; Guided Grad-CAM's copy is the same class
    assert viz_reuse.check(model, path, images, pair) == []
    # A shared rectified copy that kept the old weights is caught after the training step.
    monkeypatch.setattr(UnitGradient, "refresh", lambda self: None)
    problems = viz_reuse.check(model, path, images, pair)
    assert problems and all(p.startswith("after one SGD step") for p in problems), problems
