"""Image folders in ImageNet's layout (one subfolder per class) as tf.data pipelines.

Training: random-resized crop (Szegedy et al., "Going Deeper with
Convolutions", 2015, the augmentation of the ResNet recipes; area 8%-100% of
the image, aspect ratio 3/4-4/3) and a horizontal flip. Evaluation: resize
the shorter side to `image_size / 0.875` (256 for 224) and take the central
crop (He et al. 2015, Sec. 3.4, single-crop testing). Both end with the
model's own input preprocessing, written in TensorFlow ops so that the same
pipeline feeds a model on any Keras backend.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

#: keras.applications' input conventions: "caffe" (ResNet v1: RGB to BGR,
#: ImageNet channel means subtracted), "tf" (ResNet v2: scaled to [-1, 1]),
#: "torch" (scaled to [0, 1], then ImageNet mean and std).
PREPROCESSING_MODES = ("caffe", "tf", "torch")
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class ImageFolder:
    """A batched image-folder pipeline and what it was made from.

    Attributes:
        dataset: tf.data.Dataset of `(images, labels)` batches; labels are
            int32 class indices in the order of `class_names`.
        class_names: the subfolder names, sorted (for ImageNet's synset
            folders this is keras.applications' class order).
        num_images: number of image files found.
        source: where the images came from, for the scripts to print.

    Example:
        `image_folder_dataset` returns one:

        >>> import os, tempfile
        >>> import numpy as np
        >>> import keras
        >>> from keras_residual.datasets.images import image_folder_dataset
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "cat"))
        >>> keras.utils.save_img(os.path.join(root, "cat", "0.png"), np.zeros((8, 8, 3)))
        >>> folder = image_folder_dataset(root, image_size=8, batch_size=1)
        >>> folder.class_names, folder.num_images
        (['cat'], 1)
    """

    dataset: tf.data.Dataset
    class_names: list
    num_images: int
    source: str


def preprocessing_mode(model_name: str) -> str:
    """The input convention of a builder's published weights: "tf", "torch" or "caffe".

    keras.applications ResNet50/101/152 expect caffe-style inputs (BGR, ImageNet
    mean subtracted) and ResNet50V2/101V2/152V2 inputs in [-1, 1]; the
    builders that load their weights inherit the convention. The ResNet-vd
    models (`resnet50_vd`, ...) load keras-hub's `resnet_vd_*_imagenet`
    presets, converted from PaddleClas, which scale RGB to [0, 1] and
    normalize by the ImageNet mean (0.485, 0.456, 0.406) and standard
    deviation (0.229, 0.224, 0.225): "torch". Other names get "caffe".

    Example:
        >>> from keras_residual.datasets.images import preprocessing_mode
        >>> preprocessing_mode("resnet50"), preprocessing_mode("resnet50_v2")
        ('caffe', 'tf')
        >>> preprocessing_mode("resnet50_vd")
        'torch'
    """
    name = model_name.lower().rstrip("_")
    if name.endswith("v2"):
        return "tf"
    return "torch" if name.endswith("_vd") else "caffe"


def preprocess(images: tf.Tensor, mode: str) -> tf.Tensor:
    """Maps RGB images with values in [0, 255] to a model's input convention.

    Equal to `keras.applications.imagenet_utils.preprocess_input(x, mode=mode)`
    for channels-last input, but in TensorFlow ops so that it runs inside a
    tf.data map whatever the Keras backend.

    Args:
        images: float tensor `(..., height, width, 3)`, RGB, values in [0, 255].
        mode: str. One of `PREPROCESSING_MODES`.

    Example:
        >>> import tensorflow as tf
        >>> from keras_residual.datasets.images import preprocess
        >>> preprocess(tf.fill((1, 1, 3), 255.0), "tf").numpy().ravel().tolist()
        [1.0, 1.0, 1.0]
    """
    images = tf.cast(images, tf.float32)
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_BGR_MEAN)
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "torch":
        return (images / 255.0 - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)
    raise ValueError(
        f"`preprocessing` must be one of {PREPROCESSING_MODES}. Received: {mode!r}"
    )


def list_image_folder(directory: str) -> tuple[list, list, list]:
    """Image paths, integer labels and class names of a folder with one subfolder per class.

    Example:
        >>> import os, tempfile
        >>> from keras_residual.datasets.images import list_image_folder
        >>> root = tempfile.mkdtemp()
        >>> for name in ("cat", "dog"):
        ...     os.makedirs(os.path.join(root, name))
        ...     open(os.path.join(root, name, "a.jpg"), "wb").close()
        >>> list_image_folder(root)[1:]
        ([0, 1], ['cat', 'dog'])
    """
    if not os.path.isdir(directory):
        raise ValueError(
            f"Expected a folder with one subfolder of images per class (ImageNet's "
            f"train/ or val/ layout). Received: directory={directory!r}, which is not a folder."
        )
    class_names = sorted(
        entry for entry in os.listdir(directory) if os.path.isdir(os.path.join(directory, entry))
    )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        for root, _, files in sorted(os.walk(os.path.join(directory, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, file))
                    labels.append(label)
    if not paths:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {directory!r}. "
            "Put each class's images in their own subfolder, e.g. train/n01440764/*.JPEG."
        )
    return paths, labels, class_names


def random_resized_crop(
    image: tf.Tensor,
    image_size: int,
    area_range: Sequence[float] = (0.08, 1.0),
    aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
    seed: int | None = None,
) -> tf.Tensor:
    """A random crop of random area and aspect ratio, resized to `image_size` squared.

    Up to 10 tries for a box inside the image; the whole image where none fits.

    Example:
        >>> import tensorflow as tf
        >>> from keras_residual.datasets.images import random_resized_crop
        >>> random_resized_crop(tf.zeros((40, 60, 3)), 32).shape.as_list()
        [32, 32, 3]
    """
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=(1, 1, 4)),
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
        seed=seed,
    )
    crop = tf.slice(image, begin, size)
    return tf.image.resize(crop, (image_size, image_size))


def center_crop(image: tf.Tensor, image_size: int, crop_fraction: float = 0.875) -> tf.Tensor:
    """Resizes the shorter side to `image_size / crop_fraction`, then takes the central square.

    Example:
        >>> import tensorflow as tf
        >>> from keras_residual.datasets.images import center_crop
        >>> center_crop(tf.zeros((256, 320, 3)), 224).shape.as_list()
        [224, 224, 3]
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (image_size / crop_fraction) / tf.reduce_min(shape)
    resized_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), resized_shape)
    top = (resized_shape[0] - image_size) // 2
    left = (resized_shape[1] - image_size) // 2
    return image[top : top + image_size, left : left + image_size]


def image_folder_dataset(
    directory: str,
    image_size: int = 224,
    batch_size: int = 32,
    training: bool = False,
    preprocessing: str = "caffe",
    crop_fraction: float = 0.875,
    area_range: Sequence[float] = (0.08, 1.0),
    seed: int | None = None,
    data_format: str | None = None,
) -> ImageFolder:
    """An ImageNet-style image folder as a batched tf.data pipeline.

    `training=True`: shuffled every epoch, random-resized crop, random
    horizontal flip, repeated forever and batched with full batches only (pass
    `steps_per_epoch` to `fit`). `training=False`: one pass in file order,
    resize + center crop, last batch possibly smaller.

    Args:
        directory: str. A folder with one subfolder of images per class.
        image_size: int. Side of the square crops. Defaults to 224.
        batch_size: int. Images per batch. Defaults to 32.
        training: bool. The training or the evaluation pipeline. Defaults to False.
        preprocessing: str. The model's input convention, one of
            `PREPROCESSING_MODES` (see `preprocessing_mode`). Defaults to "caffe".
        crop_fraction: float. Evaluation crop side over resized shorter side.
            Defaults to 0.875 (224 of 256).
        area_range: sequence of 2 floats. Range of the training crop's area
            as a fraction of the image. Defaults to (0.08, 1.0).
        seed: int or None. Seed of shuffling and augmentation. Defaults to None.
        data_format: str or None. "channels_last" or "channels_first" for the
            batches; None: `keras.config.image_data_format()`.

    Returns:
        An `ImageFolder` (dataset, class names, image count, source).

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> import keras
        >>> from keras_residual.datasets.images import image_folder_dataset
        >>> root = tempfile.mkdtemp()
        >>> for name in ("cat", "dog"):
        ...     os.makedirs(os.path.join(root, name))
        ...     keras.utils.save_img(os.path.join(root, name, "a.png"), np.zeros((40, 50, 3)))
        >>> folder = image_folder_dataset(root, image_size=32, batch_size=2)
        >>> images, labels = next(iter(folder.dataset))
        >>> images.shape.as_list(), labels.numpy().tolist()
        ([2, 32, 32, 3], [0, 1])
    """
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"`preprocessing` must be one of {PREPROCESSING_MODES}. Received: {preprocessing!r}"
        )
    if image_size < 1 or batch_size < 1:
        raise ValueError(
            "`image_size` and `batch_size` must be positive. "
            f"Received: image_size={image_size}, batch_size={batch_size}"
        )
    data_format = data_format or keras.config.image_data_format()
    paths, labels, class_names = list_image_folder(directory)

    def load(path, label):
        raw = tf.io.read_file(path)
        image = tf.image.decode_image(raw, channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if training:
            image = random_resized_crop(image, image_size, area_range, seed=seed)
            image = tf.image.random_flip_left_right(image, seed=seed)
        else:
            image = center_crop(image, image_size, crop_fraction)
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        image = preprocess(image, preprocessing)
        if data_format == "channels_first":
            image = tf.transpose(image, (2, 0, 1))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths), tf.constant(np.asarray(labels, dtype=np.int32)))
    )
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
    source = (
        f"image folder {os.path.abspath(directory)}: {len(paths)} images in "
        f"{len(class_names)} classes ({'training' if training else 'evaluation'} pipeline, "
        f"{preprocessing!r} preprocessing)"
    )
    return ImageFolder(dataset, class_names, len(paths), source)
