"""Per-neuron feature-mixture metrics (docs/science.md section 3).

All functions take the first layer W (m, d), the dictionary M (d, D) and, where needed, a
label vector w* (D,) in feature coordinates. Feature coefficients are C = W M, c_ij = <w_i, M_j>
(m, D). When M is orthonormal, sum_j c_ij^2 = |w_i|^2; for an over-complete dictionary (D > d,
unit-norm columns) it is not, so purity divides by |w_i|^2 itself: p_i is then the squared
cosine between w_i and its closest feature, still 1 exactly for a pure neuron.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_EPS = 1e-30


def feature_coefficients(W: jax.Array, M: jax.Array) -> jax.Array:
    """C (m, d) = W M."""
    return W @ M


def purity(C: jax.Array, norm_sq: jax.Array | None = None) -> jax.Array:
    """p_i = max_j c_ij^2 / |w_i|^2 (m,): 1 for a pure neuron, ~2 ln D / d for a random one.

    norm_sq (m,) = |w_i|^2; None takes sum_j c_ij^2, which equals it when M is orthonormal."""
    sq = C**2
    return sq.max(-1) / jnp.maximum(sq.sum(-1) if norm_sq is None else norm_sq, _EPS)


def features_per_neuron(C: jax.Array, gamma: float = 0.5) -> jax.Array:
    """n_i = #{j : |c_ij| >= gamma max_j |c_ij|} (m,)."""
    a = jnp.abs(C)
    return (a >= gamma * a.max(-1, keepdims=True)).sum(-1).astype(jnp.float32)


def participation_ratio(C: jax.Array) -> jax.Array:
    """(sum_j c_ij^2)^2 / sum_j c_ij^4 (m,): the effective number of features of a neuron."""
    sq = C**2
    return sq.sum(-1) ** 2 / jnp.maximum((sq**2).sum(-1), _EPS)


def coherence(C: jax.Array, w_star: jax.Array) -> jax.Array:
    """rho_i = |<w_i, M w*>| / (|w*| max_j |c_ij|) (m,): the neuron's dense mixture along the
    label direction, relative to its main feature. A pure neuron has rho ~ 1/sqrt(d)."""
    along = jnp.abs(C @ w_star) / jnp.linalg.norm(w_star)
    return along / jnp.maximum(jnp.abs(C).max(-1), _EPS)


def mixture_alignment(C: jax.Array, sign: jax.Array) -> jax.Array:
    """Mean pairwise cosine of the neurons' dense mixtures (scalar).

    A neuron's mixture is its coefficient row with the main feature removed, multiplied by the
    sign of its output weight (an odd unit (w, a) equals (-w, -a)). About 0 when mixtures are
    independent, 1 when every neuron carries the same mixture: what a dense attack exploits.
    """
    top = jnp.argmax(jnp.abs(C), axis=-1)
    r = C * (1.0 - jax.nn.one_hot(top, C.shape[-1])) * sign[:, None]
    n = jnp.linalg.norm(r, axis=-1, keepdims=True)
    unit = jnp.where(n > 0, r / jnp.maximum(n, _EPS), 0.0)
    live = (n[:, 0] > 0).sum()
    total = unit.sum(0)
    return (total @ total - live) / jnp.maximum(live * (live - 1), 1)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum_i w_i v_i / sum_i w_i over the last axis; used with w_i = |w_i| (norm-weighted)."""
    return (values * weights).sum(-1) / jnp.maximum(weights.sum(-1), _EPS)


def weighted_purity(W: jax.Array, M: jax.Array) -> jax.Array:
    """Norm-weighted mean purity sum_i |w_i| p_i / sum_i |w_i| of each first layer in W.

    Args:
      W: first layers (..., m, d), any leading axes (seeds, hyper-parameters, snapshots).
      M: the dictionary (d, D).

    Returns:
      (...,): one number per first layer, in [1/D, 1]; neurons that never grew weigh little.

    Example:
      >>> weighted_purity(jnp.eye(3), jnp.eye(3))  # three pure neurons
      Array(1., dtype=float32)
    """
    norm_sq = (W**2).sum(-1)
    # `** 0.5`, not jnp.sqrt: NumPy input keeps NumPy's sums, as the committed records were computed
    return weighted_mean(purity(feature_coefficients(W, M), norm_sq), norm_sq**0.5)


def neuron_metrics(W: jax.Array, M: jax.Array, w_star: jax.Array) -> dict[str, jax.Array]:
    """Per-neuron (m,) arrays: norm, purity, features per neuron, participation ratio, rho."""
    C = feature_coefficients(W, M)
    norm_sq = (W**2).sum(-1)
    return {
        "norm": jnp.sqrt(norm_sq),
        "purity": purity(C, norm_sq),
        "features": features_per_neuron(C),
        "participation": participation_ratio(C),
        "rho": coherence(C, w_star),
    }


def cosine(u: jax.Array, v: jax.Array) -> jax.Array:
    return (u * v).sum(-1) / jnp.maximum(jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1), _EPS)


def principle(W: jax.Array, W_adv: jax.Array, W_init: jax.Array) -> dict[str, jax.Array]:
    """The purification-principle decomposition w_i = beta_i w'_i + v_i (docs/science.md section 3).

    W: clean weights, W_adv: weights after adversarial training started from W, W_init: the
    initial weights, all (m, d). Returns per-neuron beta, |beta w'|, |v|, cos(w, w0),
    cos(w', w0) and the fraction of neurons with |beta_i w'_i| > |v_i| (the principle).
    """
    beta = (W * W_adv).sum(-1) / jnp.maximum((W_adv**2).sum(-1), _EPS)
    along = beta[:, None] * W_adv
    v = W - along
    along_norm, v_norm = jnp.linalg.norm(along, axis=-1), jnp.linalg.norm(v, axis=-1)
    return {
        "beta": beta,
        "along_norm": along_norm,
        "residual_norm": v_norm,
        "holds_fraction": (along_norm > v_norm).mean(),
        "cos_clean_init": cosine(W, W_init),
        "cos_adv_init": cosine(W_adv, W_init),
    }
