"""Figures of the papers' experiments, drawn from the scripts' results.json.

Each function returns a `matplotlib.figure.Figure` built without pyplot;
`keras_residual.figures.save_figure` writes it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure


def plot_degradation(results: Mapping) -> Figure:
    """He et al. (2015), Fig. 6: plain nets (left) and ResNets (right), error per epoch.

    Thin dashed lines are training error, bold lines test error, one colour
    per depth, as in the paper.

    Args:
        results: the `results.json` of `examples/degradation.py` (its
            `curves[family][depth]` with `train_error` and `test_error`).

    Example:
        >>> curves = {"train_error": [50.0, 20.0], "test_error": [40.0, 25.0]}
        >>> fig = plot_degradation({"curves": {"plain": {"20": curves}, "residual": {"20": curves}}})
        >>> [ax.get_title() for ax in fig.axes]
        ['plain', 'ResNet']
    """
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    colors = ["#e6a000", "#1f77b4", "#2ca02c", "#d62728", "#7f3f98", "#8c564b"]
    for ax, family, title in zip(axes, ("plain", "residual"), ("plain", "ResNet"), strict=True):
        curves = results["curves"][family]
        for color, depth in zip(colors, sorted(curves, key=int), strict=False):
            train = np.asarray(curves[depth]["train_error"])
            test = np.asarray(curves[depth]["test_error"])
            epochs = np.arange(1, len(train) + 1)
            ax.plot(epochs, train, "--", color=color, lw=0.9)
            ax.plot(epochs, test, "-", color=color, lw=2.2, label=f"{title}-{depth}")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)  (dashed: training, bold: test)")
    fig.tight_layout()
    return fig


def plot_table(
    rows: Mapping[str, Mapping], published: Mapping[str, float | None], title: str,
    published_label: str,
) -> Figure:
    """Our test error per variant (bars, with the spread over seeds) beside the paper's.

    Args:
        rows: variant -> `{"test_error", "test_error_std", "train_error"}`
            (a table of an experiment's results.json).
        published: variant -> the paper's test error, None for "fail".
        title: figure title.
        published_label: what the paper's numbers are (e.g. "He et al. 2016,
            ResNet-110, CIFAR-10").

    Example:
        >>> fig = plot_table({"a": {"test_error": 2.0, "test_error_std": 0.1, "train_error": 1.0}},
        ...                  {"a": 6.61}, "Table 1", "paper")
        >>> len(fig.axes)
        2
    """
    names = list(rows)
    index = np.arange(len(names))
    fig = Figure(figsize=(11, 0.45 * len(names) + 1.6))
    ours, paper = fig.subplots(1, 2, sharey=True)
    test = [rows[n]["test_error"] for n in names]
    spread = [rows[n].get("test_error_std", 0.0) for n in names]
    ours.barh(index - 0.2, test, 0.4, xerr=spread, label="test", color="#1f77b4")
    ours.barh(index + 0.2, [rows[n]["train_error"] for n in names], 0.4, label="training",
              color="#aec7e8")
    ours.set(title="measured here", xlabel="error (%)", yticks=index, yticklabels=names)
    ours.invert_yaxis()
    ours.legend(fontsize=8)
    values = [published.get(n) for n in names]
    known = [v for v in values if v is not None]
    top = max(known) * 1.15 if known else 1.0
    for i, value in enumerate(values):
        if value is None:
            paper.barh(i, top, 0.4, color="none", edgecolor="#d62728", hatch="//")
            paper.text(top * 0.5, i, "fail", va="center", ha="center", color="#d62728")
        else:
            paper.barh(i, value, 0.4, color="#7f7f7f")
    paper.set(title=published_label, xlabel="test error (%)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(name: str) -> str:
    """"block1_attention+block1_mlp" -> "block1"; "a<->b" -> each side shortened."""
    if "<->" in name:
        return "<->".join(_short(part) for part in name.split("<->"))
    parts = name.split("+")
    prefix = os.path.commonprefix(parts).rstrip("_")
    return prefix if len(parts) > 1 and prefix else name


def _seed_mean(results: Mapping, study: str, field: str) -> np.ndarray:
    return np.mean([seed[study][field] for seed in results["seeds"]], axis=0)


def plot_transformer_study(results: Mapping) -> Figure:
    """The residual-stream lesions of a Transformer, mean over seeds, in four panels.

    (a) error with one block or one sub-layer deleted (Veit et al. 2016,
    Fig. 3; Lad et al. 2024; He et al. 2024, attention and MLP apart);
    (b) error with k random blocks deleted (Veit et al. 2016, Fig. 5a);
    (c) adjacent swaps (Lad et al. 2024) and the middle skipped, reversed,
    shuffled, repeated or run in parallel (Sun et al. 2025); (d) the most
    similar contiguous run deleted (Gromov et al. 2025). The dashed line is
    the intact network's error.

    Args:
        results: the `results.json` of `examples/transformer_lesion.py`
            (`experiments.transformer.transformer_lesion_study`).

    Example:
        >>> seed = {"intact_error": 0.1,
        ...         "block_deletion": {"names": ["b1", "b2", "b3"], "errors": [0.5, 0.2, 0.3]},
        ...         "sublayer_deletion": {"names": ["b1_attention", "b1_mlp"],
        ...                               "errors": [0.2, 0.4]},
        ...         "k_deletion": {"ks": [0, 1], "mean": [0.1, 0.3], "std": [0, 0.1]},
        ...         "adjacent_swaps": {"names": ["b1<->b2"], "errors": [0.3]},
        ...         "middle": {"names": ["skip"], "errors": [0.4]},
        ...         "contiguous": {"ns": [1], "starts": [1], "errors": [0.2]}}
        >>> len(plot_transformer_study({"seeds": [seed, seed]}).axes)
        4
    """
    first = results["seeds"][0]
    intact = float(np.mean([seed["intact_error"] for seed in results["seeds"]]))
    fig = Figure(figsize=(13, 7.5))
    (a, b), (c, d) = fig.subplots(2, 2)
    sub = _seed_mean(results, "sublayer_deletion", "errors")
    colors = ["C0" if name.endswith("attention") else "C1"
              for name in first["sublayer_deletion"]["names"]]
    a.bar(np.arange(len(sub)), sub, color=colors, width=0.8)
    blocks = _seed_mean(results, "block_deletion", "errors")
    a.plot(2 * np.arange(len(blocks)) + 0.5, blocks, "ko-", ms=4, label="whole block")
    a.set_xticks(2 * np.arange(len(blocks)) + 0.5,
                 [_short(name) for name in first["block_deletion"]["names"]], fontsize=7)
    a.set(title="(a) one unit deleted: attention (blue), MLP (orange)", ylabel="test error")
    b.errorbar(first["k_deletion"]["ks"], _seed_mean(results, "k_deletion", "mean"),
               yerr=_seed_mean(results, "k_deletion", "std"), fmt="o-", capsize=3)
    b.set(title="(b) k random blocks deleted", xlabel="k", ylabel="test error",
          xticks=first["k_deletion"]["ks"])
    labels = [_short(name) for name in first["adjacent_swaps"]["names"] + first["middle"]["names"]]
    values = np.concatenate([_seed_mean(results, "adjacent_swaps", "errors"),
                             _seed_mean(results, "middle", "errors")])
    c.bar(np.arange(len(values)), values,
          color=["C2"] * len(first["adjacent_swaps"]["names"]) + ["C3"] * len(
              first["middle"]["names"]))
    c.set_xticks(np.arange(len(values)), labels, rotation=60, fontsize=7)
    c.set(title="(c) adjacent swaps (green), middle rearranged (red)", ylabel="test error")
    d.plot(first["contiguous"]["ns"], _seed_mean(results, "contiguous", "errors"), "o-")
    d.set(title="(d) most similar contiguous run deleted", xlabel="blocks in the run",
          ylabel="test error", xticks=first["contiguous"]["ns"])
    for ax in (a, b, c, d):
        ax.axhline(intact, color="k", ls="--", lw=0.8)
    fig.tight_layout()
    return fig
