"""What does the `Residual` wrapper cost? The same stacks with `Residual` and with `layers.Add`.

Each workload is built twice with identical weights (copied, then checked:
both variants must compute the same outputs, else the script exits 1):

- conv{16,32,64}_act: 8 blocks `Residual(Conv2D(c, 3, padding="same"),
  activation="relu")` on 32x32xc inputs vs `Activation("relu")(Add()([x, conv(x)]))`;
- conv{16,32,64}: the same without the post-merge activation;
- gru: 3 blocks `Residual(GRU(64, return_sequences=True))` over 28 steps;
- dense: 8 blocks `Residual(Dense(256), activation="relu")` on vectors.

For each, predict (`predict_on_batch`) and train step (`train_on_batch`, SGD,
MSE) are timed side by side, repetitions interleaved (A B, B A, ...) after a
warm-up; a row reports the median of the paired per-repetition ratios
hand-written time / Residual time (throughput of Residual relative to the
hand-written stack; goal >= 0.98) with its quartiles.

    python benchmarks/wrapper_overhead.py --backend all          # each backend in its own process
    python benchmarks/wrapper_overhead.py --quick                # seconds, for CI
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
from _backends import add_backend_arguments, needs_dispatch, run_per_backend, write_rows


def _workloads(quick: bool) -> dict[str, tuple[Callable, tuple]]:
    from keras import layers

    size = 8 if quick else 32
    conv_channels = (16,) if quick else (16, 32, 64)
    work = {}
    for c in conv_channels:
        for act in (True, False):
            name = f"conv{c}_act" if act else f"conv{c}"
            work[name] = (
                lambda c=c: layers.Conv2D(c, 3, padding="same"),
                "relu" if act else None,
                8,
                (size, size, c),
            )
    work["gru"] = (lambda: layers.GRU(64, return_sequences=True), None, 3, (28, 64))
    work["dense"] = (lambda: layers.Dense(256), "relu", 8, (256,))
    return work


def build_pair(make_branch: Callable, activation: str | None, blocks: int, shape: tuple):
    """(Residual stack, hand-written Add stack) with the same weights.

    Example:
        >>> import keras
        >>> res, hand = build_pair(lambda: keras.layers.Dense(4), "relu", 2, (4,))
        >>> res.count_params() == hand.count_params()
        True
    """
    import keras
    from keras import layers

    from keras_residual import Residual

    inputs = keras.Input(shape)
    x = inputs
    for _ in range(blocks):
        x = Residual(make_branch(), activation=activation)(x)
    residual = keras.Model(inputs, x, name="residual")
    x = inputs
    for _ in range(blocks):
        x = layers.Add()([x, make_branch()(x)])
        if activation is not None:
            x = layers.Activation(activation)(x)
    handwritten = keras.Model(inputs, x, name="handwritten")
    handwritten.set_weights(residual.get_weights())
    return residual, handwritten


def _time(fn: Callable[[], object], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(name: str, spec: tuple, batch: int, reps: int, steps: int) -> list[dict]:
    """Rows for one workload: predict and train, paired ratios and their quartiles."""
    import keras

    make_branch, activation, blocks, shape = spec
    keras.utils.set_random_seed(0)
    residual, handwritten = build_pair(make_branch, activation, blocks, shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    out_res = keras.ops.convert_to_numpy(residual.predict_on_batch(x))
    out_hand = keras.ops.convert_to_numpy(handwritten.predict_on_batch(x))
    difference = float(np.max(np.abs(out_res - out_hand)))
    if not np.allclose(out_res, out_hand, rtol=1e-5, atol=1e-5):
        print(f"{name}: the two variants differ (max |diff| = {difference:.3g})", file=sys.stderr)
        raise SystemExit(1)
    y = rng.normal(size=out_res.shape).astype("float32")
    for model in (residual, handwritten):
        model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
        model.train_on_batch(x, y)  # trace before timing
        model.predict_on_batch(x)
    rows = []
    for phase in ("predict", "train"):
        def run(model, phase=phase):
            if phase == "predict":
                return model.predict_on_batch(x)
            return model.train_on_batch(x, y)

        pairs = []
        for rep in range(reps):
            order = (residual, handwritten) if rep % 2 == 0 else (handwritten, residual)
            seconds = {m.name: _time(lambda m=m: run(m), steps) for m in order}
            pairs.append((seconds["residual"], seconds["handwritten"]))
        ratios = np.array([hand / res for res, hand in pairs])
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        rows.append(dict(
            backend=keras.backend.backend(), workload=name, phase=phase,
            ratio=float(median), q1=float(q1), q3=float(q3),
            residual_ms=1e3 * float(np.median([p[0] for p in pairs])),
            handwritten_ms=1e3 * float(np.median([p[1] for p in pairs])),
            max_abs_diff=difference,
        ))
    return rows


def print_table(rows: list[dict], goal: float = 0.98) -> None:
    """The side-by-side table, one row per backend, workload and phase."""
    print(f"{'backend':<11}{'workload':<12}{'phase':<8}{'Residual ms':>12}{'Add ms':>10}"
          f"{'ratio [q1, q3]':>24}  goal >= {goal}")
    for r in rows:
        mark = "" if r["ratio"] >= goal else "  below goal"
        print(f"{r['backend']:<11}{r['workload']:<12}{r['phase']:<8}{r['residual_ms']:>12.2f}"
              f"{r['handwritten_ms']:>10.2f}{r['ratio']:>10.3f} [{r['q1']:.3f}, {r['q3']:.3f}]"
              f"{mark}")


def main(argv: list[str] | None = None) -> None:
    """Command line: time every workload and print (or hand back) the rows."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--reps", type=int, default=9, help="paired, interleaved repetitions")
    parser.add_argument("--steps", type=int, default=5, help="batches per timed repetition")
    parser.add_argument("--batch-size", type=int, default=64, help="images or sequences per batch")
    parser.add_argument("--workloads", default="all",
                        help="comma-separated workload names, or 'all'")
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs, 16 channels only, 2 reps: a CI smoke run")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.batch_size = 2, 1, 4
    if needs_dispatch(args.backend):
        print_table(run_per_backend(__file__, argv, args.backend))
        return
    work = _workloads(args.quick)
    names = list(work) if args.workloads == "all" else args.workloads.split(",")
    unknown = sorted(set(names) - set(work))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(work)}")
    rows = []
    for name in names:
        rows.extend(measure(name, work[name], args.batch_size, args.reps, args.steps))
    write_rows(args.rows_out, rows)
    if not args.rows_out:
        print_table(rows)


if __name__ == "__main__":
    main()
