"""Verdict logic on synthetic statistics where the answer is known."""

import numpy as np
import pytest
from scipy import stats as st

from purify.stats import exact_verdict, holm, mean_ci, verdict, with_original

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
        ([-0.5, -0.6, -0.55, -0.52], ">", "fails"),
        ([-0.1, 0.2, -0.05, 0.1], ">", "inconclusive"),
        ([-0.5, -0.6, -0.55, -0.52], "<", "holds"),
        ([0.5, 0.6, 0.55, 0.52], "<", "fails"),
        ([1.0], ">", "invalid"),
    ],
)
def test_verdicts(values, direction, expected):
    assert verdict(values, direction, **SIGN)["verdict"] == expected


def test_the_smallest_effect_of_interest_moves_the_edge():
    v = [0.03, 0.031, 0.029, 0.030, 0.032]  # clearly above 0, clearly below 0.05
    assert verdict(v, ">", 0.0, min_effect=0.01, why="x")["verdict"] == "holds"
    assert verdict(v, ">", 0.0, min_effect=0.05, why="x")["verdict"] == "fails"  # real but smaller than declared
    assert verdict([-x for x in v], "<", 0.0, min_effect=0.05, why="x")["verdict"] == "fails"
    assert verdict([-x for x in v], "<", 0.0, min_effect=0.01, why="x")["verdict"] == "holds"


def test_a_sign_claim_must_say_why_and_min_effect_must_be_sane():
    with pytest.raises(ValueError, match="needs `why`"):
        verdict([1.0, 2.0], ">", min_effect=0.0)
    with pytest.raises(ValueError, match="min_effect=-0.1"):
        verdict([1.0, 2.0], ">", min_effect=-0.1, why="x")


def test_failed_runs_are_counted_not_hidden():
    v = verdict([0.5, np.nan, 0.6, 0.55], ">", **SIGN)
    assert v["n"] == 3 and v["n_failed_runs"] == 1 and v["verdict"] == "holds"
    f = verdict([0.5, 0.4, 0.6, 0.55], ">", flagged=[False, True, False, False], **SIGN)
    assert f["n"] == 3 and f["n_failed_runs"] == 1 and f["mean"] == pytest.approx(0.55)


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
    assert one["verdict"] == "fails" and one["violations"] == 1 and one["exact"]
    assert exact_verdict(0, 0, "never")["verdict"] == "invalid"
    fam = holm([one, verdict([0.5, 0.6, 0.55], ">", **SIGN)])
    assert fam[0]["verdict"] == "fails" and "family_size" not in fam[0] and fam[1]["family_size"] == 1


def test_post_hoc_rules_carry_the_original():
    orig = verdict([0.01, 0.02, 0.015], ">", **SIGN)
    new = verdict([0.5, 0.6, 0.55], ">", post_hoc="chosen after seeing results", **SIGN)
    with pytest.raises(ValueError, match="not marked post_hoc"):
        with_original(orig, new)
    v = holm([with_original(new, orig)])[0]
    assert v["post_hoc"] and v["post_hoc_reason"] == "chosen after seeing results"
    assert v["original"]["mean"] == pytest.approx(0.015) and "verdict" in v["original"]
    assert not verdict([1.0, 2.0], ">", **SIGN)["post_hoc"]


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
