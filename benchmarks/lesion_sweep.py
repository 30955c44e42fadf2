"""Single-block deletion sweep: the stacked sweep against two naive ways.

Veit et al. (2016), Fig. 3: the error with each block deleted in turn.

- (a) rebuild: for every block, build a copy of the model without it
  (`delete_blocks`) and evaluate it: n models, n traces.
- (b) gated: one model, its branch gate switched per block, evaluated n + 1
  times with one compiled predict function (traced before any timing).
- stacked: `single_block_deletion` (method="stacked"): one graph that reuses
  the intact activations in front of each lesion, traced once.

The three must agree: the script checks, on a net with random BatchNorm
statistics, that the gated and the rebuilt models give the same logits for
every lesion and that all three give the same errors, and exits 1 if not.

    python benchmarks/lesion_sweep.py [--blocks 4 4 4] [--images 1000]
    python benchmarks/lesion_sweep.py --backend all      # each backend in its own process
    python benchmarks/lesion_sweep.py --quick            # seconds, for CI
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _backends import add_backend_arguments, needs_dispatch, run_per_backend, write_rows


def randomize_batchnorm(model, rng: np.random.Generator) -> None:
    """Random moving statistics, scales and offsets in every normalization layer."""
    for variable in model.weights:
        if variable.name in ("gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
        elif variable.name in ("beta", "moving_mean"):
            variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))


def measure(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Time the three sweeps; return table rows and the list of disagreements."""
    import keras

    from keras_residual.lesion import studies, surgery
    from keras_residual.models import mnist_resnet

    keras.utils.set_random_seed(0)
    model = mnist_resnet(blocks=tuple(args.blocks), filters=tuple(args.filters))
    rng = np.random.default_rng(0)
    randomize_batchnorm(model, rng)
    x = rng.random((args.images, 28, 28, 1), dtype="float32")
    y = rng.integers(0, 10, args.images)
    n = len(surgery.residual_blocks(model))
    print(f"backend {keras.backend.backend()}, {n} blocks {tuple(args.blocks)} x "
          f"{tuple(args.filters)}, {args.images} images, batch {args.batch_size}")

    # Warm up the runtime and the model's predict function (which (b) reuses) first.
    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
    timings, errors, problems = {}, {}, []
    start = time.perf_counter()
    errors["stacked"] = studies.single_block_deletion(
        model, (x, y), batch_size=args.batch_size, method="stacked", progress=False).errors
    timings["stacked"] = time.perf_counter() - start

    start = time.perf_counter()
    errors["(b) gated"] = studies.single_block_deletion(
        model, (x, y), batch_size=args.batch_size, method="each", progress=False).errors
    timings["(b) gated"] = time.perf_counter() - start

    if not args.skip_rebuild:
        rebuilt_logits = []
        start = time.perf_counter()
        for i in range(n):
            lesioned = surgery.delete_blocks(model, [i])
            rebuilt_logits.append(lesioned.predict(x, batch_size=args.batch_size, verbose=0))
        errors["(a) rebuild"] = np.array(
            [studies.classification_error(p, y) for p in rebuilt_logits])
        timings["(a) rebuild"] = time.perf_counter() - start
        # Not timed: the gated model's outputs, lesion by lesion, against the rebuilt ones.
        for i in range(n):
            with surgery.deleted_blocks(model, [i]):
                gated = model.predict(x, batch_size=args.batch_size, verbose=0)
            if not np.allclose(gated, rebuilt_logits[i], atol=1e-5, rtol=1e-4):
                worst = float(np.abs(gated - rebuilt_logits[i]).max())
                problems.append(f"block {i}: gated and rebuilt outputs differ by {worst:.2e}")
    for name, value in errors.items():
        if not np.array_equal(value, errors["stacked"]):
            problems.append(f"{name} errors {value.tolist()} != stacked {errors['stacked'].tolist()}")

    rows = [
        {"backend": keras.backend.backend(), "method": name, "seconds": seconds,
         "per_lesion": seconds / n, "ratio": seconds / timings["stacked"]}
        for name, seconds in timings.items()
    ]
    return rows, problems


def print_table(rows: list[dict]) -> None:
    print(f"{'backend':<12}{'method':<14}{'seconds':>10}{'per lesion':>12}{'x stacked':>11}")
    for row in rows:
        print(f"{row['backend']:<12}{row['method']:<14}{row['seconds']:>10.2f}"
              f"{row['per_lesion']:>12.3f}{row['ratio']:>10.2f}x")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 4, 4],
                        help="blocks per stage (default: 4 4 4)")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64],
                        help="filters per stage (default: 16 32 64)")
    parser.add_argument("--images", type=int, default=1000, help="images (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--skip-rebuild", action="store_true", help="leave out (a), the slowest")
    parser.add_argument("--quick", action="store_true",
                        help="blocks 1 1 1, filters 4 8 8, 64 images: seconds, for CI")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.filters, args.images, args.batch_size = [1, 1, 1], [4, 8, 8], 64, 32
    if needs_dispatch(args.backend):
        print_table(run_per_backend(__file__, argv, args.backend))
        return
    rows, problems = measure(args)
    print_table(rows)
    write_rows(args.rows_out, rows)
    if problems:
        print("The sweeps disagree:\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(1)
    print("All sweeps agree (errors; gated and rebuilt outputs for every lesion).")


if __name__ == "__main__":
    main()
