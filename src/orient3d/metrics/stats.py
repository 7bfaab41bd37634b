"""Confidence intervals and two-group comparisons over seeds or objects.

- :func:`mean_ci`: the mean with a Student-t confidence interval (95% default).
- :func:`compare_groups`: both intervals, whether they are disjoint, and the
  Welch t-test p-value (unequal variances).
- :func:`wilson_ci`: the Wilson score interval of a proportion ``k / n``; it
  stays inside ``[0, 1]`` and is defined for ``k = 0`` or ``k = n``.
- :func:`format_ci`: ``"0.123 [0.101, 0.145]"``, or ``"0.123 [n/a]"`` when the
  interval is undefined (fewer than two values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# scipy.stats is imported in the functions that use it: it takes about a second to
# import, and training imports this module without needing it.

__all__ = ["Comparison", "compare_groups", "format_ci", "mean_ci", "wilson_ci"]


def _clean(values: Iterable[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    a = a.reshape(-1)
    return a[np.isfinite(a)]


def mean_ci(
    values: Iterable[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and its Student-t confidence interval.

    Non-finite values are dropped. With one value the interval is
    ``(nan, nan)`` (undefined); with none, everything is nan. Identical values
    give a zero-width interval.
    """
    a = _clean(values)
    n = a.shape[0]
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if n == 1:
        return m, math.nan, math.nan
    from scipy import stats as _st

    sem = float(a.std(ddof=1)) / math.sqrt(n)
    half = float(_st.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
    return m, m - half, m + half


def wilson_ci(k: float, n: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(k / n, lo, hi)``: a proportion and its Wilson score interval.

    ``k`` successes out of ``n`` trials (``k`` may be fractional: an effective
    count ``fraction × n``). The interval is the set of ``p`` the score test
    does not reject; unlike ``p ± z·se`` it never leaves ``[0, 1]`` and is not
    empty at ``k = 0`` or ``k = n``. With ``n = 0`` everything is nan.
    """
    if n <= 0:
        return math.nan, math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n, got k={k}, n={n}")
    from scipy import stats as _st

    p = k / n
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends, not rounded ones
    hi = 1.0 if k == n else min(1.0, centre + half)
    return p, lo, hi


@dataclass(frozen=True)
class Comparison:
    """Two groups side by side.

    ``separated``: the two confidence intervals do not overlap (a conservative
    reading: disjoint 95% intervals imply a difference, overlapping ones do not
    imply none). ``p_value``: Welch's two-sided t-test (nan with < 2 values in a
    group). ``difference``: ``mean_b - mean_a``.
    """

    mean_a: float
    lo_a: float
    hi_a: float
    mean_b: float
    lo_b: float
    hi_b: float
    separated: bool
    p_value: float
    difference: float


def compare_groups(
    a: Iterable[float] | np.ndarray, b: Iterable[float] | np.ndarray, confidence: float = 0.95
) -> Comparison:
    """Whether two groups of values differ beyond their confidence intervals."""
    xa, xb = _clean(a), _clean(b)
    ma, la, ha = mean_ci(xa, confidence)
    mb, lb, hb = mean_ci(xb, confidence)
    defined = all(math.isfinite(v) for v in (la, ha, lb, hb))
    separated = defined and (ha < lb or hb < la)
    if xa.shape[0] >= 2 and xb.shape[0] >= 2:
        if np.ptp(xa) == 0 and np.ptp(xb) == 0:
            p = 1.0 if ma == mb else 0.0
        else:
            from scipy import stats as _st

            p = float(_st.ttest_ind(xa, xb, equal_var=False).pvalue)
    else:
        p = math.nan
    return Comparison(ma, la, ha, mb, lb, hb, bool(separated), p, mb - ma)


def format_ci(mean: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """``"m [lo, hi]"`` with ``digits`` significant digits; ``"m [n/a]"`` if undefined.

    An interval is undefined (nan, or None from JSON) with fewer than two values;
    it is never shown as a number then.
    """
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}g} [n/a]"
    return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
