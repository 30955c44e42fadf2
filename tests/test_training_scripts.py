"""Training recipes, data pipelines and the example scripts end to end on tiny data."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from script_runs import SCRIPT_RUN, run_script

from keras_residual import Residual, training
from keras_residual.datasets import cifar, images

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
multibackend = pytest.mark.multibackend


# ---------------------------------------------------------------- schedules


def closed_form(t, peak, total, warmup, decay, boundaries=(), factor=0.1, final=0.0):
    """The schedule written out by hand, one step at a time."""
    if t < warmup:
        return peak * (t + 1) / warmup
    if decay == "step":
        return peak * factor ** sum(t >= b for b in boundaries)
    progress = min(1.0, (t - warmup) / (total - warmup))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES = [
    dict(peak=0.4, total=200, warmup=20, decay="step", boundaries=(67, 133, 178)),
    dict(peak=0.1, total=200, warmup=0, decay="step", boundaries=(100, 150)),
    dict(peak=0.2, total=200, warmup=25, decay="cosine", final=0.001),
    dict(peak=0.2, total=200, warmup=0, decay="cosine"),
]


@multibackend
def test_schedule_matches_closed_formula():
    steps = list(range(0, 230, 3)) + [19, 20, 66, 67, 133, 178, 199, 200]
    for kwargs in SCHEDULES:
        schedule = training.WarmupDecay(
            kwargs["peak"],
            total_steps=kwargs["total"],
            warmup_steps=kwargs["warmup"],
            decay=kwargs["decay"],
            boundaries=kwargs.get("boundaries", ()),
            final_learning_rate=kwargs.get("final", 0.0),
        )
        got = [float(keras.ops.convert_to_numpy(schedule(t))) for t in steps]
        want = [closed_form(t, **kwargs) for t in steps]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=str(kwargs))


@multibackend
def test_schedule_round_trips_through_config():
    schedule = training.WarmupDecay(0.3, 100, 10, "cosine", final_learning_rate=0.01)
    clone = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert isinstance(clone, training.WarmupDecay)
    assert float(keras.ops.convert_to_numpy(clone(40))) == pytest.approx(
        closed_form(40, 0.3, 100, 10, "cosine", final=0.01), rel=1e-6
    )


@multibackend
def test_recipes_follow_the_papers():
    # Goyal et al.: 0.1 x batch / 256; He et al.: drops at 30, 60, 80 of 90 epochs.
    schedule = training.imagenet_schedule(1024, steps_per_epoch=10, epochs=90, warmup_epochs=5)
    assert schedule.peak_learning_rate == pytest.approx(0.4)
    assert schedule.boundaries == [300, 600, 800]
    assert (schedule.warmup_steps, schedule.total_steps) == (50, 900)
    # He et al. CIFAR: 0.1, /10 at 32k and 48k, 64k in all.
    cifar_lr = training.cifar_schedule()
    lrs = [float(keras.ops.convert_to_numpy(cifar_lr(t))) for t in (0, 31_999, 32_000, 48_000, 63_999)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-6)


@multibackend
def test_schedule_rejects_bad_arguments():
    for kwargs in (
        dict(decay="linear"), dict(warmup_steps=200), dict(boundaries=(50, 10)), dict(total_steps=0)
    ):
        with pytest.raises(ValueError, match="Received"):
            training.WarmupDecay(**(dict(peak_learning_rate=0.1, total_steps=100) | kwargs))


# -------------------------------------------------------------- weight decay


def small_residual_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = Residual(
        keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="block_conv"),
        merge="rezero",
        name="block",
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="net")


@multibackend
def test_weight_decay_goes_on_kernels_only():
    model = small_residual_model()
    decayed = training.add_weight_decay(model, 1e-4)
    # Written out by hand: the three kernels; not the biases, BN gamma/beta,
    # ReZero's scalar or the lesion state.
    assert sorted(v.path for v in decayed) == [
        "block/block_conv/kernel",
        "fc/kernel",
        "stem_conv/kernel",
    ]
    others = [v for v in model.weights if all(v is not d for d in decayed)]
    assert sorted(v.path for v in others if v.trainable) == [
        "block/merge/alpha", "fc/bias", "stem_bn/beta", "stem_bn/gamma", "stem_conv/bias",
    ]
    assert all(v.regularizer is None for v in others)
    # Caffe's weight_decay 1e-4 is the loss 0.5e-4 * sum(w**2) (gradient 1e-4 * w).
    want = 0.5e-4 * sum(np.sum(keras.ops.convert_to_numpy(v) ** 2) for v in decayed)
    got = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert got == pytest.approx(want, rel=1e-5)


@multibackend
def test_weight_decay_gradient_is_caffe_style():
    """One plain-SGD step on a zero data loss shrinks each kernel by lr * 1e-4 * w."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="fc")])
    training.add_weight_decay(model, 1e-4)
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    bias = keras.ops.convert_to_numpy(model.get_layer("fc").bias).copy()
    model.compile(keras.optimizers.SGD(learning_rate=0.5), loss=lambda y, p: 0.0 * keras.ops.sum(p))
    model.train_on_batch(np.ones((1, 2)), np.zeros((1, 2)))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("fc").kernel), kernel * (1 - 0.5 * 1e-4), rtol=1e-6
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("fc").bias), bias)


# -------------------------------------------------------------- distribution


@multibackend
def test_strategy_selection():
    cluster = json.dumps(
        {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    )
    assert training.strategy_kind(None, 0) == "default"
    assert training.strategy_kind(None, 1) == "default"
    assert training.strategy_kind(None, 8) == "mirrored"
    assert training.strategy_kind(cluster, 8) == "multi_worker"
    assert training.is_chief(None)
    assert training.is_chief(cluster)
    assert not training.is_chief(cluster.replace('"index": 0', '"index": 1'))
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert not training.is_chief(json.dumps(with_chief))
    with_chief["task"] = {"type": "chief", "index": 0}
    assert training.is_chief(json.dumps(with_chief))


@multibackend
def test_stop_at_step_ends_mid_epoch():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.zeros((10, 2)), np.zeros((10, 1)), batch_size=2, epochs=4,
              callbacks=[training.StopAtStep(7)], verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 7


@multibackend
def test_training_callbacks_resume_after_an_interruption(tmp_path):
    x, y = np.ones((8, 2)), np.ones((8, 1))

    def run(stop_at_epoch=None):
        epochs = []

        class Record(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == stop_at_epoch:
                    raise KeyboardInterrupt("simulated preemption")
                epochs.append(epoch)

        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(training.cifar_schedule(12)), "mse")
        callbacks = [*training.training_callbacks(str(tmp_path)), Record()]
        try:
            model.fit(x, y, batch_size=2, epochs=3, callbacks=callbacks, verbose=0)
        except KeyboardInterrupt:
            pass
        return model, epochs

    _, first = run(stop_at_epoch=2)
    model, second = run()
    assert first == [0, 1] and second == [2]
    # The optimizer (and so the learning-rate schedule) goes on where it stopped.
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 12
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        f"epoch_00{i}.weights.h5" for i in (1, 2, 3)
    ]
    assert os.listdir(tmp_path / "logs")


# --------------------------------------------------------------- image folder


@multibackend
def test_preprocess_matches_keras_applications():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    for mode in images.PREPROCESSING_MODES:
        want = keras.applications.imagenet_utils.preprocess_input(
            x.copy(), data_format="channels_last", mode=mode
        )
        got = images.preprocess(tf.constant(x), mode).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=mode)
    assert images.preprocessing_mode("resnet50") == "caffe"
    assert images.preprocessing_mode("resnet152_v2") == "tf"
    assert images.preprocessing_mode("resnet18") == "caffe"


@multibackend
def test_vd_models_get_paddleclas_normalization():
    # keras-hub's resnet_vd presets come from PaddleClas: RGB / 255, ImageNet mean and std.
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 3, 3)).astype("float32")
    want = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    for name in ("resnet18_vd", "resnet50_vd", "resnet200_vd"):
        got = images.preprocess(tf.constant(x), images.preprocessing_mode(name)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@multibackend
def test_center_crop_equals_slicing():
    # Shorter side already 64 = 56 / 0.875: no resize, just the central 56x56.
    x = np.random.default_rng(1).uniform(0, 255, (64, 80, 3)).astype("float32")
    got = images.center_crop(tf.constant(x), 56).numpy()
    np.testing.assert_allclose(got, x[4:60, 12:68], atol=1e-3)


@pytest.fixture
def image_folder(tmp_path):
    """Three class folders of random-noise JPEG/PNG images of varied sizes, train/ and val/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for label, name in enumerate(("ant", "bee", "cat")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shape = (36 + 4 * i, 44 - 2 * label, 3)
                extension = "jpg" if i % 2 else "png"
                keras.utils.save_img(str(folder / f"{i}.{extension}"), rng.uniform(0, 255, shape))
    return tmp_path


@multibackend
def test_image_folder_labels_shapes_and_range(image_folder):
    folder = images.image_folder_dataset(
        str(image_folder / "val"), image_size=24, batch_size=4, preprocessing="tf",
        data_format="channels_last",
    )
    assert folder.class_names == ["ant", "bee", "cat"]
    assert folder.num_images == 6 and "6 images in 3 classes" in folder.source
    batches = list(folder.dataset)
    assert [b[0].shape.as_list() for b in batches] == [[4, 24, 24, 3], [2, 24, 24, 3]]
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    pixels = np.concatenate([b[0].numpy().ravel() for b in batches])
    assert -1.0 <= pixels.min() < -0.5 and 0.5 < pixels.max() <= 1.0


@multibackend
def test_training_pipeline_crops_and_flips(tmp_path):
    # A square image, black left half and white right half: with the crop
    # area fixed to the whole image only the flip changes it.
    image = np.zeros((32, 32, 3))
    image[:, 16:] = 255
    (tmp_path / "only").mkdir()
    keras.utils.save_img(str(tmp_path / "only" / "x.png"), image)
    folder = images.image_folder_dataset(
        str(tmp_path), image_size=16, batch_size=1, training=True, preprocessing="tf",
        area_range=(1.0, 1.0), seed=3, data_format="channels_last",
    )
    lefts = [float(x[0, :, :4].numpy().mean()) for x, _ in folder.dataset.take(30)]
    assert set(np.round(lefts, 3)) == {-1.0, 1.0}
    # With the default area range, crops are resized to image_size whatever their size.
    folder = images.image_folder_dataset(
        str(tmp_path), image_size=20, batch_size=2, training=True, seed=0, data_format="channels_last"
    )
    x, y = next(iter(folder.dataset))
    assert x.shape.as_list() == [2, 20, 20, 3] and y.numpy().tolist() == [0, 0]


@multibackend
def test_image_folder_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        images.image_folder_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="No images"):
        images.image_folder_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="preprocessing"):
        images.image_folder_dataset(str(tmp_path), preprocessing="bgr")


# ---------------------------------------------------------------------- CIFAR


@multibackend
def test_cifar_augment_is_a_padded_crop_or_its_flip():
    image = np.random.default_rng(0).normal(size=(32, 32, 3)).astype("float32")
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    candidates = {}
    for top in range(9):
        for left in range(9):
            crop = padded[top : top + 32, left : left + 32]
            candidates[(top, left, False)] = crop
            candidates[(top, left, True)] = crop[:, ::-1]
    seen = set()
    for _ in range(40):
        out = cifar.cifar_augment(tf.constant(image)).numpy()
        matches = [key for key, crop in candidates.items() if np.array_equal(crop, out)]
        assert matches, "output is not a 32x32 crop of the padded image or of its flip"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(top, left) for top, left, _ in seen}) > 10


def write_cifar_batches(folder, rng) -> tuple:
    """The python-version layout with 2 images per batch; returns the arrays as NHWC."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 2).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        xs.append(data.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(labels)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], np.asarray(ys[5])


@multibackend
def test_cifar_local_sources(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    want = write_cifar_batches(folder, rng)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    npz = tmp_path / "cifar.npz"
    np.savez(npz, x_train=want[0], y_train=want[1][:, None], x_test=want[2], y_test=want[3])
    for path in (folder, tmp_path, archive, npz):
        data = cifar.load_cifar10(str(path))
        for got, expected in zip((data.x_train, data.y_train, data.x_test, data.y_test), want, strict=True):
            np.testing.assert_array_equal(got, expected)
        assert data.x_train.shape == (10, 32, 32, 3) and data.y_train.shape == (10,)
        assert str(path) in data.source


@multibackend
def test_cifar_finds_the_archive_in_the_keras_cache(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    want = write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py", rng)
    cache = tmp_path / "home" / "datasets"
    cache.mkdir(parents=True)
    with tarfile.open(cache / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    data = cifar.load_cifar10()
    np.testing.assert_array_equal(data.x_test, want[2])
    assert "cifar-10-python.tar.gz" in data.source


@multibackend
def test_cifar_missing_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        cifar.load_cifar10()
    message = str(error.value)
    assert str(tmp_path / "datasets") in message and "cifar-10-python.tar.gz" in message
    assert "--download" in message
    with pytest.raises(FileNotFoundError, match="not found"):
        cifar.load_cifar10(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(1))
    with pytest.raises(ValueError, match="x_train"):
        cifar.load_cifar10(str(bad))
    broken = tmp_path / "broken.tar.gz"
    with tarfile.open(broken, "w:gz") as tar:
        info = tarfile.TarInfo("readme")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="data_batch_1"):
        cifar.load_cifar10(str(broken))


@multibackend
def test_cifar_dataset_subtracts_the_mean():
    x = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    mean = cifar.per_pixel_mean(x)
    np.testing.assert_allclose(mean, x.astype("float64").mean(axis=0), rtol=1e-6)
    batches = list(cifar.cifar_dataset(x, np.arange(6), mean, batch_size=4))
    got = np.concatenate([b[0].numpy() for b in batches])
    np.testing.assert_allclose(got, (x - mean) / 255.0, atol=1e-6)
    train = cifar.cifar_dataset(x, np.arange(6), mean, batch_size=4, training=True, seed=0)
    assert [b[0].shape.as_list() for b in train.take(3)] == [[4, 32, 32, 3]] * 3


# -------------------------------------------------------------------- scripts


def run_example(name: str, tmp_path, *args: str) -> str:
    return run_script(os.path.join("examples", name), tmp_path, *args, timeout=300)


@SCRIPT_RUN
def test_train_imagenet_then_evaluate(image_folder, tmp_path):
    out = tmp_path / "run"
    # --quick: a two-stage, narrow ResNet-18 at 32x32, 2 epochs of 2 steps of 4 images (the
    # scripts' quick mode, run once here, on a real image folder instead of its noise PNGs).
    log = run_example(
        "train_imagenet.py", tmp_path, "--quick", "--data", str(image_folder), "--decay", "cosine",
        "--label-smoothing", "0.1", "--seed", "0", "--out", str(out),
    )
    assert "Training data: image folder" in log and "12 images in 3 classes" in log
    assert "peak learning rate 0.0015625" in log  # 0.1 x 4 / 256
    assert "Epoch 2/2" in log and "val_top1" in log
    assert sorted(os.listdir(out / "checkpoints")) == ["epoch_001.weights.h5", "epoch_002.weights.h5"]
    assert os.listdir(out / "logs")
    log = run_example(
        "evaluate_imagenet.py", tmp_path, "--quick", "--data", str(image_folder / "val"),
        "--weights", str(out / "model.keras"),
    )
    top1 = float(log.split("top-1 accuracy: ")[1].split()[0])
    top5 = float(log.split("top-5 accuracy: ")[1].split()[0])
    # The same six center crops through the saved model, ranked by NumPy.
    from keras_residual.datasets.images import image_folder_dataset

    folder = image_folder_dataset(str(image_folder / "val"), 32, 4)
    images, labels = (np.concatenate(parts) for parts in zip(*folder.dataset.as_numpy_iterator(),
                                                             strict=True))
    logits = keras.saving.load_model(out / "model.keras").predict(images, verbose=0)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert top1 == pytest.approx(np.mean(logits.argmax(-1) == labels), abs=1e-4)
    assert top5 == 1.0  # three classes: every label is in the top 5


@SCRIPT_RUN
def test_evaluate_imagenet_top1_and_top5_of_a_known_classifier(tmp_path):
    # Seven classes, two images each; a classifier whose logits ignore the image
    # (zero kernel, bias ranking the classes 0 > 1 > ... > 6) is right on class 0
    # only for top-1 (2/14) and on classes 0-4 for top-5 (10/14).
    from keras_residual import models

    rng = np.random.default_rng(2)
    names = [f"class{c}" for c in range(7)]
    for name in names:
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(2):
            keras.utils.save_img(str(tmp_path / "val" / name / f"{i}.png"),
                                 rng.uniform(0, 255, (20, 20, 3)))
    tiny = {"blocks": [1], "filters": [4], "strides": [1]}
    model = models.get_model("resnet18", input_shape=(16, 16, 3), classes=7, **tiny)
    head = model.get_layer("predictions")
    head.set_weights([np.zeros(head.kernel.shape), np.linspace(3.0, 0.0, 7)])
    model.save(tmp_path / "constant.keras")
    log = run_example(
        "evaluate_imagenet.py", tmp_path, "--data", str(tmp_path / "val"), "--model", "resnet18",
        "--model-kwargs", json.dumps(tiny), "--image-size", "16",
        "--weights", str(tmp_path / "constant.keras"), "--batch-size", "4",
    )
    top1 = float(log.split("top-1 accuracy: ")[1].split()[0])
    top5 = float(log.split("top-5 accuracy: ")[1].split()[0])
    assert (top1, top5) == (round(2 / 14, 4), round(10 / 14, 4))


@SCRIPT_RUN
def test_train_cifar_on_a_tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny_cifar.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 32),
        x_test=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 8),
    )
    log = run_example(
        "train_cifar.py", tmp_path, "--quick", "--data", str(npz), "--model", "cifar_resnet",
        "--seed", "0", "--out", str(tmp_path / "run"),
    )
    assert f"CIFAR-10 from local file {npz}: 32 training, 8 test images" in log
    assert "divided by 10 at iterations [2, 4], stop at 5" in log  # 1/2 and 3/4 of the run
    assert "Epoch 2/2" in log and "Test error after 5 iterations" in log
    assert (tmp_path / "run" / "model.keras").is_file()


@multibackend
def test_model_kwargs_help_example_is_accepted_by_the_builder():
    import re

    from keras_residual import models

    text = open(os.path.join(REPO, "examples", "train_imagenet.py")).read()
    example = re.search(r"--model-kwargs.*?e\.g\. \\'(\{.*?\})\\'", text).group(1)
    kwargs = json.loads(example)
    model = models.get_model("resnet18", input_shape=(32, 32, 3), classes=2, **kwargs)
    blocks = [layer for layer in model.layers if isinstance(layer, Residual)]
    assert kwargs["drop_rate"] > 0 and all(b.drop_rate > 0 for b in blocks)
