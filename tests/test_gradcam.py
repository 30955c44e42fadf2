"""Grad-CAM and Guided Grad-CAM against closed forms and a hand-written NumPy network.

For conv -> global average pooling -> dense, the class score is
z_c = sum_k W[k, c] mean_ij A_k(i, j) + b_c, so d z_c / d A_k(i, j) = W[k, c] / (H W)
everywhere, and Grad-CAM is ReLU(sum_k W[k, c] / (H W) A_k) (Selvaraju et al.
2017, Eqs. 1-2). The activations A come from a NumPy convolution, not from Keras.
"""

import os

import keras
import numpy as np
import pytest
from keras import layers
from scipy import ndimage

from keras_residual import Residual
from keras_residual.viz.gradcam import GradCam, bilinear_resize, grad_cam, guided_grad_cam

H = W = 7  # input size; a valid 3x3 conv gives 5x5 maps
CLASSES = 3


# ----------------------------------------------------------------- NumPy net


def conv(x, kernel, bias, same):
    """NHWC convolution, stride 1, 'same' or 'valid' padding."""
    k = kernel.shape[0]
    if same:
        x = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h - k + 1, w - k + 1, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,co->nhwo", x[:, i : i + h - k + 1, j : j + w - k + 1],
                             kernel[i, j])
    return out + bias


def conv_backward(g, kernel, in_shape, same):
    """The input gradient of `conv` for the upstream gradient g (a transposed convolution)."""
    k = kernel.shape[0]
    pad = k // 2 if same else 0
    n, h, w, c = in_shape
    dx = np.zeros((n, h + 2 * pad, w + 2 * pad, c))
    ho, wo = g.shape[1:3]
    for i in range(k):
        for j in range(k):
            dx[:, i : i + ho, j : j + wo] += np.einsum("nhwo,co->nhwc", g, kernel[i, j])
    return dx[:, pad : pad + h, pad : pad + w]


def cam_reference(activations, gradients):
    """Eqs. 1-2 in NumPy, channels last."""
    alpha = gradients.mean(axis=(1, 2), keepdims=True)
    return np.maximum((alpha * activations).sum(-1), 0)


# ------------------------------------------------------------------- models


@pytest.fixture
def data_format(request):
    old = keras.config.image_data_format()
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format(old)


def gap_model(head="linear", channels_first=False):
    shape = (2, H, W) if channels_first else (H, W, 2)
    inputs = keras.Input(shape)
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    activation = "softmax" if head == "dense_softmax" else None
    x = layers.Dense(CLASSES, activation=activation, name="fc")(x)
    if head == "softmax_layer":
        x = layers.Softmax(name="softmax")(x)
    elif head == "activation_softmax":
        x = layers.Activation("softmax", name="softmax")(x)
    return keras.Model(inputs, x)


def images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, H, W, 2)).astype("float32")


def gap_reference(model, x):
    """(pre-activation P, activation A, logits z, kernel W) of the conv -> GAP -> dense net."""
    kernel, bias = model.get_layer("conv").get_weights()
    fc_kernel, fc_bias = model.get_layer("fc").get_weights()
    pre = conv(x.astype("float64"), kernel, bias, same=False)
    act = np.maximum(pre, 0)
    return pre, act, act.mean(axis=(1, 2)) @ fc_kernel + fc_bias, fc_kernel


# -------------------------------------------------------------------- tests


@pytest.mark.multibackend
@pytest.mark.parametrize(
    ("data_format", "head"),
    [("channels_last", "linear"), ("channels_last", "softmax_layer"),
     ("channels_first", "dense_softmax")],
    indirect=["data_format"],
)
def test_closed_form_on_conv_gap_dense(data_format, head):
    channels_first = data_format == "channels_first"
    model = gap_model(head, channels_first)
    x = images()
    _, act, logits, fc_kernel = gap_reference(model, x)
    fed = np.moveaxis(x, -1, 1) if channels_first else x
    cam = GradCam(model)
    # An int, one class per image, and None (each image's top logit), through one GradCam.
    for class_index in (1, [0, 2, 1], None):
        classes = (np.argmax(logits, axis=1) if class_index is None
                   else np.broadcast_to(class_index, (3,)))
        grads = fc_kernel[:, classes].T[:, None, None, :] / (5 * 5) * np.ones_like(act)
        a, g = cam.gradients("conv", class_index, fed, batch_size=2)
        if channels_first:
            a, g = np.moveaxis(a, 1, -1), np.moveaxis(g, 1, -1)
        np.testing.assert_allclose(a, act, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g, grads, rtol=1e-4, atol=1e-7)
        expected = cam_reference(act, grads)
        np.testing.assert_allclose(cam("conv", class_index, fed), expected, rtol=1e-4, atol=1e-6)
        assert expected.max() > 0  # the reference is not trivially zero
    up = cam("conv", None, fed, upsample=True)
    assert up.shape == (3, H, W)


@pytest.mark.multibackend
def test_softmax_score_when_logits_false():
    """d p_c / d A_k = p_c (W[k, c] - sum_j p_j W[k, j]) / (H W) for the softmax output."""
    model = gap_model("dense_softmax")
    x = images()
    _, act, logits, fc_kernel = gap_reference(model, x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    c = 2
    alpha = p[:, c : c + 1] * (fc_kernel[:, c][None] - p @ fc_kernel.T) / 25  # (N, K)
    expected = np.maximum(np.einsum("nk,nhwk->nhw", alpha, act), 0)
    got = GradCam(model, logits=False)("conv", c, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    # ... and the pre-softmax default differs from it.
    assert not np.allclose(GradCam(model)("conv", c, x), got, rtol=1e-2)


@pytest.mark.multibackend
def test_activation_softmax_and_nested_sequential_end_use_logits():
    model = gap_model("activation_softmax")
    x = images()
    _, act, _, fc_kernel = gap_reference(model, x)
    expected = cam_reference(act, fc_kernel[:, 0] / 25 * np.ones_like(act))
    np.testing.assert_allclose(grad_cam(model, "conv", 0, x), expected, rtol=1e-4, atol=1e-6)
    # The softmax as the last layer of a nested Sequential head.
    inputs = keras.Input((H, W, 2))
    features = model.get_layer("gap")(model.get_layer("conv")(inputs))
    head = keras.Sequential([keras.Input((4,)), model.get_layer("fc"), layers.Softmax()])
    nested = keras.Model(inputs, head(features))
    np.testing.assert_allclose(grad_cam(nested, "conv", 0, x), expected, rtol=1e-4, atol=1e-6)


def residual_model():
    inputs = keras.Input((6, 6, 2))
    branch = keras.Sequential([
        keras.Input((6, 6, 2)),
        layers.Conv2D(2, 3, padding="same", activation="relu", name="inner"),
        layers.Conv2D(2, 3, padding="same", name="outer"),
    ], name="f")
    x = Residual(branch, activation="relu", name="block")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(CLASSES, name="fc")(x))


@pytest.mark.multibackend
def test_nested_paths_inside_a_residual_block():
    """y = relu(x + outer(relu(inner(x)))) -> GAP -> dense, differentiated by hand."""
    model = residual_model()
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2))
    (w1, b1), (w2, b2) = (model.get_layer("block").layer.get_layer(n).get_weights()
                          for n in ("inner", "outer"))
    fc_kernel = model.get_layer("fc").get_weights()[0]
    p1 = conv(x, w1, b1, same=True)
    a1 = np.maximum(p1, 0)
    b = conv(a1, w2, b2, same=True)
    s = x + b
    y = np.maximum(s, 0)
    c = 1
    g_y = fc_kernel[:, c] / 36 * np.ones_like(y)
    g_s = g_y * (s > 0)
    g_a1 = conv_backward(g_s, w2, a1.shape, same=True)
    g_x = g_s + conv_backward(g_a1 * (p1 > 0), w1, x.shape, same=True)
    cam = GradCam(model)
    for path, act, grad in [
        ("block", y, g_y),
        ("block/branch", b, g_s),
        ("block/branch/inner", a1, g_a1),
        ("block/input", x, g_x),
    ]:
        a, g = cam.gradients(path, c, x)
        np.testing.assert_allclose(a, act, rtol=1e-4, atol=1e-5, err_msg=path)
        np.testing.assert_allclose(g, grad, rtol=1e-4, atol=1e-7, err_msg=path)
        np.testing.assert_allclose(cam(path, c, x), cam_reference(act, grad), rtol=1e-4,
                                   atol=1e-6, err_msg=path)


@pytest.mark.multibackend
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"], indirect=True)
def test_guided_grad_cam_is_guided_backprop_times_upsampled_cam(data_format):
    channels_first = data_format == "channels_first"
    model = gap_model("dense_softmax", channels_first)
    x = images(2)
    pre, act, _, fc_kernel = gap_reference(model, x)
    kernel = model.get_layer("conv").get_weights()[0]
    c = 0
    upstream = fc_kernel[:, c] / 25 * np.ones_like(act)
    # Guided ReLU: pass where the forward input and the upstream gradient are positive.
    guided = conv_backward(upstream * (pre > 0) * (upstream > 0), kernel, x.shape, same=False)
    cam = cam_reference(act, upstream)
    # scipy's zoom with grid_mode=True maps pixel extents onto pixel extents: half-pixel centers.
    up = ndimage.zoom(cam, (1, H / 5, W / 5), order=1, grid_mode=True, mode="nearest")
    expected = guided * up[..., None]
    fed = np.moveaxis(x, -1, 1) if channels_first else x
    got = guided_grad_cam(model, "conv", c, fed)
    if channels_first:
        got = np.moveaxis(got, 1, -1)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.multibackend
def test_bilinear_resize_matches_scipy_and_hand_values():
    # Half-pixel centers: output o samples the input at (o + 0.5) * in / out - 0.5, edges clamp.
    # 2 -> 4: positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    np.testing.assert_allclose(bilinear_resize([[0.0, 4.0]], (4,)), [[0.0, 1.0, 3.0, 4.0]])
    maps = np.random.default_rng(0).random((2, 3, 5)).astype("float32")
    expected = ndimage.zoom(maps, (1, 8 / 3, 11 / 5), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(bilinear_resize(maps, (8, 11)), expected, atol=1e-6)
    np.testing.assert_array_equal(bilinear_resize(maps, (3, 5)), maps)
    with pytest.raises(ValueError, match=r"size=\(8,\)"):
        bilinear_resize(maps, (8,))


@pytest.mark.multibackend
def test_bad_paths_and_classes_raise_with_the_received_value():
    model = gap_model()
    x = images(2)
    cam = GradCam(model)
    with pytest.raises(ValueError, match="'nope'"):
        cam("nope", 0, x)
    with pytest.raises(ValueError, match="conv/nope"):
        cam("conv/nope", 0, x)
    with pytest.raises(ValueError, match="path='gap'"):
        cam("gap", 0, x)  # no spatial axes
    with pytest.raises(ValueError, match="'input'"):
        cam("input", 0, x)
    with pytest.raises(ValueError, match=r"class_index=3"):
        cam("conv", 3, x)
    with pytest.raises(ValueError, match=r"class_index=\[0, -1\]"):
        cam("conv", [0, -1], x)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        cam("conv", [0, 1, 2], x)
    with pytest.raises(TypeError, match="class_index=1.5"):
        cam("conv", 1.5, x)
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="output shapes"):
        GradCam(keras.Model(inputs, [layers.Dense(2)(inputs), layers.Dense(3)(inputs)]))


@pytest.mark.multibackend
def test_a_layer_called_twice_is_refused():
    inputs = keras.Input((6, 6, 2))
    shared = layers.Conv2D(2, 3, padding="same", name="shared")
    x = shared(shared(inputs))
    model = keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ValueError, match="runs 2 times|more than once"):
        grad_cam(model, "shared", 0, np.ones((1, 6, 6, 2), "float32"))


@pytest.mark.multibackend
def test_the_model_is_left_unchanged():
    model = residual_model()
    top = keras.Sequential([keras.Input((CLASSES,)), layers.Activation("softmax", name="sm")])
    model = keras.Model(model.input, top(model.output))
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 2)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x))
    weights = [w.copy() for w in model.get_weights()]
    grad_cam(model, "block/branch/inner", None, x)
    guided_grad_cam(model, "block", 1, x)
    inner = model.get_layer("block").layer.get_layer("inner")
    assert "call" not in vars(inner) and "call" not in vars(model.get_layer("block"))
    assert top.get_layer("sm").activation is keras.activations.softmax
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


@pytest.mark.multibackend
def test_callback_writes_overlays_and_pngs(tmp_path):
    from matplotlib.image import imread
    from test_callbacks import read_events

    from keras_residual.viz.callbacks import GradCamImages

    model = gap_model()
    model.compile("sgd", "mse")
    x = images(8)
    y = np.random.default_rng(0).random((8, CLASSES)).astype("float32")
    callback = GradCamImages(str(tmp_path / "tb"), x[:2], ["conv"], every=2,
                             png_dir=str(tmp_path / "png"))
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    found = read_events(str(tmp_path / "tb"))
    # every=2 over 3 epochs: epoch 2 only; two RGB overlays at the input size.
    assert found == {"gradcam/conv": {2: (2, W, H)}}
    png = imread(str(tmp_path / "png" / "epoch_002" / "gradcam_conv.png"))
    assert png.ndim == 3 and png.shape[-1] in (3, 4) and png.shape[0] > 100
    assert sorted(os.listdir(tmp_path / "png")) == ["epoch_002"]
