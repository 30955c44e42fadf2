"""Lesion and path analysis of residual networks (Veit et al. 2016).

- `deletion`: single-block and k-block deletion (Fig. 3, 4, 5a).
- `order`: reordering, swapping compatible blocks (Fig. 5b).
- `gradient_paths`: the gradient per path length, routed per sample (Fig. 6).
- `paths`: path-length statistics of the unraveled view.
- `stream`: the residual-stream studies of Transformers at block or sub-layer
  granularity: deletion, adjacent swaps, reordering, the middle skipped,
  reversed, shuffled, repeated or run in parallel (Sun et al. 2025),
  effective paths compared with a ResNet's.
- `similarity`: deleting the most redundant units, chosen by input/output
  similarity (Gromov et al. 2025; He et al. 2024).
- `evaluation`: data and error helpers shared by the studies.
- `parallel`: the studies under a distribution (data-parallel evaluation, single-device numbers).
- `schedules`: stochastic depth, effective-path training, resilience comparison.
- `batchnorm`: precise BatchNorm statistics of the full network after such training.
- The edits the studies make (delete, reorder, route) live in
  `keras_residual.surgery`, which this package imports (never the reverse).
- `plots`: the paper's figures from the study results (import it explicitly:
  `from keras_residual.lesion import plots`, it needs matplotlib).
"""

from keras_residual.lesion.batchnorm import batchnorm_layers, precise_batchnorm
from keras_residual.lesion.deletion import (
    KDeletionResult,
    SingleDeletionResult,
    k_block_deletion,
    lesion_units,
    single_block_deletion,
)
from keras_residual.lesion.evaluation import as_arrays, classification_error
from keras_residual.lesion.gradient_paths import (
    GradientPathResult,
    gradient_per_path_length,
    path_gradients,
    routed_block,
)
from keras_residual.lesion.order import (
    ReorderingResult,
    compatible_groups,
    movable_kendall_tau,
    random_swaps,
    reordering,
)
from keras_residual.lesion.paths import (
    EFFECTIVE_MASS,
    effective_path_range,
    effective_training_blocks,
    gradient_per_length,
    path_counts,
    path_length_distribution,
    path_length_interval,
    range_share,
    remaining_path_fraction,
)
from keras_residual.lesion.schedules import (
    EffectivePathTraining,
    ResilienceResult,
    linear_decay_drop_rates,
    stochastic_depth_resilience,
    subnetwork_error,
    with_stochastic_depth,
)
from keras_residual.lesion.similarity import (
    KINDS,
    ContiguousDeletionResult,
    SimilarityDropResult,
    angular_distances,
    contiguous_deletion,
    similarity_drop,
    stream_states,
)
from keras_residual.lesion.stream import (
    ARRANGEMENTS,
    GRANULARITIES,
    ArrangementResult,
    PathComparison,
    adjacent_swaps,
    compare_effective_paths,
    k_unit_deletion,
    middle_arrangements,
    next_token_data,
    position_errors,
    transformer_units,
    unit_deletion,
    unit_reordering,
)
from keras_residual.surgery import (
    delete_blocks,
    deleted_blocks,
    downsampling,
    passes_input_when_deleted,
    preserved_lesion_state,
    removable_layers,
    remove_layers,
    reorder_blocks,
    residual_blocks,
    resolve_blocks,
    routed_gradients,
    swappable,
)

_MOVED_TO_GRAPH = {"rebuild_model": "rebuild"}


def __getattr__(name: str):
    # `keras_residual.lesion.rebuild_model` moved to `keras_residual.graph.rebuild`.
    if name in _MOVED_TO_GRAPH:
        from keras_residual import _deprecation, graph

        return _deprecation.moved(f"keras_residual.lesion.{name}",
                                  f"keras_residual.graph.{_MOVED_TO_GRAPH[name]}",
                                  getattr(graph, _MOVED_TO_GRAPH[name]))
    raise AttributeError(f"module 'keras_residual.lesion' has no attribute {name!r}")


__all__ = [
    "ARRANGEMENTS",
    "GRANULARITIES",
    "KINDS",
    "ArrangementResult",
    "ContiguousDeletionResult",
    "PathComparison",
    "SimilarityDropResult",
    "adjacent_swaps",
    "angular_distances",
    "compare_effective_paths",
    "contiguous_deletion",
    "k_unit_deletion",
    "middle_arrangements",
    "next_token_data",
    "position_errors",
    "similarity_drop",
    "stream_states",
    "transformer_units",
    "unit_deletion",
    "unit_reordering",
    "EFFECTIVE_MASS",
    "batchnorm_layers",
    "effective_training_blocks",
    "path_gradients",
    "precise_batchnorm",
    "range_share",
    "EffectivePathTraining",
    "GradientPathResult",
    "KDeletionResult",
    "ReorderingResult",
    "ResilienceResult",
    "SingleDeletionResult",
    "as_arrays",
    "classification_error",
    "compatible_groups",
    "downsampling",
    "delete_blocks",
    "deleted_blocks",
    "effective_path_range",
    "gradient_per_length",
    "gradient_per_path_length",
    "k_block_deletion",
    "lesion_units",
    "linear_decay_drop_rates",
    "passes_input_when_deleted",
    "path_counts",
    "path_length_distribution",
    "path_length_interval",
    "preserved_lesion_state",
    "movable_kendall_tau",
    "random_swaps",
    "remaining_path_fraction",
    "removable_layers",
    "remove_layers",
    "reorder_blocks",
    "residual_blocks",
    "resolve_blocks",
    "reordering",
    "routed_block",
    "routed_gradients",
    "single_block_deletion",
    "stochastic_depth_resilience",
    "subnetwork_error",
    "swappable",
    "with_stochastic_depth",
]
