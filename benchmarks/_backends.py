"""The harness every script in benchmarks/ shares: backends, `main`, timing, test data.

- Backends: Keras picks its backend at import time, so `--backend all` re-runs
  the same script with `KERAS_BACKEND` set and `--backend` fixed, and reads
  back the JSON rows each child wrote (`add_backend_arguments`,
  `needs_dispatch`, `run_per_backend`, `write_rows`).
- `main`: `benchmark_parser` builds a script's parser, and `run_benchmark`
  parses the command line (`--quick` presets included), dispatches to child
  processes or measures here, and prints the table (`table_printer`).
- Checks: a script first checks that the variants it times compute the same
  outputs, on non-degenerate data (`randomize_batchnorm`), and exits 1
  through `require_agreement` when they do not.
- Timing: `paired_timing` times several variants in interleaved repetitions
  and gives medians and paired ratios with their quartiles.

A script's `main`, in outline:

    print_table = table_printer(f"{'backend':<11}{'ms':>8}", "{backend:<11}{ms:8.2f}")

    def main(argv=None):
        parser = benchmark_parser(__doc__)
        parser.add_argument("--reps", type=int, default=5, help="timed repetitions")
        parser.add_argument("--quick", action="store_true", help="2 reps: seconds, for CI")
        run_benchmark(__file__, parser, measure, print_table, {"reps": 2}, argv)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

BACKENDS = ("tensorflow", "jax", "torch")


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A script's argument parser: described by the first line of its docstring.

    Args:
        doc: The script's module docstring (`__doc__`).

    Returns:
        A parser that shows every option's default in `--help`. Add the
        script's options, `--quick` among them; `parse_arguments` adds the
        backend options.

    Example:
        >>> benchmark_parser("Times things.\\n\\nMore.").description
        'Times things.'
    """
    return argparse.ArgumentParser(description=doc.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--backend` (one backend, "all", or the current one) and the hidden `--rows-out`.

    Args:
        parser: The script's parser.
    """
    parser.add_argument(
        "--backend",
        default="current",
        choices=("current", "all") + BACKENDS,
        help="backend to measure: 'all' runs each in its own process; 'current' uses "
        "KERAS_BACKEND (default tensorflow)",
    )
    parser.add_argument("--rows-out", default=None, help=argparse.SUPPRESS)


def _strip_backend_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--backend", "--rows-out"):
            skip = True
            continue
        if arg.startswith(("--backend=", "--rows-out=")):
            continue
        out.append(arg)
    return out


def needs_dispatch(backend: str) -> bool:
    """Whether this process must hand the run to child processes.

    Args:
        backend: The `--backend` value.

    Returns:
        True for "all" and for a backend other than the one Keras runs here.
    """
    import keras

    return backend == "all" or (backend not in ("current", keras.backend.backend()))


def run_per_backend(script: str, argv: list[str], backend: str) -> list[dict]:
    """Runs `script` once per requested backend, each in its own process.

    A child that fails (non-zero exit: an error, or outputs that differ)
    makes this raise SystemExit with its exit code after all children ran.

    Args:
        script: The script's path (`__file__`).
        argv: The script's command line, without the program name.
        backend: The `--backend` value: "all" or one backend.

    Returns:
        Every child's rows, in backend order; each row has a "backend" key.
    """
    backends = BACKENDS if backend == "all" else (backend,)
    rows: list[dict] = []
    failed = 0
    for name in backends:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, script, *_strip_backend_args(argv), "--backend", name,
                   "--rows-out", str(out)]
            result = subprocess.run(cmd, env=env, check=False)
            if result.returncode != 0:
                print(f"[{name}] failed with exit code {result.returncode}", file=sys.stderr)
                failed = failed or result.returncode
                continue
            rows.extend(json.loads(out.read_text()))
    if failed:
        raise SystemExit(failed)
    return rows


def write_rows(path: str | None, rows: list[dict]) -> None:
    """Writes this process's rows for a parent `run_per_backend`.

    Args:
        path: The `--rows-out` value; None (not a child process) writes nothing.
        rows: JSON-serializable table rows.
    """
    if path:
        Path(path).write_text(json.dumps(rows))


def parse_arguments(parser: argparse.ArgumentParser, quick: dict[str, Any],
                    argv: list[str] | None = None) -> argparse.Namespace:
    """Adds the backend options to `parser`, parses `argv`, and applies the `--quick` preset.

    Args:
        parser: The script's parser (`benchmark_parser`), with a `--quick` flag.
        quick: Option values (by `dest`) that `--quick` sets, over any given.
        argv: The command line without the program name; None: `sys.argv[1:]`.

    Returns:
        The options, `backend` and `rows_out` included.

    Example:
        >>> parser = benchmark_parser("Times things.")
        >>> _ = parser.add_argument("--reps", type=int, default=5, help="repetitions")
        >>> _ = parser.add_argument("--quick", action="store_true", help="2 repetitions")
        >>> parse_arguments(parser, {"reps": 2}, ["--quick"]).reps
        2
    """
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(quick)
    return args


def run_benchmark(
    script: str,
    parser: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], list[dict] | None],
    print_table: Callable[[list[dict]], None],
    quick: dict[str, Any],
    argv: list[str] | None = None,
) -> None:
    """A benchmark's `main`: parse, dispatch or measure, print the table.

    Parses the command line (`parse_arguments`). With `--backend all`, or a
    backend other than the current one, it then runs `script` once per
    backend in child processes and prints the table of all their rows.
    Otherwise it calls `measure` here, and either hands the rows to the
    parent process (`--rows-out`: this is a child) or prints their table.

    Exit status 1 when the variants differ comes from `measure`, which checks
    them with `require_agreement` before timing them; a child's non-zero
    status becomes the parent's (`run_per_backend`).

    Args:
        script: The script's path (`__file__`), run again by child processes.
        parser: The script's parser (`benchmark_parser`), with a `--quick` flag.
        measure: Checks and times the variants on this process's backend;
            returns the table rows, or None when this process has no rows
            (a helper subprocess of the script).
        print_table: Prints rows, of one backend or of several.
        quick: Option values that `--quick` sets (`parse_arguments`).
        argv: The command line without the program name; None: `sys.argv[1:]`.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(parser, quick, argv)
    if needs_dispatch(args.backend):
        print_table(run_per_backend(script, argv, args.backend))
        return
    rows = measure(args)
    if rows is None:
        return
    write_rows(args.rows_out, rows)
    if not args.rows_out:
        print_table(rows)


def table_printer(header: str, row: str) -> Callable[[list[dict]], None]:
    """A `print_table` for `run_benchmark`: a header line, then one line per row.

    Args:
        header: The first line (column titles, already aligned).
        row: A `str.format` template filled with each row's keys.

    Returns:
        A function that prints `header`, then `row.format(**r)` for each row r.

    Example:
        >>> print_table = table_printer(f"{'backend':<11}{'ratio':>6}", "{backend:<11}{ratio:6.2f}")
        >>> print_table([{"backend": "jax", "ratio": 1.0}])
        backend     ratio
        jax          1.00
    """

    def print_table(rows: list[dict]) -> None:
        print(header)
        for r in rows:
            print(row.format(**r))

    return print_table


def require_agreement(problems: list[str], heading: str, agreed: str | None = None) -> None:
    """Exits with status 1 when the variants' outputs differ; else says that they agree.

    Args:
        problems: One line per disagreement; empty when all agree.
        heading: Printed to stderr above the problems.
        agreed: Printed to stdout when there are no problems (None: nothing).

    Raises:
        SystemExit: With status 1, when `problems` is not empty.

    Example:
        >>> require_agreement([], "The variants differ:", "The variants agree.")
        The variants agree.
    """
    if problems:
        print(heading + "\n  " + "\n  ".join(problems), file=sys.stderr)
        raise SystemExit(1)
    if agreed is not None:
        print(agreed)


@dataclass(frozen=True)
class Spread:
    """The median of a sample and its quartiles (25th and 75th percentiles)."""

    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: Any) -> Spread:
        """The spread of `values` (a non-empty sequence of numbers).

        Example:
            >>> Spread.of([1.0, 2.0, 3.0, 4.0, 5.0])
            Spread(median=3.0, q1=2.0, q3=4.0)
        """
        q1, median, q3 = np.percentile(np.asarray(values, dtype="float64"), [25, 50, 75])
        return cls(float(median), float(q1), float(q3))


@dataclass
class PairedTiming:
    """What `paired_timing` measured: seconds per call, one entry per repetition.

    Attributes:
        baseline: The variant the ratios compare with.
        wall: Wall-clock seconds per call, by variant.
        cpu: CPU seconds of this process per call, by variant.
        outputs: What each variant returned on its last call, when asked
            for (`keep_outputs`); else empty.
    """

    baseline: str
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def times(self, name: str, clock: str = "wall") -> np.ndarray:
        """Seconds per call of variant `name`, one per repetition ("wall" or "cpu" clock)."""
        if clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
        return np.asarray((self.wall if clock == "wall" else self.cpu)[name], dtype="float64")

    def seconds(self, name: str, clock: str = "wall") -> float:
        """Median seconds per call of variant `name` ("wall" or "cpu" clock)."""
        return float(np.median(self.times(name, clock)))

    def slowdown(self, name: str, clock: str = "wall") -> Spread:
        """Paired ratios time of `name` / time of the baseline, repetition by repetition."""
        return Spread.of(self.times(name, clock) / self.times(self.baseline, clock))

    def speedup(self, name: str, clock: str = "wall") -> Spread:
        """Paired ratios time of the baseline / time of `name` (its relative throughput)."""
        return Spread.of(self.times(self.baseline, clock) / self.times(name, clock))


def paired_timing(
    variants: dict[str, Callable[[], Any]],
    reps: int,
    baseline: str | None = None,
    *,
    warmup: int = 1,
    calls: int = 1,
    keep_outputs: bool = False,
) -> PairedTiming:
    """Times variants side by side, in paired and interleaved repetitions.

    After `warmup` untimed calls of each variant, every repetition times each
    variant once, in the given order on even repetitions and in reverse on odd
    ones (A B, B A, ...), so drift in the machine's speed (clock boost,
    caches, other load) falls on all variants alike and each repetition gives
    a pair of times whose ratio is compared: `slowdown` and `speedup` give
    the median of those per-repetition ratios and its quartiles.

    Args:
        variants: Name -> a call doing the work of that variant (it should
            wait for its result, e.g. return NumPy arrays).
        reps: Timed repetitions, at least 1.
        baseline: The variant ratios compare with; None: the first one.
        warmup: Untimed calls of each variant before timing (tracing,
            compiling); 0 when the caller warmed them up already.
        calls: Consecutive calls per variant and repetition; a time is
            their mean.
        keep_outputs: Keep what each variant returned on its last call
            (`PairedTiming.outputs`), e.g. to check it; by default outputs are
            dropped as soon as the call returns.

    Returns:
        The wall-clock and CPU seconds per call of every variant and
        repetition (and each variant's last output, with `keep_outputs`).

    Example:
        >>> timing = paired_timing({"a": lambda: sum(range(10)), "b": lambda: 0}, reps=3,
        ...                        keep_outputs=True)
        >>> len(timing.wall["a"]), timing.outputs["a"], timing.slowdown("a").median
        (3, 45, 1.0)
    """
    names = list(variants)
    baseline = names[0] if baseline is None else baseline
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} is not one of the variants {names}")
    if reps < 1 or calls < 1:
        raise ValueError(f"reps and calls must be at least 1, not {reps} and {calls}")
    for name in names:
        for _ in range(warmup):
            variants[name]()
    timing = PairedTiming(baseline, {n: [] for n in names}, {n: [] for n in names})
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            fn = variants[name]
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls - 1):
                fn()
            output = fn()
            timing.wall[name].append((time.perf_counter() - wall) / calls)
            timing.cpu[name].append((time.process_time() - cpu) / calls)
            if keep_outputs and rep == reps - 1:
                timing.outputs[name] = output
            del output  # not held while the next variant runs
    return timing


def randomize_batchnorm(model: keras.layers.Layer, seed: int = 0) -> None:
    """Random statistics, scales and offsets in every BatchNormalization layer of `model`.

    Fresh statistics (mean 0, variance 1, scale 1, offset 0; some blocks
    start with scale 0) hide a layer that is skipped, mis-copied or applied
    twice; random ones do not. Sets moving means and offsets (beta) to
    N(0, 0.2) and moving variances and scales (gamma) to U(0.5, 1.5), per
    channel. The layers, nested ones included (in blocks, branches,
    shortcuts, sub-models), are those `keras_residual.lesion.batchnorm_layers`
    finds.

    Args:
        model: A built layer or model.
        seed: Seed of the random values.

    Raises:
        ValueError: When `model` has more moving-mean variables than
            BatchNormalization layers were found (some would keep fresh
            statistics).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
        >>> randomize_batchnorm(m)
        >>> bool(keras.ops.all(m.layers[0].moving_variance >= 0.5))
        True
    """
    from keras_residual.lesion import batchnorm_layers

    rng = np.random.default_rng(seed)
    norms = batchnorm_layers(model)
    expected = sum(v.name == "moving_mean" for v in model.weights)
    if len(norms) < expected:
        raise ValueError(f"found {len(norms)} BatchNormalization layers in {model.name}, "
                         f"but it has {expected} moving means")

    def assign(variable: keras.Variable | None, values: np.ndarray) -> None:
        if variable is not None:
            variable.assign(values.astype(variable.dtype))

    for layer in norms:
        shape = tuple(layer.moving_mean.shape)
        assign(layer.moving_mean, rng.normal(0.0, 0.2, shape))
        assign(layer.moving_variance, rng.uniform(0.5, 1.5, shape))
        assign(layer.gamma, rng.uniform(0.5, 1.5, shape))
        assign(layer.beta, rng.normal(0.0, 0.2, shape))
