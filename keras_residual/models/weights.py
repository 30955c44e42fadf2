"""Loading keras.applications checkpoints into the builders, by layer name.

keras_residual's ImageNet builders use keras.applications' layer names inside
their `Residual` blocks (`conv2_block1_1_conv` sits in the branch of the
Residual `conv2_block1`, `conv2_block1_0_conv` in its shortcut), so a
checkpoint is copied across by matching every weighted layer's name, however
deeply it is nested. Sources: an in-memory Keras model, a legacy `.h5`
checkpoint (the format keras.applications publishes, read by name), a
`.keras` archive, or a Keras 3 `.weights.h5` file (which keys nested layers by
class, not name: it is read into the keras.applications model of the same
layout, or, for other models, straight into the model).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field

import h5py
import keras
import numpy as np
from keras import layers

from keras_residual import graph
from keras_residual.graph import copy_weights, variable_paths  # noqa: F401  (re-exported)
from keras_residual.models.specs import IMAGENET_SPECS
from keras_residual.residual import Residual

# keras.applications' published ResNet checkpoints: (with top, without top) MD5
# hashes, as listed in keras/src/applications/resnet.py.
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_APPLICATIONS_HASHES = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "resnet50v2": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "resnet101v2": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152v2": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
}


@dataclass
class WeightTransfer:
    """What `load_keras_applications_weights` copied and what it could not match.

    Attributes:
        loaded: names of the layers whose weights were copied.
        missing_in_source: weighted layers of the model with no layer of the
            same name in the source.
        unused_in_source: weighted layers of the source with no layer of the
            same name in the model (for a `.weights.h5` file of the model's
            own architecture: the file's array paths the model has no place for).

    Example:
        `load_keras_applications_weights` returns one; by hand:

        >>> from keras_residual.models import WeightTransfer
        >>> transfer = WeightTransfer(loaded=["conv1_conv", "conv1_bn"], missing_in_source=["fc"])
        >>> len(transfer.loaded), transfer.missing_in_source, transfer.unused_in_source
        (2, ['fc'], [])
    """

    loaded: list[str] = field(default_factory=list)
    missing_in_source: list[str] = field(default_factory=list)
    unused_in_source: list[str] = field(default_factory=list)


def _is_unit(layer: layers.Layer) -> bool:
    """Whether `layer` is saved as one named set of weights (a conv, a BN, an RNN)."""
    if isinstance(layer, (keras.Model, Residual)):
        return False
    if isinstance(layer, (layers.RNN, layers.Wrapper)):
        return bool(layer.weights)
    return bool(layer.weights) and not any(child.weights for child in graph.sublayers(layer))


def _weight_units(model: layers.Layer) -> dict[str, layers.Layer]:
    """Every weighted unit nested in `model`, by name (a Residual's lesion state excluded).

    Follows models' `layers` and other layers' layer attributes: a `Residual`'s
    branch, shortcut, pre-activation and merge, a `ProjectionShortcut`'s conv and BN.
    """
    found: dict[str, layers.Layer] = {}
    stack = [model]
    seen = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if not _is_unit(layer):
            stack.extend(graph.sublayers(layer))
            continue
        if layer.name in found:
            raise ValueError(
                f"Two weighted layers are named {layer.name!r}; weights are matched by "
                "name, so layer names must be unique."
            )
        found[layer.name] = layer
    return found


def _read_legacy_h5(group: h5py.Group) -> dict[str, list[np.ndarray]]:
    # Keras 2 / keras.applications checkpoints: attrs list layers and weight names.
    if "model_weights" in group:
        group = group["model_weights"]
    out = {}
    for raw in group.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        layer_group = group[name]
        weight_names = [
            w.decode() if isinstance(w, bytes) else str(w)
            for w in layer_group.attrs.get("weight_names", [])
        ]
        if weight_names:
            out[name] = [np.asarray(layer_group[w]) for w in weight_names]
    return out


def _keras_applications_twin(model: keras.Model) -> keras.Model | None:
    """The keras.applications model with `model`'s layout (random weights), if there is one."""
    names = {layer.name for layer in model.layers}
    stages = [
        sum(1 for n in names if n.startswith(f"conv{k}_block")) for k in range(2, 6)
    ]
    v2 = "post_bn" in names
    for spec in IMAGENET_SPECS.values():
        if spec.get("weights_name") and tuple(spec["blocks"]) == tuple(stages) and (
            (spec["placement"] == "full_preact") == v2
        ):
            builder = {
                "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
                "resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2",
                "resnet152v2": "ResNet152V2",
            }[spec["weights_name"]]
            top = "predictions" in names
            return getattr(keras.applications, builder)(
                weights=None,
                include_top=top,
                input_shape=tuple(model.input.shape[1:]),
                classes=model.get_layer("predictions").units if top else 1000,
            )
    return None


def _read_legacy_checkpoint(path: str) -> dict[str, list[np.ndarray]]:
    with h5py.File(path, "r") as f:
        return _read_legacy_h5(f)


def _is_legacy_h5(path: str) -> bool:
    with h5py.File(path, "r") as f:
        return "layer_names" in f.attrs or "model_weights" in f


def load_keras_applications_weights(
    model: keras.Model, source: keras.Model | str | os.PathLike, strict: bool = True
) -> WeightTransfer:
    """Copy weights into `model` from a keras.applications model or checkpoint, by layer name.

    Every weighted layer is matched by name, including layers nested in the
    `Residual` blocks (`conv2_block1_1_conv` inside `conv2_block1`'s branch),
    so `resnet50()` takes keras.applications ResNet50's weights and
    `resnet50_v2()` ResNet50V2's, and then computes the same outputs.

    Args:
        model: keras.Model. The model to fill (built).
        source: keras.Model, or the path of a legacy `.h5` checkpoint (as
            keras.applications publishes), a `.keras` archive or a
            `.weights.h5` file: one saved from keras.applications
            ResNet50/101/152(V2) when `model` has that layout, else one saved
            from a model of `model`'s own architecture (Keras matches those by
            position; the file's arrays are checked against the ones `model`
            saves).
        strict: bool. True (default): raise if any weighted layer of either
            side has no partner (for a `.weights.h5` of the model's own
            architecture: if any array is missing, extra or of another
            shape), before anything is copied. False: copy what matches and
            report the rest; a layer that received nothing keeps its weights.

    Returns:
        A `WeightTransfer` listing loaded and unmatched layer names.

    Raises:
        ValueError: on unmatched layers (strict), or when a matched layer's
            weights have other shapes.

    Example:
        >>> from keras_residual.models import resnet18
        >>> a = resnet18(input_shape=(32, 32, 3), classes=4)
        >>> b = resnet18(input_shape=(32, 32, 3), classes=4)
        >>> len(load_keras_applications_weights(b, a).loaded)
        41
    """
    if not isinstance(source, layers.Layer):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ValueError(f"No checkpoint file at {path!r}. Received: source={path!r}")
        if path.endswith(".keras"):
            source = keras.saving.load_model(path, compile=False)
        elif path.endswith(".weights.h5"):
            # Keras 3 files key nested layers by class and position, not by name:
            # read them into keras.applications' twin, or into the model itself.
            source = _keras_applications_twin(model)
            if source is None:
                return _load_own_weights_file(model, path, strict)
            source.load_weights(path)
        elif not (path.endswith(".h5") and _is_legacy_h5(path)):
            raise ValueError(
                "`source` must be a Keras model or a .h5, .weights.h5 or .keras file. "
                f"Received: source={path!r}"
            )
    if isinstance(source, layers.Layer):
        arrays = {name: lyr.get_weights() for name, lyr in _weight_units(source).items()}
    else:
        arrays = _read_legacy_checkpoint(path)
    targets = _weight_units(model)
    report = WeightTransfer(
        loaded=[n for n in targets if n in arrays],
        missing_in_source=[n for n in targets if n not in arrays],
        unused_in_source=[n for n in arrays if n not in targets],
    )
    if strict and (report.missing_in_source or report.unused_in_source):
        raise ValueError(
            f"Could not match every weighted layer of {model.name!r} with the source by name. "
            f"In the model but not the source: {report.missing_in_source[:20]}"
            f"{' ...' if len(report.missing_in_source) > 20 else ''}; in the source but not "
            f"the model: {report.unused_in_source[:20]}"
            f"{' ...' if len(report.unused_in_source) > 20 else ''}. Build the model with the "
            "source's layout (e.g. include_top, use_bias=True for keras.applications v1), "
            "or pass strict=False to copy only the matching layers."
        )
    for name in report.loaded:
        expected = [tuple(w.shape) for w in targets[name].weights]
        received = [tuple(a.shape) for a in arrays[name]]
        if expected != received:
            raise ValueError(
                f"Layer {name!r} has weight shapes {expected} but the source has {received}."
            )
    for name in report.loaded:
        targets[name].set_weights(arrays[name])
    return report


def _saved_arrays(path: str) -> dict[str, tuple[int, ...]]:
    """Shape of every array a `.weights.h5` file holds for a model (optimizer state left out)."""
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.__setitem__(name, item.shape)
                     if isinstance(item, h5py.Dataset) and not name.startswith("optimizer")
                     else None)
    return found


def _load_own_weights_file(model: keras.Model, path: str, strict: bool) -> WeightTransfer:
    """Loads a `.weights.h5` file saved from `model`'s architecture and reports truthfully.

    Keras matches such a file to the model by position, not by name, and
    ignores arrays the model has no place for. The file's arrays are compared
    with those `model` itself would save; the layers that received weights
    are the ones whose sentinel (NaN) values were overwritten.
    """
    with tempfile.TemporaryDirectory() as tmp:
        own = os.path.join(tmp, "own.weights.h5")
        model.save_weights(own)
        expected = _saved_arrays(own)
    received = _saved_arrays(path)
    missing = [k for k in expected if received.get(k) != expected[k]]
    unused = [k for k in received if k not in expected]
    if strict and (missing or unused):
        raise ValueError(
            f"{path!r} was not saved from a model of {model.name!r}'s architecture: arrays the "
            f"model expects and the file lacks or shapes differently: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; arrays the model has no place for: "
            f"{unused[:10]}{' ...' if len(unused) > 10 else ''}. Nothing was loaded. Pass "
            "strict=False to load what matches by position."
        )
    units = _weight_units(model)
    before = {name: unit.get_weights() for name, unit in units.items()}
    for unit in units.values():
        unit.set_weights([np.full_like(w, np.nan) if np.issubdtype(w.dtype, np.floating) else w
                          for w in unit.get_weights()])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # strict=False: Keras warns per skipped object
            model.load_weights(path, skip_mismatch=not strict)
    except Exception:
        for name, unit in units.items():
            unit.set_weights(before[name])
        raise

    def overwritten(unit):
        return all(not np.isnan(w).any() for w in unit.get_weights()
                   if np.issubdtype(w.dtype, np.floating))

    report = WeightTransfer(loaded=[n for n, u in units.items() if overwritten(u)],
                            unused_in_source=unused)
    for name, unit in units.items():
        if name not in report.loaded:
            unit.set_weights(before[name])  # a layer the file did not fill keeps its weights
            report.missing_in_source.append(name)
    return report


def fetch_keras_applications_weights(weights_name: str, include_top: bool) -> str:
    """Path of keras.applications' published checkpoint, through keras' download cache.

    Works online, or offline when the file is already in keras' cache
    (`~/.keras/models`).

    Args:
        weights_name: str. keras.applications' name: "resnet50", "resnet101",
            "resnet152", "resnet50v2", "resnet101v2" or "resnet152v2".
        include_top: bool. The checkpoint with or without the classifier.

    Returns:
        The local path of the `.h5` file.

    Raises:
        ValueError: for an unknown name, or when the file can be neither
            found in the cache nor downloaded.

    Example:
        >>> fetch_keras_applications_weights("resnet18", True)
        Traceback (most recent call last):
        ...
        ValueError: keras.applications publishes no checkpoint named 'resnet18'; ...
    """
    if weights_name not in KERAS_APPLICATIONS_HASHES:
        raise ValueError(
            f"keras.applications publishes no checkpoint named {weights_name!r}; choose one "
            f"of {sorted(KERAS_APPLICATIONS_HASHES)}."
        )
    suffix = "" if include_top else "_notop"
    file_name = f"{weights_name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
    file_hash = KERAS_APPLICATIONS_HASHES[weights_name][0 if include_top else 1]
    try:
        return keras.utils.get_file(
            file_name, KERAS_APPLICATIONS_URL + file_name, cache_subdir="models",
            file_hash=file_hash,
        )
    except Exception as error:  # get_file raises a bare Exception when offline
        raise ValueError(
            f"Could not download keras.applications' {file_name} ({error}). Without a "
            f"network, download it elsewhere from {KERAS_APPLICATIONS_URL}{file_name} and pass "
            f"weights='/path/to/{file_name}'."
        ) from error
