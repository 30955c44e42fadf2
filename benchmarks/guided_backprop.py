"""Guided backpropagation and deconvnet time per unit against one plain input gradient.

Zeiler & Fergus (2014) and Springenberg et al. (2015) show a backprojected
image beside every top-9 patch; this measures what that costs. In one run,
on the same model, layer, channel and images, it times `UnitGradient` under
the "plain" rule (an ordinary input gradient of one unit per image) and under
the "guided" and "deconvnet" rules (the same gradient through a rectified
copy of the model), repetitions interleaved after a warm-up, and prints the
median of the paired per-repetition ratios rule / plain. The one-time cost of
making the rectified copy is printed apart.

The three rules differ only in the backward pass: before timing, the script
checks that each rule's model computes the same feature maps at the layer as
the original (random BatchNorm statistics, so a weight copied to the wrong
layer shows) and exits 1 if not.

    python benchmarks/guided_backprop.py                      # ResNet-50, 224x224
    python benchmarks/guided_backprop.py --size 112 --batch 8 --repeats 5
    python benchmarks/guided_backprop.py --backend all        # each backend in its own process
    python benchmarks/guided_backprop.py --quick              # seconds, for CI
"""

from __future__ import annotations

import argparse

import _backends as bench
import numpy as np

RULES = ("plain", "guided", "deconvnet")


def measure(args: argparse.Namespace) -> list[dict]:
    """Check each rule's forward pass, then time the rules: seconds per unit and copy time."""
    import keras

    from keras_residual.models import resnet50
    from keras_residual.viz.guided import UnitGradient

    keras.utils.set_random_seed(0)
    model = resnet50(input_shape=(args.size, args.size, 3), blocks=tuple(args.blocks))
    bench.randomize_batchnorm(model)
    images = np.random.default_rng(0).normal(
        size=(args.batch, args.size, args.size, 3)).astype("float32")
    print(f"backend {keras.backend.backend()}, ResNet-50 (untrained, blocks {tuple(args.blocks)}), "
          f"{args.batch} images of {args.size}x{args.size}, unit: {args.path} channel "
          f"{args.channel} (max position)")

    setup = bench.paired_timing({rule: lambda r=rule: UnitGradient(model, r) for rule in RULES},
                                reps=1, warmup=0, keep_outputs=True)
    gradients = setup.outputs
    # Not timed: each rule's model up to the layer, against the original's.
    features = {rule: keras.ops.convert_to_numpy(g.features(args.path)(images, training=False))
                for rule, g in gradients.items()}
    problems = [
        f"{rule}: feature maps differ from the model's by "
        f"{float(np.abs(features[rule] - features['plain']).max()):.2e}"
        for rule in RULES[1:]
        if not np.allclose(features[rule], features["plain"], rtol=1e-4, atol=1e-4)
    ]
    bench.require_agreement(problems, "The rectified copies do not compute the model's features:",
                            "The guided and deconvnet copies compute the model's feature maps.")

    timing = bench.paired_timing({rule: lambda g=g: g(args.path, args.channel, images)
                                  for rule, g in gradients.items()}, args.repeats)
    return [{"backend": keras.backend.backend(), "rule": rule, "setup": setup.seconds(rule),
             "ms_per_unit": 1e3 * timing.seconds(rule) / args.batch,
             "ratio": timing.slowdown(rule).median} for rule in RULES]


print_table = bench.table_printer(
    f"{'backend':<12}{'rule':<10} {'setup s':>8} {'ms / unit':>10} {'x plain':>8}",
    "{backend:<12}{rule:<10} {setup:8.2f} {ms_per_unit:10.1f} {ratio:8.2f}")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time the rules, print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
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
    quick = {"size": 32, "batch": 2, "repeats": 1, "blocks": [1, 1, 1, 1],
             "path": "conv4_block1/branch/conv4_block1_2_conv"}
    bench.run_benchmark(__file__, parser, measure, print_table, quick, argv)


if __name__ == "__main__":
    main()
