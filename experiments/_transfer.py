"""Shared pieces of the pre-training and transfer experiments (inh-*, nrt-*, roli-*, rep-*).

Pre-training is the purification protocol of fp-dynamics (clean for adv_start steps, then the
attack) run through `sweep`, so backbones are resumable and identical across experiments that
ask for the same config and seeds. Downstream fits go through `purify.downstream`.
"""

from __future__ import annotations

import numpy as np

from purify import downstream as ds
from purify import metrics
from purify.config import Config
from purify.data import Task
from purify.downstream import select_by_validation

from .fp_dynamics import PRESETS as DYNAMICS_PRESETS

# Backbone pre-training presets: the fp-dynamics protocol (clean, then FGM at hp.tau).
PRETRAIN_PRESETS = {name: dict(p) for name, p in DYNAMICS_PRESETS.items()}


def down_config(cfg: Config, options: dict, **kw) -> ds.DownstreamConfig:
    """Downstream sizes that scale with the pre-training config: a quarter of its steps, its
    batch halved, its evaluation size and radii, and options['n_down'] training samples."""
    base = {"steps": max(4, cfg.train.steps // 4), "probe_steps": max(4, cfg.train.steps // 8), "batch": max(8, cfg.train.batch // 2),
            "n_max": int(options.get("n_down", 2048)), "n_val": max(32, cfg.eval.n_eval // 2), "n_test": cfg.eval.n_eval,
            "taus": tuple(cfg.eval.taus), "eval_pgd_steps": cfg.eval.pgd_steps, "pgd_steps": min(5, cfg.eval.pgd_steps),
            "norm": cfg.eval.norm, "noise": cfg.hp.noise}
    base.update(kw)
    return ds.DownstreamConfig(**base)


def snapshot_steps(cfg: Config, fractions) -> tuple[int, ...]:
    """Steps adv_start + f (steps - adv_start): the adversarial phase cut at fractions f."""
    a, n = cfg.train.adv_start, cfg.train.steps
    return tuple(sorted({round(a + f * (n - a)) for f in fractions}))


def oracle_backbone(task: Task) -> np.ndarray:
    """The oracle pure representation: one unit per feature, W = M^T (d, d), unit rows."""
    return np.asarray(task.M).T.copy()


def weighted_purity(W: np.ndarray, M) -> np.ndarray:
    """Norm-weighted mean purity of each backbone in W (..., m, d)."""
    W = np.asarray(W)
    flat = W.reshape((-1,) + W.shape[-2:])
    out = [float(metrics.weighted_mean(metrics.purity(metrics.feature_coefficients(w, M)), np.linalg.norm(w, axis=-1))) for w in flat]
    return np.asarray(out).reshape(W.shape[:-2])


def features_per_neuron(W: np.ndarray, M) -> np.ndarray:
    """Features per neuron n_i(0.5) of each neuron of each backbone: (..., m)."""
    W = np.asarray(W)
    flat = W.reshape((-1,) + W.shape[-2:])
    out = [np.asarray(metrics.features_per_neuron(metrics.feature_coefficients(w, M))) for w in flat]
    return np.asarray(out).reshape(W.shape[:-1])


def probe(cfg: Config, dc: ds.DownstreamConfig, task: Task, W: np.ndarray, seeds: np.ndarray, theta: np.ndarray, **kw) -> dict:
    """Fit and evaluate downstream models on backbones W (R, m, d) with per-run seeds (R,)."""
    return ds.fit_and_evaluate(cfg.data, dc, task.M, seeds=seeds, W=W, beta=cfg.hp.beta, theta=theta, **kw)


def clean_heads(cfg: Config, dc: ds.DownstreamConfig, task: Task, W: np.ndarray, seeds: np.ndarray, thetas: dict, lrs) -> tuple[dict, int]:
    """Clean linear heads on backbones W (B, S, m, d) for every task in `thetas` (name -> (d,)),
    all in one flat run axis (task, backbone, seed, learning rate); per run the learning rate
    with the best clean validation accuracy is kept. Returns {task: {'robust', 'clean'}} with
    (B, S) test accuracies (robust at the first radius) and the number of non-finite fits."""
    names = list(thetas)
    B, S = W.shape[:2]
    L, K = len(lrs), len(names)
    shape = (K, B, S, L)
    Wr = np.broadcast_to(np.asarray(W)[None, :, :, None], (K, B, S, L, *W.shape[2:])).reshape(-1, *W.shape[2:])
    th = np.broadcast_to(np.stack([thetas[n] for n in names])[:, None, None, None], (*shape, W.shape[-1])).reshape(-1, W.shape[-1])
    sd = np.broadcast_to(np.asarray(seeds)[None, None, :, None], shape).ravel()
    lr = np.broadcast_to(np.asarray(lrs, np.float32), shape).ravel()
    out = probe(cfg, dc, task, Wr, sd, th, n=dc.n_max, lr=lr)
    _, (robust, clean) = select_by_validation(out["val_clean"].reshape(shape), out["robust"][:, 0].reshape(shape), out["clean"].reshape(shape))
    return {n: {"robust": robust[i], "clean": clean[i]} for i, n in enumerate(names)}, int(out["failed"].sum())


def end_to_end(ctx, cfg: Config, task: Task, thetas: dict, seeds: int) -> dict:
    """The reference a transferred head is held against: the network trained end to end on each
    downstream task with cfg's schedule at hp.tau (clean, then the attack). Returns {task:
    {'robust', 'clean'}} with (S,) accuracies at the first evaluation radius."""
    import jax.numpy as jnp

    from purify.evaluate import network_curves

    out = {}
    for name, theta in thetas.items():
        dtask = Task(M=task.M, w_star=jnp.asarray(theta, jnp.float32)[None, :])
        res = ctx.sweep(cfg, grid={"tau": [cfg.hp.tau]}, seeds=seeds, task=dtask)
        curves = network_curves(cfg, res, dtask, cfg.eval.taus[:1])
        out[name] = {"robust": curves["robust"][0, :, 0], "clean": curves["clean"][0]}
    return out
