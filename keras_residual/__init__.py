"""keras_residual: residual connections as a one-word change for Keras 3.

`import keras_residual` registers every serializable class, so models saved
with `Residual` layers load with `keras.models.load_model` and nothing else.
"""

from keras_residual.merges import (
    AddMerge,
    CallableMerge,
    GatedMerge,
    Merge,
    MultiplyMerge,
    ReZeroMerge,
    ScaledMerge,
    ShortcutDropoutMerge,
)
from keras_residual.ops import scale_gradient
from keras_residual.residual import Residual
from keras_residual.shortcuts import AvgDownShortcut, ProjectionShortcut, ZeroPadShortcut

__version__ = "0.1.0"

__all__ = [
    "AddMerge",
    "AvgDownShortcut",
    "CallableMerge",
    "GatedMerge",
    "Merge",
    "MultiplyMerge",
    "ProjectionShortcut",
    "ReZeroMerge",
    "Residual",
    "ScaledMerge",
    "ShortcutDropoutMerge",
    "ZeroPadShortcut",
    "scale_gradient",
]
