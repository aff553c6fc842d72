"""The downstream model, its fit and its evaluation, as pure functions of arrays (the model, the
methods and the head inits are described in `purify.downstream`); `purify.downstream.fitting`
vmaps them over a flat run axis and runs them chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import attacks, network
from ..attacks import EvalSpec
from ..compilation import program
from ..config import NORMS, ConfigError, DataConfig, _choice, _float, _int
from ..data import Task, sample
from ..engine import Chunk

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


class Stage(NamedTuple):
    """One stage of a fit: Adam, started afresh, on the `trained` parameters for `steps` steps,
    each on a minibatch of the run's first n training samples under `attack`, at learning rate
    hp[`lr`], with the stage's own key (split `key_index` of the run's key)."""

    name: str
    trained: tuple[str, ...]
    attack: str
    steps: int
    lr: str
    key_index: int


def stages(dc: DownstreamConfig) -> tuple[Stage, ...]:
    """The stages of a fit: the probing stage of RoLI / StLI (RanLI has none), then fine-tuning."""
    tune = Stage("fine-tune", TRAINED[dc.method], dc.attack, dc.steps, "lr", 3)
    if dc.head_init == "random":
        return (tune,)
    attack = dc.init_attack if dc.head_init == "robust" else "none"
    return (Stage("probe", TRAINED["probe"], attack, dc.probe_steps, "probe_lr", 2), tune)


def _stage_steps(arch, params, W_pre, train, n, hp, key, beta, dc: DownstreamConfig, stage: Stage, t0, t1):
    """Steps t0 .. t1 - 1 (counted within `stage`) of the stage, from Adam's initial state."""
    x_all, y_all = train
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=hp[stage.lr])
    mask = {k: jnp.asarray(k in stage.trained, jnp.float32) for k in params}

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
        if stage.attack != "none":
            objective = lambda v: -y * logits(arch, p, v, beta)
            xa = x + attacks.training_delta(
                stage.attack, objective, x, hp["tau"], dc.norm, dc.pgd_steps, jax.random.fold_in(k, 1)
            )
        g = jax.grad(loss)(p, xa, y, x)
        g = jax.tree.map(lambda gi, mi: gi * mi, g, mask)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(t0, t1))
    return params


class FitState(NamedTuple):
    """A downstream run's state: the model's parameters (see `initial_params`) and, once
    observed at the end, its evaluation (`make_evaluate`'s scores; zeros before)."""

    params: dict
    scores: dict


class FitInputs(NamedTuple):
    """What a downstream run is fitted from, per run (leading run axis when batched): its key,
    the backbone {'W': (m, d), ['b': (m,)]}, beta, the task vector theta (D,), its sample size
    n and the hyper-parameters {'lr', 'probe_lr', 'tau', 'lam'}."""

    key: jax.Array
    backbone: dict
    beta: jax.Array
    theta: jax.Array
    n: jax.Array
    hp: dict


class FitProgram:
    """A downstream fit as a program of the engine (`purify.engine`): `init` draws the head and
    the update, `advance(state, inputs, M, t0, t1)` runs steps t0 .. t1 - 1 of the fit (the
    stages back to back: probing, then fine-tuning; a segment never crosses a stage, and each
    stage starts Adam afresh), `observe(state, inputs, M)` evaluates at the end. Each is pure
    and vmappable over runs; `compiled` holds their jit(vmap) over a leading run axis (the
    dictionary M shared)."""

    def __init__(self, data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
        self.data, self.dc, self.arch = data, dc, arch
        self.stages = stages(dc)
        ends = [0]
        for st in self.stages:
            ends.append(ends[-1] + st.steps)
        self.starts, self.steps = tuple(ends[:-1]), ends[-1]

    def keys(self, key: jax.Array):
        """(data, init, probe, tune) keys of a run."""
        return jax.random.split(key, 4)

    def init(self, inputs: FitInputs, M: jax.Array) -> FitState:
        params = initial_params(self.keys(inputs.key)[1], inputs.backbone, self.dc.rank)
        return FitState(params, _zero_scores(len(self.dc.taus)))

    def stage_at(self, t0: int) -> int:
        """The stage that step t0 belongs to."""
        return max(i for i, s in enumerate(self.starts) if s <= t0)

    def segments(self, start: int) -> list[tuple[int, int]]:
        """One call per stage (or the rest of the stage `start` falls in)."""
        ends = [s + st.steps for s, st in zip(self.starts, self.stages)]
        return [(max(start, s), e) for s, e in zip(self.starts, ends) if e > max(start, s)]

    def advance_stage(self, i: int):
        """advance(state, inputs, M, t0, t1) within stage i (t0, t1 counted from the fit's start)."""
        stage, first = self.stages[i], self.starts[i]

        def advance(state: FitState, inputs: FitInputs, M, t0, t1):
            keys = self.keys(inputs.key)
            train, _, _ = splits(keys[0], self.data, inputs.theta, M, self.dc, which=(0,))
            params = _stage_steps(
                self.arch,
                state.params,
                inputs.backbone["W"],
                train,
                inputs.n,
                inputs.hp,
                keys[stage.key_index],
                inputs.beta,
                self.dc,
                stage,
                t0 - first,
                t1 - first,
            )
            return FitState(params, state.scores)

        return advance

    def observe(self, state: FitState, inputs: FitInputs, M) -> FitState:
        scores = make_evaluate(self.data, _evaluation_only(self.dc), self.arch)(
            state.params, inputs.key, inputs.beta, inputs.theta, M
        )
        return FitState(state.params, scores)


def _zero_scores(n_tau: int) -> dict:
    z = jnp.zeros((), jnp.float32)
    return {
        "val_clean": z,
        "val_robust": jnp.zeros((n_tau,), jnp.float32),
        "clean": z,
        "robust": jnp.zeros((n_tau,), jnp.float32),
        "by_attack": jnp.zeros((n_tau, len(attacks.ATTACK_NAMES)), jnp.float32),
    }


def make_fit(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    """fit(key, backbone {'W': (m, d), ['b': (m,)]}, beta, theta (d,), M (d, d), n, hp) -> params,
    pure and vmappable: the `FitProgram`'s stages in one function. hp: {'lr', 'probe_lr',
    'tau', 'lam'} scalars (tau: the radius of every training attack)."""
    program_ = FitProgram(data, dc, arch)

    def fit(key, backbone, beta, theta, M, n, hp):
        inputs = FitInputs(key, backbone, beta, theta, n, hp)
        state = program_.init(inputs, M)
        for i, (t0, t1) in enumerate(program_.segments(0)):
            state = program_.advance_stage(program_.stage_at(t0))(state, inputs, M, t0, t1)
        return state.params

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


@functools.lru_cache(maxsize=64)
def _compiled_init(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    return program(jax.vmap(FitProgram(data, dc, arch).init, in_axes=(0, None)))


@functools.lru_cache(maxsize=128)
def _compiled_advance(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture, t0: int, t1: int):
    fit = FitProgram(data, dc, arch)
    advance = fit.advance_stage(fit.stage_at(t0))
    return program(jax.vmap(lambda state, inputs, M: advance(state, inputs, M, t0, t1), in_axes=(0, 0, None)))


@functools.lru_cache(maxsize=64)
def _compiled_observe(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture):
    # evaluation depends only on the held-out splits and the evaluation settings: one program
    # for every method and head init
    return program(jax.vmap(FitProgram(data, _evaluation_only(dc), arch).observe, in_axes=(0, 0, None)))


def fit_chunk(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture, inputs: FitInputs, M, sharding=None):
    """A chunk of downstream runs (`inputs` with a leading run axis, M shared) as the engine
    runs it: outputs the scores and the fitted parameters ('params/<name>')."""
    fit = FitProgram(data, dc, arch)

    def outputs(state: FitState) -> dict:
        out = {k: np.asarray(v) for k, v in state.scores.items()}
        out.update({f"params/{k}": np.asarray(v) for k, v in state.params.items()})
        return out

    return Chunk(
        init=lambda: _compiled_init(data, dc, arch)(inputs, M),
        advance=lambda state, t0, t1: _compiled_advance(data, dc, arch, t0, t1)(state, inputs, M),
        observe=lambda state, t: _compiled_observe(data, dc, arch)(state, inputs, M),
        segments=fit.segments,
        steps=fit.steps,
        outputs=outputs,
        sharding=sharding,
    )


def run_keys(seeds) -> jax.Array:
    """One downstream key per run: fold 'downstream' into the run's seed."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0xD0))(jnp.asarray(seeds, jnp.uint32))
