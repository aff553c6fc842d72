import pytest

"""Low-complexity baselines: the NTK model's attack against its closed form, a known polynomial fit."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

import purify
from purify import attacks, baselines
from purify.data import sample

from .conftest import tiny


@pytest.mark.slow
def test_fgm_on_the_ntk_model_matches_its_closed_form_where_it_is_linear():
    """Where no unit crosses a threshold, f_lin(x + delta) = f_lin(x) + <g, delta>: FGM at a small
    radius lowers every margin by exactly tau |g|."""
    cfg = tiny(**{"data.d": 32, "data.k": 4, "model.width": 64})
    theta0, logits = baselines.ntk(cfg, jax.random.key(0), beta=0.6)
    params = {
        "W": theta0["W"] + 0.05 * jax.random.normal(jax.random.key(1), theta0["W"].shape)
    }  # a trained-looking theta
    task = purify.make_task(cfg.data)
    x, _, y = sample(jax.random.key(2), cfg.data, task, 256, 0.0)
    y = y[:, 0]
    margin = lambda v: y * logits(params, v)
    g = attacks.input_grad(lambda v: logits(params, v), x)
    tau = 1e-3
    after = margin(x + attacks.fgm(lambda v: -margin(v), x, tau, "l2"))
    expected = margin(x) - tau * jnp.linalg.norm(g, axis=-1)
    # linear in x unless some unit's pre-activation <w0_i, x> is within tau |w0_i| of a kink at +-b_i
    W0 = theta0["W"]
    norms = jnp.linalg.norm(W0, axis=-1)
    b = 0.6 * cfg.data.min_magnitude * norms
    linear_here = jnp.all(jnp.abs(jnp.abs(x @ W0.T) - b) > tau * norms, axis=-1)
    assert float(linear_here.mean()) > 0.5
    # compare the decrease itself (tau |g| ~ 1e-3), not the margins: a do-nothing attack must fail
    decrease, predicted = margin(x) - after, margin(x) - expected
    np.testing.assert_allclose(decrease[linear_here], predicted[linear_here], rtol=2e-2)
    assert float(predicted.min()) > 0


def _xor_accuracy(params, logits) -> float:
    """Training accuracy after 300 Adam steps on y = sign(x_0 x_1), x ~ N(0, I_8)."""
    x = jax.random.normal(jax.random.key(0), (4096, 8))
    y = jnp.sign(x[:, 0] * x[:, 1])
    opt = optax.adam(0.05)
    state = opt.init(params)
    step = jax.jit(lambda p, s: opt.update(jax.grad(lambda p: jax.nn.softplus(-y * logits(p, x)).mean())(p), s, p))
    for _ in range(300):
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
    return float((jnp.sign(logits(params, x)) == y).mean())


def test_polynomial_baseline_fits_xor_labels_that_a_linear_model_cannot():
    cfg = tiny(**{"data.d": 8, "data.k": 2, "train.steps": 1500, "train.adv_start": 1500, "train.batch": 256})
    acc_poly = _xor_accuracy(*baselines.polynomial(cfg, jax.random.key(1), degree=2, n_features=256))
    acc_lin = _xor_accuracy(*baselines.linear(cfg, jax.random.key(1)))
    assert acc_poly > 0.9, acc_poly
    assert acc_lin < 0.6, acc_lin


def test_the_quadratic_model_spans_exactly_the_polynomials_of_degree_two():
    """Its logits are linear in its parameters; their Jacobian over many inputs has rank
    1 + d + d(d + 1)/2 (the monomials of degree <= 2), and it fits a random quadratic exactly."""
    d = 6
    cfg = tiny(**{"data.d": d, "data.k": 2})
    params, f = baselines.quadratic(cfg, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (400, d))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    J = np.asarray(jax.jacobian(lambda theta: f(unravel(theta), x))(flat), np.float64)
    assert np.linalg.matrix_rank(J, tol=1e-6 * np.abs(J).max()) == 1 + d + d * (d + 1) // 2
    B = np.asarray(jax.random.normal(jax.random.key(2), (d, d)))
    target = np.einsum("ni,ij,nj->n", np.asarray(x), B, np.asarray(x)) + np.asarray(x) @ np.arange(d) - 1.0
    coef, *_ = np.linalg.lstsq(J, target, rcond=None)
    np.testing.assert_allclose(J @ coef, target, atol=1e-6 * np.abs(target).max())
    # the random-features polynomial of degree 2 spans at most 2 m directions, not all of them
    p0, g = baselines.polynomial(cfg, jax.random.key(0), degree=2, n_features=4)
    flat_p, unravel_p = jax.flatten_util.ravel_pytree(p0)
    Jp = np.asarray(jax.jacobian(lambda theta: g(unravel_p(theta), x))(flat_p), np.float64)
    assert np.linalg.matrix_rank(Jp) <= 2 * 4 + 1 < 1 + d + d * (d + 1) // 2


def test_the_quadratic_model_fits_xor_labels():
    cfg = tiny(**{"data.d": 8, "data.k": 2})
    assert _xor_accuracy(*baselines.quadratic(cfg, jax.random.key(1))) > 0.95


def test_baseline_training_runs_the_schedule():
    cfg = tiny()
    task = purify.make_task(cfg.data)
    params, logits = baselines.linear(cfg, jax.random.key(0))
    clean = baselines.train(cfg, task, logits, params, jax.random.key(1), 0.0, 0.05)
    adv = baselines.train(cfg, task, logits, params, jax.random.key(1), 0.3, 0.05)
    u = task.label_directions[0]
    cos = lambda p: float(p["v"] @ u / jnp.linalg.norm(p["v"]))
    assert cos(clean) > 0.5  # the linear model learns the label direction
    assert not np.allclose(clean["v"], adv["v"])  # the FGM phase changed training
