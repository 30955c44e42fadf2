"""Moved: keras.applications weight loading lives in `keras_residual.models.weights`;
`variable_paths` and `copy_weights` in `keras_residual.graph`.

`keras_residual.weights.<name>` keeps working for one release and warns once per name.
"""

from keras_residual._deprecation import module_alias

_HOMES = {
    **dict.fromkeys(("variable_paths", "copy_weights"), "keras_residual.graph"),
    **dict.fromkeys(
        ("WeightTransfer", "load_keras_applications_weights", "fetch_keras_applications_weights",
         "KERAS_APPLICATIONS_URL", "KERAS_APPLICATIONS_HASHES"), "keras_residual.models.weights"),
}

__getattr__ = module_alias(__name__, _HOMES)
