"""Single-block deletion sweep: the stacked sweep against two naive ways.

Veit et al. (2016), Fig. 3: the error with each block deleted in turn.

- (a) rebuild: for every block, build a copy of the model without it
  (`delete_blocks`) and evaluate it: n models, n traces.
- (b) gated: one model, its branch gate switched per block, evaluated n + 1
  times with one compiled predict function (traced before any timing).
- stacked: `single_block_deletion` (method="stacked"): one graph that reuses
  the intact activations in front of each lesion, traced once.

The three must agree: on a net with random BatchNorm statistics, the script
checks before timing that the gated and the rebuilt models give the same
logits for every lesion (on one batch; not with --skip-rebuild), and after
timing that the sweeps gave the same errors; it exits 1 if not. Each sweep
is timed once.

    python benchmarks/lesion_sweep.py [--blocks 4 4 4] [--images 1000]
    python benchmarks/lesion_sweep.py --backend all      # each backend in its own process
    python benchmarks/lesion_sweep.py --quick            # seconds, for CI
"""

from __future__ import annotations

import argparse

import _backends as bench
import numpy as np


def measure(args: argparse.Namespace) -> list[dict]:
    """Check the gated against the rebuilt lesions, time the three sweeps, compare their errors."""
    import keras

    from keras_residual import lesion as studies
    from keras_residual import surgery
    from keras_residual.models import mnist_resnet

    keras.utils.set_random_seed(0)
    model = mnist_resnet(blocks=tuple(args.blocks), filters=tuple(args.filters))
    bench.randomize_batchnorm(model)
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype="float32")
    y = rng.integers(0, 10, args.images)
    n = len(surgery.residual_blocks(model))
    print(f"backend {keras.backend.backend()}, {n} blocks {tuple(args.blocks)} x "
          f"{tuple(args.filters)}, {args.images} images, batch {args.batch_size}")

    # Warm up the runtime and the model's predict function (which (b) reuses) first.
    batch = x[: args.batch_size]
    model.predict(batch, batch_size=args.batch_size, verbose=0)
    if not args.skip_rebuild:
        # Not timed: the gated model's outputs, lesion by lesion, against the rebuilt ones.
        problems = []
        for i in range(n):
            rebuilt = surgery.delete_blocks(model, [i]).predict(
                batch, batch_size=args.batch_size, verbose=0)
            with surgery.deleted_blocks(model, [i]):
                gated = model.predict(batch, batch_size=args.batch_size, verbose=0)
            if not np.allclose(gated, rebuilt, atol=1e-5, rtol=1e-4):
                worst = float(np.abs(gated - rebuilt).max())
                problems.append(f"block {i}: gated and rebuilt outputs differ by {worst:.2e}")
        bench.require_agreement(problems, "The sweeps disagree:")

    def rebuild():
        return np.array([studies.classification_error(
            surgery.delete_blocks(model, [i]).predict(x, batch_size=args.batch_size, verbose=0),
            y) for i in range(n)])

    def sweep(method):
        return studies.single_block_deletion(model, (x, y), batch_size=args.batch_size,
                                             method=method, progress=False).errors

    variants = {"stacked": lambda: sweep("stacked"), "(b) gated": lambda: sweep("each")}
    if not args.skip_rebuild:
        variants["(a) rebuild"] = rebuild
    timing = bench.paired_timing(variants, reps=1, warmup=0, keep_outputs=True)
    errors = timing.outputs
    bench.require_agreement(
        [f"{name} errors {value.tolist()} != stacked {errors['stacked'].tolist()}"
         for name, value in errors.items() if not np.array_equal(value, errors["stacked"])],
        "The sweeps disagree:",
        "All sweeps agree (errors; gated and rebuilt outputs for every lesion).")
    return [
        {"backend": keras.backend.backend(), "method": name, "seconds": timing.seconds(name),
         "per_lesion": timing.seconds(name) / n, "ratio": timing.slowdown(name).median}
        for name in variants
    ]


print_table = bench.table_printer(
    f"{'backend':<12}{'method':<14}{'seconds':>10}{'per lesion':>12}{'x stacked':>11}",
    "{backend:<12}{method:<14}{seconds:>10.2f}{per_lesion:>12.3f}{ratio:>10.2f}x")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time the sweeps, print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 4, 4],
                        help="blocks per stage (default: 4 4 4)")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64],
                        help="filters per stage (default: 16 32 64)")
    parser.add_argument("--images", type=int, default=1000, help="images (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--skip-rebuild", action="store_true", help="leave out (a), the slowest")
    parser.add_argument("--quick", action="store_true",
                        help="blocks 1 1 1, filters 4 8 8, 64 images: seconds, for CI")
    quick = {"blocks": [1, 1, 1], "filters": [4, 8, 8], "images": 64, "batch_size": 32}
    bench.run_benchmark(__file__, parser, measure, print_table, quick, argv)


if __name__ == "__main__":
    main()
