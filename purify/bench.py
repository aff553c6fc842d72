"""`purify bench`: throughput of the vmapped sweep, measured side by side in one run.

For each standard config (FGM l2 training, batch 256, data sampled in the step) it measures:
network-steps per second of `jit(vmap(advance))` over N networks; the achieved FLOP/s from an
analytic count; the same machine's square-matmul FLOP/s; the ratio against the same N runs one
after another (a Python loop over the single-run `jit(advance)`); the ratio against an eager
PyTorch loop over networks written as a researcher would (optional); compile time; and memory
per network from XLA's analysis of the compiled chunk.

FLOPs per network-step (multiply-adds counted as 2): the FGM input gradient (forward and
backward to x): 4 B d m; the training step on x + delta (forward and the weight gradient):
4 B d m. The benchmark's data (identity dictionary, no noise) need no matmul; element-wise work
is not counted, so the fraction of peak is a lower bound.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp

from .config import HPARAM_NAMES, Config
from .data import make_task
from .provenance import provenance
from .train import Run

LOOP_NETWORKS = 1024  # the sequential JAX loop times at most this many networks
TORCH_NETWORKS = 256  # the eager PyTorch loop likewise
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


def measure_vmapped(cfg: Config, n: int, steps: int) -> dict:
    run = Run(cfg, chunk=steps, noise_free=True)
    task = make_task(cfg.data)
    state = _states(run, cfg, n, task)
    advance = jax.jit(jax.vmap(run.advance, in_axes=(0, None, None)))
    t = time.perf_counter()
    compiled = advance.lower(state, task, jnp.int32(2)).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    mem_bytes = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    jax.block_until_ready(compiled(state, task, jnp.int32(2)))
    seconds = _best_of(lambda: compiled(state, task, jnp.int32(2)), 5)
    return {"seconds": seconds, "compile_seconds": compile_s, "bytes_per_network": mem_bytes / n}


def measure_sequential(cfg: Config, n: int, steps: int) -> float:
    """Seconds for n networks one after another through the single-run jit(advance)."""
    run = Run(cfg, chunk=steps, noise_free=True)
    task = make_task(cfg.data)
    hp = {name: jnp.float32(getattr(cfg.hp, name)) for name in HPARAM_NAMES}
    advance = jax.jit(run.advance)
    states = [jax.jit(run.init)(jax.random.key(i), hp, task) for i in range(n)]
    jax.block_until_ready(advance(states[0], task, jnp.int32(2)))

    def loop():
        return [advance(s, task, jnp.int32(2)) for s in states]

    return _best_of(loop, 3)


def measure_torch(cfg: Config, n: int, steps: int) -> float | None:
    """Seconds for an eager PyTorch loop over n networks, or None without PyTorch.

    Runs on CUDA when JAX runs on a GPU and PyTorch sees one, so both sides use the same chip.
    """
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
    torch.set_default_device(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    d, k, m, B = cfg.data.d, cfg.data.k, cfg.model.width, cfg.train.batch
    tau, lr, beta = cfg.hp.tau, cfg.hp.lr, cfg.hp.beta
    torch.manual_seed(0)
    w_star = torch.randint(0, 2, (d,)).float() * 2 - 1
    z_min = 1 / math.sqrt(k)

    def f(W, x):
        u = x @ W.T
        b = beta * z_min * W.detach().norm(dim=1)
        return (torch.relu(u - b) - torch.relu(-u - b)).sum(1)

    def batch():
        idx = torch.rand(B, d).topk(k, dim=1).indices
        vals = (torch.randint(0, 2, (B, k)).float() * 2 - 1) * (1 + torch.rand(B, k)) / math.sqrt(k)
        z = torch.zeros(B, d).scatter_(1, idx, vals)
        return z, torch.sign(z @ w_star)  # identity dictionary: x = z, as in the JAX program

    def train_all():
        for _ in range(n):
            W = (torch.randn(m, d) * cfg.hp.init_scale / math.sqrt(d)).requires_grad_(True)
            for _ in range(steps):
                x, y = batch()
                xr = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(torch.nn.functional.softplus(-y * f(W, xr)).mean(), xr)
                x_adv = x + tau * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
                loss = torch.nn.functional.softplus(-y * f(W, x_adv)).mean()
                loss.backward()
                with torch.no_grad():
                    W -= lr * W.grad
                    W.grad = None

    train_all()  # warm-up
    sync()
    t = time.perf_counter()
    train_all()
    sync()
    seconds = time.perf_counter() - t
    torch.set_default_device("cpu")
    return seconds


def run_bench(sizes=("small", "medium"), networks: dict | None = None, steps: int = 50, torch: bool = True) -> dict:
    """Measure every size; returns a JSON-ready dict with one row per size."""
    on_cpu = jax.devices()[0].platform == "cpu"
    networks = networks or ({"small": 64, "medium": 16} if on_cpu else {"small": 1024, "medium": 4096})
    peak = matmul_flops()
    rows = []
    for size in sizes:
        cfg = bench_config(size, steps)
        n = int(networks[size])
        vm = measure_vmapped(cfg, n, steps)
        # One network after another costs n times one network, so the loops time a prefix of
        # at most LOOP_NETWORKS networks and scale linearly; the JSON records how many were timed.
        n_seq, n_torch = min(n, LOOP_NETWORKS), min(n, TORCH_NETWORKS)
        seq = measure_sequential(cfg, n_seq, steps) * n / n_seq
        tt = measure_torch(cfg, n_torch, steps) if torch else None
        tt = None if tt is None else tt * n / n_torch
        flops = flops_per_network_step(cfg) * n * steps / vm["seconds"]
        rows.append(
            {
                "config": size,
                "d": cfg.data.d,
                "k": cfg.data.k,
                "width": cfg.model.width,
                "batch": cfg.train.batch,
                "networks": n,
                "steps": steps,
                "network_steps_per_s": n * steps / vm["seconds"],
                "achieved_flops": flops,
                "matmul_flops": peak,
                "fraction_of_matmul": flops / peak,
                "speedup_vs_sequential_jax": None if seq is None else seq / vm["seconds"],
                "speedup_vs_eager_torch": None if tt is None else tt / vm["seconds"],
                "sequential_networks_timed": n_seq,
                "torch_networks_timed": n_torch if tt is not None else 0,
                "torch": "absent (pip install -e '.[torch]')"
                if torch and tt is None
                else ("skipped" if not torch else "measured"),
                "compile_seconds": vm["compile_seconds"],
                "mb_per_network": vm["bytes_per_network"] / 1e6,
            }
        )
    return {
        "rows": rows,
        "flop_count": "per network-step: 8 B d m (FGM input gradient and training step)",
        "provenance": provenance(),
        "cpu_count": os.cpu_count(),
    }


def format_table(result: dict) -> str:
    head = [
        "config",
        "networks",
        "net-steps/s",
        "GFLOP/s",
        "matmul GFLOP/s",
        "of matmul",
        "vs seq JAX",
        "vs eager torch",
        "compile s",
        "MB/net",
    ]
    lines = ["  ".join(f"{h:>14}" for h in head)]
    for r in result["rows"]:

        def ratio(v):
            return "n/a" if v is None else f"{v:.2f}x"

        cells = [
            r["config"],
            r["networks"],
            f"{r['network_steps_per_s']:.1f}",
            f"{r['achieved_flops'] / 1e9:.1f}",
            f"{r['matmul_flops'] / 1e9:.1f}",
            f"{100 * r['fraction_of_matmul']:.0f}%",
            ratio(r["speedup_vs_sequential_jax"]),
            ratio(r["speedup_vs_eager_torch"]),
            f"{r['compile_seconds']:.1f}",
            f"{r['mb_per_network']:.2f}",
        ]
        lines.append("  ".join(f"{c:>14}" for c in cells))
    dev = result["provenance"]["device"]
    lines.append(f"device: {dev['kind']} ({dev['platform']}, {dev['count']}), FLOPs: {result['flop_count']}")
    return "\n".join(lines)
