"""Figures of the lesion and path studies, in the layout of Veit et al. (2016).

Each function takes study results (see `studies`, `schedules`, `paths`) and
returns a `matplotlib.figure.Figure` built without pyplot (no global state,
Agg canvas); `save_figure` writes it as PNG.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from keras_residual.figures import save_figure  # noqa: F401  (re-exported)
from keras_residual.lesion import paths
from keras_residual.lesion.deletion import KDeletionResult, SingleDeletionResult
from keras_residual.lesion.gradient_paths import GradientPathResult
from keras_residual.lesion.order import ReorderingResult
from keras_residual.lesion.schedules import ResilienceResult


def _deletion_panel(ax, result: SingleDeletionResult, title: str, chance: float | None) -> None:
    index = np.arange(1, len(result.errors) + 1)
    ax.plot(index, result.errors, "o-", ms=3, label="block deleted")
    ax.axhline(result.intact_error, color="k", ls="--", lw=1, label="intact")
    if result.downsampling.any():
        ax.plot(index[result.downsampling], result.errors[result.downsampling], "rs",
                label="downsampling block")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set(title=title, xlabel="deleted block (network order)", ylabel="test error",
           ylim=(0, 1))
    ax.legend(fontsize=7)


def plot_single_deletion(
    residual: SingleDeletionResult,
    plain: SingleDeletionResult | None = None,
    chance: float | None = 0.9,
) -> Figure:
    """Error when deleting each block: plain net beside residual net (Veit et al. 2016, Fig. 3).

    Args:
        residual: single_block_deletion of the residual network.
        plain: the same study of its plain twin, or None.
        chance: float or None. Chance-level error drawn as a line (0.9 for 10 classes).

    Returns:
        Figure with one or two panels.

    Example:
        >>> r = SingleDeletionResult(np.array(["a", "b"]), np.array([0.1, 0.3]), 0.05,
        ...                          np.array([False, True]))
        >>> len(plot_single_deletion(r).axes)
        1
    """
    panels = [(plain, "plain network")] if plain is not None else []
    panels.append((residual, "residual network"))
    fig = Figure(figsize=(5 * len(panels), 3.6))
    for i, (result, title) in enumerate(panels, start=1):
        _deletion_panel(fig.add_subplot(1, len(panels), i), result, title, chance)
    return fig


def plot_k_deletion(result: KDeletionResult) -> Figure:
    """Mean and spread of the error after deleting k random blocks (Veit et al. 2016, Fig. 5a).

    Example:
        >>> r = KDeletionResult(np.array([0, 1]), np.zeros((2, 3)), np.zeros(2), np.zeros(2),
        ...                     0.0, 4)
        >>> plot_k_deletion(r).axes[0].get_xlabel()
        'number of deleted blocks'
    """
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    ax.errorbar(result.ks, result.mean, yerr=result.std, fmt="o-", ms=3, capsize=3)
    ax.axhline(result.intact_error, color="k", ls="--", lw=1, label="intact")
    ax.set(title=f"deleting k of {result.n_blocks} blocks", xlabel="number of deleted blocks",
           ylabel="test error", ylim=(0, 1))
    ax.legend(fontsize=7)
    return fig


def plot_reordering(result: ReorderingResult) -> Figure:
    """Error against Kendall's tau of the block order (Veit et al. 2016, Fig. 5b).

    Example:
        >>> r = ReorderingResult(np.array([1]), np.array([[0.8, 0.6]]), np.array([[0.1, 0.2]]),
        ...                      np.zeros((1, 2, 3), dtype=int), 0.05)
        >>> plot_reordering(r).axes[0].get_xlabel()
        "Kendall's tau"
    """
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    taus, errors = result.kendall_tau.ravel(), result.errors.ravel()
    ax.scatter(taus, errors, s=10, alpha=0.6, label="one reordering")
    mean_tau, mean_err = result.kendall_tau.mean(1), result.errors.mean(1)
    order = np.argsort(mean_tau)
    ax.plot(mean_tau[order], mean_err[order], "k-", lw=1, label="mean per k swaps")
    ax.axhline(result.intact_error, color="k", ls="--", lw=1, label="original order")
    ax.set(title="reordering blocks", xlabel="Kendall's tau", ylabel="test error", ylim=(0, 1))
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return fig


def plot_path_lengths(n: int) -> Figure:
    """Number of paths of each length for n blocks (Veit et al. 2016, Fig. 6a).

    Example:
        >>> plot_path_lengths(54).axes[0].get_xlabel()
        'path length (blocks)'
    """
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    _path_length_panel(ax, n)
    return fig


def _path_length_panel(ax, n: int) -> None:
    lo, hi = paths.path_length_interval(n, 0.95)
    ax.bar(np.arange(n + 1), paths.path_counts(n), color="C0", width=0.9)
    ax.axvspan(lo - 0.5, hi + 0.5, color="C1", alpha=0.2, label=f"95% of paths: {lo}-{hi}")
    ax.set(title=f"path lengths, n = {n}", xlabel="path length (blocks)",
           ylabel="number of paths")
    ax.legend(fontsize=7)


def plot_path_gradients(result: GradientPathResult) -> Figure:
    """Path lengths, gradient per path, total gradient per length (Veit et al. 2016, Fig. 6a-c).

    Example:
        >>> n = 4
        >>> r = GradientPathResult(np.array([0, 2]), np.array([[1.0], [0.25]]), np.array([1.0, 0.25]), n,
        ...                        paths.path_length_distribution(n), 0.5 ** np.arange(n + 1),
        ...                        np.full(n + 1, 0.2), np.array([0, 2]))
        >>> len(plot_path_gradients(r).axes)
        3
    """
    n = result.n_blocks
    fig = Figure(figsize=(13, 3.6))
    a, b, c = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    _path_length_panel(a, n)
    # Min-max bars: a standard deviation would cross zero on the log axis.
    spread = [result.mean_norm - result.norms.min(1), result.norms.max(1) - result.mean_norm]
    b.errorbar(result.lengths, result.mean_norm, yerr=spread, fmt="o", ms=3, capsize=3,
               label="measured (mean, min-max)")
    b.plot(np.arange(n + 1), result.per_path, "k-", lw=1, label="interpolated")
    where = "first block's input" if result.at == "block" else "model input"
    b.set(yscale="log", title=f"gradient of one path ({result.samples_per_length} per length)",
          xlabel="path length (blocks)", ylabel=f"gradient norm at the {where}")
    b.legend(fontsize=7)
    lo, hi = result.effective_range
    c.bar(np.arange(n + 1), result.total, color="C2", width=0.9)
    share = "" if np.isnan(result.effective_share) else f" ({result.effective_share:.0%})"
    c.axvspan(lo - 0.5, hi + 0.5, color="C1", alpha=0.2,
              label=f"effective paths: {lo}-{hi}{share}")
    c.set(title="total gradient per path length", xlabel="path length (blocks)",
          ylabel="share of the gradient")
    c.legend(fontsize=7)
    return fig


def plot_remaining_paths(n: int, deleted: tuple[int, ...] = (1, 10, 20)) -> Figure:
    """Fraction of paths of each length left after deleting d blocks (Veit et al. 2016, Fig. 7).

    Example:
        >>> len(plot_remaining_paths(54).axes[0].lines)
        3
    """
    fig = Figure(figsize=(4.5, 3.6))
    ax = fig.add_subplot()
    for d in deleted:
        if d <= n:
            ax.plot(np.arange(n + 1), paths.remaining_path_fraction(n, d), label=f"{d} deleted")
    ax.set(title=f"remaining paths, n = {n}", xlabel="path length (blocks)",
           ylabel="fraction of paths left", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return fig


def plot_resilience(result: ResilienceResult, chance: float | None = 0.9) -> Figure:
    """Single-block deletion, normal vs stochastic-depth training (Veit et al. 2016, Fig. 8).

    Example:
        >>> r = SingleDeletionResult(np.array(["a", "b"]), np.array([0.1, 0.3]), 0.05,
        ...                          np.array([False, True]))
        >>> len(plot_resilience(ResilienceResult(r, r, 0.5)).axes)
        1
    """
    fig = Figure(figsize=(5, 3.6))
    ax = fig.add_subplot()
    index = np.arange(1, len(result.normal.errors) + 1)
    for res, label in ((result.normal, "normal training"),
                       (result.stochastic_depth,
                        f"stochastic depth (p_L = {result.final_survival:g})")):
        line = ax.plot(index, res.errors, "o-", ms=3, label=label)[0]
        ax.axhline(res.intact_error, color=line.get_color(), ls="--", lw=1)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set(title="resilience to deleting one block", xlabel="deleted block (network order)",
           ylabel="test error", ylim=(0, 1))
    ax.legend(fontsize=7)
    return fig
