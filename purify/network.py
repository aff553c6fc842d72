"""The two-layer network f(x) = sum_i a_i phi_{b_i}(<w_i, x>), defined once (docs/science.md section 2).

Every part of the toolkit that evaluates the model (training, evaluation, downstream heads on
a frozen backbone, the [REP] bounds, the experiments) calls the pure functions of this module
with the network's parameters exactly as they are saved:

    'W' (m, d)   first layer, always
    'a' (m, T)   second layer, when model.head = 'trained' (otherwise fixed, see `head`)
    'b' (m,)     thresholds, when model.bias = 'fixed' or 'trainable'
    'U' (m, r), 'V' (r, d)   a low-rank update: the network sees W + U V
    'db' (m,)    a threshold offset added to every mode's thresholds (bias-only fine-tuning),
                 clipped so that b + db >= 0

The threshold rules (with z_min the smallest non-zero feature magnitude, beta a fraction of it):

    relative   b_i = beta z_min |w_i|, no gradient through it (the default: the threshold
               tracks the neuron's scale, so detecting one feature beats summing many)
    fixed      b_i = the saved 'b', frozen (initialized where the relative rule would be)
    trainable  b_i = max('b', 0), trained

The unit is phi_b(u) = ReLU(u - b) - ReLU(-u - b) (odd soft threshold, the papers' unit) or,
as an ablation, ReLU(u - b).
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import Config, ModelConfig

# The axes of each saved parameter, after any leading run axes.
PARAM_AXES = {
    "W": ("neuron", "input"),
    "a": ("neuron", "task"),
    "b": ("neuron",),
    "U": ("neuron", "rank"),
    "V": ("rank", "input"),
    "db": ("neuron",),
}


@dataclass(frozen=True)
class Architecture:
    """The static part of the model: which unit, which threshold rule, which second layer, and
    the feature magnitude z_min thresholds are measured in. Hashable: it keys compiled programs."""

    activation: str = "soft_threshold"
    bias: str = "relative"
    head: str = "fixed"
    z_min: float = 0.5

    @classmethod
    def of(cls, cfg: Config) -> Architecture:
        m: ModelConfig = cfg.model
        return cls(m.activation, m.bias, m.head, float(cfg.data.min_magnitude))


def soft_threshold(u: jax.Array, b: jax.Array) -> jax.Array:
    """phi_b(u) = ReLU(u - b) - ReLU(-u - b): odd, zero on [-b, b], slope 1 outside."""
    return jax.nn.relu(u - b) - jax.nn.relu(-u - b)


def unit(activation: str, u: jax.Array, b: jax.Array) -> jax.Array:
    """The hidden unit applied to pre-activations u (..., m) with thresholds b (m,)."""
    if activation == "soft_threshold":
        return soft_threshold(u, b)
    return jax.nn.relu(u - b)


def effective_weights(params: dict) -> jax.Array:
    """(m, d) the first layer the network sees: W, or W + U V under a low-rank update."""
    if "U" not in params:
        return params["W"]
    return params["W"] + params["U"] @ params["V"]


def relative_threshold(W: jax.Array, beta: jax.Array, z_min: float) -> jax.Array:
    """(m,) beta z_min |w_i|, without gradient: the relative rule, also the fixed rule's start."""
    return jax.lax.stop_gradient(beta * z_min * jnp.linalg.norm(W, axis=-1))


def thresholds(arch: Architecture, params: dict, beta: jax.Array) -> jax.Array:
    """(m,) thresholds b_i under the architecture's rule (see module docstring); with an offset
    'db', max(b_i + db_i, 0): thresholds stay >= 0, as the certified bound of
    `purify.representation` assumes."""
    if arch.bias == "relative":
        b = relative_threshold(effective_weights(params), beta, arch.z_min)
    elif arch.bias == "fixed":
        b = jax.lax.stop_gradient(params["b"])
    else:
        b = jnp.maximum(params["b"], 0.0)
    if "db" in params:  # an offset never makes a threshold negative (the unit stays a dead zone)
        b = jnp.maximum(b + params["db"], 0.0)
    return b


def head(arch: Architecture, params: dict) -> jax.Array:
    """(m, T) second layer: trained 'a', or fixed: all ones (soft threshold; an odd unit needs
    no sign) or alternating +-1 (ReLU ablation, so that both signs of the label can be fit)."""
    if arch.head == "trained":
        return params["a"]
    m = params["W"].shape[0]
    if arch.activation == "soft_threshold":
        return jnp.ones((m, 1))
    return jnp.where(jnp.arange(m) % 2 == 0, 1.0, -1.0)[:, None]


def hidden(arch: Architecture, params: dict, x: jax.Array, beta: jax.Array) -> jax.Array:
    """g(x): (..., m) hidden unit outputs phi_{b_i}(<w_i, x>) of inputs x (..., d)."""
    return unit(arch.activation, x @ effective_weights(params).T, thresholds(arch, params, beta))


def logits(arch: Architecture, params: dict, x: jax.Array, beta: jax.Array) -> jax.Array:
    """f(x): (..., T) = g(x) @ head."""
    return hidden(arch, params, x, beta) @ head(arch, params)


class _Parameters(nn.Module):
    """Declares the parameters and their initializers; Flax derives each one's random key."""

    width: int
    d: int
    n_out: int
    arch: Architecture

    def setup(self):
        # Rows of W have norm ~1 here; `init_params` rescales them by the run's init_scale.
        self.W = self.param("W", nn.initializers.normal(1.0 / jnp.sqrt(self.d)), (self.width, self.d))
        if self.arch.head == "trained":
            self.a = self.param("a", nn.initializers.normal(1.0 / jnp.sqrt(self.width)), (self.width, self.n_out))
        if self.arch.bias in ("fixed", "trainable"):
            self.b = self.param("b", nn.initializers.zeros, (self.width,))

    def __call__(self, x):
        return x @ self.W.T


def init_params(
    arch: Architecture, key: jax.Array, width: int, d: int, n_out: int, init_scale: jax.Array, beta: jax.Array
) -> dict:
    """Small Gaussian init: rows of W with norm ~init_scale; a fixed or trainable threshold
    starts at beta z_min |w_i(0)|, where the relative threshold would be."""
    params = dict(_Parameters(width, d, n_out, arch).init(key, jnp.zeros((1, d)))["params"])
    params["W"] = params["W"] * init_scale
    if "b" in params:
        params["b"] = beta * arch.z_min * jnp.linalg.norm(params["W"], axis=-1)
    return params


def init_for(cfg: Config, key: jax.Array, init_scale: jax.Array, beta: jax.Array) -> dict:
    """`init_params` with the shapes and architecture of a config."""
    return init_params(Architecture.of(cfg), key, cfg.model.width, cfg.data.d, cfg.data.n_tasks, init_scale, beta)


def backbone_params(params: dict) -> dict:
    """The parameters that define the hidden representation g (the head 'a' dropped), e.g. the
    final parameters of a pre-training run taken as a frozen backbone."""
    return {k: v for k, v in params.items() if k != "a"}
