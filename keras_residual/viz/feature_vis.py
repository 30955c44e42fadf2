"""Feature visualization by optimization: the image a channel responds to most.

Olah, Mordvintsev and Schubert (2017), "Feature Visualization", Distill. Gradient
ascent on a channel's mean activation (or its centre unit) at any layer path,
inside a block's branch too, starting from a random image. Two of the article's
sections make the result an image rather than adversarial noise:

- "Preconditioning and Parameterization": the image is optimized in a
  decorrelated space, its 2D Fourier spectrum scaled by one over the frequency
  (so every frequency learns at a similar rate), with colors decorrelated by the
  square root of ImageNet's color correlation, and a sigmoid into the model's
  value range (`FourierImage`).
- "Transformation robustness": every step sees the image under a fresh random
  jitter, scale and rotation (`random_transforms`), so the objective must hold
  for all of them.

Everything here is Keras ops and NumPy: the inverse Fourier transform is two
small matrix products, and the transforms are a gather of four neighbours with
bilinear weights computed in NumPy, so every backend computes the same function
(and the same gradient) from the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_residual.gradients import input_gradient_function
from keras_residual.validation import positive_int
from keras_residual.viz.guided import shared, shared_unit_gradient

#: The square root of ImageNet's RGB color correlation, columns scaled to unit norm at most:
#: the color decorrelation of Olah et al. (2017, "Preconditioning"), as published with their
#: Lucid library.
IMAGENET_COLOR_CORRELATION = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype="float64")
_COLOR = IMAGENET_COLOR_CORRELATION / np.max(np.linalg.norm(IMAGENET_COLOR_CORRELATION, axis=0))


class FourierImage:
    """Images parameterized by a frequency-scaled 2D spectrum and decorrelated colors.

    `to_image(params)` (Keras ops, differentiable) maps parameters shaped
    `(batch, channels, height, height_freqs, 2)` (real and imaginary parts
    of `numpy.fft.rfft2`'s bins) to images `(batch, height, width, channels)`
    in `value_range`: the spectrum times `1 / max(f, 1 / max(height, width))`
    (f in cycles per pixel), the inverse real 2D DFT with orthonormal scaling,
    the color matrix (three channels and `decorrelate=True`), and a sigmoid.
    `from_image` is its inverse (NumPy): `to_image(from_image(x))` is `x` for
    any `x` strictly inside the value range. `parameterization="pixel"` skips
    the spectrum (parameters shaped like the images).

    Args:
        shape: (height, width, channels) of one image.
        decorrelate: bool. Use the ImageNet color correlation for 3 channels.
            Defaults to True.
        value_range: (low, high) of the images. Defaults to (0, 1).
        parameterization: "fourier" or "pixel". Defaults to "fourier".

    Example:
        >>> import numpy as np
        >>> param = FourierImage((6, 5, 3))
        >>> x = np.random.default_rng(0).uniform(0.1, 0.9, (2, 6, 5, 3))
        >>> back = keras.ops.convert_to_numpy(param.to_image(param.from_image(x)))
        >>> bool(np.allclose(back, x, atol=1e-5))
        True
    """

    def __init__(self, shape: Sequence[int], decorrelate: bool = True,
                 value_range: tuple[float, float] = (0.0, 1.0), parameterization: str = "fourier"):
        self.height, self.width, self.channels = (int(s) for s in shape)
        if parameterization not in ("fourier", "pixel"):
            raise ValueError("`parameterization` must be 'fourier' or 'pixel'. "
                             f"Received: parameterization={parameterization!r}")
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"`value_range` must be (low, high) with low < high. "
                             f"Received: value_range={value_range!r}")
        self.parameterization, self.low, self.high = parameterization, low, high
        self.color = _COLOR if (decorrelate and self.channels == 3) else np.eye(self.channels)
        h, w = self.height, self.width
        self.freqs = w // 2 + 1
        f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
        self.scale = 1.0 / np.maximum(f, 1.0 / max(h, w))  # (h, freqs)
        u = np.arange(h)
        angle_h = 2 * np.pi * np.outer(u, u) / h
        v, x = np.arange(self.freqs), np.arange(w)
        weight = np.where((v == 0) | ((w % 2 == 0) & (v == w // 2)), 1.0, 2.0)[:, None]
        angle_w = 2 * np.pi * np.outer(v, x) / w
        norm = 1.0 / math.sqrt(h * w)  # orthonormal: numpy.fft.irfft2(..., norm="ortho")
        self._matrices = [ops.convert_to_tensor(m.astype("float32")) for m in (
            np.cos(angle_h), np.sin(angle_h), weight * np.cos(angle_w) * norm,
            weight * np.sin(angle_w) * norm, self.scale, self.color.T)]

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The shape of one image's parameters."""
        if self.parameterization == "pixel":
            return (self.height, self.width, self.channels)
        return (self.channels, self.height, self.freqs, 2)

    def initial(self, batch: int, rng: np.random.Generator, std: float = 0.01) -> np.ndarray:
        """Random parameters `N(0, std^2)`: an image close to the middle of the value range."""
        return (std * rng.standard_normal((batch, *self.param_shape))).astype("float32")

    def to_image(self, params: Any) -> Any:
        """Parameters to images `(batch, height, width, channels)` in the value range (ops)."""
        cos_h, sin_h, cos_w, sin_w, scale, color = self._matrices
        params = ops.convert_to_tensor(params, "float32")
        if self.parameterization == "pixel":
            t = params
        else:
            real, imag = params[..., 0] * scale, params[..., 1] * scale  # (b, c, h, freqs)
            a_real = ops.einsum("hu,bcuv->bchv", cos_h, real) - ops.einsum("hu,bcuv->bchv",
                                                                            sin_h, imag)
            a_imag = ops.einsum("hu,bcuv->bchv", sin_h, real) + ops.einsum("hu,bcuv->bchv",
                                                                            cos_h, imag)
            t = ops.einsum("bchv,vw->bhwc", a_real, cos_w) - ops.einsum("bchv,vw->bhwc",
                                                                          a_imag, sin_w)
        t = ops.matmul(t, color)
        return self.low + (self.high - self.low) * ops.sigmoid(t)

    def from_image(self, images: Any) -> np.ndarray:
        """The parameters of `images` (NumPy): the inverse of `to_image`."""
        images = np.asarray(images, dtype="float64")
        unit = np.clip((images - self.low) / (self.high - self.low), 1e-6, 1 - 1e-6)
        t = np.log(unit / (1 - unit)) @ np.linalg.inv(self.color.T)
        if self.parameterization == "pixel":
            return t.astype("float32")
        spectrum = np.fft.rfft2(np.moveaxis(t, -1, 1), norm="ortho") / self.scale
        return np.stack([spectrum.real, spectrum.imag], axis=-1).astype("float32")


def random_transforms(batch: int, height: int, width: int, rng: np.random.Generator,
                      jitter: float = 8.0, scales: tuple[float, float] = (0.9, 1.1),
                      degrees: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """One random jitter, scale and rotation per image, as a bilinear gather (NumPy).

    Olah et al. (2017), "Transformation robustness": output pixel `p` reads the
    input at `c + R(-a) (p - c - t) / s` (centre `c`, rotation `a` uniform in
    `[-degrees, degrees]`, scale `s` uniform in `scales`, shift `t` uniform in
    `[-jitter, jitter]` pixels), reflected at the borders, by bilinear
    interpolation of its four neighbours.

    Returns:
        (indices, weights): int64 `(batch, height * width, 4)` indices into the
        flattened `(batch * height * width)` pixels, and float32 weights
        summing to 1 per output pixel.

    Example:
        >>> idx, w = random_transforms(1, 4, 4, np.random.default_rng(0), 0, (1, 1), 0)
        >>> idx[0, :, 0].tolist() == list(range(16)), bool(np.allclose(w[..., 0], 1))
        (True, True)
    """
    angle = np.deg2rad(rng.uniform(-degrees, degrees, batch))
    scale = rng.uniform(scales[0], scales[1], batch)
    shift = rng.uniform(-jitter, jitter, (batch, 2))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    p = np.stack([rows.ravel(), cols.ravel()], axis=-1)[None] - centre - shift[:, None]  # (b, n, 2)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    source_r = (cos * p[..., 0] + sin * p[..., 1]) / scale[:, None] + centre[0]
    source_c = (-sin * p[..., 0] + cos * p[..., 1]) / scale[:, None] + centre[1]

    def reflect(coordinate, size):
        if size == 1:
            return np.zeros_like(coordinate)
        period = 2 * (size - 1)
        folded = np.mod(coordinate, period)
        return np.where(folded > size - 1, period - folded, folded)

    source_r, source_c = reflect(source_r, height), reflect(source_c, width)
    r0 = np.minimum(np.floor(source_r).astype("int64"), height - 1)
    c0 = np.minimum(np.floor(source_c).astype("int64"), width - 1)
    r1, c1 = np.minimum(r0 + 1, height - 1), np.minimum(c0 + 1, width - 1)
    fr, fc = source_r - r0, source_c - c0
    base = (np.arange(batch) * height * width)[:, None]
    indices = np.stack([r0 * width + c0, r0 * width + c1, r1 * width + c0, r1 * width + c1],
                       axis=-1) + base[..., None]
    weights = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], axis=-1)
    return indices.astype("int64"), weights.astype("float32")


def apply_transforms(images: Any, indices: Any, weights: Any) -> Any:
    """`images` (batch, height, width, channels) under `random_transforms`' gather (ops)."""
    shape = ops.shape(images)
    flat = ops.reshape(images, (-1, shape[-1]))
    gathered = ops.take(flat, indices, axis=0)  # (b, n, 4, c)
    out = ops.sum(gathered * ops.expand_dims(weights, -1), axis=2)
    return ops.reshape(out, shape)


def _image_shape(model: keras.Model, size: Sequence[int] | None) -> tuple[int, int, int, bool]:
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ValueError(f"Feature visualization needs a model of images (height, width, "
                         f"channels). Received: model input shape {shape}")
    first = keras.config.image_data_format() == "channels_first"
    channels, spatial = (shape[0], shape[1:]) if first else (shape[-1], shape[:2])
    if size is not None:
        spatial = tuple(int(s) for s in size)
    if any(s is None for s in spatial) or channels is None:
        raise ValueError(f"Model input {shape} has no fixed size: pass `size=(height, width)`.")
    return int(spatial[0]), int(spatial[1]), int(channels), first


def _ascent(model: keras.Model, path: str, channels: Any, *, size: Sequence[int] | None,
            objective: str, parameterization: str, decorrelate: bool, transforms: bool,
            seed: int, value_range: tuple[float, float], relu_gradient: str = "redirected"):
    """`(param, initial params, step_gradient, channels_first)` of `feature_visualization`.

    `step_gradient(params)` draws the next step's transforms (from the seeded
    generator that drew the initial parameters) and returns d objective / d params.
    """
    if objective not in ("channel", "neuron"):
        raise ValueError(f"`objective` must be 'channel' or 'neuron'. Received: {objective!r}")
    if relu_gradient not in ("redirected", "plain"):
        raise ValueError(f"`relu_gradient` must be 'redirected' or 'plain'. "
                         f"Received: {relu_gradient!r}")
    channels = [int(c) for c in np.atleast_1d(channels)]
    height, width, depth, first = _image_shape(model, size)
    # The redirected rule runs through a copy with redirected ReLUs and the model's current
    # weights; "plain" through the model. Either way the probe is made once per path.
    features = shared_unit_gradient(model, relu_gradient).features(path)
    out_shape = tuple(features.compute_output_shape((1,) + (
        (depth, height, width) if first else (height, width, depth))))
    count = out_shape[1] if first and len(out_shape) > 2 else out_shape[-1]
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise ValueError(f"Layer {path!r} has {count} channels. Received: channels={bad}")
    param = FourierImage((height, width, depth), decorrelate, value_range, parameterization)
    rng = np.random.default_rng(seed)
    params = param.initial(len(channels), rng)
    onehot = np.eye(count, dtype="float32")[channels]
    channel_axis = 1 if first and len(out_shape) > 2 else -1

    def make_gradient():
        def score(p, indices, weights, chosen):
            images = param.to_image(p)
            if transforms:
                images = apply_transforms(images, indices, weights)
            if first:
                images = ops.transpose(images, (0, 3, 1, 2))
            act = ops.cast(features(images, training=False), "float32")
            if channel_axis == 1:
                act = ops.moveaxis(act, 1, -1)
            if len(out_shape) > 2:
                if objective == "neuron":
                    centre = tuple(s // 2 for s in ops.shape(act)[1:-1])
                    act = act[(slice(None), *centre)]
                else:
                    act = ops.mean(act, axis=tuple(range(1, len(out_shape) - 1)))
            return ops.sum(act * chosen)

        return input_gradient_function(score)

    # One compiled gradient per model and setting, so repeated calls (a callback every few
    # epochs, an atlas's blocks) trace it once; channels are an argument (`onehot`).
    key = ("feature_vis", path, relu_gradient, (height, width, depth), first, decorrelate,
           tuple(float(v) for v in value_range), parameterization, transforms, objective)
    gradient = shared(model, key, make_gradient)
    identity = random_transforms(len(channels), height, width, rng, 0.0, (1.0, 1.0), 0.0)
    # The article's 8-pixel jitter is for 224x224 inputs: the same fraction of smaller images
    # (at least one pixel), so a 28x28 digit is not shifted by a third of its width.
    jitter = max(1.0, 8.0 * min(height, width) / 224)

    def step_gradient(p: np.ndarray) -> np.ndarray:
        indices, weights = (random_transforms(len(channels), height, width, rng, jitter)
                            if transforms else identity)
        return gradient(p, indices, weights, onehot)

    return param, params, step_gradient, first


def feature_visualization(
    model: keras.Model,
    path: str,
    channels: int | Sequence[int],
    *,
    steps: int = 512,
    size: Sequence[int] | None = None,
    objective: str = "channel",
    parameterization: str = "fourier",
    decorrelate: bool = True,
    transforms: bool = True,
    learning_rate: float = 0.05,
    seed: int = 0,
    value_range: tuple[float, float] = (0.0, 1.0),
    relu_gradient: str = "redirected",
) -> np.ndarray:
    """Images that maximize channels of a layer (Olah et al. 2017, "Feature Visualization").

    All channels are optimized together, one image each, by Adam on the
    parameters of a `FourierImage` (or pixels), each step under fresh random
    transforms (`random_transforms`) when `transforms` is True.

    Args:
        model: keras.Model of images; left unchanged.
        path: str. Layer path (nested paths as in `keras_residual.probe`).
        channels: int or sequence of int. One image per channel.
        steps: int. Optimization steps. Defaults to 512.
        size: (height, width) or None: the model's input size.
        objective: "channel" (the channel's mean over positions) or "neuron"
            (the channel at the centre position). Defaults to "channel".
        parameterization: "fourier" or "pixel". Defaults to "fourier".
        decorrelate: bool. Decorrelate colors (3-channel inputs). Defaults to True.
        transforms: bool. Random jitter (8 pixels at 224x224, the same fraction of
            other sizes, at least 1), scale (0.9-1.1) and rotation (up to 10 degrees)
            every step. Defaults to True.
        learning_rate: float. Adam's step size. Defaults to 0.05.
        seed: int. Fixes the initial image and the transforms.
        value_range: (low, high) of the model's inputs. Defaults to (0, 1).
        relu_gradient: "redirected" (the ReLUs of a copy of the model pass
            an ascent gradient to an image whose ReLU blocks it entirely,
            `viz.guided.redirected_relu`, as Lucid does: a channel that the
            starting image leaves at zero still gets a gradient) or "plain".
            Defaults to "redirected".

    Returns:
        float32 array (len(channels), *input shape) in `value_range`, in the
        model's data format.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c")])
        >>> images = feature_visualization(model, "c", [0, 3], steps=4)
        >>> images.shape, bool(images.min() >= 0 and images.max() <= 1)
        ((2, 8, 8, 1), True)
    """
    steps = positive_int("steps", steps)
    param, params, step_gradient, first = _ascent(
        model, path, channels, size=size, objective=objective, parameterization=parameterization,
        decorrelate=decorrelate, transforms=transforms, seed=seed, value_range=value_range,
        relu_gradient=relu_gradient)
    first_moment = np.zeros_like(params)
    second_moment = np.zeros_like(params)
    for step in range(1, steps + 1):
        g = step_gradient(params)
        first_moment = 0.9 * first_moment + 0.1 * g  # Adam (Kingma and Ba 2015), ascent
        second_moment = 0.999 * second_moment + 0.001 * g * g
        update = (first_moment / (1 - 0.9 ** step)) / (
            np.sqrt(second_moment / (1 - 0.999 ** step)) + 1e-8)
        params = (params + learning_rate * update).astype("float32")
    images = keras.ops.convert_to_numpy(param.to_image(params)).astype("float32")
    return np.moveaxis(images, -1, 1) if first else images
