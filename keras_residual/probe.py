"""Feature extraction at any layer, including layers inside a residual block.

A *path* names a tensor of a model as segments joined by "/" (the grammar
lives in `keras_residual.graph`):

- a layer name selects that layer of the current model (functional or
  Sequential) and stands for its output: `"conv5_block2"`;
- after a `Residual` block, a keyword selects one of its parts:
  `"branch"` (the wrapped layer `F`, fed with the pre-activated input),
  `"shortcut"` (`h(x)`; for an identity shortcut, the tensor it passes on),
  `"preactivation"` (the pre-activated input, when the block has one);
- after any layer, `"input"` selects the tensor that layer receives.

Segments chain to any depth: `"conv5_block2/branch/conv5_block2_3_conv"` is
the last convolution of the branch of block `conv5_block2` (Chu et al. 2017, Fig. 7
compares `res5b_branch2c` with `res5b`), and `"outer/branch/branch/conv"`
reaches into a Residual nested in a Residual.

`probe(model, paths)` traces the outer graph up to a block's input and runs
the block through its own description (`Residual.parts()` / `run_part`),
descending into the parts a path names: the same layer instances are called
on new symbolic tensors, so the probe shares the model's weights and the
model itself is not modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_residual import graph
from keras_residual.graph import (  # noqa: F401  (the old home of these names)
    INPUT,
    LIST_PATHS_HINT,
    RESIDUAL_PARTS,
    fresh_inputs,
    is_container,
    list_paths,
    resolve_path,
    split_path,
)
from keras_residual.residual import Residual


class _Prober:
    """Calls layers on symbolic tensors, descending only where a path asks to."""

    def call(self, layer, args, kwargs, wanted, prefix):
        """Returns `(outputs, found)`: found maps each wanted sub-path to its tensor."""
        found = {}
        if (INPUT,) in wanted:
            found[(INPUT,)] = args[0] if len(args) == 1 else list(args)
        below = {w for w in wanted if w != (INPUT,)}
        if not below:
            return layer(*args, **kwargs), found
        if isinstance(layer, Residual):
            outputs, inner = self._residual(layer, graph.single_input(args, layer), kwargs,
                                            below, prefix)
            found.update(inner)
            return outputs, found
        if not is_container(layer):
            segment = min(below)[0]
            graph.child(layer, segment, _join(prefix + (segment,)))
        outputs, inner = self.walk(layer, args[0] if len(args) == 1 else list(args), below, prefix)
        found.update(inner)
        return outputs, found

    def walk(self, container, inputs, wanted, prefix):
        """Traces `container`, collecting the tensors of the wanted sub-paths."""
        by_child = _group(wanted)
        calls = {}

        def hook(layer, args, kwargs, capture):
            sub = by_child.get(layer.name)
            if sub is None:
                return layer(*args, **kwargs)
            calls[layer.name] = calls.get(layer.name, 0) + 1
            if calls[layer.name] > 1:
                raise ValueError(
                    f"Layer {_join(prefix + (layer.name,))!r} is called more than once in "
                    f"{container.name!r}, so a path to it is ambiguous."
                )
            deeper = {s for s in sub if s}
            outputs, inner = self.call(layer, args, kwargs, deeper, prefix + (layer.name,))
            if () in sub:
                capture((layer.name,), outputs)
            for key, value in inner.items():
                capture((layer.name,) + key, value)
            return outputs

        outputs, found = graph.trace(container, inputs, hook)
        for name in sorted(set(by_child) - set(calls)):
            graph.child(container, name, _join(prefix + (name,)))
            raise ValueError(
                f"Layer {_join(prefix + (name,))!r} is not on the graph of model "
                f"{container.name!r} between its inputs and outputs."
            )
        return outputs, found

    def _residual(self, block, x, kwargs, wanted, prefix):
        """Runs `block` through its description, descending into the parts `wanted` names."""
        by_part = _group(wanted)
        for segment in by_part:
            if segment not in RESIDUAL_PARTS:
                graph.child(block, segment, _join(prefix + (segment,)))
        if "shortcut" in by_part and not block.has_shortcut:
            raise ValueError(
                f"Residual {block.name!r} has shortcut='none', so path "
                f"{_join(prefix + ('shortcut',))!r} names nothing."
            )
        found = {}
        # The branch's own call arguments (use_causal_mask, initial_state, ...), as the block
        # passes them on.
        branch_kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}

        def apply(part, inputs):
            if part.role in ("merge", "activation"):
                return None  # no path names them: the block's own call gives its output
            sub = by_part.get(part.role, set())
            deeper = {s for s in sub if s}
            if deeper and part.passes_input:
                # An identity part passes its tensor on; it has nothing below it.
                graph.child(block, part.role, _join(prefix + (part.role,) + min(deeper)))
            if deeper:
                out, inner = self.call(part.layer, (inputs[0],), {}, deeper, prefix + (part.role,))
                found.update({(part.role,) + key: value for key, value in inner.items()})
            else:
                out = block.run_part(part, inputs, training=kwargs.get("training"),
                                     mask=kwargs.get("mask"), call_kwargs=branch_kwargs)
            if () in sub:
                found[(part.role,)] = out
            return out

        block.wire(x, apply)  # the parts, for the tensors a path names (unused ones are pruned)
        # Downstream layers see the block as the model runs it (lesion state included).
        return block(x, **kwargs), found


def _join(segments: tuple[str, ...]) -> str:
    return "/".join(segments)


def _group(wanted: set[tuple[str, ...]]) -> dict[str, set[tuple[str, ...]]]:
    """Groups sub-paths by their first segment: {"a": {(), ("b",)}} for a and a/b."""
    groups: dict[str, set[tuple[str, ...]]] = {}
    for path in wanted:
        groups.setdefault(path[0], set()).add(path[1:])
    return groups


def probe(model: keras.Model, paths: str | Sequence[str]) -> keras.Model:
    """A model that outputs the tensors at the given layer paths.

    Reproduces the feature extraction behind Chu et al.'s (2017) figures: the outputs
    of blocks (`res5b`) and of layers inside their branches
    (`res5b_branch2c`, Fig. 7, and future work 1). The probe shares the
    layers and weights of `model`, which is left unchanged.

    Args:
        model: keras.Model. A functional or Sequential model with defined
            inputs.
        paths: str or sequence of str. Layer paths (module docstring). A
            string gives a model with one output; a sequence gives a list of
            outputs in the same order.

    Returns:
        keras.Model with the inputs of `model`.

    Raises:
        ValueError: if a path does not name a tensor of `model`.

    Example:
        >>> import keras
        >>> from keras_residual import Residual
        >>> branch = keras.Sequential([keras.layers.Dense(4, name="fc1"),
        ...                            keras.layers.Dense(4, name="fc2")], name="f")
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, Residual(branch, name="block")(inputs))
        >>> p = probe(model, ["block", "block/branch/fc1"])
        >>> [tuple(o.shape) for o in p.outputs]
        [(None, 4), (None, 4)]
    """
    single = isinstance(paths, str)
    path_list = [paths] if single else list(paths)
    if not path_list:
        raise ValueError("`paths` must name at least one layer. Received: paths=[]")
    keys = [split_path(p) for p in path_list]
    inputs = fresh_inputs(model)
    if any(key == (INPUT,) for key in keys):
        raise ValueError(
            "Path 'input' names the model's input; use model.inputs instead, or "
            "'<layer>/input' for the input of a layer."
        )
    _, found = _Prober().walk(model, inputs, set(keys), ())
    outputs = [found[key] for key in keys]
    return keras.Model(inputs, outputs[0] if single else outputs, name=f"probe_{model.name}")
