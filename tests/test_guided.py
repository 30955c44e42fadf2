"""Guided backprop, deconvnet and saliency against a hand-written NumPy reference."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual
from keras_residual.viz.guided import (
    UnitGradient,
    deconvnet,
    guided_backprop,
    guided_patches,
    rectified_copy,
    saliency,
)
from keras_residual.viz.receptive_field import ReceptiveField
from keras_residual.viz.top_activations import TopK

pytestmark = pytest.mark.multibackend

C = 3  # channels of the first block


# ----------------------------------------------------------------- NumPy net


def conv_forward(x, kernel, bias, same):
    k = kernel.shape[0]
    if same:
        x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - k + 1, w - k + 1, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,co->nhwo", x[:, i : i + h - k + 1, j : j + w - k + 1], kernel[i, j])
    return out + bias


def conv_backward(g, kernel, in_shape, same):
    """d(conv)/d(input) applied to upstream g: a transposed convolution."""
    k = kernel.shape[0]
    pad = k // 2 if same else 0
    n, h, w, c = in_shape
    dx = np.zeros((n, h + 2 * pad, w + 2 * pad, c))
    ho, wo = g.shape[1:3]
    for i in range(k):
        for j in range(k):
            dx[:, i : i + ho, j : j + wo] += np.einsum("nhwo,co->nhwc", g, kernel[i, j])
    return dx[:, pad : pad + h, pad : pad + w]


def relu_backward(g, z, rule):
    if rule == "plain":
        return g * (z > 0)
    if rule == "guided":
        return g * (z > 0) * (g > 0)
    return g * (g > 0)  # deconvnet


def reference(weights, x, target, channel, rule, residual, positions=None):
    """Forward by hand, then the rule's backward from a one-hot at the target unit."""
    (w1, b1), (w2, b2), (w3, b3) = weights
    z1 = conv_forward(x, w1, b1, same=residual) + (x if residual else 0)
    a1 = np.maximum(z1, 0)
    z2 = conv_forward(a1, w2, b2, same=False)
    a2 = np.maximum(z2, 0)
    flat = a2.reshape(len(x), -1)
    z3 = flat @ w3 + b3
    if target == "fc":
        g3 = np.zeros_like(z3)
        g3[:, channel] = 1.0
        g3 = relu_backward(g3, z3, rule)
        g2 = relu_backward((g3 @ w3.T).reshape(a2.shape), z2, rule)
    else:
        g2 = np.zeros_like(z2)
        for n in range(len(x)):
            if positions is None:
                r, c = np.unravel_index(np.argmax(a2[n, ..., channel]), a2.shape[1:3])
            else:
                r, c = positions[n]
            g2[n, r, c, channel] = 1.0
        g2 = relu_backward(g2, z2, rule)
    g1 = relu_backward(conv_backward(g2, w2, a1.shape, same=False), z1, rule)
    return conv_backward(g1, w1, x.shape, same=residual) + (g1 if residual else 0)


# ------------------------------------------------------------- Keras twins


def build(variant):
    """The same net with ReLU as `activation=`, as layers, or as the Residual's activation."""
    inputs = keras.Input((6, 6, C))
    if variant == "activation":
        x = layers.Conv2D(C, 3, activation="relu", name="conv1")(inputs)
        x = layers.Conv2D(2, 2, activation="relu", name="conv2")(x)
        x = layers.Dense(4, activation="relu", name="fc")(layers.Flatten()(x))
    elif variant == "layer":
        x = layers.ReLU()(layers.Conv2D(C, 3, name="conv1")(inputs))
        x = layers.Activation("relu", name="conv2")(layers.Conv2D(2, 2, name="conv2_conv")(x))
        x = layers.ReLU(name="fc")(layers.Dense(4, name="fc_dense")(layers.Flatten()(x)))
    else:
        x = Residual(layers.Conv2D(C, 3, padding="same", name="conv1"), activation="relu")(inputs)
        x = layers.Conv2D(2, 2, activation="relu", name="conv2")(x)
        x = layers.Dense(4, activation="relu", name="fc")(layers.Flatten()(x))
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(1)
    # Biases of both signs so that some units are rectified to zero.
    for layer in _weighted_layers(model):
        layer.set_weights([0.7 * rng.normal(size=w.shape) for w in layer.get_weights()])
    return model


def _weighted_layers(model):
    out = []
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, Residual) else layer
        if isinstance(inner, (layers.Conv2D, layers.Dense)):
            out.append(inner)
    return out


def snapshot(model):
    return (
        json.dumps(model.get_config(), sort_keys=True, default=str),
        [w.copy() for w in model.get_weights()],
        [getattr(layer, "activation", None) for layer in model.layers],
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).normal(size=(3, 6, 6, C)).astype("float32")


@pytest.mark.multibackend
@pytest.mark.parametrize("variant", ["activation", "layer", "residual"])
def test_matches_numpy_reference(variant, images):
    model = build(variant)
    weights = [tuple(layer.get_weights()) for layer in _weighted_layers(model)]
    before = snapshot(model)
    residual = variant == "residual"
    for rule in ("guided", "deconvnet", "plain"):
        grad = UnitGradient(model, rule)
        for target, channel in (("fc", 1), ("conv2", 0)):
            expected = reference(weights, images.astype("float64"), target, channel, rule,
                                 residual)
            np.testing.assert_allclose(grad(target, channel, images), expected, rtol=1e-4,
                                       atol=1e-5)
    after = snapshot(model)
    assert before[0] == after[0]
    for a, b in zip(before[1], after[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(a is b for a, b in zip(before[2], after[2], strict=True))


def test_rules_differ_on_this_net(images):
    # Guards the reference test: on this net the three rules give different maps.
    model = build("activation")
    weights = [tuple(layer.get_weights()) for layer in _weighted_layers(model)]
    maps = [reference(weights, images.astype("float64"), "fc", 1, r, False)
            for r in ("guided", "deconvnet", "plain")]
    assert not np.allclose(maps[0], maps[1]) and not np.allclose(maps[0], maps[2])
    assert not np.allclose(maps[1], maps[2])


@pytest.mark.multibackend
def test_given_positions_and_functions(images):
    model = build("residual")
    weights = [tuple(layer.get_weights()) for layer in _weighted_layers(model)]
    positions = np.array([[0, 0], [2, 3], [4, 1]])
    for fn, rule in ((guided_backprop, "guided"), (deconvnet, "deconvnet"), (saliency, "plain")):
        expected = reference(weights, images.astype("float64"), "conv2", 1, rule, True, positions)
        np.testing.assert_allclose(
            fn(model, "conv2", 1, images, positions=positions), expected, rtol=1e-4, atol=1e-5
        )


@pytest.mark.multibackend
def test_copy_forward_equals_model_and_swaps_every_relu(images):
    inputs = keras.Input((6, 6, C))
    branch = keras.Sequential(
        [layers.Conv2D(C, 3, padding="same", activation="relu"), layers.ReLU(),
         layers.Conv2D(C, 1)], name="branch_seq")
    x = Residual(branch, activation="relu", preactivation="bn_relu", name="block")(inputs)
    model = keras.Model(inputs, x)
    copy = rectified_copy(model, "deconvnet")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(images)), keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5, atol=1e-6,
    )
    block = copy.get_layer("block")
    names = [block.activation.__name__, block.layer.layers[0].activation.__name__,
             block.layer.layers[1].activation.__name__,
             block.preactivation_layer.layers[-1].activation.__name__]
    assert names == ["deconvnet_relu"] * 4
    assert model.get_layer("block").activation is keras.activations.relu


@pytest.mark.multibackend
def test_copy_of_a_strided_projection_preactivation_block(images):
    # The copy makes the string pre-activation into layers before building, so its
    # variables come in another order than the model's: weights go across by path.
    inputs = keras.Input((6, 6, 8))
    block = Residual(layers.Conv2D(16, 3, strides=2, padding="same"), shortcut="projection",
                     preactivation="bn_relu", name="block")
    model = keras.Model(inputs, block(inputs))
    rng = np.random.default_rng(3)
    for variable in model.weights:  # random BN statistics and kernels
        if variable.name != "lesion_state":
            low = 0.5 if variable.name in ("gamma", "moving_variance") else -1.0
            variable.assign(rng.uniform(low, 1.5, variable.shape).astype("float32"))
    x = rng.normal(size=(2, 6, 6, 8)).astype("float32")
    for rule in ("guided", "deconvnet"):
        copy = rectified_copy(model, rule)
        assert [w.name for w in copy.weights] != [w.name for w in model.weights]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(copy(x, training=False)),
            keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5, atol=1e-5,
        )
    grads = guided_backprop(model, "block", 3, x)
    assert grads.shape == x.shape and np.abs(grads).sum() > 0


def test_copy_keeps_the_lesion_state(images):
    # A deleted block stays deleted in the copy: its lesion state is a weight, copied by path.
    from keras_residual import lesion_ready

    inputs = keras.Input((6, 6, C))
    x = Residual(layers.Conv2D(C, 3, padding="same"), activation="relu", name="block")(inputs)
    model = keras.Model(inputs, x)
    with lesion_ready(model):
        model.get_layer("block").branch_enabled = False
        copy = rectified_copy(model)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(copy(images)), np.maximum(images, 0), atol=1e-6)
        assert copy.get_layer("block").branch_enabled is False


@pytest.mark.multibackend
def test_nested_branch_path(images):
    # Unit inside a Residual's Sequential branch: one conv + relu before it.
    inputs = keras.Input((6, 6, C))
    branch = keras.Sequential(
        [layers.Conv2D(C, 3, padding="same", activation="relu", name="inner"),
         layers.Conv2D(C, 1, name="last")], name="branch_seq")
    x = Residual(branch, activation="relu", name="block")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
    kernel, bias = model.get_layer("block").layer.get_layer("inner").get_weights()
    z = conv_forward(images.astype("float64"), kernel, bias + 0.1, same=True)
    model.get_layer("block").layer.get_layer("inner").set_weights([kernel, bias + 0.1])
    g = np.zeros_like(z)
    for n in range(len(images)):
        r, c = np.unravel_index(np.argmax(np.maximum(z[n, ..., 2], 0)), z.shape[1:3])
        g[n, r, c, 2] = 1.0
    for rule in ("guided", "deconvnet"):
        expected = conv_backward(relu_backward(g, z, rule), kernel, images.shape, same=True)
        got = UnitGradient(model, rule)("block/branch/inner", 2, images)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_bad_arguments(images):
    model = build("activation")
    with pytest.raises(ValueError, match="rule"):
        UnitGradient(model, "smooth")
    with pytest.raises(ValueError, match="channels"):
        guided_backprop(model, "fc", 7, images)
    with pytest.raises(ValueError, match="positions"):
        guided_backprop(model, "conv2", 0, images, positions=np.zeros((3, 3)))


def test_guided_patches_crop_each_units_gradient_to_its_box(images):
    model = build("activation")
    gradient = UnitGradient(model, "guided")
    # Unit of conv2 at (r, c) sees input rows r..r+3 (3x3 then 2x2 valid convs).
    field = ReceptiveField(size=(4, 4), jump=(1, 1), offset=(0, 0))
    top = TopK(values=np.ones((2, 2)), indices=np.array([[2, 0], [1, 2]]),
               positions=np.array([[[0, 0], [2, 1]], [[1, 2], [0, 0]]]))
    patches, grads = guided_patches(gradient, "conv2", images, top, field, channels=[1])
    assert patches.shape == grads.shape == (1, 2, 4, 4, C)
    for j, (image, (r, c)) in enumerate(zip(top.indices[1], top.positions[1], strict=True)):
        full = gradient("conv2", 1, images[image : image + 1], positions=[[r, c]])[0]
        np.testing.assert_array_equal(patches[0, j], images[image, r : r + 4, c : c + 4])
        np.testing.assert_allclose(grads[0, j], full[r : r + 4, c : c + 4], atol=1e-7)
        # the gradient is zero outside the unit's field
        outside = full.copy()
        outside[r : r + 4, c : c + 4] = 0
        assert not outside.any()


@pytest.mark.multibackend
def test_linear_projection_block_gradient_equals_finite_differences():
    # A linear residual block with a 1x1 stride-2 projection from 8 channels: the
    # gradient of one unit is the same for every image and equals f(x + e_i) - f(x).
    # (TensorFlow 2.21's eager oneDNN kernels abort on this shape; the compiled
    # gradient must not.)
    inputs = keras.Input((10, 10, 8))
    block = Residual(layers.Conv2D(16, 3, strides=2, padding="same"), shortcut="projection",
                     name="block")
    model = keras.Model(inputs, block(inputs))
    images = np.random.default_rng(0).normal(size=(9, 10, 10, 8)).astype("float32")
    positions = np.tile([[1, 2]], (9, 1))
    grads = {rule: UnitGradient(model, rule)("block", 5, images, positions=positions)
             for rule in ("plain", "guided", "deconvnet")}
    basis = np.eye(10 * 10 * 8, dtype="float32").reshape(-1, 10, 10, 8)
    base = model.predict(images[:1], verbose=0)[0, 1, 2, 5]
    shifted = model.predict(images[:1] + basis, verbose=0)[:, 1, 2, 5]
    expected = (shifted - base).reshape(10, 10, 8)
    for rule, grad in grads.items():  # no ReLU: the three rules agree
        np.testing.assert_allclose(grad, np.broadcast_to(expected, grad.shape), atol=2e-4,
                                   err_msg=rule)


def _retracing_warnings(run):
    """TensorFlow's "triggered tf.function retracing" log records while `run()` runs."""
    import logging

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        run()
    finally:
        logger.removeHandler(handler)
    return [r for r in records if "retracing" in r]


@pytest.mark.backends("tensorflow", reason="the retracing warning is tf.function's")
def test_calls_in_a_loop_trace_once_and_do_not_warn(images, monkeypatch):
    import tensorflow as tf

    from keras_residual import gradients, viz

    model = build("activation")
    traces = []
    tape = gradients._tape_gradient  # runs only while a gradient function is traced
    monkeypatch.setattr(gradients, "_tape_gradient", lambda *a: traces.append(1) or tape(*a))

    def call(channel):
        viz.guided_backprop(model, "conv2", channel % 2, images)
        viz.grad_cam(model, "conv2", channel % 4, images)
        viz.guided_grad_cam(model, "conv2", None, images)

    call(0)  # traces: guided backprop's, Grad-CAM's and Guided Grad-CAM's gradient, once each
    assert len(traces) == 3
    # TensorFlow warns on a trace, counting earlier tests' functions of the same code too, so
    # the warning is checked where these calls could retrace: after the first. (In a fresh
    # process the first call does not warn either.) The control: the capture sees the logger.
    assert _retracing_warnings(lambda: tf.get_logger().warning("a retracing probe"))
    assert _retracing_warnings(lambda: [call(channel) for channel in range(1, 8)]) == []
    assert len(traces) == 3


@pytest.mark.multibackend
def test_shared_gradient_sees_new_weights_and_lets_the_model_go(images):
    import gc
    import weakref

    from keras_residual.viz.guided import shared_unit_gradient

    model = build("activation")
    assert shared_unit_gradient(model) is shared_unit_gradient(model)
    for step in range(2):  # the second time with new weights: the shared copy must follow
        weights = [tuple(layer.get_weights()) for layer in _weighted_layers(model)]
        for fn, rule in ((guided_backprop, "guided"), (saliency, "plain")):
            expected = reference(weights, images.astype("float64"), "conv2", 1, rule, False)
            np.testing.assert_allclose(fn(model, "conv2", 1, images), expected, rtol=1e-4,
                                       atol=1e-5)
        rng = np.random.default_rng(10 + step)
        for layer in _weighted_layers(model):
            layer.set_weights([0.7 * rng.normal(size=w.shape) for w in layer.get_weights()])
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # the cache is keyed weakly and holds no strong reference
