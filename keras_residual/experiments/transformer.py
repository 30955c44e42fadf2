"""Veit et al.'s lesion and path studies on a Transformer's residual stream (sequential MNIST).

A pre-norm Transformer reads an MNIST digit as 28 tokens, one per row of 28
pixels (`rows_transformer`), and is trained for a few epochs; each of its
blocks is an attention `Residual` and an MLP `Residual`
(`blocks.transformer_block`). `transformer_lesion_study` then runs, per
seed, every study of `keras_residual.lesion.stream` on the test digits and
the gradient per path length over the sub-layers, and sets the numbers
beside the published findings on Transformers:

- Lad, Lee, Gurnee, Tegmark (2024, arXiv 2406.19384): deleting one layer or
  swapping two adjacent layers of an LLM keeps 72-95 % of its next-token
  accuracy; the first and last layers are the most sensitive.
- Bhojanapalli et al. (2021, ICCV): a ViT survives the removal of almost
  any single layer.
- Sun et al. ("Transformer Layers as Painters", AAAI 2025): first and last
  layers differ from the middle ones; skipping, reversing or shuffling the
  middle degrades gracefully, repeating one middle layer does not, running
  the middle in parallel is a usable trade.
- He et al. (2024, arXiv 2406.15786): attention sub-layers can be dropped
  far more safely than MLP sub-layers.
- Gromov et al. (ICLR 2025): the run of layers whose input and output are
  closest in angle can be deleted at the least cost.
- Veit et al. (2016, Sec. 5, Fig. 6): in a ResNet-110 (54 blocks) the
  gradient comes from paths of 5-17 blocks, 0.09-0.31 of n; here the same
  measurement over the Transformer's 2 * depth sub-layers.

`examples/transformer_lesion.py` is the command line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import keras
import numpy as np
from keras import layers

from keras_residual.experiments.published import VEIT_2016

#: The published findings the study's table sets its numbers beside.
PUBLISHED = {
    "lad_2024": "deleting one layer or swapping two adjacent layers keeps 72-95 % of next-token "
                "accuracy; first and last layers most sensitive (Lad et al. 2024, arXiv "
                "2406.19384)",
    "bhojanapalli_2021": "ViTs survive removing almost any single layer (Bhojanapalli et al. "
                         "2021, ICCV)",
    "he_2024": "attention sub-layers can be dropped far more safely than MLP sub-layers (He et "
               "al. 2024, arXiv 2406.15786)",
    "sun_2025": "skipping, reversing or shuffling middle layers degrades gracefully, repeating "
                "one middle layer does not (Sun et al. 2025, AAAI)",
    "gromov_2025": "the run of layers most similar in angle is the cheapest to delete (Gromov "
                   "et al. 2025, ICLR)",
    "veit_2016": f"ResNet-110 ({VEIT_2016['blocks']} blocks): effective paths "
                 f"{VEIT_2016['effective_path_range']} blocks, 0.09-0.31 of n (Veit et al. "
                 "2016, Sec. 5, Fig. 6)",
}


def rows_transformer(depth: int = 8, d_model: int = 32, num_heads: int = 4,
                     mlp_dim: int | None = 64, dropout: float = 0.0,
                     input_shape: tuple[int, int] = (28, 28), classes: int = 10) -> keras.Model:
    """A pre-norm Transformer that reads an image row by row (one token per row).

    Each of the `input_shape[0]` rows is projected to `d_model`, given a
    learned position embedding and run through `depth` pre-norm blocks
    (`models.transformer.transformer_stack`); the classifier reads the mean
    over tokens. The sequential-MNIST setting of Le et al. (2015, Sec. 4.1)
    with rows as tokens, as Bolte's (2016) residual GRU reads MNIST.

    Args:
        depth: int. Transformer blocks (2 * depth residual sub-layers).
        d_model: int. Width of the residual stream.
        num_heads: int. Attention heads.
        mlp_dim: int or None. Hidden width of each MLP; None: 4 * d_model.
        dropout: float. Attention and MLP dropout.
        input_shape: (rows, pixels per row).
        classes: int.

    Returns:
        An uncompiled `keras.Model` from (None, rows, pixels) to class probabilities.

    Example:
        >>> from keras_residual.surgery import residual_blocks
        >>> model = rows_transformer(depth=2, d_model=8, num_heads=2, mlp_dim=16)
        >>> len(residual_blocks(model)), tuple(model.output.shape)
        (4, (None, 10))
    """
    from keras_residual.models.transformer import PositionEmbedding, transformer_stack

    inputs = keras.Input(input_shape, name="rows")
    x = layers.Dense(d_model, name="row_embedding")(inputs)
    x = PositionEmbedding(input_shape[0], name="position_embedding")(x)
    x = transformer_stack(x, depth, d_model=d_model, num_heads=num_heads, mlp_dim=mlp_dim,
                          dropout=dropout)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"rows_transformer{depth}")


def train_rows_transformer(data: Any, seed: int, depth: int = 8, epochs: int = 6,
                           learning_rate: float = 2e-3, batch_size: int = 64,
                           **model_kwargs: Any) -> tuple[keras.Model, float]:
    """Trains `rows_transformer` with Adam on `data` (sequence layout); returns it and its test error.

    Example:
        >>> from types import SimpleNamespace
        >>> rng = np.random.default_rng(0)
        >>> d = SimpleNamespace(x_train=rng.random((32, 28, 28), "float32"),
        ...     y_train=np.arange(32) % 10, x_test=rng.random((16, 28, 28), "float32"),
        ...     y_test=np.arange(16) % 10)
        >>> model, error = train_rows_transformer(d, seed=0, depth=1, epochs=1, d_model=8,
        ...                                       num_heads=2, mlp_dim=8)
        >>> 0.0 <= error <= 1.0
        True
    """
    keras.utils.set_random_seed(seed)
    model = rows_transformer(depth=depth, **model_kwargs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0)
    return model, 1.0 - float(accuracy)


def _lesions(model: keras.Model, test: tuple, depth: int, draws: int, seed: int,
             progress: bool) -> dict:
    """Every residual-stream study of `lesion.stream` on one trained network."""
    from keras_residual.lesion import similarity, stream

    blocks = stream.unit_deletion(model, test, "block", progress=progress)
    sublayers = stream.unit_deletion(model, test, "sublayer", progress=progress)
    k = stream.k_unit_deletion(model, test, ks=range(depth + 1), samples=draws,
                               granularity="block", seed=seed, progress=progress)
    swaps = stream.adjacent_swaps(model, test, "block")
    orders = stream.unit_reordering(model, test, ks=[1, 2, depth // 2], samples=draws,
                                    seed=seed, progress=progress)
    middle = stream.middle_arrangements(model, test, seed=seed)
    contiguous = similarity.contiguous_deletion(model, test, ns=range(1, depth - 1))
    drops = {kind: similarity.similarity_drop(model, test, ks=range(1, depth // 2 + 1), kind=kind)
             for kind in ("attention", "mlp")}
    return {
        "intact_error": float(blocks.intact_error),
        "block_deletion": {"names": blocks.names.tolist(), "errors": blocks.errors.tolist()},
        "sublayer_deletion": {"names": sublayers.names.tolist(),
                              "errors": sublayers.errors.tolist()},
        "k_deletion": {"ks": k.ks.tolist(), "mean": k.mean.tolist(), "std": k.std.tolist()},
        "adjacent_swaps": {"names": swaps.names.tolist(), "errors": swaps.errors.tolist()},
        "reordering": {"ks": orders.ks.tolist(),
                       "kendall_tau": orders.kendall_tau.mean(1).tolist(),
                       "errors": orders.errors.mean(1).tolist()},
        "middle": {"names": middle.names.tolist(), "errors": middle.errors.tolist()},
        "contiguous": {"ns": contiguous.ns.tolist(), "starts": contiguous.starts.tolist(),
                       "errors": contiguous.errors.tolist()},
        "similarity_drop": {kind: {"ks": r.ks.tolist(), "errors": r.errors.tolist()}
                            for kind, r in drops.items()},
    }


def _paths(model: keras.Model, data: Any, samples: int, seed: int, progress: bool) -> dict:
    """Veit et al.'s gradient per path length over the sub-layers (Sec. 5, Fig. 6)."""
    from keras_residual.lesion import gradient_per_path_length

    rows = min(len(data.x_train), max(samples, 256))
    result = gradient_per_path_length(model, (data.x_train[:rows], data.y_train[:rows]),
                                      samples=samples, seed=seed, progress=progress)
    n = result.n_blocks
    low, high = (int(v) for v in result.effective_range)
    return {"n_sublayers": int(n), "lengths": result.lengths.tolist(),
            "mean_norm": result.mean_norm.tolist(), "total": result.total.tolist(),
            "effective_range": [low, high], "effective_range_over_n": [low / n, high / n],
            "effective_share": float(result.effective_share),
            "samples_per_length": int(samples)}, result


def _kept(error: Any, intact: float) -> np.ndarray:
    """Accuracy kept, as a fraction of the intact network's: (1 - error) / (1 - intact)."""
    return (1.0 - np.asarray(error, "float64")) / max(1e-12, 1.0 - intact)


def _seed_mean(seeds: list[dict], study: str, field: str) -> np.ndarray:
    return np.mean([seed[study][field] for seed in seeds], axis=0)


def summarize(seeds: list[dict]) -> dict:
    """The numbers the table shows, over seeds (mean; ranges over blocks of the seed means).

    Example:
        >>> seed = {"intact_error": 0.1, "block_deletion": {"names": ["b1", "b2"],
        ...         "errors": [0.55, 0.19]}, "adjacent_swaps": {"errors": [0.28]},
        ...         "contiguous": {"ns": [1], "errors": [0.19]},
        ...         "k_deletion": {"ks": [0, 1], "mean": [0.1, 0.37]},
        ...         "paths": {"effective_range_over_n": [0.25, 0.5]},
        ...         "similarity_drop": {"attention": {"errors": [0.1]}, "mlp": {"errors": [0.3]}}}
        >>> s = summarize([seed])
        >>> s["most_sensitive_block"], [round(v, 2) for v in s["block_deletion_kept"]]
        ('b1', [0.5, 0.9])
    """
    intact = float(np.mean([s["intact_error"] for s in seeds]))
    deletion = np.mean([s["block_deletion"]["errors"] for s in seeds], axis=0)
    swaps = np.mean([s["adjacent_swaps"]["errors"] for s in seeds], axis=0)
    names = seeds[0]["block_deletion"]["names"]
    kept, swap_kept = _kept(deletion, intact), _kept(swaps, intact)
    return {
        "intact_error": intact,
        "block_deletion_error": deletion.tolist(),
        "block_deletion_kept": [float(kept.min()), float(kept.max())],
        "most_sensitive_block": names[int(np.argmax(deletion))],
        "most_sensitive_position": int(np.argmax(deletion)),
        "adjacent_swap_kept": [float(swap_kept.min()), float(swap_kept.max())],
        "similarity_drop": {kind: np.mean([s["similarity_drop"][kind]["errors"] for s in seeds],
                                          axis=0).tolist() for kind in ("attention", "mlp")},
        "contiguous_error": _seed_mean(seeds, "contiguous", "errors").tolist(),
        "contiguous_ns": seeds[0]["contiguous"]["ns"],
        "random_k_error": _seed_mean(seeds, "k_deletion", "mean").tolist(),
        "effective_range_over_n": np.mean(
            [s["paths"]["effective_range_over_n"] for s in seeds], axis=0).tolist(),
    }


def results_table(results: dict) -> str:
    """The study's findings beside the published ones, as a Markdown table.

    Example:
        >>> r = {"depth": 8, "seeds": [{}], "summary": {"intact_error": 0.05,
        ...      "block_deletion_kept": [0.6, 0.99], "most_sensitive_block": "block1",
        ...      "most_sensitive_position": 0, "adjacent_swap_kept": [0.7, 0.98],
        ...      "effective_range_over_n": [0.12, 0.31],
        ...      "similarity_drop": {"attention": [0.05], "mlp": [0.2]}, "contiguous_ns": [1],
        ...      "contiguous_error": [0.06], "random_k_error": [0.05, 0.3]}, "middle": {"skip": 0.2}}
        >>> print(results_table(r).splitlines()[2][:40])
        | Accuracy kept after deleting one block
    """
    s, depth = results["summary"], results["depth"]
    position = s["most_sensitive_position"]
    where = "first" if position == 0 else "last" if position == depth - 1 else "a middle"
    middle = ", ".join(f"{k} {v:.3f}" for k, v in results["middle"].items())
    rows = [
        ("Accuracy kept after deleting one block (range over blocks)",
         "72-95 % (LLMs; Lad et al. 2024)",
         "{:.0%}-{:.0%}".format(*s["block_deletion_kept"])),
        ("Most sensitive block", "first and last (Lad et al. 2024; Sun et al. 2025)",
         f"{s['most_sensitive_block']} ({where} block of {depth})"),
        ("Accuracy kept after swapping two adjacent blocks", "72-95 % (Lad et al. 2024)",
         "{:.0%}-{:.0%}".format(*s["adjacent_swap_kept"])),
        ("Middle blocks skipped / reversed / shuffled / one repeated / in parallel (error)",
         "graceful except repeat (Sun et al. 2025)", middle),
        ("The k most redundant attention / MLP sub-layers dropped (error, k = 1, 2, ...)",
         "attention far safer to drop than MLP (He et al. 2024)",
         " / ".join(", ".join(f"{e:.3f}" for e in s["similarity_drop"][kind])
                    for kind in ("attention", "mlp"))),
        ("The n blocks most alike in input and output deleted, against n random blocks "
         "(error, n = " + ", ".join(str(n) for n in s["contiguous_ns"]) + ")",
         "a contiguous run chosen by angular distance is the cheapest to delete (Gromov et al. "
         "2025)",
         " / ".join(", ".join(f"{e:.3f}" for e in errors) for errors in (
             s["contiguous_error"], [s["random_k_error"][n] for n in s["contiguous_ns"]]))),
        ("Effective paths, fraction of n (gradient per path length)",
         "0.09-0.31 (ResNet-110, 54 blocks; Veit et al. 2016, Fig. 6)",
         "{:.2f}-{:.2f} ({} sub-layers)".format(*s["effective_range_over_n"], 2 * depth)),
    ]
    seeds = len(results["seeds"])
    over = f"mean over {seeds} seeds, " if seeds > 1 else ""
    lines = [f"| finding | published | here ({over}intact error {s['intact_error']:.3f}) |",
             "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows]) + "\n"


def _write(out_dir: str, results: dict) -> None:
    with open(os.path.join(out_dir, "results.json"), "w") as file:
        json.dump(results, file, indent=1)


def _seed_run(data: Any, seed: int, depth: int, epochs: int, draws: int, samples: int,
              progress: bool, model_kwargs: dict) -> tuple[dict, Any]:
    start = time.perf_counter()
    model, error = train_rows_transformer(data, seed, depth=depth, epochs=epochs, **model_kwargs)
    trained = time.perf_counter() - start
    entry = {"seed": seed, "test_error": error, "train_seconds": round(trained, 1)}
    entry.update(_lesions(model, (data.x_test, data.y_test), depth, draws, seed, progress))
    entry["paths"], gradients = _paths(model, data, samples, seed, progress)
    entry["study_seconds"] = round(time.perf_counter() - start - trained, 1)
    if seed == 0:
        entry["model"] = model
    deletion = np.asarray(entry["block_deletion"]["errors"])
    print(f"[transformer] seed {seed}: test error {error:.4f} after {epochs} epochs "
          f"({trained:.0f} s); one block deleted: error {deletion.min():.4f}-{deletion.max():.4f}, "
          f"worst {entry['block_deletion']['names'][int(deletion.argmax())]}; effective paths "
          "{}-{} of {} sub-layers".format(*entry["paths"]["effective_range"],
                                          entry["paths"]["n_sublayers"]))
    return entry, gradients


def transformer_lesion_study(data: Any, out_dir: str, seeds: int = 3, depth: int = 8,
                             epochs: int = 6, draws: int = 5, samples: int = 1000,
                             progress: bool = False, **model_kwargs: Any) -> dict:
    """Trains `rows_transformer` per seed and runs every residual-stream study on it.

    Per seed: single deletion of blocks and of sub-layers, k-block deletion,
    adjacent swaps, reordering against Kendall's tau, the middle skipped,
    reversed, shuffled, repeated and run in parallel, deletion of the most
    similar contiguous run, and the gradient per path length over the
    sub-layers (`samples` per length; Veit et al. 2016 take 1,000). Writes
    `results.json` (after every seed), `results.md` (the findings beside
    the published ones, `results_table`), two figures and the first seed's
    network (`model_seed0.keras`) to `out_dir`.

    Args:
        data: an object with `x_train`, `y_train`, `x_test`, `y_test` in the
            sequence layout (N, 28, 28) and `source`
            (`datasets.load_mnist(layout="sequence")`).
        out_dir: str. Where the results and figures go.
        seeds: int. Networks trained from different seeds. Defaults to 3.
        depth: int. Transformer blocks (at least 4). Defaults to 8.
        epochs: int. Training epochs. Defaults to 6.
        draws: int. Random sets per k (deletion, reordering). Defaults to 5.
        samples: int. Gradient measurements per path length. Defaults to 1000.
        progress: bool. tqdm bars.
        **model_kwargs: `rows_transformer` arguments (d_model, num_heads, ...).

    Returns:
        The results, as written to `results.json`.

    Example:
        A 4-block run on random digits (about 20 s;
        `examples/transformer_lesion.py --quick` runs it in the test suite):

        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> rng = np.random.default_rng(0)
        >>> d = SimpleNamespace(x_train=rng.random((64, 28, 28), "float32"),
        ...     y_train=np.arange(64) % 10, x_test=rng.random((32, 28, 28), "float32"),
        ...     y_test=np.arange(32) % 10, source="random")
        >>> r = transformer_lesion_study(d, tempfile.mkdtemp(), seeds=1, depth=4, epochs=1,
        ...     draws=1, samples=4, d_model=8, num_heads=2, mlp_dim=8)  # doctest: +SKIP
        >>> sorted(r["figures"])  # doctest: +SKIP
        ['paths', 'studies']
    """
    from keras_residual.figures import save_figure
    from keras_residual.lesion import plots

    if depth < 4:
        raise ValueError(f"The study rearranges the blocks between the first and the last, at "
                         f"least two: `depth` >= 4. Received: depth={depth}")
    os.makedirs(out_dir, exist_ok=True)
    results = {"dataset": getattr(data, "source", "given"), "depth": depth, "epochs": epochs,
               "model": dict(model_kwargs), "train_samples": len(data.x_train),
               "test_samples": len(data.x_test), "seeds": [], "figures": {},
               "published": PUBLISHED}
    for seed in range(seeds):
        entry, gradients = _seed_run(data, seed, depth, epochs, draws, samples, progress,
                                     model_kwargs)
        model = entry.pop("model", None)
        results["seeds"].append(entry)
        if seed == 0:
            model.save(os.path.join(out_dir, "model_seed0.keras"))
            save_figure(plots.plot_path_gradients(gradients),
                        os.path.join(out_dir, "transformer_paths.png"))
            results["figures"]["paths"] = "transformer_paths.png"
        _write(out_dir, results)
    return _finish(results, out_dir)


def _finish(results: dict, out_dir: str) -> dict:
    """The summary over seeds, the studies' figure, results.json and results.md."""
    from keras_residual.experiments.plots import plot_transformer_study
    from keras_residual.figures import save_figure

    results["summary"] = summarize(results["seeds"])
    names = results["seeds"][0]["middle"]["names"]
    results["middle"] = {name: float(np.mean([s["middle"]["errors"][i] for s in results["seeds"]]))
                         for i, name in enumerate(names)}
    save_figure(plot_transformer_study(results), os.path.join(out_dir, "transformer_studies.png"))
    results["figures"]["studies"] = "transformer_studies.png"
    _write(out_dir, results)
    with open(os.path.join(out_dir, "results.md"), "w") as file:
        file.write(results_table(results))
    return results


def text_windows(token_ids: Any, sequence_length: int, sequences: int) -> np.ndarray:
    """Consecutive, non-overlapping windows of `sequence_length + 1` tokens (at most `sequences`).

    Example:
        >>> text_windows(np.arange(10), 3, 5).tolist()
        [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    ids = np.asarray(token_ids).reshape(-1)
    count = min(sequences, len(ids) // (sequence_length + 1))
    if count < 1:
        raise ValueError(f"The text has {len(ids)} tokens, fewer than one window of "
                         f"{sequence_length + 1}. Received: sequence_length={sequence_length}")
    return ids[: count * (sequence_length + 1)].reshape(count, sequence_length + 1)


def keras_hub_lesion_study(preset: str, text: str, out_dir: str, sequence_length: int = 64,
                           sequences: int = 128, draws: int = 5, samples: int = 1000,
                           progress: bool = False) -> dict:
    """Every residual-stream study on a keras-hub GPT-2 / OPT language model, on a text.

    The preset (a keras-hub name, which keras-hub downloads, or a local
    preset folder, which works offline) is loaded as a `CausalLM`, converted
    into `Residual` sub-layers (`models.causal_lm_from_keras_hub`), and its
    own tokenizer cuts `text` into `sequences` windows; the metric is the
    next-token error over all positions (Lad et al. 2024 measure the
    accuracy of the next token). The studies and files are those of
    `transformer_lesion_study`, with the one network in place of the seeds.

    Args:
        preset: str. A keras-hub preset name or folder of a GPT-2 or OPT causal LM.
        text: str. A UTF-8 text file.
        out_dir: str. Where the results and figures go.
        sequence_length: int. Tokens per window. Defaults to 64.
        sequences: int. At most this many windows. Defaults to 128.
        draws: int. Random sets per k. Defaults to 5.
        samples: int. Gradient measurements per path length. Defaults to 1000.
        progress: bool. tqdm bars.

    Returns:
        The results, as written to `results.json`.

    Example:
        GPT-2 (124M parameters; keras-hub downloads the preset) on a book:

        >>> from keras_residual.experiments.transformer import keras_hub_lesion_study
        >>> keras_hub_lesion_study("gpt2_base_en", "book.txt", "out")  # doctest: +SKIP
    """
    from types import SimpleNamespace

    import keras_hub

    from keras_residual.figures import save_figure
    from keras_residual.lesion import plots, stream
    from keras_residual.models import causal_lm_from_keras_hub

    causal_lm = keras_hub.models.CausalLM.from_preset(preset)
    with open(text, encoding="utf-8") as file:
        token_ids = keras.ops.convert_to_numpy(causal_lm.preprocessor.tokenizer(file.read()))
    x, y = stream.next_token_data(text_windows(token_ids, sequence_length, sequences))
    model = causal_lm_from_keras_hub(causal_lm)
    depth = len(stream.transformer_units(model))
    os.makedirs(out_dir, exist_ok=True)
    entry = {"seed": 0, "test_error": float(np.mean(
        model.predict(x, verbose=0).argmax(-1) != y))}
    entry.update(_lesions(model, (x, y), depth, draws, 0, progress))
    entry["paths"], gradients = _paths(model, SimpleNamespace(x_train=x, y_train=y), samples, 0,
                                       progress)
    results = {"dataset": f"{text} ({x.size} next tokens in {len(x)} windows)", "depth": depth,
               "preset": preset, "seeds": [entry], "published": PUBLISHED,
               "figures": {"paths": "transformer_paths.png"}}
    save_figure(plots.plot_path_gradients(gradients), os.path.join(out_dir, "transformer_paths.png"))
    return _finish(results, out_dir)
