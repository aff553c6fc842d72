"""Robust accuracy of finished networks (and of the analytic landmarks) on a grid of radii.

Each run is evaluated on its own held-out batch, the same one its training-time trace used
(evaluation-data stream of jax.random.key(seed)), so curves and traces agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import attacks, landmarks
from .config import HPARAM_NAMES, Config
from .data import Task, sample
from .results import Results
from .train import N_STREAMS, Run


def eval_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    keys = jax.random.split(jax.random.key(int(seed)), N_STREAMS)
    return keys[3], keys[4]


def final_params(res: Results) -> dict:
    """Final parameters as arrays with leading (hparam, seed) axes."""
    return {name[: -len("_final")]: jnp.asarray(res[name]) for name in res.arrays if name.endswith("_final")}


def network_curves(cfg: Config, res: Results, task: Task, taus, t: int = 0) -> dict[str, np.ndarray]:
    """Clean (H, S), robust (H, S, n_tau) and per-attack (H, S, n_tau, 3) accuracy of res's nets."""
    run = Run(cfg)
    ec, taus = cfg.eval, tuple(float(x) for x in taus)

    def one(params, seed_key_data, seed_key_attack, noise, beta):
        x, _, y = sample(seed_key_data, cfg.data, task, ec.n_eval, noise)
        margin = lambda v: y[:, t] * run.logits(params, v, beta)[:, t]
        return attacks.robust_accuracy(margin, x, y[:, t], taus, task.label_directions[t], seed_key_attack, ec.norm, ec.pgd_steps, ec.restarts)

    params = final_params(res)
    H, S = res["W_final"].shape[:2]
    kd, ka = zip(*(eval_keys(s) for s in res.coords["seed"]))
    kd, ka = jnp.stack(kd), jnp.stack(ka)
    hp = {n: jnp.asarray(np.broadcast_to(np.asarray(res.hp[n]).reshape(-1, 1), (H, S))) for n in HPARAM_NAMES}
    over_seeds = jax.vmap(one, in_axes=(0, 0, 0, 0, 0))
    f = jax.jit(jax.vmap(over_seeds, in_axes=(0, None, None, 0, 0)))
    clean, robust, by_attack = f(params, kd, ka, hp["noise"], hp["beta"])
    return {"clean": np.asarray(clean), "robust": np.asarray(robust), "by_attack": np.asarray(by_attack)}


def landmark_curves(cfg: Config, task: Task, seeds, taus, noise: float, beta: float) -> dict[str, np.ndarray]:
    """Per seed (S, n_tau): the linear classifier's exact robust accuracy on the eval batch, the
    same classifier under the attacks, and the oracle pure network under the attacks."""
    ec, taus = cfg.eval, tuple(float(x) for x in taus)

    def one(kd, ka):
        x, _, y = sample(kd, cfg.data, task, ec.n_eval, noise)
        out = {}
        for name, f in (("linear_attacked", landmarks.linear_logits(task)), ("oracle", landmarks.oracle_logits(cfg.data, task, beta))):
            margin = lambda v, f=f: y[:, 0] * f(v)
            clean, robust, _ = attacks.robust_accuracy(margin, x, y[:, 0], taus, task.label_directions[0], ka, ec.norm, ec.pgd_steps, ec.restarts)
            out[name] = robust
            out[name + "_clean"] = clean
        r = landmarks.linear_margin(task, x, y[:, 0], norm=ec.norm)
        out["linear_exact"] = jnp.stack([(r > tau).mean() for tau in taus])
        return out

    kd, ka = zip(*(eval_keys(s) for s in seeds))
    out = jax.jit(jax.vmap(one))(jnp.stack(kd), jnp.stack(ka))
    return {k: np.asarray(v) for k, v in out.items()}
