"""Single-block and k-block deletion (Veit et al. 2016, Sec. 4.1-4.2, Fig. 3, 4, 5a).

"Residual Networks Behave Like Ensembles of Relatively Shallow Networks":
each block's branch is deleted in turn, or k random blocks at once, and the
error recorded. A deleted block keeps everything but its branch (its
description with `deleted=True`, `Residual.parts`). Each study takes a seed,
shows a progress bar, leaves the user's model as it found it (lesion state
restored in `finally`) and returns a dataclass of NumPy arrays;
`keras_residual.lesion.plots` draws them.

Speed: `single_block_deletion` runs the network once per batch. A rebuilt
graph over the same layers carries one extra copy of the batch per lesion:
at the i-th unit the intact activations are split off into a new copy that
runs the unit's deleted description, and every copy then runs the rest of
the network. The part in front of a lesion is computed once, and the whole
sweep is one compiled function, traced once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np
from tqdm import tqdm

from keras_residual import graph
from keras_residual.lesion import parallel
from keras_residual.lesion.evaluation import (
    Data,
    check_ks,
    checked_data,
    classification_error,
    evaluate,
)
from keras_residual.lesion_state import lesion_ready
from keras_residual.residual import Residual
from keras_residual.surgery import (
    downsampling,
    preserved_lesion_state,
    removable_layers,
    remove_layers,
    residual_blocks,
)


def lesion_units(model: keras.Model) -> list:
    """What single-block deletion deletes: Residual blocks, else removable plain layers.

    Blocks with `shortcut="none"` (plain layers wrapped for the lesion tools,
    as in the plain twins of `keras_residual.models`) count only where their
    input and output shapes match.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
        ...                           keras.layers.Dense(2)])
        >>> [layer.units for layer in lesion_units(model)]
        [4]
    """
    units = [block for block in residual_blocks(model) if block.deletable]
    return units if units else removable_layers(model)


@dataclasses.dataclass
class SingleDeletionResult:
    """Error with each unit deleted in turn (Veit et al. 2016, Fig. 3, 4).

    Attributes:
        names: (n,) str. Block (or plain layer) names in network order.
        errors: (n,) float. Error (1 - accuracy) with that unit deleted.
        intact_error: float. Error of the intact network.
        downsampling: (n,) bool. Units whose output shape differs from their
            input shape (`surgery.downsampling`): deleting them keeps a
            shape-changing shortcut.

    Example:
        `single_block_deletion` returns one; by hand:

        >>> import numpy as np
        >>> from keras_residual.lesion import SingleDeletionResult
        >>> result = SingleDeletionResult(
        ...     names=np.array(["block1", "block2", "block3"]), errors=np.array([0.42, 0.09, 0.1]),
        ...     intact_error=0.08, downsampling=np.array([True, False, False]))
        >>> str(result.names[np.argmax(result.errors)])  # the costliest deletion
        'block1'
    """

    names: np.ndarray
    errors: np.ndarray
    intact_error: float
    downsampling: np.ndarray


class _NotAChain(Exception):
    """The units do not form a chain the stacked sweep can follow."""


def _deleted_output(block: Residual, x, kwargs):
    """What `block` outputs on `x` with its branch deleted: its own description, `deleted=True`.

    Its parts run with the call arguments the graph gave the block (`mask`,
    `use_causal_mask`, ...), as the block passes them on.
    """
    call_kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
    return block.wire(x, lambda part, inputs: block.run_part(
        part, inputs, training=kwargs.get("training"), mask=kwargs.get("mask"),
        call_kwargs=call_kwargs), deleted=True)


def _stacked_sweep_model(model: keras.Model, units: list, batch: int) -> tuple[keras.Model, list]:
    """One graph that evaluates the intact model and every single-unit lesion.

    The batch dimension holds `1 + len(units)` copies of a batch of size
    `batch`. At unit i the first copy (the intact activations) is split off:
    a new copy gets what the unit outputs when deleted (its input for a
    plain layer; for a block, its description with the branch deleted, run
    on the same layers) and all earlier copies run through the unit.
    Returns the model and the order in which the units were met.
    """
    index = {id(unit): i for i, unit in enumerate(units)}
    seen: list[int] = []

    def replace(layer, args, kwargs):
        tensors = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        if len({t.shape[0] for t in tensors}) > 1:
            raise _NotAChain(f"layer {layer.name!r} mixes activations of different lesions")
        if id(layer) not in index:
            return None
        if id(layer) in seen or len(args) != 1:
            raise _NotAChain(f"unit {layer.name!r} is shared or takes several inputs")
        seen.append(id(layer))
        out = layer(args[0], **kwargs)
        intact = keras.ops.split(args[0], [batch], axis=0)[0]
        deleted = _deleted_output(layer, intact, kwargs) if isinstance(layer, Residual) else intact
        return keras.ops.concatenate([out, deleted], axis=0)

    try:
        stacked = graph.rebuild(model, replace, batch_size=batch)
    except ValueError as error:  # e.g. a subclassed model: the gated sweep still works
        raise _NotAChain(str(error)) from error
    if len(seen) != len(units) or stacked.outputs[0].shape[0] != batch * (len(units) + 1):
        raise _NotAChain("not every unit lies on the path to the output")
    return stacked, [index[i] for i in seen]


def _stacked_outputs(stacked, x_padded, batch, split, progress) -> np.ndarray:
    """(batches, (1 + n) * batch, ...): the stacked model on each `batch` rows."""
    if split.active:  # one data-parallel predict: each replica runs whole stacked batches
        outputs = parallel.predict(stacked, x_padded, batch, fixed=True)
        return outputs.reshape(len(x_padded) // batch, -1, *outputs.shape[1:])
    outputs = []
    for start in tqdm(range(0, len(x_padded), batch), desc="single-block deletion",
                      disable=not progress):
        outputs.append(keras.ops.convert_to_numpy(
            stacked.predict_on_batch(x_padded[start:start + batch])))
    return np.stack(outputs)


def _single_deletion_stacked(model, units, x, y, batch_size, progress) -> tuple[float, np.ndarray]:
    # A stacked pass holds about 4 * batch_size rows: 1 + n copies of `batch` images.
    # Small batches keep the growing activations in cache (measured on CPU).
    batch = min(max(1, round(4 * batch_size / (len(units) + 1))), len(x))
    split = parallel.current_split(model)
    if split.distribution is not None:  # JAX shards each stacked batch over the devices
        batch = math.ceil(batch / split.devices) * split.devices
    stacked, order = _stacked_sweep_model(model, units, batch)
    x_padded = x[np.arange(split.padded_length(len(x), batch, fixed=True)) % len(x)]
    outputs = _stacked_outputs(stacked, x_padded, batch, split, progress)
    tail = outputs.shape[2:]  # (classes,), or (positions, vocab) for a language model
    outputs = outputs.reshape(outputs.shape[0], len(units) + 1, batch, -1)
    outputs = outputs.transpose(1, 0, 2, 3).reshape(len(units) + 1, len(x_padded), *tail)[:, : len(x)]
    errors = np.empty(len(units))
    for copy, unit_index in enumerate(order, start=1):
        errors[unit_index] = classification_error(outputs[copy], y)
    return classification_error(outputs[0], y), errors


def _single_deletion_each(model, units, x, y, batch_size, progress) -> tuple[float, np.ndarray]:
    """One evaluation per lesion: gates for blocks, a rebuilt model for plain layers."""
    intact = evaluate(model, x, y, batch_size)
    errors = np.empty(len(units))
    for i, unit in enumerate(tqdm(units, desc="single-block deletion", disable=not progress)):
        if isinstance(unit, Residual):
            with preserved_lesion_state([unit]):
                unit.branch_enabled = False
                errors[i] = evaluate(model, x, y, batch_size)
        else:
            errors[i] = evaluate(remove_layers(model, [unit]), x, y, batch_size, compiled=False)
    return intact, errors


def _single_deletion(model, units, x, y, batch_size, method, progress) -> tuple[float, np.ndarray]:
    with lesion_ready(model):
        if method == "each":
            return _single_deletion_each(model, units, x, y, batch_size, progress)
        try:
            return _single_deletion_stacked(model, units, x, y, batch_size, progress)
        except _NotAChain as reason:
            if method == "stacked":
                raise ValueError(
                    f"The blocks of model {model.name!r} do not form one chain from "
                    f"input to output ({reason}), which the stacked sweep needs; use "
                    "method='each' (or 'auto', which falls back to it). "
                    "Received: method='stacked'"
                ) from None
            return _single_deletion_each(model, units, x, y, batch_size, progress)


def single_block_deletion(
    model: keras.Model,
    data: Data,
    batch_size: int = 64,
    method: str = "auto",
    progress: bool = True,
) -> SingleDeletionResult:
    """Delete each residual block in turn and record the error (Veit et al. 2016, Fig. 3, 4).

    A deleted block keeps everything but its branch: it outputs
    `act(merge(h(y_{i-1}), 0))`, which is `y_{i-1}` for an identity block
    without a post-merge activation, and the (projected) shortcut of a
    downsampling block. On a network without `Residual`
    blocks (the plain VGG-style twin) each `removable_layers` layer is
    replaced by the identity instead.

    Under a distribution (`keras_residual.lesion.parallel`): the stacked
    model is built under the current strategy (TensorFlow: each replica runs
    whole stacked batches of its rows) or distribution (JAX: each stacked
    batch sharded over the devices), and every evaluation ("each") is a
    data-parallel prediction; across JAX processes each process evaluates its
    slice of the images and the predictions are gathered, so the errors are
    the single-device errors.

    Args:
        model: keras.Model returning class scores.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches; y holds
            integer labels or one-hot rows.
        batch_size: int. Images per evaluation batch; the stacked sweep
            runs about `4 * batch_size` rows at once (`1 + n` copies of
            `4 * batch_size / (1 + n)` images). Defaults to 64.
        method: str. "stacked" (one compiled pass per batch that reuses the
            intact activations in front of every lesion), "each" (one
            evaluation per lesion, toggling the branch gate) or "auto"
            (stacked where the units form a chain, else each).
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        SingleDeletionResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           keras.layers.Softmax()])
        >>> result = single_block_deletion(model, (np.eye(2), np.array([0, 1])), progress=False)
        >>> result.errors.shape
        (1,)
    """
    if method not in ("auto", "stacked", "each"):
        raise ValueError(
            f"`method` must be 'auto', 'stacked' or 'each'. Received: method={method!r}"
        )
    x, y = checked_data(model, data, batch_size)
    if not lesion_units(model):
        raise ValueError(
            f"Model {model.name!r} has no Residual blocks and no layer with equal input "
            "and output shape that could be deleted."
        )
    with parallel.distributed(model) as model:
        units = lesion_units(model)
        intact, errors = _single_deletion(model, units, x, y, batch_size, method, progress)
    return SingleDeletionResult(
        names=np.array([unit.name for unit in units]),
        errors=errors,
        intact_error=intact,
        downsampling=np.array([downsampling(unit) for unit in units], dtype=bool),
    )


@dataclasses.dataclass
class KDeletionResult:
    """Error after deleting k random blocks (Veit et al. 2016, Fig. 5a).

    Attributes:
        ks: (m,) int. Numbers of deleted blocks.
        errors: (m, samples) float. One error per random set.
        mean: (m,) float. Mean error over the sets.
        std: (m,) float. Standard deviation over the sets.
        intact_error: float. Error of the intact network.
        n_blocks: int. Number of blocks in the network.

    Example:
        `k_block_deletion` returns one; by hand, two random sets per k:

        >>> import numpy as np
        >>> from keras_residual.lesion import KDeletionResult
        >>> errors = np.array([[0.10, 0.12], [0.30, 0.26]])
        >>> result = KDeletionResult(ks=np.array([1, 5]), errors=errors, mean=errors.mean(1),
        ...                          std=errors.std(1), intact_error=0.08, n_blocks=12)
        >>> result.mean.round(2).tolist()
        [0.11, 0.28]
    """

    ks: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intact_error: float
    n_blocks: int


def k_block_deletion(
    model: keras.Model,
    data: Data,
    ks: Sequence[int],
    samples: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> KDeletionResult:
    """Delete `k` random blocks at once, `samples` times per k (Veit et al. 2016, Fig. 5a).

    Under a distribution (`keras_residual.lesion.parallel`): the random sets
    are drawn from `seed` alike in every process, and each lesioned network
    is evaluated data-parallel over the devices (and processes), which gives
    the single-device errors.

    Args:
        model: keras.Model with Residual blocks, returning class scores.
        data: (x, y) arrays or a tf.data.Dataset of (x, y) batches.
        ks: sequence of int. Numbers of blocks to delete.
        samples: int. Random sets per k. Defaults to 10.
        batch_size: int. Evaluation batch size. Defaults to 256.
        seed: int. Seed of the random sets. Defaults to 0.
        progress: bool. Show a tqdm progress bar. Defaults to True.

    Returns:
        KDeletionResult.

    Example:
        >>> import keras, numpy as np
        >>> from keras_residual import Residual
        >>> model = keras.Sequential([keras.Input((2,)), Residual(keras.layers.Dense(2)),
        ...                           Residual(keras.layers.Dense(2))])
        >>> result = k_block_deletion(model, (np.eye(2), np.array([0, 1])), [0, 1], samples=2,
        ...                           progress=False)
        >>> result.errors.shape
        (2, 2)
    """
    x, y = checked_data(model, data, batch_size, samples)
    blocks = [block for block in residual_blocks(model) if block.deletable]
    ks = check_ks(ks, len(blocks), f"the model has {len(blocks)} deletable blocks")
    rng = np.random.default_rng(seed)
    errors = np.empty((len(ks), samples))
    with parallel.distributed(model) as model, lesion_ready(model), tqdm(
        total=errors.size, desc="k-block deletion", disable=not progress
    ) as bar:
        blocks = [block for block in residual_blocks(model) if block.deletable]  # of the copy
        intact = evaluate(model, x, y, batch_size)
        for row, k in enumerate(ks):
            for s in range(samples):
                deleted = set(rng.choice(len(blocks), size=k, replace=False).tolist())
                for i, block in enumerate(blocks):
                    block.branch_enabled = i not in deleted
                errors[row, s] = evaluate(model, x, y, batch_size)
                bar.update()
    return KDeletionResult(ks, errors, errors.mean(1), errors.std(1), intact, len(blocks))


