"""keras_residual: residual connections as a one-word change for Keras 3.

`import keras_residual` registers every serializable class (the wrapper, its
shortcuts and merges, the blocks' merges, the learning-rate schedules), so
models saved with them load with `keras.models.load_model` and nothing else.

Subpackages: `blocks` (block factories), `models` (ResNet, ResNeXt, CIFAR and
small builders), `viz` (receptive fields, top-k patches, guided backprop,
images, callbacks), `lesion` (deletion, reordering, path statistics),
`surgery` (new models with blocks inserted, deleted or reordered),
`datasets`, `training`, `distribution` (one device, local devices or a cluster
of processes). `probe(model, paths)` reaches any nested layer;
`summary(model)` prints the layers with the parts inside every block;
`graph` walks, traces, rebuilds and clones models (the one graph walker).
"""

import importlib
from typing import Any

# Modules that register serializable classes (the wrapper, shortcuts, merges,
# BN-after-add, the builders' -inf padding, learning-rate schedules) are loaded
# now; they need Keras only. Everything else -- lesion studies (SciPy, tqdm),
# visualization (matplotlib), datasets (TensorFlow for tf.data), experiments,
# surgery -- loads on first use, so that `import keras_residual` on JAX or
# PyTorch imports neither TensorFlow nor matplotlib.
from keras_residual import blocks, distribution, graph, models, training  # noqa: E402,I001
from keras_residual.graph import list_paths, residual_layers, resolve_path
from keras_residual.lesion_state import (
    LesionState,
    lesion_ready,
    reset_compiled_functions,
    set_lesion_ready,
)
from keras_residual.merges import (
    AddMerge,
    BatchNormAddMerge,
    CallableMerge,
    GatedMerge,
    LayerNormAddMerge,
    Merge,
    MultiplyMerge,
    ReZeroMerge,
    ScaledMerge,
    ShortcutDropoutMerge,
)
from keras_residual.model_summary import summary
from keras_residual.ops import scale_gradient
from keras_residual.probe import probe  # noqa: E402
from keras_residual.residual import BlockPart, Residual
from keras_residual.shortcuts import (
    AvgDownShortcut,
    ProjectionShortcut,
    ZeroPadShortcut,
    suggest_shortcuts,
)

__version__ = "0.1.0"

_LAZY_SUBPACKAGES = ("datasets", "experiments", "lesion", "surgery", "viz")


def __getattr__(name: str) -> Any:
    # PEP 562: `keras_residual.viz` and friends import on first access.
    if name in _LAZY_SUBPACKAGES:
        module = importlib.import_module(f"keras_residual.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_residual' has no attribute {name!r}")

__all__ = [
    "AddMerge",
    "AvgDownShortcut",
    "BatchNormAddMerge",
    "BlockPart",
    "CallableMerge",
    "GatedMerge",
    "LayerNormAddMerge",
    "LesionState",
    "Merge",
    "MultiplyMerge",
    "ProjectionShortcut",
    "ReZeroMerge",
    "Residual",
    "ScaledMerge",
    "ShortcutDropoutMerge",
    "ZeroPadShortcut",
    "blocks",
    "datasets",
    "distribution",
    "graph",
    "experiments",
    "lesion",
    "surgery",
    "lesion_ready",
    "list_paths",
    "models",
    "probe",
    "reset_compiled_functions",
    "residual_layers",
    "resolve_path",
    "scale_gradient",
    "summary",
    "set_lesion_ready",
    "suggest_shortcuts",
    "training",
    "viz",
]
