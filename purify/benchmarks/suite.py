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

import os

import jax

from purify.provenance import provenance
from purify.train import run_group

from .profiling import format_profile, profile_config
from .programs import (
    LOOP_NETWORKS,
    bench_config,
    flops_per_network_step,
    matmul_flops,
    measure_compile_latency,
    measure_sequential,
    measure_vmapped,
    vmapped_program,
)
from .torch_peer import TORCH_NETWORKS, measure_torch, measure_torch_vmap, torch_vmap_peer


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
    time, `purify.benchmarks.profiling`, unless profile=False; CPU only: on an accelerator the library
    kernels do not carry their instruction's name, so the matmul row would come out short)."""
    on_cpu = jax.devices()[0].platform == "cpu"
    networks = networks or ({"small": 64, "medium": 16} if on_cpu else {"small": 1024, "medium": 4096})
    lat = measure_compile_latency() if latency else None
    peak = matmul_flops()
    rows, profiles = [], {}
    for size in sizes:
        cfg = bench_config(size, steps)
        n = int(networks[size])
        # the batching `sweep` chooses here (`purify.train.run_group`), and a plain vmap beside it
        group = run_group(cfg, n, len(jax.local_devices()))
        program = vmapped_program(cfg, n, steps, group)
        vm = measure_vmapped(program)
        plain = vm if group == 1 else measure_vmapped(vmapped_program(cfg, n, steps, 1))
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
                "runs_per_operation": group,
                "network_steps_per_s": n * steps / vm["seconds"],
                "vmap_network_steps_per_s": n * steps / plain["seconds"],
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
        "group",
        "net-steps/s",
        "vmap n-s/s",
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
            r.get("runs_per_operation", 1),
            f"{r['network_steps_per_s']:.1f}",
            f"{r.get('vmap_network_steps_per_s', r['network_steps_per_s']):.1f}",
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
    for size, prof in (result.get("profile") or {}).items():
        lines.extend(format_profile(size, prof))
    if result.get("profile_note"):
        lines.append(result["profile_note"])
    dev = result["provenance"]["device"]
    lines.append(f"device: {dev['kind']} ({dev['platform']}, {dev['count']}), FLOPs: {result['flop_count']}")
    return "\n".join(lines)
