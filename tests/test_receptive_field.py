"""Receptive fields against the empirical field of every unit of untrained networks.

The empirical field of a unit is the set of input pixels that change it: an
input of ones, then one copy per pixel with that pixel raised by 100. With
all-ones kernels and zero biases every activation is positive, so each pixel
of the field moves the unit (through max pooling too), and pixels outside it
cannot. The bounding box of that set must equal the computed box clipped to
the image.
"""

import keras
import numpy as np
import pytest
from keras import layers

from keras_residual import AvgDownShortcut, ProjectionShortcut, Residual
from keras_residual.viz.receptive_field import (
    ReceptiveField,
    receptive_field,
    receptive_fields,
)

# The field is shape arithmetic; the empirical check of "same" padding (even
# kernels, strides, odd sizes) and of residual blocks also runs on JAX and torch.
ON_ALL_BACKENDS = pytest.mark.multibackend
pytestmark = ON_ALL_BACKENDS

ONES = {"kernel_initializer": "ones", "bias_initializer": "zeros"}


def conv(filters, kernel, **kwargs):
    return layers.Conv2D(filters, kernel, **ONES, **kwargs)


def empirical_boxes(model, path_model, size):
    """Bounding box (top, left, bottom, right) of the pixels that move each unit."""
    h, w = size
    base = np.ones((1, h, w, 1), "float32")
    bumped = np.repeat(base, h * w, axis=0)
    bumped[np.arange(h * w), np.arange(h * w) // w, np.arange(h * w) % w, 0] += 100.0
    out = keras.ops.convert_to_numpy(path_model(np.concatenate([base, bumped]), training=False))
    moved = np.abs(out[1:, ..., 0] - out[:1, ..., 0]) > 1.0  # (h*w, rows, cols)
    boxes = {}
    for row in range(out.shape[1]):
        for col in range(out.shape[2]):
            pixels = np.flatnonzero(moved[:, row, col])
            rows, cols = pixels // w, pixels % w
            boxes[row, col] = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    return boxes


def check_against_empirical(model, path):
    from keras_residual.probe import probe

    size = tuple(model.inputs[0].shape[1:3])
    field = receptive_field(model, path)
    boxes = empirical_boxes(model, probe(model, path), size)
    for (row, col), box in boxes.items():
        top, left, bottom, right = field.box(row, col)
        clipped = (max(top, 0), max(left, 0), min(bottom, size[0]), min(right, size[1]))
        assert box == clipped, (path, row, col, field)
    return field


def strided_dilated():
    inputs = keras.Input((19, 19, 1))
    x = conv(2, 3, strides=2, padding="same", name="s2_same")(inputs)
    x = conv(2, 3, dilation_rate=2, padding="valid", name="dilated")(x)
    x = conv(2, (2, 3), strides=(2, 1), padding="same", name="even_kernel")(x)
    return keras.Model(inputs, x)


def applications_stem():
    """keras.applications ResNet stem: explicit padding, valid convs and pooling."""
    inputs = keras.Input((21, 21, 1))
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = conv(2, 7, strides=2, name="conv1_conv")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = layers.AveragePooling2D(2, padding="same", name="avg")(x)
    return keras.Model(inputs, x)


def residual_net():
    """A strided bottleneck with a projection, a nested Residual, cropping and separable convs."""
    inner = Residual(conv(3, 3, padding="same", name="inner_conv"), activation="relu", name="inner")
    branch = keras.Sequential(
        [
            conv(3, 1, name="b1"),
            conv(3, 3, strides=2, padding="same", name="b2"),
            inner,
            conv(4, 1, name="b3"),
        ],
        name="branch",
    )
    inputs = keras.Input((17, 17, 1))
    x = conv(2, 3, padding="same", name="stem")(inputs)
    x = Residual(
        branch,
        shortcut=ProjectionShortcut(batchnorm=True, kernel_initializer="ones"),
        activation="relu",
        name="block",
    )(x)
    x = layers.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    x = layers.SeparableConv2D(2, 3, padding="same", depthwise_initializer="ones",
                               pointwise_initializer="ones", name="sep")(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def models():
    """The test networks, built once (they are only read)."""
    return {"strided": strided_dilated(), "stem": applications_stem(), "residual": residual_net()}


@pytest.mark.parametrize(
    "path", ["s2_same", "dilated", pytest.param("even_kernel", marks=ON_ALL_BACKENDS)]
)
def test_strided_dilated_same_valid(models, path):
    check_against_empirical(models["strided"], path)


@pytest.mark.parametrize("path", ["conv1_conv", "pool1_pool", "avg"])
def test_applications_stem(models, path):
    field = check_against_empirical(models["stem"], path)
    if path == "pool1_pool":  # the textbook ResNet value: 11 pixels, stride 4
        assert field == ReceptiveField((11, 11), (4, 4), (-5, -5))


@pytest.mark.parametrize(
    "path",
    [
        "block/branch/b2",
        "block/branch/inner/branch",
        pytest.param("block", marks=ON_ALL_BACKENDS),
        "block/shortcut",
        "sep",
    ],
)
def test_residual_blocks(models, path):
    check_against_empirical(models["residual"], path)


def test_shortcut_wider_than_branch():
    """ResNet-D shortcut (2x2 average pool) around a strided 1x1 branch: the shortcut sets the field."""
    inputs = keras.Input((9, 9, 1))
    x = Residual(
        conv(2, 1, strides=2, name="b"),
        shortcut=AvgDownShortcut(kernel_initializer="ones"),
        name="block",
    )(inputs)
    field = check_against_empirical(keras.Model(inputs, x), "block")
    assert field.size == (2, 2)


def test_block_field_is_union_of_paths(models):
    fields = receptive_fields(models["residual"])
    branch, shortcut, block = fields["block/branch"], fields["block/shortcut"], fields["block"]
    assert block.jump == branch.jump == shortcut.jump
    assert block.size == branch.size and block.offset == branch.offset
    assert shortcut.size == fields["block/input"].size  # a 1x1 projection adds nothing
    assert fields["block/branch/b2/input"] == fields["block/branch/b1"]


def test_box_and_center():
    field = ReceptiveField(size=(7, 5), jump=(2, 4), offset=(-3, -1))
    assert field.box(2, 1) == (1, 3, 8, 8)
    assert field.center(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="one index per axis"):
        field.box(1)


def test_unsupported_layers_raise_only_when_needed():
    inputs = keras.Input((8, 8, 1))
    x = conv(2, 3, name="c")(inputs)
    y = layers.Lambda(lambda t: t * 2, name="lam")(x)
    z = layers.Flatten(name="flat")(x)
    model = keras.Model(inputs, [y, z])
    assert receptive_field(model, "c").size == (3, 3)
    with pytest.raises(ValueError, match="'lam' \\(Lambda\\) is unknown"):
        receptive_field(model, "lam")
    with pytest.raises(ValueError, match="no spatial positions"):
        receptive_field(model, "flat")
    with pytest.raises(ValueError, match="no layer named"):
        receptive_field(model, "missing")


@pytest.fixture(scope="module")
def applications_resnet50():
    # A field is shape arithmetic: it does not depend on the image size.
    return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))


def test_keras_applications_resnet50(applications_resnet50):
    """keras.applications ResNet-50 against the closed form: after the 11-pixel stem, each
    3x3 conv adds 2 jumps, and each stage's first 1x1 conv doubles the jump."""
    fields = receptive_fields(applications_resnet50)
    size, jump = 11, 4
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3), strict=True):
        jump *= 1 if stage == 2 else 2
        size += blocks * 2 * jump
        field = fields[f"conv{stage}_block{blocks}_out"]
        assert field == ReceptiveField((size, size), (jump, jump), (-(size // 2),) * 2)
    assert size == 483  # the last stage sees 483 x 483 pixels, more than a 224 x 224 image


def test_residual_resnet50_matches_flat_keras_applications(applications_resnet50):
    """Our ResNet-50 nests each block's layers in a Residual; keras.applications' is flat.
    Every layer both have (`conv3_block2_2_conv` vs `conv3_block2/branch/conv3_block2_2_conv`,
    `conv3_block2_out` vs `conv3_block2`) must have the same field."""
    from keras_residual.models import resnet50

    ours = receptive_fields(resnet50(weights=None, input_shape=(64, 64, 3)))
    flat = receptive_fields(applications_resnet50)
    compared = 0
    for path, field in ours.items():
        name = path.split("/")[-1]
        name = f"{name}_out" if f"{name}_out" in flat and "/" not in path else name
        if name in flat and name != "input":
            assert field == flat[name], path
            compared += 1
    assert compared > 100
