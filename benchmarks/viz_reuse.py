"""Eight guided_backprop / guided_grad_cam calls in a loop against eight calls of one prepared object.

`viz.guided_backprop(model, ...)` used to make a rectified copy of the model
and trace a new gradient function on every call (TensorFlow warned about
retracing after five). It now reuses one `UnitGradient` per model and rule
(`viz.shared_unit_gradient`, keyed weakly on the model) and copies the
model's current weights into its rectified copy before each call; `grad_cam`
and `guided_grad_cam` reuse one `GradCam` the same way. The goal is a loop
of eight function calls costing at most 1.5x eight calls of the object the
user would otherwise keep. In one run, on the same model and images, with
repetitions interleaved after a warm-up, this times:

- "UnitGradient x8": one `viz.UnitGradient(model)`, made before timing,
  called for channels 0-7 of one layer;
- "guided_backprop x8": `viz.guided_backprop(model, path, c, images)` for
  the same eight channels;
- "GradCam.guided x8" and "guided_grad_cam x8": the same for Guided
  Grad-CAM (Springenberg et al. 2015; Selvaraju et al. 2017, Sec. 3), one
  class per call.

Before timing, on the model with random BatchNorm statistics and weights, the
function calls must return what the prepared objects return (within 1e-5 of
the largest value; `bench.compare_outputs`, which also fails on degenerate
gradients), then again after the model's weights change (one SGD step): a
shared object that kept the old weights fails there. Exit status 1 on a
mismatch.

    python benchmarks/viz_reuse.py                    # ResNet-18 at 64x64, current backend
    python benchmarks/viz_reuse.py --backend all      # each backend in its own process
    python benchmarks/viz_reuse.py --quick            # a small MNIST ResNet, seconds
"""

from __future__ import annotations

import argparse

import _backends as bench
import numpy as np

CALLS = 8


def _model(quick: bool, size: int):
    from keras_residual.models import mnist_resnet, resnet18

    if quick:
        return mnist_resnet(blocks=(1, 1), filters=(8, 16), input_shape=(16, 16, 1)), \
            "conv2_block1"
    return resnet18(input_shape=(size, size, 3), classes=10), "conv4_block2"


def _loops(model, path: str, images: np.ndarray) -> dict:
    """The four timed variants: eight calls each, returning their stacked outputs."""
    from keras_residual import viz

    unit = viz.UnitGradient(model)
    cam = viz.GradCam(model)
    classes = model.output.shape[-1]
    return {
        "UnitGradient x8": lambda: np.stack([unit(path, c, images) for c in range(CALLS)]),
        "guided_backprop x8": lambda: np.stack(
            [viz.guided_backprop(model, path, c, images) for c in range(CALLS)]),
        "GradCam.guided x8": lambda: np.stack(
            [cam.guided(path, c % classes, images) for c in range(CALLS)]),
        "guided_grad_cam x8": lambda: np.stack(
            [viz.guided_grad_cam(model, path, c % classes, images) for c in range(CALLS)]),
    }


PAIRS = (("UnitGradient x8", "guided_backprop x8"), ("GradCam.guided x8", "guided_grad_cam x8"))


def check(model, path: str, images: np.ndarray, pairs: tuple = PAIRS) -> list[str]:
    """Problems: the function calls against fresh prepared objects, before and after a step."""
    import keras

    problems = []
    for when in ("as built", "after one SGD step"):
        loops = _loops(model, path, images)  # fresh objects: the model's current weights
        outputs = {name: loops[name]() for pair in pairs for name in pair}
        for reference, other in pairs:
            problems += [f"{when}: {p}" for p in bench.compare_outputs(
                {reference: outputs[reference], other: outputs[other]}, reference, rtol=1e-5,
                what="gradients")]
        if when == "as built":
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
            target = np.random.default_rng(1).normal(size=(len(images), model.output.shape[-1]))
            model.train_on_batch(images, target.astype("float32"))
    return problems


def measure(args: argparse.Namespace) -> list[dict]:
    """Check, then time the loops; one row per pair (function calls / prepared object)."""
    import keras

    keras.utils.set_random_seed(0)
    model, path = _model(args.quick, args.size)
    bench.randomize_batchnorm(model)
    shape = tuple(model.input_shape[1:])
    images = np.random.default_rng(0).normal(size=(args.batch,) + shape).astype("float32")
    backend = keras.backend.backend()
    problems = check(model, path, images)
    bench.require_agreement(problems, f"[{backend}] MISMATCH: the shared objects compute "
                            "something else than fresh ones", f"[{backend}] {model.name}, "
                            f"{args.batch} images of {shape}, path {path}: function calls "
                            "agree with prepared objects, before and after a training step")
    timing = bench.paired_timing(_loops(model, path, images), args.reps)
    rows = []
    for baseline, loop in PAIRS:
        ratio = bench.Spread.of(timing.times(loop) / timing.times(baseline))
        rows.append({"backend": backend, "model": model.name, "loop": loop,
                     "prepared_ms": 1e3 * timing.seconds(baseline),
                     "loop_ms": 1e3 * timing.seconds(loop),
                     "ratio": ratio.median, "q1": ratio.q1, "q3": ratio.q3})
    return rows


# One line per backend and loop; ratio = function calls / prepared object (goal <= 1.5).
print_table = bench.table_printer(
    f"{'backend':<11} {'model':<13} {'loop':<20} {'prepared ms':>11} {'loop ms':>8} "
    f"{'ratio':>6} {'[q1, q3]':>14}",
    "{backend:<11} {model:<13} {loop:<20} {prepared_ms:11.1f} {loop_ms:8.1f} {ratio:6.2f} "
    "[{q1:.2f}, {q3:.2f}]")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time, and print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--size", type=int, default=64, help="ResNet-18 image side")
    parser.add_argument("--batch", type=int, default=4, help="images per call")
    parser.add_argument("--reps", type=int, default=5, help="paired, interleaved repetitions")
    parser.add_argument("--quick", action="store_true",
                        help="a 2-block MNIST ResNet on 16x16, 2 images, 3 reps: a smoke run")
    bench.run_benchmark(__file__, parser, measure, print_table, {"batch": 2, "reps": 3}, argv)


if __name__ == "__main__":
    main()
