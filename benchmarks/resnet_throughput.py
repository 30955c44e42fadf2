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

    python benchmarks/resnet_throughput.py                    # batch 8, 224x224, 3 repetitions
    python benchmarks/resnet_throughput.py --batch-size 64 --repeats 20 --xla
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable

import keras
import numpy as np

from keras_residual import Residual
from keras_residual.models import (
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,resnet50_v2", help="comma-separated: " + ",".join(PAIRS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--xla", action="store_true", help="jit_compile=True for both models")
    parser.add_argument(
        "--explain", action="store_true",
        help="TensorFlow: list the inference-graph ops ours adds and time the extra per-block select",
    )
    return parser.parse_args(argv)


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
    reference = reference_fn(weights=None, input_shape=shape)
    ours = ours_fn(weights=None, input_shape=shape)
    load_keras_applications_weights(ours, reference)
    if kernel_shapes(ours) != kernel_shapes(reference):
        raise ValueError(f"{name}: the two models' kernels differ; they are not the same network.")
    x = np.random.default_rng(1).uniform(-1, 1, (2, *shape)).astype("float32")
    difference = float(np.max(np.abs(ours.predict_on_batch(x) - reference.predict_on_batch(x))))
    for model in (reference, ours):
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
            loss="sparse_categorical_crossentropy",
            jit_compile=True if xla else "auto",
        )
    return ours, reference, difference


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


def select_seconds(model: keras.Model, batch_size: int, repeats: int) -> float:
    """Time of one `where(gate, y, h(x))` over each Residual block's output, summed over blocks.

    This is the one full-tensor operation the lesion gate adds to each block
    at inference; the sum estimates its share of a predict call.

    Example:
        >>> select_seconds(resnet50(input_shape=(32, 32, 3)), 1, 1) > 0  # doctest: +SKIP
        True
    """
    gate = keras.ops.ones((), "float32")
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, Residual):
            shape = (batch_size, *layer.output.shape[1:])
            a, b = keras.ops.ones(shape), keras.ops.zeros(shape)

            def select(a=a, b=b):
                keras.ops.convert_to_numpy(keras.ops.where(keras.ops.greater(gate, 0.5), a, b)[0, 0, 0])

            select()
            total += statistics.median(time_calls(select, max(repeats, 3)))
    return total


def explain(ours: keras.Model, reference: keras.Model, args: argparse.Namespace) -> list[str]:
    """Report lines: the graph ops ours has beyond keras.applications', and the select time."""
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    lines = []
    for label, gradients in (("inference", False), ("training (forward + gradients)", True)):
        extra = graph_op_counts(ours, shape, gradients)
        extra.subtract(graph_op_counts(reference, shape, gradients))
        listed = ", ".join(f"{op} {n:+d}" for op, n in sorted(extra.items()) if n)
        lines.append(f"  {label} graph ops, ours minus keras.applications: {listed or 'none'}")
    return lines + [
        f"  per-block gate select over every block output: "
        f"{1e3 * select_seconds(ours, args.batch_size, args.repeats):.1f} ms per batch",
    ]


def benchmark_pair(name: str, args: argparse.Namespace) -> list[str]:
    """Times one pair, interleaved; returns the report lines.

    Example:
        >>> benchmark_pair("resnet50", parse_args(["--image-size", "64"]))  # doctest: +SKIP
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
    lines = [
        f"{name}: {blocks} Residual blocks, {flops / 1e9:.2f} GFLOP per image forward "
        f"(2 x multiply-adds), max |ours - keras.applications| = {difference:.2e}",
    ]
    for mode, call in calls.items():
        for model in (reference, ours):
            for _ in range(args.warmup):
                call(model)
        # The matmul yardstick is timed in the same interleaved rounds, under the same load.
        matmul()
        times = {id(reference): [], id(ours): [], "matmul": []}
        for _ in range(args.repeats):
            for model in (reference, ours):
                times[id(model)] += time_calls(lambda m=model, c=call: c(m), 1)
            times["matmul"] += time_calls(matmul, 1)
        matmul_rate = 2 * args.matmul_size**3 / statistics.median(times["matmul"]) / 1e9
        lines.append(
            f"  {mode:7s} matmul {args.matmul_size}x{args.matmul_size} float32: {matmul_rate:.1f} GFLOP/s"
        )
        step_flops = flops * (3 if mode == "train" else 1) * args.batch_size
        rates = {}
        for label, model in (("keras.applications", reference), ("keras_residual", ours)):
            seconds = statistics.median(times[id(model)])
            rates[label] = args.batch_size / seconds
            achieved = step_flops / seconds / 1e9
            lines.append(
                f"  {mode:7s} {label:18s} {rates[label]:8.2f} images/s  "
                f"{achieved:7.1f} GFLOP/s = {100 * achieved / matmul_rate:5.1f}% of matmul"
            )
        ratio = rates["keras_residual"] / rates["keras.applications"]
        lines.append(
            f"  {mode:7s} ratio ours / keras.applications: {ratio:.3f} (goal >= 1.0); "
            f"median seconds per batch {statistics.median(times[id(reference)]):.3f} vs "
            f"{statistics.median(times[id(ours)]):.3f}"
        )
    if args.explain:
        lines += explain(ours, reference, args)
    return lines


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints the table.

    Example:
        >>> main(["--batch-size", "2", "--image-size", "64"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        raise ValueError(f"Unknown models {unknown}; choose from {list(PAIRS)}.")
    print(
        f"backend {keras.backend.backend()}, batch {args.batch_size}, "
        f"{args.image_size}x{args.image_size}, {args.repeats} interleaved repetitions after "
        f"{args.warmup} warm-up calls, medians; xla={args.xla}"
    )
    for name in names:
        for line in benchmark_pair(name, args):
            print(line, flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
