"""Moved: the lesion studies now live in one module per study.

`keras_residual.lesion.deletion` (single-block and k-block deletion),
`keras_residual.lesion.order`, `keras_residual.lesion.gradient_paths`
and `keras_residual.lesion.evaluation` (data and error helpers). Every name
is also exported by `keras_residual.lesion`. `keras_residual.lesion.studies.<name>`
keeps working for one release and warns once per name.
"""

from keras_residual._deprecation import module_alias

_HOMES = {
    **dict.fromkeys(("as_arrays", "classification_error", "Data"), "keras_residual.lesion.evaluation"),
    **dict.fromkeys(
        ("SingleDeletionResult", "KDeletionResult", "single_block_deletion", "k_block_deletion",
         "lesion_units"), "keras_residual.lesion.deletion"),
    **dict.fromkeys(
        ("ReorderingResult", "compatible_groups", "random_swaps", "reordering"),
        "keras_residual.lesion.order"),
    **dict.fromkeys(
        ("GradientPathResult", "path_gradients", "gradient_per_path_length", "routed_block"),
        "keras_residual.lesion.gradient_paths"),
}

__getattr__ = module_alias(__name__, _HOMES)
