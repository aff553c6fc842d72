"""Verdict logic on synthetic statistics where the answer is known."""

import numpy as np
import pytest

from purify.stats import mean_ci, verdict


def test_interval_matches_the_t_distribution():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])  # mean 2.5, sd 1.291, se 0.6455, t(3) = 3.182
    assert (
        m == 2.5
        and lo == pytest.approx(2.5 - 3.182 * 0.6455, abs=1e-3)
        and hi == pytest.approx(2.5 + 3.182 * 0.6455, abs=1e-3)
    )


@pytest.mark.parametrize(
    "values,direction,expected",
    [
        ([0.5, 0.6, 0.55, 0.52], ">", "holds"),
        ([-0.5, -0.6, -0.55, -0.52], ">", "fails"),
        ([-0.1, 0.2, -0.05, 0.1], ">", "inconclusive"),
        ([-0.5, -0.6, -0.55, -0.52], "<", "holds"),
        ([0.5, 0.6, 0.55, 0.52], "<", "fails"),
        ([1.0], ">", "inconclusive"),
    ],
)
def test_verdicts(values, direction, expected):
    assert verdict(values, direction)["verdict"] == expected


def test_failed_runs_are_counted_not_hidden():
    v = verdict([0.5, np.nan, 0.6, 0.55], ">")
    assert v["n"] == 3 and v["n_failed_runs"] == 1 and v["verdict"] == "holds"


def test_many_seed_noise_is_inconclusive_at_the_right_rate():
    rng = np.random.default_rng(0)
    outcomes = [verdict(rng.normal(0.0, 1.0, 8), ">")["verdict"] for _ in range(2000)]
    assert 0.015 < outcomes.count("holds") / 2000 < 0.04  # one-sided 2.5% false positives
