"""The benchmark's JAX programs: the standard configs, the vmapped sweep step compiled over N
networks, the same networks one after another, and the compile latency of a new config.

FLOPs per network-step (multiply-adds counted as 2): the FGM input gradient (forward and
backward to x): 4 B d m; the training step on x + delta (forward and the weight gradient):
4 B d m. The benchmark's data (identity dictionary, no noise) need no matmul; element-wise work
is not counted, so the fraction of peak is a lower bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purify.compilation import over_runs, program
from purify.config import HPARAM_NAMES, Config
from purify.data import make_task
from purify.sweeps import sweep
from purify.train import Run

LOOP_NETWORKS = 1024  # the sequential JAX loop times at most this many networks
CONFIGS = {
    "small": {"data.d": 64, "data.k": 4, "model.width": 128},
    "medium": {"data.d": 256, "data.k": 8, "model.width": 512},
}


def _best_of(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def bench_config(size: str, steps: int = 20) -> Config:
    """The benchmark's static config: FGM from step 0, no log points inside the timed steps."""
    return Config().set(
        **CONFIGS[size],
        **{
            "train.batch": 256,
            "train.attack": "fgm",
            "train.adv_start": 0,
            "train.steps": 100 * steps,
            "train.n_log": 2,
            "eval.n_eval": 256,
        },
    )


def flops_per_network_step(cfg: Config) -> float:
    B, d, m = cfg.train.batch, cfg.data.d, cfg.model.width
    return 8 * B * d * m


def matmul_flops(n: int | None = None) -> float:
    """Best-of-5 FLOP/s of an n x n float32 matmul (n = 2048 on CPU, 8192 on accelerators)."""
    n = n or (2048 if jax.devices()[0].platform == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    return 2 * n**3 / _best_of(lambda: f(a), 5)


def _states(run: Run, cfg: Config, n: int, task):
    keys = jax.vmap(jax.random.key)(jnp.arange(n))
    hp = {name: jnp.full((n,), getattr(cfg.hp, name)) for name in HPARAM_NAMES}
    return jax.jit(jax.vmap(run.init, in_axes=(0, 0, None)))(keys, hp, task)


class VmappedProgram(NamedTuple):
    """The benchmark's compiled `jit(vmap(advance))` over n networks, ready to run: call() runs
    its `steps` SGD steps from the same state (timed by `measure_vmapped`, profiled by
    `purify.benchmarks.profiling`, compiled once for both)."""

    call: Callable[[], Any]
    compiled: Any
    compile_seconds: float
    networks: int


def vmapped_program(cfg: Config, n: int, steps: int, group: int = 1) -> VmappedProgram:
    """n networks' `advance` in one program, batched as `sweep` batches them: groups of `group`
    runs (`compilation.over_runs`; 1: a plain vmap)."""
    run = Run(cfg, chunk=steps, noise_free=True)
    task = make_task(cfg.data)
    state = _states(run, cfg, n, task)
    advance = program(over_runs(run.advance, group), quick=True)
    t = time.perf_counter()
    span = (jnp.int32(2), jnp.int32(2 + steps))
    compiled = advance.lower(state, task, *span).compile()
    compile_s = time.perf_counter() - t
    return VmappedProgram(lambda: compiled(state, task, *span), compiled, compile_s, n)


def measure_vmapped(program: VmappedProgram) -> dict:
    mem = program.compiled.memory_analysis()
    mem_bytes = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    jax.block_until_ready(program.call())
    seconds = _best_of(program.call, 5)
    return {
        "seconds": seconds,
        "compile_seconds": program.compile_seconds,
        "bytes_per_network": mem_bytes / program.networks,
    }


def measure_sequential(cfg: Config, n: int, steps: int) -> float:
    """Seconds for n networks one after another through the single-run jit(advance)."""
    run = Run(cfg, chunk=steps, noise_free=True)
    task = make_task(cfg.data)
    hp = {name: jnp.float32(getattr(cfg.hp, name)) for name in HPARAM_NAMES}
    advance = program(run.advance, quick=True)
    states = [jax.jit(run.init)(jax.random.key(i), hp, task) for i in range(n)]
    span = (jnp.int32(2), jnp.int32(2 + steps))
    jax.block_until_ready(advance(states[0], task, *span))

    def loop():
        return [advance(s, task, *span) for s in states]

    return _best_of(loop, 3)


# The REPL's question, timed: a new static config of tiny size, first call against second.
LATENCY_CONFIG = {
    "data.d": 32,
    "data.k": 4,
    "data.dictionary": "haar",
    "model.width": 64,
    "train.steps": 1000,
    "train.adv_start": 500,
    "train.attack": "fgm",
}
LATENCY_NETWORKS = 8


def measure_compile_latency() -> dict:
    """Seconds of the first and the second `sweep` call of one new static config (LATENCY_CONFIG,
    LATENCY_NETWORKS networks: 2 radii x 4 seeds) in this process, with the persistent
    compilation cache off: the first call compiles, the second reuses the programs."""
    cfg = Config().set(**LATENCY_CONFIG)
    cached = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            sweep(cfg, grid={"tau": [0.0, 0.2]}, seeds=LATENCY_NETWORKS // 2)
            times.append(time.perf_counter() - t)
    finally:
        jax.config.update("jax_enable_compilation_cache", cached)
    return {
        "config": LATENCY_CONFIG,
        "networks": LATENCY_NETWORKS,
        "first_seconds": times[0],
        "second_seconds": times[1],
        "first_over_second": times[0] / times[1],
    }
