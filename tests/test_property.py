"""Property test: random residual stacks either build to the shape worked out
here, independently of the library, or fail at build with the clear error.

The independent shape arithmetic: a "same" conv maps n positions to
ceil(n / s), a "valid" one to floor((n - k) / s) + 1; a 1x1 stride-t
shortcut maps n to ceil(n / t), so a strided shortcut exists iff some t
gives the branch's size; zero padding can only add channels; average-pool
shortcuts need spatial dims.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers

from keras_residual import Residual

pytestmark = pytest.mark.multibackend

SHORTCUTS = ["identity", "projection", "zero_pad", "avg_down", "none"]


@st.composite
def stacks(draw) -> dict:
    """A random stack: spatial rank (0 = vectors), input size and channels, blocks."""
    rank = draw(st.integers(0, 2))
    size = draw(st.integers(3, 9))
    spec = {"rank": rank, "size": size, "channels": draw(st.integers(1, 4)), "blocks": []}
    for _ in range(draw(st.integers(1, 3))):
        block = {
            "width": draw(st.sampled_from([1, 2, 3, 4, 6])),
            "shortcut": draw(st.sampled_from(SHORTCUTS)),
            "kernel": draw(st.sampled_from([1, 3])),
            "stride": draw(st.sampled_from([1, 2, 3])),
            # "valid" only where the kernel fits, so every branch itself is valid.
            "padding": draw(st.sampled_from(["same", "valid"])),
        }
        if block["padding"] == "valid" and size < block["kernel"]:
            block["padding"] = "same"
        size = _conv_size(size, block)
        spec["blocks"].append(block)
    return spec


def _conv_size(n: int, block: dict) -> int:
    if block["padding"] == "same":
        return math.ceil(n / block["stride"])
    return (n - block["kernel"]) // block["stride"] + 1


def _strided_1x1_exists(n: int, m: int) -> bool:
    return any(math.ceil(n / t) == m for t in range(1, n + 1))


def _bridges(kind: str, rank: int, n: int, m: int, c_in: int, c_out: int) -> bool:
    """Whether `shortcut=kind` can carry (n positions, c_in) to (m, c_out)."""
    spatial_ok = rank == 0 or _strided_1x1_exists(n, m)
    if kind == "identity":
        return (n, c_in) == (m, c_out) or (rank == 0 and c_in == c_out)
    if kind == "none":
        return True
    if kind == "projection":
        return spatial_ok
    if kind == "zero_pad":
        return spatial_ok and c_out >= c_in
    return rank > 0 and spatial_ok  # avg_down


def expected_outcome(spec: dict) -> tuple:
    """(output shape, None) if the stack builds, else (None, index of the failing block)."""
    rank, n, c = spec["rank"], spec["size"], spec["channels"]
    for i, block in enumerate(spec["blocks"]):
        m = n if rank == 0 else _conv_size(n, block)
        if not _bridges(block["shortcut"], rank, n, m, c, block["width"]):
            return None, i
        n, c = m, block["width"]
    return (None,) + (n,) * rank + (c,), None


def _branch(spec: dict, i: int) -> layers.Layer:
    block, name = spec["blocks"][i], f"branch{i}"
    if spec["rank"] == 0:
        return layers.Dense(block["width"], name=name)
    conv = layers.Conv1D if spec["rank"] == 1 else layers.Conv2D
    return conv(block["width"], block["kernel"], strides=block["stride"],
                padding=block["padding"], name=name)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=stacks())
def test_random_stack_builds_to_computed_shape_or_raises_clearly(spec):
    shape, failing = expected_outcome(spec)
    inputs = keras.Input((spec["size"],) * spec["rank"] + (spec["channels"],))
    x = inputs
    for i, block in enumerate(spec["blocks"]):
        residual = Residual(_branch(spec, i), shortcut=block["shortcut"])
        if i == failing:
            with pytest.raises(ValueError) as info:
                residual(x)
            message = str(info.value)
            assert f"'branch{i}'" in message and "shortcut=" in message
            return
        x = residual(x)
    assert failing is None
    assert tuple(x.shape) == shape
    if keras.backend.backend() == "jax":
        return  # eager JAX compiles every op; TF and torch run the check below
    # And at run time, not only symbolically: no broadcasting error later.
    model = keras.Model(inputs, x)
    batch = np.zeros((1,) + tuple(inputs.shape[1:]), "float32")
    assert tuple(model(batch).shape) == (1,) + shape[1:]
