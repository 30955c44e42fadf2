"""Grow a trained CNN with identity-initialized residual blocks, against training the deep one from scratch, at equal compute.

A small residual CNN (one basic block per stage) trains on MNIST for
`--steps` steps; `keras_residual.surgery.insert_blocks` then adds one block
after each stage's block (the new blocks start as the identity, so the grown
network predicts exactly what the trained one did), and the grown network
fine-tunes for `--steps` more, twice: with a fresh Adam, and with the
trained Adam's state carried through growth (`surgery.carry_optimizer`:
the old weights keep their moments and step count, the new ones start with
fresh slots). The baselines are the same deep architecture trained from
scratch for `2 * --steps` steps on the same batches, twice: with its inserted
blocks identity-initialized (the branch's last BatchNormalization scale at
zero), and with standard initialization (that scale at one, as Keras
initializes every other one). He et al. (2015), Sec. 3.1 argue from this construction that a
deeper network need not do worse than a shallower one; this measures what
growing buys in a short training.

Each test accuracy is measured after precise BatchNorm (the moving
statistics set to population statistics of 1,024 training images; Wu and
Johnson 2021, Sec. 3). Compute is counted in multiply-adds: a training step costs about three
forward passes (the backward pass about two; Kaplan et al. 2020, Sec. 2.1),
so a step of the shallow network counts at its own, smaller cost. Every
route's test accuracy is recorded every `--eval-every` steps against its
cumulative compute (time-to-accuracy curves), and the scratch routes are
also evaluated at the step where they have spent what the grow routes spent
in total (equal compute).

    python examples/grow.py                  # 3 seeds x 5 routes, minutes on 2 CPU cores
    python examples/grow.py --quick          # seconds, for tests
    python examples/grow.py --seeds 5 --steps 500 --out results/

Prints, per seed, each route's test accuracy at equal steps and at equal
compute, the compute it needed to reach `--target` accuracy and its wall
time; then mean +- sample std over seeds. Writes everything, curves
included, to `{out}/grow_results.json` and the curves to `{out}/grow.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; standard library only, so it answers before Keras loads."""
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=100,
                        help="steps before growing, and again after it")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--eval-every", type=int, default=20,
                        help="steps between test evaluations (the curves' resolution)")
    parser.add_argument("--target", type=float, default=0.9,
                        help="test accuracy whose compute-to-reach is reported")
    parser.add_argument("--out", default=".", help="directory for grow_results.json and grow.png")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 5 + 5 steps, narrow blocks, one evaluation per phase")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.eval_every < 1:
        parser.error("--seeds, --steps and --eval-every must be >= 1. Received: "
                     f"{args.seeds}, {args.steps}, {args.eval_every}")
    return args


if __name__ == "__main__":  # --help and usage errors answer here, before Keras loads
    parse_args()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_residual.datasets import MnistData, load_mnist  # noqa: E402
from keras_residual.graph import walk  # noqa: E402
from keras_residual.lesion import precise_batchnorm  # noqa: E402
from keras_residual.models import count_mult_adds, mnist_resnet  # noqa: E402
from keras_residual.surgery import carry_optimizer, insert_blocks  # noqa: E402

#: Insert one block after the (only) block of each stage: (1, 1) becomes (2, 2).
GROW_AFTER = ("conv2_block1", "conv3_block1")
#: Full pre-activation blocks (zero last conv kernel, which standard_init re-draws), as in the
#: README's runs; insert_blocks would otherwise follow the host's post-activation placement.
GROW_PLACEMENT = "full_preact"
#: The routes, in the order they are printed.
ROUTES = ("grown", "grown_carried", "scratch", "scratch_standard")
LABELS = {
    "grown": "grown, fresh Adam",
    "grown_carried": "grown, Adam carried",
    "scratch": "scratch, identity init",
    "scratch_standard": "scratch, standard init",
}
#: A training step costs about three forward passes (Kaplan et al. 2020, Sec. 2.1).
PASSES_PER_STEP = 3


def _batches(data: MnistData, steps: int, batch_size: int, seed: int) -> tuple:
    """`steps * batch_size` training examples in the order every route sees them."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // len(data.x_train))
    order = np.concatenate([rng.permutation(len(data.x_train)) for _ in range(epochs)])
    order = order[: steps * batch_size]
    return data.x_train[order], data.y_train[order]


def _compile(model: keras.Model, optimizer: keras.optimizers.Optimizer,
             eager: bool) -> keras.Model:
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", run_eagerly=eager)
    return model


def _accuracy(model: keras.Model, data: MnistData, precise_images: int) -> float:
    """Test accuracy after precise BatchNorm on `precise_images` training images.

    The moving statistics lag the weights in a short Adam training (the test
    accuracy of one run jumped between 0.17 and 0.76 from one evaluation to
    the next), and an inserted block's BatchNormalization starts from mean 0,
    variance 1 at its default momentum 0.99: population statistics (Wu and
    Johnson 2021, Sec. 3) make each point measure the weights. Training
    normalizes with batch statistics, so this does not change it.
    """
    batch_size = min(256, precise_images)
    precise_batchnorm(model, data.x_train, batches=max(1, precise_images // batch_size),
                      batch_size=batch_size, seed=0)
    probabilities = model.predict(data.x_test, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == data.y_test))


class Curve:
    """Test accuracy against steps and cumulative multiply-adds of one route."""

    def __init__(self, steps: int = 0, mult_adds: float = 0.0, seconds: float = 0.0,
                 points: list | None = None):
        self.steps, self.mult_adds, self.seconds = steps, mult_adds, seconds
        self.points = list(points or [])

    def copy(self) -> Curve:
        return Curve(self.steps, self.mult_adds, self.seconds, self.points)

    def train(self, model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
              cost: float, data: MnistData, stops: list[int], precise_images: int) -> None:
        """Trains on `x, y` in order, evaluating after each of `stops` steps (relative to here)."""
        done = 0
        for stop in sorted(set(stops)):
            start = time.perf_counter()
            part = slice(done * batch_size, stop * batch_size)
            model.fit(x[part], y[part], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
            self.seconds += time.perf_counter() - start
            self.steps += stop - done
            self.mult_adds += (stop - done) * cost
            done = stop
            self.points.append((self.steps, self.mult_adds,
                                _accuracy(model, data, precise_images)))

    def accuracy(self) -> float:
        return self.points[-1][2]

    def at_step(self, step: int) -> float:
        return next(a for s, _, a in self.points if s == step)

    def to_reach(self, target: float) -> float | None:
        """Multiply-adds spent when the accuracy first reached `target` (None: never)."""
        return next((m for _, m, a in self.points if a >= target), None)

    def as_dict(self) -> dict:
        steps, mult_adds, accuracy = (list(v) for v in zip(*self.points, strict=True))
        return {"steps": steps, "mult_adds": mult_adds, "accuracy": accuracy,
                "seconds": self.seconds}


def _shallow(filters: tuple, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return mnist_resnet(blocks=(1, 1), filters=filters)


def standard_init(model: keras.Model, seed: int) -> keras.Model:
    """Re-initializes what starts at zero in the inserted blocks as Keras does by default.

    `identity_block` zeroes the branch's last BatchNormalization scale (Goyal et
    al. 2017, Sec. 5.1) or, without one, its last kernel; here a zero scale
    becomes ones and a zero kernel Glorot-uniform. Returns `model`.
    """
    initializer = keras.initializers.GlorotUniform(seed=seed)
    changed = 0
    for block in (layer for layer in model.layers if layer.name.endswith("_grown")):
        for layer in walk(block):
            gamma = getattr(layer, "gamma", None) if isinstance(
                layer, keras.layers.BatchNormalization) else None
            kernel = getattr(layer, "kernel", None)
            if gamma is not None and not np.any(keras.ops.convert_to_numpy(gamma)):
                gamma.assign(np.ones(tuple(gamma.shape), "float32"))
                changed += 1
            elif kernel is not None and not np.any(keras.ops.convert_to_numpy(kernel)):
                kernel.assign(initializer(tuple(kernel.shape)))
                changed += 1
    if changed < len(GROW_AFTER):
        raise ValueError(f"Found {changed} zero-initialized weights in the inserted blocks of "
                         f"{model.name!r}; expected one per block ({len(GROW_AFTER)}).")
    return model


def _stops(steps: int, every: int, extra: tuple = ()) -> list[int]:
    return sorted({*range(every, steps + 1, every), steps, *(s for s in extra if 0 < s <= steps)})


def run_seed(data: MnistData, seed: int, steps: int, batch_size: int, filters: tuple,
             learning_rate: float, eval_every: int, target: float, eager: bool = False,
             precise_images: int = 1024) -> dict:
    """Every route for one seed: shallow then grown (two optimizers), and two scratch baselines.

    `eager` runs the steps without tracing them (cheaper for a few steps of a
    tiny model); `precise_images` training images set the BatchNorm
    statistics before each evaluation.
    """
    x, y = _batches(data, 2 * steps, batch_size, seed)
    first, second = slice(0, steps * batch_size), slice(steps * batch_size, None)

    shallow = _compile(_shallow(filters, seed), keras.optimizers.Adam(learning_rate), eager)
    shallow_cost = PASSES_PER_STEP * batch_size * count_mult_adds(shallow)
    trained = Curve()
    trained.train(shallow, x[first], y[first], batch_size, shallow_cost, data,
                  _stops(steps, eval_every), precise_images)
    accuracy_shallow = trained.accuracy()

    curves, models = {}, {}
    for route in ("grown", "grown_carried"):
        grown = insert_blocks(shallow, after=list(GROW_AFTER), placement=GROW_PLACEMENT)
        optimizer = (carry_optimizer(shallow.optimizer, shallow, grown) if route == "grown_carried"
                     else keras.optimizers.Adam(learning_rate))
        models[route] = _compile(grown, optimizer, eager)
        curves[route] = trained.copy()
    accuracy_at_insertion = _accuracy(models["grown"], data, precise_images)
    deep_cost = PASSES_PER_STEP * batch_size * count_mult_adds(models["grown"])
    # The scratch routes have spent the grow routes' total compute after this many steps.
    equal_steps = int(round((trained.mult_adds + steps * deep_cost) / deep_cost))
    for route in ("grown", "grown_carried"):
        curves[route].train(models[route], x[second], y[second], batch_size, deep_cost, data,
                            _stops(steps, eval_every), precise_images)
    for route in ("scratch", "scratch_standard"):
        # The deep architecture from a fresh initialization, trained on all the batches.
        deep = insert_blocks(_shallow(filters, seed + 1000), after=list(GROW_AFTER),
                             placement=GROW_PLACEMENT)
        if route == "scratch_standard":
            standard_init(deep, seed + 2000)
        models[route] = _compile(deep, keras.optimizers.Adam(learning_rate), eager)
        curves[route] = Curve()
        curves[route].train(models[route], x, y, batch_size, deep_cost, data,
                            _stops(2 * steps, eval_every, (equal_steps,)), precise_images)
    return {
        "seed": seed,
        "params_shallow": shallow.count_params(),
        "params_deep": models["grown"].count_params(),
        "mult_adds_per_step": {"shallow": shallow_cost, "deep": deep_cost},
        "equal_compute_steps": equal_steps,
        "accuracy_shallow": accuracy_shallow,
        "accuracy_at_insertion": accuracy_at_insertion,
        **{f"accuracy_{route}": curves[route].accuracy() for route in ROUTES},
        "equal_compute": {
            route: curves[route].accuracy() if route.startswith("grown")
            else curves[route].at_step(equal_steps) for route in ROUTES},
        "to_target": {route: curves[route].to_reach(target) for route in ROUTES},
        "seconds": {route: curves[route].seconds for route in ROUTES},
        "curves": {route: curves[route].as_dict() for route in ROUTES},
    }


def _mean_std(values: list) -> str:
    values = np.array([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return "not reached"
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.4g} +- {std:.2g}"


def summarize(results: list[dict], target: float) -> dict:
    """Mean +- sample std over seeds of every route's numbers, as printable strings."""
    summary = {}
    for route in ROUTES:
        reached = [r["to_target"][route] for r in results]
        summary[route] = {
            "accuracy_equal_steps": _mean_std([r[f"accuracy_{route}"] for r in results]),
            "accuracy_equal_compute": _mean_std([r["equal_compute"][route] for r in results]),
            "mult_adds_to_target": _mean_std([m / 1e9 if m is not None else None for m in reached]),
            "reached_target": sum(m is not None for m in reached),
            "seconds": _mean_std([r["seconds"][route] for r in results]),
        }
    return summary


def _print(results: list[dict], steps: int, target: float) -> dict:
    first = results[0]
    print(f"shallow {first['params_shallow']:,} params, "
          f"{first['mult_adds_per_step']['shallow'] / 1e6:.1f}M mult-adds per step; deep "
          f"{first['params_deep']:,} params, {first['mult_adds_per_step']['deep'] / 1e6:.1f}M; "
          f"equal compute: {steps} + {steps} grow steps = {first['equal_compute_steps']} "
          f"scratch steps")
    print(f"{'seed':>4}  {'shallow':>7}  " + "  ".join(f"{r:>22}" for r in ROUTES))
    for r in results:
        cells = [f"{r[f'accuracy_{route}']:.4f} / {r['equal_compute'][route]:.4f}"
                 for route in ROUTES]
        print(f"{r['seed']:>4}  {r['accuracy_shallow']:>7.4f}  " + "  ".join(f"{c:>22}" for c in cells))
    print(f"(test accuracy after {2 * steps} steps / at equal compute)")
    summary = summarize(results, target)
    for route in ROUTES:
        s = summary[route]
        print(f"{LABELS[route]:>24}: {2 * steps} steps {s['accuracy_equal_steps']}, equal compute "
              f"{s['accuracy_equal_compute']}, G mult-adds to {target:.2f} "
              f"{s['mult_adds_to_target']} ({s['reached_target']}/{len(results)} seeds), "
              f"training s {s['seconds']}")
    return summary


def plot(results: list[dict], path: str) -> str:
    """Test accuracy against training multiply-adds, one line per route and seed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from keras_residual.figures import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for route, color in zip(ROUTES, ("C0", "C1", "C2", "C3"), strict=True):
        for n, r in enumerate(results):
            curve = r["curves"][route]
            ax.plot(np.array(curve["mult_adds"]) / 1e9, curve["accuracy"], color=color,
                    alpha=0.8, label=LABELS[route] if n == 0 else None)
    ax.axvline(results[0]["curves"]["grown"]["mult_adds"][-1] / 1e9, color="gray", ls=":",
               label="grow routes' total compute")
    ax.set_xlabel("training compute (G multiply-adds)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[dict]:
    """Command line: run every route for every seed, print and save the comparison."""
    args = parse_args(argv)
    seeds, steps, filters = (1, 5, (4, 8)) if args.quick else (args.seeds, args.steps, (16, 32))
    eval_every = steps if args.quick else args.eval_every
    data = load_mnist()
    start = time.perf_counter()
    results = []
    for seed in range(seeds):
        results.append(run_seed(data, seed, steps, args.batch_size, filters, args.learning_rate,
                                eval_every, args.target, eager=args.quick,
                                precise_images=64 if args.quick else 1024))
        print(f"seed {seed}: " + ", ".join(
            f"{route} {results[-1][f'accuracy_{route}']:.4f}" for route in ROUTES), flush=True)
    for r in results:
        if r["accuracy_at_insertion"] != r["accuracy_shallow"]:
            raise SystemExit(f"Growing changed the predictions: {r}")
    summary = _print(results, steps, args.target)
    seconds = round(time.perf_counter() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "grow_results.json")
    with open(path, "w") as f:
        json.dump({"steps_each": steps, "batch_size": args.batch_size, "grow_after": GROW_AFTER,
                   "learning_rate": args.learning_rate, "eval_every": eval_every,
                   "target": args.target, "passes_per_step": PASSES_PER_STEP,
                   "data": data.source, "backend": keras.backend.backend(), "seconds": seconds,
                   "summary": summary, "results": results}, f, indent=1)
    figure = plot(results, os.path.join(args.out, "grow.png"))
    print(f"wrote {path} and {figure} ({seconds:.0f} s)")
    return results


if __name__ == "__main__":
    main()
