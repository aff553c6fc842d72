"""Feature-mixture metrics against values known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purify import metrics
from purify.data import make_dictionary


@pytest.fixture
def M():
    return make_dictionary("haar", 64, jax.random.key(0))


def test_pure_neurons(M):
    W = 3.0 * M.T[:5]  # neuron i = 3 M_i
    C = metrics.feature_coefficients(W, M)
    np.testing.assert_allclose(metrics.purity(C), 1.0, atol=1e-5)
    np.testing.assert_array_equal(metrics.features_per_neuron(C), 1.0)
    np.testing.assert_allclose(metrics.participation_ratio(C), 1.0, atol=1e-5)
    w_star = jax.random.rademacher(jax.random.key(1), (64,), dtype=jnp.float32)
    np.testing.assert_allclose(metrics.coherence(C, w_star), 1 / 8, atol=1e-5)  # 1/sqrt(d)


def test_random_neurons_have_purity_about_2lnd_over_d(M):
    W = jax.random.normal(jax.random.key(2), (4000, 64))
    p = float(metrics.purity(metrics.feature_coefficients(W, M)).mean())
    assert 0.5 * 2 * np.log(64) / 64 < p < 1.5 * 2 * np.log(64) / 64
    pr = float(metrics.participation_ratio(metrics.feature_coefficients(W, M)).mean())
    assert 64 / 3 * 0.8 < pr < 64 / 3 * 1.2  # Gaussian: d / 3 for large d


def test_dense_mixture_along_the_label_direction(M):
    w_star = jnp.ones(64)
    u = M @ w_star / 8.0  # unit label direction in input space
    W = M.T[:1] + 0.5 * u[None]  # feature 0 plus a mixture along M w*
    C = metrics.feature_coefficients(W, M)
    # <w, M w*>/|w*| = (1 + 0.5*8)/8 ... c_0 = 1 + 0.5/8, rho = |C w*| / (|w*| max|c|)
    c0 = 1 + 0.5 / 8
    expected = (c0 + 63 * 0.5 / 8) / 8 / c0
    np.testing.assert_allclose(metrics.coherence(C, w_star), expected, rtol=1e-5)
    assert int(metrics.features_per_neuron(C)[0]) == 1


def test_mixture_alignment(M):
    shared = jax.random.normal(jax.random.key(3), (64,)) * 0.1
    W = jnp.stack([M[:, i] * 5 + shared for i in range(10)])
    assert float(metrics.mixture_alignment(metrics.feature_coefficients(W, M), jnp.ones(10))) > 0.9
    W = M.T[:10] * 5 + jax.random.normal(jax.random.key(4), (10, 64)) * 0.1
    assert abs(float(metrics.mixture_alignment(metrics.feature_coefficients(W, M), jnp.ones(10)))) < 0.1


def test_purification_principle_decomposition():
    key = jax.random.split(jax.random.key(5), 3)
    W_adv = jax.random.normal(key[0], (6, 20))
    v = jax.random.normal(key[1], (6, 20))
    v = v - (v * W_adv).sum(-1, keepdims=True) / (W_adv**2).sum(-1, keepdims=True) * W_adv  # v orthogonal to w'
    beta = jnp.array([2.0, 2.0, 2.0, 0.1, 0.1, 0.1])
    W = beta[:, None] * W_adv + v
    out = metrics.principle(W, W_adv, W_init=W_adv)
    np.testing.assert_allclose(out["beta"], beta, rtol=1e-5)
    np.testing.assert_allclose(out["residual_norm"], jnp.linalg.norm(v, axis=-1), rtol=1e-4)
    expected = float(((jnp.abs(beta) * jnp.linalg.norm(W_adv, axis=-1)) > jnp.linalg.norm(v, axis=-1)).mean())
    assert float(out["holds_fraction"]) == expected
    np.testing.assert_allclose(out["cos_adv_init"], 1.0, atol=1e-5)


def test_weighted_mean_ignores_tiny_neurons():
    values, norms = jnp.array([1.0, 0.0, 0.0]), jnp.array([10.0, 1e-6, 1e-6])
    assert float(metrics.weighted_mean(values, norms)) == pytest.approx(1.0, abs=1e-5)


def test_weighted_purity_closed_form_and_leading_axes():
    """W = [[2, 0], [1, 1]] with M = I: purities 1 and 1/2, norms 2 and sqrt(2), so the
    norm-weighted purity is (2 + sqrt(2)/2) / (2 + sqrt(2)); leading axes are kept."""
    W = np.array([[2.0, 0.0], [1.0, 1.0]], np.float32)
    want = (2 + np.sqrt(2) / 2) / (2 + np.sqrt(2))
    np.testing.assert_allclose(float(metrics.weighted_purity(W, np.eye(2, dtype=np.float32))), want, rtol=1e-6)
    stack = np.stack([W, np.eye(2, dtype=np.float32)])[None]  # (1, 2, m, d)
    np.testing.assert_allclose(np.asarray(metrics.weighted_purity(stack, np.eye(2))), [[want, 1.0]], rtol=1e-6)
    # the per-backbone helper of the experiments is the same number, backbone by backbone
    from purify.experiments._common import weighted_purity

    rng = np.random.default_rng(0)
    Ws = rng.standard_normal((3, 2, 16, 8)).astype(np.float32)
    M = np.linalg.qr(rng.standard_normal((8, 8)))[0].astype(np.float32)
    np.testing.assert_allclose(weighted_purity(Ws, M), np.asarray(metrics.weighted_purity(Ws, M)), rtol=1e-6)
