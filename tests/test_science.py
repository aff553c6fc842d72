"""The science, statistically, at a small CPU config over 8 seeds: regression guards.

A test named `test_regression_guard_*` asserts that a scientific hypothesis holds at this
config. It is not evidence for the hypothesis (the experiments and their verdicts are); it
guards against a code change that silently breaks what the toolkit measured before. The other
tests here check exact properties (shared clean phase, rotation equivariance in distribution).

Thresholds are stated before looking: an effect counts only when the mean paired difference
(adversarial - clean, same seed) exceeds three times the larger seed-to-seed standard deviation
of the two groups, and the adversarial value exceeds the clean value on every seed.
"""

import jax
import numpy as np
import pytest

import purify
from purify import attacks, landmarks
from purify.data import sample

pytestmark = pytest.mark.slow  # statistical checks of the science: seconds to a minute each

SEEDS = 8
SMALL = {
    "data.d": 32,
    "data.k": 4,
    "model.width": 128,
    "train.steps": 1600,
    "train.adv_start": 800,
    "train.batch": 256,
    "hp.tau": 0.25,
    "hp.lr": 0.1,
    "hp.beta": 0.6,
    "eval.taus": (0.25,),
    "eval.n_eval": 1024,
    # the earlier, 8x cheaper evaluation: these guards compare training modes, not absolute robustness
    "eval.pgd_steps": 10,
    "eval.restarts": 1,
    "train.n_log": 10,
}


@pytest.fixture(scope="module")
def fp_run():
    cfg = purify.Config().set(**SMALL)
    return purify.sweep(cfg, grid={"tau": [0.0, 0.25]}, seeds=SEEDS)


def _final(res, name):
    arr = res[name][..., -1, 0] if name == "robust_acc" else res[name][..., -1]
    return arr[0], arr[1]  # clean, adversarial: (seeds,)


@pytest.mark.parametrize("name,sign", [("purity_nw", +1), ("robust_acc", +1), ("rho_nw", -1), ("features_nw", -1)])
def test_regression_guard_fgm_after_clean_training_purifies(fp_run, name, sign):
    assert not fp_run.failed().any()
    clean, adv = _final(fp_run, name)
    diff = sign * (adv - clean)
    spread = max(clean.std(), adv.std())
    assert diff.mean() > 3 * spread, (name, diff.mean(), spread)
    assert (diff > 0).all(), (name, diff)


def test_regression_guard_clean_accuracy_is_kept(fp_run):
    clean, adv = _final(fp_run, "clean_acc")
    assert clean.min() > 0.9 and adv.min() > 0.9
    assert not fp_run["constant_predictor"].any(axis=(0, 1))[-1]


def test_both_modes_share_the_clean_phase(fp_run):
    before = fp_run.steps <= SMALL["train.adv_start"]
    np.testing.assert_array_equal(fp_run["purity_nw"][0][:, before], fp_run["purity_nw"][1][:, before])


def test_l2_training_is_rotation_equivariant():
    """A Haar dictionary gives the same statistics as the identity (all of l2 training, the init
    and the metrics are rotation invariant), within seed noise."""
    stats = {}
    for kind in ("identity", "haar"):
        cfg = purify.Config().set(**{**SMALL, "data.dictionary": kind, "train.steps": 1000, "train.adv_start": 500})
        res = purify.sweep(cfg, grid={"tau": [0.25]}, seeds=range(100, 100 + SEEDS)).sel(tau=0.25)
        stats[kind] = {
            n: (res[n][..., -1, 0] if n == "robust_acc" else res[n][:, -1])
            for n in ("purity_nw", "rho_nw", "clean_acc", "robust_acc", "features_nw")
        }
    for name in stats["haar"]:
        a, b = stats["identity"][name], stats["haar"][name]
        se = np.sqrt(a.var(ddof=1) / SEEDS + b.var(ddof=1) / SEEDS)
        assert abs(a.mean() - b.mean()) < 4 * se + 1e-3, (name, a.mean(), b.mean(), se)
    # purity is measured in feature coordinates C = W M, so purification shows with a dense
    # dictionary as well (here the weights are dense in input coordinates)
    assert stats["haar"]["purity_nw"].mean() > 0.5


def test_regression_guard_oracle_beats_linear_inside_the_window():
    """docs/science.md section 4: the oracle pure network keeps robustness to Theta(1/sqrt k) while the
    best linear classifier loses it at Theta(1/sqrt d)."""
    cfg = purify.DataConfig(d=64, k=4)
    task = purify.make_task(cfg)
    x, _, y = sample(jax.random.key(0), cfg, task, 4000, 0.0)
    y = y[:, 0]
    f = landmarks.oracle_logits(cfg, task, beta=0.6)
    margin = lambda v: y * f(v)
    for tau in (0.2, 0.3, 0.4):
        _, oracle, _ = attacks.robust_accuracy(
            margin, x, y, task.label_directions[0], jax.random.key(1), attacks.EvalSpec((tau,), "l2", 20, 2)
        )
        linear = landmarks.linear_robust_accuracy(cfg, tau)
        assert float(oracle[0]) > linear + 0.25, (tau, float(oracle[0]), linear)
