"""Keras callbacks that write the visualizations to TensorBoard (and PNG folders) while training.

- `FeatureImages`: first-layer kernels, activation grids and residual
  differences F(x) of fixed probe images (Bolte's (2016) MNIST images;
  Chu et al. 2017, Fig. 8).
- `TopKImages`: Chu et al.'s (2017) top-9 patches beside their guided-backprop
  images, and the refinement scalars (top-9 images a channel keeps from one
  block to the next, Chu et al. (2017) Sec. 3).

- `GradCamImages`: Grad-CAM heatmaps of fixed images over the images
  (Selvaraju et al. 2017, Fig. 1).
- `FeatureVisualizationImages`: the feature visualizations of chosen channels
  (Olah et al. 2017), so the features can be watched forming during training.

All write with `tf.summary` (TensorFlow is a dependency of keras_residual,
so the writers work under the JAX and PyTorch backends too). Images are
logged at step `epoch`, every `every` epochs, counting epochs from 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_residual import graph
from keras_residual.residual import Residual
from keras_residual.viz import plots
from keras_residual.viz.feature_vis import feature_visualization
from keras_residual.viz.gradcam import GradCam
from keras_residual.viz.guided import guided_patches, shared_unit_gradient
from keras_residual.viz.images import activation_grid, kernel_map, residual_differences
from keras_residual.viz.receptive_field import receptive_field
from keras_residual.viz.refinement import compare_layers


def _check_every(every: int) -> int:
    if int(every) < 1:
        raise ValueError(f"`every` must be a positive number of epochs. Received: every={every}")
    return int(every)


def _layer_paths(paths: str | Sequence[str]) -> list[str]:
    """One path or several, as a non-empty list (the callbacks' `paths` argument)."""
    names = [paths] if isinstance(paths, str) else list(paths)
    if not names:
        raise ValueError(f"`paths` must name at least one layer. Received: paths={paths!r}")
    return names


class _SummaryCallback(keras.callbacks.Callback):
    """Shared plumbing: a lazily opened tf.summary writer and an optional PNG folder."""

    def __init__(self, log_dir: str, every: int = 1, png_dir: str | None = None):
        super().__init__()
        self.log_dir = log_dir
        self.every = _check_every(every)
        self.png_dir = png_dir
        self._writer = None

    def _due(self, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0

    def _image(self, tag: str, images: np.ndarray, step: int) -> None:
        """Logs a batch (N, H, W) or (N, H, W, C) of images in [0, 1] (or uint8)."""
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        with self._writer.as_default():
            tf.summary.image(tag, images, step=step, max_outputs=len(images))

    def _scalar(self, tag: str, value: float, step: int) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.scalar(tag, value, step=step)

    def _png(self, fig, name: str, epoch: int) -> None:
        if self.png_dir is None:
            return
        safe = name.replace("/", "__")
        plots.save_figure(fig, os.path.join(self.png_dir, f"epoch_{epoch:03d}", f"{safe}.png"))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def _first_kernel_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The first top-level Conv2D with 1 or 3 input channels (the input conv)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[2] in (1, 3):
            return layer
    return None


def _default_paths(model: keras.Model) -> list[str]:
    """Top-level Conv2D layers and Residual blocks with 2D feature maps."""
    return [
        layer.name
        for layer in graph.sublayers(model)
        if isinstance(layer, (keras.layers.Conv2D, Residual)) and len(layer.output.shape) == 4
    ]


class FeatureImages(_SummaryCallback):
    """Logs kernels, activation grids and residual differences of probe images.

    Every `every` epochs it writes, for the model being trained:

    - `filters/<layer>`: the first conv layer's kernels as one pixel map
      (Chu et al. 2017, Fig. 8; Bolte's (2016) first-layer filters);
    - `activations/<path>`: each layer's channels tiled, one image per
      probe input (Bolte's (2016) per-layer MNIST activations);
    - `residual/<block>`: F(x) of every Residual block, zero at mid-gray
      (projection blocks show their branch output).

    Args:
        log_dir: str. TensorBoard log folder (e.g. the one of
            `keras.callbacks.TensorBoard`, plus "/images").
        images: array (N, ...). Fixed probe inputs; keep N small (1-4).
        every: int. Log every `every` epochs. Defaults to 1.
        paths: sequence of str or None. Layers for the activation grids;
            None: top-level Conv2D layers and Residual blocks.
        png_dir: str or None. Also save PNG figures under
            `png_dir/epoch_NNN/`. Defaults to None.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        >>> x = Residual(keras.layers.Conv2D(4, 3, padding="same"), activation="relu")(x)
        >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        >>> model.compile("sgd", "mse")
        >>> cb = FeatureImages(tempfile.mkdtemp(), np.ones((1, 8, 8, 1), "float32"))
        >>> _ = model.fit(np.ones((4, 8, 8, 1)), np.ones((4, 4)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    def __init__(
        self,
        log_dir: str,
        images: Any,
        every: int = 1,
        paths: Sequence[str] | None = None,
        png_dir: str | None = None,
    ):
        super().__init__(log_dir, every, png_dir)
        self.images = np.asarray(images, dtype="float32")
        if self.images.ndim < 2 or len(self.images) == 0:
            raise ValueError(
                "`images` must be a non-empty batch of probe inputs (N, ...). "
                f"Received: shape {self.images.shape}"
            )
        self.paths = None if paths is None else list(paths)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        model, step = self.model, epoch + 1
        first = _first_kernel_layer(model)
        if first is not None:
            pixels = kernel_map(first)
            self._image(f"filters/{first.name}", pixels[None], step)
            self._png(plots.kernel_figure(pixels, first.name), f"filters_{first.name}", step)
        paths = self.paths if self.paths is not None else _default_paths(model)
        grids = {p: [activation_grid(model, p, image) for image in self.images] for p in paths}
        for path, per_image in grids.items():
            self._image(f"activations/{path}", np.stack(per_image), step)
        differences = [residual_differences(model, image) for image in self.images]
        for path in differences[0]:
            tiles = np.stack([plots.difference_grid(d[path]) for d in differences])
            self._image(f"residual/{path}", tiles, step)
        if self.png_dir is not None:
            first_input = self.images[0]
            self._png(plots.activation_figure({p: g[0] for p, g in grids.items()}, first_input),
                      "activations", step)
            self._png(plots.residual_difference_figure(differences[0], first_input),
                      "residual_differences", step)


class TopKImages(_SummaryCallback):
    """Logs Chu et al.'s (2017) top-k patches with guided backprop, and refinement scalars.

    Every `every` epochs, over the fixed array `data`:

    - `topk/<rule>`: one figure, one row per layer in `paths`, one column per
      channel in `channels`: the channel's top-k patches beside the
      guided-backprop (or deconvnet) images of the same units (Chu et al. 2017,
      Figs. 2-7);
    - `refinement/overlap/<path>` and `refinement/correlation/<path>`: for
      each path after the first with as many channels as the one before it,
      the mean number of top-k images a channel shares with the same channel
      of the previous path, and the mean correlation of their per-image
      maxima (Chu et al. 2017, Sec. 3).

    Args:
        log_dir: str. TensorBoard log folder.
        data: array (N, ...). Images searched for the top-k (kept small:
            each logging epoch runs one pass over it).
        paths: sequence of str. Layers to show, e.g. the blocks of a stage.
        channels: sequence of int. Channels to show (in every path).
        every: int. Log every `every` epochs. Defaults to 1.
        k: int. Patches per channel. Defaults to 9.
        rule: str. "guided", "deconvnet" or "plain". Defaults to "guided".
        display: array or None. Images to cut patches from (e.g. before
            preprocessing); None: `data`.
        png_dir: str or None. Also save the figure as PNG.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> from keras_residual import Residual
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c")(inputs)
        >>> x = Residual(keras.layers.Conv2D(2, 3, padding="same"), activation="relu",
        ...              name="b")(x)
        >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        >>> model.compile("sgd", "mse")
        >>> data = np.random.default_rng(0).random((12, 8, 8, 1), dtype="float32")
        >>> cb = TopKImages(tempfile.mkdtemp(), data, ["c", "b"], channels=[0, 1], k=4)
        >>> _ = model.fit(data, np.ones((12, 2)), epochs=1, verbose=0, callbacks=[cb])
    """

    def __init__(
        self,
        log_dir: str,
        data: Any,
        paths: Sequence[str],
        channels: Sequence[int],
        every: int = 1,
        k: int = 9,
        rule: str = "guided",
        display: Any = None,
        png_dir: str | None = None,
    ):
        super().__init__(log_dir, every, png_dir)
        if not isinstance(data, np.ndarray):
            raise ValueError(
                "TopKImages needs the probe data as one NumPy array (the patches are cut "
                f"from it). Received: {type(data).__name__}"
            )
        if not paths or not channels:
            raise ValueError(
                f"`paths` and `channels` must be non-empty. Received: paths={paths!r}, "
                f"channels={channels!r}"
            )
        self.data = data.astype("float32")
        self.paths = list(paths)
        self.channels = [int(c) for c in channels]
        self.k = int(k)
        self.rule = rule
        self.display = display

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        model, step = self.model, epoch + 1
        result = compare_layers(model, self.paths, self.data, k=self.k, progress=False)
        for comparison in result.comparisons:
            if comparison.shared.shape[0] != comparison.shared.shape[1]:
                continue  # a projection boundary: channel c does not continue channel c
            overlap = float(np.mean(comparison.same_channel_overlap()))
            correlation = float(np.nanmean(comparison.same_channel_correlation()))
            self._scalar(f"refinement/overlap/{comparison.path_b}", overlap, step)
            self._scalar(f"refinement/correlation/{comparison.path_b}", correlation, step)
        # One rectified copy and one compiled gradient per path for the whole run, with
        # this epoch's weights copied in (a new one each epoch retraced every time).
        gradient = shared_unit_gradient(model, self.rule)
        patches, gradients = {}, {}
        for path in self.paths:
            patches[path], gradients[path] = guided_patches(
                gradient, path, self.data, result.topk[path], receptive_field(model, path),
                self.channels, display=self.display,
            )
        fig = plots.topk_figure(patches, gradients, self.channels,
                                title=f"top-{self.k} and {self.rule} backprop, epoch {step}")
        self._image(f"topk/{self.rule}", plots.figure_to_array(fig)[None], step)
        self._png(fig, f"topk_{self.rule}", step)


class GradCamImages(_SummaryCallback):
    """Logs Grad-CAM overlays of fixed images every `every` epochs (Selvaraju et al. 2017).

    For each layer path, `gradcam/<path>` holds one RGB image per input: its
    Grad-CAM map (`viz.gradcam.grad_cam`, upsampled to the input) blended
    over the input, as in Fig. 1(c, i) of the paper. With `png_dir`, one
    figure per path (`plots.gradcam_figure`, with a colour bar per image)
    goes to `png_dir/epoch_NNN/gradcam_<path>.png`. One `GradCam` is kept for
    the whole fit, so the gradient is traced once per path.

    Args:
        log_dir: str. TensorBoard log folder.
        images: array (N, ...). Fixed inputs in the model's layout; keep N small.
        paths: str or sequence of str. Layers with spatial axes, e.g. the
            last block of each stage.
        class_index: int, sequence of N ints or None (each image's top
            class at that epoch). Defaults to None.
        every: int. Log every `every` epochs. Defaults to 1.
        display: array (N, H, W[, C]) or None. Channels-last images to draw
            under the heat (e.g. before preprocessing); None: `images`.
        png_dir: str or None. Also save PNG figures.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        >>> model.compile("sgd", "mse")
        >>> cb = GradCamImages(tempfile.mkdtemp(), np.ones((2, 8, 8, 1), "float32"), "c")
        >>> _ = model.fit(np.ones((4, 8, 8, 1)), np.ones((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    def __init__(
        self,
        log_dir: str,
        images: Any,
        paths: str | Sequence[str],
        class_index: Any = None,
        every: int = 1,
        display: Any = None,
        png_dir: str | None = None,
    ):
        super().__init__(log_dir, every, png_dir)
        self.images = np.asarray(images, dtype="float32")
        if self.images.ndim < 3 or len(self.images) == 0:
            raise ValueError(
                "`images` must be a non-empty batch of images (N, H, W[, C]). "
                f"Received: shape {self.images.shape}"
            )
        self.paths = _layer_paths(paths)
        self.class_index = class_index
        if display is None:
            channels_first = keras.config.image_data_format() == "channels_first"
            display = np.moveaxis(self.images, 1, -1) if channels_first else self.images
        self.display = np.asarray(display)
        self._cam = None

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        step = epoch + 1
        if self._cam is None or self._cam.model is not self.model:
            self._cam = GradCam(self.model)
        classes = self.class_index
        if classes is None:
            scores = keras.ops.convert_to_numpy(self.model(self.images, training=False))
            classes = np.argmax(scores, axis=-1)
        classes = self._cam.class_indices(classes, len(self.images))
        titles = [f"class {c}" for c in classes]
        for path in self.paths:
            maps = self._cam(path, classes, self.images, upsample=True)
            overlays = np.stack([plots.heatmap_overlay(d, m) for d, m in zip(
                self.display, maps, strict=True)])
            self._image(f"gradcam/{path}", overlays, step)
            if self.png_dir is not None:
                fig = plots.gradcam_figure(self.display, maps, titles)
                fig.suptitle(f"Grad-CAM at {path}, epoch {step}", fontsize=9)
                self._png(fig, f"gradcam_{path}", step)


class FeatureVisualizationImages(_SummaryCallback):
    """Logs the feature visualizations of chosen channels every `every` epochs (Olah et al. 2017).

    For each layer path, `feature_vis/<path>` holds one image per channel:
    `viz.feature_visualization(model, path, channels, ...)` with the model's
    weights at that epoch and the same seed every time, so the images of
    successive epochs differ only by what the network learned. With
    `png_dir`, the same images tiled in one row go to
    `png_dir/epoch_NNN/feature_vis_<path>.png`. Each logging runs `steps`
    forward-plus-backward passes of `len(channels)` images per path.

    Args:
        log_dir: str. TensorBoard log folder.
        paths: str or sequence of str. Layer paths (a block's branch too).
        channels: int or sequence of int. Channels of every path.
        every: int. Log every `every` epochs. Defaults to 1.
        png_dir: str or None. Also save PNG files.
        **options: passed to `viz.feature_visualization` (`steps`, `size`,
            `objective`, `parameterization`, `value_range`, `seed`, ...);
            `steps` defaults to 128 here.

    Example:
        >>> import keras, numpy as np, tempfile
        >>> inputs = keras.Input((8, 8, 1))
        >>> x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        >>> model.compile("sgd", "mse")
        >>> cb = FeatureVisualizationImages(tempfile.mkdtemp(), "c", [0, 1], steps=4)
        >>> _ = model.fit(np.ones((4, 8, 8, 1)), np.ones((4, 2)), epochs=1, verbose=0,
        ...               callbacks=[cb])
    """

    def __init__(self, log_dir: str, paths: str | Sequence[str], channels: Any, every: int = 1,
                 png_dir: str | None = None, **options: Any):
        super().__init__(log_dir, every, png_dir)
        self.paths = _layer_paths(paths)
        self.channels = [int(c) for c in np.atleast_1d(channels)]
        if not self.channels:
            raise ValueError(f"`channels` must name at least one channel. Received: {channels!r}")
        self.options = {"steps": 128, **options}
        low, high = self.options.get("value_range", (0.0, 1.0))
        self._range = (float(low), float(high))

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        step = epoch + 1
        low, high = self._range
        for path in self.paths:
            images = feature_visualization(self.model, path, self.channels, **self.options)
            if keras.config.image_data_format() == "channels_first":
                images = np.moveaxis(images, 1, -1)
            unit = np.clip((images - low) / (high - low), 0.0, 1.0)
            self._image(f"feature_vis/{path}", unit, step)
            if self.png_dir is not None:
                from matplotlib.figure import Figure

                fig = Figure(figsize=(1.6 * len(unit), 1.9), layout="constrained")
                for ax, image, channel in zip(fig.subplots(1, len(unit), squeeze=False)[0],
                                              unit, self.channels, strict=True):
                    plots._show(ax, image, vmin=0.0, vmax=1.0)
                    ax.set_title(f"channel {channel}", fontsize=8)
                fig.suptitle(f"{path}, epoch {step}", fontsize=9)
                self._png(fig, f"feature_vis_{path}", step)
