"""Guided backpropagation and deconvnet time per unit against one plain input gradient.

Zeiler & Fergus (2014) and Springenberg et al. (2015) show a backprojected
image beside every top-9 patch; this measures what that costs. In one run,
on the same model, layer, channel and images, it times `UnitGradient` under
the "plain" rule (an ordinary input gradient of one unit per image) and under
the "guided" and "deconvnet" rules (the same gradient through a rectified
copy of the model), and prints the ratio. The one-time cost of making the
rectified copy is printed apart.

The three rules differ only in the backward pass: the script checks that
each rule's model computes the same feature maps at the layer as the
original (random BatchNorm statistics, so a weight copied to the wrong layer
shows) and exits 1 if not.

    python benchmarks/guided_backprop.py                      # ResNet-50, 224x224
    python benchmarks/guided_backprop.py --size 112 --batch 8 --repeats 5
    python benchmarks/guided_backprop.py --backend all        # each backend in its own process
    python benchmarks/guided_backprop.py --quick              # seconds, for CI
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _backends import add_backend_arguments, needs_dispatch, run_per_backend, write_rows

RULES = ("plain", "guided", "deconvnet")


def _timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Seconds per unit and copy time for each rule; the rules whose forward pass differs."""
    import keras

    from keras_residual.models import resnet50
    from keras_residual.viz.guided import UnitGradient

    keras.utils.set_random_seed(0)
    model = resnet50(input_shape=(args.size, args.size, 3), blocks=tuple(args.blocks))
    rng = np.random.default_rng(0)
    for variable in model.weights:  # random BatchNorm statistics, scales and offsets
        if variable.name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif variable.name in ("beta", "moving_mean"):
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))
    images = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    print(f"backend {keras.backend.backend()}, ResNet-50 (untrained, blocks {tuple(args.blocks)}), "
          f"{args.batch} images of {args.size}x{args.size}, unit: {args.path} channel "
          f"{args.channel} (max position)")

    rows, problems, reference = [], [], None
    for rule in RULES:
        start = time.perf_counter()
        gradient = UnitGradient(model, rule)
        setup = time.perf_counter() - start
        seconds = _timed(lambda g=gradient: g(args.path, args.channel, images), args.repeats)
        # Not timed: this rule's model up to the layer, against the original's.
        features = keras.ops.convert_to_numpy(gradient.features(args.path)(images, training=False))
        if reference is None:
            reference = features
        elif not np.allclose(features, reference, rtol=1e-4, atol=1e-4):
            worst = float(np.abs(features - reference).max())
            problems.append(f"{rule}: feature maps differ from the model's by {worst:.2e}")
        rows.append({"backend": keras.backend.backend(), "rule": rule, "setup": setup,
                     "per_unit": seconds / args.batch})
    plain = rows[0]["per_unit"]
    for row in rows:
        row["ratio"] = row["per_unit"] / plain
    return rows, problems


def print_table(rows: list[dict]) -> None:
    print(f"{'backend':<12}{'rule':<10} {'setup s':>8} {'ms / unit':>10} {'x plain':>8}")
    for row in rows:
        print(f"{row['backend']:<12}{row['rule']:<10} {row['setup']:8.2f} "
              f"{1e3 * row['per_unit']:10.1f} {row['ratio']:8.2f}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    parser.add_argument("--batch", type=int, default=4, help="images (= units) per call (default: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per rule (default: 3)")
    parser.add_argument("--blocks", type=int, nargs=4, default=[3, 4, 6, 3],
                        help="blocks per stage (default: ResNet-50's 3 4 6 3)")
    parser.add_argument("--path", default="conv4_block3/branch/conv4_block3_2_conv",
                        help="layer path of the unit (default: %(default)s)")
    parser.add_argument("--channel", type=int, default=7, help="channel of the unit (default: 7)")
    parser.add_argument("--quick", action="store_true",
                        help="blocks 1 1 1 1, 32x32, 2 images, 1 repeat, unit in conv4_block1")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.repeats, args.blocks = 32, 2, 1, [1, 1, 1, 1]
        args.path = "conv4_block1/branch/conv4_block1_2_conv"
    if needs_dispatch(args.backend):
        print_table(run_per_backend(__file__, argv, args.backend))
        return
    rows, problems = measure(args)
    print_table(rows)
    write_rows(args.rows_out, rows)
    if problems:
        print("The rectified copies do not compute the model's features:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(1)
    print("The guided and deconvnet copies compute the model's feature maps.")


if __name__ == "__main__":
    main()
