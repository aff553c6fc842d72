"""Analytic landmarks (docs/science.md section 4): the best linear classifier and the oracle pure net.

The best linear classifier is f(x) = <u, x> with u = M w*/|w*|. Its l2 robust radius on an
example is y <u, x> (its margin, which FGM, PGD and the dense attack all reach exactly), so
its robust accuracy at tau is P(y <u, x> > tau). Without noise, with Rademacher w* and exact-k
supports, <w*, z> = sum of k terms eps_j m_j (eps Rademacher, m the magnitudes), and |w*| =
sqrt(d): the population value has a closed form for both magnitude modes (below).

With an over-complete dictionary ('sphere', D > d) the per-example radius y <u, x> is still exact
for this classifier (a hyperplane's distance), but <u, x> is no longer <w*, z>/|w*|: features
interfere, the classifier is no longer Bayes-optimal (clean accuracy < 1) and the population
closed form does not hold (`linear_robust_accuracy` refuses it); use the empirical version.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from . import network
from .config import DataConfig
from .data import Task


def linear_margin(task: Task, x, y, t: int = 0, norm: str = "l2"):
    """Per-example robust radius of the linear classifier (n,), negative if wrong: y <u_t, x> in
    l2 (|u| = 1), y <u_t, x> / |u_t|_1 in l-inf (the dual norm)."""
    u = task.label_directions[t]
    r = y * (x @ u)
    return r if norm == "l2" else r / jnp.abs(u).sum()


def window(cfg: DataConfig, norm: str = "l2") -> tuple[float, float]:
    """The radius window 1/sqrt(d) .. 1/sqrt(k) of docs/science.md section 4 in the attack's norm: an
    l-inf radius t moves a dense unit direction as far as an l2 radius t sqrt(2d/pi) does."""
    lo, hi = cfg.window
    if norm == "l2":
        return lo, hi
    s = math.sqrt(2 * cfg.d / math.pi)
    return lo / s, hi / s


def linear_robust_accuracy_empirical(task: Task, x, y, taus, t: int = 0) -> np.ndarray:
    """Exact robust accuracy of the linear classifier on the given examples, at each tau."""
    r = np.asarray(linear_margin(task, x, y, t))
    return np.asarray([(r > tau).mean() for tau in np.atleast_1d(taus)])


def _irwin_hall_cdf(x: float, k: int) -> float:
    """P(U_1 + ... + U_k <= x), U_i ~ U[0, 1]."""
    if x <= 0:
        return 0.0
    if x >= k:
        return 1.0
    s = sum((-1) ** j * math.comb(k, j) * (x - j) ** k for j in range(math.floor(x) + 1))
    return s / math.factorial(k)


def linear_robust_accuracy(cfg: DataConfig, tau: float) -> float:
    """Population robust accuracy of sign <M w*, x> at l2 radius tau, noise 0.

    Needs Rademacher w* and exact_k sparsity. Correct and robust iff |<w*, z>| > tau sqrt(d).
    'sign': <w*, z> = 2B - k, B ~ Bin(k, 1/2). 'uniform': sqrt(k) <w*, z> = sum eps_j U_j with
    U_j ~ U[1, 2]; given p positive signs it equals 3p - 2k + IH_k (IH_k the Irwin-Hall sum of
    k uniforms), so the probability is a binomial mixture of Irwin-Hall tails.
    """
    if not cfg.orthonormal:
        raise ValueError(
            f"closed form needs an orthonormal dictionary, got data.dictionary={cfg.dictionary!r}: with "
            "non-orthogonal features <u, x> != <w*, z>/|w*|; use linear_robust_accuracy_empirical"
        )
    if cfg.label != "rademacher" or cfg.sparsity != "exact_k":
        raise ValueError(
            f"closed form needs data.label='rademacher' and data.sparsity='exact_k', got {cfg.label!r}, "
            f"{cfg.sparsity!r}"
        )
    k, t = cfg.k, tau * math.sqrt(cfg.d)
    weights = [math.comb(k, p) / 2**k for p in range(k + 1)]
    if cfg.magnitude == "sign":
        return sum(w for p, w in enumerate(weights) if abs(2 * p - k) > t)
    t = t * math.sqrt(k)
    total = 0.0
    for p, w in enumerate(weights):
        shift = 2 * k - 3 * p  # S sqrt(k) = IH_k - shift
        total += w * ((1.0 - _irwin_hall_cdf(t + shift, k)) + _irwin_hall_cdf(-t + shift, k))
    return total


def linear_logits(task: Task, t: int = 0):
    """f(x) = <u_t, x> as a function (n, d) -> (n,)."""
    u = task.label_directions[t]
    return lambda x: x @ u


def oracle_logits(cfg: DataConfig, task: Task, beta: float, t: int = 0):
    """The oracle pure network f(x) = sum_j w*_j phi_b(<M_j, x>), b = beta * z_min: one unit per
    feature (W = M^T, unit rows), the threshold rule's value beta z_min |w_j| held fixed."""

    arch = network.Architecture(activation="soft_threshold", bias="fixed", head="trained", z_min=cfg.min_magnitude)
    params = oracle_params(cfg, task, beta, t)
    return lambda x: network.logits(arch, params, x, beta)[..., 0]


def oracle_params(cfg: DataConfig, task: Task, beta: float, t: int = 0) -> dict:
    """The oracle pure network's parameters (fixed thresholds beta z_min, head w*_t)."""
    d = task.M.shape[1]
    return {"W": task.M.T, "a": task.w_star[t][:, None], "b": jnp.full((d,), beta * cfg.min_magnitude)}


__all__ = [
    "linear_logits",
    "linear_margin",
    "linear_robust_accuracy",
    "linear_robust_accuracy_empirical",
    "oracle_logits",
    "oracle_params",
    "window",
]
