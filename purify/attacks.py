"""Norm-bounded attacks on a batch: FGM, PGD and the dense-direction attack, in l2 and l-inf.

An attack maximizes a per-example `objective(x) -> (n,)` (for a classifier, -y f(x): the same
ascent direction as the logistic loss softplus(-y f), without its gradient underflowing at
large margins). Per-example gradients come from the gradient of the batch sum, which is exact
because examples do not interact. Every returned delta satisfies ||delta|| <= tau.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

Objective = Callable[[jax.Array], jax.Array]
ATTACK_NAMES = ("fgm", "pgd", "dense")


def _row_norm(v: jax.Array) -> jax.Array:
    return jnp.linalg.norm(v, axis=-1, keepdims=True)


def direction(g: jax.Array, norm: str) -> jax.Array:
    """Steepest-ascent unit direction: g/||g||_2 (l2; 0 where g = 0) or sign(g) (l-inf)."""
    if norm == "l2":
        n = _row_norm(g)
        return jnp.where(n > 0, g / jnp.where(n > 0, n, 1.0), 0.0)
    return jnp.sign(g)


def project(delta: jax.Array, tau: jax.Array, norm: str) -> jax.Array:
    """Euclidean projection onto the radius-tau ball of the norm."""
    if norm == "l2":
        n = _row_norm(delta)
        return delta * jnp.minimum(1.0, tau / jnp.where(n > 0, n, 1.0))
    return jnp.clip(delta, -tau, tau)


def input_grad(objective: Objective, x: jax.Array) -> jax.Array:
    return jax.grad(lambda v: objective(v).sum())(x)


def fgm(objective: Objective, x: jax.Array, tau: jax.Array, norm: str) -> jax.Array:
    """One step of size tau along the steepest-ascent direction: delta = tau g/||g|| or tau sign g."""
    return tau * direction(input_grad(objective, x), norm)


def random_start(key: jax.Array, shape, tau: jax.Array, norm: str) -> jax.Array:
    """A point uniform in the radius-tau ball."""
    if norm == "l2":
        k_dir, k_rad = jax.random.split(key)
        g = jax.random.normal(k_dir, shape)
        r = jax.random.uniform(k_rad, shape[:-1] + (1,)) ** (1.0 / shape[-1])
        return tau * r * direction(g, "l2")
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0) * tau


def pgd(
    objective: Objective,
    x: jax.Array,
    tau: jax.Array,
    norm: str,
    steps: int,
    key: jax.Array | None = None,
    restarts: int = 1,
    step_size: jax.Array | None = None,
) -> jax.Array:
    """Projected gradient ascent; per example, the restart with the largest objective wins.

    key=None means no random start (then restarts must be 1). step_size defaults to
    2.5 tau / steps. With steps=1, step_size=tau and no random start this is exactly FGM.
    """
    if key is None and restarts != 1:
        raise ValueError(f"restarts={restarts} needs a key for random starts")
    alpha = 2.5 * tau / steps if step_size is None else step_size

    def one_run(r):
        delta = jnp.zeros_like(x) if key is None else random_start(jax.random.fold_in(key, r), x.shape, tau, norm)

        def step(_, delta):
            g = input_grad(objective, x + delta)
            return project(delta + alpha * direction(g, norm), tau, norm)

        delta = jax.lax.fori_loop(0, steps, step, delta)
        return delta, objective(x + delta)

    def restart(r, best):
        best_delta, best_obj = best
        delta, obj = one_run(r)
        better = (obj > best_obj)[:, None]
        return jnp.where(better, delta, best_delta), jnp.maximum(obj, best_obj)

    first = one_run(0)
    if restarts == 1:
        return first[0]
    return jax.lax.fori_loop(1, restarts, restart, first)[0]


def dense_direction(y: jax.Array, tau: jax.Array, u: jax.Array, norm: str) -> jax.Array:
    """delta = -y tau u (l2, u the unit label direction M w*/|w*|) or -y tau sign(u) (l-inf)."""
    v = u if norm == "l2" else jnp.sign(u)
    return -y[:, None] * tau * v[None, :]


@dataclass(frozen=True)
class EvalSpec:
    """How robust accuracy is measured: the radii (a static tuple), the norm, and PGD's steps and
    random restarts. Hashable, so it is a static argument of compiled programs."""

    taus: tuple[float, ...] = (0.25,)
    norm: str = "l2"
    pgd_steps: int = 10
    restarts: int = 1


def attacked_correct(
    margin: Objective, x: jax.Array, y: jax.Array, tau: jax.Array, u: jax.Array, key: jax.Array, spec: EvalSpec
) -> tuple[jax.Array, jax.Array]:
    """Clean correctness (n,) and correctness under each of ATTACK_NAMES (3, n) at radius tau.

    `margin(x)` is y f(x) for one task's labels y (n,); u is the unit dense-attack direction.
    The robust prediction of example i is correct iff clean[i] and all(attacked[:, i]): robust
    accuracy is the minimum over attacks.
    """
    adversary = lambda v: -margin(v)
    deltas = (
        fgm(adversary, x, tau, spec.norm),
        pgd(adversary, x, tau, spec.norm, spec.pgd_steps, key=key, restarts=spec.restarts),
        dense_direction(y, tau, u, spec.norm),
    )
    clean = margin(x) > 0
    return clean, jnp.stack([margin(x + d) > 0 for d in deltas])


def robust_accuracy(
    margin: Objective, x: jax.Array, y: jax.Array, u: jax.Array, key: jax.Array, spec: EvalSpec
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Clean accuracy (), robust accuracy (radius,) and accuracy under each attack (radius, attack).

    Robust accuracy at tau is the fraction of examples correct clean and under every attack of
    ATTACK_NAMES: the minimum over attacks, taken per example. Radius i uses fold_in(key, i).
    """
    robust, by_attack = [], []
    clean = margin(x) > 0
    for i, tau in enumerate(spec.taus):
        _, hit = attacked_correct(margin, x, y, tau, u, jax.random.fold_in(key, i), spec)
        robust.append((clean & hit.all(0)).mean())
        by_attack.append(hit.mean(-1))
    return clean.mean(), jnp.stack(robust), jnp.stack(by_attack)
