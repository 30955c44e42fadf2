"""Growing a trained network: insert residual blocks that start as the identity.

A residual block whose branch outputs zero computes `y = x`, so it can be
inserted anywhere a tensor keeps its shape without changing what the network
predicts; training then moves the new branch away from zero. He et al.
(2015), Sec. 3.1, motivate residual learning by exactly this construction
("the added layers are identity mappings"), and the ResNet-50 visualization
study lists inserting zero-initialized blocks into a pretrained network as
future work. Zero-initializing the last layer of each branch is Goyal et al.
(2017), Sec. 5.1; a zero scalar gate is ReZero (Bachlechner et al. 2020).

`insert_blocks` copies the model (same weights), rebuilds its graph with
`keras_residual.graph.rebuild`, and checks on a batch that the
predictions did not move. `carry_optimizer` continues the trained
network's optimizer on the grown one: the old variables keep their slots
(Adam's moments, SGD's momentum) and the step count, the new ones start
with fresh slots.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import layers

from keras_residual import blocks as blocks_lib
from keras_residual import graph
from keras_residual.graph import is_container, rebuild, resolve_path, split_path
from keras_residual.merges import BatchNormAddMerge
from keras_residual.residual import Residual

MakeBlock = Callable[[tuple], layers.Layer]
#: Placements (He et al. 2016, Fig. 4) whose zero-initialized block outputs its input.
IDENTITY_PLACEMENTS = ("original", "relu_before_add", "relu_preact", "full_preact")
_CONVS = {2: layers.Conv1D, 4: layers.Conv3D}


def identity_block(
    shape: Sequence[int | None], name: str | None = None, placement: str = "full_preact"
) -> Residual:
    """A residual block for inputs of `shape` (no batch axis) that starts as the identity.

    Vectors get `dense_block` (two Dense layers), images a `basic_block`
    with `placement` (He et al. 2016, Fig. 4; full pre-activation, Fig. 4e,
    by default: no activation after the addition, so `y = x` exactly),
    sequences and volumes two `Conv1D` / `Conv3D` with a ReLU between. The
    last layer of the branch starts at zero (kernel and bias, or the last
    BN's scale), so the block outputs its input (for the post-activation
    "original" placement, `relu(x)`: its input when that is non-negative)
    and every new weight receives a gradient once the last layer moves.

    Args:
        shape: tuple. The input shape without the batch axis; the channel
            axis follows `keras.config.image_data_format()`.
        name: str or None. Block name; inner layers are named from it.
        placement: str. Images only: "original", "relu_before_add",
            "relu_preact" or "full_preact" (`IDENTITY_PLACEMENTS`).

    Returns:
        A `Residual` layer, not yet built.

    Example:
        >>> import keras
        >>> block = identity_block((8, 8, 4), name="grown")
        >>> x = keras.random.normal((2, 8, 8, 4))
        >>> bool(keras.ops.all(block(x) == x))
        True
    """
    shape = tuple(shape)
    channels_first = keras.config.image_data_format() == "channels_first" and len(shape) > 1
    channels = shape[0] if channels_first else shape[-1]
    if channels is None:
        raise ValueError(f"The channel axis must be known to size a block. Received: shape={shape}")
    if len(shape) == 1:
        return blocks_lib.dense_block(channels, zero_init_last=True, name=name)
    if len(shape) == 3:
        if placement not in IDENTITY_PLACEMENTS:
            raise ValueError(
                f"`placement` must be one of {IDENTITY_PLACEMENTS}: a block with a BatchNorm after "
                f"the addition ('bn_after_add') normalizes x, so it cannot start as the identity. "
                f"Received: placement={placement!r}"
            )
        return blocks_lib.basic_block(channels, placement=placement, zero_init_last=True, name=name)
    if len(shape) not in _CONVS:
        raise ValueError(
            f"identity_block supports inputs of rank 1 to 4 (no batch axis). Received: shape={shape}"
        )
    conv = _CONVS[len(shape)]
    data_format = "channels_first" if channels_first else "channels_last"
    prefix = name or f"identity_block_{keras.backend.get_uid('identity_block')}"
    branch = keras.Sequential([
        conv(channels, 3, padding="same", data_format=data_format, name=f"{prefix}_1_conv"),
        layers.ReLU(name=f"{prefix}_1_relu"),
        conv(channels, 3, padding="same", data_format=data_format, kernel_initializer="zeros",
             name=f"{prefix}_2_conv"),
    ], name=f"{prefix}_branch")
    return Residual(branch, data_format=data_format, name=prefix)


def block_placement(block: Residual) -> str:
    """Which of He et al. (2016)'s placements (Fig. 4) a block's description shows.

    Read from its parts: a pre-activation with a BatchNorm is "full_preact",
    one without "relu_preact"; otherwise an activation after the merge is
    "bn_after_add" when the merge normalizes, else "original"; no activation
    around the merge is "relu_before_add".

    Example:
        >>> from keras_residual import blocks
        >>> block_placement(blocks.basic_block(4, placement="relu_preact"))
        'relu_preact'
    """
    pre = block.part("preactivation")
    if pre is not None:
        inner = graph.sublayers(pre.layer) if isinstance(pre.layer, layers.Layer) else []
        normalizes = any(isinstance(lyr, layers.BatchNormalization) for lyr in inner)
        return "full_preact" if normalizes else "relu_preact"
    activation = block.part("activation")
    if activation is None or activation.layer in (None, keras.activations.linear):
        return "relu_before_add"
    merge = block.part("merge")
    normalizes = merge is not None and isinstance(merge.layer, BatchNormAddMerge)
    return "bn_after_add" if normalizes else "original"


def _non_negative(layer: layers.Layer) -> bool:
    """Whether `layer`'s output is a ReLU's (so a post-activation identity block keeps it)."""
    if isinstance(layer, Residual):
        part = layer.part("activation")
        return part is not None and part.layer is keras.activations.relu
    if isinstance(layer, layers.ReLU):
        return True
    return getattr(layer, "activation", None) is keras.activations.relu


def _placement_for(model: keras.Model, layer: layers.Layer, placement: str) -> str:
    """The placement of the block inserted after `layer`: `placement`, or the host's ("auto")."""
    if placement != "auto":
        return placement
    host = layer if isinstance(layer, Residual) else None
    found = graph.blocks(model, nested=True)
    if host is None and found:
        host = found[0]
    if host is None:
        return "full_preact"  # a plain network: nothing to follow
    wanted = block_placement(host)
    if wanted in ("original", "bn_after_add") and not _non_negative(layer):
        reason = f"{layer.name!r} outputs negative values, where relu(x + 0) is not x"
    elif wanted == "bn_after_add":
        reason = "a BatchNorm after the addition normalizes x, so such a block is not the identity"
    else:
        return wanted
    warnings.warn(
        f"insert_blocks: the host's blocks use the {wanted!r} placement, but a block after "
        f"{layer.name!r} cannot start as the identity with it ({reason}); inserting a "
        "'full_preact' block instead (He et al. 2016, Fig. 4e). Pass placement= to choose.",
        stacklevel=3,
    )
    return "full_preact"


def _targets(model: keras.Model, after: Sequence[str]) -> dict[int, layers.Layer]:
    """The layers named by `after`, each called in a graph that `graph.rebuild` walks."""
    found = {}
    for path in after:
        segments = split_path(path)
        parent = model
        for depth, segment in enumerate(segments[:-1]):
            parent = resolve_path(parent, segment)
            if not is_container(parent):
                inside = "/".join(segments[: depth + 1])
                raise ValueError(
                    f"Blocks are inserted between layers of a functional or Sequential graph; "
                    f"{inside!r} is a {type(parent).__name__}, not such a graph. Insert after "
                    f"{inside!r} itself instead. Received: after={path!r}"
                )
        layer = resolve_path(parent, segments[-1])
        if id(layer) in found:
            raise ValueError(f"{path!r} names a layer already listed. Received: after={list(after)}")
        found[id(layer)] = layer
    return found


def _check_batch(model: keras.Model, rows: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    batch = []
    for tensor in keras.tree.flatten(model.inputs):
        shape = (rows,) + tuple(d if d is not None else 8 for d in tensor.shape[1:])
        if "int" in str(tensor.dtype):
            batch.append(rng.integers(0, 2, size=shape).astype(tensor.dtype))
        else:
            batch.append(rng.normal(size=shape).astype("float32"))
    return batch


def _max_difference(a: keras.Model, b: keras.Model, batch) -> tuple[float, float]:
    inputs = batch[0] if len(batch) == 1 else batch
    before = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(a(inputs, training=False))]
    after = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(b(inputs, training=False))]
    scale = max(float(np.abs(x).max()) for x in before)
    return max(float(np.abs(x - y).max()) for x, y in zip(before, after, strict=True)), scale


def insert_blocks(
    model: keras.Model,
    after: Sequence[str] | str,
    make_block: MakeBlock | None = None,
    check_data: np.ndarray | Sequence[np.ndarray] | None = None,
    name: str | None = None,
    placement: str = "auto",
) -> keras.Model:
    """A copy of `model` with an identity-initialized residual block after each named layer.

    The grown network predicts what `model` predicts (checked here on a
    batch, in inference mode); the new blocks are trainable, so fine-tuning
    deepens a trained network instead of training the deeper one from
    scratch. `model` is not changed: the copy has its own weights.

    Args:
        model: keras.Model. A Functional or Sequential model.
        after: str or list of str. Paths (`keras_residual.probe` grammar) of
            the layers to insert after: a `Residual` block of a residual
            stage (`"conv3_block2"`), a plain layer (`"conv2d_1"`), or a layer
            of a nested Functional/Sequential model (`"features/conv2d"`).
            The block receives that layer's output, so its shape is kept.
        make_block: callable or None. `make_block(shape)` returns the layer to
            insert for an output of `shape` (no batch axis); it must start as
            the identity. None: `identity_block(shape, placement=...)`, named
            `{layer name}_grown`.
        check_data: array, list of arrays or None. A batch to check that the
            predictions are unchanged; None: a random batch.
        name: str or None. The new model's name; None: "{model.name}_grown".
        placement: str. Where the default image blocks put BN and ReLU (He et
            al. 2016, Fig. 4). "auto" (default) follows the host: the block
            inserted after, else the model's first block (`block_placement`),
            else "full_preact" for a plain network. Where the host's
            placement cannot start as the identity (a BatchNorm after the
            addition, or a post-addition ReLU after a layer with negative
            outputs) a warning says why and a "full_preact" block goes in.
            Or one of `IDENTITY_PLACEMENTS`.

    Returns:
        A new functional keras.Model.

    Raises:
        ValueError: if a path names no layer of a walkable graph, or the
            predictions changed (a `make_block` that is not the identity).

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
        >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        >>> grown = insert_blocks(model, after=["conv"])
        >>> [layer.name for layer in grown.layers][2]
        'conv_grown'
        >>> len(model.layers)  # the original is untouched
        3
    """
    after = [after] if isinstance(after, str) else list(after)
    if not after:
        raise ValueError(f"`after` must name at least one layer. Received: after={after}")
    clone = graph.clone(model)
    targets = _targets(clone, after)
    inserted: dict[int, layers.Layer] = {}
    taken = {layer.name for layer in clone.layers}

    def block_name(base: str) -> str:
        candidate, number = f"{base}_grown", 2
        while candidate in taken:
            candidate, number = f"{base}_grown{number}", number + 1
        taken.add(candidate)
        return candidate

    def replace(layer, args, kwargs):
        if id(layer) not in targets:
            return None
        outputs = layer(*args, **kwargs)
        shape = tuple(outputs.shape[1:])
        block = make_block(shape) if make_block is not None else identity_block(
            shape, name=block_name(layer.name),
            placement=_placement_for(model, layer, placement) if len(shape) == 3 else "full_preact")
        if not isinstance(block, layers.Layer):
            raise TypeError(
                f"`make_block(shape)` must return a Keras layer. Received: {type(block).__name__}"
            )
        block.trainable = True
        inserted[id(layer)] = block
        return block(outputs)

    rebuilt = rebuild(clone, replace)
    grown = keras.Model(rebuilt.input, rebuilt.output, name=name or f"{model.name}_grown")
    missing = [path for path, layer_id in zip(after, targets, strict=True) if layer_id not in inserted]
    if missing:
        raise ValueError(
            f"Layers {missing} are never called in the graph of {model.name!r}, so nothing "
            f"was inserted after them. Received: after={after}"
        )
    batch = _check_batch(model) if check_data is None else check_data
    batch = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    difference, scale = _max_difference(model, grown, batch)
    if difference > 1e-5 * max(1.0, scale):
        raise ValueError(
            f"The inserted blocks change the predictions (max |difference| {difference:.3g}): "
            "a block from `make_block` must output its input at insertion (zero-initialize "
            f"its last layer, or use merge='rezero'). Received: make_block={make_block!r}"
        )
    return grown


def _slots_by_path(optimizer: keras.optimizers.Optimizer,
                   model: keras.Model) -> dict[tuple[str, str], keras.Variable]:
    """(variable path, slot name) -> optimizer variable, for the trainable weights of `model`.

    Keras names the slot of a model variable `v` "{v.path with '/' replaced
    by '_'}_{slot}" (`Optimizer.add_variable_from_reference`); the path on
    the left is `graph.variable_paths`', which a grown copy shares with the
    original.
    """
    prefixes: dict[str, str] = {}
    for path, variable in graph.variable_paths(model).items():
        if variable.trainable:
            prefixes[variable.path.replace("/", "_") + "_"] = path
    slots: dict[tuple[str, str], keras.Variable] = {}
    for slot in optimizer.variables:
        matches = [prefix for prefix in prefixes if slot.name.startswith(prefix)]
        if not matches:
            continue  # the step count, the learning rate, ...
        prefix = max(matches, key=len)
        key = (prefixes[prefix], slot.name[len(prefix):])
        if key in slots:
            raise ValueError(
                f"Two optimizer variables are named for {key[0]!r} ({key[1]!r}): "
                f"{slots[key].path!r} and {slot.path!r}. Received: model={model.name!r}"
            )
        slots[key] = slot
    return slots


def carry_optimizer(
    optimizer: keras.optimizers.Optimizer, model: keras.Model, grown: keras.Model
) -> keras.optimizers.Optimizer:
    """A new optimizer for `grown` that continues `optimizer`'s state from training `model`.

    Growing returns new variables, so the trained optimizer cannot step them;
    a fresh optimizer restarts Adam's moments and bias correction for every
    weight. This one has `optimizer`'s configuration and step count, the
    slots of every variable of `model` (matched by
    `keras_residual.graph.variable_paths`) with their trained values, and
    fresh (zero) slots for the inserted blocks. Right after growth the
    inserted blocks are the identity with a zero last layer, so the old
    weights then move exactly as they would have in `model`.

    Args:
        optimizer: keras.optimizers.Optimizer. Built by training `model`.
        model: keras.Model. The network `optimizer` trained.
        grown: keras.Model. `insert_blocks(model, ...)`.

    Returns:
        A built optimizer of `optimizer`'s class, to pass to `grown.compile`.

    Raises:
        ValueError: if `optimizer` is not built, or a trained variable of
            `model` has no counterpart in `grown`.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))
        >>> model.compile(keras.optimizers.Adam(0.01), loss="mse")
        >>> _ = model.train_on_batch(np.ones((2, 4)), np.zeros((2, 2)))
        >>> grown = insert_blocks(model, after=["fc"])
        >>> optimizer = carry_optimizer(model.optimizer, model, grown)
        >>> int(optimizer.iterations)
        1
    """
    if not optimizer.built:
        raise ValueError(
            "`optimizer` has no state to carry: it is not built (train `model` first). "
            f"Received: optimizer={optimizer.name!r}"
        )
    old = _slots_by_path(optimizer, model)
    carried = type(optimizer).from_config(optimizer.get_config())
    carried.build(grown.trainable_variables)
    new = _slots_by_path(carried, grown)
    missing = sorted({path for path, _ in old} - {path for path, _ in new})
    if missing:
        raise ValueError(
            f"The trained variables {missing[:5]} of {model.name!r} are not trainable variables "
            f"of {grown.name!r}. Received: model={model.name!r}, grown={grown.name!r}"
        )
    for key, slot in new.items():
        if key in old:
            slot.assign(keras.ops.convert_to_numpy(old[key]))
    carried.iterations.assign(keras.ops.convert_to_numpy(optimizer.iterations))
    return carried
