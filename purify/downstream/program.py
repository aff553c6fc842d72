"""The downstream model, its fit and its evaluation, as pure functions of arrays (the model, the
methods and the head inits are described in `purify.downstream`); `purify.downstream.fitting`
vmaps them over a flat run axis and runs them chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from .. import attacks, network
from ..attacks import EvalSpec
from ..compilation import program
from ..config import NORMS, ConfigError, DataConfig, _choice, _float, _int
from ..data import Task, sample

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
    return program(jax.vmap(make_fit(data, dc, arch), in_axes=(0, 0, 0, 0, None, 0, 0)))


@functools.lru_cache(maxsize=64)
def _compiled_evaluate(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    return program(jax.vmap(make_evaluate(data, dc, arch), in_axes=(0, 0, 0, 0, None)))


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


def run_keys(seeds) -> jax.Array:
    """One downstream key per run: fold 'downstream' into the run's seed."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0xD0))(jnp.asarray(seeds, jnp.uint32))
