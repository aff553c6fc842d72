"""What transfer experiments are made of: backbones from a sweep's final parameters, the
downstream tasks, their Bayes accuracy, and model selection on the validation split.
"""

from __future__ import annotations

from math import comb

import jax
import numpy as np

from .. import network
from ..config import ConfigError, DataConfig


def backbones(res, rows=None) -> dict[str, np.ndarray]:
    """The final parameters of a sweep's networks as frozen backbones: {'W': (n_runs, m, d), ['b': (n_runs, m)]}
    with the (hparam, seed) axes (or `rows` of hparam) flattened into one run axis."""
    out = {}
    for name in ("W", "b", "U", "V"):
        key = f"{name}_final"
        if key in res:
            a = np.asarray(res[key])
            a = a if rows is None else a[rows]
            lead = a.ndim - len(network.PARAM_AXES[name])
            out[name] = a.reshape((-1,) + a.shape[lead:])
    if "U" in out:  # a low-rank run: its backbone is the effective first layer W + U V
        out["W"] = np.asarray(
            jax.vmap(network.effective_weights)({"W": out["W"], "U": out.pop("U"), "V": out.pop("V")})
        )
    return out


def select_by_validation(val_score: np.ndarray, *test_arrays: np.ndarray):
    """Model selection over the last axis of val_score (..., L), e.g. learning rates: the index
    with the best validation score (non-finite counts as worst), and each test array
    (..., L, ...) taken at it."""
    v = np.where(np.isfinite(val_score), val_score, -np.inf)
    best = v.argmax(-1)
    lead = val_score.ndim - 1
    picked = [
        np.take_along_axis(a, best.reshape(best.shape + (1,) * (a.ndim - lead)), axis=lead).squeeze(lead)
        for a in test_arrays
    ]
    return best, picked


def downstream_tasks(
    d: int, w_star: np.ndarray, key: int = 1, sparse_features: int | None = None
) -> dict[str, np.ndarray]:
    """New downstream tasks theta (d,): 'dense' (a fresh Rademacher vector), 'sparse' (Rademacher
    on sparse_features = d/2 random features, 0 elsewhere; samples whose active features all miss
    its support get a fair-coin label) and 'same' (the pre-training task w*)."""
    rng = np.random.default_rng(key)
    s = sparse_features or d // 2
    sparse = np.zeros(d, np.float32)
    sparse[rng.choice(d, s, replace=False)] = rng.choice([-1.0, 1.0], s)
    return {
        "dense": rng.choice([-1.0, 1.0], d).astype(np.float32),
        "sparse": sparse,
        "same": np.asarray(w_star, np.float32),
    }


def bayes_accuracy(data: DataConfig, theta: np.ndarray) -> float:
    """The best accuracy any classifier can reach on task theta: 1 - P(<theta, z> = 0) / 2 (a tied
    margin gets a coin label). Exact for exact_k supports with uniform magnitudes, where a tie
    happens exactly when no active feature lies on theta's support."""

    s = int((np.asarray(theta) != 0).sum())
    if data.sparsity != "exact_k" or data.magnitude != "uniform":
        raise ConfigError(
            f"data.magnitude={data.magnitude!r} is not allowed for bayes_accuracy: needs exact_k sparsity and "
            "uniform magnitudes"
        )
    p_miss = comb(data.n_features - s, data.k) / comb(data.n_features, data.k)
    return 1.0 - p_miss / 2
