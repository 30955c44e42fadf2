"""Grow a trained CNN with identity-initialized residual blocks, against training the deep one from scratch.

A small residual CNN (one basic block per stage) trains on MNIST for
`--steps` steps; `keras_residual.surgery.insert_blocks` then adds one block
after each stage's block (the new blocks start as the identity, so the grown
network predicts exactly what the trained one did), and the grown network
fine-tunes for `--steps` more. The baseline is the same deeper network,
built the same way from a fresh initialization, trained from scratch for
all `2 * --steps` steps on the same batches. He et al. (2015), Sec. 3.1
argue from this construction that a deeper network need not do worse than
a shallower one; this measures what it buys in a short training.

    python examples/grow.py                  # 3 seeds x (100 + 100 steps), minutes on 2 CPU cores
    python examples/grow.py --quick          # seconds, for tests
    python examples/grow.py --seeds 5 --steps 500 --out results/

Prints, per seed, the test accuracy and the training wall time of both
routes, side by side, and writes them to `{out}/grow_results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_residual.datasets import MnistData, load_mnist
from keras_residual.models import mnist_resnet
from keras_residual.surgery import insert_blocks

#: Insert one block after the (only) block of each stage: (1, 1) becomes (2, 2).
GROW_AFTER = ("conv2_block1", "conv3_block1")


def _batches(data: MnistData, steps: int, batch_size: int, seed: int) -> tuple:
    """`steps * batch_size` training examples in the order both routes see them."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // len(data.x_train))
    order = np.concatenate([rng.permutation(len(data.x_train)) for _ in range(epochs)])
    order = order[: steps * batch_size]
    return data.x_train[order], data.y_train[order]


def _train(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
           learning_rate: float) -> float:
    """Train on `x, y` once in order; returns the wall time in seconds (compilation included)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def _accuracy(model: keras.Model, data: MnistData) -> float:
    probabilities = model.predict(data.x_test, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == data.y_test))


def _shallow(filters: tuple, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return mnist_resnet(blocks=(1, 1), filters=filters)


def run_seed(data: MnistData, seed: int, steps: int, batch_size: int, filters: tuple,
             learning_rate: float) -> dict:
    """Both routes for one seed: grow (train, insert, fine-tune) and scratch (the deep net)."""
    x, y = _batches(data, 2 * steps, batch_size, seed)
    first, second = slice(0, steps * batch_size), slice(steps * batch_size, None)

    shallow = _shallow(filters, seed)
    time_shallow = _train(shallow, x[first], y[first], batch_size, learning_rate)
    accuracy_shallow = _accuracy(shallow, data)
    start = time.perf_counter()
    grown = insert_blocks(shallow, after=list(GROW_AFTER))
    time_insert = time.perf_counter() - start
    accuracy_at_insertion = _accuracy(grown, data)
    time_finetune = _train(grown, x[second], y[second], batch_size, learning_rate)
    accuracy_grown = _accuracy(grown, data)

    # The same deep architecture from a fresh initialization (its inserted blocks start
    # at zero as well), trained on all the batches.
    scratch = insert_blocks(_shallow(filters, seed + 1000), after=list(GROW_AFTER))
    time_scratch = _train(scratch, x, y, batch_size, learning_rate)
    accuracy_scratch = _accuracy(scratch, data)
    return {
        "seed": seed,
        "params_shallow": shallow.count_params(),
        "params_deep": grown.count_params(),
        "accuracy_shallow": accuracy_shallow,
        "accuracy_at_insertion": accuracy_at_insertion,
        "accuracy_grown": accuracy_grown,
        "accuracy_scratch": accuracy_scratch,
        "seconds_grow": time_shallow + time_insert + time_finetune,
        "seconds_scratch": time_scratch,
    }


def _print(results: list[dict], steps: int) -> None:
    print(f"{'seed':>4}  {'shallow':>8}  {'at insert':>9}  {'grown':>8}  {'scratch':>8}  "
          f"{'grow s':>7}  {'scratch s':>9}")
    for r in results:
        print(f"{r['seed']:>4}  {r['accuracy_shallow']:>8.4f}  {r['accuracy_at_insertion']:>9.4f}  "
              f"{r['accuracy_grown']:>8.4f}  {r['accuracy_scratch']:>8.4f}  "
              f"{r['seconds_grow']:>7.1f}  {r['seconds_scratch']:>9.1f}")
    grown = np.array([r["accuracy_grown"] for r in results])
    scratch = np.array([r["accuracy_scratch"] for r in results])
    print(f"mean test accuracy after {2 * steps} steps: grown {grown.mean():.4f} "
          f"(+- {grown.std():.4f}), from scratch {scratch.mean():.4f} (+- {scratch.std():.4f}); "
          f"grown better on {int(np.sum(grown > scratch))} of {len(results)} seeds")
    time_ratio = np.mean([r["seconds_grow"] / r["seconds_scratch"] for r in results])
    print(f"mean wall time ratio grow / scratch: {time_ratio:.2f}")


def main(argv: list[str] | None = None) -> list[dict]:
    """Command line: run both routes for every seed, print and save the comparison."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=100,
                        help="steps before growing, and again after it")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--out", default=".", help="directory for grow_results.json")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 5 + 5 steps, narrow blocks (a smoke test)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error(f"--seeds and --steps must be >= 1. Received: {args.seeds}, {args.steps}")
    seeds, steps, filters = (1, 5, (4, 8)) if args.quick else (args.seeds, args.steps, (16, 32))
    data = load_mnist()
    results = []
    for seed in range(seeds):
        results.append(run_seed(data, seed, steps, args.batch_size, filters, args.learning_rate))
        print(f"seed {seed}: {results[-1]}", flush=True)
    for r in results:
        if r["accuracy_at_insertion"] != r["accuracy_shallow"]:
            raise SystemExit(f"Growing changed the predictions: {r}")
    _print(results, steps)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "grow_results.json")
    with open(path, "w") as f:
        json.dump({"steps_each": steps, "batch_size": args.batch_size, "grow_after": GROW_AFTER,
                   "data": data.source, "backend": keras.backend.backend(),
                   "results": results}, f, indent=1)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
