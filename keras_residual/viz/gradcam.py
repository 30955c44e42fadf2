"""Grad-CAM and Guided Grad-CAM for any layer path, on TensorFlow, JAX and PyTorch.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization" (ICCV 2017), Sec. 3. For a class score `y^c`
and the feature maps `A^k` of a layer:

- Eq. 1: `alpha_k^c = 1/Z sum_ij d y^c / d A^k_ij`, the gradient averaged over
  the Z positions of channel k;
- Eq. 2: `L^c = ReLU(sum_k alpha_k^c A^k)`, a map at the layer's resolution;
- Guided Grad-CAM: guided backpropagation of `y^c` (Springenberg et al.
  2015) multiplied pointwise by `L^c` upsampled bilinearly to the input size.

The layer is named by a path (`keras_residual.probe`), so a block's branch
(`"conv4_block2/branch"`) or a layer inside it works as well as a top-level
layer. The gradient with respect to that tensor comes from one forward and
one backward pass of the model itself: while the gradient function traces the
model, the layer at the path returns its output plus a zero tensor, and the
gradient with respect to that zero tensor is `d y^c / d A`. This is the only
change to the model, made inside `try/finally` for the duration of the call;
the model's weights are read when the function runs, so a `GradCam` made
before training sees the trained weights.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_residual import graph
from keras_residual.gradients import input_gradient_function
from keras_residual.graph import INPUT, resolve_path, split_path
from keras_residual.probe import probe
from keras_residual.validation import check_model_input
from keras_residual.viz.guided import UnitGradient, shared


@contextlib.contextmanager
def replaced_attribute(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Sets the instance attribute `obj.name` to `value`, restoring it in `finally`.

    The viz tools tap a layer's `call` this way for one forward pass (Grad-CAM's
    activations and their gradient; the value before a block's activation).

    Example:
        >>> import keras
        >>> dense = keras.layers.Dense(1)
        >>> with replaced_attribute(dense, "call", lambda x: x):
        ...     tapped = "call" in vars(dense)
        >>> tapped, "call" in vars(dense)
        (True, False)
    """
    own = vars(obj)
    had, old = name in own, own.get(name)
    # object.__setattr__: no Keras / torch attribute tracking for a temporary function.
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, name, old)
        else:
            object.__delattr__(obj, name)


def final_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The layer that computes the output of `model`, looking inside nested models.

    Returns None for a model with several outputs (`graph.output_layer`).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> final_layer(model).name
        'fc'
    """
    return graph.output_layer(model)


def _is_softmax(activation: Any) -> bool:
    return activation is keras.activations.softmax


@contextlib.contextmanager
def _without_softmax(model: keras.Model) -> Iterator[None]:
    """While active, `model` outputs the input of its final softmax (the logits), if any."""
    layer = final_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        with replaced_attribute(layer, "call", lambda inputs, *args, **kwargs: inputs):
            yield
    elif _is_softmax(getattr(layer, "activation", None)):
        with replaced_attribute(layer, "activation", keras.activations.linear):
            yield
    else:
        yield


def _class_scores(model: keras.Model, x: Any, logits: bool) -> Any:
    """`model(x)` in float32, before a final softmax when `logits` is True."""
    with _without_softmax(model) if logits else contextlib.nullcontext():
        return ops.cast(model(x, training=False), "float32")


def _chosen_score(scores: Any, classes: Any) -> Any:
    """Sum over images of the score of each image's class; a class of -1 takes the top one."""
    top = ops.argmax(ops.stop_gradient(scores), axis=1)
    classes = ops.where(ops.greater_equal(classes, 0), classes, top)
    return ops.sum(ops.take_along_axis(scores, ops.expand_dims(classes, 1), axis=1))


def bilinear_resize(maps: Any, size: Sequence[int]) -> np.ndarray:
    """Resizes maps (N, *spatial) to (N, *size) by separable linear interpolation.

    The alignment is the "half-pixel centers" convention of
    `tf.image.resize(method="bilinear")`, `torch.nn.functional.interpolate(
    mode="bilinear", align_corners=False)` and OpenCV's `cv2.resize`: the
    maps and the output cover the same extent, output pixel `o` samples the
    input at `(o + 0.5) * in / out - 0.5`, and samples beyond the outermost
    pixel centers take the edge value. Bilinear for 2D maps, linear for 1D,
    trilinear for 3D.

    Args:
        maps: array (N, *spatial).
        size: sequence of int. The new spatial size, one entry per spatial axis.

    Returns:
        float32 array (N, *size).

    Example:
        >>> bilinear_resize([[0.0, 4.0]], (4,)).tolist()
        [[0.0, 1.0, 3.0, 4.0]]
    """
    out = np.asarray(maps, dtype="float32")
    size = tuple(int(s) for s in size)
    if len(size) != out.ndim - 1:
        raise ValueError(
            f"`size` needs one entry per spatial axis of maps shaped {out.shape}. "
            f"Received: size={size}"
        )
    for axis, new in enumerate(size, start=1):
        old = out.shape[axis]
        if new == old:
            continue
        source = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        low = np.floor(source).astype("int64")
        high = np.minimum(low + 1, old - 1)
        shape = [1] * out.ndim
        shape[axis] = new
        frac = (source - low).astype("float32").reshape(shape)
        lower = np.take(out, low, axis=axis)
        out = lower + (np.take(out, high, axis=axis) - lower) * frac
    return out


def _channel_axis(rank: int) -> int:
    return 1 if rank > 2 and keras.config.image_data_format() == "channels_first" else -1


def _spatial_size(images: np.ndarray) -> tuple[int, ...]:
    axis = _channel_axis(images.ndim)
    return images.shape[2:] if axis == 1 else images.shape[1:-1]


class GradCam:
    """Grad-CAM maps of any layer path, compiled once per path (Selvaraju et al. 2017).

    Keeps one gradient function per layer path (compiled with `tf.function`
    on TensorFlow), so maps for many batches, classes or epochs trace the
    model once per path. The model is never copied for Grad-CAM and is
    unchanged afterwards; Guided Grad-CAM also makes one guided-backprop copy
    of it (`rectified_copy`) on first use.

    The class score `y^c` is taken before the softmax when `logits` is True
    and the model's output layer applies one: a `Softmax` layer, or a layer
    whose `activation` is softmax (`Dense(10, activation="softmax")`,
    `Activation("softmax")`), also as the last layer of a nested model.
    While the gradient is traced that layer's softmax is skipped, so `y^c` is
    the logit; the softmax saturates and its gradient vanishes for confident
    predictions, which is why the paper uses the pre-softmax score. A model
    whose output is already a score is used as it is.

    Args:
        model: keras.Model. Functional or Sequential with one output of
            shape (N, classes); left unchanged.
        logits: bool. Score classes before a final softmax. Defaults to True.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        >>> x = keras.layers.GlobalAveragePooling2D()(x)
        >>> model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
        >>> cam = GradCam(model)
        >>> cam("conv", None, np.ones((2, 8, 8, 1), "float32")).shape
        (2, 6, 6)
    """

    def __init__(self, model: keras.Model, logits: bool = True):
        outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
        if len(outputs) != 1 or len(outputs[0].shape) != 2:
            shapes = [tuple(o.shape) for o in outputs]
            raise ValueError(
                "Grad-CAM needs a built functional or Sequential model with one output of "
                f"shape (N, classes). Received: model {model.name!r} with output shapes {shapes}"
            )
        self._source = weakref.ref(model)
        self._model: keras.Model | None = model
        self.logits = bool(logits)
        self.classes = int(outputs[0].shape[-1])
        self._features: dict[str, keras.Model] = {}
        self._gradients: dict[str, Callable] = {}
        self._shapes: dict[tuple, tuple[int, ...]] = {}
        self._guided: UnitGradient | None = None
        self._guided_gradient_fn: Callable | None = None

    @property
    def model(self) -> keras.Model:
        """The model the maps are made for."""
        return self._model if self._model is not None else self._source()

    def features(self, path: str) -> keras.Model:
        """The model from the input to the tensor at `path` (`keras_residual.probe`)."""
        if path not in self._features:
            self._features[path] = probe(self.model, path)
        return self._features[path]

    def class_indices(self, class_index: Any, count: int) -> np.ndarray:
        """`class_index` (int, one int per image, or None) as int64 (count,); -1 for None."""
        if class_index is None:
            return np.full(count, -1, dtype="int64")
        array = np.asarray(class_index)
        if array.dtype.kind not in "iu":
            raise TypeError(
                "`class_index` must be an int, a sequence of ints (one per image) or None. "
                f"Received: class_index={class_index!r}"
            )
        if array.ndim == 0:
            array = np.full(count, int(array), dtype="int64")
        if array.shape != (count,):
            raise ValueError(
                f"`class_index` must be one int or {count} ints (one per image). "
                f"Received: class_index of shape {array.shape}"
            )
        if array.size and (array.min() < 0 or array.max() >= self.classes):
            raise ValueError(
                f"Model {self.model.name!r} scores {self.classes} classes, so a class index "
                f"must be in [0, {self.classes}). Received: class_index={class_index!r}"
            )
        return array.astype("int64")

    def gradients(
        self, path: str, class_index: Any, images: Any, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """The layer's activations `A` and the class-score gradient `d y^c / d A`.

        Args:
            path: str. Layer path, e.g. "conv4_block6" or
                "conv4_block6/branch/conv4_block6_3_conv"; "<path>/input"
                names the tensor a layer receives.
            class_index: int, sequence of int (one per image) or None (each
                image's top-scoring class).
            images: array (N, ...) in the model's input layout.
            batch_size: int. Images per forward/backward pass. Defaults to 32.

        Returns:
            (activations, gradients): float32 arrays of the layer's output
            shape (N, ...).
        """
        images = self._checked(images)
        classes = self.class_indices(class_index, len(images))
        gradient = self._gradient(path)
        features = self.features(path)
        activations, grads = [], []
        for start in range(0, len(images), int(batch_size)):
            batch = images[start : start + int(batch_size)]
            key = (path, batch.shape)
            if key not in self._shapes:
                self._shapes[key] = tuple(features.compute_output_shape(batch.shape))
            shape = self._shapes[key]
            # Slot 0 is added to the layer's output (its gradient is d y^c / d A);
            # slot 1 multiplies A with no gradient to A (its gradient is A itself).
            probe_tensor = np.zeros((2,) + shape, dtype="float32")
            both = gradient(probe_tensor, batch, classes[start : start + len(batch)])
            grads.append(both[0])
            activations.append(both[1])
        return np.concatenate(activations), np.concatenate(grads)

    def __call__(
        self,
        path: str,
        class_index: Any,
        images: Any,
        upsample: bool = False,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Grad-CAM maps `ReLU(sum_k alpha_k A^k)` (Selvaraju et al. 2017, Eqs. 1-2).

        Args:
            path: str. Layer path with spatial axes (see `gradients`).
            class_index: int, sequence of int (one per image) or None (each
                image's top-scoring class).
            images: array (N, ...) in the model's input layout.
            upsample: bool. Resize the maps to the input's spatial size with
                `bilinear_resize` (half-pixel centers). Defaults to False.
            batch_size: int. Images per pass. Defaults to 32.

        Returns:
            float32 array (N, *spatial): the layer's spatial size, or the
            input's with `upsample=True`. Values are not normalized.
        """
        images = self._checked(images)
        rank = len(self.features(path).output.shape)
        if rank < 3:
            raise ValueError(
                f"Grad-CAM needs a layer with spatial axes; layer {path!r} outputs shape "
                f"{tuple(self.features(path).output.shape)}. Received: path={path!r}"
            )
        activations, grads = self.gradients(path, class_index, images, batch_size)
        axis = _channel_axis(rank)
        spatial = tuple(a for a in range(1, rank) if a != axis % rank)
        alpha = grads.mean(axis=spatial, keepdims=True)  # Eq. 1
        maps = np.maximum((alpha * activations).sum(axis=axis), 0.0)  # Eq. 2
        if upsample:
            maps = bilinear_resize(maps, _spatial_size(np.asarray(images)))
        return maps.astype("float32")

    def guided(
        self, path: str, class_index: Any, images: Any, batch_size: int = 32
    ) -> np.ndarray:
        """Guided Grad-CAM: guided backprop of `y^c` times the upsampled Grad-CAM map.

        Selvaraju et al. 2017, Sec. 3 ("Guided Grad-CAM"), Fig. 1(d, j). The
        guided backpropagation (Springenberg et al. 2015) runs on the
        rectified copy of `keras_residual.viz.guided`; the Grad-CAM map is not
        normalized, so the product keeps its units.

        Returns:
            float32 array shaped like `images`.
        """
        images = self._checked(images)
        maps = self(path, class_index, images, upsample=True, batch_size=batch_size)
        classes = self.class_indices(class_index, len(images))
        gradient = self._guided_gradient()
        guided = np.concatenate([
            gradient(images[start : start + int(batch_size)],
                     classes[start : start + int(batch_size)])
            for start in range(0, len(images), int(batch_size))
        ])
        return (guided * np.expand_dims(maps, _channel_axis(images.ndim))).astype("float32")

    def _checked(self, images: Any) -> np.ndarray:
        """`images` as float32, or the ValueError that names the fix for a wrong shape.

        Checked before anything is traced, so a wrong batch or channel axis, size
        or layout never reaches a backend as a compiled-function traceback.
        """
        images = np.asarray(images, dtype="float32")
        check_model_input(self.model, images, "images")
        return images

    def _tap(self, path: str) -> tuple[keras.layers.Layer, bool]:
        """The layer whose output (or input, for ".../input") the path names."""
        segments = split_path(path)
        if segments == (INPUT,):
            raise ValueError(
                "Path 'input' names the model's input, which has no channels to weight. "
                f"Name a layer, or '<layer>/input'. Received: path={path!r}"
            )
        on_input = segments[-1] == INPUT
        layer = resolve_path(self.model, "/".join(segments[:-1] if on_input else segments))
        return layer, on_input

    def _gradient(self, path: str) -> Callable:
        """`(probe_tensor, images, classes) -> d objective / d probe_tensor`, once per path."""
        if path not in self._gradients:
            layer, on_input = self._tap(path)
            self.features(path)  # a path the probe cannot reach fails here, before tracing
            source, logits = self._source, self.logits  # weak: a shared GradCam keeps no model
            original = layer.call

            def objective(probe_tensor, x, classes):
                seen = []

                def tapped(*args, **kwargs):
                    if on_input:
                        a = args[0]
                        seen.append(a)
                        return original(a + ops.cast(probe_tensor[0], a.dtype), *args[1:],
                                        **kwargs)
                    a = original(*args, **kwargs)
                    seen.append(a)
                    return a + ops.cast(probe_tensor[0], a.dtype)

                with replaced_attribute(layer, "call", tapped):
                    scores = _class_scores(source(), x, logits)
                if len(seen) != 1:
                    raise ValueError(
                        f"Layer {layer.name!r} (path {path!r}) runs {len(seen)} times in one "
                        "call of the model; Grad-CAM needs a layer that runs exactly once. "
                        f"Received: path={path!r}"
                    )
                value = ops.stop_gradient(ops.cast(seen[0], "float32"))
                return _chosen_score(scores, classes) + ops.sum(probe_tensor[1] * value)

            self._gradients[path] = input_gradient_function(objective)
        return self._gradients[path]

    def _guided_gradient(self) -> Callable:
        """`(images, classes) -> d y^c / d images` under the guided rule, made once.

        The rectified copy (a `UnitGradient`'s) takes the model's current
        weights on every call, so a model trained in between is seen.
        """
        if self._guided is None:
            self._guided = UnitGradient(self.model, "guided")
            copy, logits = self._guided.model, self.logits
            self._guided_gradient_fn = input_gradient_function(
                lambda x, classes: _chosen_score(_class_scores(copy, x, logits), classes)
            )
        self._guided.refresh()
        return self._guided_gradient_fn


def shared_grad_cam(model: keras.Model) -> GradCam:
    """The `GradCam` of `model` (logits) that `grad_cam` and `guided_grad_cam` reuse.

    One per model (`keras_residual.viz.guided.shared`, dropped with the
    model), so calls in a loop trace their gradient functions once per layer
    path and input signature instead of on every call.

    Example:
        >>> import keras
        >>> inputs = keras.Input((4, 4, 1))
        >>> x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
        >>> shared_grad_cam(model) is shared_grad_cam(model)
        True
    """
    def make() -> GradCam:
        cam = GradCam(model)
        cam._model = None  # only the weak reference: the cache must not keep the model
        return cam

    return shared(model, ("grad_cam",), make)


def grad_cam(
    model: keras.Model,
    path: str,
    class_index: Any,
    images: Any,
    upsample: bool = False,
) -> np.ndarray:
    """Grad-CAM maps of the layer at `path` (Selvaraju et al. 2017, Sec. 3, Eqs. 1-2).

    The gradient of the class score `y^c` with respect to the layer's
    activations `A` is averaged over each channel's positions (`alpha_k`), and
    the map is `ReLU(sum_k alpha_k A^k)`. When the model ends in a softmax the
    score is the logit before it (see `GradCam`).

    Args:
        model: keras.Model. One output (N, classes); left unchanged.
        path: str. A layer with spatial axes, at any depth:
            "conv5_block3", "conv5_block3/branch",
            "conv5_block3/branch/conv5_block3_3_conv", "conv5_block3/input".
        class_index: int, sequence of int (one per image) or None (each
            image's top-scoring class).
        images: array (N, ...) in the model's input layout (channels_first
            when `keras.config.image_data_format()` says so).
        upsample: bool. Resize bilinearly to the input's spatial size
            (half-pixel centers, `bilinear_resize`). Defaults to False.

    Returns:
        float32 array (N, *spatial), unnormalized. Calls on one model share
        one `GradCam` (`shared_grad_cam`), so repeated maps trace each layer
        path once.

    Raises:
        ValueError: if `images` is not a batch of the model's input (no batch
            or channel axis, another size or layout); the message names the fix.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        >>> outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
        >>> model = keras.Model(inputs, outputs)
        >>> grad_cam(model, "conv", 2, np.ones((1, 8, 8, 1), "float32"), upsample=True).shape
        (1, 8, 8)
    """
    return shared_grad_cam(model)(path, class_index, images, upsample=upsample)


def guided_grad_cam(
    model: keras.Model, path: str, class_index: Any, images: Any
) -> np.ndarray:
    """Guided Grad-CAM: guided backprop of the class score times upsampled Grad-CAM.

    Selvaraju et al. 2017, Sec. 3: the Grad-CAM map of `path`, resized
    bilinearly to the input, multiplies the guided backpropagation of the
    same class score (Springenberg et al. 2015) pointwise, giving a
    high-resolution and class-discriminative image.

    Args:
        model: keras.Model. One output (N, classes); left unchanged.
        path: str. A layer with spatial axes (see `grad_cam`).
        class_index: int, sequence of int or None (each image's top class).
        images: array (N, ...) in the model's input layout.

    Returns:
        float32 array shaped like `images`.

    Raises:
        ValueError: if `images` is not a batch of the model's input (see `grad_cam`).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        >>> outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
        >>> model = keras.Model(inputs, outputs)
        >>> guided_grad_cam(model, "conv", None, np.ones((2, 8, 8, 1), "float32")).shape
        (2, 8, 8, 1)
    """
    return shared_grad_cam(model).guided(path, class_index, images)
