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
        key=lambda ab: (ab[1] - ab[0], ab[0]),
    )
    assert (lo, hi) == best == (1, 3)


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
    ],
)
def test_bad_arguments_raise_value_errors(call):
    with pytest.raises(ValueError):
        call()
