"""Downstream learning on a pre-trained two-layer backbone (docs/science.md section 2 "Downstream").

The downstream model is f(x) = <v, g(x)> + c, with g the pre-trained network's own hidden
representation (`purify.network.hidden`: the backbone's unit and threshold rule, its saved
thresholds 'b' when it has them), seen through a low-rank update W + U V and a threshold
offset db. Parameters: the backbone's as saved ({'W': (m, d)}, plus 'b' (m,) for fixed or
trainable thresholds) and {'U': (m, r), 'V': (r, d), 'db': (m,), 'v': (m,), 'c': ()}; a method
trains a subset, the rest stay at their start (W = the backbone, U = 0, db = 0), so before any
training g is exactly the pre-trained network's hidden layer:

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
from math import comb
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import attacks, network
from .attacks import EvalSpec
from .config import NORMS, SEED_MAX, Config, ConfigError, DataConfig, _choice, _float, _int
from .data import Task, sample
from .evaluate import REFERENCE_N, REFERENCE_RESTARTS, REFERENCE_STEPS
from .execute import execute
from .files import check_free_space, writable_folder
from .plan import make_plan
from .store import ChunkStore, array_digest, fingerprint

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
    eval_pgd_steps: int = EvalSpec.pgd_steps
    restarts: int = EvalSpec.restarts
    discrepancy: bool = False

    def validate(self, width: int, d: int) -> DownstreamConfig:
        _choice("down.method", self.method, METHODS)
        _choice("down.head_init", self.head_init, HEAD_INITS)
        _choice("down.attack", self.attack, DOWN_ATTACKS)
        _choice("down.init_attack", self.init_attack, ("fgm", "pgd"))
        _choice("down.norm", self.norm, NORMS)
        if self.head_init == "random":  # no probing stage: without fine-tuning steps the head is its random init
            _int("down.steps", self.steps, lo=1)
        else:
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

    @property
    def spec(self) -> EvalSpec:
        """The attacks of the robust evaluation."""
        return EvalSpec(tuple(float(t) for t in self.taus), self.norm, self.eval_pgd_steps, self.restarts)


def representation(arch: network.Architecture, params: dict, x: jax.Array, beta: jax.Array) -> jax.Array:
    """g(x): (n, m), the pre-trained network's hidden units under the update U V and offset db."""
    return network.hidden(arch, params, x, beta)


def logits(arch: network.Architecture, params: dict, x: jax.Array, beta: jax.Array) -> jax.Array:
    """f(x) = <v, g(x)> + c: (n,)."""
    return representation(arch, params, x, beta) @ params["v"] + params["c"]


def initial_params(key: jax.Array, backbone: dict, rank: int) -> dict:
    """The backbone's parameters as saved plus a zero update U, a random V, db = 0 and a RanLI head."""
    m, d = backbone["W"].shape
    k_v, k_V = jax.random.split(key)
    return {
        **network.backbone_params(backbone),
        "U": jnp.zeros((m, rank)),
        "V": jax.random.normal(k_V, (rank, d)) / jnp.sqrt(d),
        "db": jnp.zeros((m,)),
        "v": jax.random.normal(k_v, (m,)) / jnp.sqrt(m),
        "c": jnp.zeros(()),
    }


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


def _stage(
    arch,
    params,
    W_pre,
    train,
    n,
    hp,
    key,
    beta,
    dc: DownstreamConfig,
    trained: tuple[str, ...],
    attack: str,
    steps: int,
    lr,
):
    """`steps` Adam steps on minibatches of the first n training samples, training `trained`."""
    x_all, y_all = train
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    mask = {k: jnp.asarray(k in trained, jnp.float32) for k in params}

    def loss(p, x, y, x_clean):
        ell = jax.nn.softplus(-y * logits(arch, p, x, beta)).mean()
        if not dc.discrepancy:
            return ell
        pre = representation(
            arch, {**p, "W": W_pre, "U": jnp.zeros_like(p["U"]), "db": jnp.zeros_like(p["db"])}, x_clean, beta
        )
        gap = ((representation(arch, p, x_clean, beta) - jax.lax.stop_gradient(pre)) ** 2).sum(-1).mean() / p[
            "v"
        ].shape[0]
        return ell + hp["lam"] * gap

    def step(carry, t):
        p, s = carry
        k = jax.random.fold_in(key, t)
        idx = jax.random.randint(jax.random.fold_in(k, 0), (dc.batch,), 0, n)
        x, y = x_all[idx], y_all[idx]
        xa = x
        if attack != "none":
            objective = lambda v: -y * logits(arch, p, v, beta)
            xa = x + attacks.training_delta(
                attack, objective, x, hp["tau"], dc.norm, dc.pgd_steps, jax.random.fold_in(k, 1)
            )
        g = jax.grad(loss)(p, xa, y, x)
        g = jax.tree.map(lambda gi, mi: gi * mi, g, mask)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


def make_fit(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    """fit(key, backbone {'W': (m, d), ['b': (m,)]}, beta, theta (d,), M (d, d), n, hp) -> params,
    pure and vmappable. hp: {'lr', 'probe_lr', 'tau', 'lam'} scalars (tau: the radius of every
    training attack)."""

    def fit(key, backbone, beta, theta, M, n, hp):
        k_data, k_init, k_probe, k_tune = jax.random.split(key, 4)
        train, _, _ = splits(k_data, data, theta, M, dc, which=(0,))
        params = initial_params(k_init, backbone, dc.rank)
        W = backbone["W"]
        if dc.head_init != "random":
            attack = dc.init_attack if dc.head_init == "robust" else "none"
            params = _stage(
                arch,
                params,
                W,
                train,
                n,
                hp,
                k_probe,
                beta,
                dc,
                TRAINED["probe"],
                attack,
                dc.probe_steps,
                hp["probe_lr"],
            )
        return _stage(
            arch, params, W, train, n, hp, k_tune, beta, dc, TRAINED[dc.method], dc.attack, dc.steps, hp["lr"]
        )

    return fit


def make_evaluate(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    """evaluate(params, key, beta, theta, M) -> {'val_clean', 'val_robust' (n_tau,), 'clean',
    'robust' (n_tau,), 'by_attack' (n_tau, 3)}: end to end on the input, the robust prediction
    being correct under every attack (FGM, PGD, dense along M theta / |theta|)."""
    spec = dc.spec

    def evaluate(params, key, beta, theta, M):
        k_data, _, _, _ = jax.random.split(key, 4)
        _, val, test = splits(k_data, data, theta, M, dc, which=(1, 2))
        u = M @ theta / jnp.linalg.norm(M @ theta)  # = |theta| when M is orthonormal
        k_att = jax.random.fold_in(key, 7)
        out = {}
        for name, (x, y) in (("val_", val), ("", test)):
            margin = lambda v, y=y: y * logits(arch, params, v, beta)
            clean, robust, by_attack = attacks.robust_accuracy(margin, x, y, u, k_att, spec)
            out[name + "clean"], out[name + "robust"] = clean, robust
            if not name:
                out["by_attack"] = by_attack
        return out

    return evaluate


@functools.lru_cache(maxsize=64)
def _compiled_fit(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    return jax.jit(jax.vmap(make_fit(data, dc, arch), in_axes=(0, 0, 0, 0, None, 0, 0)))


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    return jax.jit(jax.vmap(make_evaluate(data, dc, arch), in_axes=(0, 0, 0, 0, None)))


def _evaluation_only(dc: DownstreamConfig) -> DownstreamConfig:
    """dc with every fitting setting at a fixed value: evaluation depends only on the held-out
    splits and the evaluation settings, so every method and head init shares one program."""
    return dataclasses.replace(
        dc,
        method="probe",
        head_init="random",
        attack="none",
        init_attack="pgd",
        steps=0,
        probe_steps=1,
        batch=1,
        pgd_steps=1,
        discrepancy=False,
        rank=1,
    )


def _compiled(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    """The jit(vmap) fit and evaluate programs (one evaluate program for every fit setting)."""
    return _compiled_fit(data, dc, arch), _compiled_evaluate(data, _evaluation_only(dc), arch)


def _seed_array(seeds) -> np.ndarray:
    """seeds as a 1-d integer array in 0..2**32-1, or a ConfigError."""

    arr = np.asarray(seeds)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 0).any() or (arr > SEED_MAX).any():
        raise ConfigError(
            f"seeds={seeds!r} is not allowed: must be a non-empty 1-d array of integers in 0..{SEED_MAX}, one per run"
        )
    return arr


def _broadcast(name: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise ConfigError(
            f"{name} of shape {np.shape(value)} is not allowed: must broadcast to {shape} (n_runs = {shape[0]})"
        ) from None


def _per_run(name: str, value, n_runs: int, strict: bool) -> np.ndarray:
    """A per-run float32 argument (a scalar or (n_runs,)), each value checked like a setting:
    finite in float32 and > 0 (strict) or >= 0."""
    try:
        arr = np.asarray(value, dtype=float) if np.ndim(value) else np.asarray([value], dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not allowed: must be a number or one number per run") from None
    for v in np.unique(arr):
        _float(name, float(v), lo=0.0, strict=strict)
    return _broadcast(name, arr if np.ndim(value) else arr[0], (n_runs,)).astype(np.float32)


def run_keys(seeds) -> jax.Array:
    """One downstream key per run: fold 'downstream' into the run's seed."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0xD0))(jnp.asarray(seeds, jnp.uint32))


def fit_and_evaluate(
    cfg: Config,
    dc: DownstreamConfig,
    M,
    *,
    seeds,
    backbone: dict,
    beta,
    theta,
    n,
    lr,
    probe_lr=None,
    tau=0.0,
    lam=0.0,
    chunk: int = 256,
    out_dir: str | Path | None = None,
    devices=None,
    run_slice: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Fit and evaluate a flat batch of n_runs downstream runs; every argument but cfg, dc, M is
    (n_runs, ...) or broadcast. run_slice=(i, n): compute and save only block i of n of the
    chunks, then raise SliceFinished (merge the slices' folders, then call again).

    cfg: the backbones' config (its data model and architecture: unit, threshold rule). backbone:
    the pre-trained parameters as saved, {'W': (n_runs, m, d)} plus 'b' (n_runs, m) for fixed or trainable
    thresholds (see `backbones`; a head 'a' is ignored). seeds (n_runs,) ints pick the data and init
    keys; beta, n, lr, probe_lr, tau, lam (n_runs,) or scalars. Runs go through one jit(vmap)
    program in chunks of `chunk` (`purify.execute`); with out_dir, finished chunks are saved
    and a repeated call resumes. Returns numpy arrays with a leading (n_runs,) axis, as
    `make_evaluate` names them, plus 'params' (the fitted parameters) and 'failed'
    (non-finite parameters).
    """
    seeds = _seed_array(seeds)
    n_runs = len(seeds)
    backbone = {k: np.asarray(v, np.float32) for k, v in network.backbone_params(backbone).items()}
    if "W" not in backbone or not set(backbone) <= {"W", "b"}:
        raise ConfigError(
            f"backbone={sorted(backbone)} is not allowed: must hold 'W' (n_runs, m, d) and, for fixed or trainable "
            "thresholds, 'b' (n_runs, m); see purify.downstream.backbones"
        )
    if backbone["W"].ndim not in (2, 3):
        raise ConfigError(
            f"backbone['W'] of shape {backbone['W'].shape} is not allowed: must be (m, d) or (n_runs, m, d)"
        )
    m, d = backbone["W"].shape[-2:]
    arch = network.Architecture.of(cfg.validate())
    if d != cfg.data.d:
        raise ConfigError(
            f"backbone['W'] of shape {backbone['W'].shape} is not allowed: its inputs must be data.d={cfg.data.d}"
        )
    if np.shape(M) != (cfg.data.d, cfg.data.n_features):
        raise ConfigError(
            f"M of shape {np.shape(M)} is not allowed: must be (data.d, D) = ({cfg.data.d}, {cfg.data.n_features})"
        )
    if not np.isfinite(np.asarray(M)).all():
        raise ConfigError("M is not allowed: it holds non-finite values")
    if arch.bias != "relative" and "b" not in backbone:
        raise ConfigError(
            f"backbone={sorted(backbone)} is not allowed with model.bias={arch.bias!r}: pass the saved thresholds 'b'"
        )
    dc = dc.validate(m, d)
    n_in = np.asarray(n)
    if n_in.dtype.kind not in "iu":
        raise ConfigError(f"n={n!r} is not allowed: downstream sample sizes must be integers")
    n_arr = _broadcast("n", n_in, (n_runs,)).astype(np.int32)
    if n_arr.min() < 1 or n_arr.max() > dc.n_max:
        raise ConfigError(
            f"n={sorted(set(n_arr.tolist()))} is not allowed: every downstream sample size must be in "
            f"1..down.n_max={dc.n_max}"
        )
    full = lambda name, v, strict: _per_run(name, v, n_runs, strict)
    hp = {
        "lr": full("lr", lr, True),
        "probe_lr": full("probe_lr", lr if probe_lr is None else probe_lr, True),
        "tau": full("tau", tau, False),
        "lam": full("lam", lam, False),
    }
    beta = full("beta", beta, False)
    D = cfg.data.n_features
    if np.ndim(theta) not in (1, 2) or np.shape(theta)[-1] != D:
        raise ConfigError(f"theta of shape {np.shape(theta)} is not allowed: must be (D,) or (n_runs, D) with D={D}")
    theta = _broadcast("theta", np.asarray(theta, np.float32), (n_runs, D))
    if not np.isfinite(theta).all() or (np.abs(theta).sum(-1) == 0).any():
        raise ConfigError("theta is not allowed: every task vector must be finite and non-zero")
    shapes = {"W": (m, d), "b": (m,)}
    backbone = {k: _broadcast(f"backbone[{k!r}]", v, (n_runs, *shapes[k])) for k, v in backbone.items()}
    # only the latent model matters downstream: configs that differ elsewhere share programs
    data = dataclasses.replace(cfg.data, n_tasks=1, n_train=None, task_seed=0, label="rademacher")
    fit, evaluate = _compiled(data, dc, arch)
    keys = run_keys(seeds)
    M = jnp.asarray(M)
    devices = list(devices or jax.local_devices())
    if run_slice is not None and out_dir is None:
        raise ConfigError("run_slice needs out_dir: a slice's chunks must be saved to be merged")
    if out_dir is not None:
        writable_folder(out_dir, "out_dir")
        per_run = m * d + (m + d) * dc.rank + 4 * m + 64  # fitted parameters and scores
        check_free_space(out_dir, 4 * n_runs * per_run, "out_dir")
    plan = make_plan(n_runs, chunk, len(devices), run_slice)
    spec = {
        "kind": "downstream",
        "data": dataclasses.asdict(data),
        "down": dataclasses.asdict(dc),
        "arch": dataclasses.asdict(arch),
        "chunk": plan.chunk_size,
        "inputs": array_digest(np.asarray(M), seeds, beta, theta, n_arr, *hp.values(), *backbone.values()),
    }
    mesh = Mesh(np.asarray(devices), ("runs",))
    on_runs = NamedSharding(mesh, P("runs"))

    def compute(idx, work):
        put = lambda tree: jax.device_put(tree, on_runs)
        p = fit(
            put(keys[idx]),
            put({k: v[idx] for k, v in backbone.items()}),
            put(beta[idx]),
            put(theta[idx]),
            M,
            put(n_arr[idx]),
            put({k: v[idx] for k, v in hp.items()}),
        )
        e = {k: np.asarray(v) for k, v in evaluate(p, put(keys[idx]), put(beta[idx]), put(theta[idx]), M).items()}
        e.update({f"params/{k}": np.asarray(v) for k, v in p.items()})
        return e

    flat = execute(plan, ChunkStore(out_dir, fingerprint(spec)), compute, slice_mode=run_slice is not None)
    result = {k: v for k, v in flat.items() if not k.startswith("params/")}
    result["params"] = {k[len("params/") :]: v for k, v in flat.items() if k.startswith("params/")}
    finite = np.stack([np.isfinite(a.reshape(n_runs, -1)).all(-1) for a in result["params"].values()]).all(0)
    result["failed"] = ~finite
    return result


@functools.lru_cache(maxsize=64)
def _compiled_reference(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture, n: int):
    """jit(vmap) of one run's (default - reference) robust accuracy (n_tau,) on its first n test examples."""

    def one(p, key, b, th, M):
        k_data, _, _, _ = jax.random.split(key, 4)
        _, _, (x, y) = splits(k_data, data, th, M, dc, which=(2,))
        x, y = x[:n], y[:n]
        u = M @ th / jnp.linalg.norm(M @ th)
        margin = lambda v: y * logits(arch, p, v, b)
        key_att = jax.random.fold_in(jax.random.fold_in(key, 7), 0xA0D)
        default, strong = attacks.audited_accuracy(
            margin, x, y, u, key_att, dc.spec, REFERENCE_STEPS, REFERENCE_RESTARTS
        )
        return default - strong

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))


def reference_gaps(
    cfg: Config, dc: DownstreamConfig, M, *, seeds, params: dict, beta, theta, n: int | None = None, chunk: int = 64
) -> np.ndarray:
    """How much the downstream evaluation overstates robust accuracy, per fitted model: (n_runs,
    n_tau) = default minus reference robust accuracy (`attacks.audited_accuracy`, the reference
    of the 'attack converged' gate) on the first n examples of each run's own test split, both
    attacks drawn from the run's own attack stream.

    params: fitted parameters {name: (n_runs, ...)}, as `fit_and_evaluate` returns them (or the
    models a selection kept); seeds, beta, theta as there (per run or broadcast)."""

    seeds = _seed_array(seeds)
    n_runs = len(seeds)
    n = min(int(REFERENCE_N if n is None else n), dc.n_test)
    arch = network.Architecture.of(cfg.validate())
    data = dataclasses.replace(cfg.data, n_tasks=1, n_train=None, task_seed=0, label="rademacher")
    beta = _per_run("beta", beta, n_runs, False)
    theta = _broadcast("theta", np.asarray(theta, np.float32), (n_runs, cfg.data.n_features))
    f = _compiled_reference(data, _evaluation_only(dc), arch, n)
    keys, M = run_keys(seeds), jnp.asarray(M)
    out = []
    for lo in range(0, n_runs, chunk):
        sl = slice(lo, lo + chunk)
        p = {k: jnp.asarray(v[sl]) for k, v in params.items()}
        out.append(np.asarray(f(p, keys[sl], beta[sl], theta[sl], M)))
    return np.concatenate(out) if out else np.zeros((0, len(dc.taus)))


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
