"""Feature visualization (Olah et al. 2017): the parameterization against NumPy's FFT, the
transforms against SciPy's bilinear sampling, and the result against the training data."""

import os

import keras
import numpy as np
import pytest
from keras import layers
from scipy import ndimage

from keras_residual import Residual
from keras_residual.viz.feature_vis import (
    FourierImage,
    apply_transforms,
    feature_visualization,
    random_transforms,
)

pytestmark = pytest.mark.multibackend


@pytest.mark.parametrize("shape, decorrelate", [((6, 5, 3), True), ((7, 6, 1), True),
                                                ((8, 8, 3), False)])
def test_fourier_image_is_numpy_irfft2_of_the_scaled_spectrum_and_inverts(shape, decorrelate):
    h, w, c = shape
    param = FourierImage(shape, decorrelate=decorrelate, value_range=(-2.0, 3.0))
    params = np.random.default_rng(0).normal(size=(2, c, h, w // 2 + 1, 2))
    freq = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None] ** 2)
    spectrum = (params[..., 0] + 1j * params[..., 1]) / np.maximum(freq, 1 / max(h, w))
    t = np.moveaxis(np.fft.irfft2(spectrum, s=(h, w), norm="ortho"), 1, -1)
    if decorrelate and c == 3:
        t = t @ param.color.T
    expected = -2.0 + 5.0 / (1 + np.exp(-t))
    got = keras.ops.convert_to_numpy(param.to_image(params.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    images = np.random.default_rng(1).uniform(-1.9, 2.9, (3, h, w, c))
    back = keras.ops.convert_to_numpy(param.to_image(param.from_image(images)))
    np.testing.assert_allclose(back, images, atol=2e-5)


def test_pixel_parameterization_inverts():
    param = FourierImage((5, 4, 2), parameterization="pixel")
    images = np.random.default_rng(2).uniform(0.05, 0.95, (2, 5, 4, 2))
    back = keras.ops.convert_to_numpy(param.to_image(param.from_image(images)))
    np.testing.assert_allclose(back, images, atol=1e-6)


def test_transforms_are_scipy_bilinear_sampling_with_mirrored_borders():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 9, 7, 3)).astype("float32")
    indices, weights = random_transforms(2, 9, 7, np.random.default_rng(4))
    got = keras.ops.convert_to_numpy(apply_transforms(x, indices, weights))
    # The same draws, in the documented order: angle, scale, shift.
    draws = np.random.default_rng(4)
    angle = np.deg2rad(draws.uniform(-10, 10, 2))
    scale = draws.uniform(0.9, 1.1, 2)
    shift = draws.uniform(-8, 8, (2, 2))
    centre = np.array([4.0, 3.0])
    rows, cols = np.mgrid[0:9, 0:7]
    for i in range(2):
        rotation = np.array([[np.cos(angle[i]), np.sin(angle[i])],
                             [-np.sin(angle[i]), np.cos(angle[i])]])
        p = np.stack([rows.ravel(), cols.ravel()]) - (centre + shift[i])[:, None]
        source = rotation @ p / scale[i] + centre[:, None]
        for c in range(3):
            expected = ndimage.map_coordinates(x[i, ..., c].astype("float64"), source, order=1,
                                               mode="mirror").reshape(9, 7)
            np.testing.assert_allclose(got[i, ..., c], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def _trained_net(x_train, y_train, width, classes, epochs):
    """Stem conv, 2x2 pooling, one residual block (conv-ReLU-conv branch), pooled softmax head."""
    inputs = keras.Input(x_train.shape[1:])
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = Residual(keras.Sequential([layers.Conv2D(width, 3, padding="same", activation="relu"),
                                   layers.Conv2D(width, 3, padding="same")], name="branch"),
                 activation="relu", name="block")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=50, epochs=epochs, verbose=0)
    return model


def _trained_mnist_net():
    from keras_residual.datasets import load_mnist

    data = load_mnist(verbose=False)
    x_train = data.x_train[:1000]
    return _trained_net(x_train, data.y_train[:1000], 8, 10, epochs=1), x_train


def _beats_every_training_image(model, x_train, paths, steps=128):
    """For the three channels of each path that respond most to the training images, the
    feature visualization's channel mean is above every training image's."""
    for path in paths:
        best = _channel_means(model, path, x_train)
        channels = sorted(np.argsort(-best.max(axis=0))[:3].tolist())
        images = feature_visualization(model, path, channels, steps=steps)
        assert images.shape == (3, *x_train.shape[1:]) and 0 <= images.min() and images.max() <= 1
        got = _channel_means(model, path, images)
        for i, c in enumerate(channels):
            assert got[i, c] > best[:, c].max(), (path, c, got[i, c], best[:, c].max())


@pytest.mark.slow
@pytest.mark.backends("tensorflow", reason="the colour-net test below makes the same check on "
                      "every backend; this is its MNIST twin")
def test_result_activates_its_channel_more_than_every_training_image():
    """Olah et al. (2017): the optimized image is a stronger stimulus than any data set image,
    at a block and inside its branch."""
    model, x_train = _trained_mnist_net()
    _beats_every_training_image(model, x_train, ["block", "block/branch"])


def _trained_colour_net():
    """A 32x32x3 (CIFAR-shaped) residual net trained on 1,200 patches of scikit-learn's two
    photographs, labelled by photograph and half (4 classes): real colour images offline."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    patches, labels = [], []
    for label, photo in enumerate(load_sample_images().images):
        photo = photo.astype("float32") / 255
        for _ in range(600):
            r, c = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
            patches.append(photo[r:r + 32, c:c + 32])
            labels.append(2 * label + (c > photo.shape[1] // 2))
    x_train = np.stack(patches)
    return _trained_net(x_train, np.array(labels), 16, 4, epochs=2), x_train


def _channel_means(model, path, images):
    from keras_residual import probe

    features = probe(model, path)
    return np.concatenate([keras.ops.convert_to_numpy(features(images[s:s + 300])).mean(axis=(1, 2))
                           for s in range(0, len(images), 300)])


@pytest.mark.slow
def test_result_beats_every_training_patch_of_a_colour_net():
    """As above, on a CIFAR-shaped colour net, with Fourier and color decorrelation."""
    keras.config.set_image_data_format("channels_last")
    model, x_train = _trained_colour_net()
    _beats_every_training_image(model, x_train, ["block", "block/branch"])


def test_repeated_calls_compile_once_and_see_the_current_weights(monkeypatch):
    """The callback's case: the same setting every few epochs, the weights changed between."""
    from keras_residual.viz import feature_vis

    made = []
    original = feature_vis.input_gradient_function
    monkeypatch.setattr(feature_vis, "input_gradient_function",
                        lambda f: made.append(f) or original(f))
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(3, 3, name="c")])
    first = feature_visualization(model, "c", [0, 2], steps=3)
    again = feature_visualization(model, "c", [1], steps=3)  # other channels: same function
    assert len(made) == 1 and again.shape == (1, 8, 8, 1)
    kernel, bias = model.get_layer("c").get_weights()
    model.get_layer("c").set_weights([-kernel, bias])
    flipped = feature_visualization(model, "c", [0, 2], steps=3)
    assert len(made) == 1
    # A linear channel's ascent direction flips with its kernel: the new weights were used.
    start = feature_visualization(model, "c", [0, 2], steps=1, learning_rate=0.0)
    assert np.sign(np.mean(first - start)) == -np.sign(np.mean(flipped - start))
    feature_visualization(model, "c", [0], steps=1, objective="neuron")  # another setting
    assert len(made) == 2


def test_redirected_relu_gradient_is_the_closed_form():
    """Per sample: ReLU's gradient where it lets any through, else upstream where it raises x."""
    from keras_residual.gradients import input_gradient_function
    from keras_residual.viz.guided import redirected_relu

    x = np.array([[-1.0, 2.0, -3.0], [-1.0, -2.0, -3.0]], "float32")
    dy = np.array([[1.0, 1.0, -1.0], [1.0, -1.0, 0.5]], "float32")
    gradient = input_gradient_function(lambda v, w: keras.ops.sum(redirected_relu(v) * w))
    np.testing.assert_array_equal(gradient(x, dy), [[0.0, 1.0, 0.0], [1.0, 0.0, 0.5]])


def test_redirected_gradient_wakes_a_channel_that_the_start_leaves_at_zero():
    """relu(sum of a 3x3 patch - 6): zero on the gray start (about 4.5) and on every jittered
    copy of it, so the plain gradient is zero and the image never moves; the redirected one
    raises the pixels until the channel fires (it can: a white patch sums to 9)."""
    keras.config.set_image_data_format("channels_last")
    inputs = keras.Input((8, 8, 1))
    conv = layers.Conv2D(1, 3, padding="same", activation="relu", name="c")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.ones((3, 3, 1, 1), "float32"), np.array([-6.0], "float32")])
    start = feature_visualization(model, "c", [0], steps=1, learning_rate=0.0)
    plain = feature_visualization(model, "c", [0], steps=32, relu_gradient="plain")
    np.testing.assert_array_equal(plain, start)
    woken = feature_visualization(model, "c", [0], steps=32)
    patch_sums = lambda a: ndimage.uniform_filter(a[0, ..., 0], 3, mode="constant") * 9  # noqa: E731
    assert patch_sums(start).max() < 6 < patch_sums(woken).max()


@pytest.mark.slow
@pytest.mark.backends("tensorflow", reason="the quick demo's saved networks, from its "
                      "TensorFlow run; the function itself runs on every backend above")
def test_result_beats_every_training_digit_on_the_demos_networks(quick_demo_folder):
    from keras_residual import graph
    from keras_residual.datasets import load_mnist

    x_train = load_mnist(verbose=False).x_train
    for name in ("mnist_residual", "mnist_plain"):
        model = keras.saving.load_model(os.path.join(quick_demo_folder, f"{name}.keras"))
        _beats_every_training_image(model, x_train, [b.name for b in graph.blocks(model)])


def test_seed_fixes_the_result_and_neuron_objective():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)),
                              layers.Conv2D(4, 3, activation="relu", name="c")])
    a = feature_visualization(model, "c", [1, 2], steps=5, seed=3)
    np.testing.assert_array_equal(a, feature_visualization(model, "c", [1, 2], steps=5, seed=3))
    assert not np.array_equal(a, feature_visualization(model, "c", [1, 2], steps=5, seed=4))
    # The centre unit's objective: only pixels in its 3x3 field get a gradient, so without
    # transforms the rest of the image keeps its initial (seed-only) value.
    linear = keras.Sequential([keras.Input((12, 12, 3)), layers.Conv2D(4, 3, name="c")])
    n = feature_visualization(linear, "c", [1], steps=3, objective="neuron", transforms=False,
                              parameterization="pixel")
    start = feature_visualization(linear, "c", [1], steps=3, objective="neuron",
                                  transforms=False, parameterization="pixel",
                                  learning_rate=0.0)
    changed = np.abs(n - start).max(axis=-1)[0] > 0
    assert changed[5:8, 5:8].all() and changed.sum() == 9


@pytest.mark.parametrize(
    "kwargs, message",
    [({"channels": [4]}, "4 channels"), ({"objective": "mean"}, "objective"),
     ({"parameterization": "dct"}, "parameterization"), ({"steps": 0}, "steps"),
     ({"value_range": (1, 0)}, "value_range")],
)
def test_bad_arguments_say_what_was_received(kwargs, message):
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, name="c")])
    arguments = {"channels": [0], **kwargs}
    with pytest.raises(ValueError, match=message):
        feature_visualization(model, "c", arguments.pop("channels"), **arguments)


def test_callback_logs_the_feature_visualizations_of_the_epochs_weights(tmp_path):
    import tensorflow as tf
    from test_callbacks import event_tensors

    from keras_residual.viz import FeatureVisualizationImages

    model = keras.Sequential([keras.Input((10, 10, 1)),
                              layers.Conv2D(3, 3, activation="relu", name="c"),
                              layers.Flatten(), layers.Dense(2)])
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 10, 10, 1), "float32"), rng.random((8, 2), "float32")
    callback = FeatureVisualizationImages(str(tmp_path / "tb"), "c", [0, 2], every=2, steps=6,
                                          png_dir=str(tmp_path / "png"))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    logged = {(tag, step): np.stack([tf.io.decode_png(p).numpy()[..., 0] for p in array[2:]])
              for tag, step, _, array in event_tensors(str(tmp_path / "tb"))}
    assert list(logged) == [("feature_vis/c", 2)]
    # The final weights are epoch 2's: the same images, recomputed, up to 8-bit rounding.
    expected = feature_visualization(model, "c", [0, 2], steps=6)[..., 0]
    np.testing.assert_allclose(logged[("feature_vis/c", 2)] / 255.0, expected, atol=1 / 255 + 1e-6)
    assert os.listdir(tmp_path / "png" / "epoch_002") == ["feature_vis_c.png"]


def test_first_step_gradient_is_the_numpy_chain_rule_on_every_backend():
    """The first step's gradient, through the Fourier basis, colors, sigmoid, transforms and a
    linear conv, against the chain rule in float64 NumPy (the irfft2 as an explicit matrix, the
    transform as a scatter-add, the conv's input gradient as in test_gradcam.py). The kernel,
    initial parameters and transforms come from NumPy, so the reference is the same number on
    every backend: within 1e-6 of it on TensorFlow, JAX and PyTorch alike (measured: 6e-9,
    1e-8, 1.5e-8), so the three backends agree to 2e-6."""
    from test_gradcam import conv_backward

    from keras_residual.viz.feature_vis import _ascent

    h, w, c, channels = 9, 8, 3, [1, 3]
    model = keras.Sequential([keras.Input((h, w, c)), layers.Conv2D(4, 3, name="c")])
    model.get_layer("c").set_weights([
        np.random.default_rng(1).normal(0, 0.3, (3, 3, c, 4)).astype("float32"),
        np.zeros(4, "float32")])
    param, params, step_gradient, _ = _ascent(
        model, "c", channels, size=None, objective="channel", parameterization="fourier",
        decorrelate=True, transforms=True, seed=5, value_range=(0.0, 1.0))
    got = step_gradient(params)
    # The same draws: initial parameters, identity transforms, then the first step's.
    rng = np.random.default_rng(5)
    np.testing.assert_array_equal(param.initial(2, rng), params)
    random_transforms(2, h, w, rng, 0.0, (1.0, 1.0), 0.0)
    indices, weights = random_transforms(2, h, w, rng, 1.0)
    # Forward in NumPy: t = A(params) per channel, image = sigmoid(t @ M^T).
    freqs = w // 2 + 1
    basis = np.zeros((h * freqs * 2, h * w))
    for k in range(h * freqs * 2):
        unit = np.zeros(h * freqs * 2)
        unit[k] = 1.0
        spectrum = unit.reshape(h, freqs, 2)
        spectrum = (spectrum[..., 0] + 1j * spectrum[..., 1]) * param.scale
        basis[k] = np.fft.irfft2(spectrum, s=(h, w), norm="ortho").ravel()
    p = params.astype("float64").reshape(2, c, -1)
    t = np.einsum("bck,kn->bnc", p, basis)  # (2, h*w, c)
    u = t @ param.color.T
    sig = 1 / (1 + np.exp(-u))
    # Backward: d score / d transformed image = the conv's input gradient of mean(channel).
    kernel = model.get_layer("c").get_weights()[0].astype("float64")
    out_h, out_w = h - 2, w - 2
    upstream = np.zeros((2, out_h, out_w, 4))
    upstream[0, ..., 1] = upstream[1, ..., 3] = 1.0 / (out_h * out_w)
    d_transformed = conv_backward(upstream, kernel, (2, h, w, c), same=False).reshape(2, h * w, c)
    d_image = np.zeros((2 * h * w, c))
    for j in range(4):
        np.add.at(d_image, indices[..., j].ravel(),
                  (weights[..., j, None] * d_transformed).reshape(-1, c))
    d_u = d_image.reshape(2, h * w, c) * sig * (1 - sig)
    d_t = d_u @ param.color
    expected = np.einsum("bnc,kn->bck", d_t, basis).reshape(params.shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(expected).max() > 1e-2
