"""`keras_residual.summary`: every block opened into its parts, with shapes and parameters.

Expected parameter counts are worked out by hand from the layer formulas
(Conv2D: k*k*c_in*c_out + c_out; BatchNormalization: 4 per channel) and
totals are checked against Keras' own `count_params`.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import Residual, summary
from keras_residual.model_summary import summary_rows

pytestmark = pytest.mark.multibackend


def _two_block_model():
    inputs = keras.Input((8, 8, 4))
    x = Residual(layers.Conv2D(8, 3, strides=2, padding="same", name="down_conv"),
                 shortcut="projection", preactivation="bn_relu", merge="highway",
                 name="down")(inputs)
    inner = Residual(layers.Conv2D(8, 3, padding="same", name="inner_conv"), name="inner")
    branch = keras.Sequential([layers.Conv2D(8, 1, name="squeeze"), inner], name="stack")
    x = Residual(branch, activation="relu", name="outer")(x)
    return keras.Model(inputs, x, name="net")


def test_rows_are_the_parts_of_each_block_in_call_order():
    rows = [(r.depth, r.role, r.name, r.kind, r.output_shape, r.params)
            for r in summary_rows(_two_block_model())]
    assert rows[1:] == [
        (0, "", "down", "Residual", (None, 4, 4, 8), 16 + 296 + 40 + 40),
        # BN on 4 channels (gamma, beta, mean, variance), then ReLU.
        (1, "preactivation", "preact", "Sequential", (None, 8, 8, 4), 16),
        (2, "", "down_preact_bn", "BatchNormalization", (None, 8, 8, 4), 16),
        (2, "", "down_preact_relu", "ReLU", (None, 8, 8, 4), 0),
        (1, "branch", "down_conv", "Conv2D", (None, 4, 4, 8), 3 * 3 * 4 * 8 + 8),
        (1, "shortcut", "shortcut", "ProjectionShortcut", (None, 4, 4, 8), 4 * 8 + 8),
        # The highway gate: a 1x1 projection of the pre-activated input, 4 -> 8 channels.
        (1, "merge", "merge", "GatedMerge", (None, 4, 4, 8), 4 * 8 + 8),
        (0, "", "outer", "Residual", (None, 4, 4, 8), 72 + 584),
        (1, "branch", "stack", "Sequential", (None, 4, 4, 8), 72 + 584),
        (2, "", "squeeze", "Conv2D", (None, 4, 4, 8), 8 * 8 + 8),
        (2, "", "inner", "Residual", (None, 4, 4, 8), 3 * 3 * 8 * 8 + 8),
        (3, "branch", "inner_conv", "Conv2D", (None, 4, 4, 8), 584),
        (3, "shortcut", "identity", "", (None, 4, 4, 8), 0),
        (3, "merge", "merge", "AddMerge", (None, 4, 4, 8), 0),
        (1, "shortcut", "identity", "", (None, 4, 4, 8), 0),
        (1, "merge", "merge", "AddMerge", (None, 4, 4, 8), 0),
        (1, "activation", "relu", "", (None, 4, 4, 8), 0),
    ]


def test_printed_total_is_keras_count_and_parts_add_up_to_blocks():
    model = _two_block_model()
    lines = []
    summary(model, print_fn=lines.append)
    text = lines[0]
    assert text.splitlines()[0] == 'Model: "net"'
    assert f"Total params: {model.count_params():,} " in text
    assert "  preactivation: preact (Sequential)" in text
    assert "\n      branch: inner_conv (Conv2D)" in text
    outer = model.get_layer("outer")
    blocks = {"down": model.get_layer("down"), "outer": outer,
              "inner": outer.layer.get_layer("inner")}
    rows = summary_rows(model)
    for i, row in enumerate(rows):
        if row.kind == "Residual":
            parts = []
            for part in rows[i + 1:]:
                if part.depth <= row.depth:
                    break
                if part.depth == row.depth + 1:
                    parts.append(part.params)
            assert sum(parts) == row.params == blocks.pop(row.name).count_params()
    assert not blocks


def test_builder_model_every_block_sums_to_keras_count():
    from keras_residual.models import cifar_resnet

    model = cifar_resnet(20)
    rows = summary_rows(model)
    blocks = [r for r in rows if r.kind == "Residual"]
    assert len(blocks) == 9  # 3 stages of (20 - 2) / 6 blocks
    by_name = {layer.name: layer for layer in model.layers}
    for row in blocks:
        assert row.params == by_name[row.name].count_params()
    # Option A shortcuts are parameter-free; every block has a branch, a shortcut, a merge, a ReLU.
    assert sum(r.role == "shortcut" for r in rows) == 9
    assert sum(r.role == "activation" and r.name == "relu" for r in rows) == 9
    assert sum(r.params for r in rows if r.depth == 0) == model.count_params()


def test_lesion_state_plain_block_and_a_single_block():
    inputs = keras.Input((6,))
    x = Residual(layers.Dense(6, name="fc"), lesion_ready=True, name="ready")(inputs)
    x = Residual(layers.Dense(3, name="plain_fc"), shortcut="none", name="plain")(x)
    model = keras.Model(inputs, x)
    rows = [(r.role, r.name, r.params) for r in summary_rows(model)]
    assert ("lesion state", "lesion_state", 4) in rows
    # A plain layer (shortcut="none") has no shortcut and no merge.
    plain = rows.index(("", "plain", 6 * 3 + 3))
    assert rows[plain + 1:] == [("branch", "plain_fc", 21)]
    block_rows = summary_rows(model.get_layer("ready"))
    assert [r.role for r in block_rows] == ["", "branch", "shortcut", "merge", "lesion state"]
    assert block_rows[0].params == 6 * 6 + 6 + 4


def test_unbuilt_model_and_non_model_are_refused():
    with pytest.raises(ValueError, match=r"not built.*keras\.Input"):
        summary(keras.Sequential([layers.Dense(2)]))
    built = layers.Dense(2)
    built.build((None, 3))
    with pytest.raises(TypeError, match="Received: Dense"):
        summary(built)


def test_output_shapes_match_a_forward_pass():
    model = _two_block_model()
    x = np.random.default_rng(0).random((2, 8, 8, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert summary_rows(model)[-1].output_shape[1:] == y.shape[1:]


def _shapes(model):
    return {(row.role, row.name): row.output_shape for row in summary_rows(model)}


def test_attention_branch_and_its_merge_show_the_shapes_keras_computes():
    attention = layers.MultiHeadAttention(2, 4, output_shape=6, name="attn")
    x = np.random.default_rng(0).random((2, 5, 6)).astype("float32")
    inputs = keras.Input((5, 6))
    model = keras.Model(inputs, Residual(attention, name="block")(inputs))
    model(x)
    want = (None, *keras.ops.convert_to_numpy(attention(x, x)).shape[1:])  # the layer alone
    shapes = _shapes(model)
    assert shapes[("branch", "attn")] == want == (None, 5, 6)
    assert shapes[("merge", "merge")] == want and shapes[("", "block")] == want


def test_subclassed_model_rows_show_the_shapes_its_layers_were_called_with():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = layers.Conv2D(4, 3, padding="same", name="conv")
            self.block = Residual(layers.Conv2D(4, 3, strides=2, padding="same", name="inner"),
                                  shortcut="projection", name="block")
            self.head = layers.Dense(3, name="head")

        def call(self, x):
            return self.head(keras.ops.mean(self.block(self.conv(x)), axis=(1, 2)))

    model = Net()
    x = np.random.default_rng(0).random((2, 6, 6, 1)).astype("float32")
    model(x)
    # References: each layer applied on its own to what it receives in the forward pass.
    conv = keras.ops.convert_to_numpy(model.conv(x))
    block = keras.ops.convert_to_numpy(model.block(conv))
    shapes = _shapes(model)
    assert shapes[("", "conv")] == (None, *conv.shape[1:])
    assert shapes[("", "block")] == shapes[("branch", "inner")] == (None, *block.shape[1:])
    assert shapes[("", "head")] == (None, 3)
