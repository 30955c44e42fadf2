"""One feature-visualization step against one plain forward + backward pass of the same batch.

A step of `viz.feature_visualization` (Olah et al. 2017) maps its Fourier
parameters to images (two small matrix products per image, the color matrix and
a sigmoid), applies this step's random jitter, scale and rotation (a gather of
four neighbours), runs the model to the layer and back, and returns the
gradient with respect to the parameters. Its extra work over the model's own
forward and backward pass should be small (goal: <= 1.3x). In one run, with
repetitions interleaved after a warm-up, this times:

- "forward+backward": the gradient of the same objective (each image's channel
  mean at the layer) with respect to the same batch of images
  (`gradients.input_gradient_function`, compiled with `tf.function` on
  TensorFlow like the step);
- "step": one `feature_visualization` step, transforms on.

Before timing, on the model with random BatchNorm statistics, the two are
checked to compute the same derivative: without transforms, the step's
gradient must equal the forward+backward gradient at the step's images pulled
back through the parameterization (its vector-Jacobian product, by autodiff of
`FourierImage.to_image` alone), within 1e-4 relative; degenerate gradients (all
zero, or the same for every image) or a mismatch exit with status 1.

    python benchmarks/feature_vis.py                  # ResNet-50 at 112x112, current backend
    python benchmarks/feature_vis.py --backend all    # each backend in its own process
    python benchmarks/feature_vis.py --quick          # CIFAR ResNet-20, seconds
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


def measure(args: argparse.Namespace) -> list[dict]:
    """Check the chain rule, then time forward+backward and one step."""
    import keras
    from keras import ops

    from keras_residual.gradients import input_gradient, input_gradient_function
    from keras_residual.probe import probe
    from keras_residual.viz.feature_vis import _ascent

    keras.utils.set_random_seed(0)
    model, path = _model(args.quick, args.size)
    bench.randomize_batchnorm(model)
    backend = keras.backend.backend()
    channels = list(range(0, 4 * args.batch, 4))[: args.batch]
    common = dict(size=None, objective="channel", parameterization="fourier", decorrelate=True,
                  seed=0, value_range=(0.0, 1.0))
    param, params, plain_step, _ = _ascent(model, path, channels, transforms=False, **common)
    features = probe(model, path)
    chosen = np.eye(features.output.shape[-1], dtype="float32")[channels]

    def objective(x, onehot):
        act = ops.mean(ops.cast(features(x, training=False), "float32"), axis=(1, 2))
        return ops.sum(act * onehot)

    forward_backward = input_gradient_function(objective)
    # Non-degenerate parameters: a few random steps' worth away from the flat start.
    params = params + np.random.default_rng(1).normal(0, 0.5, params.shape).astype("float32")
    images = keras.ops.convert_to_numpy(param.to_image(params))
    g_image = forward_backward(images, chosen)
    upstream = ops.convert_to_tensor(g_image)
    pulled = input_gradient(lambda p: ops.sum(param.to_image(p) * upstream), params)
    step_gradient = plain_step(params)
    reason = bench.degenerate(g_image, "image gradients") or bench.degenerate(pulled, "pulled")
    error = float("inf") if reason else bench.relative_difference(step_gradient, pulled)
    print(f"[{backend}] {model.name}, {len(channels)} channels of {path}: step gradient vs "
          f"forward+backward pulled through the parameterization, max relative difference "
          f"{error:.2e}")
    bench.require_agreement([] if error < 1e-4 else [f"max relative difference {error:.2e}"],
                            f"[{backend}] MISMATCH: the step's gradient is not the chain rule")

    _, params, step, _ = _ascent(model, path, channels, transforms=True, **common)
    timing = bench.paired_timing({"forward+backward": lambda: forward_backward(images, chosen),
                                  "step": lambda: step(params)}, args.reps)
    ratio = timing.slowdown("step")
    return [{
        "backend": backend, "model": model.name, "path": path, "batch": len(channels),
        "fwd_bwd_ms": 1e3 * timing.seconds("forward+backward"),
        "step_ms": 1e3 * timing.seconds("step"),
        "ratio": ratio.median, "q1": ratio.q1, "q3": ratio.q3, "max_rel_diff": error,
    }]


# One line per backend; ratio = step / forward+backward (goal <= 1.3).
print_table = bench.table_printer(
    f"{'backend':<11} {'model':<15} {'path':<14} {'batch':>5} {'fwd+bwd ms':>10} "
    f"{'step ms':>8} {'ratio':>6} {'[q1, q3]':>14}",
    "{backend:<11} {model:<15} {path:<14} {batch:5d} {fwd_bwd_ms:10.1f} {step_ms:8.1f} "
    "{ratio:6.2f} [{q1:.2f}, {q3:.2f}]")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time, and print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--size", type=int, default=112, help="ResNet-50 image side")
    parser.add_argument("--batch", type=int, default=4, help="channels (images) per step")
    parser.add_argument("--reps", type=int, default=7, help="paired, interleaved repetitions")
    parser.add_argument("--quick", action="store_true",
                        help="CIFAR ResNet-20 on 32x32, 4 channels, 3 reps: a smoke run")
    bench.run_benchmark(__file__, parser, measure, print_table, {"batch": 4, "reps": 3}, argv)


if __name__ == "__main__":
    main()
