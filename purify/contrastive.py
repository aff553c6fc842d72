"""Contrastive pre-training objectives and views (docs/science.md section 2, [INH]).

Two views of a batch share z and differ in their noise and masks; the positive of anchor i is
view 2 of sample i and its negatives are view 2 of every other sample in the batch. Losses are
per anchor, so that an attack on view 1 (which maximizes the anchor's loss) has exact
per-example gradients: anchor i's loss depends on view-1 row i only.

Shapes: g1, g2 are (n, m) representations of the two views; the losses return (n,).

- InfoNCE with temperature t on cosine similarities s_ij = <h1_i, h2_j>, h = g / |g|:
  l_i = -s_ii / t + log sum_j exp(s_ij / t).
- Spectral contrastive loss (HaoChen et al. 2021), on the raw representations:
  l_i = -2 <g1_i, g2_i> + 1/(n - 1) sum_{j != i} <g1_i, g2_j>^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

OBJECTIVES = ("infonce", "spectral")
# |g| below this counts as the zero representation: its cosine similarities are 0, not NaN.
_TINY = 1e-12


def _unit(g: jax.Array) -> jax.Array:
    sq = (g**2).sum(-1, keepdims=True)
    return jnp.where(sq > _TINY, g / jnp.sqrt(jnp.where(sq > _TINY, sq, 1.0)), 0.0)


def infonce(g1: jax.Array, g2: jax.Array, temperature: float | jax.Array) -> jax.Array:
    """(n,) per-anchor InfoNCE loss of view 1 against the batch of view 2 (cosine similarity)."""
    s = _unit(g1) @ _unit(g2).T / temperature
    return -jnp.diagonal(s) + jax.nn.logsumexp(s, axis=-1)


def spectral(g1: jax.Array, g2: jax.Array) -> jax.Array:
    """(n,) per-anchor spectral contrastive loss: -2 <g1_i, g2_i> + mean_{j != i} <g1_i, g2_j>^2."""
    n = g1.shape[0]
    s = g1 @ g2.T
    off = (s**2).sum(-1) - jnp.diagonal(s) ** 2
    return -2 * jnp.diagonal(s) + off / max(n - 1, 1)


def loss(kind: str, g1: jax.Array, g2: jax.Array, temperature: float | jax.Array) -> jax.Array:
    if kind == "infonce":
        return infonce(g1, g2, temperature)
    if kind == "spectral":
        return spectral(g1, g2)
    raise ValueError(f"objective={kind!r} is not allowed: must be one of {OBJECTIVES}")


def views(key: jax.Array, x: jax.Array, noise: jax.Array | float, mask: float) -> tuple[jax.Array, jax.Array]:
    """Two views of clean inputs x (n, d): each adds its own N(0, noise^2/d I) and zeroes every
    coordinate independently with probability `mask` (no masking at 0)."""
    d = x.shape[-1]
    out = []
    for k in jax.random.split(key, 2):
        k_noise, k_mask = jax.random.split(k)
        v = x + jax.random.normal(k_noise, x.shape) * (noise / jnp.sqrt(d))
        if mask > 0:
            v = jnp.where(jax.random.uniform(k_mask, x.shape) < mask, 0.0, v)
        out.append(v)
    return out[0], out[1]
