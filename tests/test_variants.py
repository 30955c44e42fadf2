"""ResNet-B/C/D (He et al. 2019, "Bag of Tricks", Sec. 4.1) and keras-hub's ResNet-vd family."""

import math

import keras
import numpy as np
import pytest

from keras_residual import AvgDownShortcut, Residual
from keras_residual import models as M
from keras_residual.models.imagenet import NegInfPadding2D


def _params(model, trainable_only=False):
    # Lesion-ready blocks may own a bookkeeping variable; count the network's weights.
    return sum(
        math.prod(w.shape) for w in model.weights
        if "lesion_state" not in w.path and (w.trainable or not trainable_only)
    )


# He et al. (2019), Table 5: FLOPs (multiply-adds) in billions, 25M parameters each
# (ResNet-50 itself, 3.8e9, is checked in test_models.py).
_TABLE5 = {
    "ResNet-50-B": ({"stride_on": "3x3"}, 4.1e9),
    "ResNet-50-C": ({"stride_on": "3x3", "stem": "deep"}, 4.3e9),
    "ResNet-50-D": ({"stride_on": "3x3", "stem": "deep", "shortcut": "avg_down"}, 4.3e9),
}


@pytest.mark.shapes_only
@pytest.mark.multibackend
def test_bag_of_tricks_table5_flops_and_params():
    counts = {}
    for variant, (tweaks, flops) in _TABLE5.items():
        model = M.build_resnet("resnet50", use_bias=None, **tweaks)
        counts[variant] = M.count_mult_adds(model)
        assert counts[variant] == pytest.approx(flops, rel=0.03), variant
        assert int(_params(model, trainable_only=True) / 1e6) == 25, variant
    # ResNet-C: 7x7x3x64 replaced by 3x3x3x32, 3x3x32x32, 3x3x32x64 at 112x112 outputs.
    deep, seven = 112 * 112 * 9 * (3 * 32 + 32 * 32 + 32 * 64), 112 * 112 * 49 * 3 * 64
    assert counts["ResNet-50-C"] - counts["ResNet-50-B"] == deep - seven
    # ResNet-D: the pooled 1x1 projection has the strided one's output size and cost.
    assert counts["ResNet-50-D"] == counts["ResNet-50-C"]
    table = M.architecture_table(model)
    assert table.rows[0].block_shape == "3x3, 32, stride 2, 3x3, 32, 3x3, 64"
    assert table.rows[0].output_size == "112x112"
    # The new kernels and three BNs (4 variables per channel).
    assert table.rows[0].params == 9 * (3 * 32 + 32 * 32 + 32 * 64) + 4 * (32 + 32 + 64)


@pytest.mark.multibackend
def test_resnet_d_shortcut_average_pools_then_projects():
    model = M.build_resnet("resnet50", stride_on="3x3", shortcut="avg_down", use_bias=None,
                           input_shape=(64, 64, 3), blocks=(1, 1, 1, 1))
    shortcut = model.get_layer("conv3_block1").shortcut_layer
    assert isinstance(shortcut, AvgDownShortcut)
    assert shortcut.pool.pool_size == (2, 2) and tuple(shortcut.proj.strides) == (1, 1)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 256)).astype("float32")
    expected = x.reshape(1, 8, 2, 8, 2, 256).mean(axis=(2, 4)) @ keras.ops.convert_to_numpy(
        shortcut.proj.kernel)[0, 0]
    bn = shortcut.bn
    expected = (expected - keras.ops.convert_to_numpy(bn.moving_mean)) / np.sqrt(
        keras.ops.convert_to_numpy(bn.moving_variance) + bn.epsilon)
    got = keras.ops.convert_to_numpy(shortcut(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# keras-hub's published preset metadata (1000-way classifier included, BN statistics counted).
_KERAS_HUB_VD_PARAMS = {
    18: 11_722_824, 34: 21_838_408, 50: 25_629_512, 101: 44_673_864, 152: 60_363_592,
    200: 74_933_064,
}


@pytest.mark.multibackend
# 101 and 152 differ from 50 only in blocks per stage; 200's (3, 12, 48, 3) is checked.
@pytest.mark.shapes_only
@pytest.mark.parametrize("depth", [18, 34, 50, 200])
def test_vd_params_match_keras_hub_presets(depth):
    model = getattr(M, f"resnet{depth}_vd")(input_shape=(32, 32, 3))
    assert _params(model) == _KERAS_HUB_VD_PARAMS[depth]


# Each of our variants against keras-hub's `ResNetBackbone` of the same configuration, by
# outputs. Blocks (2, 1, 1, 1): stage 2 holds an identity block after its first one, stages
# 3-5 a strided first block each. 48x48 inputs make stage 5's input 3x3, odd: the strided
# convs' and the average-pool shortcuts' padding must match keras-hub's too.
_SIZE = 48
_STAGES = dict(stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[2, 1, 1, 1],
               stackwise_num_strides=[1, 2, 2, 2])
_SEVEN = dict(input_conv_filters=[64], input_conv_kernel_sizes=[7])
_DEEP = dict(input_conv_filters=[32, 32, 64], input_conv_kernel_sizes=[3, 3, 3])
# name: (our builder and its arguments, keras-hub's stem and block type). keras-hub's
# BatchNormalization epsilon is 1e-5 (ours defaults to keras.applications' 1.001e-5).
_HUB_VARIANTS = {
    # keras-hub's vd nets: ResNet-B + C + D, the first block of every stage projected.
    "resnet18_vd": (M.resnet18_vd, {}, _DEEP, "basic_block_vd"),
    "resnet50_vd": (M.resnet50_vd, {}, _DEEP, "bottleneck_block_vd"),
    # ResNet-v1.5 = ResNet-B (He et al. 2019, Fig. 2a): the bottleneck strides on its 3x3.
    "resnet50 v1.5 (ResNet-B)": (M.resnet50, {"stride_on": "3x3", "use_bias": None}, _SEVEN,
                                 "bottleneck_block"),
    # ResNet-C: ResNet-B with the deep stem.
    "ResNet-C": (M.resnet50, {"stride_on": "3x3", "use_bias": None, "stem": "deep"}, _DEEP,
                 "bottleneck_block"),
    # ResNet-D without the deep stem: ResNet-B with average-pool shortcuts.
    "ResNet-D (7x7 stem)": (M.resnet50, {"stride_on": "3x3", "use_bias": None,
                                         "shortcut": "avg_down"}, _SEVEN, "bottleneck_block_vd"),
    # Basic blocks have no 1x1 to stride on: ResNet-18 is keras-hub's v1.5 basic_block net.
    "resnet18 (v1.5 basic)": (M.resnet18, {}, _SEVEN, "basic_block"),
}


def _randomize_all(model, seed=0):
    """Random BatchNorm scales, offsets and statistics in every layer (kernels: their init).

    Fresh statistics (mean 0, variance 1, scale 1, offset 0) are the same in every layer, so
    one copied to the wrong layer would go unnoticed; random ones differ layer by layer.
    """
    rng = np.random.default_rng(seed)
    count = 0
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif variable.name in ("beta", "moving_mean"):
            variable.assign(rng.normal(0.0, 0.2, shape).astype("float32"))
        else:
            continue
        count += 1
    assert count == 4 * sum(v.name == "moving_mean" for v in model.weights) > 0


def _hub_pair(variant):
    """(ours, keras-hub's backbone): ours random, its every weight copied into keras-hub's."""
    import keras_hub  # required in the test environment: a missing keras-hub fails

    from keras_residual.models.hub import to_keras_hub

    build, overrides, stem, block_type = _HUB_VARIANTS[variant]
    keras.utils.set_random_seed(0)
    ours = build(include_top=False, input_shape=(_SIZE, _SIZE, 3), blocks=(2, 1, 1, 1),
                 bn_epsilon=1e-5, **overrides)
    _randomize_all(ours)
    hub = keras_hub.models.ResNetBackbone(**stem, **_STAGES, block_type=block_type,
                                          image_shape=(_SIZE, _SIZE, 3))
    assert _params(ours) == hub.count_params()
    # Layer by layer, by name (keras-hub's stack{s}_block{b}_{k}_conv is our
    # conv{s+2}_block{b+1}_{k}_conv); it raises if a layer on either side has no counterpart.
    to_keras_hub(ours, hub)
    return ours, hub


def _max_difference(ours, hub):
    x = np.random.default_rng(1).uniform(-1, 1, (2, _SIZE, _SIZE, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(hub(x, training=False))
    got = keras.ops.convert_to_numpy(ours(x, training=False))
    assert got.shape == expected.shape
    # Non-degenerate: the features vary across images, positions and channels.
    assert expected.std() > 1.0 and np.abs(expected[0] - expected[1]).max() > 1.0
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


@pytest.mark.multibackend
@pytest.mark.parametrize("variant", list(_HUB_VARIANTS))
def test_variant_outputs_match_keras_hub_backbone(variant):
    ours, hub = _hub_pair(variant)
    difference, scale = _max_difference(ours, hub)
    assert difference <= 1e-5 * scale, (variant, difference, scale)


@pytest.mark.multibackend
def test_keras_hub_comparison_catches_a_weight_in_the_wrong_layer():
    # The check above can fail: one BatchNorm scale copied to the wrong (same-shaped) layer.
    ours, hub = _hub_pair("resnet50_vd")
    right, wrong = hub.get_layer("stack0_block1_1_bn"), hub.get_layer("stack0_block1_2_bn")
    wrong.gamma.assign(keras.ops.convert_to_numpy(right.gamma))
    difference, scale = _max_difference(ours, hub)
    assert difference > 1e-3 * scale


@pytest.mark.shapes_only
@pytest.mark.multibackend
def test_vd_layout():
    model = M.resnet18_vd(input_shape=(64, 64, 3), include_top=False)
    blocks = [lyr for lyr in model.layers if isinstance(lyr, Residual)]
    # keras-hub's vd nets project the first block of every stage, stage 2 included.
    assert [type(b.shortcut_layer).__name__ for b in blocks[::2]] == ["AvgDownShortcut"] * 4
    assert [b.shortcut for b in blocks[1::2]] == ["identity"] * 4
    assert [model.get_layer(f"conv1_{i}_conv").filters for i in (1, 2, 3)] == [32, 32, 64]


@pytest.mark.shapes_only
@pytest.mark.multibackend
def test_project_first_per_stage_and_errors():
    model = M.build_resnet("resnet18", blocks=(1, 1), filters=(64, 64), strides=(1, 2),
                           project_first=(False, True), input_shape=(32, 32, 3))
    assert model.get_layer("conv2_block1").shortcut == "identity"
    assert model.get_layer("conv3_block1").shortcut_layer is not None
    with pytest.raises(ValueError, match="project_first"):
        M.build_resnet("resnet18", project_first=(True,))
    with pytest.raises(ValueError, match="stem_pool_padding"):
        M.build_resnet("resnet18", stem_pool_padding="ones")
    with pytest.raises(ValueError, match="stem_widths"):
        M.build_resnet("resnet18", stem="deep", stem_widths=())


@pytest.mark.multibackend
def test_neg_inf_padding_max_pool_ignores_padding():
    x = -np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    y = keras.layers.MaxPooling2D(3, strides=2)(NegInfPadding2D(1)(x))
    # Windows start at -1: rows/cols {0,1}, {1,2,3}; the max of negative values.
    expected = np.array([[-1.0, -2.0], [-5.0, -6.0]]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y), expected)


@pytest.mark.shapes_only
@pytest.mark.multibackend
def test_vd_builders_are_registered():
    assert M.get_model("resnet50_vd", input_shape=(32, 32, 3)).name == "resnet50_vd"
