"""The sparse-coding data model x = M z + xi, y = sign <w*, z> (docs/science.md section 2).

Shapes: M is (d, D) with unit-norm columns M_j (the features; orthonormal when D = d and the
dictionary is not 'sphere'); w_star is (T, D), one dense label vector per task; a batch is
x (n, d), z (n, D), y (n, T) with entries in {-1, +1}.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .compilation import program
from .config import DataConfig


@struct.dataclass
class Task:
    """The random but fixed part of the data distribution: dictionary and label vectors."""

    M: jax.Array  # (d, D), columns are features
    w_star: jax.Array  # (T, D), in latent (feature) coordinates

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


def make_dictionary(kind: str, d: int, key: jax.Array, features: int | None = None) -> jax.Array:
    """M (d, D), D = features (default d). 'sphere': i.i.d. uniform unit columns (any D);
    the others are orthonormal and need D = d."""
    if kind == "sphere":
        g = jax.random.normal(key, (d, d if features is None else features))
        return g / jnp.linalg.norm(g, axis=0, keepdims=True)
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
    # One compiled program per data config: op by op, the draw compiled a dozen small programs (a
    # tenth of a REPL user's wait for a new config), with the same numbers to the bit. Not so the
    # sphere's column normalisation (a fused reduction rounds differently), which stays op by op.
    return (_draw_task if cfg.dictionary != "sphere" else _draw_task.__wrapped__)(cfg)


@functools.partial(program, static_argnums=0)
def _draw_task(cfg: DataConfig) -> Task:
    k_dict, k_label = jax.random.split(jax.random.key(cfg.task_seed), 2)
    M = make_dictionary(cfg.dictionary, cfg.d, k_dict, cfg.n_features)
    shape = (cfg.n_tasks, cfg.n_features)
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


def _active(key: jax.Array, cfg: DataConfig, n: int):
    """The non-zero part of z: signs times magnitudes, (n, k) for exact_k or (n, d) for iid."""
    k_support, k_sign, k_mag = jax.random.split(key, 3)
    D = cfg.n_features
    shape = (n, cfg.k) if cfg.sparsity == "exact_k" else (n, D)
    values = jax.random.rademacher(k_sign, shape, dtype=jnp.float32)
    if cfg.magnitude == "uniform":
        values = values * jax.random.uniform(k_mag, shape, minval=1.0, maxval=2.0) / jnp.sqrt(cfg.k)
    if cfg.sparsity == "exact_k":
        return exact_k_support(k_support, D, cfg.k, n), values
    return None, jnp.where(jax.random.uniform(k_support, shape) < cfg.k / D, values, 0.0)


def labels(key: jax.Array, z: jax.Array, w_star: jax.Array) -> jax.Array:
    """y (n, T) = sign <w*_t, z>; an exact tie (possible only with iid sparsity) gets a fair coin."""
    return _sign_with_coin(key, z @ w_star.T)


def _sign_with_coin(key: jax.Array, margin: jax.Array) -> jax.Array:
    coin = jax.random.rademacher(key, margin.shape, dtype=jnp.float32)
    return jnp.where(margin == 0, coin, jnp.sign(margin))


def sample(key: jax.Array, cfg: DataConfig, task: Task, n: int, noise: jax.Array | float, noise_free: bool = False):
    """Draw (x, z, y): x (n, d) = z M^T + xi with xi ~ N(0, noise^2/d I), z (n, D); y (n, T).

    With exact_k sparsity x and y are built from the k active features only (x = sum_i v_i
    M[:, idx_i]: 2 n k d FLOPs instead of the 2 n d^2 of z M^T; the identity dictionary needs
    none), and z is built only if the caller uses it. noise_free=True (every run of a sweep has
    noise 0) skips drawing xi, which would be multiplied by 0: the same numbers, less work.
    """
    k_z, k_xi, k_tie = jax.random.split(key, 3)
    idx, values = _active(k_z, cfg, n)
    if idx is None:
        z = values
        x, margin = z @ task.M.T, z @ task.w_star.T
    else:
        z = jnp.zeros((n, cfg.n_features)).at[jnp.arange(n)[:, None], idx].set(values)
        x = z if cfg.dictionary == "identity" else jnp.einsum("nk,nkd->nd", values, task.M.T[idx])
        margin = jnp.einsum("nk,nkt->nt", values, task.w_star.T[idx])
    if not noise_free:
        x = x + jax.random.normal(k_xi, (n, cfg.d)) * (noise / jnp.sqrt(cfg.d))
    return x, z, _sign_with_coin(k_tie, margin)


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
