"""Stochastic depth and single-block deletion where Veit et al. find the effect: downsampling blocks.

Veit, Wilber and Belongie (2016, Sec. 6, Fig. 8) delete single blocks of a
ResNet-110 trained normally and one trained with stochastic depth (Huang et
al. 2016, linear decay to 0.5): stochastic depth "improves resilience
slightly; only the dependence on the downsampling layers seems to be
reduced". The 54-block MLP of `experiments.ensemble` has no downsampling
block, so a null result is what the paper predicts there. `fig8_study`
repeats the comparison on a convolutional ResNet with downsampling blocks,
over seeds, with precise BatchNorm statistics for both networks, and splits
the deletion errors into downsampling and other blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def fig8_study(
    build: Callable[[float], keras.Model],
    data: Any,
    seeds: int = 3,
    epochs: int = 4,
    batch_size: int = 64,
    final_survival: float = 0.5,
    precise_bn_batches: int = 50,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Single-block deletion of normal and stochastic-depth training, per seed (Fig. 8).

    Args:
        build: `build(final_survival)` returns a compiled residual network
            whose blocks drop with linearly decaying survival down to
            `final_survival` (1.0: none).
        data: an object with `x_train`, `y_train`, `x_test`, `y_test`.
        seeds: int. Seeds (each trains both networks). Defaults to 3.
        epochs: int. Training epochs. Defaults to 4.
        batch_size: int. Defaults to 64.
        final_survival: float. Survival of the last block. Defaults to 0.5 (the paper's).
        precise_bn_batches: int. Precise BatchNorm batches for both networks. Defaults to 50.
        progress: bool. Progress bars. Defaults to False.
        shard: (i, n). Run only seeds i, i + n, i + 2n, ... of `range(seeds)`,
            so that n processes split the study; `merge_fig8` combines their
            results into the unsharded one (each seed is seeded on its own,
            so a seed's numbers do not depend on the others). Defaults to
            (0, 1), every seed.

    Returns:
        dict with `blocks` (names), `downsampling` (flags), `seed_ids` (the
        seeds run), and for "normal" and "stochastic_depth": `intact` (per
        seed), `errors` (seed x block) and `increase_downsampling` /
        `increase_other` (per seed: mean error increase over the intact
        network at downsampling / other blocks).

    Example:
        Two 2-block networks on random images (about 10 s;
        tests/test_cluster.py runs the same, whole and in shards):

        >>> from types import SimpleNamespace
        >>> from keras_residual.models import mnist_resnet
        >>> def build(survival):
        ...     m = mnist_resnet(input_shape=(8, 8, 1), blocks=(1, 1), filters=(4, 8),
        ...                      drop_rate=1.0 - survival)
        ...     m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        ...     return m
        >>> rng = np.random.default_rng(0)
        >>> d = SimpleNamespace(x_train=rng.random((64, 8, 8, 1), "float32"),
        ...     y_train=np.arange(64) % 10, x_test=rng.random((16, 8, 8, 1), "float32"),
        ...     y_test=np.arange(16) % 10)
        >>> r = fig8_study(build, d, seeds=1, epochs=1, precise_bn_batches=1)  # doctest: +SKIP
        >>> r["downsampling"], len(r["stochastic_depth"]["errors"][0])  # doctest: +SKIP
        ([False, True], 2)
    """
    from keras_residual.lesion import downsampling, residual_blocks, stochastic_depth_resilience

    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"`shard` must be (i, n) with 0 <= i < n. Received: shard={shard}")
    blocks = residual_blocks(build(1.0))
    flags = np.array([downsampling(block) for block in blocks])
    result: dict[str, Any] = {"blocks": [b.name for b in blocks],
                              "downsampling": flags.tolist(), "final_survival": final_survival,
                              "epochs": epochs, "seeds": seeds,
                              "seed_ids": list(range(index, seeds, count))}
    runs = {"normal": [], "stochastic_depth": []}
    for seed in result["seed_ids"]:
        pair = stochastic_depth_resilience(
            build, (data.x_train, data.y_train), (data.x_test, data.y_test), epochs=epochs,
            batch_size=batch_size, final_survival=final_survival, seed=seed,
            progress=progress, precise_bn_batches=precise_bn_batches)
        runs["normal"].append((pair.normal.intact_error, pair.normal.errors))
        runs["stochastic_depth"].append((pair.stochastic_depth.intact_error,
                                         pair.stochastic_depth.errors))
    for name, rows in runs.items():
        result[name] = _per_seed(rows, flags)
    return result


def _per_seed(rows: list, flags: np.ndarray) -> dict[str, list]:
    """`intact`, `errors` and the mean increases of `(intact error, errors)` rows, one per seed."""
    intact = np.array([row[0] for row in rows], dtype="float64").reshape(-1)
    errors = np.array([row[1] for row in rows], dtype="float64").reshape(len(rows), len(flags))
    increase = errors - intact[:, None]
    return {
        "intact": intact.tolist(), "errors": errors.tolist(),
        "increase_downsampling": increase[:, flags].mean(1).tolist() if flags.any() else [],
        "increase_other": increase[:, ~flags].mean(1).tolist(),
    }


def merge_fig8(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The `fig8_study` result of all seeds, from the results of its shards (`shard=(i, n)`).

    Raises:
        ValueError: the shards ran other settings or networks, or their seeds
            overlap or miss some of `range(seeds)`.

    Example:
        >>> def shard(seed, error):
        ...     row = {"intact": [0.1], "errors": [[error, 0.1]],
        ...            "increase_downsampling": [error - 0.1], "increase_other": [0.0]}
        ...     return {"blocks": ["a", "b"], "downsampling": [True, False], "final_survival": 0.5,
        ...             "epochs": 1, "seeds": 2, "seed_ids": [seed], "normal": row,
        ...             "stochastic_depth": row}
        >>> merged = merge_fig8([shard(1, 0.5), shard(0, 0.3)])
        >>> merged["seed_ids"], merged["normal"]["errors"]
        ([0, 1], [[0.3, 0.1], [0.5, 0.1]])
    """
    if not shards:
        raise ValueError("`shards` is empty: pass the results of every shard.")
    settings = ("blocks", "downsampling", "final_survival", "epochs", "seeds")
    first = shards[0]
    differing = [key for key in settings for other in shards[1:] if other[key] != first[key]]
    seeds = sorted(seed for r in shards for seed in r["seed_ids"])
    if differing or seeds != list(range(first["seeds"])):
        raise ValueError(
            "The shards are not one study split by seed: they differ in "
            f"{sorted(set(differing)) or 'nothing'} and ran seeds {seeds} of "
            f"{first['seeds']}. Received: {len(shards)} shard results")
    flags = np.array(first["downsampling"], dtype=bool)
    merged = {key: first[key] for key in settings} | {"seed_ids": seeds}
    for name in ("normal", "stochastic_depth"):
        rows = {seed: (r[name]["intact"][i], r[name]["errors"][i])
                for r in shards for i, seed in enumerate(r["seed_ids"])}
        merged[name] = _per_seed([rows[seed] for seed in seeds], flags)
    return merged


def fig8_table(result: dict[str, Any]) -> str:
    """`fig8_study`'s result beside Veit et al. (2016), Fig. 8, as markdown (errors in %).

    Example:
        >>> r = {"downsampling": [False, True], "normal": {"intact": [0.1],
        ...      "increase_downsampling": [0.2], "increase_other": [0.01]},
        ...      "stochastic_depth": {"intact": [0.1], "increase_downsampling": [0.05],
        ...      "increase_other": [0.01]}}
        >>> print(fig8_table(r).splitlines()[3])
        | stochastic depth | 10.0 +- 0.0 | +5.0 +- 0.0 | +1.0 +- 0.0 | smaller at downsampling blocks, otherwise about the same |
    """

    def pct(values, sign=""):
        values = 100 * np.asarray(values, dtype="float64")
        return f"{values.mean():{sign}.1f} +- {values.std():.1f}" if values.size else "n/a"

    paper = {"normal": "peaks only at downsampling blocks (Fig. 3)",
             "stochastic_depth": "smaller at downsampling blocks, otherwise about the same"}
    lines = ["| training | intact test error | error increase, downsampling blocks | error "
             "increase, other blocks | Veit et al. 2016, Fig. 8 |", "|---|---|---|---|---|"]
    for name, label in (("normal", "normal"), ("stochastic_depth", "stochastic depth")):
        r = result[name]
        lines.append(f"| {label} | {pct(r['intact'])} | {pct(r['increase_downsampling'], '+')} | "
                     f"{pct(r['increase_other'], '+')} | {paper[name]} |")
    return "\n".join(lines) + "\n"
