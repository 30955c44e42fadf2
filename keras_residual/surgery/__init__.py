"""Editing a model's residual structure; every function returns a new model.

- `insert_blocks`: grow a trained network with residual blocks that start as
  the identity (`identity_block`).
- `delete_blocks`, `reorder_blocks`, `remove_layers`: the lesions of Veit et
  al. (2016), Sec. 4 (defined in `keras_residual.lesion.surgery`).
"""

from keras_residual.lesion.surgery import delete_blocks, remove_layers, reorder_blocks
from keras_residual.surgery.grow import identity_block, insert_blocks

__all__ = ["delete_blocks", "identity_block", "insert_blocks", "remove_layers", "reorder_blocks"]
