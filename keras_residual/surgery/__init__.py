"""Editing a model's residual structure.

- `insert_blocks`: grow a trained network with residual blocks that start as
  the identity (`identity_block`); `carry_optimizer` continues its optimizer
  state on the grown network.
- `delete_blocks`, `reorder_blocks`, `remove_layers`: the lesions of Veit et
  al. (2016), Sec. 4, as new models. Every function here that returns a
  model returns an independent one with copies of the weights (training it
  leaves the original unchanged), except `rebuild` and `reorder_blocks` /
  `remove_layers` with `share_weights=True`, which run over the original's
  own layer instances: training those trains the original.
- `parallel_blocks`: a run of blocks side by side (Sun et al. 2025);
  `moved_call_arguments`: a moved block keeps its own call arguments.
- `deleted_blocks`, `routed_gradients`, `preserved_lesion_state`: the same
  lesions in place, inside a `with` body, undone on exit.
- `residual_blocks`, `resolve_blocks`, `removable_layers`, `swappable`,
  `passes_input_when_deleted`, `downsampling`: what a lesion can take, read
  from the blocks' own descriptions.
- `clone` and `rebuild` (from `keras_residual.graph`): an independent copy
  with the same weights, and a model over the same layers with calls
  replaced.

`keras_residual.lesion` builds its studies on this package; this package
imports nothing from `keras_residual.lesion`.
"""

from keras_residual.graph import clone, rebuild
from keras_residual.surgery.contexts import deleted_blocks, preserved_lesion_state, routed_gradients
from keras_residual.surgery.edit import delete_blocks, remove_layers, reorder_blocks
from keras_residual.surgery.grow import carry_optimizer, identity_block, insert_blocks
from keras_residual.surgery.select import (
    downsampling,
    passes_input_when_deleted,
    removable_layers,
    residual_blocks,
    resolve_blocks,
    swappable,
)
from keras_residual.surgery.stream import (
    block_call_arguments,
    moved_call_arguments,
    parallel_blocks,
    record_call_tensors,
)

__all__ = [
    "block_call_arguments",
    "moved_call_arguments",
    "parallel_blocks",
    "record_call_tensors",
    "carry_optimizer",
    "clone",
    "delete_blocks",
    "deleted_blocks",
    "downsampling",
    "identity_block",
    "insert_blocks",
    "passes_input_when_deleted",
    "preserved_lesion_state",
    "rebuild",
    "removable_layers",
    "remove_layers",
    "reorder_blocks",
    "residual_blocks",
    "resolve_blocks",
    "routed_gradients",
    "swappable",
]
