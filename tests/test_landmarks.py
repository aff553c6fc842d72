"""The oracle pure network's exact l2 robustness against closed forms, brute force and attacks."""

import math

import jax
import numpy as np
import pytest

import purify
from purify import attacks, landmarks
from purify.config import DataConfig
from purify.data import sample

from .conftest import tiny


def _phi(u, b):
    return np.maximum(u - b, 0.0) - np.maximum(-u - b, 0.0)


def test_flip_radius_of_a_small_example_by_hand():
    """z = (1, 1, 1), b = 0.5, two helping units and one hurting: margin 0.5; the three units
    share it at level 1/6 each (below every cap 0.5), so |u| = sqrt(3)/6."""
    r = landmarks.oracle_flip_radius(np.ones((1, 3)), np.array([[True, True, False]]), 0.5, 5)
    assert r[0] == pytest.approx(math.sqrt(3) / 6, rel=1e-12)


def test_without_thresholds_the_oracle_is_linear_and_flips_at_margin_over_sqrt_d():
    """b = 0: phi_0(u) = u, f = <w*, z + u>, so the flip radius is |<w*, z>| / |w*| = m / sqrt(D)."""
    rng = np.random.default_rng(0)
    k, D = 4, 16
    z = rng.choice([-1.0, 1.0], (50, k)) * rng.uniform(1, 2, (50, k))
    w = rng.choice([-1.0, 1.0], (50, k))
    y = np.sign((w * z).sum(-1))
    r = landmarks.oracle_flip_radius(z, (y[:, None] * w * z) > 0, 0.0, D - k)
    np.testing.assert_allclose(r, np.abs((w * z).sum(-1)) / math.sqrt(D), rtol=1e-10)


def test_a_wrong_oracle_has_flip_radius_zero():
    """Uniform magnitudes with a large threshold: the oracle can disagree with the label."""
    r = landmarks.oracle_flip_radius(np.array([[1.0, 1.9]]), np.array([[True, False]]), 0.9, 3)
    assert r[0] == 0.0


def test_flip_radius_is_the_smallest_flipping_perturbation_by_brute_force():
    """D = 3, random examples and thresholds: 30k directions on a grid of radii (a dead zone can
    un-flip a direction further out, so no bisection) show no flip below the exact radius and
    one within 1% above it."""
    rng = np.random.default_rng(1)
    D = 3
    dirs = rng.normal(size=(30_000, D))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    checked = 0
    while checked < 12:
        k = int(rng.integers(1, D + 1))
        z = np.zeros(D)
        idx = rng.choice(D, k, replace=False)
        z[idx] = rng.choice([-1, 1], k) * rng.uniform(1, 2, k)
        w, b = rng.choice([-1.0, 1.0], D), float(rng.uniform(0, 0.9))
        y = np.sign(w @ z)

        def margin(u, z=z, w=w, b=b, y=y):
            return y * (_phi(z + u, b) * w).sum(-1)

        if margin(np.zeros((1, D)))[0] <= 0:
            continue
        r = landmarks.oracle_flip_radius(z[idx][None], ((y * w * z)[idx] > 0)[None], b, D - k)[0]
        grid = r * np.linspace(0.99, 1.2, 43)
        first = next(t for t in grid if (margin(t * dirs) <= 0).any())  # a flip within 1.2 r exists
        for t in r * np.linspace(0.05, 1 - 1e-6, 20):  # nothing flips below r
            assert not (margin(t * dirs) <= 0).any()
        assert first <= r * 1.01
        checked += 1


def test_sign_magnitudes_give_the_binomial_sum_and_beta_zero_gives_the_linear_classifier():
    cfg = DataConfig(d=64, k=5, magnitude="sign", dictionary="haar")
    taus = np.asarray([0.05, 0.13, 0.3, 0.5, 0.7])
    # beta = 0: the oracle is the linear classifier sign <w*, z + u>
    np.testing.assert_allclose(
        landmarks.oracle_robust_accuracy(cfg, 0.0, taus),
        [landmarks.linear_robust_accuracy(cfg, float(t)) for t in taus],
        atol=1e-12,
    )
    # beta = 0.6, b = 0.6: the closest examples (3 helping, 2 hurting, margin 0.4) flip when the
    # five units share the margin, 0.08 each: radius 0.08 sqrt(5); below it every example holds
    acc = landmarks.oracle_robust_accuracy(cfg, 0.6, [0.08 * math.sqrt(5) * 0.999, 0.08 * math.sqrt(5) * 1.001])
    assert acc[0] == 1.0 and acc[1] == pytest.approx(1 - 20 / 32)


@pytest.mark.parametrize("k", [3, 5, 9])
@pytest.mark.parametrize("beta", [0.3, 0.6, 0.8])
def test_with_sign_magnitudes_the_oracle_holds_up_to_one_minus_beta_over_sqrt_k(k, beta):
    """The closest examples have one more helping unit than hurting ones: margin 1 - beta; the k
    units share it at level (1 - beta)/k (below every cap, and below b = beta while beta >
    1/(k + 1), so no inactive unit is worth switching on): radius (1 - beta)/sqrt(k), whatever d."""
    cfg = DataConfig(d=64, k=k, magnitude="sign")
    edge = (1 - beta) / math.sqrt(k)
    below, above = landmarks.oracle_robust_accuracy(cfg, beta, [edge * (1 - 1e-9), edge * (1 + 1e-9)])
    assert below == 1.0
    assert above == pytest.approx(1 - 2 * math.comb(k, (k + 1) // 2) / 2**k, abs=1e-12)


def test_headroom_is_the_window_between_the_linear_and_the_oracle_edges():
    cfg = DataConfig(d=64, k=5, magnitude="sign")
    lo, hi = landmarks.headroom(cfg, 0.6)
    assert lo == pytest.approx(1 / 8) and hi == pytest.approx(0.4 / math.sqrt(5))
    inside = [lo * 1.001, hi * 0.999]
    exact = landmarks.exact_robust_accuracies(cfg, 0.6, inside)
    assert exact["oracle_robust_exact"] == [1.0, 1.0]
    assert exact["linear_robust_exact"] == pytest.approx([1 - 20 / 32] * 2)
    assert landmarks.linear_robust_accuracy(cfg, lo * 0.999) == 1.0  # below lo the linear classifier holds too
    with pytest.raises(ValueError, match="sign"):
        landmarks.headroom(DataConfig(d=64, k=4), 0.6)
    with pytest.raises(ValueError, match="k=4 is even"):
        landmarks.headroom(DataConfig(d=64, k=4, magnitude="sign"), 0.6)


@pytest.mark.parametrize("preset", ["cpu", "gpu", "test"])
def test_the_main_regime_has_headroom_at_its_verdict_radius(preset):
    """Issue 24's window at this finite d: at the verdict radius the oracle's exact robust
    accuracy is >= 0.95 and the best linear classifier's <= 0.6, on every preset."""
    from purify.experiments._common import headroom_radius
    from purify.registry import get

    cfg, _, _ = get("fp-robustness").config(preset)
    tv = headroom_radius(cfg)
    lo, hi = landmarks.headroom(cfg.data, cfg.hp.beta)
    assert lo < tv < hi
    exact = landmarks.exact_robust_accuracies(cfg.data, cfg.hp.beta, [tv])
    assert exact["oracle_robust_exact"][0] >= 0.95 and exact["linear_robust_exact"][0] <= 0.6


def test_uniform_magnitudes_agree_with_the_per_example_radius_of_sign_values():
    """The Monte Carlo path and the exact sum agree where both apply (sign values as an input)."""
    rng = np.random.default_rng(2)
    k, D, b = 5, 64, 0.6
    z = rng.choice([-1.0, 1.0], (2000, k))
    w = rng.choice([-1.0, 1.0], (2000, k))
    y = np.sign((w * z).sum(-1))
    r = landmarks.oracle_flip_radius(z, (y[:, None] * w * z) > 0, b, D - k)
    cfg = DataConfig(d=D, k=k, magnitude="sign")
    for t in (0.1, 0.2, 0.4):
        assert (r > t).mean() == pytest.approx(landmarks.oracle_robust_accuracy(cfg, b, [t])[0], abs=0.03)


def test_a_threshold_at_or_above_a_feature_is_refused():
    with pytest.raises(ValueError, match="b=1.0"):
        landmarks.oracle_flip_radius(np.ones((1, 3)), np.ones((1, 3), bool), 1.0, 5)
    with pytest.raises(ValueError, match="beta must be < 1"):
        landmarks.oracle_robust_accuracy(DataConfig(d=16, k=3, magnitude="sign"), 1.0, [0.1])


def test_the_oracle_needs_an_orthonormal_dictionary_and_rademacher_labels():
    with pytest.raises(ValueError, match="orthonormal"):
        landmarks.oracle_robust_accuracy(DataConfig(dictionary="sphere", features=128), 0.6, [0.1])
    with pytest.raises(ValueError, match="rademacher"):
        landmarks.oracle_robust_accuracy(DataConfig(label="gaussian"), 0.6, [0.1])


@pytest.mark.slow
@pytest.mark.parametrize("magnitude", ["uniform", "sign"])
def test_attacks_on_the_oracle_never_beat_its_exact_robustness_and_the_reference_comes_close(magnitude):
    """On the data model itself (a Haar dictionary, noise 0) at three radii: no attack flips an
    example whose exact radius exceeds tau, the reference attack of the 'attack converged' gate
    finds every flip the exact radius allows, and the default evaluation nearly every one."""
    k = 5 if magnitude == "sign" else 4
    cfg = tiny(**{"data.d": 32, "data.k": k, "data.dictionary": "haar", "data.magnitude": magnitude})
    task = purify.make_task(cfg.data)
    n, beta = 512, 0.6
    x, z, y = sample(jax.random.key(3), cfg.data, task, n, 0.0)
    z, y = np.asarray(z), np.asarray(y[:, 0])
    w = np.asarray(task.w_star[0])
    active = np.abs(z) > 0
    values = z[active].reshape(n, k)
    helps = ((y[:, None] * w[None, :] * z) > 0)[active].reshape(n, k)
    b = beta * cfg.data.min_magnitude
    radius = landmarks.oracle_flip_radius(values, helps, b, cfg.data.d - k)
    # off the atoms of the radius law (sign magnitudes have few distinct radii)
    taus = tuple(1.02 * float(np.quantile(radius, q)) for q in (0.2, 0.5, 0.8))
    f = landmarks.oracle_logits(cfg.data, task, beta)
    margin = lambda v: y * f(v)
    spec = attacks.EvalSpec(taus, "l2", 20, 2)
    default, strong = attacks.audited_accuracy(
        margin, x, y, task.label_directions[0], jax.random.key(0), spec, steps=100, restarts=10
    )
    for i, t in enumerate(taus):
        exact = float((radius > t).mean())
        # no attack beats the exact radius, and both evaluations find its flips (to float32
        # rounding of the examples whose radius lies within 1e-6 of tau)
        assert exact - 2 / n <= float(strong[i]) <= exact + 2 / n, (t, float(strong[i]), exact)
        assert float(strong[i]) <= float(default[i]) <= exact + 0.02, (t, float(default[i]), exact)


def test_the_headroom_radius_sits_inside_the_asymptotic_window_where_the_two_overlap():
    """d > (k/(1 - beta))^2: the verdict radius is the middle of the headroom's part inside
    DataConfig.window; below that d, the middle of the whole headroom."""
    from purify import Config
    from purify.experiments._common import headroom_radius

    wide = Config().set(**{"data.d": 256, "data.k": 5, "data.magnitude": "sign"})
    lo, hi = math.sqrt(5) / 16, 0.4 / math.sqrt(5)
    assert wide.data.window[0] == pytest.approx(lo) and headroom_radius(wide) == round((lo + hi) / 2, 4)
    narrow = Config().set(**{"data.d": 64, "data.k": 5, "data.magnitude": "sign"})
    assert narrow.data.window[0] > hi and headroom_radius(narrow) == round((1 / 8 + hi) / 2, 4)


def test_a_regime_record_names_the_regime_of_each_flagged_run():
    from purify import Config
    from purify.experiments._common import regime_record

    body = {"failed_runs": [[1, 3]], "chance_runs": [], "statistics": [{"claim": "x"}], "taus": [0.1]}
    out = regime_record({"a": (Config(), body), "b": (Config(), {**body, "failed_runs": []})})
    assert out["failed_runs"] == [["a", 1, 3]] and out["statistics"] == [{"claim": "x"}] * 2
    assert set(out["regimes"]) == {"a", "b"} and "statistics" not in out["regimes"]["a"]
    assert out["regimes"]["a"]["taus"] == [0.1] and out["regimes"]["a"]["config"] == Config().to_dict()
