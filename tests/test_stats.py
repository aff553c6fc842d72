"""Verdict logic on synthetic statistics where the answer is known."""

import numpy as np
import pytest
from scipy import stats as st

from purify.stats import MIN_SEEDS, accuracy_resolution, exact_verdict, holm, mean_ci, verdict

SIGN = {"min_effect": 0.0, "why": "a test of the sign"}


def test_interval_matches_the_t_distribution():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sd 1.291, se 0.6455, t(3) = 3.182
    assert (
        m == 2.5
        and lo == pytest.approx(2.5 - 3.182 * 0.6455, abs=1e-3)
        and hi == pytest.approx(2.5 + 3.182 * 0.6455, abs=1e-3)
    )
    # df between the rows of a printed table (the old interpolation was off here): scipy's own quantile
    v = np.random.default_rng(0).normal(size=27)
    m, lo, hi = mean_ci(v)
    assert hi - m == pytest.approx(st.t.ppf(0.975, 26) * v.std(ddof=1) / np.sqrt(27), rel=1e-12)


@pytest.mark.parametrize(
    "values,direction,expected",
    [
        ([0.5, 0.6, 0.55, 0.52], ">", "holds"),
        ([-0.5, -0.6, -0.55, -0.52], ">", "opposite"),
        ([-0.1, 0.2, -0.05, 0.1], ">", "inconclusive"),
        ([-0.5, -0.6, -0.55, -0.52], "<", "holds"),
        ([0.5, 0.6, 0.55, 0.52], "<", "opposite"),
        ([1.0], ">", "invalid"),
        ([0.5, 0.6, 0.55], ">", "invalid"),  # three seeds: fewer than MIN_SEEDS
    ],
)
def test_verdicts(values, direction, expected):
    assert verdict(values, direction, **SIGN)["verdict"] == expected


def test_the_smallest_effect_of_interest_moves_the_edge():
    v = [0.03, 0.031, 0.029, 0.030, 0.032]  # clearly above 0, clearly below 0.05
    assert verdict(v, ">", 0.0, min_effect=0.01, why="x")["verdict"] == "holds"
    # real but smaller than declared: below the smallest effect, not the opposite of the claim
    assert verdict(v, ">", 0.0, min_effect=0.05, why="x")["verdict"] == "below min effect"
    assert verdict([-x for x in v], "<", 0.0, min_effect=0.05, why="x")["verdict"] == "below min effect"
    assert verdict([-x for x in v], "<", 0.0, min_effect=0.01, why="x")["verdict"] == "holds"


def test_a_sign_claim_must_say_why_and_min_effect_must_be_sane():
    with pytest.raises(ValueError, match="needs `why`"):
        verdict([1.0, 2.0], ">", min_effect=0.0)
    with pytest.raises(ValueError, match="min_effect=-0.1"):
        verdict([1.0, 2.0], ">", min_effect=-0.1, why="x")


def test_failed_runs_are_counted_not_hidden():
    v = verdict([0.5, np.nan, 0.6, 0.55, 0.52], ">", **SIGN)
    assert v["n"] == 4 and v["n_failed_runs"] == 1 and v["verdict"] == "holds"
    f = verdict([0.5, 0.4, 0.6, 0.55, 0.52], ">", flagged=[False, True, False, False, False], **SIGN)
    assert f["n"] == 4 and f["n_failed_runs"] == 1 and f["mean"] == pytest.approx(0.5425)


def test_broken_runs_give_invalid_not_a_verdict():
    assert verdict([np.nan] * 4, ">", **SIGN)["verdict"] == "invalid"
    # finite numbers from runs flagged as diverged or at chance decide nothing either
    v = verdict([-0.3, -0.2, -0.4, -0.3], ">", flagged=[True, True, True, False], **SIGN)
    assert v["verdict"] == "invalid" and v["n"] == 1 and v["n_failed_runs"] == 3


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    for _ in range(200):
        x = rng.normal(0.1, 0.2, 6)
        v = verdict(x, ">", 0.0, min_effect=0.05, why="x")
        lo, hi = v["ci95"]
        assert (v["p_value"] < 0.05) == (lo > 0.05 or hi < 0.05)


def test_many_seed_noise_is_inconclusive_at_the_right_rate():
    rng = np.random.default_rng(0)
    outcomes = [verdict(rng.normal(0.0, 1.0, 8), ">", **SIGN)["verdict"] for _ in range(2000)]
    assert 0.015 < outcomes.count("holds") / 2000 < 0.04  # one-sided 2.5% false positives


@pytest.mark.slow
def test_holm_controls_the_family_wise_error():
    """20 true nulls per family: without correction a family has a false 'holds' far more often
    than 2.5%; after Holm at most about that often."""
    rng = np.random.default_rng(3)
    raw_any = holm_any = 0
    n_fam = 400
    for _ in range(n_fam):
        fam = holm([verdict(rng.normal(0.0, 1.0, 8), ">", **SIGN) for _ in range(20)])
        raw_any += any(v["verdict_raw"] == "holds" for v in fam)
        holm_any += any(v["verdict"] == "holds" for v in fam)
    assert raw_any / n_fam > 0.25
    assert holm_any / n_fam < 0.045


def test_holm_is_the_step_down_procedure():
    # p = 0.01, 0.02, 0.03, 0.2: Holm multiplies by 4, 3, 2, 1 and keeps the running maximum
    fam = [
        {"p_value": p, "mean": 1.0, "threshold": 0.0, "direction": ">", "min_effect": 0.0}
        for p in (0.03, 0.01, 0.2, 0.02)
    ]
    out = holm(fam)
    assert [v["p_holm"] for v in out] == pytest.approx([0.06, 0.04, 0.2, 0.06])
    assert [v["verdict"] for v in out] == ["inconclusive", "holds", "inconclusive", "inconclusive"]
    assert all(v["family_size"] == 4 for v in out)


def test_exact_verdicts_fail_on_one_violation_and_skip_holm():
    assert exact_verdict(0, 4096, "never")["verdict"] == "holds"
    one = exact_verdict(1, 4096, "never")
    assert one["verdict"] == "opposite" and one["violations"] == 1 and one["exact"]
    assert exact_verdict(0, 0, "never")["verdict"] == "invalid"
    fam = holm([one, verdict([0.5, 0.6, 0.55, 0.52], ">", **SIGN)])
    assert fam[0]["verdict"] == "opposite" and "family_size" not in fam[0] and fam[1]["family_size"] == 1


def test_post_hoc_rules_say_so():
    v = holm([verdict([0.5, 0.6, 0.55, 0.52], ">", post_hoc="chosen after seeing results", **SIGN)])[0]
    assert v["post_hoc"] and v["post_hoc_reason"] == "chosen after seeing results"
    assert not verdict([1.0, 2.0, 3.0, 4.0], ">", **SIGN)["post_hoc"]


def test_below_min_effect_and_opposite_split_what_used_to_be_fails():
    """Interval entirely between the threshold and threshold + delta: below min effect; entirely
    on the wrong side of the threshold: opposite; short of the edge but straddling the threshold:
    still below min effect (any effect is smaller than delta), never opposite."""
    small = [0.011, 0.012, 0.010, 0.011, 0.013, 0.009]  # +0.011, CI well inside (0, 0.05)
    assert verdict(small, ">", 0.0, min_effect=0.05, why="x")["verdict"] == "below min effect"
    wrong = [-0.03, -0.031, -0.029, -0.030]
    assert verdict(wrong, ">", 0.0, min_effect=0.05, why="x")["verdict"] == "opposite"
    straddle = [0.02, -0.01, 0.015, -0.005, 0.01, 0.0]  # CI about (-0.01, +0.02): short of 0.05, across 0
    assert verdict(straddle, ">", 0.0, min_effect=0.05, why="x")["verdict"] == "below min effect"
    # with delta = 0 there is no room between: short of the threshold is the opposite
    assert verdict(wrong, ">", 0.0, **SIGN)["verdict"] == "opposite"
    # Holm can weaken the threshold test: an opposite at its raw level stays at least below min effect
    fam = holm([verdict([-0.004, -0.006, -0.005, -0.0045], ">", 0.0, min_effect=0.05, why="x")] * 1)
    assert fam[0]["verdict"] in ("opposite", "below min effect")


def test_a_statistic_with_no_spread_is_not_certain():
    """1.00 against 1.00 in every seed: the difference has zero spread, but each accuracy was
    measured on n_eval examples; the floor resolution/sqrt(n) keeps the interval honest."""
    zero = [0.0] * 6
    bare = verdict(zero, ">", 0.0, min_effect=0.02, why="x")
    assert bare["p_value"] == 0.0 and bare["verdict"] == "below min effect"  # the old certainty from a ceiling
    r = accuracy_resolution(1024, 2)
    assert r == pytest.approx(0.5 * np.sqrt(2 / 1024))
    floored = verdict(zero, ">", 0.0, min_effect=0.02, why="x", resolution=r)
    assert floored["se"] == pytest.approx(r / np.sqrt(6)) and floored["p_value"] > 0
    lo, hi = floored["ci95"]
    assert lo == pytest.approx(-st.t.ppf(0.975, 5) * r / np.sqrt(6)) and hi == pytest.approx(-lo)
    assert floored["verdict"] == "inconclusive"  # 0.018 half-width reaches past 0.02: no certainty either way
    # a real spread larger than the floor is left alone
    spread = [0.1, 0.2, 0.15, 0.12, 0.18, 0.11]
    assert verdict(spread, ">", **SIGN, resolution=r)["se"] == pytest.approx(np.std(spread, ddof=1) / np.sqrt(6))


def test_fewer_than_min_seeds_is_invalid_with_the_reason():
    v = verdict([0.5, 0.6, 0.55], ">", **SIGN)
    assert MIN_SEEDS == 4 and v["verdict"] == "invalid" and "a verdict needs 4" in v["invalid_reason"]


def test_a_failed_gate_makes_the_verdict_invalid_and_names_it():
    gates = {"trained": {"passed": False, "detail": "2 of 6 runs miss it"}}
    v = verdict([0.5, 0.6, 0.55, 0.52, 0.58, 0.51], ">", **SIGN, gates=gates)
    assert v["verdict"] == "invalid" and "gate 'trained' failed: 2 of 6 runs miss it" in v["invalid_reason"]
    ok = verdict([0.5, 0.6, 0.55, 0.52], ">", **SIGN, gates={"trained": {"passed": True, "detail": ""}})
    assert ok["verdict"] == "holds" and ok["gates"]["trained"]["passed"]


def test_slopes_recover_a_power_law_per_seed_and_drop_broken_seeds():
    from purify.stats import slopes

    d = np.asarray([32, 64, 128, 256, 512], float)
    a = np.asarray([-0.5, -0.25, 0.0, 0.4])
    y = 3.0 * d[:, None] ** a[None, :]
    np.testing.assert_allclose(slopes(d, y), a, atol=1e-10)
    y[2, 1] = np.nan  # a broken run drops its seed, not the fit
    y[0, 2] = -1.0  # a non-positive value has no logarithm
    got = slopes(d, y)
    assert np.isnan(got[1]) and np.isnan(got[2]) and np.allclose(got[[0, 3]], a[[0, 3]])
    # log_y=False: the slope of y against log d (per e-fold of d)
    lin = 0.7 + 0.05 * np.log(d)[:, None] * np.ones((1, 3))
    np.testing.assert_allclose(slopes(d, lin, log_y=False), 0.05, atol=1e-10)
    with pytest.raises(ValueError, match="values.shape"):
        slopes(d, np.ones((4, 2)))
