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
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import attacks
from .config import HPARAM_NAMES, Config, ConfigError, HParams
from .data import Task, make_task
from .provenance import provenance
from .results import Results, atomic_write_bytes

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


def fingerprint(cfg: Config, table: dict, seeds: np.ndarray, chunk_size: int) -> str:
    blob = json.dumps({"cfg": cfg.to_dict(), "hp": {k: v.tolist() for k, v in table.items()}, "seeds": seeds.tolist(), "chunk": chunk_size}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_chunk(fns, keys, hp, task, n_steps, step_chunk, bar):
    run, init, advance, finalize = fns
    state = init(keys, hp, task)
    for t0 in range(0, n_steps, step_chunk):
        state = advance(state, task, jnp.int32(t0))
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
) -> Results:
    """Train every (grid row, seed) network; return a Results with axes (hparam, seed, ...).

    grid: {hyper-parameter name: values}, e.g. {"tau": [0, 0.1, 0.2]}; unset names take cfg.hp.
    seeds: a count (0..n-1) or a list. chunk_size: networks per compiled call (default: all).
    step_chunk: SGD steps per compiled call (default steps/20; progress is reported per call).
    out_dir: finished run chunks are written atomically to out_dir/<fingerprint>/ and found
    again on resume; the fingerprint hashes config, grid, seeds and chunk size, so sweeps
    that differ never share files and identical sweeps (from any experiment) do.
    """
    from .train import compiled

    cfg = cfg.validate()
    table, swept = grid_table(cfg, grid)
    seeds = seed_list(seeds)
    H, S = len(table["lr"]), len(seeds)
    R = H * S
    if chunk_size is None:
        chunk_size = R
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
    tag = fingerprint(cfg, table, seeds, chunk_size)
    out_dir = Path(out_dir) if out_dir is not None else None
    fns = compiled(cfg, int(step_chunk))
    n_step_calls = math.ceil(steps / step_chunk)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks * n_step_calls, desc=f"{R} networks x {steps} steps", unit="chunk", leave=True)
    pieces, done = [], 0
    try:
        for c in range(n_chunks):
            lo, hi = c * chunk_size, min((c + 1) * chunk_size, R)
            path = out_dir / tag / f"runs_{lo:07d}-{hi:07d}.npz" if out_dir else None
            piece = _load_chunk(path, tag) if path is not None and path.exists() else None
            if piece is None:
                idx = np.minimum(np.arange(lo, lo + chunk_size), R - 1)  # pad with the last run
                keys = jax.vmap(jax.random.key)(jnp.asarray(run_seed[idx]))
                hp = {n: jnp.asarray(v[idx]) for n, v in run_hp.items()}
                piece = {k: v[: hi - lo] for k, v in _run_chunk(fns, keys, hp, task, steps, step_chunk, bar).items()}
                if path is not None:
                    _save_chunk(path, piece, tag)
            elif bar is not None:
                bar.update(n_step_calls)
            pieces.append(piece)
            done += 1
    except KeyboardInterrupt as exc:
        raise SweepInterrupted(done, n_chunks, out_dir) from exc
    finally:
        if bar is not None:
            bar.close()

    flat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    return assemble(cfg, flat, table, swept, seeds, task, fns[0])


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
        "feature": np.arange(cfg.data.d),
    }
    meta = {"config": json.loads(json.dumps(cfg.to_dict())), "swept": swept, "provenance": provenance(), "seed_rule": "run key = jax.random.key(seed), same on every grid row"}
    res = Results(arrays, dims, coords, table, meta)
    if cfg.data.n_tasks == 1:
        res = res.isel(task=0)
    return res
