"""Train many networks in one compiled program: a flattened (hyper-parameter row x seed) run axis.

`sweep(cfg, grid, seeds)` validates everything, then runs `jit(vmap(run))` over chunks of the run
axis (the last chunk padded, the padding dropped). With `out_dir`, every finished chunk is
written atomically and a repeated call with the same config, grid and seeds skips it, so an
interrupted sweep resumes where it stopped. Seed s uses the key `jax.random.key(s)` on every
grid row: rows are compared on the same init and data (common random numbers).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import trace, train
from .assembly import assemble
from .config import Config, ConfigError, HParams
from .data import Task, make_task
from .engine import Chunk, run_chunk
from .execute import SliceFinished, SweepInterrupted, execute
from .files import check_free_space, writable_folder
from .grid import Group, grid_table, resolve, seed_list
from .memory import auto_chunk_size, check_chunk_memory, network_bytes, written_bytes
from .plan import make_plan
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


def fingerprint(
    cfg: Config, table: dict, seeds: np.ndarray, chunk_size: int, task: Task | None = None, group: int = 1
) -> str:
    """The name of a sweep's folder of finished chunks: a hash of everything that decides its
    numbers, the task's dictionary and label vectors included (a sweep may be given a task
    other than the config's own, e.g. a downstream task), and the runs per batched operation
    where it is not the whole chunk (groups may round differently in the last bits)."""
    spec = {
        "cfg": cfg.to_dict(),
        "hp": {k: v.tolist() for k, v in table.items()},
        "seeds": seeds.tolist(),
        "chunk": chunk_size,
    }
    if task is not None:
        spec["task"] = _task_digest(task)
    if group > 1:
        spec["group"] = int(group)
    return _hash(spec)


def _task_digest(task: Task) -> str:
    return hashlib.sha256(
        np.asarray(task.M, np.float32).tobytes() + np.asarray(task.w_star, np.float32).tobytes()
    ).hexdigest()


# What every saved chunk of a sweep holds: each traced quantity and the run's health and snapshots
# (its final parameters depend on the architecture). A chunk lacking one is damaged.
CHUNK_ARRAYS = frozenset({q.name for q in trace.QUANTITIES} | {"failed_step", "snapshots", "W_final"})


def training_chunk(fns: train.Programs, keys, hp, adv_start, task, step_chunk: int) -> Chunk:
    """A chunk of training runs as the engine runs it: `fns` bound to its keys, hyper-parameters,
    switch steps and task (every leaf on the keys' sharding)."""
    run, init, advance, observe, observe_light = fns
    n_steps = run.cfg.train.steps

    def outputs(state) -> dict:
        out = {k: np.asarray(v) for k, v in state.trace.items()}
        out["failed_step"] = np.asarray(state.failed_step)
        out["snapshots"] = np.asarray(state.snapshots)
        out.update({f"{name}_final": np.asarray(value) for name, value in state.params.items()})
        return out

    return Chunk(
        init=lambda: init(keys, hp, task, adv_start),
        advance=lambda state, t0, t1: advance(state, task, jnp.int32(t0), jnp.int32(t1)),
        observe=lambda state, t: (observe_light if t in run.light_at else observe)(state, task, jnp.int32(t)),
        segments=lambda start: run.segments(start, step_chunk),
        steps=n_steps,
        outputs=outputs,
        observe_at=run.observe_at,
        # a cut at a log step inside a step call is no place for a checkpoint
        checkpoint_after=lambda t1: t1 % step_chunk == 0 or t1 == n_steps,
        # XLA may hand some leaves back replicated (P()), equivalent on one device but a
        # different cache key: pinning them all to the keys' sharding makes `advance` trace once
        sharding=keys.sharding,
    )


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
    batching: str | int = "auto",
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
    batching: how the training programs batch a chunk's runs (`train.run_group`): 'auto' (the
    default: groups of runs scanned on a single CPU device, 1.2-1.4x faster there, a plain
    vmap elsewhere), 'vmap' (one vmap over the chunk, as `purify run` does by default: every
    committed record was made so), 'groups' or a group size. They agree to float rounding.
    """
    cfg = cfg.validate()
    resolved = resolve(cfg, grid)
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
    data_swept = [n for n in resolved.columns if n.startswith("data.")]
    if task is not None and data_swept:
        raise ConfigError(f"grid key {data_swept[0]!r} is not allowed with task=: the task fixes the data model")
    # every group's chunk size and batching are checked before the first one compiles
    train.run_group(cfg, 1, len(devices), batching)
    sizes = []
    for group in resolved.groups:
        n_runs = len(group.rows) * len(seeds)
        if chunk_size is None:
            sizes.append(auto_chunk_size(group.cfg, n_runs, memory_budget_bytes, devices))
        else:
            make_plan(n_runs, chunk_size)  # the chunk size's own rule first
            check_chunk_memory(group.cfg, chunk_size, devices, memory_budget_bytes, n_runs)
            sizes.append(chunk_size)
    if out_dir is not None:
        need = sum(written_bytes(g.cfg, len(g.rows) * len(seeds), n) for g, n in zip(resolved.groups, sizes))
        check_free_space(out_dir, need, "out_dir")
    parts, sliced = [], []
    n_groups = len(resolved.groups)
    for number, (group, size) in enumerate(zip(resolved.groups, sizes)):
        try:
            parts.append(
                _sweep_group(
                    group,
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
                    batching=batching,
                    label=f"group {number + 1}/{n_groups} ({group.label})" if n_groups > 1 else "",
                )
            )
        except SliceFinished as done:
            sliced.append(done)
    if sliced:
        first = sliced[0]
        raise SliceFinished(first.index, first.count, sum(d.computed for d in sliced), first.where)
    res = assemble(resolved, parts, seeds)
    res.meta["provenance"]["batching"] = batching
    warn_failed(res)
    return res


def _sweep_group(
    group: Group,
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
    batching,
    label,
):
    """Train the rows of one group (one program); returns (flat arrays, run, task)."""
    cfg, table, adv_start = group.cfg, group.table(), group.adv_start
    H, S = len(group.rows), len(seeds)
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

    run_hp = {n: np.repeat(v, S) for n, v in group.hp.items()}  # run r = row * S + seed index
    row_adv = adv_start if adv_start is not None else np.full(H, cfg.train.adv_start, np.int32)
    run_adv = np.repeat(row_adv, S)
    run_seed = np.tile(seeds, H)
    runs_per_op = train.run_group(cfg, plan.chunk_size, len(devices), batching)
    store = ChunkStore(out_dir, fingerprint(cfg, table, seeds, plan.chunk_size, task, runs_per_op))
    fns = train.compiled(cfg, int(step_chunk), group.noise_free, adv_start is not None, group.log_steps(), runs_per_op)
    mesh = Mesh(np.asarray(devices), ("runs",))
    on_runs, replicated = NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())
    task_on_mesh = jax.device_put(task, replicated)

    def compute(idx, work):
        keys = jax.device_put(jax.vmap(jax.random.key)(jnp.asarray(run_seed[idx])), on_runs)
        hp = jax.device_put(HParams(**{n: jnp.asarray(v[idx]) for n, v in run_hp.items()}), on_runs)
        adv = jax.device_put(jnp.asarray(run_adv[idx]), on_runs)
        return run_chunk(training_chunk(fns, keys, hp, adv, task_on_mesh, int(step_chunk)), work)

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
