"""Train many networks in one compiled program: a flattened (hyper-parameter row x seed) run axis.

`sweep(cfg, grid, seeds)` validates everything, then runs `jit(vmap(run))` over chunks of the run
axis (the last chunk padded, the padding dropped). With `out_dir`, every finished chunk is
written atomically and a repeated call with the same config, grid and seeds skips it, so an
interrupted sweep resumes where it stopped. Seed s uses the key `jax.random.key(s)` on every
grid row: rows are compared on the same init and data (common random numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import attacks, network, trace, train
from .config import HPARAM_NAMES, Config, ConfigError, HParams, plain
from .data import Task, make_task
from .execute import DeferredInterrupt, SliceFinished, SweepInterrupted, execute
from .files import check_free_space, writable_folder
from .plan import make_plan
from .provenance import provenance
from .results import Results, warn_failed
from .store import ChunkStore, merge_runs
from .store import fingerprint as _hash

__all__ = [
    "SliceFinished",
    "SweepInterrupted",
    "assemble",
    "auto_chunk_size",
    "fingerprint",
    "grid_table",
    "merge_runs",
    "network_bytes",
    "seed_list",
    "sweep",
]


def network_bytes(cfg: Config) -> int:
    """A conservative estimate of the device memory one network of a sweep needs (bytes).

    State carried between chunks (parameters, optimizer state, trace buffers, snapshots, a
    finite training set) plus the largest working set of a step: the training batch (latents
    as k one-hot rows, inputs, input gradients, m-wide activations and their gradients) or the
    evaluation at a log point (the same on n_eval examples, with PGD's iterates), times 1.5 for
    what XLA keeps alive around them. On CPU it is 1.6-1.9x XLA's own memory analysis of the
    compiled chunk (d = 16 .. 256); tests/test_scale.py checks it never falls below that.
    """
    d, m, T, k = cfg.data.d, cfg.model.width, cfg.data.n_tasks, cfg.data.k
    tc, ec = cfg.train, cfg.eval
    params = m * d + m * T + m
    state = params * (2 if tc.momentum > 0 else 1) + params  # params, momentum, gradients
    state += len(tc.log_steps) * trace.floats_per_log_point(cfg) + len(set(tc.snapshot_at)) * m * d
    if cfg.data.n_train:
        state += cfg.data.n_train * (d + T)

    def working(n):
        return n * (k + 4) * d + 4 * n * m

    return int(4 * 1.5 * (state + max(working(tc.batch), working(ec.n_eval))))


def memory_budget(devices: Sequence) -> int:
    """Bytes one device may use for a chunk: half of an accelerator's memory limit, or half of
    the host's available memory shared among the host's devices."""
    stats = getattr(devices[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return int(0.5 * stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 4 << 30
    return int(0.5 * avail / len(devices))


def auto_chunk_size(cfg: Config, n_runs: int, budget_bytes: int | None = None, devices: Sequence | None = None) -> int:
    """The most networks per compiled call that fit `budget_bytes` per device (default:
    `memory_budget`), a multiple of the device count unless all runs fit."""
    devices = list(devices or jax.local_devices())
    budget = memory_budget(devices) if budget_bytes is None else int(budget_bytes)
    per = network_bytes(cfg)
    base = 4 * (cfg.data.d + cfg.data.n_tasks) * cfg.data.n_features * 4  # task arrays and slack
    per_device = (budget - base) // per
    if per_device < 1:
        raise ConfigError(
            f"this config is not allowed here: one network of model.width={cfg.model.width}, data.d={cfg.data.d}, "
            f"data.features={cfg.data.n_features}, train.batch={cfg.train.batch}, eval.n_eval={cfg.eval.n_eval} and "
            f"{len(cfg.train.log_steps)} log points (train.n_log={cfg.train.n_log}) needs about "
            f"{(per + base) / 2**30:.2f} GiB, more than the {budget / 2**30:.2f} GiB memory budget of this device; "
            "make the largest of these smaller"
        )
    return int(min(n_runs, per_device * len(devices)))


def check_chunk_memory(
    cfg: Config,
    chunk_size: int,
    devices: Sequence | None = None,
    budget_bytes: int | None = None,
    n_runs: int | None = None,
) -> None:
    """A chunk size chosen by hand must fit the device's whole memory (twice the `memory_budget`
    that `auto_chunk_size` fills): otherwise a ConfigError naming the settings that drive the
    estimate, before anything compiles, instead of XLA running out of memory mid-sweep."""
    devices = list(devices or jax.local_devices())
    limit = 2 * (memory_budget(devices) if budget_bytes is None else int(budget_bytes))
    per, base = network_bytes(cfg), 4 * (cfg.data.d + cfg.data.n_tasks) * cfg.data.n_features * 4
    per_device = math.ceil(min(int(chunk_size), n_runs or int(chunk_size)) / len(devices))
    if per_device * per + base > limit:
        fits = max(0, (limit - base) // per) * len(devices)
        raise ConfigError(
            f"chunk_size={chunk_size} is not allowed here: {per_device} networks per device of model.width="
            f"{cfg.model.width}, data.d={cfg.data.d}, train.batch={cfg.train.batch}, eval.n_eval={cfg.eval.n_eval} "
            f"and {len(cfg.train.log_steps)} log points need about {(per_device * per + base) / 2**30:.2f} GiB, more "
            f"than the {limit / 2**30:.2f} GiB this device has; use a chunk size <= {fits} (or leave it unset to "
            "take the largest that fits half the memory)"
        )


def written_bytes(cfg: Config, n_runs: int, chunk_size: int) -> int:
    """The bytes a sweep of `n_runs` networks writes to its runs folder: every run's trace,
    snapshots and final parameters (float32), plus the checkpoint of the chunk in flight."""
    d, m, T = cfg.data.d, cfg.model.width, cfg.data.n_tasks
    params = m * d + m * T + m + m * d * (cfg.train.adv_rank > 0)
    per_run = len(cfg.train.log_steps) * trace.floats_per_log_point(cfg) + len(set(cfg.train.snapshot_at)) * m * d
    per_run += params + 1
    state = 3 * params + per_run  # parameters, optimizer state, trace buffers of a run in flight
    return 4 * (n_runs * per_run + min(chunk_size, n_runs) * state)


# Settings that fix no shape: swept, they are per-run values of one program, like HParams.
PER_RUN = ("train.adv_start",)


def _grid_values(name: str, values) -> list:
    if not isinstance(values, (str, bytes)) and isinstance(values, Iterable):
        values = plain(list(values))  # NumPy / JAX arrays and scalars become Python values
    if not isinstance(values, tuple) or len(values) == 0:
        raise ConfigError(f"grid[{name!r}]={values!r} is not allowed: must be a non-empty list of values")
    return list(values)


def grid_rows(cfg: Config, grid: Mapping[str, Iterable] | None) -> tuple[list[dict], list[str]]:
    """The grid's rows (Cartesian product, first key slowest), each {column: value}, and the
    column names. A hyper-parameter keeps its bare name ('tau'); any other setting is named
    dotted ('model.width', 'train.adv_start'; a unique bare name such as 'width' is accepted).
    Every row's full config is validated here, before anything compiles."""
    columns, values = [], []
    for key, vals in dict(grid or {}).items():
        name = key.split(".", 1)[1] if key.startswith("hp.") else key
        if name not in HPARAM_NAMES:
            try:
                name = cfg.resolve(name, vals)
            except ConfigError as exc:
                raise ConfigError(
                    f"grid key {key!r} is not allowed: {exc}; a grid sweeps hyper-parameters "
                    f"{list(HPARAM_NAMES)} or any setting of `purify list --settings`"
                ) from None
            name = name.removeprefix("hp.")
        if name in columns:
            raise ConfigError(f"grid key {key!r} is not allowed: {name!r} is already in the grid")
        columns.append(name)
        values.append(_grid_values(key, vals))
    rows = [dict(zip(columns, combo)) for combo in itertools.product(*values)] if columns else [{}]
    for row in rows:
        row_config(cfg, row)  # validates
    return rows, columns


def row_config(cfg: Config, row: Mapping) -> Config:
    """The full config of one grid row: cfg with the row's settings and hyper-parameters."""
    hp = {f"hp.{n}": v for n, v in row.items() if n in HPARAM_NAMES}
    other = {n: v for n, v in row.items() if n not in HPARAM_NAMES}
    HParams(**{**dataclasses.asdict(cfg.hp), **{n[3:]: v for n, v in hp.items()}}).validate(prefix="grid")
    try:
        return cfg.set(**other, **hp).validate()
    except ConfigError as exc:
        raise ConfigError(f"grid row {dict(row)}: {exc}") from None


def _static_part(row: Mapping) -> tuple:
    """What of a row decides its program: every setting but hyper-parameters and PER_RUN."""
    return tuple((n, v) for n, v in row.items() if n not in HPARAM_NAMES and n not in PER_RUN)


def grid_table(cfg: Config, grid: Mapping[str, Iterable[float]] | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Cartesian product of a grid of hyper-parameters only (first key slowest) over cfg.hp
    defaults, as {name: (H,) float32}; every row validated."""
    rows, names = grid_rows(cfg, grid)
    bad = [n for n in names if n not in HPARAM_NAMES]
    if bad:
        raise ConfigError(f"grid key {bad[0]!r} is not allowed here: hyper-parameters are {list(HPARAM_NAMES)}")
    return _hp_table(cfg, rows), names


def _hp_table(cfg: Config, rows: list[dict]) -> dict[str, np.ndarray]:
    return {n: np.asarray([row.get(n, getattr(cfg.hp, n)) for row in rows], np.float32) for n in HPARAM_NAMES}


def seed_list(seeds: int | Sequence[int]) -> np.ndarray:
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds!r} is not allowed: must be >= 1 or a list of seeds")
        return np.arange(int(seeds))
    arr = np.asarray(list(seeds))
    if arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 0).any() or len(np.unique(arr)) != len(arr):
        raise ConfigError(f"seeds={seeds!r} is not allowed: must be a count or a list of distinct integers >= 0")
    return arr


def fingerprint(cfg: Config, table: dict, seeds: np.ndarray, chunk_size: int, task: Task | None = None) -> str:
    """The name of a sweep's folder of finished chunks: a hash of everything that decides its
    numbers, the task's dictionary and label vectors included (a sweep may be given a task
    other than the config's own, e.g. a downstream task)."""
    spec = {
        "cfg": cfg.to_dict(),
        "hp": {k: v.tolist() for k, v in table.items()},
        "seeds": seeds.tolist(),
        "chunk": chunk_size,
    }
    if task is not None:
        spec["task"] = _task_digest(task)
    return _hash(spec)


def _task_digest(task: Task) -> str:
    return hashlib.sha256(
        np.asarray(task.M, np.float32).tobytes() + np.asarray(task.w_star, np.float32).tobytes()
    ).hexdigest()


def _flat_state(state) -> dict:
    """A training state as flat host arrays s0, s1, ... (PRNG keys as their raw data)."""
    leaves = jax.tree_util.tree_leaves(state)
    return {f"s{i}": np.asarray(jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}


def _restore_state(template, arrays: dict):
    """`template` (a state of the right structure) with the checkpoint's arrays, or None if they
    do not fit it (then the checkpoint is not this chunk's and is not used)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for i, x in enumerate(leaves):
        a = arrays.get(f"s{i}")
        want = jax.random.key_data(x) if _is_key(x) else x
        if a is None or a.shape != want.shape or a.dtype != want.dtype:
            return None
        out.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(x)) if _is_key(x) else a)
    if len(arrays) - 1 != len(leaves):  # the arrays plus __done__
        return None
    return jax.tree_util.tree_unflatten(treedef, out)


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


# What every saved chunk of a sweep holds: each traced quantity and the run's health and snapshots
# (its final parameters depend on the architecture). A chunk lacking one is damaged.
CHUNK_ARRAYS = frozenset({q.name for q in trace.QUANTITIES} | {"failed_step", "snapshots", "W_final"})


def _run_chunk(fns, keys, hp, adv_start, task, n_steps, step_chunk, work=None):
    """Train one chunk of runs to the end, resuming from `work`'s checkpoint when there is one
    and checkpointing through it (see purify.execute.ChunkWork); None: no checkpoints."""
    run, init, advance, observe = fns
    # Every leaf of the state leads with the run axis. XLA may hand some back replicated (P()),
    # equivalent on one device but a different cache key: pin them all to the keys' sharding so
    # every call of `advance` sees the same input and traces once.
    on_runs = keys.sharding
    state, start = jax.device_put(init(keys, hp, task, adv_start), on_runs), 0
    ckpt = work.resume() if work is not None else None
    if ckpt is not None:
        restored = _restore_state(state, ckpt)
        if restored is None:
            work.reject("it does not fit this chunk's state")
        else:
            state, start = jax.device_put(restored, on_runs), int(ckpt["__done__"])
    # (state, steps done) change together in one assignment, so an interrupt never separates them.
    # A state saved at step t has not been observed at t yet: the rerun observes it first.
    current = (state, start)
    try:
        with DeferredInterrupt() as interrupt:
            for t0, t1 in run.segments(start, step_chunk):
                state = current[0]
                if t0 in run.observe_at:
                    state = jax.device_put(observe(state, task, jnp.int32(t0)), on_runs)
                state = jax.device_put(advance(state, task, jnp.int32(t0), jnp.int32(t1)), on_runs)
                current = (state, t1)
                if t1 % step_chunk and t1 != n_steps:
                    continue  # a cut at a log step inside a step call
                if work is not None and work.active:
                    jax.block_until_ready(current[0].failed_step)
                    work.advanced(current[1], lambda s=current[0]: _flat_state(s))
                interrupt.check()
    except KeyboardInterrupt:
        state = current[0]
        # after a second Ctrl-C the state handed to the call in flight may be donated (deleted):
        # then the last checkpoint stands
        alive = not any(x.is_deleted() for x in jax.tree_util.tree_leaves(state))
        if work is not None and alive:
            work.done = current[1]
            work.interrupted(_flat_state(state))
        raise
    state = observe(current[0], task, jnp.int32(n_steps))
    out = {k: np.asarray(v) for k, v in state.trace.items()}
    out["failed_step"] = np.asarray(state.failed_step)
    out["snapshots"] = np.asarray(state.snapshots)
    for name, value in state.params.items():
        out[f"{name}_final"] = np.asarray(value)
    return out


def sweep(
    cfg: Config,
    grid: Mapping[str, Iterable[float]] | None = None,
    seeds: int | Sequence[int] = 8,
    *,
    task: Task | None = None,
    chunk_size: int | None = None,
    step_chunk: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    devices: Sequence | None = None,
    memory_budget_bytes: int | None = None,
    run_slice: tuple[int, int] | None = None,
    keep_params: bool = True,
    distributed: bool | None = None,
    checkpoint_seconds: float = 60.0,
) -> Results:
    """Train every (grid row, seed) network; return a Results with axes (hparam, seed, ...).

    grid: {hyper-parameter name: values}, e.g. {"tau": [0, 0.1, 0.2]}; unset names take cfg.hp.
    seeds: a count (0..n-1) or a list. chunk_size: networks per compiled call (default: as many
    as fit `memory_budget_bytes` per device, see `auto_chunk_size`).
    step_chunk: SGD steps per compiled call (default steps/20; progress is reported per call).
    out_dir: finished run chunks are written atomically to out_dir/<fingerprint>/ and found
    again on resume; the fingerprint hashes config, grid, seeds and chunk size, so sweeps
    that differ never share files and identical sweeps (from any experiment) do.
    devices: the run axis of every chunk is sharded over a mesh of these (default: all local
    devices); a chunk is padded to a multiple of their number and the padding dropped.
    run_slice=(i, n): compute only the i-th of n contiguous blocks of chunks (a job array or
    one process of several), save them to out_dir and raise SliceFinished.
    keep_params: keep the final parameters (W_final, ...) in the results.
    checkpoint_seconds: with out_dir, the training state of the chunk in flight is written
    atomically at most this often (at the end of a step call) and on Ctrl-C; a rerun resumes
    from it with the same numbers as an uninterrupted run. 0: after every step call.
    distributed: under jax.distributed (default: when jax.process_count() > 1), process p
    computes the p-th block of chunks on its local devices and the results are all-gathered,
    so every process returns the whole sweep.
    """
    cfg = cfg.validate()
    rows, swept = grid_rows(cfg, grid)
    seeds = seed_list(seeds)
    devices = list(devices or jax.local_devices())
    if run_slice is not None and out_dir is None:
        raise ConfigError("run_slice needs out_dir: a slice's chunks must be saved to be merged")
    if out_dir is not None:
        writable_folder(out_dir, "out_dir")
    if step_chunk is not None and (
        isinstance(step_chunk, bool) or not isinstance(step_chunk, numbers.Integral) or step_chunk < 1
    ):
        raise ConfigError(f"step_chunk={step_chunk!r} is not allowed: must be an integer >= 1")
    if (
        isinstance(checkpoint_seconds, bool)
        or not isinstance(checkpoint_seconds, numbers.Real)
        or not (0 <= checkpoint_seconds < math.inf)
    ):
        raise ConfigError(f"checkpoint_seconds={checkpoint_seconds!r} is not allowed: must be a number >= 0")
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_static_part(row), []).append(i)
    data_swept = [n for n in swept if n.startswith("data.")]
    if task is not None and data_swept:
        raise ConfigError(f"grid key {data_swept[0]!r} is not allowed with task=: the task fixes the data model")
    # every group's chunk size is checked before the first one compiles
    jobs = []
    for static, idx in groups.items():
        cfg_g = cfg.set(**dict(static)) if static else cfg
        n_runs = len(idx) * len(seeds)
        if chunk_size is None:
            size = auto_chunk_size(cfg_g, n_runs, memory_budget_bytes, devices)
        else:
            make_plan(n_runs, chunk_size)  # the chunk size's own rule first
            check_chunk_memory(cfg_g, chunk_size, devices, memory_budget_bytes, n_runs)
            size = chunk_size
        jobs.append((cfg_g, idx, size))
    if out_dir is not None:
        need = sum(written_bytes(c, len(idx) * len(seeds), size) for c, idx, size in jobs)
        check_free_space(out_dir, need, "out_dir")
    parts, sliced = [], []
    for number, (cfg_g, idx, size) in enumerate(jobs):
        label = ", ".join(f"{n}={v}" for n, v in _static_part(rows[idx[0]]))
        try:
            parts.append(
                _sweep_group(
                    cfg_g,
                    [rows[i] for i in idx],
                    seeds,
                    task=task,
                    chunk_size=size,
                    step_chunk=step_chunk,
                    out_dir=out_dir,
                    progress=progress,
                    devices=devices,
                    run_slice=run_slice,
                    distributed=distributed,
                    checkpoint_seconds=checkpoint_seconds,
                    keep_params=keep_params,
                    label=f"group {number + 1}/{len(jobs)} ({label})" if len(jobs) > 1 else "",
                )
            )
        except SliceFinished as done:
            sliced.append(done)
    if sliced:
        first = sliced[0]
        raise SliceFinished(first.index, first.count, sum(d.computed for d in sliced), first.where)
    res = assemble(cfg, parts, list(groups.values()), rows, swept, seeds)
    warn_failed(res)
    return res


def _per_run_adv_start(cfg: Config, rows: list[dict]) -> np.ndarray | None:
    """Each row's first adversarial step when the grid sweeps it, else None (a constant)."""
    if not any("train.adv_start" in row for row in rows):
        return None
    return np.asarray([row.get("train.adv_start", cfg.train.adv_start) for row in rows], np.int32)


def _sweep_group(
    cfg: Config,
    rows: list[dict],
    seeds: np.ndarray,
    *,
    task,
    chunk_size,
    step_chunk,
    out_dir,
    progress,
    devices,
    run_slice,
    distributed,
    checkpoint_seconds,
    keep_params,
    label,
):
    """Train the rows of one static config (one program); returns (flat arrays, run, task)."""
    table = _hp_table(cfg, rows)
    adv_start = _per_run_adv_start(cfg, rows)
    log_steps = None
    if adv_start is not None:
        table["train.adv_start"] = adv_start  # part of the fingerprint: it decides the numbers
        union = set()
        for a in np.unique(adv_start):
            union |= set(cfg.set(**{"train.adv_start": int(a)}).train.log_steps.tolist())
        log_steps = tuple(sorted(union))
    H, S = len(rows), len(seeds)
    n_runs = H * S
    n_proc = jax.process_count()
    distributed = n_proc > 1 if distributed is None else distributed
    if distributed:
        chunk_size = min(chunk_size, math.ceil(n_runs / n_proc))
    plan = make_plan(
        n_runs, chunk_size, len(devices), run_slice, (jax.process_index(), n_proc) if distributed else None
    )
    steps = cfg.train.steps
    step_chunk = step_chunk or max(1, math.ceil(steps / 20))
    task = task if task is not None else make_task(cfg.data)

    run_hp = {n: np.repeat(v, S) for n, v in table.items() if n in HPARAM_NAMES}  # run r = row * S + seed index
    row_adv = adv_start if adv_start is not None else np.full(H, cfg.train.adv_start, np.int32)
    run_adv = np.repeat(row_adv, S)
    run_seed = np.tile(seeds, H)
    store = ChunkStore(out_dir, fingerprint(cfg, table, seeds, plan.chunk_size, task))
    fns = train.compiled(cfg, int(step_chunk), bool(np.all(table["noise"] == 0)), adv_start is not None, log_steps)
    mesh = Mesh(np.asarray(devices), ("runs",))
    on_runs, replicated = NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())
    task_on_mesh = jax.device_put(task, replicated)

    def compute(idx, work):
        keys = jax.device_put(jax.vmap(jax.random.key)(jnp.asarray(run_seed[idx])), on_runs)
        hp = jax.device_put(HParams(**{n: jnp.asarray(v[idx]) for n, v in run_hp.items()}), on_runs)
        adv = jax.device_put(jnp.asarray(run_adv[idx]), on_runs)
        return _run_chunk(fns, keys, hp, adv, task_on_mesh, steps, step_chunk, work)

    flat = execute(
        plan,
        store,
        compute,
        per_chunk=steps,
        unit="step",
        desc=f"{n_runs} networks x {steps} steps" + (f", {label}" if label else ""),
        progress=progress,
        checkpoint_seconds=checkpoint_seconds,
        slice_mode=run_slice is not None,
        distributed=distributed,
        expect=CHUNK_ARRAYS,
    )
    if not keep_params:  # saved all the same: a later call that keeps them finds them in the chunk
        flat = {k: v for k, v in flat.items() if not k.endswith("_final")}
    return flat, fns.run, task


def assemble(
    cfg: Config, parts: list, order: list[list[int]], rows: list[dict], swept: list, seeds: np.ndarray
) -> Results:
    """One Results from every group's runs (`parts`, whose grid rows are `order[i]`): rows in
    grid order along 'hparam'. Where groups
    differ in an axis (width, d, log steps, ...), its coordinate is the union and a row's
    entries outside its own are NaN (-1 for integer arrays)."""
    S = len(seeds)
    runs = [p[1] for p in parts]
    coords = {
        "hparam": np.arange(len(rows)),
        "seed": seeds,
        "time": _union([r.log_steps for r in runs]),
        "neuron": np.arange(max(r.cfg.model.width for r in runs)),
        "radius": _union([np.asarray(r.cfg.eval.taus, np.float32) for r in runs]),
        "attack": np.asarray(attacks.ATTACK_NAMES),
        "task": np.arange(max(r.cfg.data.n_tasks for r in runs)),
        "snapshot": _union([r.snapshot_at for r in runs]),
        "input": np.arange(max(r.cfg.data.d for r in runs)),
        "rank": np.arange(max(r.cfg.train.adv_rank for r in runs)),
        "feature": np.arange(max(r.cfg.data.n_features for r in runs)),
    }
    labelled = ("time", "radius", "snapshot")  # placed by label; the others by position
    arrays, dims = {}, {}
    for name in parts[0][0]:
        axes = _axes(name)
        pieces = []
        for (flat, run, _), idx in zip(parts, order):
            own = {
                "time": run.log_steps,
                "radius": np.asarray(run.cfg.eval.taus, np.float32),
                "snapshot": run.snapshot_at,
            }
            arr = flat[name].reshape((len(idx), S) + flat[name].shape[1:])
            pieces.append(_widen(arr, axes, coords, own, labelled))
        full = np.empty((len(rows), S) + pieces[0].shape[2:], pieces[0].dtype)
        for piece, idx in zip(pieces, order):
            full[idx] = piece
        arrays[name], dims[name] = full, ("hparam", "seed") + axes
    arrays["constant_predictor"] = trace.constant_predictor(arrays["positive_rate"])
    dims["constant_predictor"] = dims["positive_rate"]
    tasks = [p[2] for p in parts]
    same_task = all(
        t.M.shape == tasks[0].M.shape
        and np.array_equal(t.M, tasks[0].M)
        and t.w_star.shape == tasks[0].w_star.shape
        and np.array_equal(t.w_star, tasks[0].w_star)
        for t in tasks
    )
    for key, attr, axes in (("task_M", "M", ("input", "feature")), ("task_w_star", "w_star", ("task", "feature"))):
        if same_task:
            arrays[key], dims[key] = np.asarray(getattr(tasks[0], attr)), axes
        else:  # the data model is swept: each row has its own dictionary and labels
            rows_of = [np.asarray(getattr(t, attr))[None, None] for t in tasks]
            per_part = [_widen(a, axes, coords, {}, ())[0, 0] for a in rows_of]
            full = np.empty((len(rows),) + per_part[0].shape, np.float32)
            for piece, idx in zip(per_part, order):
                full[idx] = piece
            arrays[key], dims[key] = full, ("hparam",) + axes
    hp = _hp_table(cfg, rows)
    for n in swept:
        if n not in HPARAM_NAMES:
            hp[n] = np.asarray([row[n] for row in rows])
    meta = {
        "config": json.loads(json.dumps(cfg.to_dict())),
        "swept": swept,
        "provenance": provenance(),
        "seed_rule": "run key = jax.random.key(seed), same on every grid row",
    }
    res = Results(arrays, dims, coords, hp, meta)
    if coords["task"].size == 1:
        res = res.isel(task=0)
    return res


def _union(values: list) -> np.ndarray:
    return np.unique(np.concatenate([np.asarray(v).ravel() for v in values])) if values else np.asarray([])


def _widen(arr: np.ndarray, axes: tuple, coords: dict, own: dict, labelled: tuple) -> np.ndarray:
    """arr (H, S, *axes) placed into the full coordinates of each axis: labelled axes (time,
    radius, snapshot) by label, the others by position; the rest NaN (floats) or -1."""
    shape = arr.shape[:2] + tuple(len(coords[a]) for a in axes)
    if shape == arr.shape and all(a not in labelled or np.array_equal(own[a], coords[a]) for a in axes):
        return arr
    fill = np.nan if arr.dtype.kind == "f" else -1
    out = np.full(shape, fill, arr.dtype)
    where = [slice(None), slice(None)]
    for a, n in zip(axes, arr.shape[2:]):
        where.append(np.searchsorted(coords[a], own[a]) if a in labelled else np.arange(n))
    out[np.ix_(*[np.arange(s) if isinstance(w, slice) else w for w, s in zip(where, arr.shape)])] = arr
    return out


def _axes(name: str) -> tuple[str, ...]:
    """The axes of one of a sweep's flat arrays after its run axis."""
    if (traced := trace.dims(name)) is not None:
        return traced
    if name == "failed_step":
        return ()
    if name == "snapshots":
        return ("snapshot", "neuron", "input")
    if name.endswith("_final") and name[: -len("_final")] in network.PARAM_AXES:
        return network.PARAM_AXES[name[: -len("_final")]]
    raise KeyError(f"a sweep produced an array {name!r} with no declared axes")
