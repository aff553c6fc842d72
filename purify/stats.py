"""Verdicts on claims across seeds: a statistic, its 95% interval, the rule that decides, and
the family-wise correction applied across one experiment's verdicts.

A statistical claim "mean > threshold" (or "<") is declared as data (`purify.claims.Claim`)
with its smallest effect of interest `min_effect` (delta):

    holds             the 95% t-interval lies beyond threshold + delta (the effect is at least delta)
    below min effect  the interval lies short of threshold + delta but not entirely on the wrong
                      side of the threshold: any effect is smaller than delta
    opposite          the interval lies entirely on the wrong side of the threshold
    inconclusive      otherwise
    invalid           fewer than MIN_SEEDS usable runs, more than half of the runs dropped, or a
                      validity gate failed: such runs never produce a verdict

The standard error is floored by the measurement's resolution (`resolution`: the standard
deviation of one run's value from its finite evaluation set, e.g. the binomial error of an
accuracy), so a statistic with zero spread across seeds (1.00 against 1.00) is not certain.

Each verdict carries the two-sided p-value of the test of mean = threshold + delta, and
`holm` adjusts the family of an experiment's statistical verdicts by Holm-Bonferroni
(family-wise error 5%, i.e. 2.5% per side as for one interval): `verdict_raw` is the decision
before, `verdict` after the adjustment. A deterministic claim ("never violated") is decided
exactly by `exact_verdict`: one violation refutes it, and it takes no part in the correction.

A rule chosen after seeing results is marked `post_hoc` with the reason; where it replaced
an earlier rule, that rule's verdict is kept beside it (`original`, see `purify.claims`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

LEVEL = 0.05  # two-sided: 2.5% on each side, the level of a 95% interval
# Fewer usable seeds than this give an interval whose t quantile (4.3 at 3 seeds, 3.2 at 4) and
# spread estimate are too unstable to decide on.
MIN_SEEDS = 4
DECISIONS = ("holds", "below min effect", "opposite", "inconclusive", "invalid")
REFUTED = ("below min effect", "opposite")


def accuracy_resolution(n_eval: int, terms: int = 1) -> float:
    """The standard deviation of one run's accuracy measured on n_eval examples, at its largest
    (p = 1/2): 0.5 / sqrt(n_eval), times sqrt(terms) for a sum or difference of `terms`
    independently measured accuracies."""
    return 0.5 * math.sqrt(terms / n_eval)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided (1 - level) Student-t quantile with df degrees of freedom."""
    return float(_st.t.ppf(1 - level / 2, df))


def mean_ci(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and (1 - level) Student-t interval of the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        m = float(v.mean()) if len(v) else math.nan
        return m, math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    h = t_quantile(len(v) - 1, level) * se
    return m, m - h, m + h


def slopes(x, values, log_y: bool = True) -> np.ndarray:
    """Per-seed least-squares slope of log y (log_y) or y against log x.

    x (n,) positive (e.g. the dimensions d); values (n, S), one column per seed. Returns (S,);
    a seed with a non-finite (or, with log_y, non-positive) value at any x gets NaN, so a
    broken run drops its seed instead of bending the fit. Across seeds the slopes are
    independent replicates (every x of a seed is its own run), so `mean_ci` gives the interval.
    """
    lx = np.log(np.asarray(x, float))
    y = np.asarray(values, float)
    if y.ndim != 2 or y.shape[0] != len(lx):
        raise ValueError(f"values.shape={y.shape} is not allowed: must be (len(x), seeds) = ({len(lx)}, S)")
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(y) if log_y else y
    ok = np.isfinite(ly).all(0)
    lc = lx - lx.mean()
    out = (lc[:, None] * (ly - ly.mean(0))).sum(0) / (lc**2).sum()
    return np.where(ok, out, np.nan)


def _side(direction: str) -> int:
    if direction not in (">", "<"):
        raise ValueError(f"direction={direction!r} is not allowed: must be '>' or '<'")
    return 1 if direction == ">" else -1


def _decide(side: int, p: float, p_zero: float, mean: float, edge: float, threshold: float, level: float) -> str:
    """p: the test of mean = edge (threshold +- delta); p_zero: of mean = threshold, both at
    the same adjustment."""
    if not math.isfinite(p) or p >= level:
        return "inconclusive"
    if side * (mean - edge) > 0:
        return "holds"
    if side * (mean - threshold) < 0 and math.isfinite(p_zero) and p_zero < level:
        return "opposite"
    return "below min effect"


def _redecide(v: dict, factor: float, level: float) -> str:
    """A recorded verdict's decision with its p-values multiplied by the Holm factor."""
    side = _side(v["direction"])
    p, p0 = (min(1.0, factor * v.get(k, v["p_value"])) for k in ("p_value", "p_zero"))
    return _decide(side, p, p0, v["mean"], v["threshold"] + side * v["min_effect"], v["threshold"], level)


def _p(mean: float, target: float, se: float, df: int) -> float:
    if se == 0:
        return 0.0 if mean != target else 1.0
    return float(2 * _st.t.sf(abs(mean - target) / se, df))


def verdict(
    values,
    direction: str = ">",
    threshold: float = 0.0,
    claim: str = "",
    *,
    min_effect: float,
    why: str = "",
    flagged=None,
    post_hoc: str | None = None,
    resolution: float = 0.0,
    gates: dict | None = None,
) -> dict:
    """Decide a claim about the mean of per-seed `values` (e.g. paired differences).

    direction '>' claims mean > threshold + min_effect; '<' claims mean < threshold - min_effect.
    min_effect >= 0 is the smallest effect of interest, declared with the claim; `why` says
    where it comes from (required when it is 0: a claim about a sign must say so).
    flagged: a boolean mask (same shape as values) of runs that failed, diverged or ended at
    chance; their values are excluded and counted, like non-finite values. post_hoc: the reason,
    when this rule was chosen after seeing results. resolution: one run's measurement standard
    deviation (see `accuracy_resolution`); the standard error of the mean is at least
    resolution / sqrt(n). gates: {name: {"passed": bool, "detail": str}}, the validity gates'
    outcomes; a failed gate makes the verdict invalid, naming it.
    """
    side = _side(direction)
    if not (isinstance(min_effect, (int, float)) and math.isfinite(min_effect) and min_effect >= 0):
        raise ValueError(f"min_effect={min_effect!r} is not allowed: must be a finite number >= 0")
    if min_effect == 0 and not why:
        raise ValueError(f"min_effect=0 for {claim!r} needs `why`: say why the claim is about a sign")
    v = np.asarray(values, dtype=float).ravel()
    bad = ~np.isfinite(v)
    if flagged is not None:
        bad |= np.asarray(flagged, bool).ravel()
    good = v[~bad]
    m, lo, hi = mean_ci(good)
    edge = threshold + side * min_effect
    if not (math.isfinite(resolution) and resolution >= 0):
        raise ValueError(f"resolution={resolution!r} is not allowed: must be a finite number >= 0")
    invalid_reason = None
    failed_gates = [f"gate '{g}' failed: {o.get('detail', '')}" for g, o in (gates or {}).items() if not o["passed"]]
    if len(good) < MIN_SEEDS:
        invalid_reason = f"{len(good)} usable run(s) of {len(v)}: a verdict needs {MIN_SEEDS}"
    elif bad.sum() > len(v) / 2:
        invalid_reason = (
            f"{int(bad.sum())} of {len(v)} runs were dropped (non-finite, failed, diverged or at chance): the "
            f"{len(good)} left are a selection, not a sample"
        )
    if invalid_reason is None and failed_gates:
        invalid_reason = "; ".join(failed_gates)
    se = math.nan
    if invalid_reason is not None:
        p = p0 = math.nan
        outcome = "invalid"
    else:
        se = max(float(good.std(ddof=1) / math.sqrt(len(good))), resolution / math.sqrt(len(good)))
        p, p0 = _p(m, edge, se, len(good) - 1), _p(m, threshold, se, len(good) - 1)
        outcome = _decide(side, p, p0, m, edge, threshold, LEVEL)
        if se > 0:  # the interval with the floored standard error
            h = t_quantile(len(good) - 1) * se
            lo, hi = m - h, m + h
    word = "above" if side > 0 else "below"
    out = {
        "claim": claim,
        "verdict": outcome,
        "verdict_raw": outcome,
        "mean": m,
        "ci95": [lo, hi],
        "n": len(good),
        "n_failed_runs": int(bad.sum()),
        "threshold": float(threshold),
        "direction": direction,
        "min_effect": float(min_effect),
        "min_effect_why": why,
        "se": se,
        "resolution": float(resolution),
        "p_value": p,
        "p_zero": p0,
        "p_holm": p,
        "exact": False,
        "post_hoc": post_hoc is not None,
        "rule": f"holds if the 95% t-interval of the per-seed statistic lies {word} {edge:g} (threshold "
        f"{threshold:g} {'+' if side > 0 else '-'} smallest effect of interest {min_effect:g}); below min effect if it lies "
        f"short of {edge:g}, opposite if entirely on the wrong side of {threshold:g}; else inconclusive; after "
        "Holm-Bonferroni over the family; standard error floored by resolution/sqrt(n); invalid with fewer than "
        f"{MIN_SEEDS} usable runs, more than half of the runs dropped, or a failed validity gate",
    }
    if gates:
        out["gates"] = {g: dict(o) for g, o in gates.items()}
    if invalid_reason is not None:
        out["invalid_reason"] = invalid_reason
    if post_hoc is not None:
        out["post_hoc_reason"] = post_hoc
    return out


def exact_verdict(violations: int, total: int, claim: str, *, flagged_runs: int = 0) -> dict:
    """A deterministic claim ("never violated") decided exactly: holds with 0 violations over
    `total` checked cases, fails with any; invalid when nothing could be checked."""
    violations, total = int(violations), int(total)
    outcome = "invalid" if total == 0 else "holds" if violations == 0 else "opposite"
    frac = violations / total if total else math.nan
    return {
        "claim": claim,
        "verdict": outcome,
        "verdict_raw": outcome,
        "mean": frac,
        "ci95": [frac, frac],
        "n": total,
        "n_failed_runs": int(flagged_runs),
        "violations": violations,
        "min_effect": 0.0,
        "min_effect_why": "a deterministic guarantee: a single violation refutes it",
        "p_value": math.nan,
        "p_holm": math.nan,
        "exact": True,
        "post_hoc": False,
        "rule": "holds with 0 violations over every checked case; opposite with any (decided exactly, no interval)",
    }


def holm(verdicts: list[dict], level: float = LEVEL) -> list[dict]:
    """Holm-Bonferroni over the statistical verdicts of one family (exact and invalid ones take
    no part): p_holm is the step-down adjusted p-value, `verdict` the decision at `level` after
    adjustment, `verdict_raw` the one before. A post-hoc verdict's `original` is adjusted within
    the same family size."""
    out = [dict(v) for v in verdicts]
    tested = [i for i, v in enumerate(out) if not v.get("exact") and math.isfinite(v.get("p_value", math.nan))]
    K = len(tested)
    order = sorted(tested, key=lambda i: out[i]["p_value"])
    running, factor = 0.0, {}
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (K - rank) * out[i]["p_value"]))
        out[i]["p_holm"] = running
        # the multiplier that gives p_holm (step-down monotone), applied to the threshold test too
        factor[i] = running / out[i]["p_value"] if out[i]["p_value"] > 0 else float(K - rank)
    for i in tested:
        v = out[i]
        v["holm_factor"] = factor[i]
        v["verdict"] = _redecide(v, factor[i], level)
        v["family_size"] = K
        if "original" in v:
            o = dict(v["original"])
            if math.isfinite(o.get("p_value", math.nan)):
                o["p_holm"] = min(1.0, K * o["p_value"])  # the conservative Bonferroni bound at its place
                o["verdict"] = _redecide(o, float(K), level)
            v["original"] = o
    return out
