"""One training run as a pure function of (key, hyper-parameters, task), built from a static Config.

`make_run(cfg)` returns a `Run` whose `init`, `advance`, `observe` and `finalize` are pure and
vmappable over runs: `advance(state, task, t0, t1)` performs the SGD steps t0 .. t1 - 1 and
`observe(state, task, t)` records the trace at a log step, so a long run is a Python loop over
two compiled programs (`Run.segments` says where it is cut), which is where a progress bar and
Ctrl-C handling live. Measuring is a program of its own, not a branch inside the training
loop, because the compiler would otherwise build the whole evaluation (attacks included) twice:
it halves a new config's compile time and changes no number. The step index is shared by all
runs (never batched), so the clean/adversarial switch stays a real branch under vmap.

Random streams: the run key is split into named, independent `Streams` (init, training data,
training attacks, evaluation data, evaluation attacks).

The quantities declared in `purify.trace` are recorded at `cfg.train.log_steps` into fixed
buffers (n_log, ...), so memory does not grow with the number of steps; full weights only at
`cfg.train.snapshot_at`. The model itself is `purify.network`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from . import attacks, contrastive, network, trace
from .compilation import over_runs, program
from .config import Config, ConfigError, HParams, hparams_of
from .data import Task, sample


@struct.dataclass
class Streams:
    """The independent random streams of one run, split from its key in this order (the order
    fixes every number the toolkit has published: never reorder). The data of step t is
    fold_in(data, t), so chunking a run never changes its numbers."""

    init: jax.Array
    data: jax.Array
    attack: jax.Array
    eval_data: jax.Array
    eval_attack: jax.Array

    @classmethod
    def from_key(cls, key: jax.Array) -> Streams:
        return cls(*jax.random.split(key, len(dataclasses.fields(cls))))

    @classmethod
    def from_seed(cls, seed: int) -> Streams:
        """The streams of the run with seed `seed` (its key is jax.random.key(seed))."""
        return cls.from_key(jax.random.key(int(seed)))


@struct.dataclass
class RunState:
    """Everything one run carries between chunks."""

    params: Any
    opt_state: Any
    streams: Streams
    hp: HParams
    trace: dict  # name -> (n_log, ...) buffers, NaN until written (see purify.trace)
    snapshots: jax.Array  # (n_snapshots, m, d)
    failed_step: jax.Array  # int32, first log step at which the run was non-finite or diverged, -1 if none
    adv_start: jax.Array  # int32, this run's first adversarial step (read when the program takes it per run)
    train_set: Any = None  # (x, y) when cfg.data.n_train is set


def logistic_loss(f: jax.Array, y: jax.Array) -> jax.Array:
    """softplus(-y f), elementwise."""
    return jax.nn.softplus(-y * f)


class Run:
    """The pure pieces of one run for a static config (see module docstring)."""

    def __init__(
        self,
        cfg: Config,
        chunk: int | None = None,
        noise_free: bool = False,
        per_run_adv_start: bool = False,
        log_steps: Sequence[int] | None = None,
    ):
        """noise_free: every run this program serves has hp noise = 0, so no noise is drawn.
        per_run_adv_start: each run's first adversarial step is its own (`init`'s adv_start),
        so runs that differ only there share this program; otherwise cfg.train.adv_start, a
        constant, which keeps the clean/adversarial switch a branch instead of computing the
        attack in every step of every run. log_steps: the steps to record at (default
        cfg.train.log_steps); a program shared across adv_start values records at the union
        of their log steps."""
        self.cfg = cfg.validate()
        self.noise_free = bool(noise_free)
        self.per_run_adv_start = bool(per_run_adv_start)
        self.arch = network.Architecture.of(cfg)
        tc = cfg.train
        self.chunk = int(chunk) if chunk else tc.steps
        self.log_steps = tc.log_steps if log_steps is None else np.asarray(sorted(set(log_steps)), dtype=np.int64)
        self.snapshot_at = np.asarray(sorted(set(tc.snapshot_at)), dtype=np.int32)
        momentum = tc.momentum if tc.momentum > 0 else None
        self.opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=momentum)

    # -- data ---------------------------------------------------------------------------------
    def _batch(self, state: RunState, task: Task, t: jax.Array):
        """(x, y) of step t; for a contrastive objective (view 1, view 2) of the same z."""
        cfg = self.cfg
        key = jax.random.fold_in(state.streams.data, t)
        if cfg.train.contrastive:
            k_x, k_v = jax.random.split(key)
            x, _, _ = sample(k_x, cfg.data, task, cfg.train.batch, 0.0, noise_free=True)
            return contrastive.views(k_v, x, state.hp.noise, cfg.train.view_mask)
        if state.train_set is None:
            x, _, y = sample(key, cfg.data, task, cfg.train.batch, state.hp.noise, self.noise_free)
            return x, y
        idx = jax.random.randint(key, (cfg.train.batch,), 0, cfg.data.n_train)
        return state.train_set[0][idx], state.train_set[1][idx]

    def eval_batch(self, state: RunState, task: Task):
        x, _, y = sample(
            state.streams.eval_data, self.cfg.data, task, self.cfg.eval.n_eval, state.hp.noise, self.noise_free
        )
        return x, y

    # -- the model, as the run uses it ----------------------------------------------------------
    def logits(self, params, x, beta):
        return network.logits(self.arch, params, x, beta)

    def representation(self, params, x, beta):
        """g(x): (n, m) hidden unit outputs."""
        return network.hidden(self.arch, params, x, beta)

    def example_loss(self, params, x, y, beta):
        """(n,) per-example loss: logistic, summed over tasks; for a contrastive objective y is
        the batch of view 2 and the loss is anchor x_i's against it (a function of x_i alone)."""
        tc = self.cfg.train
        if tc.contrastive:
            return contrastive.loss(
                tc.objective, self.representation(params, x, beta), self.representation(params, y, beta), tc.temperature
            )
        return logistic_loss(self.logits(params, x, beta), y).sum(-1)

    def perturb(self, params, x, y, hp: HParams, key):
        """The training attack's delta at radius hp.tau (no gradient flows through it)."""
        tc = self.cfg.train
        objective = lambda v: self.example_loss(params, v, y, hp.beta)
        return attacks.training_delta(tc.attack, objective, x, hp.tau, tc.norm, tc.pgd_steps, key)

    def train_loss(self, params, x, y, hp: HParams, adversarial: jax.Array):
        """Mean loss; with attack='surrogate' and `adversarial`, plus tau ||grad_x loss||_*."""
        ell = self.example_loss(params, x, y, hp.beta)
        if self.cfg.train.attack != "surrogate":
            return ell.mean()
        g = attacks.input_grad(lambda v: self.example_loss(params, v, y, hp.beta), x)
        if self.cfg.train.norm == "l2":
            # ||g|| has gradient g/||g||: NaN where g = 0 (every unit silent). The double `where`
            # keeps both the value and its gradient finite there.
            sq = (g**2).sum(-1)
            dual = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        else:
            dual = jnp.abs(g).sum(-1)
        return (ell + jnp.where(adversarial, hp.tau, 0.0) * dual).mean()

    # -- the run ------------------------------------------------------------------------------
    def init(self, key: jax.Array, hp: HParams | dict, task: Task, adv_start: jax.Array | None = None) -> RunState:
        """key: a typed PRNG key; hp: HParams (or a mapping of its field names) of scalars;
        adv_start: this run's first adversarial step (default cfg.train.adv_start)."""
        cfg = self.cfg
        hp = hparams_of(hp, jnp.float32)
        streams = Streams.from_key(key)
        params = network.init_for(cfg, streams.init, hp.init_scale, hp.beta)
        r = cfg.train.adv_rank
        if r:  # U = 0: the update starts at zero and W's clean phase is untouched
            params["U"] = jnp.zeros((cfg.model.width, r))
            params["V"] = jax.random.normal(jax.random.fold_in(streams.init, 1), (r, cfg.data.d)) / jnp.sqrt(cfg.data.d)
        # inject_hyperparams keeps the learning rate in the optimizer state: set it per run.
        opt_state = self.opt.init(params)
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": hp.lr})
        train_set = None
        if cfg.data.n_train is not None:
            # the fixed training set uses the data stream at a step index training never reaches
            x, _, y = sample(
                jax.random.fold_in(streams.data, 2**32 - 1), cfg.data, task, cfg.data.n_train, hp.noise, self.noise_free
            )
            train_set = (x, y)
        buffers = trace.buffers(cfg, len(self.log_steps))
        snaps = jnp.zeros((len(self.snapshot_at), cfg.model.width, cfg.data.d), jnp.float32)
        adv_start = jnp.asarray(self.cfg.train.adv_start if adv_start is None else adv_start, jnp.int32)
        return RunState(params, opt_state, streams, hp, buffers, snaps, jnp.int32(-1), adv_start, train_set)

    def measure(self, state: RunState, task: Task, t: jax.Array, light: bool = False) -> dict:
        """Every quantity of purify.trace at the current weights (one row of the trace);
        light: attacked with the light evaluation (`EvalConfig.full_at`)."""
        return trace.measure(trace.Probe(self, state, task, t, light))

    def record(self, state: RunState, task: Task, t: jax.Array, light: bool = False) -> RunState:
        """Write the metrics at step t into its trace slot (t must be a log step)."""
        idx = jnp.searchsorted(jnp.asarray(self.log_steps), t)
        row = self.measure(state, task, t, light)
        buffers = {k: state.trace[k].at[idx].set(row[k]) for k in state.trace}
        healthy = trace.healthy(row, state.params["W"])
        bad = jnp.where((state.failed_step < 0) & ~healthy, t.astype(jnp.int32), state.failed_step)
        return state.replace(trace=buffers, failed_step=bad)

    def snapshot(self, state: RunState, t: jax.Array) -> RunState:
        idx = jnp.searchsorted(jnp.asarray(self.snapshot_at), t)
        return state.replace(snapshots=state.snapshots.at[idx].set(network.effective_weights(state.params)))

    @functools.cached_property
    def observe_at(self) -> frozenset[int]:
        """The steps at which `observe` records something: log steps and snapshot steps."""
        return frozenset(int(t) for t in self.log_steps) | frozenset(int(t) for t in self.snapshot_at)

    @functools.cached_property
    def light_at(self) -> frozenset[int]:
        """The log steps measured with the light evaluation (`observe(..., light=True)`): with
        eval.full_at = 'final' every one before the last step, else none."""
        if self.cfg.eval.full_at == "every":
            return frozenset()
        return frozenset(int(t) for t in self.log_steps if t < self.cfg.train.steps)

    def observe(self, state: RunState, task: Task, t: jax.Array, light: bool = False) -> RunState:
        """Record the trace at step t if it is a log step and the weights if it is a snapshot
        step (before step t's update). A program of its own, called from Python between
        `advance` calls: inside the training loop it doubled what the compiler had to build.
        light (static): attack with the light evaluation; the caller picks it at `light_at`."""
        is_log = jnp.any(jnp.asarray(self.log_steps) == t)
        state = jax.lax.cond(is_log, lambda s: self.record(s, task, t, light), lambda s: s, state)
        if len(self.snapshot_at):
            is_snap = jnp.any(jnp.asarray(self.snapshot_at) == t)
            state = jax.lax.cond(is_snap, lambda s: self.snapshot(s, t), lambda s: s, state)
        return state

    def segments(self, start: int, step_chunk: int) -> list[tuple[int, int]]:
        """The `advance` calls (t0, t1) that take a run from step `start` to the end: cut at every
        multiple of `step_chunk` (a step call: progress, checkpoints and Ctrl-C happen there) and
        at every step in `observe_at` (observed before it is trained on)."""
        total = self.cfg.train.steps
        cuts = set(range(0, total, step_chunk)) | {t for t in self.observe_at if t < total}
        cuts = sorted(c for c in cuts if c > start) + [total]
        return [(a, b) for a, b in zip([start] + cuts[:-1], cuts) if a < b]

    def sgd_step(self, state: RunState, task: Task, t: jax.Array) -> RunState:
        tc, hp = self.cfg.train, state.hp
        x, y = self._batch(state, task, t)
        adv_start = state.adv_start if self.per_run_adv_start else tc.adv_start
        adversarial = jnp.asarray(t >= adv_start) & (tc.attack != "none")
        if tc.attack in attacks.TRAINING_ATTACKS:
            key = jax.random.fold_in(state.streams.attack, t)
            x = jax.lax.cond(adversarial, lambda: x + self.perturb(state.params, x, y, hp, key), lambda: x)
        grads = jax.grad(self.train_loss)(state.params, x, y, hp, adversarial)
        if tc.adv_rank:  # clean phase trains W only; the adversarial phase trains U and V only
            on = adversarial.astype(jnp.float32)
            grads = {k: g * (on if k in ("U", "V") else (1.0 - on) if k == "W" else 1.0) for k, g in grads.items()}
        updates, opt_state = self.opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if self.cfg.model.bias == "trainable":  # a trainable threshold stays non-negative
            params = {**params, "b": jnp.maximum(params["b"], 0.0)}
        return state.replace(params=params, opt_state=opt_state)

    def advance(self, state: RunState, task: Task, t0: jax.Array, t1: jax.Array) -> RunState:
        """SGD steps t0 .. t1 - 1 (t0, t1 traced: one program for every segment of the run).
        Nothing is observed in between: `segments` cuts the run at every step to observe."""
        return jax.lax.fori_loop(t0, t1, lambda t, s: self.sgd_step(s, task, t), state)

    def finalize(self, state: RunState, task: Task) -> RunState:
        """Observe the final weights (log step `steps`)."""
        return self.observe(state, task, jnp.int32(self.cfg.train.steps))

    def __call__(self, key: jax.Array, hp: dict, task: Task, step_chunk: int | None = None) -> RunState:
        """The whole run, unbatched: init, then every segment observed and advanced, then finalize."""
        state = self.init(key, hp, task)
        for t0, t1 in self.segments(0, step_chunk or self.chunk):
            if t0 in self.observe_at:
                state = self.observe(state, task, jnp.int32(t0), t0 in self.light_at)
            state = self.advance(state, task, jnp.int32(t0), jnp.int32(t1))
        return self.finalize(state, task)


def make_run(cfg: Config, chunk: int | None = None, noise_free: bool = False) -> Run:
    return Run(cfg, chunk, noise_free)


class Programs(NamedTuple):
    """The compiled programs of a static config, each jit(vmap(...)) over a leading run axis."""

    run: Run
    init: Any  # (keys, hp, task, adv_start) -> state
    advance: Any  # (state, task, t0, t1) -> state, donating state
    observe: Any  # (state, task, t) -> state, donating state; finalize is observe at t = steps
    observe_light: Any  # the same with the light evaluation, at run.light_at (compiled on first use)


def compiled(
    cfg: Config,
    chunk: int,
    noise_free: bool = False,
    per_run_adv_start: bool = False,
    log_steps: tuple[int, ...] | None = None,
    group: int = 1,
) -> Programs:
    """The programs of a static config (see `Run` for the options), cached so that a repeated
    call with the same config (a REPL session) never recompiles, however its arguments are
    spelled (positional, keyword or defaulted). group: runs per batched operation in `advance`
    and `observe` (`compilation.over_runs`; 1: plain vmap)."""
    steps = None if log_steps is None else tuple(int(t) for t in log_steps)
    return _programs(cfg, int(chunk), bool(noise_free), bool(per_run_adv_start), steps, int(group))


@functools.lru_cache(maxsize=32)
def _programs(cfg, chunk, noise_free, per_run_adv_start, log_steps, group) -> Programs:
    run = Run(cfg, chunk, noise_free, per_run_adv_start, log_steps)
    init = program(jax.vmap(run.init, in_axes=(0, 0, None, 0)), quick=True)
    advance = program(over_runs(run.advance, group), donate_argnums=0, quick=True)
    observe = program(over_runs(run.observe, group), donate_argnums=0, quick=True)
    light = functools.partial(run.observe, light=True)
    observe_light = program(over_runs(light, group), donate_argnums=0, quick=True)
    return Programs(run, init, advance, observe, observe_light)


compiled.cache_info = _programs.cache_info
compiled.cache_clear = _programs.cache_clear


BATCHINGS = ("auto", "vmap", "groups")


def run_group(cfg: Config, chunk_size: int, n_devices: int, batching: str | int = "auto") -> int:
    """Runs per batched operation of the training programs (`compilation.over_runs`): 1 is a
    plain vmap over the chunk.

    batching: 'vmap'; an integer b >= 1 (groups of b); 'groups' or 'auto', groups of
    CPU_GROUP, where 'auto' groups only on a single CPU device (elsewhere a plain vmap: an
    accelerator's batched matmuls are fast, and a sharded run axis is not scanned)."""
    if isinstance(batching, bool) or not (
        batching in BATCHINGS or (isinstance(batching, numbers.Integral) and batching >= 1)
    ):
        raise ConfigError(
            f"batching={batching!r} is not allowed: must be one of {', '.join(map(repr, BATCHINGS))} or an integer >= 1"
        )
    if batching == "vmap" or (batching == "auto" and (jax.default_backend() != "cpu" or n_devices > 1)):
        return 1
    group = CPU_GROUP if isinstance(batching, str) else int(batching)
    return group if group < chunk_size else 1  # one group of the whole chunk is the plain vmap


# Networks per group on XLA:CPU. Timed on 2 cores (net-steps/s, FGM training, 50 steps per
# call; vmap / groups of 2, 4, 8, 16): d 64, width 128, batch 256, 64 networks: 2249 / 2732,
# 3068, 3209, 3091; d 256, width 512, batch 256, 16 networks: 371 / 508, 514, 457, 391; d 64,
# width 256, batch 128, 32 networks: 2868 / 3530, 3525, 2965, 3206; d 128, width 512, batch 128,
# 16 networks: 848 / 1142, 1058, 1044, 921. Groups of 4 are within 7% of the best of each and
# 1.23-1.39x the plain vmap.
CPU_GROUP = 4
