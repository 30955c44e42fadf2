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


def test_resnet_d_shortcut_average_pools_then_projects():
    model = M.build_resnet("resnet50", stride_on="3x3", shortcut="avg_down", use_bias=None,
                           input_shape=(64, 64, 3))
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


# 101 and 152 differ from 50 only in blocks per stage; 200's (3, 12, 48, 3) is checked.
@pytest.mark.parametrize("depth", [18, 34, 50, 200])
def test_vd_params_match_keras_hub_presets(depth):
    model = getattr(M, f"resnet{depth}_vd")(input_shape=(32, 32, 3))
    assert _params(model) == _KERAS_HUB_VD_PARAMS[depth]


@pytest.mark.multibackend
@pytest.mark.parametrize("depth, block_type", [(18, "basic_block_vd"), (50, "bottleneck_block_vd")])
def test_vd_params_match_keras_hub_backbone(depth, block_type):
    keras_hub = pytest.importorskip("keras_hub")
    blocks = (2, 2, 2, 2) if depth == 18 else (3, 4, 6, 3)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[32, 32, 64], input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=list(blocks),
        stackwise_num_strides=[1, 2, 2, 2], block_type=block_type, image_shape=(64, 64, 3),
    )
    ours = getattr(M, f"resnet{depth}_vd")(input_shape=(64, 64, 3), include_top=False)
    assert _params(ours) == backbone.count_params()
    assert ours.output.shape == backbone.output.shape


def test_vd_layout():
    model = M.resnet18_vd(input_shape=(64, 64, 3), include_top=False)
    blocks = [lyr for lyr in model.layers if isinstance(lyr, Residual)]
    # keras-hub's vd nets project the first block of every stage, stage 2 included.
    assert [type(b.shortcut_layer).__name__ for b in blocks[::2]] == ["AvgDownShortcut"] * 4
    assert [b.shortcut for b in blocks[1::2]] == ["identity"] * 4
    assert [model.get_layer(f"conv1_{i}_conv").filters for i in (1, 2, 3)] == [32, 32, 64]


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


def test_vd_builders_are_registered():
    assert M.get_model("resnet50_vd", input_shape=(32, 32, 3)).name == "resnet50_vd"
