"""The one loop that computes a batch of runs: every pre-training sweep and downstream fit.

`execute(plan, store, compute)` walks the plan's chunks; a chunk found in the store is loaded,
any other is computed by `compute(indices)` (one compiled call over the padded run indices)
and saved before the next begins. Ctrl-C raises `SweepInterrupted` (every finished chunk is
already on disk), a job-array slice raises `SliceFinished` once its chunks are saved, and under
`jax.distributed` the runs of every process are all-gathered so each process returns them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .plan import Plan
from .store import ChunkStore


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch of runs; finished chunks are already on disk when a store was given."""

    def __init__(self, done: int, total: int, out_dir: Path | None):
        self.done, self.total, self.out_dir = done, total, out_dir
        where = (
            f"saved in {out_dir}; run the same command again to resume" if out_dir else "not saved (no output folder)"
        )
        super().__init__(f"interrupted: {done} of {total} run chunk(s) finished and {where}")


class SliceFinished(Exception):
    """A sliced batch computed its share of the chunks; merge the slices, then rerun."""

    def __init__(self, index: int, count: int, computed: int, where: Path):
        self.index, self.count, self.computed, self.where = index, count, computed, where
        super().__init__(
            f"slice {index}/{count} finished: {computed} chunk(s) in {where}; when every slice is done, "
            "gather them with `purify merge` and run the same command without --slice"
        )


class Progress:
    """A tqdm bar counted in `unit`s, `per_chunk` of them per chunk; `tick()` advances one."""

    def __init__(self, total_chunks: int, per_chunk: int, desc: str, unit: str):
        from tqdm.auto import tqdm

        self.per_chunk = per_chunk
        self.bar = tqdm(total=total_chunks * per_chunk, desc=desc, unit=unit, leave=True)

    def tick(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def execute(
    plan: Plan,
    store: ChunkStore,
    compute: Callable[[np.ndarray], dict],
    *,
    progress: Progress | None = None,
    slice_mode: bool = False,
    distributed: bool = False,
) -> dict[str, np.ndarray]:
    """Every run's arrays, (n_runs, ...) each (only this share's runs in slice mode, which raises).

    compute(indices) -> {name: (len(indices), ...)} for the padded run indices of one chunk; it
    may call progress.tick() per unit of work. A chunk's padding is dropped before it is saved.
    """
    pieces, done = [], 0
    try:
        for c in plan.chunks:
            lo, hi = plan.bounds(c)
            piece = store.load(lo, hi)
            if piece is None:
                piece = {k: np.asarray(v)[: hi - lo] for k, v in compute(plan.indices(c)).items()}
                store.save(lo, hi, piece)
            elif progress is not None:
                progress.tick(progress.per_chunk)
            pieces.append(piece)
            done += 1
    except KeyboardInterrupt as exc:
        raise SweepInterrupted(done, len(plan.chunks), store.root) from exc
    finally:
        if progress is not None:
            progress.close()
    if slice_mode:
        raise SliceFinished(plan.share[0], plan.share[1], done, store.folder)
    flat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    if distributed:
        flat = gather_runs(flat, plan.chunks.start * plan.chunk_size, plan.n_runs)
    return flat


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
