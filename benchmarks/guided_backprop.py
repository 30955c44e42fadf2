"""Guided backpropagation and deconvnet time per unit against one plain input gradient.

Zeiler & Fergus (2014) and Springenberg et al. (2015) show a backprojected
image beside every top-9 patch; this measures what that costs. In one run,
on the same model, layer, channel and images, it times `UnitGradient` under
the "plain" rule (an ordinary input gradient of one unit per image) and under
the "guided" and "deconvnet" rules (the same gradient through a rectified
copy of the model), repetitions interleaved after a warm-up, and prints the
median of the paired per-repetition ratios rule / plain. The one-time cost of
making the rectified copy is printed apart.

The three rules differ only in the backward pass. Before timing, on random
BatchNorm scales, offsets and statistics (so a weight copied to the wrong
layer shows), the script checks that each rule's model computes the same
feature maps at the layer as the original (within 1e-5 of the largest
value), that the plain gradient of the timed unit matches central
differences of the original model, and that the guided and deconvnet
gradients of a unit just above the stem match central differences of that
unit with its negative weights zeroed, which is what both rules compute there
(`check_gradients`); each within 5e-3 of the gradient's norm. It exits 1 if
not.

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


EARLY = "conv2_block1/branch/conv2_block1_1_conv"  # the 1x1 conv right above the stem's pool
# Finite differences against a gradient, relative to its norm (`finite_difference_error`).
# Measured on the quick net: 7e-4 at eps 1e-4, 9e-3 at 1e-3, 4e-2 at 1e-2; at 224x224
# (conv4_block3) 4.6e-3 at 1e-4. A wrong gradient (another channel, another rule) is off
# by 0.5 or more.
TOLERANCE = 5e-3


def unit_function(features, channel: int, images: np.ndarray):
    """(x -> each image's unit of `channel`, the units' flat positions): fixed at `images`.

    The unit is the channel's strongest position in each image, as `UnitGradient` picks.
    """
    import keras

    def values(x):
        maps = keras.ops.convert_to_numpy(features(x, training=False))[..., channel]
        return maps.reshape(len(x), -1).astype("float64")

    strongest = values(images).argmax(axis=1)
    return (lambda x: values(x)[np.arange(len(x)), strongest]), strongest


def finite_difference_error(f, images: np.ndarray, gradient: np.ndarray,
                            steps: tuple = (1e-4, 3e-5, 1e-5)) -> float:
    """How far central differences of `f` are from `gradient`, relative to its norm.

    Per image, the directional derivative <gradient, v> against
    (f(x + h v) - f(x - h v)) / (2 h), h = eps * sqrt(image size) (each pixel
    moves by about eps), for v = the gradient's direction (checks its length)
    and two random unit directions (check where it points): the largest
    |difference| / |gradient| over images and directions. The nets are
    piecewise linear: a longer step crosses more ReLU kinks and max-pool
    switches (an error that grows with eps), a shorter one loses more to
    float32 rounding; the smallest error over the step sizes `steps` (eps)
    is returned, so a right gradient passes where one step size suits it and
    a wrong one fails at all of them. A zero gradient counts as infinitely
    far (it would agree trivially).
    """
    rng = np.random.default_rng(3)
    n = len(images)
    flat = gradient.reshape(n, -1).astype("float64")
    norms = np.linalg.norm(flat, axis=1)
    if not np.all(norms > 0):
        return float("inf")
    size = np.sqrt(flat.shape[1])
    directions = [flat / norms[:, None]]
    directions += [d / np.linalg.norm(d, axis=1, keepdims=True)
                   for d in rng.normal(size=(2, *flat.shape))]
    best = float("inf")
    for eps in steps:
        worst = 0.0
        for v in directions:
            step = (eps * size * v).reshape(images.shape).astype("float32")
            numeric = (f(images + step) - f(images - step)) / (2 * eps * size)
            analytic = (flat * v).sum(axis=1)
            worst = max(worst, float(np.max(np.abs(numeric - analytic) / norms)))
        best = min(best, worst)
    return best


def check_gradients(model, gradients: dict, images: np.ndarray, path: str,
                    channel: int) -> tuple[list[str], dict]:
    """Problems for `require_agreement` (and the errors): the timed gradients against finite differences.

    - plain, at the timed unit: the ordinary gradient, against central
      differences of the original model's unit (probed anew, not through
      `UnitGradient`).
    - guided and deconvnet: the rules change only the backward pass, so no
      function has them as its gradient in general. At a unit of `EARLY` (a
      1x1 conv over the stem's max pool: one ReLU below it) they do: the
      upstream gradient reaching the ReLU, routed by the max pool, is the
      unit's weight of that channel, so both rules zero the channels of
      negative weight, and the result is the ordinary gradient of the unit
      with those weights set to 0, which central differences check. (The
      rules also agree with each other there where every pool window of the
      unit holds a positive value, checked, so that the ReLU's forward mask,
      which deconvnet ignores, changes nothing.)
    """
    import keras

    from keras_residual.probe import probe

    problems, errors = [], {}
    plain = gradients["plain"](path, channel, images)
    unit, _ = unit_function(probe(model, path), channel, images)
    errors["plain"] = finite_difference_error(unit, images, plain)

    block = model.get_layer(EARLY.split("/")[0])
    kernel = keras.ops.convert_to_numpy(
        block.part("branch").layer.get_layer(EARLY.split("/")[-1]).kernel)[0, 0]
    pool = probe(model, "pool1_pool")
    pooled = keras.ops.convert_to_numpy(pool(images, training=False))
    early = keras.ops.convert_to_numpy(probe(model, EARLY)(images, training=False))
    at = np.arange(len(images))
    # A channel with weights of both signs whose unit sees a positive value in every pool
    # window it weighs positively (else deconvnet's route through a max pool of zeros,
    # a tie, is the backend's choice).
    for early_channel in range(kernel.shape[1]):
        weights = np.maximum(kernel[:, early_channel], 0.0).astype("float64")
        strongest = early[..., early_channel].reshape(len(images), -1).argmax(axis=1)
        rows, cols = np.unravel_index(strongest, pooled.shape[1:3])
        if (0 < np.count_nonzero(weights) < len(weights)
                and np.all(pooled[at, rows, cols][:, weights > 0] > 0)):
            break
    else:
        problems.append(f"no channel of {EARLY} has a unit whose positively weighted pool "
                        "windows all hold a positive value: the rules' reference is ambiguous")

    def rectified_unit(x):  # the unit with its negative weights zeroed (bias: a constant)
        maps = keras.ops.convert_to_numpy(pool(x, training=False)).astype("float64")
        return maps[at, rows, cols] @ weights

    for rule in ("guided", "deconvnet"):
        errors[rule] = finite_difference_error(
            rectified_unit, images, gradients[rule](EARLY, early_channel, images))
    for rule, error in errors.items():
        if not error <= TOLERANCE:
            where = f"{path} channel {channel}" if rule == "plain" else (
                f"{EARLY} channel {early_channel}")
            problems.append(f"{rule}: gradient at {where} differs from central differences by "
                            f"{error:.2e} of its norm (tolerance {TOLERANCE:g})")
    return problems, errors


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
    problems = bench.compare_outputs(features, "plain", rtol=1e-5, what="feature maps")
    # Not timed: the gradients, against finite differences.
    fd_problems, errors = check_gradients(model, gradients, images, args.path, args.channel)
    bench.require_agreement(
        problems + fd_problems, "The rules' copies or gradients are wrong:",
        "The guided and deconvnet copies compute the model's feature maps; central "
        "differences match the gradients (relative to their norm: "
        + ", ".join(f"{rule} {error:.1e}" for rule, error in errors.items()) + ").")

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
