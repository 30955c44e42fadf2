"""Lesion and path analysis of residual networks (Veit et al. 2016).

- `surgery`: find, delete, reorder and re-route blocks; remove plain layers.
- `paths`: path-length statistics of the unraveled view.
- `studies`: single-block, k-block deletion, reordering, gradient per path length.
- `schedules`: stochastic depth, effective-path training, resilience comparison.
- `batchnorm`: precise BatchNorm statistics of the full network after such training.
- `plots`: the paper's figures from the study results (import it explicitly:
  `from keras_residual.lesion import plots`, it needs matplotlib).
"""

from keras_residual.lesion.batchnorm import batchnorm_layers, precise_batchnorm
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
    with_stochastic_depth,
)
from keras_residual.lesion.studies import (
    GradientPathResult,
    KDeletionResult,
    ReorderingResult,
    SingleDeletionResult,
    as_arrays,
    classification_error,
    compatible_groups,
    gradient_per_path_length,
    k_block_deletion,
    lesion_units,
    path_gradients,
    random_swaps,
    reordering,
    single_block_deletion,
)
from keras_residual.lesion.surgery import (
    delete_blocks,
    deleted_blocks,
    passes_input_when_deleted,
    preserved_lesion_state,
    rebuild_model,
    removable_layers,
    remove_layers,
    reorder_blocks,
    residual_blocks,
    resolve_blocks,
    routed_gradients,
    swappable,
)

__all__ = [
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
    "random_swaps",
    "rebuild_model",
    "remaining_path_fraction",
    "removable_layers",
    "remove_layers",
    "reorder_blocks",
    "residual_blocks",
    "resolve_blocks",
    "reordering",
    "routed_gradients",
    "single_block_deletion",
    "stochastic_depth_resilience",
    "swappable",
    "with_stochastic_depth",
]
