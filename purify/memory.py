"""How much memory a sweep's runs take, and how many of them one compiled call may train at once.

The model counts float32 words per network: parameters, optimizer state and the trace buffers
of a run in flight, the activations of one SGD step and of the evaluation batch, and what a
finished run keeps until the sweep returns. `auto_chunk_size` fits a chunk to a device's memory
budget; `check_chunk_memory` refuses a hand-chosen one that would not fit, before it compiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax

from . import trace
from .config import Config, ConfigError


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
