"""Guided backpropagation and deconvnet time per unit against one plain input gradient.

Seed 000 shows a guided-backprop image beside every top-9 patch; this
measures what that costs. In one run, on the same model, layer, channel and
images, it times `UnitGradient` under the "plain" rule (an ordinary input
gradient of one unit per image) and under the "guided" and "deconvnet" rules
(the same gradient through a rectified copy of the model), and prints the
ratio. The one-time cost of making the rectified copy is printed apart.

    python benchmarks/guided_backprop.py                      # ResNet-50, 224x224
    python benchmarks/guided_backprop.py --size 112 --batch 8 --repeats 5
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from keras_residual.models import resnet50
from keras_residual.viz.guided import UnitGradient


def _timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; returns seconds per unit for each rule and the copy time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=4, help="images (= units) per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--path", default="conv4_block3/branch/conv4_block3_2_conv")
    parser.add_argument("--channel", type=int, default=7)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = resnet50(input_shape=(args.size, args.size, 3))
    images = np.random.default_rng(0).normal(size=(args.batch, args.size, args.size, 3))
    images = images.astype("float32")
    print(f"backend {keras.backend.backend()}, ResNet-50 (untrained), {args.batch} images of "
          f"{args.size}x{args.size}, unit: {args.path} channel {args.channel} (max position)")

    results = {}
    for rule in ("plain", "guided", "deconvnet"):
        start = time.perf_counter()
        gradient = UnitGradient(model, rule)
        setup = time.perf_counter() - start
        seconds = _timed(lambda g=gradient: g(args.path, args.channel, images), args.repeats)
        results[rule] = seconds / args.batch
        results[f"{rule}_setup"] = setup
    print(f"{'rule':<10} {'setup s':>8} {'ms / unit':>10} {'x plain':>8}")
    for rule in ("plain", "guided", "deconvnet"):
        print(f"{rule:<10} {results[rule + '_setup']:8.2f} {1e3 * results[rule]:10.1f} "
              f"{results[rule] / results['plain']:8.2f}")
    return results


if __name__ == "__main__":
    main()
