"""The harness every script in benchmarks/ shares: backends, `main`, timing, test data.

- Backends: Keras picks its backend at import time, so `--backend all` re-runs
  the same script with `KERAS_BACKEND` set and `--backend` fixed, and reads
  back the JSON rows each child wrote (`add_backend_arguments`,
  `needs_dispatch`, `run_per_backend`, `write_rows`).
- `main`: `benchmark_parser` builds a script's parser, and `run_benchmark`
  parses the command line (`--quick` presets included), dispatches to child
  processes or measures here, and prints the table (`table_printer`).
- Checks: a script first checks that the variants it times compute the same
  outputs (`compare_outputs`, `relative_difference`), on non-degenerate data
  (`randomize_batchnorm`: every BatchNorm scale, offset and statistic random;
  `degenerate`: outputs that would agree trivially count as a failure), and,
  for variants that are models, that one training step gives the same weights
  (`training_step_problems`, `named_weights`, `positional_weights`); it exits
  1 through `require_agreement` when they do not.
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
        "KERAS_BACKEND (tensorflow when unset)",
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


def relative_difference(value: Any, reference: Any) -> float:
    """max |value - reference| / max |reference| (inf when the shapes differ).

    Example:
        >>> relative_difference([1.0, 2.1], [1.0, 2.0])
        0.05
    """
    value, reference = np.asarray(value, "float64"), np.asarray(reference, "float64")
    if value.shape != reference.shape:
        return float("inf")
    return round(float(np.abs(value - reference).max() / max(np.abs(reference).max(), 1e-30)), 12)


def degenerate(values: Any, what: str = "outputs") -> str | None:
    """Why `values` (one row per sample) would let any variant agree trivially; None if not.

    Outputs that are not finite, all zero, or the same for every sample
    (e.g. a saturated softmax, an untrained net predicting one class for
    every input, gradients that underflowed to 0) hide differences between
    variants: such data is not fit to check them on.

    Example:
        >>> degenerate([[0.0, 1.0], [0.0, 1.0]])
        'outputs are the same for every sample'
        >>> degenerate([[0.0, 1.0], [1.0, 0.0]]) is None
        True
    """
    values = np.asarray(values, "float64")
    if not np.all(np.isfinite(values)):
        return f"{what} are not all finite"
    scale = float(np.abs(values).max()) if values.size else 0.0
    if scale == 0.0:
        return f"{what} are all zero"
    if len(values) > 1 and float(np.abs(values - values[:1]).max()) <= 1e-6 * scale:
        return f"{what} are the same for every sample"
    return None


def compare_outputs(outputs: dict[str, Any], reference: str, rtol: float = 1e-4,
                    what: str = "outputs") -> list[str]:
    """Problems for `require_agreement`: variants whose outputs differ from `reference`'s.

    Each variant's outputs must be within `rtol` of the reference's, relative
    to the reference's largest magnitude (`relative_difference`), and the
    reference's must not be degenerate (`degenerate`), else they would
    agree trivially.

    Args:
        outputs: Variant name -> its outputs (arrays, one row per sample).
        reference: The variant the others are compared with.
        rtol: Largest allowed `relative_difference`.
        what: What the outputs are, for the messages.

    Returns:
        One line per problem; empty when all agree on non-degenerate outputs.

    Example:
        >>> compare_outputs({"a": [[1.0, 2.0], [3.0, 4.0]], "b": [[1.0, 2.0], [3.0, 4.1]]}, "a")
        ['b: outputs differ from a by 0.025 of the largest |value| (tolerance 0.0001)']
    """
    problems = []
    reason = degenerate(outputs[reference], what)
    if reason is not None:
        problems.append(f"{reference}: {reason}: the check would pass trivially")
    for name, value in outputs.items():
        if name == reference:
            continue
        error = relative_difference(value, outputs[reference])
        if not error <= rtol:
            problems.append(f"{name}: {what} differ from {reference} by {error:.3g} of the "
                            f"largest |value| (tolerance {rtol:g})")
    return problems


def named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """`model`'s variables keyed by "layer name/variable name" (nested layers included).

    Two models whose layers have the same names (ours and keras.applications',
    which `load_keras_applications_weights` matches by name) have the same
    keys, so their weights can be compared variable by variable. The
    lesion-state bookkeeping variable of `Residual` blocks is left out.

    Raises:
        ValueError: When two variables get the same key.

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> sorted(named_weights(m))
        ['d/bias', 'd/kernel']
    """
    import keras

    weights: dict[str, np.ndarray] = {}
    for variable in model.weights:
        if variable.name == "lesion_state":
            continue
        key = "/".join(variable.path.split("/")[-2:])
        if key in weights:
            raise ValueError(f"two variables of {model.name} are named {key!r}")
        weights[key] = keras.ops.convert_to_numpy(variable)
    return weights


def positional_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """`model.get_weights()` keyed by position: for models built alike (`set_weights` order).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> [w.shape for w in positional_weights(m).values()]
        [(3, 2), (2,)]
    """
    return {f"weight {i} ({w.shape})": w for i, w in enumerate(model.get_weights())}


def training_step_problems(
    models: dict[str, keras.Model],
    x: Any,
    y: Any,
    loss: Any,
    weights: Callable[[keras.Model], dict[str, np.ndarray]] = positional_weights,
    learning_rate: float = 0.01,
    rtol: float = 1e-3,
) -> list[str]:
    """Problems for `require_agreement`: one SGD step on the same batch moves the models apart.

    Compiles each model with plain SGD and `loss`, takes one `train_on_batch`
    step on (x, y) (BatchNormalization in training mode: its moving
    statistics are updated too), reads every variable before and after
    (`weights`: the same keys for every model), then restores the weights;
    the caller compiles the models again for timing. The models must start
    from the same weights, and every variable's update must equal the first
    model's within `rtol` of the larger of that variable's largest update and
    1e-3 of the largest update of all (updates, not weights: a small step
    would hide in the weights' float32 rounding). A step that moves nothing
    counts as a problem (it would agree trivially).

    Args:
        models: Name -> model; the first is the reference.
        x, y: One batch.
        loss: A Keras loss (name or object).
        weights: Model -> {key: array}; `positional_weights` (same layer order)
            or `named_weights` (same layer names).
        learning_rate: SGD's step size.
        rtol: Relative tolerance of the updates.

    Returns:
        One line per problem; empty when the step gives the same weights.

    Example:
        >>> import keras
        >>> def dense():
        ...     keras.utils.set_random_seed(0)
        ...     return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> x, y = np.eye(3, dtype="float32"), np.ones((3, 2), "float32")
        >>> training_step_problems({"a": dense(), "b": dense()}, x, y, "mse")
        []
    """
    import keras

    names = list(models)
    before, update = {}, {}
    for name, model in models.items():
        saved = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss)
        before[name] = weights(model)
        model.train_on_batch(x, y)
        after = weights(model)
        model.set_weights(saved)
        update[name] = {key: after[key].astype("float64") - value for key, value
                        in before[name].items()}
    reference = names[0]
    largest = max(float(np.abs(u).max()) for u in update[reference].values())
    problems = [] if largest > 0 else [f"{reference}: one step changed no weight"]
    for name in names[1:]:
        if set(before[name]) != set(before[reference]):
            missing = sorted(set(before[reference]) ^ set(before[name]))[:5]
            problems.append(f"{name}: other variables than {reference} ({missing} ...)")
            continue
        for key, start in before[reference].items():
            if not np.array_equal(before[name][key], start):
                problems.append(f"{name}: {key} differs from {reference} before the step")
                continue
            theirs, ours = update[name][key], update[reference][key]
            scale = max(float(np.abs(ours).max()), 1e-3 * largest)
            error = float(np.abs(theirs - ours).max())
            if not error <= rtol * scale:
                problems.append(f"{name}: the step's update of {key} differs from {reference}'s "
                                f"by {error:.3g} (largest update there {scale:.3g})")
    return problems
