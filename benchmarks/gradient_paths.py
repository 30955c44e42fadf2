"""Gradient per path length: per-sample routes against plain input gradients of the same net.

Veit et al. (2016), Sec. 5 sample 1,000 single paths per length. With routes
per sample (`keras_residual.lesion.path_gradients`, in `keras_residual.lesion.gradient_paths`), one backward pass over a
batch of B inputs gives B path samples, each with its own random path; the
older way routes the whole network through one path and differentiates one
sample at a time. This script times, on a pre-activation residual MLP of 54
blocks (width 64, MNIST-sized inputs, random BatchNorm statistics):

- plain: the input gradient of a batch of B (`gradients.input_gradient`), the
  cost floor of one backward pass;
- per-sample routed: `gradient_per_path_length` end to end (B samples per pass);
- one at a time: `surgery.routed_gradients` + `input_gradient` on 1 sample.

Before timing, it checks that the per-sample routed gradients equal the
one-at-a-time routed ones (within 1e-4 of the largest |gradient|; gradients
all zero or the same for every sample count as a failure), and exits 1 if
not. The net outputs logits and the loss takes them, and its branches start
small (see `build`): at 54 blocks a softmax output saturated, and the clipped
cross-entropy gave gradients of exactly 0 on JAX and PyTorch. It prints samples per second
and "samples per backward pass" = routed samples/s over plain batches/s
(goal: at least B/2); plain batches/s is from the median of `--reps` batches.

    python benchmarks/gradient_paths.py                  # current backend
    python benchmarks/gradient_paths.py --backend all    # each backend in its own process
    python benchmarks/gradient_paths.py --quick          # seconds, for CI
"""

from __future__ import annotations

import argparse

import _backends as bench


def build(blocks: int, width: int, features: int, seed: int = 0):
    """A pre-activation residual MLP (BN-ReLU-Dense branches) with random BN statistics; logits.

    Each branch's Dense starts at N(0, 1 / (width * blocks)), so the residual stream's
    variance grows by about e^0.5 over all blocks instead of geometrically: with Keras'
    default initializer and random BN statistics (inference mode: they do not normalize),
    54 blocks give logits of order 1e5-1e6, the softmax is one-hot in float32, and
    cross-entropy on probabilities, which Keras clips to [1e-7, 1 - 1e-7] on JAX and
    PyTorch (TensorFlow reads the logits behind the softmax instead), has gradient exactly
    0 everywhere. The model outputs logits and the loss takes them (`LOSS`).
    """
    import keras
    from keras import layers

    from keras_residual import Residual

    keras.utils.set_random_seed(seed)
    branch_std = (width * blocks) ** -0.5
    inputs = keras.Input((features,))
    x = layers.Dense(width)(inputs)
    for _ in range(blocks):
        x = Residual(keras.Sequential([layers.BatchNormalization(), layers.ReLU(),
                                       layers.Dense(width, kernel_initializer=keras.initializers.RandomNormal(stddev=branch_std))]))(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    model = keras.Model(inputs, layers.Dense(10)(x))
    bench.randomize_batchnorm(model, seed)
    return model


def LOSS(y_true, logits):  # noqa: N802 - a constant-like loss function
    """Per-sample cross-entropy of logits (no probability clipping: see `build`)."""
    import keras

    return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)


def measure(args: argparse.Namespace) -> list[dict]:
    """Check the per-sample routes against one route at a time, then time the three ways."""
    import keras
    import numpy as np

    from keras_residual import surgery
    from keras_residual.gradients import input_gradient
    from keras_residual.lesion import gradient_per_path_length, path_gradients

    blocks, batch, samples, singles = args.blocks, args.batch_size, args.samples, args.singles
    features = 784
    model = build(blocks, 64, features)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(batch, 64), features)).astype("float32")
    y = rng.integers(0, 10, len(x))
    routes = rng.integers(0, 2, size=(singles, blocks))
    loss = LOSS
    lengths = [0, blocks // 2, blocks]

    def plain_batch():
        return input_gradient(lambda t: keras.ops.sum(loss(y[:batch], model(t, training=False))),
                              x[:batch])

    def routed(n: int):
        return gradient_per_path_length(model, (x, y), lengths, samples=n, batch_size=batch,
                                        loss=loss, at="input", progress=False)

    def one_at_a_time():
        gradients = []
        for j in range(singles):
            on = np.flatnonzero(routes[j]).tolist()
            off = np.flatnonzero(1 - routes[j]).tolist()
            with surgery.routed_gradients(model, branch=on, shortcut=off):
                gradients.append(input_gradient(
                    lambda t, j=j: keras.ops.sum(loss(y[j:j + 1], model(t, training=False))),
                    x[j:j + 1])[0])
        return np.stack(gradients)

    # Not timed: the per-sample routes against one route at a time, on the same samples.
    reference = one_at_a_time()
    batched = path_gradients(model, x[:singles], y[:singles], routes, at="input", loss=loss)
    largest = float(np.abs(reference).max())
    error = bench.relative_difference(batched, reference)
    # All-zero or identical reference gradients (a saturated softmax) would agree trivially.
    bench.require_agreement(
        bench.compare_outputs({"one at a time": reference, "per-sample routed": batched},
                              "one at a time", rtol=1e-4, what="input gradients"),
        "[gradient_paths] per-sample routed gradients differ from one-at-a-time ones:",
        "[gradient_paths] per-sample routed gradients match the one-at-a-time routed ones "
        f"(max relative difference {error:.1e})")

    plain = bench.paired_timing({"plain": plain_batch}, args.reps)
    routed(max(batch // 3, 1))  # warm-up; one_at_a_time ran above
    swept = bench.paired_timing({"routed": lambda: routed(samples),
                                 "one at a time": one_at_a_time}, reps=1, warmup=0)
    plain_per_s = 1.0 / plain.seconds("plain")
    routed_per_s = len(lengths) * samples / swept.seconds("routed")
    return [{
        "backend": keras.backend.backend(), "blocks": blocks, "batch": batch,
        "plain_batches_per_s": plain_per_s, "routed_samples_per_s": routed_per_s,
        "one_at_a_time_samples_per_s": singles / swept.seconds("one at a time"),
        "samples_per_backward_pass": routed_per_s / plain_per_s, "goal": batch / 2,
        "max_relative_difference": error, "largest_gradient": largest,
    }]


print_table = bench.table_printer(
    f"{'backend':<11}{'blocks':>7}{'B':>5}{'plain batch/s':>15}{'routed samples/s':>18}"
    f"{'1-by-1 samples/s':>18}{'samples/pass':>14}{'goal B/2':>10}{'max rel diff':>14}",
    "{backend:<11}{blocks:>7}{batch:>5}{plain_batches_per_s:>15.2f}{routed_samples_per_s:>18.1f}"
    "{one_at_a_time_samples_per_s:>18.2f}{samples_per_backward_pass:>14.1f}{goal:>10.1f}"
    "{max_relative_difference:>14.2e}")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time the three ways, print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--blocks", type=int, default=54, help="residual blocks (Veit et al.: 54)")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per backward pass")
    parser.add_argument("--samples", type=int, default=1000, help="routed samples per length "
                        "(3 lengths are timed)")
    parser.add_argument("--reps", type=int, default=5, help="timed plain batches")
    parser.add_argument("--singles", type=int, default=8,
                        help="one-at-a-time routed samples (timed and compared)")
    parser.add_argument("--quick", action="store_true",
                        help="6 blocks, batch 32, 64 samples per length, 2 reps, 3 singles")
    quick = {"blocks": 6, "batch_size": 32, "samples": 64, "reps": 2, "singles": 3}
    bench.run_benchmark(__file__, parser, measure, print_table, quick, argv)


if __name__ == "__main__":
    main()
