"""Statistics of the sparse-coding data model against their exact values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify.data import exact_k_support, make_dictionary

N = 20000


def draw(**fields):
    data = purify.SparseCoding(**fields)
    x, z, y = data.sample(jax.random.key(1), N, noise=fields.pop("noise_", 0.0))
    return data, np.asarray(x), np.asarray(z), np.asarray(y)


@pytest.mark.parametrize("kind", ["identity", "haar", "hadamard"])
def test_dictionaries_are_orthonormal(kind):
    M = np.asarray(make_dictionary(kind, 32, jax.random.key(0)))
    np.testing.assert_allclose(M.T @ M, np.eye(32), atol=1e-5)
    if kind != "identity":  # dense columns
        assert np.abs(M).max() < 0.9


@pytest.mark.parametrize("kind", ["identity", "haar", "hadamard", "sphere"])
@pytest.mark.parametrize("label", ["rademacher", "gaussian"])
def test_task_drawn_in_one_program_equals_the_op_by_op_draw(kind, label):
    """make_task compiles its draw once per config; M and w* are the same to the bit as drawn op
    by op (the numbers every published result was computed with)."""
    cfg = purify.DataConfig(
        d=32, k=4, dictionary=kind, label=label, n_tasks=2, features=64 if kind == "sphere" else None
    )
    task = purify.make_task(cfg)
    # op by op, as make_task drew them before it was compiled
    k_dict, k_label = jax.random.split(jax.random.key(cfg.task_seed), 2)
    M = make_dictionary(kind, 32, k_dict, cfg.n_features)
    w = (
        jax.random.rademacher(k_label, (2, cfg.n_features), dtype=jnp.float32)
        if label == "rademacher"
        else jax.random.normal(k_label, (2, cfg.n_features))
    )
    np.testing.assert_array_equal(np.asarray(task.M), np.asarray(M))
    np.testing.assert_array_equal(np.asarray(task.w_star), np.asarray(w))


def test_exact_k_sparsity_and_uniform_magnitudes():
    _, _, z, _ = draw(d=32, k=4)
    nnz = (z != 0).sum(1)
    assert (nnz == 4).all()
    mags = np.abs(z[z != 0]) * 2.0  # sqrt(k) = 2
    assert mags.min() >= 1.0 and mags.max() <= 2.0
    assert abs(mags.mean() - 1.5) < 0.01
    # every coordinate equally likely to be active: 4/32 each, within 5 binomial sigmas
    p = (z != 0).mean(0)
    assert np.abs(p - 4 / 32).max() < 5 * np.sqrt(0.125 * 0.875 / N)


def test_iid_sparsity_has_mean_k():
    _, _, z, y = draw(d=32, k=4, sparsity="iid")
    nnz = (z != 0).sum(1)
    assert abs(nnz.mean() - 4) < 0.05
    assert nnz.var() > 1.0  # binomial(32, 1/8) variance 3.5, not exact-k
    assert set(np.unique(y)) == {-1.0, 1.0}  # ties get a coin, never a 0 label


def test_sign_magnitudes_give_odd_integer_margins():
    data, _, z, y = draw(d=31, k=5, magnitude="sign")
    assert set(np.unique(z)) == {-1.0, 0.0, 1.0}
    margin = z @ np.asarray(data.task.w_star[0])
    assert np.all(np.abs(margin) % 2 == 1)
    np.testing.assert_array_equal(np.sign(margin), y[:, 0])


def test_noise_norm_and_label_balance():
    data, x, z, y = draw(d=64, k=4)
    sigma = 0.5
    x_noisy, z2, _ = data.sample(jax.random.key(1), N, noise=sigma)
    xi = np.asarray(x_noisy) - np.asarray(z2) @ np.asarray(data.task.M).T
    norms2 = (xi**2).sum(1)
    assert abs(norms2.mean() - sigma**2) < 0.01  # E|xi|^2 = sigma^2
    assert abs(y.mean()) < 4 / np.sqrt(N)  # labels balanced
    np.testing.assert_allclose(x, z @ np.asarray(data.task.M).T, atol=1e-6)  # noise 0: x = M z


def test_multi_task_labels_are_independent():
    data, _, z, y = draw(d=64, k=4, n_tasks=3)
    assert y.shape == (N, 3)
    # Independent random w*'s overlap by ~1/sqrt(d); the labels correlate about that much, no more.
    w = np.asarray(data.task.w_star)
    overlap = (w @ w.T / 64)[np.triu_indices(3, 1)]
    corr = np.corrcoef(y.T)[np.triu_indices(3, 1)]
    assert np.abs(corr).max() < 0.3
    assert np.abs(corr - overlap).max() < 0.1
    np.testing.assert_array_equal(y, np.sign(z @ np.asarray(data.task.w_star).T))


def test_floyd_support_is_a_uniform_subset():
    idx = np.asarray(exact_k_support(jax.random.key(3), 6, 2, 60000))
    assert (idx[:, 0] != idx[:, 1]).all()
    pairs = np.bincount(np.sort(idx, 1) @ np.array([6, 1]), minlength=36)
    counts = pairs[pairs > 0]
    assert len(counts) == 15  # all C(6,2) pairs occur, each with probability 1/15
    assert np.abs(counts / 60000 - 1 / 15).max() < 5 * np.sqrt((1 / 15) * (14 / 15) / 60000)


def test_task_is_fixed_by_task_seed():
    a, b, c = (purify.make_task(purify.DataConfig(d=16, k=2, dictionary="haar", task_seed=s)) for s in (0, 0, 1))
    assert jnp.array_equal(a.M, b.M) and not jnp.array_equal(a.M, c.M)
