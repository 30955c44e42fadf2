"""What does the `Residual` wrapper cost? The same stacks with `Residual` and with `layers.Add`.

Each workload is built twice with identical weights (copied by position).
Before timing, both variants must compute the same outputs on random inputs
(within 1e-5 of the largest |output|, and not the same for every sample) and
one SGD step on the same batch must update every weight alike (within 1e-3
of the largest update of that weight): else the script exits 1.

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
from collections.abc import Callable

import _backends as bench
import numpy as np

GOAL = 0.98  # throughput of Residual relative to the hand-written stack


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
    y = rng.normal(size=out_res.shape).astype("float32")
    # Not timed: the same outputs (non-degenerate), and one SGD step gives the same weights.
    problems = bench.compare_outputs({"handwritten": out_hand, "residual": out_res},
                                     "handwritten", rtol=1e-5)
    problems += bench.training_step_problems({"handwritten": handwritten, "residual": residual},
                                             x, y, "mse")
    bench.require_agreement(problems, f"{name}: the two variants differ:",
                            f"{name}: same outputs and same weights after one training step.")
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

        timing = bench.paired_timing({"residual": lambda: run(residual),
                                      "handwritten": lambda: run(handwritten)},
                                     reps, "handwritten", warmup=0, calls=steps)
        ratio = timing.speedup("residual")
        rows.append(dict(
            backend=keras.backend.backend(), workload=name, phase=phase,
            ratio=ratio.median, q1=ratio.q1, q3=ratio.q3,
            mark="" if ratio.median >= GOAL else "  below goal",
            residual_ms=1e3 * timing.seconds("residual"),
            handwritten_ms=1e3 * timing.seconds("handwritten"),
            max_abs_diff=difference,
        ))
    return rows


# The side-by-side table, one row per backend, workload and phase.
print_table = bench.table_printer(
    f"{'backend':<11}{'workload':<12}{'phase':<8}{'Residual ms':>12}{'Add ms':>10}"
    f"{'ratio [q1, q3]':>24}  goal >= {GOAL}",
    "{backend:<11}{workload:<12}{phase:<8}{residual_ms:>12.2f}{handwritten_ms:>10.2f}"
    "{ratio:>10.3f} [{q1:.3f}, {q3:.3f}]{mark}")


def main(argv: list[str] | None = None) -> None:
    """Command line: time every workload and print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--reps", type=int, default=9, help="paired, interleaved repetitions")
    parser.add_argument("--steps", type=int, default=5, help="batches per timed repetition")
    parser.add_argument("--batch-size", type=int, default=64, help="images or sequences per batch")
    parser.add_argument("--workloads", default="all",
                        help="comma-separated workload names, or 'all'")
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs, 16 channels only, 2 reps: a CI smoke run")

    def measure_all(args: argparse.Namespace) -> list[dict]:
        work = _workloads(args.quick)
        names = list(work) if args.workloads == "all" else args.workloads.split(",")
        unknown = sorted(set(names) - set(work))
        if unknown:
            parser.error(f"unknown workloads {unknown}; choose from {sorted(work)}")
        return [row for name in names
                for row in measure(name, work[name], args.batch_size, args.reps, args.steps)]

    quick = {"reps": 2, "steps": 1, "batch_size": 4}
    bench.run_benchmark(__file__, parser, measure_all, print_table, quick, argv)


if __name__ == "__main__":
    main()
