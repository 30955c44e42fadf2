"""Single-block deletion sweep: the stacked sweep against two naive ways.

Veit et al. (2016), Fig. 3: the error with each block deleted in turn.

- (a) rebuild: for every block, build a copy of the model without it
  (`delete_blocks`) and evaluate it: n models, n traces.
- (b) gated: one model, its branch gate switched per block, evaluated n + 1
  times with one compiled predict function (traced before any timing).
- stacked: `single_block_deletion` (method="stacked"): one graph that reuses
  the intact activations in front of each lesion, traced once.

All three must give the same errors. Run:
    python benchmarks/lesion_sweep.py [--blocks 4 4 4] [--images 1000]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from keras_residual.lesion import studies, surgery
from keras_residual.models import mnist_resnet


def _rebuild_sweep(model, x, y, batch_size):
    errors = []
    for i in range(len(surgery.residual_blocks(model))):
        lesioned = surgery.delete_blocks(model, [i])
        errors.append(studies.classification_error(
            lesioned.predict(x, batch_size=batch_size, verbose=0), y))
    return np.array(errors)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 4, 4])
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-rebuild", action="store_true", help="leave out (a), the slowest")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = mnist_resnet(blocks=tuple(args.blocks), filters=tuple(args.filters))
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype="float32")
    y = rng.integers(0, 10, args.images)
    n = len(surgery.residual_blocks(model))
    print(f"backend {keras.backend.backend()}, {n} blocks {tuple(args.blocks)} x "
          f"{tuple(args.filters)}, {args.images} images, batch {args.batch_size}")

    # Warm up the runtime and the model's predict function (which (b) reuses) first.
    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
    timings = {}
    start = time.perf_counter()
    stacked = studies.single_block_deletion(model, (x, y), batch_size=args.batch_size,
                                            method="stacked", progress=False)
    timings["stacked"] = time.perf_counter() - start

    start = time.perf_counter()
    gated = studies.single_block_deletion(model, (x, y), batch_size=args.batch_size,
                                          method="each", progress=False)
    timings["(b) gated"] = time.perf_counter() - start
    np.testing.assert_array_equal(stacked.errors, gated.errors)

    if not args.skip_rebuild:
        start = time.perf_counter()
        rebuilt = _rebuild_sweep(model, x, y, args.batch_size)
        timings["(a) rebuild"] = time.perf_counter() - start
        np.testing.assert_array_equal(stacked.errors, rebuilt)

    print(f"{'method':<14}{'seconds':>10}{'per lesion':>12}{'stacked is':>14}")
    for name, seconds in timings.items():
        ratio = seconds / timings["stacked"]
        print(f"{name:<14}{seconds:>10.2f}{seconds / n:>12.3f}{ratio:>13.2f}x")


if __name__ == "__main__":
    main()
