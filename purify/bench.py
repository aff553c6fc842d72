"""`purify bench`: throughput of the vmapped sweep, measured side by side in one run.

For each standard config (FGM l2 training, batch 256, data sampled in the step) it measures:
network-steps per second of `jit(vmap(advance))` over N networks; the achieved FLOP/s from an
analytic count; the same machine's square-matmul FLOP/s; the ratio against the same N runs one
after another (a Python loop over the single-run `jit(advance)`); the ratios against two PyTorch
peers (optional): an eager loop over networks, and the strongest, N stacked networks under
`torch.func.vmap` and `torch.compile`; compile time; and memory per network from XLA's analysis
of the compiled chunk. Beside them, the compile latency of a new tiny static config: the first
`sweep` call against the second, with the persistent cache off.

FLOPs per network-step (multiply-adds counted as 2): the FGM input gradient (forward and
backward to x): 4 B d m; the training step on x + delta (forward and the weight gradient):
4 B d m. The benchmark's data (identity dictionary, no noise) need no matmul; element-wise work
is not counted, so the fraction of peak is a lower bound.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .config import HPARAM_NAMES, Config
from .data import make_task
from .provenance import provenance
from .train import Run, compiler_options

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


class VmappedProgram(NamedTuple):
    """The benchmark's compiled `jit(vmap(advance))` over n networks, ready to run: call() runs
    its `steps` SGD steps from the same state (timed by `measure_vmapped`, profiled by
    `purify.profiling`, compiled once for both)."""

    call: Callable[[], Any]
    compiled: Any
    compile_seconds: float
    networks: int


def vmapped_program(cfg: Config, n: int, steps: int) -> VmappedProgram:
    run = Run(cfg, chunk=steps, noise_free=True)
    task = make_task(cfg.data)
    state = _states(run, cfg, n, task)
    advance = jax.jit(jax.vmap(run.advance, in_axes=(0, None, None, None)), compiler_options=compiler_options())
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
    advance = jax.jit(run.advance, compiler_options=compiler_options())
    states = [jax.jit(run.init)(jax.random.key(i), hp, task) for i in range(n)]
    span = (jnp.int32(2), jnp.int32(2 + steps))
    jax.block_until_ready(advance(states[0], task, *span))

    def loop():
        return [advance(s, task, *span) for s in states]

    return _best_of(loop, 3)


def _torch_problem(cfg: Config):
    """The benchmark's work written in PyTorch: the same data model (identity dictionary, exact-k
    latents with magnitudes U[1,2]/sqrt(k) and random signs, labels sign <w*, z>), the same
    network (soft threshold at the relative threshold beta z_min |w_i|, no gradient through it,
    a fixed head of ones), FGM l2 at radius tau and plain SGD. Returns (torch, device, sync,
    batch(n) -> (z, y) of shape (n, B, d), (n, B), loss(W, x, y) for one network)."""
    import torch

    dev = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    d, k, B = cfg.data.d, cfg.data.k, cfg.train.batch
    beta, z_min = cfg.hp.beta, 1 / math.sqrt(k)
    torch.manual_seed(0)
    w_star = torch.randint(0, 2, (d,), device=dev).float() * 2 - 1

    def support(n):
        """(n, B, k) distinct feature indices by Floyd's algorithm, as purify.data samples them:
        k draws and no sort over d columns (top-k over d would cost PyTorch more than the step)."""
        u, chosen = torch.rand(k, n, B, device=dev), []
        for i, j in enumerate(range(d - k, d)):
            t = torch.clamp((u[i] * (j + 1)).floor().long(), max=j)
            taken = torch.zeros_like(t, dtype=torch.bool)
            for c in chosen:
                taken |= c == t
            chosen.append(torch.where(taken, j, t))
        return torch.stack(chosen, dim=-1)

    def batch(n):
        idx = support(n)
        signs = torch.randint(0, 2, (n, B, k), device=dev).float() * 2 - 1
        vals = signs * (1 + torch.rand(n, B, k, device=dev)) / math.sqrt(k)
        z = torch.zeros(n, B, d, device=dev).scatter_(-1, idx, vals)
        return z, torch.sign(z @ w_star)  # identity dictionary: x = z, as in the JAX program

    def loss(W, x, y):
        u = x @ W.T
        b = beta * z_min * W.detach().norm(dim=-1)
        f = (torch.relu(u - b) - torch.relu(-u - b)).sum(-1)
        return torch.nn.functional.softplus(-y * f).mean()

    return torch, dev, sync, batch, loss


def _init_weights(torch, cfg: Config, n: int, dev: str):
    d, m = cfg.data.d, cfg.model.width
    return torch.randn(n, m, d, device=dev) * cfg.hp.init_scale / math.sqrt(d)


def measure_torch(cfg: Config, n: int, steps: int) -> float | None:
    """Seconds for an eager PyTorch loop over n networks, or None without PyTorch.

    Runs on CUDA when JAX runs on a GPU and PyTorch sees one, so both sides use the same chip.
    """
    try:
        torch, dev, sync, batch, loss = _torch_problem(cfg)
    except ImportError:
        return None
    tau, lr = cfg.hp.tau, cfg.hp.lr

    def train_all():
        for W in _init_weights(torch, cfg, n, dev):
            W.requires_grad_(True)
            for _ in range(steps):
                z, y = batch(1)
                x, y = z[0], y[0]
                xr = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(loss(W, xr, y), xr)
                x_adv = x + tau * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
                loss(W, x_adv, y).backward()
                with torch.no_grad():
                    W -= lr * W.grad
                    W.grad = None

    train_all()  # warm-up
    sync()
    t = time.perf_counter()
    train_all()
    sync()
    return time.perf_counter() - t


def torch_vmap_step(torch, cfg: Config, batch, loss):
    """One training step of every network, W (n, m, d) -> W: `torch.func.vmap` over networks of
    `torch.func.grad` (FGM's input gradient, then the weight gradient at x + delta), data
    sampling included, under `torch.compile(fullgraph=True)`."""
    from torch.func import grad, vmap

    tau, lr = cfg.hp.tau, cfg.hp.lr

    def one_network(W, x, y):
        g = grad(loss, argnums=1)(W, x, y)
        x_adv = x + tau * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return W - lr * grad(loss)(W, x_adv, y)

    every_network = vmap(one_network)

    @torch.compile(fullgraph=True)
    def step(W):
        z, y = batch(W.shape[0])
        return every_network(W, z, y)

    return step


class TorchPeer(NamedTuple):
    """The strongest PyTorch peer, compiled and ready: W = step(W) trains every network one step."""

    torch: Any
    step: Callable
    weights: Any
    sync: Callable[[], None]
    compile_seconds: float


def torch_vmap_peer(cfg: Config, n: int) -> TorchPeer | None:
    """The strongest PyTorch peer over n networks' weights stacked (n, m, d), `torch_vmap_step`,
    compiled by its first call; None without PyTorch. Same device rule as `measure_torch`."""
    try:
        torch, dev, sync, batch, loss = _torch_problem(cfg)
    except ImportError:
        return None
    step = torch_vmap_step(torch, cfg, batch, loss)
    W = _init_weights(torch, cfg, n, dev)
    t = time.perf_counter()
    W = step(W)
    sync()
    return TorchPeer(torch, step, W, sync, time.perf_counter() - t)


def measure_torch_vmap(peer: TorchPeer, steps: int) -> dict:
    """{'seconds': for `steps` steps of the peer, 'compile_seconds': its first call}."""
    W = peer.weights

    def train():
        nonlocal W
        for _ in range(steps):
            W = peer.step(W)
        peer.sync()

    train()  # warm-up
    return {"seconds": _best_of(train, 3), "compile_seconds": peer.compile_seconds}


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
    from .sweeps import sweep

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


def run_bench(
    sizes=("small", "medium"),
    networks: dict | None = None,
    steps: int = 50,
    torch: bool = True,
    latency: bool = True,
    profile: bool = True,
) -> dict:
    """Measure every size; returns a JSON-ready dict with one row per size (and the compile
    latency of a new tiny config, unless latency=False; and where each size's step spends its
    time, `purify.profiling`, unless profile=False; CPU only: on an accelerator the library
    kernels do not carry their instruction's name, so the matmul row would come out short)."""
    from .profiling import profile_config

    on_cpu = jax.devices()[0].platform == "cpu"
    networks = networks or ({"small": 64, "medium": 16} if on_cpu else {"small": 1024, "medium": 4096})
    lat = measure_compile_latency() if latency else None
    peak = matmul_flops()
    rows, profiles = [], {}
    for size in sizes:
        cfg = bench_config(size, steps)
        n = int(networks[size])
        program = vmapped_program(cfg, n, steps)
        vm = measure_vmapped(program)
        # One network after another costs n times one network, so the loops time a prefix of
        # at most LOOP_NETWORKS networks and scale linearly; the JSON records how many were timed.
        n_seq, n_torch = min(n, LOOP_NETWORKS), min(n, TORCH_NETWORKS)
        seq = measure_sequential(cfg, n_seq, steps) * n / n_seq
        tt = measure_torch(cfg, n_torch, steps) if torch else None
        tt = None if tt is None else tt * n / n_torch
        peer = torch_vmap_peer(cfg, n) if torch else None
        tv = measure_torch_vmap(peer, steps) if peer else None
        if profile and on_cpu:
            profiles[size] = profile_config(program, peer, steps)
            profiles[size]["jax"]["wall_ms_per_step"] = 1e3 * vm["seconds"] / steps
            if profiles[size]["torch_vmap_compile"] and tv:
                profiles[size]["torch_vmap_compile"]["wall_ms_per_step"] = 1e3 * tv["seconds"] / steps
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
                "speedup_vs_torch_vmap_compile": None if tv is None else tv["seconds"] / vm["seconds"],
                "sequential_networks_timed": n_seq,
                "torch_networks_timed": n_torch if tt is not None else 0,
                "torch": "absent (pip install -e '.[torch]')"
                if torch and tt is None
                else ("skipped" if not torch else "measured"),
                "compile_seconds": vm["compile_seconds"],
                "torch_compile_seconds": None if tv is None else tv["compile_seconds"],
                "mb_per_network": vm["bytes_per_network"] / 1e6,
            }
        )
    return {
        "rows": rows,
        "compile_latency": lat,
        "profile": profiles or None,
        "profile_note": None if on_cpu or not profile else "not profiled: the profile is validated on CPU only",
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
        "vs torch vmap",
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
            ratio(r.get("speedup_vs_torch_vmap_compile")),
            f"{r['compile_seconds']:.1f}",
            f"{r['mb_per_network']:.2f}",
        ]
        lines.append("  ".join(f"{c:>14}" for c in cells))
    lat = result.get("compile_latency")
    if lat:
        lines.append(
            f"compile latency (new config d=32, width 64, {lat['networks']} networks, 1000 steps, no disk cache): "
            f"first call {lat['first_seconds']:.2f} s, second {lat['second_seconds']:.2f} s, "
            f"ratio {lat['first_over_second']:.2f}"
        )
    from .profiling import format_profile

    for size, prof in (result.get("profile") or {}).items():
        lines.extend(format_profile(size, prof))
    if result.get("profile_note"):
        lines.append(result["profile_note"])
    dev = result["provenance"]["device"]
    lines.append(f"device: {dev['kind']} ({dev['platform']}, {dev['count']}), FLOPs: {result['flop_count']}")
    return "\n".join(lines)
