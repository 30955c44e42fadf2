"""Bolte's (2016) MNIST images for a trained residual CNN and its plain twin.

For each model: the first-layer filters, the activations of every block on
one digit, what each residual block adds (F(x)), and Chu et al.'s (2017) top-9
patches with guided backpropagation for a few channels of each stage. Then
Grad-CAM and Guided Grad-CAM of the last block for a few test digits
(Selvaraju et al. 2017, Fig. 1): where each model looks for its predicted
class.

    python examples/visualize_mnist.py --out mnist_images          # ~1-2 minutes on CPU
    python examples/visualize_mnist.py --out mnist_images --quick  # a smoke test

`make demo` calls `demo_section(residual_model, plain_model, data, out_dir)` and
`grad_cam_section(...)` with the same arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # Keras and the package are imported where used: --help answers without them
    import keras

#: Test digits searched for the top-9 (enough for distinct patches, fast on CPU).
TOPK_IMAGES = 600
#: Channels shown per stage in the top-9 figures.
CHANNELS = (0, 1, 2, 3)
#: Test digits shown in the Grad-CAM figures.
GRAD_CAM_DIGITS = 8


def first_conv(model: keras.Model) -> keras.layers.Conv2D:
    """The first Conv2D layer of `model`, nested ones included (the filters Bolte (2016) shows)."""
    import keras

    from keras_residual.probe import list_paths, resolve_path

    for path in list_paths(model):
        layer = resolve_path(model, path)
        if isinstance(layer, keras.layers.Conv2D):
            return layer
    raise ValueError(f"Model {model.name!r} has no Conv2D layer.")


def stages(model: keras.Model) -> list[list[str]]:
    """Top-level Residual blocks grouped by output shape, in order (res2a, res2b, ... per stage)."""
    from keras_residual.residual import Residual

    groups: list[list[str]] = []
    last = None
    for layer in model.layers:
        if not isinstance(layer, Residual):
            continue
        shape = tuple(layer.output.shape)
        if shape != last:
            groups.append([])
            last = shape
        groups[-1].append(layer.name)
    return groups


def model_figures(
    model: keras.Model, images: np.ndarray, out_dir: str, tag: str
) -> list[tuple[str, str]]:
    """Writes one model's four figures; returns (caption, path relative to out_dir)."""
    from keras_residual.viz import plots
    from keras_residual.viz.guided import UnitGradient, guided_patches
    from keras_residual.viz.images import activation_grid, kernel_map, residual_differences
    from keras_residual.viz.receptive_field import receptive_field
    from keras_residual.viz.top_activations import top_activations

    digit = images[0]
    blocks = [name for stage in stages(model) for name in stage]
    stem = first_conv(model)
    written = []

    def save(fig, name: str, caption: str) -> None:
        relative = f"{tag}_{name}.png"
        plots.save_figure(fig, os.path.join(out_dir, relative))
        written.append((caption, relative))

    save(plots.kernel_figure(kernel_map(stem), f"{tag}: {stem.name} filters"), "filters",
         f"{tag}: first-layer filters ({stem.name}), each scaled on its own")
    grids = {path: activation_grid(model, path, digit) for path in blocks}
    save(plots.activation_figure(grids, digit[..., 0]), "activations",
         f"{tag}: channels of each block on one test digit (Bolte 2016)")
    save(plots.residual_difference_figure(residual_differences(model, digit), digit[..., 0]),
         "residual_differences",
         f"{tag}: what each block changes, output minus input (projection blocks: F(x))")
    gradient = UnitGradient(model, "guided")
    for index, stage in enumerate(stages(model)):
        top = top_activations(model, stage, images, k=9, progress=False)
        patches, grads = {}, {}
        for path in stage:
            patches[path], grads[path] = guided_patches(
                gradient, path, images, top[path], receptive_field(model, path), CHANNELS)
        save(plots.topk_figure(patches, grads, CHANNELS,
                               title=f"{tag}: top-9 patches and guided backprop"),
             f"top9_stage{index + 1}",
             f"{tag}: stage {index + 1}, top-9 test digits per channel beside their guided "
             "backpropagation (Chu et al.'s (2017) layout; one row per block)")
    return written


def demo_section(
    residual_model: keras.Model, plain_model: keras.Model, data, out_dir: str
) -> list[tuple[str, str]]:
    """The figures `make demo` shows for the trained residual CNN and its plain twin.

    Args:
        residual_model: keras.Model. From `examples/mnist_conv.py::train_pair`.
        plain_model: keras.Model. Its plain twin.
        data: MnistData in the "image" layout.
        out_dir: str. Folder for the PNGs.

    Returns:
        list of (caption, PNG path relative to `out_dir`).

    Example:
        >>> import tempfile
        >>> from examples_mnist_conv import build_mnist_cnn  # doctest: +SKIP
        >>> demo_section(build_mnist_cnn(), build_mnist_cnn(False), load_mnist(), tempfile.mkdtemp())  # doctest: +SKIP
    """
    images = data.x_test[:TOPK_IMAGES]
    os.makedirs(out_dir, exist_ok=True)
    return model_figures(residual_model, images, out_dir, "residual") + model_figures(
        plain_model, images, out_dir, "plain"
    )


def grad_cam_figure(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, out_dir: str, tag: str
) -> tuple[str, str]:
    """Grad-CAM and Guided Grad-CAM of the last block for each digit's predicted class.

    Returns:
        (caption, PNG path relative to out_dir).
    """
    import keras

    from keras_residual.viz import plots
    from keras_residual.viz.gradcam import GradCam

    last = [name for stage in stages(model) for name in stage][-1]
    cam = GradCam(model)  # one trace for both calls below
    predicted = np.argmax(keras.ops.convert_to_numpy(model(images, training=False)), axis=-1)
    maps = cam(last, predicted, images, upsample=True)
    guided = cam.guided(last, predicted, images)
    titles = [f"label {y}, predicted {p}" for y, p in zip(labels, predicted, strict=True)]
    fig = plots.gradcam_figure(images[..., 0], maps, titles, guided=guided[..., 0])
    fig.suptitle(f"{tag}: Grad-CAM at {last} (top) and Guided Grad-CAM (bottom)")
    relative = f"{tag}_grad_cam.png"
    plots.save_figure(fig, os.path.join(out_dir, relative))
    return (f"{tag}: Grad-CAM of block {last!r} for the predicted digit over the input, with "
            "its colour bar, and Guided Grad-CAM below (Selvaraju et al. 2017, Fig. 1)", relative)


def grad_cam_section(
    residual_model: keras.Model, plain_model: keras.Model, data, out_dir: str
) -> list[tuple[str, str]]:
    """The Grad-CAM figures `make demo` shows, one per model (same arguments as `demo_section`).

    Returns:
        list of (caption, PNG path relative to `out_dir`).
    """
    os.makedirs(out_dir, exist_ok=True)
    images = data.x_test[:GRAD_CAM_DIGITS]
    labels = np.asarray(data.y_test[:GRAD_CAM_DIGITS])
    return [grad_cam_figure(model, images, labels, out_dir, tag)
            for model, tag in ((residual_model, "residual"), (plain_model, "plain"))]


def _load_mnist_conv():
    """examples/mnist_conv.py, imported by path (examples are scripts, not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_conv.py")
    spec = importlib.util.spec_from_file_location("examples_mnist_conv", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Command line: train the pair, then write the figures."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mnist_images", help="folder for the figures")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of each CNN")
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch on 512 digits with two blocks (a smoke test)")
    args = parser.parse_args(argv)
    from keras_residual.datasets import load_mnist  # Keras loads only now, after --help

    data = load_mnist()
    mnist_conv = _load_mnist_conv()
    if args.quick:
        residual, plain, _ = mnist_conv.train_pair(
            data, verbose=0, **{**mnist_conv.QUICK, "widths": (16, 32)})
    else:
        residual, plain, _ = mnist_conv.train_pair(data, epochs=args.epochs, verbose=2)
    written = demo_section(residual, plain, data, args.out)
    written += grad_cam_section(residual, plain, data, args.out)
    for caption, path in written:
        print(f"{os.path.join(args.out, path)}: {caption}")
    return written


if __name__ == "__main__":
    main()
