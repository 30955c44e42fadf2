"""Throughput of keras_residual's ResNet-50 (v1 and v2) against keras.applications' twins.

For each pair the two models hold the same weights (copied with
`load_keras_applications_weights`), so they compute the same function; the
benchmark times, side by side and interleaved (reference, ours, reference,
ours, ...) after warm-up:

- predict: `predict_on_batch` (the compiled inference function), images/s;
- train step: `train_on_batch` with SGD and cross-entropy, images/s;

and reports medians, the ratio ours / reference (goal >= 1.0), and the
achieved GFLOP/s (2 x multiply-adds; a train step counted as 3 forward
passes) as a fraction of a square float32 matmul's GFLOP/s measured in the
same run (goal >= 60%).

Before timing, every BatchNormalization statistic of the reference is set to
random values and copied into ours; the two must then agree on the logits
(max |difference| <= 1e-4 of the largest logit), else the script exits 1.

    python benchmarks/resnet_throughput.py                    # batch 8, 224x224, 3 repetitions
    python benchmarks/resnet_throughput.py --backend all      # each backend in its own process
    python benchmarks/resnet_throughput.py --quick            # seconds, for CI
    python benchmarks/resnet_throughput.py --batch-size 64 --repeats 20 --xla
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _backends import (  # noqa: E402
    add_backend_arguments,
    needs_dispatch,
    run_per_backend,
    write_rows,
)

from keras_residual import Residual  # noqa: E402
from keras_residual.models import (  # noqa: E402
    count_mult_adds,
    load_keras_applications_weights,
    resnet50,
    resnet50_v2,
)

PAIRS = {
    "resnet50": (resnet50, keras.applications.ResNet50),
    "resnet50_v2": (resnet50_v2, keras.applications.ResNet50V2),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Example:
        >>> parse_args([]).batch_size
        8
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", default="resnet50,resnet50_v2", help="comma-separated: " + ",".join(PAIRS))
    parser.add_argument("--batch-size", type=int, default=8, help="images per timed call")
    parser.add_argument("--image-size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--matmul-size", type=int, default=2048,
                        help="n of the n x n matmul timed as the machine's reference speed")
    parser.add_argument("--xla", action="store_true", help="jit_compile=True for both models")
    parser.add_argument(
        "--explain", action="store_true",
        help="TensorFlow: list the graph ops ours has beyond keras.applications'",
    )
    parser.add_argument("--quick", action="store_true",
                        help="ResNet-50 v1 at 32x32, batch 1, one repetition: a CI smoke run")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.image_size, args.batch_size = "resnet50", 32, 1
        args.repeats, args.warmup, args.matmul_size = 1, 1, 256
    return args


def kernel_shapes(model: keras.Model) -> list:
    """Sorted shapes of every kernel, nested layers included.

    Example:
        >>> kernel_shapes(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        [(3, 2)]
    """
    return sorted(tuple(v.shape) for v in model.weights if v.name.endswith("kernel"))


def time_calls(fn: Callable[[], object], repeats: int) -> list:
    """Wall-clock seconds of `repeats` calls of `fn`.

    Example:
        >>> len(time_calls(lambda: None, 3))
        3
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def matmul_call(size: int) -> Callable[[], None]:
    """One square float32 matmul (2 n^3 flops) on the current backend, waited for.

    Example:
        >>> matmul_call(64)()
    """
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.normal(size=(size, size)).astype("float32"))
    b = keras.ops.convert_to_tensor(rng.normal(size=(size, size)).astype("float32"))

    def run() -> None:
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])

    return run


def build_pair(name: str, image_size: int, xla: bool) -> tuple[keras.Model, keras.Model, float]:
    """Our model and keras.applications', with the same weights, compiled; and their max output difference.

    Example:
        >>> ours, reference, difference = build_pair("resnet50", 64, xla=False)  # doctest: +SKIP
    """
    ours_fn, reference_fn = PAIRS[name]
    shape = (image_size, image_size, 3)
    # Logits, not probabilities: a saturated softmax would hide a difference.
    reference = reference_fn(weights=None, input_shape=shape, classifier_activation=None)
    randomize_batchnorm(reference)
    ours = ours_fn(weights=None, input_shape=shape, classifier_activation=None)
    load_keras_applications_weights(ours, reference)
    if kernel_shapes(ours) != kernel_shapes(reference):
        raise ValueError(f"{name}: the two models' kernels differ; they are not the same network.")
    x = np.random.default_rng(1).uniform(-1, 1, (2, *shape)).astype("float32")
    outputs = [keras.ops.convert_to_numpy(m.predict_on_batch(x)) for m in (ours, reference)]
    scale = float(np.max(np.abs(outputs[1])))
    difference = float(np.max(np.abs(outputs[0] - outputs[1])))
    if not (difference <= 1e-4 * max(scale, 1.0) and scale > 0 and np.isfinite(scale)):
        print(f"{name}: ours and keras.applications' logits differ by {difference:.3g} "
              f"(largest |logit| {scale:.3g})", file=sys.stderr)
        raise SystemExit(1)
    for model in (reference, ours):
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True if xla else "auto",
        )
    print(f"{name}: max |logit| {scale:.3g}, max |ours - keras.applications| {difference:.3g}",
          file=sys.stderr)
    return ours, reference, difference


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Random moving means and variances in every BatchNormalization layer of `model`.

    Fresh statistics (mean 0, variance 1) hide a BN layer that is skipped or
    mis-copied; random ones do not.

    Example:
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
        >>> randomize_batchnorm(m)
        >>> bool(keras.ops.all(m.layers[0].moving_variance > 0.5))
        True
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # keras.applications' ResNets are flat graphs
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = tuple(layer.moving_mean.shape)
            layer.moving_mean.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))


def graph_op_counts(model: keras.Model, input_shape: tuple, gradients: bool = False) -> Counter:
    """TensorFlow only: op types in the traced inference graph of `model`, or with its gradients.

    Example:
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> graph_op_counts(m, (1, 3))["MatMul"]  # doctest: +SKIP
        1
    """
    import tensorflow as tf

    def forward(x):
        if not gradients:
            return model(x, training=False)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph = tf.function(forward).get_concrete_function(tf.TensorSpec(input_shape, "float32")).graph
    return Counter(op.type for op in graph.get_operations())


def explain(ours: keras.Model, reference: keras.Model, args: argparse.Namespace) -> list[str]:
    """Report lines: the graph ops ours has beyond keras.applications', and the select time."""
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    lines = []
    for label, gradients in (("inference", False), ("training (forward + gradients)", True)):
        extra = graph_op_counts(ours, shape, gradients)
        extra.subtract(graph_op_counts(reference, shape, gradients))
        listed = ", ".join(f"{op} {n:+d}" for op, n in sorted(extra.items()) if n)
        lines.append(f"  {label} graph ops, ours minus keras.applications: {listed or 'none'}")
    return lines


def benchmark_pair(name: str, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Times one pair, interleaved; returns one row per phase and extra report lines.

    Example:
        >>> benchmark_pair("resnet50", parse_args(["--quick"]))  # doctest: +SKIP
    """
    ours, reference, difference = build_pair(name, args.image_size, args.xla)
    matmul = matmul_call(args.matmul_size)
    blocks = sum(isinstance(layer, Residual) for layer in ours.layers)
    flops = 2 * count_mult_adds(ours)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    y = rng.integers(0, 1000, args.batch_size)
    calls = {
        "predict": lambda m: m.predict_on_batch(x),
        "train": lambda m: m.train_on_batch(x, y),
    }
    rows = []
    for mode, call in calls.items():
        for model in (reference, ours):
            for _ in range(args.warmup):
                call(model)
        # The matmul yardstick is timed in the same interleaved rounds, under the same load.
        matmul()
        times = {"reference": [], "ours": [], "matmul": []}
        for rep in range(args.repeats):
            order = (("reference", reference), ("ours", ours))
            for label, model in order if rep % 2 == 0 else order[::-1]:
                times[label] += time_calls(lambda m=model, c=call: c(m), 1)
            times["matmul"] += time_calls(matmul, 1)
        ratios = np.array(times["reference"]) / np.array(times["ours"])
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        matmul_rate = 2 * args.matmul_size**3 / statistics.median(times["matmul"]) / 1e9
        step_flops = flops * (3 if mode == "train" else 1) * args.batch_size
        seconds = {k: statistics.median(v) for k, v in times.items()}
        rows.append(dict(
            backend=keras.backend.backend(), model=name, phase=mode, blocks=blocks,
            reference_ips=args.batch_size / seconds["reference"],
            ours_ips=args.batch_size / seconds["ours"],
            ratio=float(median), q1=float(q1), q3=float(q3), max_abs_diff=difference,
            matmul_share=step_flops / seconds["ours"] / 1e9 / matmul_rate,
        ))
    lines = explain(ours, reference, args) if args.explain else []
    return rows, lines


def print_table(rows: list[dict]) -> None:
    """One line per backend, model and phase: images/s side by side and the ratio."""
    print(f"{'backend':<11}{'model':<13}{'phase':<8}{'keras.app img/s':>16}{'ours img/s':>11}"
          f"{'ratio [q1, q3]':>24}{'max|diff|':>11}{'% matmul':>10}   goal ratio >= 1.0")
    for r in rows:
        print(f"{r['backend']:<11}{r['model']:<13}{r['phase']:<8}{r['reference_ips']:>16.2f}"
              f"{r['ours_ips']:>11.2f}{r['ratio']:>10.3f} [{r['q1']:.3f}, {r['q3']:.3f}]"
              f"{r['max_abs_diff']:>11.1e}{100 * r['matmul_share']:>9.1f}%")


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints the table.

    Example:
        >>> main(["--quick"])  # doctest: +SKIP
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if needs_dispatch(args.backend):
        print_table(run_per_backend(__file__, argv, args.backend))
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        raise SystemExit(f"Unknown models {unknown}; choose from {list(PAIRS)}.")
    print(
        f"backend {keras.backend.backend()}, batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, {args.repeats} interleaved repetitions after "
        f"{args.warmup} warm-up calls, medians; xla={args.xla}", file=sys.stderr,
    )
    rows = []
    for name in names:
        pair_rows, lines = benchmark_pair(name, args)
        rows += pair_rows
        for line in lines:
            print(line, file=sys.stderr)
        keras.backend.clear_session()
    write_rows(args.rows_out, rows)
    if not args.rows_out:
        print_table(rows)


if __name__ == "__main__":
    main()
