"""Train many networks in one compiled program: a flattened (hyper-parameter row x seed) run axis.

`sweep(cfg, grid, seeds)` validates everything, then runs `jit(vmap(run))` over chunks of the run
axis (the last chunk padded, the padding dropped). With `out_dir`, every finished chunk is
written atomically and a repeated call with the same config, grid and seeds skips it, so an
interrupted sweep resumes where it stopped. Seed s uses the key `jax.random.key(s)` on every
grid row: rows are compared on the same init and data (common random numbers).
"""

from __future__ import annotations

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

from . import attacks
from .config import HPARAM_NAMES, Config, ConfigError, HParams
from .data import Task, make_task
from .provenance import provenance
from .results import Results, atomic_write_bytes, warn_failed

TRACE_DIMS = {
    "per_neuron": ("time", "neuron"),
    "scalar": ("time",),
    "clean_acc": ("time", "task"),
    "positive_rate": ("time", "task"),
    "robust_acc": ("time", "task", "radius"),
    "attack_acc": ("time", "task", "radius", "attack"),
}
PER_NEURON = ("norm", "purity", "features", "participation", "rho")
CONSTANT_RATE = 0.98  # a run predicting one class on more than this fraction is flagged constant


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; finished chunks are already on disk when out_dir was given."""

    def __init__(self, done: int, total: int, out_dir: Path | None):
        self.done, self.total, self.out_dir = done, total, out_dir
        where = f"saved in {out_dir}; run the same command again to resume" if out_dir else "not saved (no output folder)"
        super().__init__(f"interrupted: {done} of {total} run chunk(s) finished and {where}")


class SliceFinished(Exception):
    """A `run_slice` sweep computed its share of the chunks; merge the slices, then rerun."""

    def __init__(self, index: int, count: int, computed: int, where: Path):
        self.index, self.count, self.computed, self.where = index, count, computed, where
        super().__init__(f"slice {index}/{count} finished: {computed} chunk(s) in {where}; when every slice is done, "
                         "gather them with `purify merge` and run the same command without --slice")


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
    n_log, R = len(tc.log_steps), len(ec.taus)
    params = m * d + m * T + m
    state = params * (2 if tc.momentum > 0 else 1) + params  # params, momentum, gradients
    state += n_log * (5 * m + 8 + T * (2 + 4 * R)) + len(set(tc.snapshot_at)) * m * d
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
    base = 4 * (cfg.data.d * cfg.data.d + cfg.data.n_tasks * cfg.data.d) * 4  # task arrays and slack
    per_device = (budget - base) // per
    if per_device < 1:
        raise ConfigError(f"memory budget={budget} bytes is not allowed: one network of this config needs about {per + base} bytes")
    return int(min(n_runs, per_device * len(devices)))


def grid_table(cfg: Config, grid: Mapping[str, Iterable[float]] | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Cartesian product of the grid (first key slowest) over cfg.hp defaults; every row validated."""
    checked = {}
    for name, values in dict(grid or {}).items():
        if name not in HPARAM_NAMES:
            raise ConfigError(f"grid key {name!r} is not allowed: sweepable hyper-parameters are {list(HPARAM_NAMES)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable) or len(list(values)) == 0:
            raise ConfigError(f"grid[{name!r}]={values!r} is not allowed: must be a non-empty list of numbers")
        checked[name] = list(np.asarray(values, dtype=float).ravel()) if not isinstance(values, (list, tuple)) else list(values)
    grid = checked
    names = list(grid)
    rows = []
    for combo in itertools.product(*(list(grid[n]) for n in names)) if names else [()]:
        hp = HParams(**{**cfg.hp.__dict__, **dict(zip(names, combo))})
        hp.validate(prefix="grid")
        rows.append(hp)
    table = {n: np.asarray([getattr(r, n) for r in rows], np.float32) for n in HPARAM_NAMES}
    return table, names


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
    spec = {"cfg": cfg.to_dict(), "hp": {k: v.tolist() for k, v in table.items()}, "seeds": seeds.tolist(), "chunk": chunk_size}
    if task is not None:
        spec["task"] = hashlib.sha256(np.asarray(task.M, np.float32).tobytes() + np.asarray(task.w_star, np.float32).tobytes()).hexdigest()
    blob = json.dumps(spec, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_chunk(fns, keys, hp, task, n_steps, step_chunk, bar):
    _, init, advance, finalize = fns
    # Every leaf of the state leads with the run axis. XLA may hand some back replicated (P()),
    # equivalent on one device but a different cache key: pin them all to the keys' sharding so
    # every call of `advance` sees the same input and traces once.
    on_runs = keys.sharding
    state = jax.device_put(init(keys, hp, task), on_runs)
    for t0 in range(0, n_steps, step_chunk):
        state = jax.device_put(advance(state, task, jnp.int32(t0)), on_runs)
        if bar is not None:
            jax.block_until_ready(state.failed_step)
            bar.update(1)
    state = finalize(state, task)
    out = {k: np.asarray(v) for k, v in state.trace.items()}
    out["failed_step"] = np.asarray(state.failed_step)
    out["snapshots"] = np.asarray(state.snapshots)
    for name, value in state.params.items():
        out[f"{name}_final"] = np.asarray(value)
    return out


def _save_chunk(path: Path, arrays: dict, tag: str) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, __tag__=np.asarray(tag), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_chunk(path: Path, tag: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["__tag__"]) != tag:
                return None
            return {k: z[k] for k in z.files if k != "__tag__"}
    except (OSError, ValueError, KeyError):
        return None  # a damaged or foreign file is recomputed, never trusted


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
    distributed: under jax.distributed (default: when jax.process_count() > 1), process p
    computes the p-th block of chunks on its local devices and the results are all-gathered,
    so every process returns the whole sweep.
    """
    from .train import compiled

    cfg = cfg.validate()
    table, swept = grid_table(cfg, grid)
    seeds = seed_list(seeds)
    H, S = len(table["lr"]), len(seeds)
    R = H * S
    devices = list(devices or jax.local_devices())
    if run_slice is not None:
        i, n = run_slice
        if not (isinstance(i, numbers.Integral) and isinstance(n, numbers.Integral) and 0 <= i < n):
            raise ConfigError(f"run_slice={run_slice!r} is not allowed: must be (i, n) with 0 <= i < n")
        if out_dir is None:
            raise ConfigError("run_slice needs out_dir: a slice's chunks must be saved to be merged")
    n_proc = jax.process_count()
    distributed = n_proc > 1 if distributed is None else distributed
    if distributed and run_slice is not None:
        raise ConfigError("run_slice is not allowed together with distributed: processes take their slices themselves")
    if distributed and R < n_proc:
        raise ConfigError(f"seeds x grid rows = {R} runs is not allowed with {n_proc} processes: every process needs a run")
    if chunk_size is None:
        chunk_size = auto_chunk_size(cfg, R, memory_budget_bytes, devices)
        if distributed:
            chunk_size = min(chunk_size, math.ceil(R / n_proc))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is not allowed: must be an integer >= 1")
    chunk_size = min(int(chunk_size), R)
    steps = cfg.train.steps
    step_chunk = step_chunk or max(1, math.ceil(steps / 20))
    if isinstance(step_chunk, bool) or not isinstance(step_chunk, numbers.Integral) or step_chunk < 1:
        raise ConfigError(f"step_chunk={step_chunk!r} is not allowed: must be an integer >= 1")
    task = task if task is not None else make_task(cfg.data)

    run_hp = {n: np.repeat(v, S) for n, v in table.items()}  # run r = row * S + seed index
    run_seed = np.tile(seeds, H)
    n_chunks = math.ceil(R / chunk_size)
    tag = fingerprint(cfg, table, seeds, chunk_size, task)
    out_dir = Path(out_dir) if out_dir is not None else None
    fns = compiled(cfg, int(step_chunk), bool(np.all(table["noise"] == 0)))
    n_step_calls = math.ceil(steps / step_chunk)
    padded = math.ceil(chunk_size / len(devices)) * len(devices)
    mesh = Mesh(np.asarray(devices), ("runs",))
    on_runs, replicated = NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())
    task_on_mesh = jax.device_put(task, replicated)
    if distributed and n_chunks < n_proc:
        raise ConfigError(f"chunk_size={chunk_size} is not allowed with {n_proc} processes and {R} runs: every process needs a chunk")
    share = (jax.process_index(), n_proc) if distributed else run_slice
    chunks = range(n_chunks)
    if share is not None:
        chunks = range(share[0] * n_chunks // share[1], (share[0] + 1) * n_chunks // share[1])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chunks) * n_step_calls, desc=f"{R} networks x {steps} steps", unit="chunk", leave=True)
    pieces, done = [], 0
    try:
        for c in chunks:
            lo, hi = c * chunk_size, min((c + 1) * chunk_size, R)
            path = out_dir / tag / f"runs_{lo:07d}-{hi:07d}.npz" if out_dir else None
            piece = _load_chunk(path, tag) if path is not None and path.exists() else None
            if piece is None:
                idx = np.minimum(np.arange(lo, lo + padded), R - 1)  # pad with the last run
                keys = jax.device_put(jax.vmap(jax.random.key)(jnp.asarray(run_seed[idx])), on_runs)
                hp = jax.device_put({n: jnp.asarray(v[idx]) for n, v in run_hp.items()}, on_runs)
                piece = {k: v[: hi - lo] for k, v in _run_chunk(fns, keys, hp, task_on_mesh, steps, step_chunk, bar).items()
                         if keep_params or not k.endswith("_final")}
                if path is not None:
                    _save_chunk(path, piece, tag)
            elif bar is not None:
                bar.update(n_step_calls)
            pieces.append(piece)
            done += 1
    except KeyboardInterrupt as exc:
        raise SweepInterrupted(done, len(chunks), out_dir) from exc
    finally:
        if bar is not None:
            bar.close()
    if run_slice is not None:
        raise SliceFinished(run_slice[0], run_slice[1], done, out_dir / tag)

    flat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    if distributed:
        flat = gather_runs(flat, chunks.start * chunk_size, R)
    res = assemble(cfg, flat, table, swept, seeds, task, fns[0])
    warn_failed(res)
    return res


def gather_runs(mine: dict, first: int, n_runs: int) -> dict:
    """All-gather the runs each process computed (rows first .. first + len) into (n_runs, ...)."""
    from jax.experimental import multihost_utils

    owned = np.zeros((n_runs,), bool)
    count = len(next(iter(mine.values())))
    owned[first : first + count] = True
    full = {k: np.zeros((n_runs,) + v.shape[1:], v.dtype) for k, v in mine.items()}
    for k, v in mine.items():
        full[k][first : first + count] = v
    everyone = multihost_utils.process_allgather({"owned": owned, **full})
    owner = np.argmax(everyone["owned"], axis=0)  # (n_runs,): the process that computed each run
    if not everyone["owned"].any(axis=0).all():
        raise RuntimeError("some runs were computed by no process")
    rows = np.arange(n_runs)
    return {k: np.asarray(everyone[k])[owner, rows] for k in mine}


def merge_runs(sources: Sequence[str | Path], into: str | Path) -> int:
    """Copy the chunk files of several run folders (e.g. one per --slice job) into one folder,
    where a sweep with the same config, grid and seeds finds them all. Returns files copied."""
    import shutil

    into, copied = Path(into), 0
    for src in map(Path, sources):
        if not src.is_dir():
            raise ConfigError(f"source={str(src)!r} is not allowed: not a folder")
        for f in sorted(src.glob("*/runs_*.npz")):
            dest = into / f.parent.name / f.name
            if dest.exists() or dest.resolve() == f.resolve():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(dest)
            copied += 1
    return copied


def assemble(cfg: Config, flat: dict, table: dict, swept: list, seeds: np.ndarray, task: Task, run) -> Results:
    H, S = len(table["lr"]), len(seeds)
    arrays, dims = {}, {}
    for name, arr in flat.items():
        arr = arr.reshape((H, S) + arr.shape[1:])
        if name in PER_NEURON:
            ds = TRACE_DIMS["per_neuron"]
        elif name in TRACE_DIMS:
            ds = TRACE_DIMS[name]
        elif name == "failed_step":
            ds = ()
        elif name == "snapshots":
            ds = ("snapshot", "neuron", "input")
        elif name == "W_final":
            ds = ("neuron", "input")
        elif name == "a_final":
            ds = ("neuron", "task")
        elif name == "b_final":
            ds = ("neuron",)
        elif name == "U_final":
            ds = ("neuron", "rank")
        elif name == "V_final":
            ds = ("rank", "input")
        else:
            ds = ("time",)
        arrays[name], dims[name] = arr, ("hparam", "seed") + ds
    rate = arrays["positive_rate"]
    arrays["constant_predictor"] = (rate > CONSTANT_RATE) | (rate < 1 - CONSTANT_RATE)
    dims["constant_predictor"] = dims["positive_rate"]
    arrays["task_M"], dims["task_M"] = np.asarray(task.M), ("input", "feature")
    arrays["task_w_star"], dims["task_w_star"] = np.asarray(task.w_star), ("task", "feature")
    coords = {
        "hparam": np.arange(H),
        "seed": seeds,
        "time": run.log_steps,
        "neuron": np.arange(cfg.model.width),
        "radius": np.asarray(cfg.eval.taus, np.float32),
        "attack": np.asarray(attacks.ATTACK_NAMES),
        "task": np.arange(cfg.data.n_tasks),
        "snapshot": run.snapshot_at,
        "input": np.arange(cfg.data.d),
        "rank": np.arange(cfg.train.adv_rank),
        "feature": np.arange(cfg.data.d),
    }
    meta = {"config": json.loads(json.dumps(cfg.to_dict())), "swept": swept, "provenance": provenance(), "seed_rule": "run key = jax.random.key(seed), same on every grid row"}
    res = Results(arrays, dims, coords, table, meta)
    if cfg.data.n_tasks == 1:
        res = res.isel(task=0)
    return res
