"""Path statistics of the unraveled view of a residual network.

Veit et al., "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (2016), Sec. 3 and 5: a network of `n` residual blocks has `2**n`
paths from input to output, one per subset of blocks entered; the number of
paths that enter exactly `k` blocks is `C(n, k)`, so the path length of a
uniformly drawn path is Binomial(n, 1/2) (Fig. 6a). Deleting `d` blocks
leaves `C(n - d, k)` of the `C(n, k)` paths of length `k` (Fig. 7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special, stats


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"The number of blocks must be a positive integer. Received: n={n!r}")
    return int(n)


def path_length_distribution(n: int) -> np.ndarray:
    """Fraction of the `2**n` paths that enter exactly `k` blocks, k = 0..n.

    Veit et al. 2016, Fig. 6a: Binomial(n, 1/2).

    Args:
        n: int. Number of residual blocks.

    Returns:
        np.ndarray of shape (n + 1,), summing to 1.

    Example:
        >>> path_length_distribution(2).round(6).tolist()
        [0.25, 0.5, 0.25]
    """
    n = _check_n(n)
    return stats.binom.pmf(np.arange(n + 1), n, 0.5)


def path_counts(n: int) -> np.ndarray:
    """Number of paths of each length k = 0..n, `C(n, k)`, as floats.

    Example:
        >>> path_counts(3).tolist()
        [1.0, 3.0, 3.0, 1.0]
    """
    n = _check_n(n)
    return special.comb(n, np.arange(n + 1))


def path_length_interval(n: int, mass: float = 0.95) -> tuple[int, int]:
    """The central range of path lengths `[lo, hi]` holding at least `mass` of all paths.

    Equal tails of Binomial(n, 1/2) (`scipy.stats.binom.interval`). Veit et
    al. 2016, Sec. 5: for n = 54 more than 95% of the paths go through 19 to
    35 blocks; the tightest central range is 20 to 34.

    Args:
        n: int. Number of residual blocks.
        mass: float in (0, 1). Fraction of paths to cover. Defaults to 0.95.

    Returns:
        (lo, hi), inclusive path lengths.

    Example:
        >>> path_length_interval(54)
        (20, 34)
    """
    n = _check_n(n)
    if not 0.0 < mass < 1.0:
        raise ValueError(f"`mass` must be in (0, 1). Received: mass={mass!r}")
    lo, hi = stats.binom.interval(mass, n, 0.5)
    return int(lo), int(hi)


def remaining_path_fraction(n: int, deleted: int) -> np.ndarray:
    """Fraction of paths of each length k = 0..n left after deleting `deleted` blocks.

    Veit et al. 2016, Sec. 5 and Fig. 7: `C(n - d, k) / C(n, k)`, which is 0
    for `k > n - d`: deleting blocks removes mostly the long paths.

    Args:
        n: int. Number of residual blocks.
        deleted: int. Number of deleted blocks, 0 <= deleted <= n.

    Returns:
        np.ndarray of shape (n + 1,).

    Example:
        >>> remaining_path_fraction(3, 1).tolist()
        [1.0, 0.6666666666666666, 0.3333333333333333, 0.0]
    """
    n = _check_n(n)
    if int(deleted) != deleted or not 0 <= deleted <= n:
        raise ValueError(
            f"`deleted` must be an integer between 0 and n={n}. Received: deleted={deleted!r}"
        )
    k = np.arange(n + 1)
    return special.comb(n - int(deleted), k) / special.comb(n, k)


# The mass of `effective_path_range`: Veit et al. 2016 (Sec. 5, Fig. 6c) read
# "paths between 5 and 17 modules long" off a 54-block network whose path
# gradient falls by about 4x per block; 5-17 is then the shortest window
# holding 97% of the gradient (it holds 97.5% of Binomial(54, 0.2)).
EFFECTIVE_MASS = 0.97


def _check_weights(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype="float64")
    if w.ndim != 1 or w.size == 0 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            "`weights` must be a non-empty 1-D sequence of finite non-negative numbers "
            f"with a positive sum. Received: weights with shape {w.shape}"
        )
    return w


def effective_path_range(
    weights: Sequence[float], mass: float = EFFECTIVE_MASS
) -> tuple[int, int]:
    """The shortest contiguous range of path lengths holding `mass` of `weights`.

    Applied to the gradient contributed by each path length (Veit et al.
    2016, Sec. 5, Fig. 6c) this is the range of "effective paths". The
    default mass, 0.97, reproduces the paper's reading of 5 to 17 blocks of
    54 for a path gradient that decays by 4x per block (the weights are then
    Binomial(54, 0.2)). Among equally short windows the one holding the
    most mass wins (on a further tie, the shorter paths), so a symmetric
    peak gives a centred window.

    Args:
        weights: sequence of non-negative floats indexed by path length.
        mass: float in (0, 1]. Fraction of the total to cover. Defaults to 0.97.

    Returns:
        (lo, hi), inclusive path lengths.

    Example:
        >>> effective_path_range([0.0, 0.1, 0.6, 0.3], mass=0.9)
        (2, 3)
    """
    w = _check_weights(weights)
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"`mass` must be in (0, 1]. Received: mass={mass!r}")
    cumulative = np.concatenate([[0.0], np.cumsum(w)])
    target = mass * cumulative[-1] * (1 - 1e-12)
    for width in range(1, w.size + 1):
        held = cumulative[width:] - cumulative[:-width]  # window [lo, lo + width - 1]
        if held.max() >= target:
            lo = int(np.argmax(held))  # first maximum: the shorter paths on a tie
            return lo, lo + width - 1
    return 0, w.size - 1  # not reached: the full window holds everything


def range_share(weights: Sequence[float], path_range: tuple[int, int]) -> float:
    """The share of `weights` (e.g. of the gradient, Fig. 6c) held by lengths `lo..hi`.

    Veit et al. 2016, Sec. 5: "almost all of the gradient updates during
    training come from paths between 5 and 17 modules long".

    Args:
        weights: sequence of non-negative floats indexed by path length.
        path_range: (lo, hi), inclusive path lengths.

    Returns:
        float in [0, 1].

    Example:
        >>> range_share([1.0, 2.0, 1.0], (1, 2))
        0.75
    """
    w = _check_weights(weights)
    lo, hi = (int(v) for v in path_range)
    if not 0 <= lo <= hi < w.size:
        raise ValueError(
            f"`path_range` must be (lo, hi) with 0 <= lo <= hi < {w.size}. "
            f"Received: path_range={tuple(path_range)!r}"
        )
    return float(w[lo : hi + 1].sum() / w.sum())


def effective_training_blocks(weights: Sequence[float], n: int | None = None) -> int:
    """The number m of blocks per mini-batch for effective-path training (`m="auto"`).

    Veit et al. 2016, Sec. 5 choose m "such that the distribution of paths
    during training aligns with the distribution of the effective paths":
    with m active blocks the path lengths in training are Binomial(m, 1/2),
    centred at m / 2, so m is twice the mean length of the gradient-weighted
    path distribution, rounded (for Binomial(54, 0.2), the 5-17 reading, m =
    22; the paper picks 23 for its own measurement, lengths centred at 11.5).

    Args:
        weights: sequence of non-negative floats indexed by path length
            0..n: the gradient each length contributes (Fig. 6c).
        n: int or None. Number of blocks; defaults to `len(weights) - 1`.
            The result is clipped to 1..n.

    Returns:
        int.

    Example:
        >>> from scipy import stats
        >>> effective_training_blocks(stats.binom.pmf(range(55), 54, 0.2))
        22
    """
    w = _check_weights(weights)
    n = w.size - 1 if n is None else _check_n(n)
    mean_length = float(np.dot(np.arange(w.size), w) / w.sum())
    return int(min(max(round(2 * mean_length), 1), n))


def gradient_per_length(
    n: int, lengths: Sequence[int], norms: Sequence[float]
) -> np.ndarray:
    """Gradient magnitude of one path of every length 0..n from measured lengths.

    Between measured lengths the values are interpolated in log space;
    outside them the exponential fitted to all measurements extrapolates
    (Veit et al. 2016, Fig. 6b: the gradient of a path decays roughly
    exponentially with its length).

    Args:
        n: int. Number of residual blocks.
        lengths: sequence of ints. The measured path lengths (at least 2
            distinct ones to extrapolate).
        norms: sequence of positive floats. The mean gradient norm at each.

    Returns:
        np.ndarray of shape (n + 1,).

    Example:
        >>> gradient_per_length(3, [0, 2], [1.0, 0.25]).round(6).tolist()
        [1.0, 0.5, 0.25, 0.125]
    """
    n = _check_n(n)
    lengths = np.asarray(lengths, dtype="float64")
    norms = np.asarray(norms, dtype="float64")
    if lengths.shape != norms.shape or lengths.size < 2 or np.any(norms <= 0):
        raise ValueError(
            "`lengths` and `norms` must have the same length (at least 2) and the norms "
            f"must be positive. Received: lengths={lengths.tolist()}, norms={norms.tolist()}"
        )
    order = np.argsort(lengths)
    lengths, log_norms = lengths[order], np.log(norms[order])
    k = np.arange(n + 1, dtype="float64")
    slope, intercept = np.polyfit(lengths, log_norms, 1)
    log_values = np.interp(k, lengths, log_norms)
    outside = (k < lengths[0]) | (k > lengths[-1])
    log_values[outside] = intercept + slope * k[outside]
    return np.exp(log_values)
