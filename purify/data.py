"""The sparse-coding data model x = M z + xi, y = sign <w*, z> (SCIENCE.md section 2).

Shapes: M is (d, d) with orthonormal columns M_j (the features); w_star is (T, d), one dense
label vector per task; a batch is x (n, d), z (n, d), y (n, T) with entries in {-1, +1}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .config import DataConfig


@struct.dataclass
class Task:
    """The random but fixed part of the data distribution: dictionary and label vectors."""

    M: jax.Array  # (d, d), columns are features
    w_star: jax.Array  # (T, d), in latent (feature) coordinates

    @property
    def label_directions(self) -> jax.Array:
        """(T, d) unit vectors M w*_t / |w*_t| in input space: the dense-attack directions."""
        u = self.w_star @ self.M.T
        return u / jnp.linalg.norm(u, axis=-1, keepdims=True)


def hadamard(d: int) -> np.ndarray:
    """Orthonormal Sylvester-Hadamard matrix (d a power of two)."""
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(d)


def make_dictionary(kind: str, d: int, key: jax.Array) -> jax.Array:
    if kind == "identity":
        return jnp.eye(d)
    if kind == "hadamard":
        return jnp.asarray(hadamard(d), dtype=jnp.float32)
    # Haar measure: QR of a Gaussian, with the signs of R's diagonal folded into Q.
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def make_task(cfg: DataConfig) -> Task:
    """Draw M and w* from `cfg.task_seed`, independently of every training stream."""
    cfg.validate()
    k_dict, k_label = jax.random.split(jax.random.key(cfg.task_seed), 2)
    M = make_dictionary(cfg.dictionary, cfg.d, k_dict)
    shape = (cfg.n_tasks, cfg.d)
    if cfg.label == "rademacher":
        w = jax.random.rademacher(k_label, shape, dtype=jnp.float32)
    else:
        w = jax.random.normal(k_label, shape)
    return Task(M=M.astype(jnp.float32), w_star=w)


def exact_k_support(key: jax.Array, d: int, k: int, n: int) -> jax.Array:
    """(n, k) distinct indices, a uniform random k-subset of range(d) per row.

    Floyd's algorithm: for j = d-k .. d-1 draw t ~ U{0..j}; keep t unless already taken, then
    keep j. It needs k draws and O(k^2) comparisons, and no sort (top_k or argsort over d
    columns cost ten times the network's own step on a CPU).
    """
    u = jax.random.uniform(key, (k, n))
    chosen = []
    for i, j in enumerate(range(d - k, d)):
        t = jnp.minimum(jnp.floor(u[i] * (j + 1)).astype(jnp.int32), j)
        taken = jnp.zeros((n,), bool)
        for c in chosen:
            taken |= c == t
        chosen.append(jnp.where(taken, j, t))
    return jnp.stack(chosen, axis=-1)


def sample_latent(key: jax.Array, cfg: DataConfig, n: int) -> jax.Array:
    """z (n, d): sparse, each non-zero entry a random sign times a magnitude."""
    k_support, k_sign, k_mag = jax.random.split(key, 3)
    shape = (n, cfg.k) if cfg.sparsity == "exact_k" else (n, cfg.d)
    signs = jax.random.rademacher(k_sign, shape, dtype=jnp.float32)
    if cfg.magnitude == "uniform":
        values = signs * jax.random.uniform(k_mag, shape, minval=1.0, maxval=2.0) / jnp.sqrt(cfg.k)
    else:
        values = signs
    if cfg.sparsity == "exact_k":
        idx = exact_k_support(k_support, cfg.d, cfg.k, n)
        return (jax.nn.one_hot(idx, cfg.d) * values[..., None]).sum(1)
    return jnp.where(jax.random.uniform(k_support, shape) < cfg.k / cfg.d, values, 0.0)


def labels(key: jax.Array, z: jax.Array, w_star: jax.Array) -> jax.Array:
    """y (n, T) = sign <w*_t, z>; an exact tie (possible only with iid sparsity) gets a fair coin."""
    margin = z @ w_star.T
    coin = jax.random.rademacher(key, margin.shape, dtype=jnp.float32)
    return jnp.where(margin == 0, coin, jnp.sign(margin))


def sample(key: jax.Array, cfg: DataConfig, task: Task, n: int, noise: jax.Array | float):
    """Draw (x, z, y): x (n, d) = z M^T + xi with xi ~ N(0, noise^2/d I); y (n, T)."""
    k_z, k_xi, k_tie = jax.random.split(key, 3)
    z = sample_latent(k_z, cfg, n)
    xi = jax.random.normal(k_xi, (n, cfg.d)) * (noise / jnp.sqrt(cfg.d))
    return z @ task.M.T + xi, z, labels(k_tie, z, task.w_star)


class SparseCoding:
    """A data model a person can hold in a REPL: config plus its drawn dictionary and labels.

    >>> data = SparseCoding(d=64, k=4, dictionary="haar")
    >>> x, z, y = data.sample(jax.random.key(0), 512, noise=0.1)
    """

    def __init__(self, cfg: DataConfig | None = None, **fields):
        self.cfg = cfg if cfg is not None else DataConfig(**fields)
        self.task = make_task(self.cfg)

    def sample(self, key: jax.Array, n: int, noise: float = 0.0):
        return sample(key, self.cfg, self.task, n, noise)

    def __repr__(self) -> str:
        return f"SparseCoding({self.cfg})"
