"""Low-complexity baselines trained like the network: linear, random-features polynomials, and
the NTK-linearized two-layer network (for the fp-lowcomplexity experiment).

Each is a pure `logits(params, x) -> (n,)` with initial parameters; `train` runs the same
schedule as the network (clean steps, then FGM at tau from `adv_start`) with Adam, vmapped over
seeds by the caller.

- linear: f(x) = <v, x> + c.
- polynomial of degree <= p (random-features approximation): f(x) = sum_{q=1..p} sum_j a_qj
  (<r_j, x>/s)^q with r_j ~ N(0, I/d) fixed and s the typical size of <r_j, x>; the q = 1 term
  keeps odd functions (the labels are odd in x) within reach of even p.
- quadratic (exact degree <= 2): f(x) = x^T A x + <v, x> + c, every polynomial of degree <= 2
  in x (1 + d + d(d + 1)/2 dimensions: 2145 at d = 64; A's antisymmetric part is inert), with
  no random-feature approximation.
- NTK: f_lin(x; theta) = f(x; theta0) + <grad_theta f(x; theta0), theta - theta0> for the
  two-layer network of the config at a standard-scale init (|w_i| ~ 1: the NTK regime), theta
  its first layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import attacks, network
from .config import Config
from .data import Task, sample


def linear(cfg: Config, key: jax.Array):
    params = {"v": jnp.zeros((cfg.data.d,)), "c": jnp.zeros(())}
    return params, lambda p, x: x @ p["v"] + p["c"]


def polynomial(cfg: Config, key: jax.Array, degree: int, n_features: int | None = None):
    d = cfg.data.d
    m = n_features or cfg.model.width
    R = jax.random.normal(key, (m, d)) / jnp.sqrt(d)
    scale = jnp.sqrt(1.5**2 / d)  # |x| ~ 1.5 for uniform magnitudes: <r, x> ~ N(0, |x|^2 / d)

    def features(x):
        u = (x @ R.T) / scale
        return jnp.concatenate([u**q for q in range(1, degree + 1)], axis=-1) / jnp.sqrt(m * degree)

    params = {"a": jnp.zeros((degree * m,)), "c": jnp.zeros(())}
    return params, lambda p, x: features(x) @ p["a"] + p["c"]


def quadratic(cfg: Config, key: jax.Array):
    """The exact degree <= 2 model f(x) = x^T A x / s + <v, x> + c (key unused: nothing random).

    s = the typical |x|^2 (1.5^2 for uniform magnitudes) keeps the quadratic term of order 1 at
    init scale, as the random-features polynomial's scale does.

    Returns:
      (params, logits): params {'A': (d, d), 'v': (d,), 'c': ()}, all zero; logits(params, x (n, d)) -> (n,).

    Example:
      >>> params, f = quadratic(cfg, jax.random.key(0))
      >>> f({**params, "c": jnp.ones(())}, jnp.ones((2, cfg.data.d)))
      Array([1., 1.], dtype=float32)
    """
    d = cfg.data.d
    params = {"A": jnp.zeros((d, d)), "v": jnp.zeros((d,)), "c": jnp.zeros(())}
    scale = 1.5**2

    def logits(p, x):
        return jnp.einsum("ni,ij,nj->n", x, p["A"], x) / scale + x @ p["v"] + p["c"]

    return params, logits


def ntk(cfg: Config, key: jax.Array, beta: float):
    arch = network.Architecture.of(cfg)
    theta0 = network.init_for(cfg, key, 1.0, beta)  # standard scale: rows of norm ~1

    def f(W, x):
        return network.logits(arch, {**theta0, "W": W}, x, beta)[..., 0]

    def logits(p, x):
        out, tangent = jax.jvp(lambda W: f(W, x), (theta0["W"],), (p["W"] - theta0["W"],))
        return out + tangent

    return {"W": theta0["W"]}, logits


class BaselineState(NamedTuple):
    """A baseline's training state: its parameters and Adam's state."""

    params: Any
    opt_state: Any


class Schedule:
    """The network's schedule for a baseline, as a program of the engine (`purify.engine`):
    Adam at `lr`, clean until cfg.train.adv_start, then FGM at the run's radius tau.

    model(key_init) -> (params, logits) builds the baseline (its random features drawn from
    key_init, so every call rebuilds the same model); key_data draws the minibatches.
    `init(key_init, tau)`, `advance(state, key_init, key_data, tau, t0, t1)` are pure and
    vmappable; `segments` cuts nothing (the schedule is one call)."""

    def __init__(self, cfg: Config, task: Task, model: Callable, lr: float):
        self.cfg, self.task, self.model, self.opt = cfg, task, model, optax.adam(lr)
        self.steps = cfg.train.steps

    def init(self, key_init: jax.Array) -> BaselineState:
        params, _ = self.model(key_init)
        return BaselineState(params, self.opt.init(params))

    def segments(self, start: int) -> list[tuple[int, int]]:
        return [(start, self.steps)] if start < self.steps else []

    def advance(self, state: BaselineState, key_init, key_data, tau, t0: int, t1: int) -> BaselineState:
        tc, logits = self.cfg.train, self.model(key_init)[1]

        def step(carry, t):
            p, s = carry
            x, _, y = sample(jax.random.fold_in(key_data, t), self.cfg.data, self.task, tc.batch, self.cfg.hp.noise)
            y = y[:, 0]

            def loss(p, x):
                return jax.nn.softplus(-y * logits(p, x)).mean()

            def adv(x):
                objective = lambda v: jax.nn.softplus(-y * logits(p, v))
                return x + attacks.training_delta("fgm", objective, x, tau, tc.norm, 0, None)

            x = jax.lax.cond(t >= tc.adv_start, adv, lambda x: x, x)
            g = jax.grad(loss)(p, x)
            u, s = self.opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, opt_state), _ = jax.lax.scan(step, tuple(state), jnp.arange(t0, t1))
        return BaselineState(params, opt_state)


def train(cfg: Config, task: Task, logits, params, key: jax.Array, tau: float, lr: float):
    """The whole schedule in one function: a baseline with parameters `params` and `logits`
    trained from key (its minibatches) at radius tau; returns the trained parameters."""
    schedule = Schedule(cfg, task, lambda _: (params, logits), lr)
    state = BaselineState(params, schedule.opt.init(params))
    return schedule.advance(state, None, key, tau, 0, schedule.steps).params
