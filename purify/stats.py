"""Verdicts on claims across seeds: a statistic, its 95% interval and the rule that decides."""

from __future__ import annotations

import itertools
import math

import numpy as np

# Two-sided 97.5% Student-t quantiles for small samples (df = n - 1); normal beyond the table.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    24: 2.064,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t_quantile(df: int) -> float:
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    for lo, hi in itertools.pairwise(keys):
        if lo < df < hi:
            return _T975[hi] + (_T975[lo] - _T975[hi]) * (1 / df - 1 / hi) / (1 / lo - 1 / hi)
    return 1.96


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        m = float(v.mean()) if len(v) else math.nan
        return m, math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    h = t_quantile(len(v) - 1) * se
    return m, m - h, m + h


def verdict(values, direction: str = ">", threshold: float = 0.0, claim: str = "") -> dict:
    """Decide a claim about the mean of per-seed `values` (e.g. paired differences).

    direction '>' claims mean > threshold: 'holds' if the whole 95% interval is above it,
    'fails' if the whole interval is at or below it, else 'inconclusive'. '<' mirrors it.
    Runs with non-finite values are excluded and counted.
    """
    v = np.asarray(values, dtype=float)
    n_bad = int((~np.isfinite(v)).sum())
    m, lo, hi = mean_ci(v)
    if not np.isfinite(lo):
        outcome = "inconclusive"
    elif direction == ">":
        outcome = "holds" if lo > threshold else "fails" if hi <= threshold else "inconclusive"
    elif direction == "<":
        outcome = "holds" if hi < threshold else "fails" if lo >= threshold else "inconclusive"
    else:
        raise ValueError(f"direction={direction!r} is not allowed: must be '>' or '<'")
    return {
        "claim": claim,
        "verdict": outcome,
        "mean": m,
        "ci95": [lo, hi],
        "n": int(len(v) - n_bad),
        "n_failed_runs": n_bad,
        "rule": f"holds if the 95% t-interval of the per-seed statistic lies {'above' if direction == '>' else 'below'} "
        f"{threshold:g}; fails if it lies entirely on the other side; else inconclusive",
    }
