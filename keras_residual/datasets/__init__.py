"""Datasets: MNIST, CIFAR-10 and image folders, each with an offline path that says what it used."""

from keras_residual.datasets.cifar import Cifar10, cifar_augment, cifar_dataset, load_cifar10  # noqa: F401
from keras_residual.datasets.images import ImageFolder, image_folder_dataset, preprocessing_mode  # noqa: F401
from keras_residual.datasets.mnist import MnistData, load_mnist  # noqa: F401
