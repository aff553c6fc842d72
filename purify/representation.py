"""Representation robustness of the two-layer network (docs/science.md section 3, [REP]).

The representation is the network's hidden layer g(x) = phi_b(W x) in R^m
(`purify.network.hidden`; phi_b monotone and 1-Lipschitz, thresholds b fixed by the weights).
Every function here takes the network's `Architecture` and its parameters as saved. Its shift
at radius eps is Delta_eps(g; x) = sup_{|delta| <= eps} |g(x + delta) - g(x)|_2.

- `shift_attack`: a lower bound, PGD ascent on |g(x + delta) - g(x)|^2 from a random start (its
  gradient is exactly zero at delta = 0).
- `certified_shift`: an upper bound, the smaller of an interval bound (unit i's pre-activation
  moves by at most r_i = eps |w_i|_*, and phi_b is monotone, so |Delta g_i| <= c_i =
  max(|phi(u_i + r_i) - phi(u_i)|, |phi(u_i - r_i) - phi(u_i)|); |Delta g| <= |c|) and a spectral
  bound (phi_b is 1-Lipschitz and only the units with c_i > 0 can move: |Delta g| <= |W_A|_2 eps,
  times sqrt(d) in l-inf).
- `rep_bounds`: for a binary linear head f = <v, g>, the per-sample loss bound
  sup_delta l(x + delta) - l(x) <= |v| Delta_eps(g; x) (softplus is 1-Lipschitz) and the
  criterion: the prediction cannot change if Delta_eps(g; x) < |f(x)| / |v|.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import attacks, network
from .network import Architecture


def shift_attack(
    arch: Architecture, params: dict, beta, x, eps, norm: str, key: jax.Array, steps: int = 20, restarts: int = 2
) -> jax.Array:
    """(n,) the largest |g(x + delta) - g(x)| PGD finds (a lower bound on Delta_eps)."""
    g0 = network.hidden(arch, params, x, beta)

    def objective(v):
        return ((network.hidden(arch, params, v, beta) - g0) ** 2).sum(-1)

    delta = attacks.pgd(objective, x, eps, norm, steps, key=key, restarts=restarts)
    return jnp.sqrt(objective(x + delta))


def certified_shift(arch: Architecture, params: dict, beta, x, eps, norm: str) -> jax.Array:
    """(n,) an upper bound on Delta_eps(g; x): min(interval bound, spectral bound)."""
    W, b = network.effective_weights(params), network.thresholds(arch, params, beta)
    phi = lambda u: network.unit(arch.activation, u, b)
    u = x @ W.T
    r = eps * (jnp.linalg.norm(W, axis=-1) if norm == "l2" else jnp.abs(W).sum(-1))
    g = phi(u)
    c = jnp.maximum(jnp.abs(phi(u + r) - g), jnp.abs(phi(u - r) - g))
    interval = jnp.linalg.norm(c, axis=-1)
    scale = 1.0 if norm == "l2" else jnp.sqrt(W.shape[1])

    def spectral_one(active):
        return jnp.linalg.norm(W * active[:, None], ord=2) * eps * scale

    spectral = jax.vmap(spectral_one)((c > 0).astype(W.dtype))
    return jnp.minimum(interval, spectral)


def rep_bounds(shift: jax.Array, f: jax.Array, y: jax.Array, v: jax.Array) -> dict[str, jax.Array]:
    """Per sample, for a binary head f = <v, g> with labels y in {-1, +1}:
    'loss_bound' = |v| shift (bounds sup l(x + delta) - l(x)); 'certified' = shift < |f| / |v|
    (the prediction cannot change); 'correct_and_certified' = that and y f > 0."""
    vn = jnp.linalg.norm(v)
    certified = shift < jnp.abs(f) / vn
    return {"loss_bound": vn * shift, "certified": certified, "correct_and_certified": certified & (y * f > 0)}


def per_sample_report(
    arch: Architecture,
    params: dict,
    beta,
    v,
    c,
    x,
    y,
    eps,
    norm: str,
    key: jax.Array,
    pgd_steps: int = 10,
    restarts: int = 2,
    u: jax.Array | None = None,
) -> dict:
    """Every [REP] quantity per sample for the binary model f = <v, g(x)> + c, g the hidden layer
    of the network (arch, params) at threshold fraction beta.

    x (n, d), y (n,) in {-1, +1}; u: the unit dense-attack direction (omit to skip that attack).
    Returns (n,) arrays: 'shift_attack' (a lower bound on Delta_eps), 'shift_certified' (an upper
    bound), 'loss_increase' (the largest l(x + delta) - l(x) over FGM, PGD and the dense attack on
    the loss, a lower bound on the sup), 'loss_bound' (|v| times the certified shift: must never be
    below 'loss_increase'), 'certified' (the criterion with the certified shift, correct samples
    only), 'robust' (correct under every attack) and 'margin' |f(x)| / |v|.
    """
    k_shift, k_pgd = jax.random.split(key)
    f = lambda z: network.hidden(arch, params, z, beta) @ v + c
    fx = f(x)
    adversary = lambda z: -y * f(z)
    deltas = [
        attacks.fgm(adversary, x, eps, norm),
        attacks.pgd(adversary, x, eps, norm, pgd_steps, key=k_pgd, restarts=restarts),
    ]
    if u is not None:
        deltas.append(attacks.dense_direction(y, eps, u, norm))
    loss = lambda z: jax.nn.softplus(-y * f(z))
    ell = loss(x)
    increase = jnp.max(jnp.stack([loss(x + d) - ell for d in deltas]), axis=0)
    robust = (y * fx > 0) & jnp.all(jnp.stack([y * f(x + d) > 0 for d in deltas]), axis=0)
    lower = shift_attack(arch, params, beta, x, eps, norm, k_shift, steps=2 * pgd_steps, restarts=restarts)
    upper = certified_shift(arch, params, beta, x, eps, norm)
    bounds = rep_bounds(upper, fx, y, v)
    return {
        "shift_attack": lower,
        "shift_certified": upper,
        "loss_increase": increase,
        "loss_bound": bounds["loss_bound"],
        "certified": bounds["correct_and_certified"],
        "robust": robust,
        "margin": jnp.abs(fx) / jnp.linalg.norm(v),
    }
