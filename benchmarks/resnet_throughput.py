"""Throughput of keras_residual's ResNet-50 (v1 and v2) against keras.applications' twins.

For each pair the two models hold the same weights (copied with
`load_keras_applications_weights`), so they compute the same function; the
benchmark times, side by side in interleaved repetitions after warm-up
(reference, ours, matmul; then matmul, ours, reference; ...):

- predict: `predict_on_batch` (the compiled inference function), images/s;
- train step: `train_on_batch` with SGD and cross-entropy, images/s;

and reports medians, the median of the paired per-repetition throughput
ratios ours / reference with its quartiles (goal >= 1.0), and the
achieved GFLOP/s (2 x multiply-adds; a train step counted as 3 forward
passes) as a fraction of a square float32 matmul's GFLOP/s measured in the
same run (goal >= 60%).

Before timing, every BatchNormalization statistic, scale and offset of the
reference is set to random values (`randomize_batchnorm`: moving means and
offsets N(0, 0.2), moving variances and scales U(0.5, 1.5), per channel) and
copied into ours with the kernels; the two must then agree on the logits of 4
random images (max |difference| <= 1e-4 of the largest logit, logits not the
same for every image), and one SGD step on those images must update every
variable (kernels, biases, BN scales, offsets and moving statistics, matched
by layer name) alike, within 1e-3 of its largest update; else the script
exits 1.

    python benchmarks/resnet_throughput.py                    # batch 8, 224x224, 3 repetitions
    python benchmarks/resnet_throughput.py --backend all      # each backend in its own process
    python benchmarks/resnet_throughput.py --quick            # seconds, for CI
    python benchmarks/resnet_throughput.py --batch-size 64 --repeats 20 --xla
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _backends as bench  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

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


QUICK = {"models": "resnet50", "image_size": 32, "batch_size": 1, "repeats": 1, "warmup": 1,
         "matmul_size": 256}


def build_parser() -> argparse.ArgumentParser:
    """The command line's options, without the backend options `run_benchmark` adds."""
    parser = bench.benchmark_parser(__doc__)
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
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line.

    Example:
        >>> parse_args([]).batch_size
        8
    """
    return bench.parse_arguments(build_parser(), QUICK, argv)


def kernel_shapes(model: keras.Model) -> list:
    """Sorted shapes of every kernel, nested layers included.

    Example:
        >>> kernel_shapes(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        [(3, 2)]
    """
    return sorted(tuple(v.shape) for v in model.weights if v.name.endswith("kernel"))


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
    bench.randomize_batchnorm(reference)
    ours = ours_fn(weights=None, input_shape=shape, classifier_activation=None)
    load_keras_applications_weights(ours, reference)
    if kernel_shapes(ours) != kernel_shapes(reference):
        raise ValueError(f"{name}: the two models' kernels differ; they are not the same network.")
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, *shape)).astype("float32")
    outputs = {"keras.applications": keras.ops.convert_to_numpy(reference.predict_on_batch(x)),
               "ours": keras.ops.convert_to_numpy(ours.predict_on_batch(x))}
    scale = float(np.max(np.abs(outputs["keras.applications"])))
    difference = float(np.max(np.abs(outputs["ours"] - outputs["keras.applications"])))
    problems = bench.compare_outputs(outputs, "keras.applications", rtol=1e-4, what="logits")
    # One SGD step on the same batch (BatchNorm in training mode, batch statistics and
    # moving-statistics updates included): every variable, matched by layer name.
    y = rng.integers(0, 1000, len(x))
    problems += bench.training_step_problems(
        {"keras.applications": reference, "ours": ours}, x, y,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), bench.named_weights)
    bench.require_agreement(
        problems, f"{name}: ours and keras.applications' differ:",
        f"{name}: same logits (max |difference| {difference:.2g}, largest |logit| {scale:.3g}) "
        "and the same weights after one training step.")
    for model in (reference, ours):
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True if xla else "auto",
        )
    print(f"{name}: max |logit| {scale:.3g}, max |ours - keras.applications| {difference:.3g}",
          file=sys.stderr)
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
        # The matmul yardstick is timed in the same interleaved rounds, under the same load.
        timing = bench.paired_timing(
            {"reference": lambda c=call: c(reference), "ours": lambda c=call: c(ours),
             "matmul": matmul}, args.repeats, "reference", warmup=args.warmup)
        ratio = timing.speedup("ours")
        matmul_rate = 2 * args.matmul_size**3 / timing.seconds("matmul") / 1e9
        step_flops = flops * (3 if mode == "train" else 1) * args.batch_size
        rows.append(dict(
            backend=keras.backend.backend(), model=name, phase=mode, blocks=blocks,
            reference_ips=args.batch_size / timing.seconds("reference"),
            ours_ips=args.batch_size / timing.seconds("ours"),
            ratio=ratio.median, q1=ratio.q1, q3=ratio.q3, max_abs_diff=difference,
            matmul_share=step_flops / timing.seconds("ours") / 1e9 / matmul_rate,
        ))
    lines = explain(ours, reference, args) if args.explain else []
    return rows, lines


# One line per backend, model and phase: images/s side by side and the ratio.
print_table = bench.table_printer(
    f"{'backend':<11}{'model':<13}{'phase':<8}{'keras.app img/s':>16}{'ours img/s':>11}"
    f"{'ratio [q1, q3]':>24}{'max|diff|':>11}{'% matmul':>10}   goal ratio >= 1.0",
    "{backend:<11}{model:<13}{phase:<8}{reference_ips:>16.2f}{ours_ips:>11.2f}{ratio:>10.3f} "
    "[{q1:.3f}, {q3:.3f}]{max_abs_diff:>11.1e}{matmul_share:>10.1%}")


def measure(args: argparse.Namespace) -> list[dict]:
    """Checks and times every pair named by `--models` on this backend; returns the rows."""
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
    return rows


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints the table.

    Example:
        >>> main(["--quick"])  # doctest: +SKIP
    """
    bench.run_benchmark(__file__, build_parser(), measure, print_table, QUICK, argv)


if __name__ == "__main__":
    main()
