"""The one loop that computes a batch of runs: every pre-training sweep and downstream fit.

`execute(plan, store, compute)` walks the plan's chunks; a chunk found in the store is loaded,
any other is locked for this process and computed by `compute(indices, work)` (compiled calls
over the padded run indices), which checkpoints its state through `work` every
`checkpoint_seconds` and resumes from the last checkpoint; the finished chunk is saved before
the next begins; the first checkpoint of a chunk is written after its first step call, so a
SIGKILL never loses all of a chunk. Ctrl-C and SIGTERM (what `timeout`, SLURM and Kubernetes
send) write a checkpoint and raise `SweepInterrupted`, which says exactly how much is on disk
in the progress bar's unit; a full disk raises `RunsFolderFull`, which says what was kept and
how to resume. A job-array slice raises `SliceFinished` once
its chunks are saved, and under `jax.distributed` the runs of every process are all-gathered
so each process returns them all.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np

from .files import NO_SPACE
from .plan import Plan
from .store import STALE_SECONDS, ChunkLock, ChunkStore, holder, lock_age

log = logging.getLogger("purify")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same code keeps what finished (exit status 143)."""

    signum = signal.SIGTERM


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (as SIGINT raises
    KeyboardInterrupt) instead of ending the process with nothing said or saved."""

    def handler(signum, frame):
        raise Terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


class RunsFolderFull(OSError):
    """The runs folder's disk filled up: finished chunks are kept, the rest must be rerun."""

    def __init__(self, folder: Path | None, lo: int, hi: int, kept: int, total: int, exc: OSError):
        self.folder, self.kept, self.total = folder, kept, total
        super().__init__(
            exc.errno,
            f"no space left in {folder} while saving runs {lo}..{hi - 1} ({exc.strerror}): {kept} of {total} "
            f"chunk(s) are finished and kept there; free some space (or pass another --runs folder) and run the same "
            "command again to resume from them",
        )

    def __str__(self) -> str:
        return self.strerror


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch of runs. `saved` of `total` units (the progress bar's unit) are on
    disk: finished chunks plus the checkpoint of the chunk in flight; `position` were computed."""

    def __init__(
        self,
        position: int,
        saved: int,
        total: int,
        unit: str,
        layout: str,
        out_dir: Path | None,
        signum: int = signal.SIGINT,
    ):
        self.position, self.saved, self.total, self.unit = position, saved, total, unit
        self.out_dir, self.signum = out_dir, signum
        how = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        head = f"{how} at {unit} {position} of {total} ({layout})"
        if out_dir is None:
            tail = "nothing is saved (no runs folder)"
        elif saved == 0:
            tail = f"nothing saved yet in {out_dir}"
        else:
            tail = f"{saved} of {total} {unit}s are saved in {out_dir}; run the same command again to resume there"
        super().__init__(f"{head}: {tail}")


class SliceFinished(Exception):
    """A sliced batch computed its share of the chunks; merge the slices, then rerun."""

    def __init__(self, index: int, count: int, computed: int, where: Path):
        self.index, self.count, self.computed, self.where = index, count, computed, where
        super().__init__(
            f"slice {index}/{count} finished: {computed} chunk(s) in {where}; when every slice is done, "
            "gather them with `purify merge` and run the same command without --slice"
        )


class Progress:
    """A tqdm bar counted in `unit`s, `per_chunk` of them per chunk."""

    def __init__(self, total_chunks: int, per_chunk: int, desc: str, unit: str):
        from tqdm.auto import tqdm

        self.per_chunk = per_chunk
        self.bar = tqdm(total=total_chunks * per_chunk, desc=desc, unit=unit, leave=True)

    def tick(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class ChunkWork:
    """What `compute` sees of the chunk it computes: the checkpoint to resume from, and where
    to report progress. `advanced(done, state)` after each piece of work ticks the bar, shows
    the chunk's lock is alive and, when `checkpoint_seconds` have passed, writes the training
    state (`state()`: flat arrays) atomically; `interrupted(state)` writes it at once."""

    def __init__(self, store: ChunkStore, lo: int, hi: int, lock: ChunkLock, bar, checkpoint_seconds: float):
        self.store, self.lo, self.hi, self.lock, self.bar = store, lo, hi, lock, bar
        self.every = float(checkpoint_seconds)
        self.done = self.saved = 0  # units computed / units in the checkpoint on disk
        self._last, self._cost = time.monotonic(), 0.0
        self._first = True  # the first piece of work after compiling is checkpointed at once
        self._no_space = False

    @property
    def active(self) -> bool:
        """Whether anyone looks at this chunk's progress (a bar, or a store for checkpoints)."""
        return self.bar is not None or self.store.root is not None

    def resume(self) -> dict | None:
        """The checkpoint's arrays (`__done__` is the units it holds), or None to start afresh."""
        ckpt = self.store.load_checkpoint(self.lo, self.hi)
        if ckpt is not None:
            self.done = self.saved = int(ckpt["__done__"])
            log.info("resuming runs %d..%d from their checkpoint at %d", self.lo, self.hi - 1, self.done)
            if self.bar is not None:
                self.bar.tick(self.done)
        return ckpt

    def reject(self, reason: str) -> None:
        """The checkpoint `resume` gave does not fit this chunk: set it aside and start afresh."""
        self.store.set_aside(self.store.checkpoint_path(self.lo, self.hi), ValueError(reason), "checkpoint")
        if self.bar is not None:
            self.bar.tick(-self.done)
        self.done = self.saved = 0

    def advanced(self, done: int, state: Callable[[], dict]) -> None:
        if self.bar is not None:
            self.bar.tick(done - self.done)
        self.done = done
        self.lock.refresh()
        # never spend more than about a fifth of the time writing checkpoints
        if self._first or time.monotonic() - self._last >= max(self.every, 4 * self._cost):
            self._first = False
            self.checkpoint(state())

    def interrupted(self, state: dict | None) -> None:
        if state is not None and self.done > self.saved:
            self.checkpoint(state)

    def checkpoint(self, arrays: dict) -> None:
        if self.store.root is None:
            return
        t = time.monotonic()
        try:
            self.store.save_checkpoint(self.lo, self.hi, {**arrays, "__done__": np.asarray(self.done)})
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            if not self._no_space:  # training goes on; the finished chunk's own save decides
                log.warning("no space left in %s for a checkpoint (%s); training goes on", self.store.folder, exc)
            self._no_space = True
            self._last = time.monotonic()
            return
        self.saved = self.done
        self._last = time.monotonic()
        self._cost = self._last - t


class DeferredInterrupt:
    """Within `with`, the first Ctrl-C or SIGTERM is noted and raised by `check()` at the next
    consistent point (the end of a step call, whose state can then be checkpointed: a call in
    flight has consumed its input); a second one raises at once. SIGTERM raises `Terminated`.
    Outside the main thread, where no signal handler can be set, signals behave as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.hit, self._previous = None, {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum, frame) -> None:
        if self.hit is not None:
            self._raise(signum)
        self.hit = signum
        name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
        print(f"\npurify: {name}: stopping after the step call in flight (again to stop at once)", file=sys.stderr)

    @staticmethod
    def _raise(signum) -> None:
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def check(self) -> None:
        if self.hit is not None:
            self._raise(self.hit)

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def execute(
    plan: Plan,
    store: ChunkStore,
    compute: Callable[[np.ndarray, ChunkWork], dict],
    *,
    per_chunk: int = 1,
    unit: str = "chunk",
    desc: str = "",
    progress: bool = False,
    checkpoint_seconds: float = 60.0,
    slice_mode: bool = False,
    distributed: bool = False,
    poll_seconds: float = 0.5,
    expect: frozenset[str] = frozenset(),
    report_seconds: float = 30.0,
) -> dict[str, np.ndarray]:
    """Every run's arrays, (n_runs, ...) each (only this share's runs in slice mode, which raises).

    compute(indices, work) -> {name: (len(indices), ...)} for the padded run indices of one
    chunk; `per_chunk` units of work (the bar's `unit`) per chunk, reported through `work`
    (`ChunkWork`), which also resumes and writes checkpoints. A chunk's padding is dropped
    before it is saved; a saved chunk lacking one of the `expect`ed arrays is damaged and
    computed again. A chunk locked by another live process is left to it: this process computes
    the others, then waits for that one's file, saying every `report_seconds` how long it has
    waited; a holder that stops refreshing its lock for `store.STALE_SECONDS` is taken over.
    """
    bar = Progress(len(plan.chunks), per_chunk, desc, unit) if progress else None
    pieces: dict[int, dict] = {}
    work: ChunkWork | None = None
    pending, told = list(plan.chunks), {}
    try:
        while pending:
            for c in list(pending):
                lo, hi = plan.bounds(c)
                piece = store.load(lo, hi, expect)
                if piece is None:
                    lock = store.lock(lo, hi)
                    if lock is None:
                        now = time.monotonic()
                        if c not in told:
                            told[c] = (now, now)
                            log.warning(
                                "runs %d..%d are being computed by %s; waiting for them",
                                lo,
                                hi - 1,
                                holder(store.lock_path(lo, hi)),
                            )
                        elif now - told[c][1] >= report_seconds:
                            told[c] = (told[c][0], now)
                            age = lock_age(store.lock_path(lo, hi))
                            log.warning(
                                "still waiting for runs %d..%d (%.0f s so far; %s last refreshed its lock %s ago; "
                                "a lock not refreshed for %.0f s is taken over)",
                                lo,
                                hi - 1,
                                now - told[c][0],
                                holder(store.lock_path(lo, hi)),
                                "?" if age is None else f"{age:.0f} s",
                                STALE_SECONDS,
                            )
                        continue
                    with lock:
                        piece = store.load(lo, hi, expect)  # another process may have finished it meanwhile
                        if piece is None:
                            work = ChunkWork(store, lo, hi, lock, bar, checkpoint_seconds)
                            log.info("computing runs %d..%d in %s", lo, hi - 1, store.folder)
                            out = compute(plan.indices(c), work)
                            piece = {k: np.asarray(v)[: hi - lo] for k, v in out.items()}
                            try:
                                store.save(lo, hi, piece)
                            except OSError as exc:
                                if exc.errno not in NO_SPACE:
                                    raise
                                raise RunsFolderFull(store.folder, lo, hi, len(pieces), len(plan.chunks), exc) from None
                            work = None
                        else:
                            log.info(
                                "loaded runs %d..%d from %s (finished by another process)", lo, hi - 1, store.folder
                            )
                            if bar is not None:
                                bar.tick(per_chunk)
                else:
                    log.info("loaded runs %d..%d from %s", lo, hi - 1, store.folder)
                    if bar is not None:
                        bar.tick(per_chunk)
                pieces[c] = piece
                pending.remove(c)
            if pending:
                time.sleep(poll_seconds)
    except KeyboardInterrupt as exc:
        finished = len(pieces) * per_chunk
        layout = f"{len(plan.chunks)} chunk(s) x {per_chunk} {unit}s"
        raise SweepInterrupted(
            finished + (work.done if work else 0),
            finished + (work.saved if work else 0),
            len(plan.chunks) * per_chunk,
            unit,
            layout,
            store.folder,
            getattr(exc, "signum", signal.SIGINT),
        ) from exc
    finally:
        if bar is not None:
            bar.close()
    if slice_mode:
        raise SliceFinished(plan.share[0], plan.share[1], len(pieces), store.folder)
    flat = {k: np.concatenate([pieces[c][k] for c in plan.chunks]) for k in pieces[plan.chunks[0]]}
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
