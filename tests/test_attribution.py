"""Integrated Gradients and SmoothGrad against a hand-written NumPy network and the axioms.

The conv -> ReLU -> global average pooling -> dense network of test_gradcam.py
has a NumPy forward pass and a NumPy input gradient (a transposed convolution
of the ReLU-masked upstream gradient): the references here integrate and
average that gradient in NumPy, independently of Keras and of the library's
batching. Completeness (Sundararajan et al. 2017, Prop. 1) is checked against
scores computed in NumPy.
"""

import math

import numpy as np
import pytest
from test_gradcam import CLASSES, H, W, conv, conv_backward, data_format, gap_model, images

from keras_residual.viz import attribution, integrated_gradients, saliency, smoothgrad

pytestmark = pytest.mark.multibackend
__all__ = ["data_format"]  # the fixture, imported for the channels_first case


def numpy_net(model):
    """Logits and the logit's input gradient of the conv-GAP-dense net, in float64 NumPy."""
    kernel, bias = (w.astype("float64") for w in model.get_layer("conv").get_weights())
    fc_kernel, fc_bias = (w.astype("float64") for w in model.get_layer("fc").get_weights())

    def logits(x):
        act = np.maximum(conv(x, kernel, bias, same=False), 0)
        return act.mean(axis=(1, 2)) @ fc_kernel + fc_bias

    def gradient(x, classes):
        pre = conv(x, kernel, bias, same=False)
        upstream = (pre > 0) * fc_kernel[:, classes].T[:, None, None, :] / (
            pre.shape[1] * pre.shape[2])
        return conv_backward(upstream, kernel, x.shape, same=False)

    return logits, gradient


def trapezoid_reference(gradient, x, baseline, classes, steps):
    """Integrated Gradients by the trapezoidal rule, one image and one point at a time."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        grads = [gradient(baseline[i : i + 1] + k / steps * (x[i : i + 1] - baseline[i : i + 1]),
                          classes[i : i + 1])[0] for k in range(steps + 1)]
        integral = (sum(grads[1:-1]) + (grads[0] + grads[-1]) / 2) / steps
        out[i] = (x[i] - baseline[i]) * integral
    return out


def test_integrated_gradients_match_numpy_trapezoid_and_completeness():
    model = gap_model("dense_softmax")
    x = images(3).astype("float64")
    logits, gradient = numpy_net(model)
    classes = logits(x).argmax(1)
    baseline = np.full_like(x, -0.25)
    expected = trapezoid_reference(gradient, x, baseline, classes, steps=16)
    got = integrated_gradients(model, None, x, baseline=-0.25, steps=16, batch_size=5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Completeness at 256 steps: each image's attributions sum to the logit difference.
    fine = integrated_gradients(model, [0, 2, 1], x, steps=256, batch_size=257)
    difference = (logits(x) - logits(np.zeros_like(x)))[np.arange(3), [0, 2, 1]]
    np.testing.assert_allclose(fine.sum(axis=(1, 2, 3)), difference, rtol=0.01)
    assert np.abs(difference).min() > 1e-3  # not a trivially zero score difference


@pytest.mark.parametrize("data_format", ["channels_first"], indirect=True)
def test_integrated_gradients_channels_first(data_format):
    model = gap_model("linear", channels_first=True)
    x = images(2).astype("float64")
    _, gradient = numpy_net(model)
    expected = trapezoid_reference(gradient, x, np.zeros_like(x), np.array([2, 2]), steps=8)
    got = integrated_gradients(model, 2, np.moveaxis(x, -1, 1), steps=8)
    np.testing.assert_allclose(np.moveaxis(got, 1, -1), expected, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_of_a_unit_sum_to_its_change():
    """With `path`, the unit guided backprop takes (the channel's strongest position in each
    image) is held fixed along the line: its attributions sum to its own change."""
    model = gap_model("linear")
    x = images(2).astype("float64")
    kernel, bias = (w.astype("float64") for w in model.get_layer("conv").get_weights())
    act = np.maximum(conv(x, kernel, bias, same=False), 0)[..., 1]
    rows, cols = np.unravel_index(act.reshape(2, -1).argmax(1), act.shape[1:])
    baseline = np.maximum(conv(np.zeros_like(x), kernel, bias, same=False), 0)[..., 1]
    change = act[[0, 1], rows, cols] - baseline[[0, 1], rows, cols]
    got = integrated_gradients(model, 1, x, path="conv", steps=256)
    np.testing.assert_allclose(got.sum(axis=(1, 2, 3)), change, rtol=0.01)
    # Outside the unit's 3x3 receptive field nothing is attributed.
    for i in range(2):
        outside = np.ones((H, W), bool)
        outside[rows[i] : rows[i] + 3, cols[i] : cols[i] + 3] = False
        assert np.abs(got[i][outside]).max() == 0.0


def test_steps_are_batched_into_ceil_points_over_batch_calls(monkeypatch):
    model = gap_model("linear")
    calls = []
    original = attribution._Target.gradients

    def counted(self, x, owners):
        calls.append(len(x))
        return original(self, x, owners)

    monkeypatch.setattr(attribution._Target, "gradients", counted)
    integrated_gradients(model, 0, images(1), steps=50, batch_size=17)
    assert calls == [17, 17, 17]  # 51 points: ceil(51 / 17) passes
    calls.clear()
    smoothgrad(model, 0, images(2), samples=10, batch_size=8, seed=0)
    assert calls == [8, 8, 4] and sum(calls) == 2 * 10


def test_smoothgrad_matches_numpy_with_the_same_noise():
    model = gap_model("dense_softmax")
    x = images(2).astype("float64")
    logits, gradient = numpy_net(model)
    samples, noise = 6, 0.2
    # The documented noise: NumPy's default_rng(seed), one draw per copy, image-major order.
    draws = np.random.default_rng(3).standard_normal((2 * samples, H, W, 2))
    sigma = noise * (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1))
    classes = np.array([1, 0])
    expected = np.zeros_like(x)
    squared = np.zeros_like(x)
    for j in range(2 * samples):
        i = j // samples
        g = gradient(x[i : i + 1] + sigma[i] * draws[j : j + 1], classes[i : i + 1])[0]
        expected[i] += g / samples
        squared[i] += g * g / samples
    for batch_size in (5, 32):  # the same noise whatever the batching
        got = smoothgrad(model, [1, 0], x, samples=samples, noise=noise, seed=3,
                         batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    got = smoothgrad(model, [1, 0], x, samples=samples, noise=noise, seed=3, squared=True)
    np.testing.assert_allclose(got, squared, rtol=1e-4, atol=1e-8)
    assert np.abs(expected).max() > 1e-3


def test_smoothgrad_without_noise_is_the_input_gradient():
    model = gap_model("softmax_layer")
    x = images(3)
    logits, gradient = numpy_net(model)
    top = logits(x.astype("float64")).argmax(1)
    got = smoothgrad(model, None, x, samples=3, noise=0.0)
    np.testing.assert_allclose(got, gradient(x.astype("float64"), top), rtol=1e-4, atol=1e-6)
    # A unit of a layer: the plain gradient of the same unit, `saliency`.
    np.testing.assert_allclose(smoothgrad(model, 2, x, samples=2, noise=0.0, path="conv"),
                               saliency(model, "conv", 2, x), rtol=1e-5, atol=1e-7)


def test_smoothgrad_seed_fixes_the_result():
    model = gap_model("dense_softmax")  # the ReLU masks, so the gradient, depend on the noise
    x = images(2)
    a = smoothgrad(model, 0, x, samples=5, seed=7)
    np.testing.assert_array_equal(a, smoothgrad(model, 0, x, samples=5, seed=7))
    assert not np.array_equal(a, smoothgrad(model, 0, x, samples=5, seed=8))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: integrated_gradients(m, 0, x, steps=0), "steps"),
        (lambda m, x: integrated_gradients(m, 0, x, baseline=np.zeros((2, 2))), "baseline"),
        (lambda m, x: integrated_gradients(m, [0, 1], x, path="conv"), "channel"),
        (lambda m, x: integrated_gradients(m, 4, x, path="conv"), "4 channels"),
        (lambda m, x: integrated_gradients(m, CLASSES, x), "class index"),
        (lambda m, x: smoothgrad(m, 0, x, noise=-0.1), "noise"),
        (lambda m, x: smoothgrad(m, 0, x, noise=math.nan), "noise"),
        (lambda m, x: smoothgrad(m, 0, x[..., :1]), "images"),
    ],
)
def test_bad_arguments_are_value_errors_that_say_what_was_received(call, message):
    with pytest.raises(ValueError, match=message):
        call(gap_model("linear"), images(2))
