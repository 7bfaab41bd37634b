"""Known answers of the confidence intervals and the two-group comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orient3d.stats import compare_groups, format_ci, mean_ci, wilson_ci


def test_mean_ci_known_values() -> None:
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) · sd / sqrt(n), sd = 1
    assert m == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)


def test_mean_ci_edge_cases() -> None:
    assert mean_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    m, lo, hi = mean_ci([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_coverage_is_about_95_percent(rng: np.random.Generator) -> None:
    hits = 0
    for _ in range(400):
        _, lo, hi = mean_ci(rng.normal(1.0, 2.0, size=5))
        hits += lo <= 1.0 <= hi
    assert 0.91 < hits / 400 < 0.99


def test_compare_groups(rng: np.random.Generator) -> None:
    far = compare_groups(rng.normal(0, 1, 10), rng.normal(5, 1, 10))
    assert far.separated and far.p_value < 1e-6 and far.difference > 4
    same = compare_groups(rng.normal(0, 1, 10), rng.normal(0, 1, 10))
    assert not same.separated and same.p_value > 0.001
    single = compare_groups([1.0], [2.0])
    assert not single.separated and math.isnan(single.p_value)


def test_format_ci() -> None:
    assert format_ci(0.12345, 0.1, 0.15) == "0.123 [0.1, 0.15]"


def test_format_ci_says_na_for_an_undefined_interval() -> None:
    m, lo, hi = mean_ci([0.219])  # one value: no interval
    assert format_ci(m, lo, hi) == "0.219 [n/a]"
    assert format_ci(0.5, None, None) == "0.5 [n/a]"  # JSON null
    assert format_ci(math.nan, math.nan, math.nan) == "n/a"


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1, 1), (17, 64), (500, 512)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    p, lo, hi = wilson_ci(k, n)
    assert p == k / n
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= p <= hi <= 1.0


def test_wilson_edge_cases() -> None:
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(5, 4)
    _, lo, hi = wilson_ci(0.9 * 40, 40)  # an effective (fractional-free) count
    assert lo < 0.9 < hi < 1.0
