"""Model builders: parameter counts and multiply-adds against the papers, shapes, fit steps, save/load."""

import keras
import numpy as np
import pytest

from keras_residual import Residual, cli
from keras_residual import models as M

# Builders are keras.layers and keras.ops only: the small ones and ResNet-50 at 64x64 are
# also built and run on JAX and PyTorch; the full-size parameter counts stay on TensorFlow.
ON_ALL_BACKENDS = pytest.mark.multibackend


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _blocks(model):
    return [lyr for lyr in model.layers if isinstance(lyr, Residual)]


# He et al. (2015), Table 1: bias-free parameters and "FLOPs".
PAPER = {
    "resnet18": (11_689_512, 1.8e9),
    "resnet34": (21_797_672, 3.6e9),
    "resnet50": (25_557_032, 3.8e9),
    "resnet101": (44_549_160, 7.6e9),
    "resnet152": (60_192_808, 11.3e9),
}


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
@pytest.mark.parametrize("name", list(PAPER))
def test_imagenet_params_and_mult_adds_match_paper(name):
    params, flops = PAPER[name]
    model = M.get_model(name, use_bias=None)
    assert _trainable(model) == params
    assert M.count_mult_adds(model) == pytest.approx(flops, rel=0.03)


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_v1_5_moves_stride_to_the_3x3():
    # stride on the 3x3 raises ResNet-50 to 4.09e9 multiply-adds.
    assert M.count_mult_adds(M.resnet50(stride_on="3x3")) == pytest.approx(4.09e9, rel=0.005)


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_resnext50_params_and_mult_adds():
    model = M.resnext50_32x4d()
    # Xie et al. (2017), Table 1: 25.0M parameters, 4.2e9 FLOPs.
    assert _trainable(model) == pytest.approx(25.0e6, rel=0.005)
    assert M.count_mult_adds(model) == pytest.approx(4.2e9, rel=0.02)


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
@pytest.mark.parametrize(
    "depth, params", [(20, 0.27e6), (110, 1.7e6)]
)
def test_cifar_resnet_params(depth, params):
    model = M.cifar_resnet(depth)
    # He et al. (2015), Table 6.
    assert _trainable(model) == pytest.approx(params, rel=0.03)
    assert len(_blocks(model)) == 3 * (depth - 2) // 6
    assert tuple(model.output.shape) == (None, 10)


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_cifar_resnet_uses_option_a():
    model = M.cifar_resnet(20)
    kinds = [b.shortcut if isinstance(b.shortcut, str) else type(b.shortcut).__name__
             for b in _blocks(model)]
    assert kinds == ["identity"] * 3 + ["ZeroPadShortcut"] + ["identity"] * 2 + [
        "ZeroPadShortcut"] + ["identity"] * 2


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_cifar_preact_resnets():
    m110 = M.cifar_preact_resnet(110, input_shape=(8, 8, 3))
    # Veit et al. (2016): the 110-layer pre-activation net has 54 modules;
    # He et al. (2016): 1.7M parameters.
    assert len(_blocks(m110)) == 54
    assert _trainable(m110) == pytest.approx(1.7e6, rel=0.03)
    assert m110.get_layer("post_bn") is not None
    # 9n+2 with bottlenecks (n = 1): 16 -> 64 -> 128 -> 256 channels.
    m11 = M.cifar_preact_resnet(11, block="bottleneck", input_shape=(8, 8, 3))
    assert [b.output.shape[-1] for b in _blocks(m11)] == [64, 128, 256]
    with pytest.raises(ValueError, match="9n\\+2"):
        M.cifar_preact_resnet(165)
    with pytest.raises(ValueError, match="6n\\+2"):
        M.cifar_resnet(21)


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_plain_twin_drops_exactly_the_shortcuts():
    plain, residual = M.plain18(), M.resnet18()
    assert {b.shortcut for b in _blocks(plain)} == {"none"}
    # The three projection shortcuts (1x1 conv + BN gamma/beta) are all ResNet-18 adds.
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in [(64, 128), (128, 256), (256, 512)])
    assert _trainable(residual) - _trainable(plain) == projections


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"include_top": False}, (None, 2, 2, 2048)),
        ({"include_top": False, "pooling": "avg"}, (None, 2048)),
        ({"include_top": False, "pooling": "max"}, (None, 2048)),
        ({"classes": 7, "classifier_activation": None}, (None, 7)),
    ],
)
def test_output_shapes(kwargs, shape):
    model = M.resnet50(input_shape=(64, 64, 3), blocks=(1, 1, 1, 1), **kwargs)
    assert tuple(model.output.shape) == shape


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_v2_layout_strides_last_block():
    model = M.resnet50_v2(input_shape=(64, 64, 3), include_top=False)
    # keras.applications: stage k's last block halves the size; stage 5 keeps it.
    sizes = {name: model.get_layer(name).output.shape[1]
             for name in ["conv2_block2", "conv2_block3", "conv4_block6", "conv5_block3"]}
    assert sizes == {"conv2_block2": 16, "conv2_block3": 8, "conv4_block6": 2, "conv5_block3": 2}
    assert isinstance(model.get_layer("conv2_block3").shortcut, keras.layers.MaxPooling2D)
    assert model.get_layer("conv3_block1").shortcut_from == "preactivated"


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_stochastic_depth_schedule_in_builder():
    model = M.resnet18(input_shape=(32, 32, 3), drop_rate=0.4)
    rates = [b.drop_rate for b in _blocks(model)]
    np.testing.assert_allclose(rates, 0.4 * np.arange(1, 9) / 8)
    one = M.build_resnet("resnet18", blocks=(1,), filters=(8,), strides=(1,),
                         input_shape=(16, 16, 3), drop_rate=0.2)
    assert [b.drop_rate for b in _blocks(one)] == [pytest.approx(0.2)]


@ON_ALL_BACKENDS
def test_builder_argument_errors():
    with pytest.raises(ValueError, match="ImageNet weights"):
        M.resnet18(weights="imagenet")
    with pytest.raises(ValueError, match="classes"):
        M.resnet50(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="pooling"):
        M.resnet18(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="Unknown stack specification"):
        M.resnet18(depth=18)
    with pytest.raises(ValueError, match="plain"):
        M.resnet18(plain=True, zero_init_last=True)


@ON_ALL_BACKENDS
def test_imagenet_weights_offline_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ValueError, match="weights='/path/to/resnet50_weights_tf_dim_ordering"):
        M.resnet50(weights="imagenet")


def _cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy, by NumPy."""
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels])))


@ON_ALL_BACKENDS
@pytest.mark.parametrize(
    "make, input_shape, classes",
    [
        (lambda: M.mnist_resnet(), (28, 28, 1), 10),
        (lambda: M.vgg_plain(input_shape=(16, 16, 3), filters=8, depth=5), (16, 16, 3), 10),
        # Without dropout: the step's loss is then a function of the weights alone.
        (lambda: M.alexnet(input_shape=(67, 67, 3), filters=(8, 8, 8, 8, 8), fc_units=16,
                           classes=5, dropout=0.0), (67, 67, 3), 5),
        (lambda: M.cifar_resnet(8), (32, 32, 3), 10),
        (lambda: M.cifar_preact_resnet(8, input_shape=(16, 16, 3)), (16, 16, 3), 10),
    ],
    ids=["mnist_resnet", "vgg_plain", "alexnet", "cifar_resnet", "cifar_preact_resnet"],
)
def test_small_models_train_their_first_step_on_the_loss_numpy_gives(make, input_shape, classes):
    """The first step's loss is NumPy's cross-entropy of the training-mode output, and ten
    more steps on the same four images (40 for AlexNet) take a fifth of it off at least."""
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, *input_shape)).astype("float32")
    y = rng.permutation(classes)[:4]
    expected = _cross_entropy(keras.ops.convert_to_numpy(model(x, training=True)), y)
    # AlexNet (no BatchNorm, 8 filters) learns slowest: more steps for it.
    steps = 41 if "alexnet" in model.name else 11
    losses = model.fit(x, y, batch_size=4, epochs=steps, shuffle=False, verbose=0).history["loss"]
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_vgg_plain_layers():
    model = M.vgg_plain()
    # Veit et al. (2016): 15 layers, 128 channels in each.
    weighted = [lyr for lyr in model.layers if isinstance(lyr, (Residual, keras.layers.Conv2D,
                                                          keras.layers.Dense))]
    assert len(weighted) == 15
    assert {b.layer.layers[0].filters for b in _blocks(model)} == {128}
    assert {b.shortcut for b in _blocks(model)} == {"none"}


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_alexnet_sizes():
    model = M.alexnet()
    # Krizhevsky et al. (2012): 55x55x96 after conv1, 13x13x256 after conv5, 6x6 after pool5.
    assert tuple(model.get_layer("conv1").output.shape) == (None, 55, 55, 96)
    assert tuple(model.get_layer("pool5").output.shape) == (None, 6, 6, 256)


@ON_ALL_BACKENDS
def test_save_and_load_built_model(tmp_path):
    model = M.cifar_resnet(8, input_shape=(16, 16, 3), drop_rate=0.1, placement="full_preact")
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert [b.drop_rate for b in _blocks(loaded)] == [b.drop_rate for b in _blocks(model)]


@ON_ALL_BACKENDS
def test_weights_path_loads_by_name(tmp_path):
    source = M.mnist_resnet()
    path = tmp_path / "mnist.weights.h5"
    source.save_weights(path)
    target = M.mnist_resnet(weights=str(path))
    x = np.random.default_rng(1).uniform(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-6)


# He et al. (2015), Table 1, ResNet-34 column (as drawn by Ruiz 2018, "Understanding and visualizing ResNets", Fig. 2).
TABLE1_RESNET34 = [
    ("conv1", "112x112", "7x7, 64, stride 2"),
    ("conv2_x", "56x56", "3x3 max pool, stride 2, [3x3, 64; 3x3, 64] x 3"),
    ("conv3_x", "28x28", "[3x3, 128; 3x3, 128] x 4"),
    ("conv4_x", "14x14", "[3x3, 256; 3x3, 256] x 6"),
    ("conv5_x", "7x7", "[3x3, 512; 3x3, 512] x 3"),
    ("head", "1x1", "global average pool, 1000-d fc, softmax"),
]


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_architecture_table_resnet34(capsys):
    table = M.architecture_table(M.resnet34())
    assert [(r.name, r.output_size, r.block_shape) for r in table.rows] == TABLE1_RESNET34
    assert sum(r.params for r in table.rows) == table.total_params
    # conv1: 7x7x3x64 kernel at 112x112 outputs.
    assert table.rows[0].mult_adds == 7 * 7 * 3 * 64 * 112 * 112
    printed = str(table)
    for name, _, shape in TABLE1_RESNET34:
        assert name in printed and shape in printed
    assert f"{table.total_params:,}" in printed.splitlines()[-1]


@ON_ALL_BACKENDS
def test_cli_summary(capsys):
    assert cli.main(["summary", "mnist_resnet", "--input-shape", "32,32,1", "--classes", "4"]) == 0
    printed = capsys.readouterr().out
    assert "conv3_x" in printed and "16x16" in printed and "4-d fc, softmax" in printed
    with pytest.raises(SystemExit):
        cli.main(["summary", "mnist_resnet", "--input-shape", "a,b"])


@ON_ALL_BACKENDS
def test_count_mult_adds_closed_form():
    inputs = keras.Input((9, 9, 8))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", groups=4)(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    grouped = 5 * 5 * 16 * (3 * 3 * 8 // 4)
    depthwise = 5 * 5 * 16 * 3 * 3
    dense = 5 * 5 * 16 * 3
    assert M.count_mult_adds(model) == grouped + depthwise + dense


@ON_ALL_BACKENDS
def test_table_needs_fixed_sizes():
    with pytest.raises(ValueError, match="input_shape"):
        M.architecture_table(M.mnist_resnet(input_shape=(None, None, 1)))


@pytest.mark.shapes_only
@ON_ALL_BACKENDS
def test_get_model_names():
    assert M.get_model("cifar_preact_resnet20", input_shape=(8, 8, 3)).name == "cifar_preact_resnet20"
    # He et al. 2016's ImageNet layout by name: projections only in the first block of a stage.
    paper = M.get_model("resnet50_v2_paper", input_shape=(32, 32, 3), classes=3)
    projected = [lyr.name for lyr in paper.layers
                 if isinstance(lyr, Residual) and lyr.shortcut != "identity"]
    assert paper.name == "resnet50_v2_paper" and M.resnet_v2_paper is M.cifar.resnet_v2_paper
    assert projected == ["conv2_block1", "conv3_block1", "conv4_block1", "conv5_block1"]
    # Same weights as keras.applications ResNet50V2 (25,613,800 with 1000 classes), other strides.
    assert paper.count_params() == 25_613_800 - (2048 * 1000 + 1000) + (2048 * 3 + 3)
    with pytest.raises(ValueError, match="Unknown model"):
        M.get_model("resnet19")
