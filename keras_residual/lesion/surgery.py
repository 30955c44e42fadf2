"""Moved: lesion surgery now lives in `keras_residual.surgery` (and `keras_residual.graph`).

`keras_residual.lesion.surgery.<name>` keeps working for one release and
warns once per name.
"""

from keras_residual._deprecation import module_alias

_HOMES = {
    **dict.fromkeys(
        ("delete_blocks", "remove_layers", "reorder_blocks"), "keras_residual.surgery.edit"),
    **dict.fromkeys(
        ("deleted_blocks", "routed_gradients", "preserved_lesion_state"),
        "keras_residual.surgery.contexts"),
    **dict.fromkeys(
        ("residual_blocks", "resolve_blocks", "removable_layers", "swappable",
         "passes_input_when_deleted", "BlockRef"), "keras_residual.surgery.select"),
}
_module_getattr = module_alias(__name__, _HOMES)


def _clone_with_weights(model, instead, clone_function=None):
    from keras_residual import graph

    return graph.clone(model, clone_function=clone_function, instead=instead)


def __getattr__(name: str):
    from keras_residual import _deprecation, graph

    if name == "rebuild_model":
        return _deprecation.moved(f"{__name__}.rebuild_model", "keras_residual.graph.rebuild",
                                  graph.rebuild)
    if name == "clone_with_weights":
        return _deprecation.moved(f"{__name__}.clone_with_weights", "keras_residual.graph.clone",
                                  _clone_with_weights)
    return _module_getattr(name)
