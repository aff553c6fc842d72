"""Robust accuracy of finished networks (and of the analytic landmarks) on a grid of radii.

Each run is evaluated on its own held-out batch, the same one its training-time trace used
(evaluation-data stream of jax.random.key(seed)), so curves and traces agree.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import attacks, landmarks
from .compilation import program
from .config import Config
from .data import Task, sample
from .results import Results
from .train import Run, Streams


def eval_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """The evaluation-data and evaluation-attack streams of the run with seed `seed`."""
    streams = Streams.from_seed(seed)
    return streams.eval_data, streams.eval_attack


def eval_spec(cfg: Config, taus) -> attacks.EvalSpec:
    """cfg's evaluation attacks at the radii `taus`."""
    return dataclasses.replace(cfg.eval.spec, taus=tuple(float(x) for x in taus))


def final_params(res: Results) -> dict:
    """Final parameters as arrays with leading (hparam, seed) axes."""
    return {name[: -len("_final")]: jnp.asarray(res[name]) for name in res.arrays if name.endswith("_final")}


def network_curves(cfg: Config, res: Results, task: Task, taus, t: int = 0) -> dict[str, np.ndarray]:
    """Clean (H, S), robust (H, S, n_tau) and per-attack (H, S, n_tau, 3) accuracy of res's nets."""
    run, spec = Run(cfg), eval_spec(cfg, taus)

    def one(params, seed_key_data, seed_key_attack, noise, beta):
        x, _, y = sample(seed_key_data, cfg.data, task, cfg.eval.n_eval, noise)
        margin = lambda v: y[:, t] * run.logits(params, v, beta)[:, t]
        return attacks.robust_accuracy(margin, x, y[:, t], task.label_directions[t], seed_key_attack, spec)

    params = final_params(res)
    H, S = res["W_final"].shape[:2]
    kd, ka = zip(*(eval_keys(s) for s in res.coords["seed"]))
    kd, ka = jnp.stack(kd), jnp.stack(ka)
    per_run = lambda name: jnp.asarray(np.broadcast_to(np.asarray(res.hp[name]).reshape(-1, 1), (H, S)))
    over_seeds = jax.vmap(one, in_axes=(0, 0, 0, 0, 0))
    f = program(jax.vmap(over_seeds, in_axes=(0, None, None, 0, 0)))
    clean, robust, by_attack = f(params, kd, ka, per_run("noise"), per_run("beta"))
    return {"clean": np.asarray(clean), "robust": np.asarray(robust), "by_attack": np.asarray(by_attack)}


def landmark_curves(cfg: Config, task: Task, seeds, taus, noise: float, beta: float) -> dict[str, np.ndarray]:
    """Per seed (S, n_tau): the linear classifier's exact robust accuracy on the eval batch, the
    same classifier under the attacks, the oracle pure network under the attacks, and the
    constant predictor of the batch's majority class (no attack moves it: the floor any robust
    accuracy must beat to mean something)."""
    spec = eval_spec(cfg, taus)

    def one(kd, ka):
        x, _, y = sample(kd, cfg.data, task, cfg.eval.n_eval, noise)
        out = {}
        for name, f in (
            ("linear_attacked", landmarks.linear_logits(task)),
            ("oracle", landmarks.oracle_logits(cfg.data, task, beta)),
        ):
            margin = lambda v, f=f: y[:, 0] * f(v)
            clean, robust, _ = attacks.robust_accuracy(margin, x, y[:, 0], task.label_directions[0], ka, spec)
            out[name] = robust
            out[name + "_clean"] = clean
        r = landmarks.linear_margin(task, x, y[:, 0], norm=spec.norm)
        out["linear_exact"] = jnp.stack([(r > tau).mean() for tau in spec.taus])
        p = (y[:, 0] > 0).mean()
        out["constant"] = jnp.full(len(spec.taus), jnp.maximum(p, 1 - p))
        return out

    kd, ka = zip(*(eval_keys(s) for s in seeds))
    out = program(jax.vmap(one))(jnp.stack(kd), jnp.stack(ka))
    return {k: np.asarray(v) for k, v in out.items()}


# The reference attack of the "attack converged" gate (as in attack-audit): APGD, 100 steps,
# 10 starts (FGM point, dense direction, random), beside a 500-query random search, on the first
# REFERENCE_N examples of each run's evaluation batch.
REFERENCE_N = 256
REFERENCE_STEPS, REFERENCE_RESTARTS = 100, 10


def reference_gaps(cfg: Config, res: Results, task: Task, taus, rows, n: int = REFERENCE_N, t: int = 0) -> np.ndarray:
    """How much the default evaluation overstates robust accuracy, per run: (len(rows), S,
    n_tau) = default minus reference robust accuracy (`attacks.audited_accuracy`) of the sweep's
    final networks of grid `rows`, on the first n examples of each run's evaluation batch."""
    run, spec = Run(cfg), eval_spec(cfg, taus)
    n = min(int(n), cfg.eval.n_eval)

    def one(params, seed_key_data, seed_key_attack, noise, beta):
        x, _, y = sample(seed_key_data, cfg.data, task, cfg.eval.n_eval, noise)
        x, y = x[:n], y[:n]
        margin = lambda v: y[:, t] * run.logits(params, v, beta)[:, t]
        key = jax.random.fold_in(seed_key_attack, 0xA0D)
        default, strong = attacks.audited_accuracy(
            margin, x, y[:, t], task.label_directions[t], key, spec, REFERENCE_STEPS, REFERENCE_RESTARTS
        )
        return default - strong

    rows = list(rows)
    params = {k: v[jnp.asarray(rows)] for k, v in final_params(res).items()}
    S = res["W_final"].shape[1]
    kd, ka = zip(*(eval_keys(s) for s in res.coords["seed"]))
    kd, ka = jnp.stack(kd), jnp.stack(ka)
    per_run = lambda name: jnp.asarray(np.broadcast_to(np.asarray(res.hp[name])[rows].reshape(-1, 1), (len(rows), S)))
    f = program(jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, 0, 0)), in_axes=(0, None, None, 0, 0)))
    return np.asarray(f(params, kd, ka, per_run("noise"), per_run("beta")))
