"""Over-complete dictionaries (D > d features in superposition): what still holds exactly, and
what replaces the closed forms that need an orthonormal M."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify import attacks, landmarks, metrics
from purify.config import ConfigError
from purify.data import make_dictionary, make_task, sample

D_IN, D_FEAT = 32, 128


def overcomplete(**kw):
    return purify.DataConfig(**{"d": D_IN, "features": D_FEAT, "k": 4, "dictionary": "sphere", **kw})


def test_sphere_dictionary_has_unit_columns_that_interfere():
    M = np.asarray(make_dictionary("sphere", D_IN, jax.random.key(0), D_FEAT))
    assert M.shape == (D_IN, D_FEAT)
    np.testing.assert_allclose(np.linalg.norm(M, axis=0), 1.0, atol=1e-5)
    off = (M.T @ M)[~np.eye(D_FEAT, dtype=bool)]
    # random unit vectors: E <M_i, M_j>^2 = 1/d (features interfere, unlike an orthonormal M)
    assert abs((off**2).mean() * D_IN - 1.0) < 0.1
    assert np.linalg.matrix_rank(M) == D_IN


def test_samples_are_k_sparse_over_all_D_features_and_x_is_M_z():
    cfg = overcomplete()
    task = make_task(cfg)
    n = 20000
    x, z, y = (np.asarray(a) for a in sample(jax.random.key(3), cfg, task, n, 0.0))
    assert z.shape == (n, D_FEAT) and x.shape == (n, D_IN)
    np.testing.assert_allclose(x, z @ np.asarray(task.M).T, atol=1e-5)
    assert ((z != 0).sum(1) == 4).all()
    p = (z != 0).mean(0)  # every one of the D features equally likely: k/D each
    assert np.abs(p - 4 / D_FEAT).max() < 5 * np.sqrt(4 / D_FEAT / n)
    np.testing.assert_array_equal(y[:, 0], np.sign(z @ np.asarray(task.w_star[0])))


def test_orthonormal_dictionaries_refuse_more_features_than_dimensions():
    with pytest.raises(ConfigError, match="data.features=128.*sphere"):
        purify.DataConfig(d=32, features=128, dictionary="haar").validate()
    with pytest.raises(ConfigError, match="data.k=200"):
        purify.DataConfig(d=32, features=128, k=200, dictionary="sphere").validate()


def test_purity_is_one_for_a_pure_neuron_and_about_2lnD_over_d_for_a_random_one():
    M = make_dictionary("sphere", D_IN, jax.random.key(0), D_FEAT)
    W = 3.0 * M.T[:5]
    out = metrics.neuron_metrics(W, M, jnp.ones(D_FEAT))
    np.testing.assert_allclose(out["purity"], 1.0, atol=1e-5)
    np.testing.assert_allclose(out["norm"], 3.0, atol=1e-5)
    # sum_j c_ij^2 is not |w_i|^2 in superposition: dividing by it would call a pure neuron impure
    C = metrics.feature_coefficients(W, M)
    assert float(metrics.purity(C).max()) < 0.5
    W = jax.random.normal(jax.random.key(2), (4000, D_IN))
    p = float(metrics.neuron_metrics(W, M, jnp.ones(D_FEAT))["purity"].mean())
    ref = 2 * np.log(D_FEAT) / D_IN  # the largest squared cosine with D random unit directions
    assert 0.5 * ref < p < 1.5 * ref


def test_rotating_the_dictionary_rotates_the_data_and_keeps_the_feature_coefficients():
    """l2 equivariance needs no orthonormal M: with M -> Q M (Q orthogonal) the same draw gives
    x -> Q x, and C = (W Q^T)(Q M) = W M, so training from the rotated init is the rotated run."""
    cfg = overcomplete()
    task = make_task(cfg)
    Q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(5), (D_IN, D_IN)))
    rotated = task.replace(M=Q @ task.M)
    # noise-free draws (xi is isotropic, so with noise the rotation holds in law, not draw by draw)
    x, _, y = sample(jax.random.key(4), cfg, task, 512, 0.0)
    xr, _, yr = sample(jax.random.key(4), cfg, rotated, 512, 0.0)
    np.testing.assert_allclose(xr, x @ Q.T, atol=1e-5)
    np.testing.assert_array_equal(y, yr)
    W = jax.random.normal(jax.random.key(6), (16, D_IN))
    np.testing.assert_allclose(
        metrics.feature_coefficients(W @ Q.T, rotated.M), metrics.feature_coefficients(W, task.M), atol=1e-4
    )


def test_the_linear_classifier_has_no_population_closed_form_in_superposition():
    with pytest.raises(ValueError, match="orthonormal"):
        landmarks.linear_robust_accuracy(overcomplete(), 0.1)


def test_attacks_reproduce_the_linear_classifiers_exact_radius_in_superposition():
    """The per-example radius y<u, x> of f(x) = <u, x> (u = M w*/|M w*|) is exact for any M; FGM
    and the dense attack reach it. The classifier is no longer Bayes-optimal: features interfere
    with <u, x>, so it errs on clean data."""
    cfg = overcomplete()
    task = make_task(cfg)
    x, _, y = sample(jax.random.key(7), cfg, task, 20000, 0.0)
    y = y[:, 0]
    f = landmarks.linear_logits(task)
    margin = lambda v: y * f(v)
    r = np.asarray(landmarks.linear_margin(task, x, y))
    np.testing.assert_allclose(r, np.asarray(margin(x)), atol=1e-5)
    assert 0.6 < (r > 0).mean() < 0.97  # interference: clean accuracy below 1
    for tau in (0.05, 0.15, 0.3):
        near = np.abs(r - tau) < 1e-4
        for delta in (
            attacks.fgm(lambda v: -margin(v), x, tau, "l2"),
            attacks.dense_direction(y, tau, task.label_directions[0], "l2"),
        ):
            got = np.asarray(margin(x + delta) > 0)
            assert ((got != (r > tau)) & ~near).sum() == 0
