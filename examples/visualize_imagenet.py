"""Chu et al.'s (2017) study of ResNet-50 over an image folder: top-9 patches, guided backprop, conv1 kernels.

For one stage (e.g. conv2 = res2a, res2b, res2c) and a few channels: the
top-9 image patches of each block beside their guided-backpropagation images
(Figs. 2-6), the same channel inside a branch beside the block output
(Fig. 7, `conv5_block2/branch/conv5_block2_3_conv` vs `conv5_block2`), the
conv1 kernels as an RGB pixel map (Fig. 8), and the refinement numbers: how
many top-9 images a channel keeps from one block to the next (Sec. 3). Last,
Grad-CAM and Guided Grad-CAM of the last block for the top class of a few
crops (Selvaraju et al. 2017, Fig. 1).

ImageNet weights are used when they can be had: keras.applications'
checkpoint in the Keras cache, or a download with `--allow-download`.
Offline the same study runs on untrained weights, and the script says so:
the pictures then show the method, not what ResNet-50 learned.

    python examples/visualize_imagenet.py --out imagenet_images               # sklearn photos
    python examples/visualize_imagenet.py --folder ~/photos --stage conv3
    python examples/visualize_imagenet.py --applications                      # keras.applications.ResNet50
    python examples/visualize_imagenet.py --keras-hub resnet_50_imagenet      # keras-hub weights

`--keras-hub PRESET` converts a keras-hub ResNet preset (downloaded by
keras-hub, so it needs network access) into `Residual` blocks with
`keras_residual.models.load_keras_hub_classifier` and uses the preset's own
preprocessing; offline it stops with a message that says so.
"""

from __future__ import annotations

import argparse
import os
import re

#: Blocks per stage of ResNet-50 (He et al. 2015, Table 1).
BLOCKS = {"conv2": 3, "conv3": 4, "conv4": 6, "conv5": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; standard library only, so it answers before Keras loads."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=None, help="image folder (None: sklearn's sample photos)")
    parser.add_argument("--out", default="imagenet_images", help="folder for the figures")
    parser.add_argument("--stage", default="conv2", choices=sorted(BLOCKS),
                        help="ResNet-50 stage whose blocks are visualized")
    parser.add_argument("--channels", default="12,79,150,210",
                        help="comma-separated channels (Chu et al. (2017) Fig. 2 shows 12,79,150,210)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--crops", type=int, default=24, help="random crops taken as the dataset")
    parser.add_argument("--applications", action="store_true",
                        help="keras.applications.ResNet50 (no Residual layers, no branch paths)")
    parser.add_argument("--allow-download", action="store_true",
                        help="download the ImageNet weights when they are not in the Keras cache")
    parser.add_argument("--keras-hub", default=None, metavar="PRESET",
                        help="a keras-hub ResNet preset, e.g. resnet_50_imagenet (needs network "
                             "access and keras-hub: pip install keras-residual[hub])")
    parser.add_argument("--grad-cam-images", type=int, default=4,
                        help="crops shown with Grad-CAM (0: no Grad-CAM figure)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test of every figure: 64x64, 4 crops, 2 channels, "
                             "2 Grad-CAM crops")
    return parser.parse_args(argv)


if __name__ == "__main__":  # --help and usage errors answer here, before Keras loads
    parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_residual.models import resnet50  # noqa: E402
from keras_residual.viz import plots  # noqa: E402
from keras_residual.viz.gradcam import GradCam  # noqa: E402
from keras_residual.viz.guided import UnitGradient, guided_patches  # noqa: E402
from keras_residual.viz.images import kernel_map  # noqa: E402
from keras_residual.viz.receptive_field import receptive_field  # noqa: E402
from keras_residual.viz.refinement import compare_layers  # noqa: E402

#: keras.applications' ResNet-50 checkpoint, as keras.utils.get_file caches it.
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"


def load_images(folder: str | None, size: int, crops: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """`crops` random size x size RGB crops (uint8) from a folder, or from sklearn's two photos.

    Returns:
        (images, description).

    Example:
        >>> images, source = load_images(None, 64, 4)
        >>> images.shape, images.dtype.name
        ((4, 64, 64, 3), 'uint8')
    """
    if folder is None:
        try:
            from sklearn.datasets import load_sample_images
        except ImportError as error:
            raise SystemExit(
                "The default images are scikit-learn's two sample photographs: "
                "pip install 'keras-residual[examples]', or pass --folder DIR."
            ) from error

        photos = list(load_sample_images().images)
        source = "scikit-learn's two sample photographs"
    else:
        names = sorted(
            os.path.join(folder, n) for n in os.listdir(folder)
            if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))
        )
        if not names:
            raise ValueError(f"No .jpg/.jpeg/.png/.bmp images in {folder!r}.")
        photos = [np.asarray(keras.utils.load_img(n)) for n in names]
        source = f"{len(names)} images from {folder}"
    rng = np.random.default_rng(seed)
    out = []
    for index in range(crops):
        photo = photos[index % len(photos)]
        scale = size / min(photo.shape[:2])
        if scale > 1:  # small photos: enlarge so a crop fits
            photo = np.asarray(keras.ops.image.resize(photo, (
                int(np.ceil(photo.shape[0] * scale)), int(np.ceil(photo.shape[1] * scale)))))
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        out.append(photo[top : top + size, left : left + size, :3])
    return np.stack(out).astype("uint8"), f"{crops} random {size}x{size} crops of {source}"


def load_model(applications: bool, size: int, allow_download: bool) -> tuple[keras.Model, bool]:
    """ResNet-50 with ImageNet weights when available; returns (model, pretrained)."""
    cached = os.path.exists(os.path.join(
        os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models", WEIGHTS_FILE))
    weights = "imagenet" if cached or allow_download else None
    build = keras.applications.ResNet50 if applications else resnet50
    if weights is not None:
        try:
            return build(weights=weights, input_shape=(size, size, 3)), True
        except Exception as error:  # any download or file failure means: no weights
            print(f"ImageNet weights unavailable ({type(error).__name__}: {error}).")
    return build(weights=None, input_shape=(size, size, 3)), False


def _caffe(images: np.ndarray) -> np.ndarray:
    return keras.applications.resnet50.preprocess_input(images)


def hub_paths(model: keras.Model, stage: str) -> tuple[list[str], list[str], str, str]:
    """For a model converted from keras-hub: the stage's blocks, Fig. 7's paths, conv1, last block.

    keras-hub presets differ in depth (18 to 200 layers), block type and stem.
    """
    names = [layer.name for layer in model.layers]
    blocks = [n for n in names if re.fullmatch(rf"{stage}_block\d+", n)]
    conv5 = [n for n in names if re.fullmatch(r"conv5_block\d+", n)]
    second = conv5[min(1, len(conv5) - 1)]
    convs = [lyr.name for lyr in model.get_layer(second).layer.layers
             if isinstance(lyr, keras.layers.Conv2D)]
    conv1 = "conv1_conv" if "conv1_conv" in names else "conv1_1_conv"
    return blocks, [conv5[0], f"{second}/branch/{convs[-1]}", second], conv1, conv5[-1]


def stage_paths(stage: str, applications: bool) -> list[str]:
    """Block outputs of one stage: conv2_block1..3 (builder) or conv2_block1_out.. (keras.applications).

    Example:
        >>> stage_paths("conv2", applications=True)
        ['conv2_block1_out', 'conv2_block2_out', 'conv2_block3_out']
    """
    if stage not in BLOCKS:
        raise ValueError(f"`stage` must be one of {tuple(BLOCKS)}. Received: stage={stage!r}")
    suffix = "_out" if applications else ""
    return [f"{stage}_block{i}{suffix}" for i in range(1, BLOCKS[stage] + 1)]


def study(
    model: keras.Model,
    display: np.ndarray,
    paths: list[str],
    channels: list[int],
    out_dir: str,
    name: str,
    preprocess=None,
) -> str:
    """Top-9 patches beside guided backprop for `channels` of each path; returns the PNG path.

    `preprocess` maps RGB images in [0, 255] to the model's inputs (default:
    keras.applications' ResNet-50 preprocessing).
    """
    inputs = (preprocess or _caffe)(display.astype("float32"))
    result = compare_layers(model, paths, inputs, k=9, progress=False)
    for comparison in result.comparisons:
        if comparison.shared.shape[0] == comparison.shared.shape[1]:
            overlap = comparison.same_channel_overlap()
            print(f"{comparison.path_a} -> {comparison.path_b}: a channel keeps "
                  f"{overlap.mean():.2f} of its top-9 images on average "
                  f"(shown channels: {overlap[channels].tolist()})")
    gradient = UnitGradient(model, "guided")
    patches, grads = {}, {}
    for path in paths:
        patches[path], grads[path] = guided_patches(
            gradient, path, inputs, result.topk[path], receptive_field(model, path), channels,
            display=display)
    fig = plots.topk_figure(patches, grads, channels, title=name)
    return plots.save_figure(fig, os.path.join(out_dir, f"{name}.png"))


def grad_cam_study(
    model: keras.Model, display: np.ndarray, path: str, out_dir: str, name: str,
    preprocess=None,
) -> str:
    """Grad-CAM and Guided Grad-CAM at `path` for each crop's top class; returns the PNG path."""
    inputs = (preprocess or _caffe)(display.astype("float32"))
    cam = GradCam(model)  # the softmax of "predictions" is skipped: scores are logits
    probabilities = keras.ops.convert_to_numpy(model(inputs, training=False))
    top = probabilities.argmax(axis=-1)
    maps = cam(path, top, inputs, upsample=True)
    guided = cam.guided(path, top, inputs)
    titles = [f"class {c} (p={probabilities[n, c]:.2f})" for n, c in enumerate(top)]
    fig = plots.gradcam_figure(display, maps, titles, guided=guided)
    fig.suptitle(f"Grad-CAM at {path} (top) and Guided Grad-CAM (bottom)", fontsize=9)
    return plots.save_figure(fig, os.path.join(out_dir, f"{name}.png"))


def main(argv: list[str] | None = None) -> list[str]:
    """Command line; returns the PNG paths written."""
    args = parse_args(argv)
    if args.quick:
        args.size, args.crops, args.grad_cam_images = 64, 4, 2
        args.channels = ",".join(args.channels.split(",")[:2])

    display, source = load_images(args.folder, args.size, args.crops)
    if args.keras_hub:
        return hub_main(args, display, source)
    model, pretrained = load_model(args.applications, args.size, args.allow_download)
    print(f"data: {source}")
    if pretrained:
        print("weights: ImageNet (keras.applications ResNet50 checkpoint)")
    else:
        print("weights: UNTRAINED (random initialization; no ImageNet checkpoint in the Keras "
              "cache and no download). The figures show the method, not learned features.")
    channels = [int(c) for c in args.channels.split(",")]
    tag = "" if pretrained else "_untrained"
    written = [study(model, display, stage_paths(args.stage, args.applications), channels,
                     args.out, f"{args.stage}_top9_guided{tag}")]
    if not args.applications:
        # Chu et al. (2017), Fig. 7: a channel inside res5b's branch beside res5b itself.
        fig7 = ["conv5_block1", "conv5_block2/branch/conv5_block2_3_conv", "conv5_block2"]
        written.append(study(model, display, fig7, channels[:2], args.out, f"fig7_branch{tag}"))
    conv1 = model.get_layer("conv1_conv")
    written.append(plots.save_figure(plots.kernel_figure(kernel_map(conv1), "conv1 kernels"),
                                     os.path.join(args.out, f"conv1_kernels{tag}.png")))
    if args.grad_cam_images > 0:
        last = "conv5_block3_out" if args.applications else "conv5_block3"
        written.append(grad_cam_study(model, display[: args.grad_cam_images], last, args.out,
                                      f"grad_cam_{last}{tag}"))
    for path in written:
        print(f"wrote {path}")
    return written


def hub_main(args: argparse.Namespace, display: np.ndarray, source: str) -> list[str]:
    """The same figures for a keras-hub preset converted into Residual blocks."""
    from keras_residual.models import load_keras_hub_classifier

    try:
        model, preprocess = load_keras_hub_classifier(args.keras_hub,
                                                      input_shape=(args.size, args.size, 3))
    except (ImportError, ValueError) as error:
        raise SystemExit(f"--keras-hub {args.keras_hub}: {error}") from error
    print(f"data: {source}")
    print(f"weights: keras-hub preset {args.keras_hub}, converted into Residual blocks")
    blocks, fig7, conv1, last = hub_paths(model, args.stage)
    width = model.get_layer(blocks[0]).output.shape[-1]
    channels = [int(c) for c in args.channels.split(",") if int(c) < width] or [0, 1]
    tag = f"_{args.keras_hub}"
    written = [
        study(model, display, blocks, channels, args.out, f"{args.stage}_top9_guided{tag}",
              preprocess),
        study(model, display, fig7, channels[:2], args.out, f"fig7_branch{tag}", preprocess),
        plots.save_figure(plots.kernel_figure(kernel_map(model.get_layer(conv1)), f"{conv1} kernels"),
                          os.path.join(args.out, f"conv1_kernels{tag}.png")),
    ]
    if args.grad_cam_images > 0:
        written.append(grad_cam_study(model, display[: args.grad_cam_images], last, args.out,
                                      f"grad_cam_{last}{tag}", preprocess))
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
