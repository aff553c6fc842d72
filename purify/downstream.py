"""Downstream learning on a pre-trained two-layer backbone (SCIENCE.md section 2 "Downstream").

The downstream model is f(x) = <v, g(x)> + c with g(x) = phi_b(W_eff x), W_eff = W + U V and
thresholds b_i = beta z_min |W_eff,i| (stop-gradient, the backbone's relative rule) + db_i.
Parameters {'W': (m, d), 'U': (m, r), 'V': (r, d), 'db': (m,), 'v': (m,), 'c': ()}; a method
trains a subset, the rest stay at their start (W = the backbone, U = 0, db = 0):

    probe: v, c (linear probing on the frozen representation)
    bias: db, v, c (bias-only fine-tuning)
    lowrank: U, V, v, c (a rank-r update of the first layer)
    full: W, v, c (full fine-tuning)

The head starts at random (RanLI: v ~ N(0, 1/m), c = 0), or from a linear-probing stage of
`probe_steps` steps: adversarial (RoLI, attack `init_attack` at radius hp tau) or clean (StLI).
The loss is logistic on x + delta (delta the FGM/PGD attack of the stage, or 0), plus
hp lam * mean_i |g(x_i) - g_pre(x_i)|^2 / m (the feature-discrepancy penalty towards the
pre-trained representation g_pre on clean inputs: the [NRT] remedy; only with `discrepancy`).

Data: a finite training set of `n_max` samples of which the first hp-independent `n` are used
(`n` is an argument, so downstream sample sizes share one program), a validation split for
model selection and a test split, drawn from the run key; labels y = sign<theta, z> for a
downstream task theta (d,). Optimizer: Adam (optax) with the learning rate per run.

Everything is a pure function of arrays, vmapped over a flat run axis by `fit_many` and
`evaluate_many` (seeds x tasks x learning rates x backbones flattened by the caller).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import attacks
from .config import NORMS, ConfigError, DataConfig, _choice, _float, _int
from .data import Task, sample
from .network import soft_threshold

METHODS = ("probe", "bias", "lowrank", "full")
HEAD_INITS = ("random", "robust", "standard")  # RanLI, RoLI, StLI
HEAD_INIT_NAMES = {"random": "RanLI", "robust": "RoLI", "standard": "StLI"}
DOWN_ATTACKS = ("none", "fgm", "pgd")
TRAINED = {"probe": ("v", "c"), "bias": ("db", "v", "c"), "lowrank": ("U", "V", "v", "c"), "full": ("W", "v", "c")}
SPLITS = 3  # train, validation, test


@dataclass(frozen=True)
class DownstreamConfig:
    """Static settings of a downstream fit (shapes and program structure).

    method: see module docstring. head_init: 'random' (RanLI), 'robust' (RoLI) or 'standard'
    (StLI). attack: the fine-tuning stage's attack ('none' is clean). init_attack: the RoLI
    stage's attack. n_max: training-set size drawn (a run uses its first n). n_val, n_test:
    held-out sizes. taus: radii of the robust evaluation (the minimum over FGM, PGD with
    `eval_pgd_steps` steps and `restarts` starts, and the dense attack along M theta).
    discrepancy: add the feature-discrepancy penalty hp lam * |g - g_pre|^2 / m to the loss.
    """

    method: str = "probe"
    head_init: str = "random"
    attack: str = "none"
    init_attack: str = "pgd"
    norm: str = "l2"
    steps: int = 500
    probe_steps: int = 300
    batch: int = 128
    n_max: int = 1024
    n_val: int = 512
    n_test: int = 1024
    rank: int = 4
    pgd_steps: int = 5
    noise: float = 0.0
    taus: tuple[float, ...] = (0.25,)
    eval_pgd_steps: int = 10
    restarts: int = 1
    discrepancy: bool = False

    def validate(self, width: int, d: int) -> DownstreamConfig:
        _choice("down.method", self.method, METHODS)
        _choice("down.head_init", self.head_init, HEAD_INITS)
        _choice("down.attack", self.attack, DOWN_ATTACKS)
        _choice("down.init_attack", self.init_attack, ("fgm", "pgd"))
        _choice("down.norm", self.norm, NORMS)
        _int("down.steps", self.steps, lo=0)
        _int("down.probe_steps", self.probe_steps, lo=1)
        _int("down.batch", self.batch, lo=1)
        for name in ("n_max", "n_val", "n_test"):
            _int(f"down.{name}", getattr(self, name), lo=1)
        _int("down.rank", self.rank, lo=1, hi=min(width, d))
        _int("down.pgd_steps", self.pgd_steps, lo=1)
        _float("down.noise", self.noise, lo=0.0)
        if not self.taus:
            raise ConfigError(f"down.taus={self.taus!r} is not allowed: must name at least one radius")
        for t in self.taus:
            _float("down.taus[]", t, lo=0.0)
        _int("down.eval_pgd_steps", self.eval_pgd_steps, lo=1)
        _int("down.restarts", self.restarts, lo=1)
        return self


def representation(params: dict, x: jax.Array, beta: jax.Array, z_min: float) -> jax.Array:
    """g(x): (n, m)."""
    W = params["W"] + params["U"] @ params["V"]
    b = jax.lax.stop_gradient(beta * z_min * jnp.linalg.norm(W, axis=-1)) + params["db"]
    return soft_threshold(x @ W.T, b)


def logits(params: dict, x: jax.Array, beta: jax.Array, z_min: float) -> jax.Array:
    """f(x) = <v, g(x)> + c: (n,)."""
    return representation(params, x, beta, z_min) @ params["v"] + params["c"]


def initial_params(key: jax.Array, W: jax.Array, rank: int) -> dict:
    m, d = W.shape
    k_v, k_V = jax.random.split(key)
    return {"W": W, "U": jnp.zeros((m, rank)), "V": jax.random.normal(k_V, (rank, d)) / jnp.sqrt(d),
            "db": jnp.zeros((m,)), "v": jax.random.normal(k_v, (m,)) / jnp.sqrt(m), "c": jnp.zeros(())}


def splits(key: jax.Array, data: DataConfig, theta: jax.Array, M: jax.Array, dc: DownstreamConfig, which=(0, 1, 2)):
    """(x, y) for train (n_max), validation (n_val) and test (n_test), or those named in
    `which` (None in the others' place); y in {-1, +1}. Each split has its own stream."""
    task = Task(M=M, w_star=theta[None, :])
    out = []
    for i, n in enumerate((dc.n_max, dc.n_val, dc.n_test)):
        if i not in which:
            out.append(None)
            continue
        x, _, y = sample(jax.random.fold_in(key, i), data, task, n, dc.noise)
        out.append((x, y[:, 0]))
    return out


def _attack(kind: str, objective, x, tau, norm: str, steps: int, key):
    if kind == "fgm":
        return attacks.fgm(objective, x, tau, norm)
    return attacks.pgd(objective, x, tau, norm, steps, key=key)


def _stage(params, W_pre, train, n, hp, key, beta, z_min, dc: DownstreamConfig, trained: tuple[str, ...], attack: str, steps: int, lr):
    """`steps` Adam steps on minibatches of the first n training samples, training `trained`."""
    x_all, y_all = train
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    mask = {k: jnp.asarray(k in trained, jnp.float32) for k in params}

    def loss(p, x, y, x_clean):
        ell = jax.nn.softplus(-y * logits(p, x, beta, z_min)).mean()
        if not dc.discrepancy:
            return ell
        pre = representation({**p, "W": W_pre, "U": jnp.zeros_like(p["U"]), "db": jnp.zeros_like(p["db"])}, x_clean, beta, z_min)
        gap = ((representation(p, x_clean, beta, z_min) - jax.lax.stop_gradient(pre)) ** 2).sum(-1).mean() / p["v"].shape[0]
        return ell + hp["lam"] * gap

    def step(carry, t):
        p, s = carry
        k = jax.random.fold_in(key, t)
        idx = jax.random.randint(jax.random.fold_in(k, 0), (dc.batch,), 0, n)
        x, y = x_all[idx], y_all[idx]
        xa = x
        if attack != "none":
            objective = lambda v: -y * logits(p, v, beta, z_min)
            xa = x + jax.lax.stop_gradient(_attack(attack, objective, x, hp["tau"], dc.norm, dc.pgd_steps, jax.random.fold_in(k, 1)))
        g = jax.grad(loss)(p, xa, y, x)
        g = jax.tree.map(lambda gi, mi: gi * mi, g, mask)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


def make_fit(data: DataConfig, dc: DownstreamConfig):
    """fit(key, W (m, d), beta, theta (d,), M (d, d), n, hp) -> params, pure and vmappable.

    hp: {'lr', 'probe_lr', 'tau', 'lam'} scalars (tau: the radius of every training attack).
    """
    z_min = data.min_magnitude

    def fit(key, W, beta, theta, M, n, hp):
        k_data, k_init, k_probe, k_tune = jax.random.split(key, 4)
        train, _, _ = splits(k_data, data, theta, M, dc, which=(0,))
        params = initial_params(k_init, W, dc.rank)
        if dc.head_init != "random":
            attack = dc.init_attack if dc.head_init == "robust" else "none"
            params = _stage(params, W, train, n, hp, k_probe, beta, z_min, dc, TRAINED["probe"], attack, dc.probe_steps, hp["probe_lr"])
        return _stage(params, W, train, n, hp, k_tune, beta, z_min, dc, TRAINED[dc.method], dc.attack, dc.steps, hp["lr"])

    return fit


def make_evaluate(data: DataConfig, dc: DownstreamConfig):
    """evaluate(params, key, beta, theta, M) -> {'val_clean', 'val_robust' (n_tau,), 'clean',
    'robust' (n_tau,), 'by_attack' (n_tau, 3)}: end to end on the input, the robust prediction
    being correct under every attack (FGM, PGD, dense along M theta / |theta|)."""
    z_min = data.min_magnitude

    def evaluate(params, key, beta, theta, M):
        k_data, _, _, _ = jax.random.split(key, 4)
        _, val, test = splits(k_data, data, theta, M, dc, which=(1, 2))
        u = M @ theta / jnp.linalg.norm(theta)
        k_att = jax.random.fold_in(key, 7)
        out = {}
        for name, (x, y) in (("val_", val), ("", test)):
            margin = lambda v, y=y: y * logits(params, v, beta, z_min)
            clean, robust, by_attack = attacks.robust_accuracy(margin, x, y, dc.taus, u, k_att, dc.norm, dc.eval_pgd_steps, dc.restarts)
            out[name + "clean"], out[name + "robust"] = clean, robust
            if not name:
                out["by_attack"] = by_attack
        return out

    return evaluate


@functools.lru_cache(maxsize=64)
def _compiled_fit(data: DataConfig, dc: DownstreamConfig):
    return jax.jit(jax.vmap(make_fit(data, dc), in_axes=(0, 0, 0, 0, None, 0, 0)))


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(data: DataConfig, dc: DownstreamConfig):
    return jax.jit(jax.vmap(make_evaluate(data, dc), in_axes=(0, 0, 0, 0, None)))


def _compiled(data: DataConfig, dc: DownstreamConfig):
    """The jit(vmap) fit and evaluate programs; evaluation depends only on the evaluation
    settings, so every method and head init shares one evaluate program."""
    neutral = dataclasses.replace(dc, method="probe", head_init="random", attack="none", init_attack="pgd", steps=0, probe_steps=1, batch=1,
                                  pgd_steps=1, discrepancy=False, rank=1)
    return _compiled_fit(data, dc), _compiled_evaluate(data, neutral)


def run_keys(seeds) -> jax.Array:
    """One downstream key per run: fold 'downstream' into the run's seed."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0xD0))(jnp.asarray(seeds, jnp.uint32))


def fit_and_evaluate(data: DataConfig, dc: DownstreamConfig, M, *, seeds, W, beta, theta, n, lr, probe_lr=None, tau=0.0, lam=0.0,
                     chunk: int = 256) -> dict[str, np.ndarray]:
    """Fit and evaluate a flat batch of R downstream runs; every argument but M is (R, ...) or broadcast.

    seeds (R,) ints pick the data and init keys; W (R, m, d) backbones; beta, n, lr, probe_lr,
    tau, lam (R,) or scalars. Runs go through one jit(vmap) program in chunks of `chunk`.
    Returns numpy arrays with a leading (R,) axis, as `make_evaluate` names them, plus
    'params' (the fitted parameters) and 'failed' (non-finite parameters).
    """
    seeds = np.asarray(seeds)
    R = len(seeds)
    W = jnp.asarray(W)
    m, d = W.shape[-2:]
    dc = dc.validate(m, d)
    data.validate()
    n_arr = np.broadcast_to(np.asarray(n), (R,)).astype(np.int32)
    if n_arr.min() < 1 or n_arr.max() > dc.n_max:
        raise ConfigError(f"n={sorted(set(n_arr.tolist()))} is not allowed: every downstream sample size must be in 1..down.n_max={dc.n_max}")
    full = lambda v: np.broadcast_to(np.asarray(v, np.float32), (R,))
    hp = {"lr": full(lr), "probe_lr": full(lr if probe_lr is None else probe_lr), "tau": full(tau), "lam": full(lam)}
    beta, theta = full(beta), np.broadcast_to(np.asarray(theta, np.float32), (R, d))
    W = jnp.broadcast_to(W, (R, m, d))
    # only the latent model matters downstream: configs that differ elsewhere share programs
    fit, evaluate = _compiled(dataclasses.replace(data, n_tasks=1, n_train=None, task_seed=0, label="rademacher"), dc)
    keys = run_keys(seeds)
    outs = []
    for s in range(0, R, chunk):
        # when R spans several chunks the last one is padded (repeating its last run) to the
        # chunk size, so one compiled shape serves them all
        idx = np.arange(s, min(R, s + chunk))
        width = min(R, chunk)
        pad = np.concatenate([idx, np.full(width - len(idx), idx[-1])])
        p = fit(keys[pad], W[pad], beta[pad], theta[pad], M, n_arr[pad], {k: v[pad] for k, v in hp.items()})
        e = evaluate(p, keys[pad], beta[pad], theta[pad], M)
        keep = slice(0, len(idx))
        e = {k: np.asarray(v)[keep] for k, v in e.items()}
        e["params"] = jax.tree.map(lambda a, keep=keep: np.asarray(a)[keep], p)
        outs.append(e)
    result = {k: np.concatenate([o[k] for o in outs]) for k in outs[0] if k != "params"}
    result["params"] = jax.tree.map(lambda *a: np.concatenate(a), *[o["params"] for o in outs])
    finite = np.stack([np.isfinite(a.reshape(R, -1)).all(-1) for a in jax.tree.leaves(result["params"])]).all(0)
    result["failed"] = ~finite
    return result


def select_by_validation(val_score: np.ndarray, *test_arrays: np.ndarray):
    """Model selection over the last axis of val_score (..., L), e.g. learning rates: the index
    with the best validation score (non-finite counts as worst), and each test array
    (..., L, ...) taken at it."""
    v = np.where(np.isfinite(val_score), val_score, -np.inf)
    best = v.argmax(-1)
    lead = val_score.ndim - 1
    picked = [np.take_along_axis(a, best.reshape(best.shape + (1,) * (a.ndim - lead)), axis=lead).squeeze(lead) for a in test_arrays]
    return best, picked


def downstream_tasks(d: int, w_star: np.ndarray, key: int = 1, sparse_features: int | None = None) -> dict[str, np.ndarray]:
    """New downstream tasks theta (d,): 'dense' (a fresh Rademacher vector), 'sparse' (Rademacher
    on sparse_features = d/2 random features, 0 elsewhere; samples whose active features all miss
    its support get a fair-coin label) and 'same' (the pre-training task w*)."""
    rng = np.random.default_rng(key)
    s = sparse_features or d // 2
    sparse = np.zeros(d, np.float32)
    sparse[rng.choice(d, s, replace=False)] = rng.choice([-1.0, 1.0], s)
    return {"dense": rng.choice([-1.0, 1.0], d).astype(np.float32), "sparse": sparse, "same": np.asarray(w_star, np.float32)}


def bayes_accuracy(data: DataConfig, theta: np.ndarray) -> float:
    """The best accuracy any classifier can reach on task theta: 1 - P(<theta, z> = 0) / 2 (a tied
    margin gets a coin label). Exact for exact_k supports with uniform magnitudes, where a tie
    happens exactly when no active feature lies on theta's support."""
    from math import comb

    s = int((np.asarray(theta) != 0).sum())
    if data.sparsity != "exact_k" or data.magnitude != "uniform":
        raise ConfigError(f"data.magnitude={data.magnitude!r} is not allowed for bayes_accuracy: needs exact_k sparsity and uniform magnitudes")
    p_miss = comb(data.d - s, data.k) / comb(data.d, data.k)
    return 1.0 - p_miss / 2
