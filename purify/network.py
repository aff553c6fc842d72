"""The two-layer network f(x) = sum_i a_i phi_{b_i}(<w_i, x>) as a Flax module.

Parameters are a plain pytree {'W': (m, d), 'a': (m, T) if trained, 'b': (m,) if trainable},
so jit, vmap, scan and sharding apply directly. The hidden representation g(x) (the m unit
outputs) is exposed through `features`, for frozen-backbone and contrastive uses.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import Config, ModelConfig


def soft_threshold(u: jax.Array, b: jax.Array) -> jax.Array:
    """phi_b(u) = ReLU(u - b) - ReLU(-u - b): odd, zero on [-b, b]."""
    return jax.nn.relu(u - b) - jax.nn.relu(-u - b)


class TwoLayer(nn.Module):
    """f: (..., d) -> (..., n_out). `beta` is passed at call time so it can be swept."""

    model: ModelConfig
    z_min: float  # smallest non-zero feature magnitude; thresholds are measured in it
    d: int
    n_out: int = 1

    def setup(self):
        # Rows of W have norm ~1 here; `init_params` rescales them by hp.init_scale.
        self.W = self.param("W", nn.initializers.normal(1.0 / jnp.sqrt(self.d)), (self.model.width, self.d))
        if self.model.head == "trained":
            self.a = self.param("a", nn.initializers.normal(1.0 / jnp.sqrt(self.model.width)), (self.model.width, self.n_out))
        if self.model.bias in ("fixed", "trainable"):
            self.b = self.param("b", nn.initializers.zeros, (self.model.width,))

    def threshold(self, beta: jax.Array) -> jax.Array:
        """(m,) thresholds b_i."""
        m = self.model
        if m.bias == "relative":
            # stop_gradient: the threshold tracks the neuron's scale but is not trained through.
            return jax.lax.stop_gradient(beta * self.z_min * jnp.linalg.norm(self.W, axis=-1))
        if m.bias == "fixed":
            return jax.lax.stop_gradient(self.b)
        return jnp.maximum(self.b, 0.0)

    def head(self) -> jax.Array:
        """(m, n_out) second layer."""
        m = self.model
        if m.head == "trained":
            return self.a
        if m.activation == "soft_threshold":
            return jnp.ones((m.width, 1))
        return jnp.where(jnp.arange(m.width) % 2 == 0, 1.0, -1.0)[:, None]

    def features(self, x: jax.Array, beta: jax.Array) -> jax.Array:
        """g(x): (..., m) hidden unit outputs."""
        u = x @ self.W.T
        b = self.threshold(beta)
        if self.model.activation == "soft_threshold":
            return soft_threshold(u, b)
        return jax.nn.relu(u - b)

    def __call__(self, x: jax.Array, beta: jax.Array) -> jax.Array:
        return self.features(x, beta) @ self.head()


def build(cfg: Config) -> TwoLayer:
    return TwoLayer(model=cfg.model, z_min=cfg.data.min_magnitude, d=cfg.data.d, n_out=cfg.data.n_tasks)


def init_params(net: TwoLayer, key: jax.Array, init_scale: jax.Array, beta: jax.Array) -> dict:
    """Small Gaussian init: rows of W with norm ~init_scale; a fixed or trainable threshold
    starts at beta z_min |w_i(0)|, where the relative threshold would be."""
    params = net.init(key, jnp.zeros((1, net.d)), beta)["params"]
    params = dict(params)
    params["W"] = params["W"] * init_scale
    if "b" in params:
        params["b"] = beta * net.z_min * jnp.linalg.norm(params["W"], axis=-1)
    return params


def apply(net: TwoLayer, params: dict, x: jax.Array, beta: jax.Array) -> jax.Array:
    return net.apply({"params": params}, x, beta)


def head_of(net: TwoLayer, params: dict) -> jax.Array:
    return net.apply({"params": params}, method=TwoLayer.head)
