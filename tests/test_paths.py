"""Path statistics of the unraveled view against closed forms and enumeration."""

import itertools
import math

import numpy as np
import pytest

from keras_residual.lesion import paths

pytestmark = pytest.mark.multibackend


def test_n54_more_than_95_percent_of_paths_between_19_and_35_blocks():
    # Exact integer count of the paths through 19..35 of 54 blocks (Veit et al., Sec. 5).
    exact = sum(math.comb(54, k) for k in range(19, 36)) / 2**54
    assert exact > 0.95
    assert paths.path_length_distribution(54)[19:36].sum() == pytest.approx(exact, rel=1e-12)
    lo, hi = paths.path_length_interval(54, 0.95)
    assert 19 <= lo and hi <= 35
    assert sum(math.comb(54, k) for k in range(lo, hi + 1)) / 2**54 >= 0.95


@pytest.mark.parametrize("n", [1, 3, 6])
def test_distribution_and_counts_match_enumerated_paths(n):
    lengths = [sum(code) for code in itertools.product([0, 1], repeat=n)]
    counts = np.bincount(lengths, minlength=n + 1)
    np.testing.assert_allclose(paths.path_counts(n), counts)
    np.testing.assert_allclose(paths.path_length_distribution(n), counts / 2**n)


@pytest.mark.parametrize("n,d", [(4, 0), (4, 1), (5, 2), (6, 6)])
def test_remaining_fraction_matches_enumeration(n, d):
    # A path survives deleting blocks 0..d-1 iff it enters none of them.
    codes = list(itertools.product([0, 1], repeat=n))
    expected = []
    for k in range(n + 1):
        of_length = [c for c in codes if sum(c) == k]
        alive = [c for c in of_length if not any(c[:d])]
        expected.append(len(alive) / len(of_length))
    np.testing.assert_allclose(paths.remaining_path_fraction(n, d), expected)


def test_remaining_fraction_removes_mostly_long_paths():
    fraction = paths.remaining_path_fraction(54, 10)
    assert fraction[5] > 0.3 and fraction[17] > 0.01 and fraction[45:].sum() == 0
    assert np.all(np.diff(fraction) <= 0)


def test_effective_range_is_shortest_window():
    weights = np.array([0.0, 1.0, 5.0, 3.0, 0.5, 0.5])
    lo, hi = paths.effective_path_range(weights, mass=0.85)
    # Brute force over all windows.
    best = min(
        ((a, b) for a in range(6) for b in range(a, 6) if weights[a : b + 1].sum() >= 8.5),
        key=lambda ab: (ab[1] - ab[0], -weights[ab[0] : ab[1] + 1].sum(), ab[0]),
    )
    assert (lo, hi) == best == (1, 3)


def test_effective_range_default_reproduces_the_papers_5_to_17_of_54():
    # Veit et al. 2016, Sec. 5: a path gradient falling 4x per block makes the gradient
    # share per length C(54, k) 0.25^k / 1.25^54 = Binomial(54, 0.2); the paper reads the
    # effective paths as 5 to 17 blocks long.
    shares = [math.comb(54, k) * 0.25**k / 1.25**54 for k in range(55)]
    assert paths.effective_path_range(shares) == (5, 17)
    # Hand sums: 5..17 holds 97.50%, the best 12-wide window (5..16) only 95.89%.
    assert paths.range_share(shares, (5, 17)) == pytest.approx(0.97496, abs=1e-5)
    assert paths.range_share(shares, (5, 16)) == pytest.approx(0.95892, abs=1e-5)
    assert paths.effective_path_range(shares, mass=0.95) == (5, 16)
    # m = twice the mean gradient-weighted length, 2 * 54 * 0.2 = 21.6.
    assert paths.effective_training_blocks(shares) == 22


def test_effective_range_ties_break_toward_the_larger_mass_then_shorter_paths():
    # No single length holds 0.4 of 4.5; of the width-2 windows that do, (1, 2) holds 2.0,
    # (2, 3) 2.5 and (3, 4) 2.0: the largest wins, not the shortest paths.
    assert paths.effective_path_range([0.5, 1.0, 1.0, 1.5, 0.5], mass=0.4) == (2, 3)
    # Equal masses: the shorter paths.
    assert paths.effective_path_range([1.0, 1.0, 1.0, 1.0], mass=0.5) == (0, 1)
    assert paths.range_share([1.0, 1.0, 2.0], (2, 2)) == 0.5


def test_gradient_per_length_interpolates_and_extrapolates_exponentials():
    values = paths.gradient_per_length(8, [2, 4, 6], [0.5**2, 0.5**4, 0.5**6])
    np.testing.assert_allclose(values, 0.5 ** np.arange(9))


@pytest.mark.parametrize(
    "call",
    [
        lambda: paths.path_length_distribution(0),
        lambda: paths.remaining_path_fraction(5, 6),
        lambda: paths.effective_path_range([1.0, -1.0]),
        lambda: paths.effective_path_range([1.0], mass=0.0),
        lambda: paths.gradient_per_length(4, [1], [0.5]),
        lambda: paths.path_length_interval(4, 1.0),
        lambda: paths.range_share([1.0, 2.0], (1, 2)),
        lambda: paths.effective_training_blocks([0.0, 0.0]),
    ],
)
def test_bad_arguments_raise_value_errors(call):
    with pytest.raises(ValueError):
        call()
