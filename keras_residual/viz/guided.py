"""Guided backpropagation, deconvnet and saliency for one unit of any layer.

The gradient of one unit (one channel at one position; every other
activation of that layer zeroed) with respect to the input images, as in
Chu et al. (2017), Sec. 2: "the image is fed through to the unit's layer, all the
other activations in that layer are zeroed out, and that layer is then
passed backwards using guided backpropagation".

Three rules differ only in how the backward pass crosses a ReLU:

- "guided" (Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", 2015): pass the upstream gradient where the ReLU's
  input was positive AND the upstream gradient is positive.
- "deconvnet" (Zeiler & Fergus, "Visualizing and Understanding
  Convolutional Networks", 2014): pass where the upstream gradient is
  positive, whatever the forward input was.
- "plain": the ordinary gradient (a saliency map, Simonyan et al. 2014).

The modified rules run on a *rectified copy* of the model, made from its
config with every ReLU replaced (a `ReLU` layer, an `Activation("relu")`, a
layer's `activation="relu"`, the `Residual` post-merge activation and its
"relu"/"bn_relu" pre-activation), with the same weights. The user's model is
never touched.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_residual import graph
from keras_residual.gradients import input_gradient_function
from keras_residual.graph import copy_weights, variable_paths
from keras_residual.ops import _upstream
from keras_residual.probe import probe
from keras_residual.residual import make_preactivation
from keras_residual.shortcuts import channel_axis
from keras_residual.validation import check_model_input, positive_int
from keras_residual.viz.receptive_field import ReceptiveField
from keras_residual.viz.top_activations import TopK, crop_patches

RULES = ("guided", "deconvnet", "redirected", "plain")


def _redirected_gradient(x: Any, dy: Any) -> Any:
    """ReLU's gradient, or for a sample that it blocks entirely, `dy` wherever it raises x."""
    zeros = ops.zeros_like(dy)
    plain = ops.where(ops.greater(x, 0), dy, zeros)
    # Below zero, let through only what raises the input (ascent: dy > 0).
    redirected = ops.where(ops.logical_and(ops.less_equal(x, 0), ops.less(dy, 0)), zeros, dy)
    axes = tuple(range(1, len(ops.shape(x))))
    passes = ops.greater(ops.sum(ops.abs(plain), axis=axes, keepdims=True), 0) if axes else (
        ops.greater(ops.abs(plain), 0))
    return ops.where(passes, plain, redirected)


def _rectifier(rule: str) -> Callable:
    """A ReLU whose backward pass follows `rule` ("guided", "deconvnet" or "redirected")."""

    @ops.custom_gradient
    def rectify(x):
        def grad(*args, upstream=None):
            dy = _upstream(args, upstream)
            if rule == "redirected":
                return _redirected_gradient(x, dy)
            keep = ops.greater(dy, 0)
            if rule == "guided":
                keep = ops.logical_and(keep, ops.greater(x, 0))
            return ops.where(keep, dy, ops.zeros_like(dy))

        return ops.relu(x), grad

    return rectify


_GUIDED = _rectifier("guided")
_DECONVNET = _rectifier("deconvnet")
_REDIRECTED = _rectifier("redirected")


@keras.saving.register_keras_serializable(package="keras_residual")
def guided_relu(x: Any) -> Any:
    """ReLU forward; backward passes where input > 0 and upstream > 0.

    Springenberg et al. 2015, Sec. 3.4 ("guided backpropagation").

    Example:
        >>> import keras
        >>> keras.ops.convert_to_numpy(guided_relu(keras.ops.array([-1.0, 2.0]))).tolist()
        [0.0, 2.0]
    """
    return _GUIDED(x)


@keras.saving.register_keras_serializable(package="keras_residual")
def deconvnet_relu(x: Any) -> Any:
    """ReLU forward; backward passes where upstream > 0 (Zeiler & Fergus 2014, Sec. 2.1).

    Example:
        >>> import keras
        >>> keras.ops.convert_to_numpy(deconvnet_relu(keras.ops.array([-1.0, 2.0]))).tolist()
        [0.0, 2.0]
    """
    return _DECONVNET(x)


@keras.saving.register_keras_serializable(package="keras_residual")
def redirected_relu(x: Any) -> Any:
    """ReLU forward; backward as ReLU, except for a sample whose gradient it blocks entirely.

    For such a sample (a batch row with no positive input where the upstream
    gradient is non-zero) the upstream gradient passes wherever it would raise
    the input, so gradient ascent can wake a unit that no input activates yet.
    This is the "redirected" ReLU gradient of the Lucid library that goes with
    Olah et al. (2017), "Feature Visualization"; `feature_visualization` uses
    it by default, for ascent on the objective (the sign matters).

    Example:
        >>> import keras
        >>> x = keras.ops.array([[-1.0, -2.0]])
        >>> keras.ops.convert_to_numpy(redirected_relu(x)).tolist()
        [[0.0, 0.0]]
    """
    return _REDIRECTED(x)


_ACTIVATIONS = {"guided": guided_relu, "deconvnet": deconvnet_relu,
                "redirected": redirected_relu}


def _is_plain_relu_layer(node: dict) -> bool:
    config = node.get("config", {})
    return (
        node.get("class_name") == "ReLU"
        and not config.get("max_value")
        and not config.get("negative_slope")
        and not config.get("threshold")
    )


def _preactivation_axis(node: dict) -> int:
    """Channel axis of a Residual's "bn_relu" pre-activation, from its saved config."""
    config = node["config"]
    data_format = config.get("data_format") or keras.config.image_data_format()
    input_shape = (node.get("build_config") or {}).get("input_shape")
    if input_shape is None:
        if data_format == "channels_first":
            raise ValueError(
                f"Cannot tell the channel axis of the 'bn_relu' pre-activation of the "
                f"unbuilt Residual {config.get('name')!r} with data_format='channels_first'. "
                "Build the model (call it on an input) first."
            )
        return -1
    rank = len(input_shape)
    if rank < 4:
        data_format = "channels_last"
    return channel_axis(rank, data_format)


def _built_preactivations(model: keras.Model) -> dict[str, dict | None]:
    """The config of each built Residual's pre-activation made from a string, by block name.

    The copy reuses these configs, so its pre-activation layers keep the
    original's names and its weights can be copied by path. None marks a
    name shared by blocks whose pre-activations differ.
    """
    found: dict[str, dict | None] = {}
    for block in graph.blocks(model, nested=True):
        part = block.part("preactivation")
        if not isinstance(block.preactivation, str) or not isinstance(
            getattr(part, "layer", None), keras.layers.Layer
        ):
            continue
        config = keras.saving.serialize_keras_object(part.layer)
        if block.name in found and found[block.name] != config:
            config = None
        found[block.name] = config
    return found


def _swap_relus(node: Any, activation: dict, preactivations: dict | None = None) -> Any:
    """A deep copy of a serialized model with every ReLU replaced by `activation`.

    `preactivations` (from `_built_preactivations`) gives the built layers of
    string pre-activations; blocks not in it get fresh ones.
    """
    preactivations = preactivations or {}
    if isinstance(node, list):
        return [_swap_relus(item, activation, preactivations) for item in node]
    if not isinstance(node, dict):
        return node
    if _is_plain_relu_layer(node):
        config = node["config"]
        keep = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
        # Keep the node's graph keys (name, inbound_nodes) and change only the layer.
        return dict(
            node,
            module="keras.layers",
            class_name="Activation",
            config=dict(keep, activation=copy.deepcopy(activation)),
            registered_name=None,
        )
    node = dict(node)
    if node.get("class_name") == "Residual" and node["config"].get("preactivation") in (
        "relu",
        "bn_relu",
    ):
        # A string pre-activation is only made into layers at build time, so
        # take the built block's layers (or make the same ones) and let the
        # walk below rectify them.
        built = preactivations.get(node["config"].get("name"))
        if built is None:
            layer = make_preactivation(node["config"]["preactivation"], _preactivation_axis(node))
            built = keras.saving.serialize_keras_object(layer)
        node["config"] = dict(node["config"], preactivation=copy.deepcopy(built))
    for key, value in node.items():
        if key == "activation" and value == "relu":
            node[key] = copy.deepcopy(activation)
        elif key != "compile_config":
            node[key] = _swap_relus(value, activation, preactivations)
    node.pop("compile_config", None)
    return node


def rectified_copy(model: keras.Model, rule: str = "guided") -> keras.Model:
    """A copy of `model` whose ReLUs backpropagate by `rule`, with the same weights.

    The forward pass of the copy equals the model's. Every ReLU is replaced:
    `ReLU()` layers (plain ones: no threshold, slope or cap), `Activation("relu")`,
    `activation="relu"` of any layer, and a `Residual`'s post-merge activation
    and "relu"/"bn_relu" pre-activation, also inside nested branches. ReLUs
    called directly in a custom layer's `call` are not visible in the config
    and keep the plain gradient.

    Args:
        model: keras.Model. A functional or Sequential model (it must have a
            config); left unchanged.
        rule: str. "guided" (Springenberg et al. 2015), "deconvnet"
            (Zeiler & Fergus 2014) or "redirected" (`redirected_relu`, for
            feature visualization). Defaults to "guided".

    Returns:
        A new keras.Model.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu")])
        >>> copy = rectified_copy(model)
        >>> copy.layers[0].activation.__name__
        'guided_relu'
    """
    if rule not in _ACTIVATIONS:
        raise ValueError(
            f"`rule` must be one of {tuple(_ACTIVATIONS)}. Received: rule={rule!r}"
        )
    try:
        config = keras.saving.serialize_keras_object(model)
    except NotImplementedError as error:
        raise ValueError(
            f"{type(model).__name__} {model.name!r} has no config, so no rectified copy "
            "can be made of it. Build it as a functional or Sequential model."
        ) from error
    # A dict identifier: keras.activations.get looks strings up among the built-ins only.
    activation = keras.saving.serialize_keras_object(_ACTIVATIONS[rule])
    config = _swap_relus(copy.deepcopy(config), activation, _built_preactivations(model))
    clone = keras.saving.deserialize_keras_object(config)
    # By path, never by order: the copy may create its variables in another order.
    copy_weights(model, clone)
    return clone


#: One gradient object per (model, kind), dropped with the model (see `shared`).
_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared(model: keras.Model, key: tuple, make: Callable[[], Any]) -> Any:
    """The object `make()` built for `(model, key)` before, else a new one, kept while `model` lives.

    The viz functions that take a model (`guided_backprop`, `grad_cam`,
    `guided_grad_cam`, the `TopKImages` callback) share one `UnitGradient` or
    `GradCam` per model this way, so the functions they compile (one per
    layer path and input signature) are traced once, not on every call. The
    cache is keyed weakly on the model; what `make` returns must not hold a
    strong reference to it.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> a = shared(model, ("demo",), object)
        >>> shared(model, ("demo",), object) is a
        True
    """
    entries = _SHARED.setdefault(model, {})
    if key not in entries:
        entries[key] = make()
    return entries[key]


def _channel_first(features: keras.Model) -> bool:
    return len(features.output.shape) > 2 and keras.config.image_data_format() == "channels_first"


def _assign_all(pairs: list) -> Callable[[], None]:
    """A function that assigns every source variable's value to its target.

    On TensorFlow one `tf.function` (one graph call instead of an eager
    assignment per variable); elsewhere a loop of `assign`.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function(autograph=False)
        def assign_graph():
            for source, target in pairs:
                target.assign(source.value)

        return lambda: assign_graph() and None

    def assign():
        for source, target in pairs:
            target.assign(source.value)

    return assign


class UnitGradient:
    """Input gradients of single units under the guided, deconvnet or plain rule.

    One class with one flag (Captum's `GuidedBackprop` / `Deconvolution` shape).
    It keeps the rectified copy and one feature model per layer path, so
    visualizing many units of one model clones it once. Chu et al. (2017, Figs. 2-7)
    shows these images beside the top-9 patches of each channel.

    Args:
        model: keras.Model. Functional or Sequential; left unchanged.
        rule: str. "guided" (Springenberg et al. 2015), "deconvnet" (Zeiler
            & Fergus 2014) or "plain" (saliency: the ordinary gradient).
            Defaults to "guided".

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        >>> model = keras.Model(inputs, conv(inputs))
        >>> grads = UnitGradient(model)("conv", 0, np.ones((2, 8, 8, 1), "float32"))
        >>> grads.shape
        (2, 8, 8, 1)
    """

    def __init__(self, model: keras.Model, rule: str = "guided"):
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {RULES}. Received: rule={rule!r}")
        self.rule = rule
        self._source = weakref.ref(model)
        self._model: keras.Model | None = model if rule == "plain" else rectified_copy(model, rule)
        self._pairs: Callable[[], None] | None = None
        self._features: dict[str, keras.Model] = {}
        self._gradients: dict[str, Callable] = {}

    @property
    def model(self) -> keras.Model:
        """The model the gradients run through: the rectified copy, or the model ("plain")."""
        return self._model if self._model is not None else self._source()

    def refresh(self) -> None:
        """Copy the model's current weights into the rectified copy (after training it).

        The copy takes the weights when it is made; the functions that share
        a `UnitGradient` across calls refresh it first, so a model trained in
        between is seen. Nothing to do for the "plain" rule.
        """
        if self.rule == "plain":
            return
        if self._pairs is None:  # matched by path once, then assigned in one call
            ours = variable_paths(self._model)
            self._pairs = _assign_all(
                [(v, ours[p]) for p, v in variable_paths(self._source()).items()])
        self._pairs()

    def features(self, path: str) -> keras.Model:
        """The model from the input to the layer at `path` (see `keras_residual.probe`)."""
        if path not in self._features:
            self._features[path] = probe(self.model, path)
        return self._features[path]

    def __call__(
        self,
        path: str,
        channel: int,
        images: Any,
        positions: Any = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """The gradient of one unit of `channel` at `path` for each image.

        Args:
            path: str. Layer path, e.g. "conv2_block1" or
                "conv2_block1/branch/conv2_block1_3_conv".
            channel: int. Channel of the layer's output.
            images: array of shape (N, ...) in the model's input layout.
            positions: int array of shape (N, S) or None. The unit's position
                (row, col for images) per image; None takes the channel's
                maximum in each image. Ignored for layers without spatial
                axes (Dense outputs).
            batch_size: int. Images per backward pass. Defaults to 32.

        Returns:
            float32 NumPy array with the shape of `images`.
        """
        images = np.asarray(images, dtype="float32")
        check_model_input(self.model, images, "images")
        batch_size = positive_int("batch_size", batch_size)
        features = self.features(path)
        rank = len(features.output.shape)
        channels = features.output.shape[1 if _channel_first(features) else -1]
        if not 0 <= int(channel) < channels:
            raise ValueError(
                f"Layer {path!r} has {channels} channels. Received: channel={channel}"
            )
        if positions is not None:
            positions = np.asarray(positions, dtype="int64").reshape(len(images), -1)
            if positions.shape[1] != rank - 2:
                raise ValueError(
                    f"`positions` needs {rank - 2} coordinates per image for layer "
                    f"{path!r}. Received: positions of shape {positions.shape}"
                )
        flat_index = np.full(len(images), -1, dtype="int64")  # -1: the channel's maximum
        if positions is not None and rank > 2:
            spatial = tuple(features.compute_output_shape((None,) + images.shape[1:])[1:])
            spatial = spatial[1:] if _channel_first(features) else spatial[:-1]
            flat_index = np.ravel_multi_index(tuple(positions.T), spatial).astype("int64")
        gradient = self._gradient(path)
        out = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            out.append(gradient(images[start:stop], np.int64(channel), flat_index[start:stop]))
        return np.concatenate(out).astype("float32")

    def _gradient(self, path: str) -> Callable:
        """The input gradient of one unit of the layer at `path`, compiled once per path."""
        if path not in self._gradients:
            features = self.features(path)
            axis = 1 if _channel_first(features) else -1

            def unit(x, channel, index):
                act = ops.take(features(x, training=False), channel, axis=axis)
                flat = ops.reshape(act, (ops.shape(act)[0], -1))
                # The channel's strongest unit per image where no position is given;
                # no gradient through the argmax.
                strongest = ops.argmax(ops.stop_gradient(flat), axis=1)
                index = ops.where(ops.greater_equal(index, 0), index, strongest)
                # Only the chosen unit per image: a one-hot upstream gradient, every
                # other activation of the layer zeroed.
                chosen = ops.take_along_axis(flat, ops.expand_dims(index, 1), axis=1)
                return ops.sum(chosen)

            self._gradients[path] = input_gradient_function(unit)
        return self._gradients[path]


def shared_unit_gradient(model: keras.Model, rule: str = "guided") -> UnitGradient:
    """The `UnitGradient` of `model` and `rule` that `guided_backprop` and friends reuse.

    Made once per model and rule (`shared`), with the model's current
    weights copied in (`UnitGradient.refresh`), so calls in a loop trace
    their gradient function once per layer path and input signature.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3)])
        >>> shared_unit_gradient(model) is shared_unit_gradient(model)
        True
    """
    def make() -> UnitGradient:
        gradient = UnitGradient(model, rule)
        if rule == "plain":
            gradient._model = None  # only the weak reference: the cache must not keep the model
        return gradient

    gradient = shared(model, ("unit_gradient", rule), make)
    gradient.refresh()
    return gradient


def guided_backprop(
    model: keras.Model, path: str, channel: int, images: Any, positions: Any = None
) -> np.ndarray:
    """Guided backpropagation of one unit per image (Springenberg et al. 2015; Chu et al. 2017).

    Args:
        model: keras.Model. Functional or Sequential; left unchanged.
        path: str. Layer path (nested paths as in `keras_residual.probe`).
        channel: int. Channel of that layer.
        images: array (N, ...). Input images.
        positions: int array (N, S) or None. The unit per image; None: the
            channel's maximum in each image.

    Returns:
        float32 array shaped like `images`. Calls on one model share one
        rectified copy and one compiled gradient per layer path
        (`shared_unit_gradient`; the model's current weights are copied in
        each time), so a loop over units traces once.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        >>> model = keras.Model(inputs, conv(inputs))
        >>> guided_backprop(model, "conv", 1, np.ones((1, 8, 8, 1), "float32")).shape
        (1, 8, 8, 1)
    """
    check_model_input(model, np.asarray(images), "images")  # before the model is copied
    return shared_unit_gradient(model, "guided")(path, channel, images, positions)


def deconvnet(
    model: keras.Model, path: str, channel: int, images: Any, positions: Any = None
) -> np.ndarray:
    """The deconvnet projection of one unit per image (Zeiler & Fergus 2014).

    Same arguments as `guided_backprop`; ReLUs pass the positive part of the
    upstream gradient regardless of the forward input.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        >>> model = keras.Model(inputs, conv(inputs))
        >>> deconvnet(model, "conv", 1, np.ones((1, 8, 8, 1), "float32")).shape
        (1, 8, 8, 1)
    """
    check_model_input(model, np.asarray(images), "images")  # before the model is copied
    return shared_unit_gradient(model, "deconvnet")(path, channel, images, positions)


def saliency(
    model: keras.Model, path: str, channel: int, images: Any, positions: Any = None
) -> np.ndarray:
    """The plain input gradient of one unit per image (Simonyan et al. 2014).

    Same arguments as `guided_backprop`; the baseline the two rectified
    rules are compared against.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((8, 8, 1))
        >>> conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        >>> model = keras.Model(inputs, conv(inputs))
        >>> saliency(model, "conv", 1, np.ones((1, 8, 8, 1), "float32")).shape
        (1, 8, 8, 1)
    """
    return shared_unit_gradient(model, "plain")(path, channel, images, positions)


def guided_patches(
    gradient: UnitGradient,
    path: str,
    images: Any,
    topk: TopK,
    field: ReceptiveField,
    channels: Any = None,
    display: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k patches of channels and the guided backprop of the same units, cut alike.

    Chu et al. (2017), Figs. 2-7: "For each channel, at left are top-9 image patches.
    At right are corresponding guided backpropagation visualizations." Each
    unit's input gradient is computed on its own image at its own position
    and cropped to the unit's receptive field, like the patch beside it.

    Args:
        gradient: UnitGradient. Its rule picks guided / deconvnet / plain.
        path: str. The layer `topk` was computed for.
        images: array (N, ...). The model inputs `topk` indexes.
        topk: TopK. From `keras_residual.viz.top_activations`.
        field: ReceptiveField. Of the same layer (`receptive_field`).
        channels: sequence of int or None. Channels to show; None: all.
        display: array or None. Images to cut the patches from (e.g. before
            preprocessing), same size as `images`; None: `images`.

    Returns:
        (patches, gradients): arrays (len(channels), k, *field.size, ...);
        patches are gray beyond the image border, gradients 0 there.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual.viz.receptive_field import receptive_field
        >>> from keras_residual.viz.top_activations import top_activations
        >>> inputs = keras.Input((8, 8, 1))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3, activation="relu",
        ...                                                 name="c")(inputs))
        >>> x = np.random.default_rng(0).random((5, 8, 8, 1), dtype="float32")
        >>> top = top_activations(model, "c", x, k=3, progress=False)["c"]
        >>> field = receptive_field(model, "c")
        >>> patches, grads = guided_patches(UnitGradient(model), "c", x, top, field)
        >>> patches.shape, grads.shape
        ((2, 3, 3, 3, 1), (2, 3, 3, 3, 1))
    """
    images = np.asarray(images, dtype="float32")
    display = images if display is None else np.asarray(display)
    channels = range(topk.indices.shape[0]) if channels is None else list(channels)
    chosen = TopK(
        topk.values[list(channels)], topk.indices[list(channels)], topk.positions[list(channels)]
    )
    patches = crop_patches(display, chosen, field)
    grads = []
    for row, channel in enumerate(channels):
        own = chosen.indices[row]
        maps = gradient(path, channel, images[own], positions=chosen.positions[row])
        # Each gradient map is its own "image" 0..k-1 for cropping.
        single = TopK(chosen.values[row : row + 1], np.arange(len(own))[None],
                      chosen.positions[row : row + 1])
        grads.append(crop_patches(maps, single, field, fill=0.0)[0])
    return patches, np.stack(grads)
