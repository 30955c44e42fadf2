"""Gradient per path length: per-sample routes against plain input gradients of the same net.

Veit et al. (2016), Sec. 5 sample 1,000 single paths per length. With routes
per sample (`keras_residual.lesion.path_gradients`), one backward pass over a
batch of B inputs gives B path samples, each with its own random path; the
older way routes the whole network through one path and differentiates one
sample at a time. This script times, on a pre-activation residual MLP of 54
blocks (width 64, MNIST-sized inputs, random BatchNorm statistics):

- plain: the input gradient of a batch of B (`gradients.input_gradient`), the
  cost floor of one backward pass;
- per-sample routed: `gradient_per_path_length` end to end (B samples per pass);
- one at a time: `surgery.routed_gradients` + `input_gradient` on 1 sample.

It prints samples per second and "samples per backward pass" = routed
samples/s over plain batches/s (goal: at least B/2), and exits 1 unless the
per-sample routed gradients equal the one-at-a-time routed ones.

    python benchmarks/gradient_paths.py                  # current backend
    python benchmarks/gradient_paths.py --backend all    # each backend in its own process
    python benchmarks/gradient_paths.py --quick          # seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _backends import add_backend_arguments, needs_dispatch, run_per_backend, write_rows  # noqa: E402


def build(blocks: int, width: int, features: int, seed: int = 0):
    """A pre-activation residual MLP (BN-ReLU-Dense branches) with random BN statistics."""
    import keras
    import numpy as np
    from keras import layers

    from keras_residual import Residual

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    x = layers.Dense(width)(inputs)
    for _ in range(blocks):
        x = Residual(keras.Sequential([layers.BatchNormalization(), layers.ReLU(),
                                       layers.Dense(width)]))(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))
    return model


def measure(blocks: int, batch: int, samples: int, reps: int, singles: int) -> tuple[dict, bool]:
    """Time the three ways; return the row and whether the gradients agree."""
    import keras
    import numpy as np

    from keras_residual.gradients import input_gradient
    from keras_residual.lesion import gradient_per_path_length, path_gradients, surgery

    features = 784
    model = build(blocks, 64, features)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(batch, 64), features)).astype("float32")
    y = rng.integers(0, 10, len(x))
    loss = keras.losses.get("sparse_categorical_crossentropy")

    def plain_batch():
        return input_gradient(lambda t: keras.ops.sum(loss(y[:batch], model(t, training=False))),
                              x[:batch])

    plain_batch()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        plain_batch()
    plain_per_s = reps / (time.perf_counter() - start)

    lengths = [0, blocks // 2, blocks]
    gradient_per_path_length(model, (x, y), lengths, samples=max(batch // 3, 1),
                             batch_size=batch, at="input", progress=False)  # warm-up
    start = time.perf_counter()
    gradient_per_path_length(model, (x, y), lengths, samples=samples, batch_size=batch,
                             at="input", progress=False)
    routed_per_s = len(lengths) * samples / (time.perf_counter() - start)

    routes = rng.integers(0, 2, size=(singles, blocks))
    start = time.perf_counter()
    one_at_a_time = []
    for j in range(singles):
        on = np.flatnonzero(routes[j]).tolist()
        off = np.flatnonzero(1 - routes[j]).tolist()
        with surgery.routed_gradients(model, branch=on, shortcut=off):
            one_at_a_time.append(input_gradient(
                lambda t, j=j: keras.ops.sum(loss(y[j:j + 1], model(t, training=False))),
                x[j:j + 1])[0])
    single_per_s = singles / (time.perf_counter() - start)
    batched = path_gradients(model, x[:singles], y[:singles], routes, at="input")
    largest = float(np.abs(np.stack(one_at_a_time)).max())
    error = float(np.abs(batched - np.stack(one_at_a_time)).max()) / max(largest, 1e-30)
    row = {
        "backend": keras.backend.backend(), "blocks": blocks, "batch": batch,
        "plain_batches_per_s": plain_per_s, "routed_samples_per_s": routed_per_s,
        "one_at_a_time_samples_per_s": single_per_s,
        "samples_per_backward_pass": routed_per_s / plain_per_s,
        "max_relative_difference": error, "largest_gradient": largest,
    }
    # All-zero reference gradients (underflow) would agree trivially: they count as a failure.
    return row, error < 1e-4 and largest > 0.0


def print_table(rows: list[dict]) -> None:
    print(f"{'backend':<11}{'blocks':>7}{'B':>5}{'plain batch/s':>15}{'routed samples/s':>18}"
          f"{'1-by-1 samples/s':>18}{'samples/pass':>14}{'goal B/2':>10}{'max rel diff':>14}")
    for r in rows:
        print(f"{r['backend']:<11}{r['blocks']:>7}{r['batch']:>5}{r['plain_batches_per_s']:>15.2f}"
              f"{r['routed_samples_per_s']:>18.1f}{r['one_at_a_time_samples_per_s']:>18.2f}"
              f"{r['samples_per_backward_pass']:>14.1f}{r['batch'] / 2:>10.1f}"
              f"{r['max_relative_difference']:>14.2e}")


def main(argv: list[str] | None = None) -> None:
    """Command line: time the three ways, print (or hand back) the rows, exit 1 on a mismatch."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--blocks", type=int, default=54, help="residual blocks (Veit et al.: 54)")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per backward pass")
    parser.add_argument("--samples", type=int, default=1000, help="routed samples per length "
                        "(3 lengths are timed)")
    parser.add_argument("--reps", type=int, default=5, help="timed plain batches")
    parser.add_argument("--singles", type=int, default=8,
                        help="one-at-a-time routed samples (timed and compared)")
    parser.add_argument("--quick", action="store_true",
                        help="6 blocks, batch 32, 64 samples per length, 2 reps, 3 singles")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.blocks, args.batch_size, args.samples, args.reps, args.singles = 6, 32, 64, 2, 3
    if needs_dispatch(args.backend):
        print_table(run_per_backend(__file__, argv, args.backend))
        return
    row, same = measure(args.blocks, args.batch_size, args.samples, args.reps, args.singles)
    write_rows(args.rows_out, [row])
    if not args.rows_out:
        print_table([row])
    if same:
        print("[gradient_paths] per-sample routed gradients match the one-at-a-time routed ones "
              f"(max relative difference {row['max_relative_difference']:.1e})")
    else:
        print(f"[gradient_paths] per-sample routed gradients differ from one-at-a-time ones: "
              f"max relative difference {row['max_relative_difference']:.2e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
