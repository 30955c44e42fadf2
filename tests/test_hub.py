"""from_keras_hub / to_keras_hub: keras-hub ResNets as `Residual` blocks, same outputs."""

import sys

import keras
import keras_hub  # noqa: E402  (in the test extra: missing, the suite fails)
import numpy as np
import pytest

from keras_residual import Residual
from keras_residual.models import hub as hub_lib

multibackend = pytest.mark.multibackend

BLOCK_TYPES = ["basic_block", "bottleneck_block", "basic_block_vd", "bottleneck_block_vd"]


def _backbone(block_type, preact, seed=0):
    # keras-hub's vd blocks with pre-activation project the un-pooled input, which fails in
    # keras-hub itself for strided stages, so that combination is tested without strides.
    strides = [1, 1] if (preact and block_type.endswith("_vd")) else [1, 2]
    deep = block_type.endswith("_vd")
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[32, 32, 64] if deep else [64],
        input_conv_kernel_sizes=[3, 3, 3] if deep else [7],
        stackwise_num_filters=[64, 32], stackwise_num_blocks=[2, 1],
        stackwise_num_strides=strides, block_type=block_type,
        use_pre_activation=preact, image_shape=(32, 32, 3),
    )
    rng = np.random.default_rng(seed)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0, 0.2, n))
            layer.moving_mean.assign(rng.normal(0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))
    return backbone


def _images(n=2):
    return np.random.default_rng(1).uniform(-1, 1, (n, 32, 32, 3)).astype("float32")


@multibackend
@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize("block_type", BLOCK_TYPES)
def test_every_block_type_converts_with_the_same_outputs(block_type, preact):
    backbone = _backbone(block_type, preact)
    ours = hub_lib.from_keras_hub(backbone, check=False)
    x = _images()
    expected = keras.ops.convert_to_numpy(backbone(x, training=False))
    got = keras.ops.convert_to_numpy(ours(x, training=False))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(expected).max() > 0.1  # a real signal, not all zeros
    blocks = [lyr for lyr in ours.layers if isinstance(lyr, Residual)]
    assert [b.name for b in blocks] == ["conv2_block1", "conv2_block2", "conv3_block1"]
    # Same number of weights: nothing left over on either side.
    ours_count = sum(int(np.prod(w.shape)) for w in ours.weights if "lesion_state" not in w.path)
    assert ours_count == backbone.count_params()


@multibackend
def test_weights_are_matched_by_structure_not_order():
    backbone = _backbone("bottleneck_block_vd", False)
    ours = hub_lib.from_keras_hub(backbone, check=False)
    block = ours.get_layer("conv3_block1")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(block.shortcut_layer.proj.kernel),
        keras.ops.convert_to_numpy(backbone.get_layer("stack1_block0_0_conv").kernel),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(block.layer.get_layer("conv3_block1_2_bn").moving_mean),
        keras.ops.convert_to_numpy(backbone.get_layer("stack1_block0_2_bn").moving_mean),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ours.get_layer("conv1_2_conv").kernel),
        keras.ops.convert_to_numpy(backbone.get_layer("conv2_conv").kernel),
    )


@multibackend
def test_classifier_head_converts():
    backbone = _backbone("basic_block", True)
    classifier = keras_hub.models.ImageClassifier(backbone=backbone, num_classes=5)
    ours = hub_lib.from_keras_hub(classifier, include_top=True)
    x = _images()
    expected = keras.ops.convert_to_numpy(classifier(x, training=False))
    got = keras.ops.convert_to_numpy(ours(x, training=False))
    assert got.shape == (2, 5)
    assert np.abs(got - expected).max() < 1e-4
    with pytest.raises(ValueError, match="include_top=True needs"):
        hub_lib.from_keras_hub(backbone, include_top=True)


@multibackend
def test_reverse_direction_fills_a_fresh_backbone():
    source = _backbone("bottleneck_block", False, seed=0)
    ours = hub_lib.from_keras_hub(source)
    fresh = _backbone("bottleneck_block", False, seed=7)
    x = _images()
    before = keras.ops.convert_to_numpy(fresh(x, training=False))
    hub_lib.to_keras_hub(ours, fresh)
    expected = keras.ops.convert_to_numpy(source(x, training=False))
    after = keras.ops.convert_to_numpy(fresh(x, training=False))
    assert np.abs(before - expected).max() > 1e-2
    assert np.abs(after - expected).max() < 1e-4


@multibackend
def test_preset_that_cannot_download_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(ValueError, match="network access"):
        hub_lib.from_keras_hub("resnet_50_imagenet")


@multibackend
def test_errors_name_what_was_received(monkeypatch):
    with pytest.raises(TypeError, match="Received: Dense"):
        hub_lib.from_keras_hub(keras.layers.Dense(2))
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    with pytest.raises(ImportError, match=r"keras-residual\[hub\]"):
        hub_lib.from_keras_hub("resnet_50_imagenet")


@multibackend
def test_load_keras_hub_classifier_reads_a_preset_folder_and_its_preprocessing(tmp_path):
    """A preset folder written by keras-hub's own `save_to_preset` (what a download
    leaves in the cache): nothing mocked, no network."""
    backbone = _backbone("bottleneck_block", False)
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=[1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)],
        offset=[-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3,
                                                        preprocessor=preprocessor)
    classifier.save_to_preset(str(tmp_path / "preset"))
    model, preprocess = hub_lib.load_keras_hub_classifier(str(tmp_path / "preset"))
    images = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    # ImageNet mean and standard deviation of pixels in [0, 1], by hand.
    expected_inputs = (images / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(preprocess(images), expected_inputs, rtol=1e-4, atol=1e-4)
    expected = keras.ops.convert_to_numpy(classifier.predict(images, verbose=0))
    got = keras.ops.convert_to_numpy(model(preprocess(images), training=False))
    assert np.abs(got - expected).max() < 1e-4 and np.abs(expected).max() > 1e-3


def _example(name):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@multibackend
def test_examples_say_when_a_preset_cannot_be_downloaded(monkeypatch, tmp_path, capsys):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.ImageClassifier, "from_preset", offline)
    lesion = _example("lesion_study")
    assert lesion.main(["--keras-hub", "resnet_50_imagenet", "--out", str(tmp_path)]) == 1
    assert "network access" in capsys.readouterr().out
    visualize = _example("visualize_imagenet")
    with pytest.raises(SystemExit, match="network access"):
        visualize.main(["--keras-hub", "resnet_50_imagenet", "--out", str(tmp_path),
                        "--crops", "2", "--size", "32"])


@pytest.mark.backends("tensorflow", reason="a lesion study on a 224x224 network (20 s); the conversion and the studies run on every backend elsewhere")
def test_lesion_example_runs_on_a_converted_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[2, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(224, 224, 3))
    classifier = keras_hub.models.ImageClassifier(backbone=backbone, num_classes=4)
    model = hub_lib.from_keras_hub(classifier, include_top=True)
    figures = _example("lesion_study").keras_hub_studies(
        model, lambda images: images / 255.0, "tiny", str(tmp_path), None, crops=4, samples=1)
    assert [path for _, path in figures] == ["lesion_single.png", "lesion_k_blocks.png"]
    assert all((tmp_path / path).exists() for _, path in figures)


@multibackend
def test_visualize_example_finds_its_paths_in_any_preset_layout():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[32, 32, 64], input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 32, 32, 32], stackwise_num_blocks=[1, 1, 1, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block_vd",
        image_shape=(64, 64, 3))
    model = hub_lib.from_keras_hub(backbone)
    blocks, fig7, conv1, last = _example("visualize_imagenet").hub_paths(model, "conv3")
    assert blocks == ["conv3_block1"]
    assert fig7 == ["conv5_block1", "conv5_block2/branch/conv5_block2_3_conv", "conv5_block2"]
    assert (conv1, last) == ("conv1_1_conv", "conv5_block2")
