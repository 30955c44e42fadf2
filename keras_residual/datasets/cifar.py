"""CIFAR-10 from Keras' cache or a local file, and He et al.'s CIFAR augmentation.

He et al., "Deep Residual Learning for Image Recognition" (2015), Sec. 4.2:
32x32 inputs with the per-pixel mean subtracted; for training, 4 pixels
padded on each side and a 32x32 crop sampled at random from the padded image
or its horizontal flip; testing on the original 32x32 image.

`load_cifar10` never reaches the network unless asked (`download=True`), and
says which source it used.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile

import keras
import numpy as np
import tensorflow as tf

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
# keras.datasets.cifar10 (Keras >= 3.6) caches the download under this name.
_KERAS_CACHE_ARCHIVE = "cifar-10-batches-py-target_archive"
PAD = 4


@dataclasses.dataclass
class Cifar10:
    """CIFAR-10 as NumPy arrays: uint8 images (N, 32, 32, 3), int64 labels (N,), and the source.

    `load_cifar10` returns one (Krizhevsky 2009; the CIFAR experiments of He et al. 2015,
    Sec. 4.2).

    Example:
        >>> import numpy as np
        >>> from keras_residual.datasets import Cifar10
        >>> data = Cifar10(np.zeros((2, 32, 32, 3), np.uint8), np.array([3, 5]),
        ...                np.zeros((1, 32, 32, 3), np.uint8), np.array([0]), source="zeros")
        >>> data.x_train.shape, data.y_train.tolist()
        ((2, 32, 32, 3), [3, 5])
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def keras_datasets_dir() -> str:
    """Keras' dataset cache: `$KERAS_HOME/datasets`, by default `~/.keras/datasets`.

    Example:
        >>> from keras_residual.datasets.cifar import keras_datasets_dir
        >>> keras_datasets_dir().endswith("datasets")
        True
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def _batch_arrays(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    # The python-version batches hold rows of 3072 bytes: 1024 red, 1024 green, 1024 blue.
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype=np.int64)


def _from_batches(read) -> tuple[np.ndarray, ...]:
    """Stacks the five training batches and the test batch; `read(name)` returns a batch dict."""
    train = [_batch_arrays(read(name)) for name in _TRAIN_BATCHES]
    x_test, y_test = _batch_arrays(read(_TEST_BATCH))
    return (
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
    )


def _read_folder(folder: str) -> tuple[np.ndarray, ...]:
    def read(name):
        with open(os.path.join(folder, name), "rb") as f:
            return pickle.load(f, encoding="bytes")

    return _from_batches(read)


def _read_archive(path: str) -> tuple[np.ndarray, ...]:
    with tarfile.open(path, "r:gz") as archive:
        members = {os.path.basename(m.name): m for m in archive.getmembers() if m.isfile()}

        def read(name):
            if name not in members:
                raise ValueError(f"{path!r} has no {name!r}: it is not the CIFAR-10 python archive.")
            return pickle.load(io.BytesIO(archive.extractfile(members[name]).read()), encoding="bytes")

        return _from_batches(read)


def _read_npz(path: str) -> tuple[np.ndarray, ...]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    with np.load(path) as data:
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(
                f"{path!r} lacks the arrays {missing}; an .npz for CIFAR-10 needs {list(keys)} "
                f"(images uint8 (N, 32, 32, 3), labels (N,) or (N, 1)). Received keys: {list(data)}"
            )
        x_train, y_train, x_test, y_test = (data[k] for k in keys)
    return (
        np.asarray(x_train, dtype=np.uint8),
        np.asarray(y_train, dtype=np.int64).reshape(-1),
        np.asarray(x_test, dtype=np.uint8),
        np.asarray(y_test, dtype=np.int64).reshape(-1),
    )


def _read_local(path: str) -> tuple[np.ndarray, ...]:
    if os.path.isdir(path):
        nested = os.path.join(path, FOLDER_NAME)
        return _read_folder(nested if os.path.isdir(nested) else path)
    if path.endswith(".npz"):
        return _read_npz(path)
    if path.endswith((".tar.gz", ".tgz")):
        return _read_archive(path)
    raise ValueError(
        f"Cannot read CIFAR-10 from {path!r}: pass the python-version archive "
        f"({ARCHIVE_NAME}), its extracted folder ({FOLDER_NAME}/) or an .npz with "
        "x_train, y_train, x_test, y_test."
    )


def _from_keras(download: bool) -> Cifar10:
    (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    if keras.config.image_data_format() == "channels_first":
        x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
    how = "downloaded into" if download else "cached in"
    return Cifar10(
        x_train,
        y_train.astype(np.int64).reshape(-1),
        x_test,
        y_test.astype(np.int64).reshape(-1),
        source=f"keras.datasets.cifar10 ({how} {keras_datasets_dir()})",
    )


def load_cifar10(path: str | None = None, download: bool = False) -> Cifar10:
    """CIFAR-10's 50,000 training and 10,000 test images, from the first source that exists.

    1. `path`, when given: the python-version archive `cifar-10-python.tar.gz`,
       its extracted folder `cifar-10-batches-py/` (or a folder holding it),
       or an `.npz` with `x_train, y_train, x_test, y_test`.
    2. `keras.datasets.cifar10`'s cache in `$KERAS_HOME/datasets`.
    3. `cifar-10-python.tar.gz` or `cifar-10-batches-py/` in that same folder.
    4. A download through `keras.datasets.cifar10`, only with `download=True`.

    Args:
        path: str or None. A local file or folder, as above. Defaults to None.
        download: bool. Allow a download when nothing local exists. Defaults to False.

    Returns:
        A `Cifar10` with uint8 images (N, 32, 32, 3), int64 labels (N,) and
        `source`, which says where the data came from.

    Raises:
        FileNotFoundError: nothing found and `download=False`; the message
            says where to put the file.

    Example:
        >>> import numpy as np, os, tempfile
        >>> from keras_residual.datasets.cifar import load_cifar10
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
        >>> x, y = np.zeros((4, 32, 32, 3), np.uint8), np.arange(4)
        >>> np.savez(path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
        >>> load_cifar10(path).x_train.shape
        (4, 32, 32, 3)
    """
    if path is not None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"CIFAR-10 file or folder not found. Received: path={path!r}")
        return Cifar10(*_read_local(path), source=f"local file {os.path.abspath(path)}")
    cache = keras_datasets_dir()
    if os.path.exists(os.path.join(cache, _KERAS_CACHE_ARCHIVE)):
        return _from_keras(download=False)
    for name in (ARCHIVE_NAME, FOLDER_NAME):
        candidate = os.path.join(cache, name)
        if os.path.exists(candidate):
            return Cifar10(*_read_local(candidate), source=f"local file {candidate}")
    if download:
        return _from_keras(download=True)
    raise FileNotFoundError(
        f"CIFAR-10 is not on this machine. Download {CIFAR10_URL} elsewhere and either "
        f"put {ARCHIVE_NAME} (or its extracted {FOLDER_NAME}/ folder) in {cache}, or pass "
        "its path (the archive, the folder or an .npz with x_train, y_train, x_test, "
        "y_test) as `path=` / `--data`; or allow a download with `download=True` / `--download`."
    )


def per_pixel_mean(images: np.ndarray) -> np.ndarray:
    """The mean image (32, 32, 3) that He et al. subtract from every input.

    Example:
        >>> import numpy as np
        >>> from keras_residual.datasets.cifar import per_pixel_mean
        >>> per_pixel_mean(np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 2.0)]))[0, 0].tolist()
        [1.0, 1.0, 1.0]
    """
    return np.asarray(images, dtype=np.float64).mean(axis=0).astype(np.float32)


def cifar_augment(image: tf.Tensor, seed: int | tf.Tensor | None = None) -> tf.Tensor:
    """He et al.'s augmentation: pad 4 zero pixels per side, random 32x32 crop, random flip.

    Args:
        image: tensor (height, width, channels), already mean-subtracted
            (so the padding is the mean image).
        seed: int, shape-(2,) int tensor, or None. An int is the op seed of
            TensorFlow's stateful crop and flip; a pair is a stateless seed
            (`tf.image.stateless_random_crop`), whose result depends on the
            pair alone, however many `tf.data` threads run.

    Example:
        >>> import tensorflow as tf
        >>> from keras_residual.datasets.cifar import cifar_augment
        >>> cifar_augment(tf.ones((32, 32, 3))).shape.as_list()
        [32, 32, 3]
        >>> image = tf.random.normal((32, 32, 3))
        >>> a, b = (cifar_augment(image, tf.constant([0, 7])) for _ in range(2))
        >>> bool(tf.reduce_all(a == b))
        True
    """
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    if seed is None or isinstance(seed, int):
        crop = tf.image.random_crop(padded, tf.shape(image), seed=seed)
        return tf.image.random_flip_left_right(crop, seed=seed)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    crop = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(crop, seed=flip_seed)


def _seeded_stream(images: np.ndarray, labels: np.ndarray, seed: int) -> tf.data.Dataset:
    """`(image, label, index)` forever: epoch `e` in the order `stateless_shuffle(seed, e)`.

    The stream depends on `seed` alone. TensorFlow's `shuffle(seed=...)` with
    `reshuffle_each_iteration` gives every new iterator of the same dataset
    another order, and Keras may make more than one.
    """
    images, labels = tf.constant(images), tf.constant(labels)
    seed = tf.constant(seed, tf.int64)

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(labels, out_type=tf.int64)[0]), seed=tf.stack([seed, e]))
        return tf.data.Dataset.from_tensor_slices(order)

    return tf.data.Dataset.counter().flat_map(epoch).enumerate().map(
        lambda index, k: (tf.gather(images, k), tf.gather(labels, k), index))


def cifar_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    mean: np.ndarray,
    batch_size: int = 128,
    training: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """A batched CIFAR pipeline: `(image - mean) / 255`, plus `cifar_augment` when training.

    Training batches are shuffled every epoch, repeated forever and full
    (pass `steps_per_epoch` to `fit`); evaluation is one ordered pass.
    Scaling by 1/255 on top of He et al.'s mean subtraction only changes the
    input units (the first convolution is followed by batch normalization).

    Args:
        images: uint8 array (N, 32, 32, 3).
        labels: int array (N,).
        mean: float array (32, 32, 3), the training set's `per_pixel_mean`.
        batch_size: int. Defaults to 128 (He et al.).
        training: bool. Augment, shuffle and repeat. Defaults to False.
        seed: int or None. Shuffling and augmentation seed. With a seed the
            stream of batches is the same in every run, so that the processes
            of a cluster can each take their part of the same global batch, and
            a resumed run can skip the batches it already trained on.

    Example:
        >>> import numpy as np
        >>> from keras_residual.datasets.cifar import cifar_dataset
        >>> x = np.zeros((4, 32, 32, 3), np.uint8)
        >>> batch = next(iter(cifar_dataset(x, np.arange(4), x[0] * 0.0, batch_size=2)))
        >>> batch[0].shape.as_list()
        [2, 32, 32, 3]
    """
    if len(images) != len(labels):
        raise ValueError(
            f"`images` and `labels` differ in length. Received: {len(images)} and {len(labels)}"
        )
    mean = tf.constant(np.asarray(mean, dtype=np.float32))

    def prepare(image, label, index=None):
        image = (tf.cast(image, tf.float32) - mean) / 255.0
        if training:
            # With a seed, image `index` of the stream gets the stateless seed (seed, index): the
            # same augmentation in every run and every process of a cluster.
            stateless = None if index is None else tf.stack([tf.constant(seed, tf.int64), index])
            image = cifar_augment(image, seed=stateless)
        return image, label

    labels = np.asarray(labels, dtype=np.int32)
    if training and seed is not None:
        dataset = _seeded_stream(images, labels, seed).map(prepare,
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        if training:
            dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
