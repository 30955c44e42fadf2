"""What does the `Residual` wrapper cost? The same networks with `Residual` and with `layers.Add`.

Two stacks, each built twice with identical branches:

Built under the same seed:

- conv: 6 basic blocks (conv-BN-ReLU-conv-BN, 16 channels, 32x32 inputs),
  `Residual(branch, activation="relu")` vs `relu(Add()([x, branch(x)]))`;
- gru: 3 blocks of GRU(64, return_sequences=True) over 28 steps,
  `Residual(gru)` vs `Add()([x, gru(x)])`.

Train-step and predict throughput (samples/s) are measured in one process,
repetitions interleaved (A B, B A, ...) after a warm-up, and the median is
reported with the ratio Residual / hand-written (goal: >= 0.98), both per
wall-clock second and per CPU second of the process.

With `--breakdown` a third variant runs: `Residual` with its per-block lesion
machinery (two gradient-scaling identities and the `cond` select of the
branch gate) removed, to attribute any gap.

    python benchmarks/wrapper_overhead.py [--reps 7] [--steps 20] [--breakdown]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
from keras import layers

from keras_residual import Residual

#: Wall-clock time, and CPU time of this process (all threads): on a machine shared
#: with other jobs the CPU time is the steadier measure of the work each variant does.
CLOCKS = ("wall", "cpu")


class _LesionFreeResidual(Residual):
    """Residual without the lesion state's ops: `activation(merge(x, F(x)))` only.

    Used by `--breakdown` to measure what the branch gate and gradient routes cost.
    """

    def call(self, inputs, training=None, mask=None):
        return self.activation(self.merge_layer(inputs, self.layer(inputs, training=training),
                                                inputs))


def _conv_branch(filters: int, name: str) -> keras.Sequential:
    return keras.Sequential(
        [
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
        ],
        name=name,
    )


def build_conv(variant: str, blocks: int = 6, filters: int = 16) -> keras.Model:
    """The conv stack; `variant` is "residual", "handwritten" or "lesion_free"."""
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(filters, 3, padding="same", name="stem")(inputs)
    for i in range(blocks):
        branch = _conv_branch(filters, f"branch{i}")
        if variant == "handwritten":
            x = layers.ReLU()(layers.Add()([x, branch(x)]))
        else:
            wrapper = Residual if variant == "residual" else _LesionFreeResidual
            x = wrapper(branch, activation="relu", name=f"block{i}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name=f"conv_{variant}")


def build_gru(variant: str, blocks: int = 3, units: int = 64) -> keras.Model:
    """The GRU stack; `variant` is "residual", "handwritten" or "lesion_free"."""
    inputs = keras.Input((28, 28))
    x = layers.Dense(units, name="project")(inputs)
    for i in range(blocks):
        gru = layers.GRU(units, return_sequences=True, name=f"gru{i}")
        if variant == "handwritten":
            x = layers.Add()([x, gru(x)])
        else:
            wrapper = Residual if variant == "residual" else _LesionFreeResidual
            x = wrapper(gru, name=f"block{i}")(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name=f"gru_{variant}")


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) that `fn()` took."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    build: Callable[[str], keras.Model],
    variants: list[str],
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    reps: int,
) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str, str], list[float]]]:
    """Throughput of each variant, phase and clock, repetitions interleaved.

    Returns `({(variant, phase, clock): median samples per second},
    {(variant, phase, clock): per-repetition ratios residual / variant})`.
    Within one repetition the variants run back to back on the same phase
    (alternating which goes first), so a paired ratio sees the same background
    load on both sides; its median is steadier than a ratio of medians on a
    shared machine.

    All variants are built under the same seed, compile the same way, and are
    warmed up (tracing, first steps) before timing.
    """
    models = {}
    for variant in variants:
        keras.utils.set_random_seed(0)
        model = build(variant)
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[variant] = model
    for model in models.values():
        model.fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, verbose=0)
        model.predict(x[: 2 * batch_size], batch_size=batch_size, verbose=0)
    phases = {
        "train": lambda m: m.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0),
        "predict": lambda m: m.predict(x, batch_size=batch_size, verbose=0),
    }
    times = {(v, phase, clock): [] for v in variants for phase in phases for clock in CLOCKS}
    for rep in range(reps):
        order = variants if rep % 2 == 0 else variants[::-1]
        for phase, run in phases.items():
            for variant in order:
                seconds = _timed(lambda run=run, m=models[variant]: run(m))
                for clock, value in zip(CLOCKS, seconds, strict=True):
                    times[variant, phase, clock].append(value)
    throughput = {key: len(x) / statistics.median(ts) for key, ts in times.items()}
    ratios = {
        (v, phase, clock): [
            other / ours
            for ours, other in zip(
                times["residual", phase, clock], times[v, phase, clock], strict=True
            )
        ]
        for v in variants[1:] for phase in phases for clock in CLOCKS
    }
    return throughput, ratios


def main(argv: list[str] | None = None) -> None:
    """Command line: print the throughput table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per variant")
    parser.add_argument("--steps", type=int, default=20, help="batches per repetition")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stacks", default="conv,gru", help="comma-separated: conv, gru")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time Residual without its lesion ops")
    args = parser.parse_args(argv)
    variants = ["residual", "handwritten"] + (["lesion_free"] if args.breakdown else [])
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    stacks = {
        "conv": (build_conv, rng.normal(size=(n, 32, 32, 3)).astype("float32")),
        "gru": (build_gru, rng.normal(size=(n, 28, 28)).astype("float32")),
    }
    y = rng.integers(0, 10, n)
    print(f"backend {keras.backend.backend()}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.reps} interleaved reps; median samples per wall second and per CPU second; "
          "ratio = median of the paired per-repetition ratios [quartiles]")
    header = f"{'stack':<6}{'phase':<9}{'clock':<6}" + "".join(f"{v:>13}" for v in variants)
    header += "".join(f"{'res/' + v[:4]:>24}" for v in variants[1:])
    print(header)
    for name in args.stacks.split(","):
        build, x = stacks[name]
        result, ratios = measure(build, variants, x, y, args.batch_size, args.reps)
        for phase in ("train", "predict"):
            for clock in CLOCKS:
                row = f"{name:<6}{phase:<9}{clock:<6}" + "".join(
                    f"{result[v, phase, clock]:>13.1f}" for v in variants
                )
                for v in variants[1:]:
                    q1, q2, q3 = np.percentile(ratios[v, phase, clock], [25, 50, 75])
                    row += f"{q2:>10.3f} [{q1:.3f}, {q3:.3f}]"
                print(row, flush=True)

if __name__ == "__main__":
    main()
