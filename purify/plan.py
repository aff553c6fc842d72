"""Which runs go in which compiled call, on which devices: a pure plan, no I/O, no JAX calls.

A batch of R runs (a sweep's grid rows x seeds, or a batch of downstream fits) is cut into
chunks of `chunk_size` runs; each chunk is one call of a `jit(vmap(...))` program whose run
axis is sharded over the devices, so a chunk is padded to a multiple of the device count (with
the runs that follow it, the last run repeated at the end; padding outputs are dropped), and
when there are several chunks every chunk has the same padded shape. A process of several (`jax.distributed`) or a job-array slice computes one contiguous block of
the chunks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .config import ConfigError


@dataclass(frozen=True)
class Plan:
    """n_runs runs in chunks of chunk_size on n_devices; `share` = (i, n): compute block i of n."""

    n_runs: int
    chunk_size: int
    n_devices: int = 1
    share: tuple[int, int] | None = None

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_runs / self.chunk_size)

    @property
    def padded(self) -> int:
        """Runs per compiled call: the chunk size rounded up to a multiple of the devices."""
        return math.ceil(self.chunk_size / self.n_devices) * self.n_devices

    @property
    def chunks(self) -> range:
        """The chunk indices this process (or slice) computes."""
        if self.share is None:
            return range(self.n_chunks)
        i, n = self.share
        return range(i * self.n_chunks // n, (i + 1) * self.n_chunks // n)

    def bounds(self, c: int) -> tuple[int, int]:
        """Runs lo .. hi - 1 form chunk c."""
        lo = c * self.chunk_size
        return lo, min(lo + self.chunk_size, self.n_runs)

    def indices(self, c: int):
        """The run index of every row of chunk c's padded call: its own runs, then the runs that
        follow (the last run repeated), whose outputs are dropped."""
        import numpy as np

        lo, _ = self.bounds(c)
        return np.minimum(np.arange(lo, lo + self.padded), self.n_runs - 1)


def make_plan(
    n_runs: int,
    chunk_size: int,
    n_devices: int = 1,
    run_slice: tuple[int, int] | None = None,
    processes: tuple[int, int] | None = None,
) -> Plan:
    """A validated plan. run_slice=(i, n): a job-array slice; processes=(index, count): one
    process of several under jax.distributed (each computes its own block)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is not allowed: must be an integer >= 1")
    if run_slice is not None:
        i, n = run_slice
        if not (isinstance(i, numbers.Integral) and isinstance(n, numbers.Integral) and 0 <= i < n):
            raise ConfigError(f"run_slice={run_slice!r} is not allowed: must be (i, n) with 0 <= i < n")
        if processes is not None:
            raise ConfigError(
                "run_slice is not allowed together with distributed: processes take their slices themselves"
            )
    plan = Plan(int(n_runs), min(int(chunk_size), int(n_runs)), int(n_devices), run_slice or processes)
    if processes is not None:
        count = processes[1]
        if n_runs < count:
            raise ConfigError(
                f"seeds x grid rows = {n_runs} runs is not allowed with {count} processes: every process needs a run"
            )
        if plan.n_chunks < count:
            raise ConfigError(
                f"chunk_size={chunk_size} is not allowed with {count} processes and {n_runs} runs: every process "
                "needs a chunk"
            )
    return plan
