"""viz.atlas and `keras-residual atlas`: the numbers on the pages against NumPy, and the site.

The atlas only lays out what other functions compute, so the tests recompute
its numbers another way: a NumPy forward pass of the same small network for
the deletion errors and the top-k sets (Veit et al. 2016, Fig. 3; Chu et al.
2017, Sec. 3), the closed-form chance level k^2/N, and keras-hub's own
backbone outputs for a converted ResNet. The site is opened in headless
Chromium from disk in tests/test_browser.py.
"""

import json
import os
import re
from html.parser import HTMLParser
from urllib.parse import unquote

import keras
import numpy as np
import pytest

from keras_residual import Residual
from keras_residual.viz.atlas import atlas, page_name

N = 40


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])


def site_files(out_dir: str) -> tuple[list[str], dict[str, _Links]]:
    """Every page reachable from index.html, and the links and images of each."""
    pages, todo = {}, ["index.html"]
    while todo:
        name = todo.pop()
        if name in pages:
            continue
        parser = _Links()
        parser.feed(open(os.path.join(out_dir, name), encoding="utf-8").read())
        pages[name] = parser
        todo += [unquote(h) for h in parser.links if h.endswith(".html")]
    return sorted(pages), pages


def small_model(depth=2):
    """Stem, two identity blocks at 8x8 (stage 1), pooling, one block at 4x4 (stage 2), head."""
    inputs = keras.Input((8, 8, depth))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    for name in ("b1", "b2"):
        x = Residual(keras.layers.Conv2D(4, 3, padding="same", name=f"{name}_conv"),
                     activation="relu", name=name)(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = Residual(keras.layers.Conv2D(4, 3, padding="same", name="b3_conv"), activation="relu",
                 name="b3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-degenerate weights: every block matters
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


def balance(model, images):
    """Set the head's bias so the classes' logits have mean 0 over `images` (not one class)."""
    kernel, bias = model.get_layer("head").get_weights()
    _, logits = numpy_forward(model, images)
    model.get_layer("head").set_weights([kernel, bias - logits.mean(axis=0)])
    return model


def _conv_same(x, kernel, bias):
    """3x3 'same' convolution, NHWC, in NumPy."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


def numpy_forward(model, x, deleted=None):
    """Block outputs and logits of `small_model` in NumPy; `deleted` block keeps its shortcut."""
    w = {layer.name: layer.get_weights() for layer in model.layers}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    outputs = {}
    h = relu(_conv_same(x, *w["stem"]))
    for name in ("b1", "b2", "pool", "b3"):
        if name == "pool":
            n, height, width, c = h.shape
            h = h.reshape(n, height // 2, 2, width // 2, 2, c).max(axis=(2, 4))
            continue
        branch = 0 if name == deleted else _conv_same(h, *model.get_layer(name).layer.get_weights())
        h = relu(h + branch)
        outputs[name] = h
    logits = h.mean(axis=(1, 2)) @ w["head"][0] + w["head"][1]
    return outputs, logits


@pytest.mark.multibackend
def test_atlas_numbers_equal_a_numpy_forward_pass_and_every_page_resolves(tmp_path):
    keras.config.set_image_data_format("channels_last")
    rng = np.random.default_rng(0)
    images = rng.random((N, 8, 8, 2), dtype="float32")
    model = balance(small_model(), images)
    labels = rng.integers(0, 3, N)
    result = atlas(model, images, str(tmp_path), channels=3, labels=labels, steps=2,
                   per_class=2, progress=False)

    assert result.stages == [["b1", "b2"], ["b3"]]
    assert result.channels == {"b1": [0, 1, 2], "b2": [0, 1, 2], "b3": [0, 1, 2]}
    blocks, logits = numpy_forward(model, images)
    assert result.intact_error == pytest.approx(np.mean(logits.argmax(-1) != labels))
    for name in ("b1", "b2", "b3"):
        _, lesioned = numpy_forward(model, images, deleted=name)
        assert result.deletion_errors[name] == pytest.approx(np.mean(lesioned.argmax(-1) != labels))
    assert len(set(result.deletion_errors.values()) | {result.intact_error}) > 1  # not degenerate

    # Chu et al.'s refinement: top-9 sets of per-image channel maxima, same channel b1 -> b2.
    maxima = {name: out.max(axis=(1, 2)) for name, out in blocks.items()}
    top = {name: np.argsort(-m, axis=0)[:9].T for name, m in maxima.items()}  # (C, 9)
    shared = [len(set(top["b1"][c]) & set(top["b2"][c])) for c in range(4)]
    (overlap,) = result.overlaps
    assert (overlap["a"], overlap["b"]) == ("b1", "b2")
    assert overlap["overlap"] == pytest.approx(np.mean(shared))
    assert overlap["per_channel"] == shared[:3]
    assert overlap["chance"] == pytest.approx(81 / N)
    within = [len(set(top["b2"][i]) & set(top["b2"][j])) for i in range(4) for j in range(4)
              if i != j]
    assert overlap["null"] == pytest.approx(np.mean(within))

    record = json.load(open(tmp_path / "atlas.json", encoding="utf-8"))
    for name in ("b1", "b2", "b3"):
        for unit in record["blocks"][name]["units"]:
            c = unit["channel"]
            assert unit["top_images"] == top[name][c].tolist()
            np.testing.assert_allclose(unit["top_values"], maxima[name][top[name][c], c],
                                       rtol=1e-4, atol=1e-5)
    # Three 3x3 convolutions: 7 pixels; the 2x2 pool: 8; a 3x3 convolution at jump 2: 8 + 2 * 2.
    assert record["blocks"]["b3"]["receptive_field"] == [12, 12]
    # The gallery: the first two images of each class, by the given labels.
    assert result.gallery == {c: [f"img/gradcam-class{c}-{i}.png"
                                  for i in np.flatnonzero(labels == c)[:2]] for c in range(3)}

    pages, parsed = site_files(str(tmp_path))
    assert pages == sorted(["index.html", "gallery.html", "stage-1.html", "stage-2.html"]
                           + [page_name(b) for b in ("b1", "b2", "b3")])
    for name, page in parsed.items():
        for target in page.images + page.links:
            assert not re.match(r"^[a-z]+:", target), (name, target)  # relative: no network
            assert os.path.isfile(tmp_path / unquote(target)), (name, target)
    block_page = parsed[page_name("b2")]
    assert block_page.images == [f"img/b2-c{c}-{kind}.png" for c in range(3)
                                 for kind in ("fv", "top9")]
    assert f"{result.deletion_errors['b2']:.4f}" in open(tmp_path / page_name("b2")).read()


@pytest.mark.backends("tensorflow", reason="which parts the atlas writes for which labels and "
                      "outputs is backend-neutral; the numbers test above runs on every backend")
def test_atlas_without_labels_or_without_a_class_output(tmp_path):
    keras.config.set_image_data_format("channels_last")
    images = np.random.default_rng(2).random((24, 8, 8, 2), dtype="float32")
    model = balance(small_model(), images)
    result = atlas(model, images, str(tmp_path / "predicted"), channels=1, steps=1,
                   per_class=1, progress=False)
    _, logits = numpy_forward(model, images)
    assert result.intact_error == 0.0  # labels are the intact network's predictions
    assert len(set(logits.argmax(-1))) == 3
    for name in ("b1", "b2", "b3"):  # ... so a deletion's "error" is the changed predictions
        _, lesioned = numpy_forward(model, images, deleted=name)
        assert result.deletion_errors[name] == pytest.approx(
            np.mean(lesioned.argmax(-1) != logits.argmax(-1)))
    assert "changed predictions" in open(tmp_path / "predicted" / "index.html").read()

    features = keras.Model(model.inputs, model.get_layer("b3").output)
    result = atlas(features, images, str(tmp_path / "features"), channels=1, steps=1,
                   progress=False)
    assert result.deletion_errors == {} and result.gallery == {} and result.intact_error is None
    assert not os.path.exists(tmp_path / "features" / "gallery.html")
    assert "no (N, classes) output" in open(tmp_path / "features" / "index.html").read()

    with pytest.raises(ValueError, match="no top-level Residual blocks"):
        atlas(keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(2, 3)]), images,
              str(tmp_path / "none"), progress=False)
    with pytest.raises(ValueError, match="class indices of the model's 3 outputs"):
        atlas(model, images, str(tmp_path / "x"), labels=np.full(len(images), 3), progress=False)
    with pytest.raises(ValueError, match="one label per image"):
        atlas(model, images, str(tmp_path / "x"), labels=np.zeros(3, int), progress=False)


def _write_pngs(folder, images, labels=None):
    for i, image in enumerate(images):
        where = folder if labels is None else folder / f"class_{labels[i]}"
        os.makedirs(where, exist_ok=True)
        keras.utils.save_img(where / f"{i:03d}.png", image, scale=False)


CLI = pytest.mark.backends("tensorflow", reason="the command's file loading is backend-neutral; "
                           "the atlas itself runs on every backend above")


@CLI
def test_cli_atlas_of_a_saved_model_on_a_folder_of_labelled_pngs(tmp_path, capsys):
    from keras_residual.cli import main

    pixels = np.random.default_rng(3).integers(0, 256, (12, 8, 8, 3)).astype("float32")  # 0-255
    labels = np.repeat([2, 0, 1], 4)
    # Files are read class folder by class folder (sorted), as keras' image_dataset_from_directory
    # numbers them: class_0 holds images 4-7 of `pixels`.
    order = np.concatenate([np.flatnonzero(labels == c) for c in range(3)])
    model = balance(small_model(depth=3), pixels[order] / 255)
    model.save(tmp_path / "small.keras")
    _write_pngs(tmp_path / "images", pixels, labels)
    assert main(["atlas", str(tmp_path / "small.keras"), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "site"), "--channels", "2", "--steps", "1",
                 "--k", "3"]) == 0
    assert "12 from" in capsys.readouterr().out
    record = json.load(open(tmp_path / "site" / "atlas.json", encoding="utf-8"))
    blocks, logits = numpy_forward(model, pixels[order] / 255)
    assert record["intact_error"] == pytest.approx(np.mean(logits.argmax(-1) != labels[order]))
    b3 = blocks["b3"].max(axis=(1, 2))
    for unit in record["blocks"]["b3"]["units"]:
        np.testing.assert_allclose(unit["top_values"], np.sort(b3[:, unit["channel"]])[::-1][:3],
                                   rtol=1e-4, atol=1e-5)
    assert sorted(record["gallery"]) == ["0", "1", "2"]
    # Subfolders named by integers are those class indices (e.g. ImageNet's), not positions:
    # class c in folder "2 - c", so folder "0" (read first) holds class 2's images.
    for i, image in enumerate(pixels):
        folder = tmp_path / "numbered" / str(2 - labels[i])
        os.makedirs(folder, exist_ok=True)
        keras.utils.save_img(folder / f"{i:03d}.png", image, scale=False)
    assert main(["atlas", str(tmp_path / "small.keras"), "--images", str(tmp_path / "numbered"),
                 "--out", str(tmp_path / "site2"), "--channels", "1", "--steps", "1"]) == 0
    record = json.load(open(tmp_path / "site2" / "atlas.json", encoding="utf-8"))
    order = np.concatenate([np.flatnonzero(2 - labels == c) for c in range(3)])
    _, logits = numpy_forward(model, pixels[order] / 255)
    assert record["intact_error"] == pytest.approx(np.mean(logits.argmax(-1) != 2 - labels[order]))
    assert record["intact_error"] != pytest.approx(np.mean(logits.argmax(-1) != labels[order]))

    with pytest.raises(SystemExit):  # a 2-channel model cannot read image files
        small_model().save(tmp_path / "two.keras")
        main(["atlas", str(tmp_path / "two.keras"), "--images", str(tmp_path / "images"),
              "--out", str(tmp_path / "x")])
    assert "takes 2 channels" in capsys.readouterr().err


@CLI
def test_cli_atlas_of_a_keras_hub_preset_uses_its_preprocessing(tmp_path, capsys):
    import keras_hub

    from keras_residual.cli import main

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[2, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=1 / 255,
                                                      offset=-0.5)
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=3,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    classifier.save_to_preset(str(tmp_path / "preset"))
    pixels = np.random.default_rng(4).integers(0, 256, (10, 32, 32, 3)).astype("float32")
    _write_pngs(tmp_path / "images", pixels)  # no class folders: labels are the predictions
    assert main(["atlas", str(tmp_path / "preset"), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "site"), "--channels", "2", "--steps", "1",
                 "--k", "3"]) == 0
    assert "the preset's preprocessing" in capsys.readouterr().out
    record = json.load(open(tmp_path / "site" / "atlas.json", encoding="utf-8"))
    assert record["stages"] == [["conv2_block1", "conv2_block2"], ["conv3_block1"]]
    assert record["labels"] == "the model's predictions" and record["intact_error"] == 0.0
    # keras-hub's own backbone on its own preprocessing: the last block's top activations.
    features = keras.ops.convert_to_numpy(backbone(converter(pixels), training=False))
    maxima = features.max(axis=(1, 2))
    for unit in record["blocks"]["conv3_block1"]["units"]:
        np.testing.assert_allclose(unit["top_values"],
                                   np.sort(maxima[:, unit["channel"]])[::-1][:3], rtol=1e-4,
                                   atol=1e-4)
