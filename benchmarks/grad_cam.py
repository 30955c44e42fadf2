"""Grad-CAM time per image against one plain forward + backward pass of the same model.

Grad-CAM (Selvaraju et al. 2017, Eqs. 1-2) needs the class score's gradient
with respect to one layer. `keras_residual.viz.gradcam.GradCam` gets it from
one forward and one backward pass of the model itself, so it should cost
about what a saliency map costs (goal: <= 1.2x). In one run, on the same
model and images, with repetitions interleaved after a warm-up, this times:

- "forward+backward": the gradient of each image's top class score with
  respect to the input images (`gradients.input_gradient_function`, compiled
  with `tf.function` on TensorFlow like Grad-CAM);
- "grad_cam <path>": `GradCam(model)(path, None, images)`, for the last
  block (the paper's choice, the last convolutional features) and for the
  branch of that block (a nested path).

Each row reports ms per image and the median of the paired per-repetition
ratios Grad-CAM / forward+backward. Before timing, on the model with random
BatchNorm statistics, Grad-CAM's internal gradient at the last block is
checked against two references computed another way: the closed form
W[:, c] / (H W) of global average pooling followed by the dense classifier,
and the gradient of that head written out by hand
(`gradients.input_gradient`, no tapping); the maps are checked too, for a
different class per image (so the closed form differs between images),
within 1e-4 of the largest value. A mismatch, or references that are all
zero or the same for every image, exits with status 1.

    python benchmarks/grad_cam.py                    # ResNet-50 at 112x112, current backend
    python benchmarks/grad_cam.py --backend all      # each backend in its own process
    python benchmarks/grad_cam.py --quick            # CIFAR ResNet-20, seconds
"""

from __future__ import annotations

import argparse

import _backends as bench
import numpy as np


def _model(quick: bool, size: int):
    from keras_residual.models import cifar_resnet, resnet50

    if quick:
        return cifar_resnet(20), "conv4_block3"
    return resnet50(input_shape=(size, size, 3)), "conv5_block3"


def check_gradient(model, path: str, images: np.ndarray) -> float:
    """Largest relative difference of Grad-CAM's gradient and maps from two references.

    Infinite when the references are degenerate (`bench.degenerate`: all zero,
    or the same for every image), on which any Grad-CAM would agree.
    """
    import keras
    from keras import ops

    from keras_residual.gradients import input_gradient
    from keras_residual.probe import probe
    from keras_residual.viz.gradcam import GradCam

    cam = GradCam(model)
    # A different class per image: an untrained net's argmax is often one class for all,
    # and the closed form below would then be the same for every image.
    classes = np.arange(len(images)) % model.output.shape[-1]
    activations, gradients = cam.gradients(path, classes, images)
    kernel = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel)
    bias = keras.ops.convert_to_numpy(model.get_layer("predictions").bias)
    features = keras.ops.convert_to_numpy(probe(model, path)(images, training=False))
    spatial = features.shape[1] * features.shape[2]
    closed = kernel[:, classes].T[:, None, None, :] / spatial * np.ones_like(features)

    def head_score(a):  # global average pooling, then the dense logits of each image's class
        logits = ops.add(ops.matmul(ops.mean(a, axis=(1, 2)), ops.convert_to_tensor(kernel)),
                         ops.convert_to_tensor(bias))
        return ops.sum(ops.take_along_axis(logits, ops.convert_to_tensor(classes[:, None]), 1))

    autograd = input_gradient(head_score, features)
    maps = cam(path, classes, images)
    reference_maps = np.maximum((closed.mean(axis=(1, 2), keepdims=True) * features).sum(-1), 0)

    for name, values in (("features", features), ("gradients", closed), ("maps", reference_maps)):
        reason = bench.degenerate(values, name)
        if reason is not None:  # the comparison would pass trivially
            return float("inf")
    rel = bench.relative_difference
    return max(rel(activations, features), rel(gradients, closed), rel(gradients, autograd),
               rel(maps, reference_maps))


def measure(args: argparse.Namespace) -> list[dict]:
    """Check the gradient, then time forward+backward and Grad-CAM; one row per path."""
    import keras
    from keras import ops

    from keras_residual.gradients import input_gradient_function
    from keras_residual.viz.gradcam import GradCam

    batch, reps = args.batch, args.reps
    keras.utils.set_random_seed(0)
    model, path = _model(args.quick, args.size)
    bench.randomize_batchnorm(model)  # fresh statistics (some scales 0) would hide a skipped layer
    shape = tuple(model.input_shape[1:])
    images = np.random.default_rng(0).normal(size=(batch,) + shape).astype("float32")
    error = check_gradient(model, path, images)
    backend = keras.backend.backend()
    print(f"[{backend}] {model.name}, {batch} images of {shape}: Grad-CAM gradient vs closed "
          f"form and hand-written head autograd (classes 0..{batch - 1}), max relative difference {error:.2e}")
    bench.require_agreement([] if error < 1e-4 else [f"max relative difference {error:.2e}"],
                            f"[{backend}] MISMATCH: Grad-CAM's gradient differs from the references")

    def score(x, classes):
        outputs = model(x, training=False)
        return ops.sum(ops.take_along_axis(outputs, ops.expand_dims(classes, 1), axis=1))

    plain = input_gradient_function(score)
    classes = np.argmax(keras.ops.convert_to_numpy(model(images, training=False)), axis=1)
    cam = GradCam(model)
    rows = []
    for target in (path, f"{path}/branch"):
        timing = bench.paired_timing({"forward+backward": lambda: plain(images, classes),
                                      "grad_cam": lambda t=target: cam(t, None, images)}, reps)
        ratio = timing.slowdown("grad_cam")
        rows.append({
            "backend": backend, "model": model.name, "path": target,
            "fwd_bwd_ms": 1e3 * timing.seconds("forward+backward") / batch,
            "grad_cam_ms": 1e3 * timing.seconds("grad_cam") / batch,
            "ratio": ratio.median, "q1": ratio.q1, "q3": ratio.q3,
            "max_rel_diff": error,
        })
    return rows


# One line per backend and path; ratio = Grad-CAM / forward+backward (goal <= 1.2).
print_table = bench.table_printer(
    f"{'backend':<11} {'model':<15} {'path':<22} {'fwd+bwd ms/img':>14} "
    f"{'Grad-CAM ms/img':>15} {'ratio':>6} {'[q1, q3]':>14}",
    "{backend:<11} {model:<15} {path:<22} {fwd_bwd_ms:14.1f} {grad_cam_ms:15.1f} {ratio:6.2f} "
    "[{q1:.2f}, {q3:.2f}]")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time, and print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--size", type=int, default=112, help="ResNet-50 image side")
    parser.add_argument("--batch", type=int, default=4, help="images per call")
    parser.add_argument("--reps", type=int, default=5, help="paired, interleaved repetitions")
    parser.add_argument("--quick", action="store_true",
                        help="CIFAR ResNet-20 on 32x32, 4 images, 3 reps: a smoke run")
    bench.run_benchmark(__file__, parser, measure, print_table, {"batch": 4, "reps": 3}, argv)


if __name__ == "__main__":
    main()
