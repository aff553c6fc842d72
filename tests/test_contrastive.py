"""Contrastive pre-training: losses against NumPy, exact per-anchor gradients, training and attacks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify import contrastive
from purify.config import ConfigError

from .conftest import tiny


def _np_infonce(g1, g2, t):
    def unit(g):
        n = np.linalg.norm(g, axis=1, keepdims=True)
        return np.where(n > 1e-6, g / np.where(n > 0, n, 1), 0.0)

    s = unit(g1) @ unit(g2).T / t
    out = []
    for i in range(len(g1)):
        out.append(-s[i, i] + np.log(np.exp(s[i]).sum()))
    return np.array(out)


def _np_spectral(g1, g2):
    n = len(g1)
    out = []
    for i in range(n):
        pos = g1[i] @ g2[i]
        neg = sum((g1[i] @ g2[j]) ** 2 for j in range(n) if j != i) / (n - 1)
        out.append(-2 * pos + neg)
    return np.array(out)


def test_contrastive_losses_match_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    g1, g2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    g1[2] = 0.0  # a silent representation: cosine similarity 0, not NaN
    for t in (0.1, 0.5):
        np.testing.assert_allclose(
            contrastive.infonce(jnp.asarray(g1), jnp.asarray(g2), t), _np_infonce(g1, g2, t), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(
        contrastive.spectral(jnp.asarray(g1), jnp.asarray(g2)), _np_spectral(g1, g2), rtol=1e-5, atol=1e-5
    )
    assert np.all(
        np.isfinite(np.asarray(jax.grad(lambda a: contrastive.infonce(a, jnp.asarray(g2), 0.2).sum())(jnp.asarray(g1))))
    )


@pytest.mark.parametrize("kind", contrastive.OBJECTIVES)
def test_anchor_loss_depends_on_its_own_view_only(kind):
    """So the per-example input gradient an attack uses is exact (the batch sum's gradient)."""
    rng = np.random.default_rng(1)
    g1, g2 = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=(6, 4)))
    J = jax.jacobian(lambda a: contrastive.loss(kind, a, g2, 0.2))(g1)  # (6, 6, 4): d loss_i / d g1_j
    off = np.asarray(J) * (1 - np.eye(6))[:, :, None]
    assert np.abs(off).max() == 0.0 and np.abs(np.asarray(J)).max() > 0


def test_contrastive_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="train.objective='simclr'"):
        tiny(**{"train.objective": "simclr"})
    with pytest.raises(ConfigError, match="train.attack='surrogate'"):
        tiny(**{"train.objective": "infonce", "train.attack": "surrogate"})
    with pytest.raises(ConfigError, match="data.n_train=100"):
        tiny(**{"train.objective": "spectral", "data.n_train": 100})
    with pytest.raises(ConfigError, match="train.temperature=0"):
        tiny(**{"train.temperature": 0.0})


@pytest.mark.slow
@pytest.mark.parametrize("objective", contrastive.OBJECTIVES)
def test_contrastive_pretraining_lowers_its_loss_and_fgm_raises_the_anchor_loss(objective):
    cfg = tiny(
        **{
            "train.objective": objective,
            "train.steps": 200,
            "train.adv_start": 200,
            "hp.noise": 0.5,
            "hp.init_scale": 0.1,
            "hp.lr": 0.1,
            "train.batch": 64,
            "eval.n_eval": 256,
        }
    )
    res = purify.sweep(cfg, grid={"tau": [0.0]}, seeds=2)
    loss = res["loss"][0]  # (seed, time)
    assert not res.failed().any()
    assert np.all(loss[:, -1] < loss[:, 0] - 0.2), loss
    assert np.all(res["purity_nw"][0][:, -1] > 0.5)  # with strong view noise, contrastive learning finds the features
    assert np.isnan(res["robust_acc"]).all()  # no labels in contrastive pre-training: accuracies are not measured
    # the training attack on view 1 raises every anchor's loss (FGM is a first-order ascent step)
    run = purify.Run(cfg)
    params = {"W": jnp.asarray(res["W_final"][0, 0])}
    x1, x2 = contrastive.views(
        jax.random.key(3),
        purify.data.sample(jax.random.key(2), cfg.data, purify.make_task(cfg.data), 64, 0.0)[0],
        0.1,
        0.0,
    )
    before = run.example_loss(params, x1, x2, cfg.hp.beta)
    delta = run.perturb(params, x1, x2, cfg.hp.replace(tau=jnp.float32(0.05)), jax.random.key(4))
    after = run.example_loss(params, x1 + delta, x2, cfg.hp.beta)
    assert float(jnp.mean(after > before)) > 0.9


def test_pgd_contrastive_pretraining_runs_and_moves_the_weights():
    cfg = tiny(
        **{
            "train.objective": "infonce",
            "train.attack": "pgd",
            "train.pgd_steps": 2,
            "train.steps": 20,
            "train.adv_start": 10,
            "hp.noise": 0.3,
            "hp.init_scale": 0.1,
            "train.view_mask": 0.2,
        }
    )
    res = purify.sweep(cfg, grid={"tau": [0.0, 0.2]}, seeds=1)
    assert not res.failed().any()
    assert not np.allclose(res["W_final"][0], res["W_final"][1])  # the adversarial phase changed the training
