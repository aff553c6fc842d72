"""`purify bench --scaling`: network-steps per second against the number of networks.

For N = 1, 2, 4, ... networks of one standard config (the `purify bench` step: FGM l2 training,
batch 256, data sampled in the step) it times, side by side in one run: the plain `vmap` over
the N networks, the batching `sweep` chooses by default (`purify.train.run_group`: groups of
networks scanned on a single CPU device), the sequential loop over the single-run program (the
reference: it cannot beat one network's rate), and the `torch.func.vmap` + `torch.compile` peer
when PyTorch is installed. The curve stops at `max_networks` or where the next doubling would
not fit the device's memory (XLA's memory analysis of the last compiled chunk, against 80% of
what the device reports; on a CPU, which reports nothing, `max_networks` alone).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from purify.provenance import provenance
from purify.train import run_group

from .programs import bench_config, measure_sequential, measure_vmapped, vmapped_program
from .torch_peer import measure_torch_vmap, torch_vmap_peer

IMPLEMENTATIONS = ("jax_default", "jax_vmap", "sequential_jax", "torch_vmap_compile")
LABELS = {
    "jax_default": "purify (default batching)",
    "jax_vmap": "purify, one vmap",
    "sequential_jax": "sequential JAX loop",
    "torch_vmap_compile": "torch.func.vmap + torch.compile",
}
SEQUENTIAL_NETWORKS = 16  # the loop's rate is one network's: timing more adds nothing but time


def _device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def run_scaling(
    size: str = "small",
    steps: int = 20,
    max_networks: int | None = None,
    torch: bool = True,
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Measure the curve; returns a JSON-ready dict: one point per network count with
    network-steps per second for each implementation (None where not measured), the stop reason,
    and the provenance. on_point(result so far) after each point (the CLI writes the JSON and
    the figure there, so a curve stopped early keeps its points).

    Example:
        >>> run_scaling("small", steps=2, max_networks=2, torch=False)["networks"]
        [1, 2]
    """
    if isinstance(max_networks, bool) or (max_networks is not None and max_networks < 1):
        raise ValueError(f"max_networks={max_networks!r} is not allowed: must be an integer >= 1")
    on_cpu = jax.devices()[0].platform == "cpu"
    max_networks = max_networks or (256 if on_cpu else 65536)
    limit = _device_bytes()
    cfg = bench_config(size, steps)
    sequential_rate = None
    points = []
    result = {
        "config": size,
        "d": cfg.data.d,
        "width": cfg.model.width,
        "batch": cfg.train.batch,
        "steps": steps,
        "networks": [],
        "points": points,
        "stopped_by": "not yet: the curve is being measured",
        "torch": "measured" if torch else "skipped",
        "provenance": provenance(),
    }
    n = 1
    while n <= max_networks:
        plain_program = vmapped_program(cfg, n, steps, 1)
        plain = measure_vmapped(plain_program)
        group = run_group(cfg, n, len(jax.local_devices()))
        chosen = plain if group == 1 else measure_vmapped(vmapped_program(cfg, n, steps, group))
        if sequential_rate is None or n <= SEQUENTIAL_NETWORKS:
            sequential_rate = n * steps / measure_sequential(cfg, n, steps)
        peer = torch_vmap_peer(cfg, n) if torch else None
        tv = measure_torch_vmap(peer, steps) if peer else None
        points.append(
            {
                "networks": n,
                "runs_per_operation": group,
                "jax_default": n * steps / chosen["seconds"],
                "jax_vmap": n * steps / plain["seconds"],
                # past SEQUENTIAL_NETWORKS the loop's rate is the last one measured
                "sequential_jax": sequential_rate,
                "sequential_measured": n <= SEQUENTIAL_NETWORKS,
                "torch_vmap_compile": None if tv is None else n * steps / tv["seconds"],
                "mb_per_network": plain["bytes_per_network"] / 1e6,
            }
        )
        result["networks"].append(n)
        if torch and tv is None:
            result["torch"] = "absent (pip install -e '.[torch]')"
        full = limit is not None and 2 * n * plain["bytes_per_network"] > 0.8 * limit
        if full:
            result["stopped_by"] = f"memory: {2 * n} networks would need over 80% of the device's {limit / 1e9:.1f} GB"
        elif 2 * n > max_networks:
            result["stopped_by"] = f"max_networks={max_networks}"
        if on_point:
            on_point(result)
        if full:
            break
        n *= 2
    return result


def format_scaling(result: dict) -> str:
    head = ["networks", "group"] + [LABELS[k] for k in IMPLEMENTATIONS]
    lines = [f"{result['config']} config (d {result['d']}, width {result['width']}), network-steps/s:"]
    lines.append("  ".join(f"{h:>31}" if i > 1 else f"{h:>8}" for i, h in enumerate(head)))
    for p in result["points"]:
        cells = [f"{p['networks']:>8}", f"{p['runs_per_operation']:>8}"]
        cells += [f"{'n/a' if p[k] is None else f'{p[k]:.1f}':>31}" for k in IMPLEMENTATIONS]
        lines.append("  ".join(cells))
    lines.append(f"stopped by {result['stopped_by']}")
    return "\n".join(lines)


def plot_scaling(result: dict, path) -> None:
    """Log-log network-steps/s against networks, one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ns = result["networks"]
    styles = {"sequential_jax": {"color": "0.4", "ls": "--"}, "torch_vmap_compile": {"color": "C3"}}
    labels = dict(LABELS)
    grouped = [p for p in result["points"] if p["runs_per_operation"] > 1]
    if grouped:
        g = grouped[0]
        labels["jax_default"] += f": groups of {g['runs_per_operation']} from N = {g['networks']}"
    measured = [p["networks"] for p in result["points"] if p["sequential_measured"]]
    if measured and measured[-1] < ns[-1]:
        labels["sequential_jax"] += f" (measured to N = {measured[-1]}, then carried on)"
    for k in IMPLEMENTATIONS:
        ys = [p[k] for p in result["points"]]
        if all(y is None for y in ys):
            continue
        marks = len(measured) if k == "sequential_jax" else len(ys)  # markers only where measured
        ax.plot(ns, ys, marker="o", ms=3.5, markevery=list(range(marks)), label=labels[k], **styles.get(k, {}))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("networks trained at once (N)")
    ax.set_ylabel("network-steps per second (higher is faster)")
    dev = result["provenance"]["device"]
    ax.set_title(
        f"Throughput against N: {result['config']} config (d {result['d']}, width {result['width']}, "
        f"batch {result['batch']}, FGM)\n{dev['kind']} ({dev['platform']}, {dev['count']} device(s)); "
        "the dashed loop trains one network at a time",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)  # below: no line hidden
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
