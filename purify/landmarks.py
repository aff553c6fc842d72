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


def oracle_flip_radius(values, helps, b: float, off_support: int) -> np.ndarray:
    """The exact smallest l2 perturbation that flips the oracle pure network on an example
    (orthonormal M, Rademacher w*, noise 0): (n,), 0 where the oracle is already wrong.

    With orthonormal M a perturbation delta is u = M^T delta in feature coordinates, |u| = |delta|,
    and the oracle's margin y f = sum_j s_j phi_b(z_j + u_j) (s_j = y w*_j) is separable: each
    coordinate's largest harm as a function of a = |u_j| is piecewise linear with slope 0 or 1:

        hurting feature (s_j z_j < 0):   a                        (push it further out)
        helping feature (s_j z_j > 0):   min(a, c_j), or a - 2b   (c_j = |z_j| - b: shrink it to
                                                                   the dead zone, or cross it)
        inactive feature (z_j = 0):      max(a - b, 0)            (switch a unit on)

    The smallest |u| reaching harm m (the clean margin) is found exactly: for each choice of
    pieces the problem min sum a_j^2 subject to sum (a_j - o_j) >= m on boxes o_j <= a_j <= u_j
    is solved by water-filling (one common level), and the choices are enumerated: every
    hurting and helping feature is used; the helping features that cross are the smallest ones
    (an exchange argument), r = 0 .. h of them; q = 0 .. off_support inactive units at one level.

    Args:
      values: (n, k) the active z_j of each example.
      helps: (n, k) bool, whether s_j z_j > 0 (the feature's unit pushes towards the label).
      b: the units' threshold beta z_min.
      off_support: D - k, the inactive features an attack can switch on.

    Returns:
      (n,) float64 flip radii.

    Example:
      >>> oracle_flip_radius(np.ones((1, 3)), np.array([[True, True, False]]), 0.5, 0)
      array([0.28867513])
    """
    values, helps = np.abs(np.asarray(values, np.float64)), np.asarray(helps, bool)
    if values.size and values.min() <= b:
        raise ValueError(
            f"b={b!r} is not allowed: must be below every active |z_j| (smallest {values.min():.6g}); "
            "a unit silent on its own feature is not the oracle (beta must be < 1)"
        )
    c = values - b  # each unit's contribution |z_j| - b > 0
    out = np.empty(len(values))
    for i, (ci, hi) in enumerate(zip(c, helps)):
        m = ci[hi].sum() - ci[~hi].sum()
        if m <= 0:
            out[i] = 0.0
            continue
        helping = np.sort(ci[hi])
        n_hurt = int((~hi).sum())
        best, qs = np.inf, np.arange(off_support + 1)
        for r in range(len(helping) + 1):  # the r smallest helping features cross the dead zone
            # pieces (offset, upper): hurting (0, inf); shrinking (0, c_j); crossing (2b, inf)
            lo = np.concatenate([np.zeros(n_hurt), np.zeros(len(helping) - r), np.full(r, 2 * b)])
            hi_ = np.concatenate([np.full(n_hurt, np.inf), helping[r:], np.full(r, np.inf)])
            best = min(best, float(_water_fill(m, lo, hi_, b, qs).min()))
        out[i] = best
    return out


def _water_fill(m: float, lo: np.ndarray, hi: np.ndarray, b: float, qs: np.ndarray) -> np.ndarray:
    """For each q in qs: min sqrt(sum a^2) over the pieces (lo, hi) and q more pieces (b, inf)
    with harm sum (a - lo) = m over the used pieces, at one common level lam (a piece is used
    while lam > its offset). The harm is piecewise linear in lam, with breakpoints at the
    offsets and caps: the level is read off exactly between two of them."""
    points = np.unique(np.concatenate([lo, hi[np.isfinite(hi)], [b]]))
    base = np.clip(np.minimum(points[:, None], hi) - lo, 0.0, None).sum(-1)  # (P,)
    harm = base[None, :] + qs[:, None] * np.clip(points - b, 0.0, None)[None, :]  # (Q, P)
    # the slope beyond the last breakpoint: uncapped pieces, the q units included
    slope = np.isinf(hi).sum() + qs * (b <= points[-1])
    j = np.argmax(harm >= m, axis=1)
    reached = harm[np.arange(len(qs)), j] >= m
    j0 = np.maximum(j - 1, 0)
    p0, p1 = points[j0], points[j]
    v0, v1 = harm[np.arange(len(qs)), j0], harm[np.arange(len(qs)), j]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(j == 0, points[0], p0 + (m - v0) * (p1 - p0) / (v1 - v0))
        beyond = points[-1] + (m - harm[:, -1]) / slope
    lam = np.where(reached, inside, np.where(slope > 0, beyond, np.inf))
    finite = np.isfinite(lam)
    lam = np.where(finite, lam, 0.0)
    cost = (np.where(lo[None, :] < lam[:, None], np.minimum(lam[:, None], hi[None, :]), 0.0) ** 2).sum(-1)
    cost = cost + qs * np.where(b < lam, lam, 0.0) ** 2
    return np.where(finite, np.sqrt(cost), np.inf)


def oracle_robust_accuracy(cfg: DataConfig, beta: float, taus, n: int = 4096, seed: int = 0) -> np.ndarray:
    """The oracle pure network's exact l2 robust accuracy at each radius (noise 0): (n_tau,).

    With `sign` magnitudes every example with the same number of helping features is the same
    problem up to symmetry, so the value is a finite sum over the binomial law of that number:
    exact. With `uniform` magnitudes the flip radius is exact per example (`oracle_flip_radius`)
    on n examples drawn from `seed` (a Monte Carlo estimate of the population value, standard
    error at most 0.5/sqrt(n)). Needs an orthonormal dictionary, Rademacher w* and exact-k
    supports (the oracle's head is w*, its units M^T).
    """
    if not cfg.orthonormal or cfg.label != "rademacher" or cfg.sparsity != "exact_k":
        raise ValueError(
            "the oracle's exact robust accuracy needs an orthonormal dictionary, data.label='rademacher' and "
            f"data.sparsity='exact_k', got {cfg.dictionary!r}, {cfg.label!r}, {cfg.sparsity!r}"
        )
    taus = np.atleast_1d(np.asarray(taus, np.float64))
    k, b, off = cfg.k, float(beta) * cfg.min_magnitude, cfg.n_features - cfg.k
    if cfg.magnitude == "sign":
        weights, radius = _sign_cases(k, b, off)
        return np.asarray([(weights * (radius > t)).sum() for t in taus])
    rng = np.random.default_rng(seed)
    z = rng.choice([-1.0, 1.0], (n, k)) * rng.uniform(1.0, 2.0, (n, k)) / math.sqrt(k)
    w = rng.choice([-1.0, 1.0], (n, k))
    y = np.sign((w * z).sum(-1))  # exact ties have probability 0
    radius = oracle_flip_radius(z, (y[:, None] * w * z) > 0, b, off)
    return np.asarray([(radius > t).mean() for t in taus])


def _sign_cases(k: int, b: float, off_support: int) -> tuple[np.ndarray, np.ndarray]:
    """With `sign` magnitudes an example is, up to symmetry, its number p of helping features
    (p > k/2: the label is the majority sign, k odd): each p's probability and flip radius."""
    ps = np.arange((k + 1) // 2, k + 1)
    weights = np.asarray([math.comb(k, int(p)) for p in ps], np.float64) * 2.0 / 2**k
    helps = np.arange(k)[None, :] < ps[:, None]
    return weights, oracle_flip_radius(np.ones((len(ps), k)), helps, b, off_support)


def exact_robust_accuracies(cfg: DataConfig, beta: float, taus, n: int = 16384) -> dict[str, list[float]]:
    """The two exact landmarks at each radius, as a record holds them: 'oracle_robust_exact'
    (`oracle_robust_accuracy`; exact with `sign` magnitudes, a Monte Carlo estimate of exact
    per-example radii with `uniform` ones) and 'linear_robust_exact' (`linear_robust_accuracy`)."""
    taus = [float(t) for t in np.atleast_1d(taus)]
    return {
        "oracle_robust_exact": oracle_robust_accuracy(cfg, beta, taus, n=n).tolist(),
        "linear_robust_exact": [linear_robust_accuracy(cfg, t) for t in taus],
    }


def headroom(cfg: DataConfig, beta: float) -> tuple[float, float]:
    """With `sign` magnitudes (k odd): the radii (lo, hi) between which the linear classifier has
    lost every example of margin |<w*, z>| = 1 while the oracle still holds every example: lo =
    1/sqrt(d), hi = the oracle's smallest flip radius ((1 - beta)/sqrt(k) for beta > 1/(k + 1)).
    The window exists where lo < hi; inside it the oracle's robust accuracy is 1 and the linear
    classifier's at most 1 - 2 C(k, (k+1)/2) / 2^k (its value from lo to 3/sqrt(d))."""
    if cfg.magnitude != "sign" or cfg.sparsity != "exact_k" or not cfg.orthonormal or cfg.label != "rademacher":
        raise ValueError(
            "headroom is exact for data.magnitude='sign', exact_k sparsity, an orthonormal dictionary and "
            f"Rademacher w*; got {cfg.magnitude!r}, {cfg.sparsity!r}, {cfg.dictionary!r}, {cfg.label!r}"
        )
    if cfg.k % 2 == 0:
        raise ValueError(f"k={cfg.k} is even: with sign magnitudes a share C(k, k/2)/2^k of the examples has margin 0")
    _, radius = _sign_cases(cfg.k, float(beta), cfg.n_features - cfg.k)
    return 1.0 / math.sqrt(cfg.d), float(radius.min())


__all__ = [
    "exact_robust_accuracies",
    "headroom",
    "linear_logits",
    "linear_margin",
    "linear_robust_accuracy",
    "linear_robust_accuracy_empirical",
    "oracle_flip_radius",
    "oracle_logits",
    "oracle_params",
    "oracle_robust_accuracy",
    "window",
]
