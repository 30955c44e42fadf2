"""Integrated Gradients and SmoothGrad, for a class score or one unit of any layer path.

- Integrated Gradients (Sundararajan, Taly and Yan 2017, "Axiomatic Attribution
  for Deep Networks", ICML, Sec. 3, Eq. 1): the input minus a baseline, times
  the gradient averaged along the straight line from the baseline to the
  input. The integral is computed by the trapezoidal rule with `steps`
  intervals (the paper's Sec. 5 uses a Riemann sum); by Completeness
  (Prop. 1) the attributions of an image sum to score(image) minus
  score(baseline), up to the rule's error.
- SmoothGrad (Smilkov, Thorat, Kim, Viegas and Wattenberg 2017, "SmoothGrad:
  removing noise by adding noise", Sec. 3, Eq. 3): the input gradient
  averaged over copies of the image with Gaussian noise, its standard
  deviation a fraction `noise` of the image's value range (the paper's
  "noise level" sigma / (x_max - x_min), 10-20 % in its Fig. 3);
  `squared=True` averages the squared gradients (SmoothGrad-Squared, Hooker,
  Erhan, Kindermans and Kim 2019, "A Benchmark for Interpretability Methods
  in Deep Neural Networks", NeurIPS, Sec. 4).

The score is the one Grad-CAM uses (`keras_residual.viz.gradcam`): the
class's logit before a final softmax unless `logits=False`; `class_index`
None takes each image's top class. With `path`, the score is instead one
unit of channel `class_index` of the layer at that path, the unit
`guided_backprop` takes (the channel's strongest position in each image),
held fixed along the line and under the noise so that one function is
integrated or averaged. Every gradient is a forward and a backward pass of
`batch_size` points at a time, through one compiled gradient function per
model (shared across calls, as `grad_cam`'s and `guided_backprop`'s are).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from keras_residual.gradients import input_gradient_function
from keras_residual.validation import check_model_input, positive_int
from keras_residual.viz.gradcam import GradCam, _chosen_score, _class_scores
from keras_residual.viz.guided import _channel_first, shared, shared_unit_gradient


def _score_gradient(model: keras.Model, logits: bool) -> Callable[..., np.ndarray]:
    """`(x, classes) -> d sum_i y^{c_i}(x_i) / d x`, compiled once per model and `logits`."""

    def make() -> Callable[..., np.ndarray]:
        source = weakref.ref(model)  # the shared cache must not keep the model alive

        def objective(x, classes):
            return _chosen_score(_class_scores(source(), x, logits), classes)

        return input_gradient_function(objective)

    return shared(model, ("score_gradient", bool(logits)), make)


class _Target:
    """What is attributed, resolved once on the images themselves.

    A class score (`path` None): the classes, each image's top one where
    `class_index` is None. A unit (`path` given): channel `class_index` of
    that layer at the position where it is strongest in each image.
    """

    def __init__(self, model: keras.Model, class_index: Any, images: np.ndarray,
                 path: str | None, logits: bool, batch_size: int):
        self.batch_size = batch_size
        if path is None:
            cam = GradCam(model, logits=logits)  # validates class_index against the output
            classes = cam.class_indices(class_index, len(images))
            if (classes < 0).any():
                scores = np.concatenate([
                    keras.ops.convert_to_numpy(_class_scores(model, images[s : s + batch_size],
                                                             logits))
                    for s in range(0, len(images), batch_size)
                ])
                classes = np.where(classes < 0, scores.argmax(axis=1), classes)
            self.owner_info = classes.astype("int64")
            self._gradient = _score_gradient(model, logits)
            return
        if class_index is None or np.ndim(class_index) != 0:
            raise ValueError(
                "With `path`, `class_index` is the channel of that layer: one int. "
                f"Received: class_index={class_index!r}"
            )
        unit = shared_unit_gradient(model, "plain")
        channel = int(class_index)
        self.owner_info = self._strongest_positions(unit, path, channel, images)
        self._gradient = lambda x, info: unit(path, channel, x, positions=info,
                                              batch_size=len(x))

    def _strongest_positions(self, unit, path: str, channel: int,
                             images: np.ndarray) -> np.ndarray:
        features = unit.features(path)
        channels = features.output.shape[1 if _channel_first(features) else -1]
        if not 0 <= channel < channels:
            raise ValueError(f"Layer {path!r} has {channels} channels. Received: channel={channel}")
        rank = len(features.output.shape)
        if rank <= 2:
            return np.zeros((len(images), 0), dtype="int64")
        axis = 1 if _channel_first(features) else -1
        positions = []
        for start in range(0, len(images), self.batch_size):
            act = keras.ops.convert_to_numpy(
                features(images[start : start + self.batch_size], training=False))
            act = np.take(act, channel, axis=axis)
            flat = act.reshape(len(act), -1).argmax(axis=1)
            positions.append(np.stack(np.unravel_index(flat, act.shape[1:]), axis=1))
        return np.concatenate(positions).astype("int64")

    def gradients(self, x: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """Gradients at points `x`, each scored as the image `owners[i]` is."""
        return self._gradient(np.asarray(x, dtype="float32"), self.owner_info[owners])


def _chunks(total: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, total, size):
        yield np.arange(start, min(start + size, total))


def _checked_images(model: keras.Model, images: Any) -> np.ndarray:
    images = np.asarray(images, dtype="float32")
    check_model_input(model, images, "images")
    return images


def integrated_gradients(
    model: keras.Model,
    class_index: Any,
    images: Any,
    *,
    baseline: Any = None,
    steps: int = 50,
    logits: bool = True,
    path: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017, Sec. 3, Eq. 1) by the trapezoidal rule.

    `(x - x') * sum_k w_k grad F(x' + k/m (x - x'))` for k = 0..m (m =
    `steps`), with weights 1/m, halved at both ends. Completeness (the
    paper's Prop. 1): each image's attributions sum to F(x) - F(x'), up to
    the rule's error, which shrinks as 1/m^2 where F is smooth.

    Args:
        model: keras.Model. One output (N, classes) without `path`; left unchanged.
        class_index: int, one int per image, or None (each image's top class,
            from the image itself). With `path`: the channel, one int.
        images: array (N, ...) in the model's input layout and value range.
        baseline: None (zeros), a scalar, or an array broadcastable to one
            image or to `images`. Defaults to None.
        steps: int. Intervals of the rule; `steps + 1` gradients per image.
            Defaults to 50.
        logits: bool. Score the class before a final softmax (as `grad_cam`).
            Defaults to True.
        path: str or None. Attribute one unit of this layer's channel
            `class_index` instead (nested paths as in `keras_residual.probe`):
            the unit `guided_backprop` takes, its position fixed from each image.
        batch_size: int. Points per forward-plus-backward pass: the
            `N * (steps + 1)` points take `ceil(N * (steps + 1) / batch_size)`
            passes. Defaults to 32.

    Returns:
        float32 array shaped like `images`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x = np.array([[1.0, 2.0, 3.0]], "float32")
        >>> attributions = integrated_gradients(model, 1, x, steps=8)
        >>> score = model.predict(x, verbose=0)[0, 1] - model.predict(0 * x, verbose=0)[0, 1]
        >>> bool(np.isclose(attributions.sum(), score, atol=1e-5))
        True
    """
    images = _checked_images(model, images)
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    baseline = _baseline(baseline, images)
    target = _Target(model, class_index, images, path, logits, batch_size)
    points_per_image = steps + 1
    weights = np.full(points_per_image, 1.0 / steps)
    weights[[0, -1]] /= 2.0
    total = np.zeros(images.shape, dtype="float64")
    difference = images.astype("float64") - baseline
    for chunk in _chunks(len(images) * points_per_image, batch_size):
        owners, k = np.divmod(chunk, points_per_image)
        alpha = (k / steps).reshape((-1,) + (1,) * (images.ndim - 1))
        points = baseline[owners] + alpha * difference[owners]
        grads = target.gradients(points, owners).astype("float64")
        np.add.at(total, owners, weights[k].reshape(alpha.shape) * grads)
    return (difference * total).astype("float32")


def _baseline(baseline: Any, images: np.ndarray) -> np.ndarray:
    """The baseline broadcast to `images`' shape, float64."""
    if baseline is None:
        return np.zeros(images.shape, dtype="float64")
    array = np.asarray(baseline, dtype="float64")
    try:
        return np.broadcast_to(array, images.shape).copy()
    except ValueError:
        try:
            return np.broadcast_to(array, images.shape[1:])[None].repeat(len(images), 0)
        except ValueError:
            raise ValueError(
                "`baseline` must be a scalar or broadcast to one image "
                f"{images.shape[1:]} or to the images {images.shape}. Received: baseline of "
                f"shape {array.shape}"
            ) from None


def smoothgrad(
    model: keras.Model,
    class_index: Any,
    images: Any,
    *,
    samples: int = 50,
    noise: float = 0.15,
    squared: bool = False,
    seed: int | None = None,
    logits: bool = True,
    path: str | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017, Sec. 3, Eq. 3): the gradient averaged over noisy copies.

    Each image gets `samples` copies `x + N(0, sigma^2)` with `sigma = noise *
    (x.max() - x.min())`, the paper's noise level per image; `noise=0` is the
    plain input gradient. The noise is drawn by NumPy (`default_rng(seed)`),
    so a seed gives the same copies on every backend and batch size.

    Args:
        model: keras.Model. One output (N, classes) without `path`; left unchanged.
        class_index: int, one int per image, or None (each image's top class,
            from the image itself). With `path`: the channel, one int.
        images: array (N, ...) in the model's input layout and value range.
        samples: int. Noisy copies per image. Defaults to 50.
        noise: float >= 0. Standard deviation as a fraction of each image's
            value range. Defaults to 0.15.
        squared: bool. Average the squared gradients (SmoothGrad-Squared,
            Hooker et al. 2019). Defaults to False.
        seed: int or None. Seeds the noise; None draws fresh noise.
        logits: bool. Score the class before a final softmax. Defaults to True.
        path: str or None. Attribute one unit of this layer's channel
            `class_index` instead (as `integrated_gradients`).
        batch_size: int. Noisy copies per forward-plus-backward pass.
            Defaults to 32.

    Returns:
        float32 array shaped like `images`.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x = np.array([[1.0, 2.0, 3.0]], "float32")
        >>> grads = smoothgrad(model, 0, x, samples=4, seed=0)
        >>> kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
        >>> bool(np.allclose(grads[0], kernel[:, 0], atol=1e-6))  # a linear score's gradient
        True
    """
    images = _checked_images(model, images)
    samples = positive_int("samples", samples)
    batch_size = positive_int("batch_size", batch_size)
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be a number >= 0. Received: noise={noise!r}")
    target = _Target(model, class_index, images, path, logits, batch_size)
    flat = images.reshape(len(images), -1)
    sigma = float(noise) * (flat.max(axis=1) - flat.min(axis=1)).astype("float64")
    rng = np.random.default_rng(seed)
    total = np.zeros(images.shape, dtype="float64")
    for chunk in _chunks(len(images) * samples, batch_size):
        owners = chunk // samples
        draws = rng.standard_normal((len(chunk),) + images.shape[1:])
        scale = sigma[owners].reshape((-1,) + (1,) * (images.ndim - 1))
        grads = target.gradients(images[owners] + scale * draws, owners).astype("float64")
        np.add.at(total, owners, grads * grads if squared else grads)
    return (total / samples).astype("float32")
