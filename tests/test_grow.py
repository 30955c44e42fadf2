"""insert_blocks: growing a trained network with identity-initialized residual blocks."""

import keras
import numpy as np
import pytest
from script_runs import SCRIPT_RUN_TORCH

from keras_residual import Residual
from keras_residual.models import build_resnet
from keras_residual.surgery import identity_block, insert_blocks
from keras_residual.surgery.grow import block_placement

multibackend = pytest.mark.multibackend


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _small_resnet():
    return build_resnet("resnet18", blocks=(2, 1), filters=(8, 16), strides=(1, 2),
                        input_shape=(16, 16, 3), classes=5, bn_momentum=0.9)


def _images(n=4):
    return np.random.default_rng(3).normal(size=(n, 16, 16, 3)).astype("float32")


@multibackend
def test_inside_a_residual_stage_predictions_unchanged_and_original_untouched():
    model = _small_resnet()
    before_weights = [w.copy() for w in model.get_weights()]
    grown = insert_blocks(model, after=["conv2_block1", "conv3_block1"])
    blocks = [lyr.name for lyr in grown.layers if isinstance(lyr, Residual)]
    assert blocks == ["conv2_block1", "conv2_block1_grown", "conv2_block2", "conv3_block1",
                      "conv3_block1_grown"]
    x = _images()
    np.testing.assert_allclose(_numpy(grown(x, training=False)), _numpy(model(x, training=False)),
                               atol=1e-6)
    # The host's placement (ResNet-18: original, ReLU after the addition): a basic block of C
    # channels is two bias-free 3x3 convs (9C^2 each) and two BNs (4C each).
    expected = sum(18 * c * c + 8 * c for c in (8, 16))
    assert grown.count_params() - model.count_params() == expected
    new = grown.get_layer("conv2_block1_grown")
    assert new.part("preactivation") is None and new.activation is keras.activations.relu
    # Fine-tuning the grown model trains the new blocks and leaves the original alone.
    grown.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    grown.fit(x, np.arange(4) % 5, epochs=1, batch_size=4, verbose=0)
    new = grown.get_layer("conv2_block1_grown")
    assert all(w.trainable for w in new.trainable_weights) and new.trainable_weights
    assert np.abs(_numpy(new.layer.get_layer("conv2_block1_grown_2_conv").kernel)).max() > 0
    for a, b in zip(before_weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(model.layers) == len(grown.layers) - 2


@multibackend
def test_inserted_blocks_follow_the_host_placement_or_say_why_not():
    x = _images(2)
    preact = build_resnet("resnet18", blocks=(1, 1), filters=(4, 8), strides=(1, 2),
                          placement="full_preact", input_shape=(16, 16, 3), classes=3)
    grown = insert_blocks(preact, after="conv2_block1")
    assert block_placement(grown.get_layer("conv2_block1_grown")) == "full_preact"
    # A post-activation host, but after the stem conv (negative outputs): relu(x + 0) != x.
    model = _small_resnet()
    with pytest.warns(UserWarning, match="'conv1_conv' outputs negative values"):
        grown = insert_blocks(model, after="conv1_conv")
    assert block_placement(grown.get_layer("conv1_conv_grown")) == "full_preact"
    np.testing.assert_allclose(_numpy(grown(x, training=False)), _numpy(model(x, training=False)),
                               atol=1e-5)
    grown = insert_blocks(model, after="conv2_block1", placement="relu_before_add")
    new = grown.get_layer("conv2_block1_grown")
    assert new.part("preactivation") is None and new.activation is keras.activations.linear
    np.testing.assert_allclose(_numpy(grown(x, training=False)), _numpy(model(x, training=False)),
                               atol=1e-5)
    with pytest.raises(ValueError, match="'bn_after_add'"):
        identity_block((4, 4, 2), placement="bn_after_add")


@multibackend
def test_plain_network_and_nested_sequential():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="tanh", name="fc1")(inputs)
    head = keras.Sequential([keras.Input((5,)), keras.layers.Dense(5, name="fc2"),
                             keras.layers.Dense(3, name="fc3")], name="head")
    model = keras.Model(inputs, head(x))
    grown = insert_blocks(model, after=["fc1", "head/fc2"])
    data = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    # Reference computed by hand with NumPy from the original weights.
    w1, b1, w2, b2, w3, b3 = model.get_weights()
    expected = (np.tanh(data @ w1 + b1) @ w2 + b2) @ w3 + b3
    np.testing.assert_allclose(_numpy(grown(data)), expected, rtol=1e-5, atol=1e-5)
    names = [lyr.name for lyr in grown.layers]
    assert "fc1_grown" in names and names.index("fc1_grown") == names.index("fc1") + 1
    nested = [lyr for lyr in grown.layers if isinstance(lyr, keras.Model)][0]
    assert [lyr.name for lyr in nested.layers if not isinstance(lyr, keras.layers.InputLayer)] \
        == ["fc2", "fc2_grown", "fc3"]


@multibackend
def test_conv_layer_of_a_plain_cnn_and_growing_twice():
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="out"),
    ])
    once = insert_blocks(model, after="conv")
    twice = insert_blocks(once, after="conv")
    names = [lyr.name for lyr in twice.layers]
    assert names[names.index("conv") + 1: names.index("conv") + 3] == ["conv_grown2", "conv_grown"]
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(_numpy(twice(x)), _numpy(model(x)), atol=1e-6)


@multibackend
def test_custom_rezero_block_and_a_block_that_is_not_the_identity():
    model = _small_resnet()

    def rezero(shape):
        return Residual(keras.layers.Conv2D(shape[-1], 3, padding="same"), merge="rezero",
                        name="rezero_block")

    grown = insert_blocks(model, after=["conv2_block2"], make_block=rezero)
    assert "rezero_block" in [lyr.name for lyr in grown.layers]
    with pytest.raises(ValueError, match="change the predictions"):
        insert_blocks(model, after=["conv2_block2"],
                      make_block=lambda shape: Residual(keras.layers.Conv2D(shape[-1], 1)))


@multibackend
def test_paths_that_cannot_take_a_block():
    model = _small_resnet()
    with pytest.raises(ValueError, match="Insert after 'conv2_block1' itself"):
        insert_blocks(model, after=["conv2_block1/branch/conv2_block1_1_conv"])
    with pytest.raises(ValueError, match="no layer named"):
        insert_blocks(model, after=["nope"])
    with pytest.raises(ValueError, match="at least one"):
        insert_blocks(model, after=[])


@multibackend
@pytest.mark.parametrize("shape", [(7,), (9, 4), (6, 6, 3), (4, 4, 4, 2)])
def test_identity_block_of_every_rank_outputs_its_input(shape):
    block = identity_block(shape)
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype("float32")
    np.testing.assert_array_equal(_numpy(block(x)), x)
    assert block.trainable_weights


@SCRIPT_RUN_TORCH
@pytest.mark.slow
def test_grow_example_quick(tmp_path, capsys):
    import importlib.util
    import json
    import os
    import sys

    from keras_residual.graph import walk

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "grow.py")
    spec = importlib.util.spec_from_file_location("example_grow", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    results = module.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "grow_results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(results)) and len(results) == 1
    r = results[0]
    assert r["accuracy_at_insertion"] == r["accuracy_shallow"]
    assert r["params_deep"] > r["params_shallow"]
    # Compute per step: 3 passes x 64 images x multiply-adds. The two inserted blocks are two
    # 3x3 convs each, 4 -> 4 channels on 28x28 and 8 -> 8 on 14x14 (quick widths), counted by hand.
    per_image = 2 * 28 * 28 * 9 * 4 * 4 + 2 * 14 * 14 * 9 * 8 * 8
    cost = r["mult_adds_per_step"]
    assert cost["deep"] - cost["shallow"] == 3 * 64 * per_image
    steps = saved["steps_each"]
    assert r["equal_compute_steps"] == round(steps * (cost["shallow"] + cost["deep"]) / cost["deep"])
    for route in ("grown", "grown_carried"):  # the shallow phase, then the grown one
        curve = r["curves"][route]
        assert curve["steps"] == [steps, 2 * steps]
        assert curve["mult_adds"] == [steps * cost["shallow"], steps * (cost["shallow"] + cost["deep"])]
        assert curve["accuracy"][0] == r["accuracy_shallow"]
        assert r["equal_compute"][route] == curve["accuracy"][-1] == r[f"accuracy_{route}"]
    for route in ("scratch", "scratch_standard"):
        curve = r["curves"][route]
        assert curve["steps"] == [steps, r["equal_compute_steps"], 2 * steps]
        assert curve["mult_adds"] == [s * cost["deep"] for s in curve["steps"]]
        assert r["equal_compute"][route] == curve["accuracy"][1]
    assert (tmp_path / "grow.png").is_file()
    assert "equal compute" in capsys.readouterr().out
    # The standard-initialized baseline: every BN scale of the inserted blocks at one (Keras'
    # default), so the deep net no longer predicts what the shallow one does.
    shallow = module.mnist_resnet(blocks=(1, 1), filters=(4, 8))
    deep = module.standard_init(insert_blocks(shallow, after=list(module.GROW_AFTER)), seed=0)
    gammas = [_numpy(layer.gamma) for block in module.GROW_AFTER
              for layer in walk(deep.get_layer(f"{block}_grown"))
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(gammas) == 4 and all(np.array_equal(g, np.ones_like(g)) for g in gammas)
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype="float32")
    assert np.abs(_numpy(deep(x)) - _numpy(shallow(x))).max() > 1e-4


@multibackend
def test_carry_optimizer_keeps_adam_moments_and_the_next_step_of_the_old_weights():
    from keras import layers

    from keras_residual.graph import variable_paths
    from keras_residual.surgery import carry_optimizer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = layers.Dense(6, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, layers.Dense(3, name="out")(hidden))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(0.01), loss=loss, run_eagerly=True)  # tiny: no tracing
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, 16)
    x2, y2 = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 3, 16)
    for _ in range(3):
        model.train_on_batch(x, y)
    before = {v.name: _numpy(v).copy() for v in model.optimizer.variables}

    grown = insert_blocks(model, after=["fc1"])
    optimizer = carry_optimizer(model.optimizer, model, grown)
    # Keras names an Adam slot "{variable.path, '/' -> '_'}_{momentum|velocity}".
    after = {v.name: _numpy(v) for v in optimizer.variables}
    old_paths, new_paths = variable_paths(model), variable_paths(grown)
    assert int(optimizer.iterations) == int(before["iteration"][()]) == 3
    for path, new in new_paths.items():
        if not new.trainable:
            continue
        for slot in ("momentum", "velocity"):
            got = after[f"{new.path.replace('/', '_')}_{slot}"]
            if path in old_paths:
                want = before[f"{old_paths[path].path.replace('/', '_')}_{slot}"]
                assert np.abs(want).max() > 0
                np.testing.assert_array_equal(got, want)
            else:  # an inserted block's variable: a fresh slot
                np.testing.assert_array_equal(got, np.zeros(new.shape))

    # At insertion the new block is the identity with a zero last layer, so the old weights'
    # gradients are the ungrown model's: with the carried state they take the ungrown step.
    fresh = insert_blocks(model, after=["fc1"])
    grown.compile(optimizer, loss=loss, run_eagerly=True)
    fresh.compile(keras.optimizers.Adam(0.01), loss=loss, run_eagerly=True)
    grown.train_on_batch(x2, y2)
    fresh.train_on_batch(x2, y2)
    model.train_on_batch(x2, y2)
    moved = {p: _numpy(v) for p, v in variable_paths(model).items()}
    grown_after, fresh_after = variable_paths(grown), variable_paths(fresh)
    for path, want in moved.items():
        np.testing.assert_allclose(_numpy(grown_after[path]), want, atol=1e-6)
    assert max(np.abs(_numpy(fresh_after[p]) - w).max() for p, w in moved.items()) > 1e-3
