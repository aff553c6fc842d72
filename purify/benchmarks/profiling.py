"""Where one training step's time goes: the profile rows of `purify bench` (`--no-profile` skips them).

For the vmapped JAX sweep on CPU, the JAX profiler records every executed XLA instruction (a
thunk); each instruction's *self* time (its span minus the spans nested in it) is summed per
step and grouped by kind (matmul, element-wise, control and copies) and by the phase of the
step it belongs to, read from the source location JAX attaches to every instruction (data
sampling, the FGM perturbation, the training gradient, the optimizer). For the
`torch.func.vmap` + `torch.compile` peer, `torch.profiler` gives the same split by kind (matmul
library calls against Inductor's fused kernels). Times are span durations summed per step:
spans that ran at once on different threads each count in full, so the total can exceed the
step's wall time, which is printed beside it. CPU only: on a GPU, library kernels such as
cuBLAS's are not named after their instruction, so the matmul row would come out short.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile

import jax

from .programs import VmappedProgram
from .torch_peer import TorchPeer

KINDS = ("matmul", "element-wise", "control and copies")
PHASES = ("data sampling", "FGM perturbation", "training gradient", "optimizer", "loop, unattributed")
# the functions (innermost user frame of an instruction) that make up each phase of `Run.sgd_step`
_SAMPLING = {"Run._batch", "sample", "_active", "exact_k_support", "_sign_with_coin", "labels"}
_PERTURB = {"Run.perturb", "fgm", "pgd", "direction", "_row_norm", "input_grad", "project", "random_start"}
_CONTROL = {"while", "conditional", "call", "tuple", "get-tuple-element", "parameter", "copy", "bitcast", "constant"}


def _sections(hlo: str) -> dict[str, dict[int, str]]:
    """The FileNames / FunctionNames / FileLocations / StackFrames tables of an HLO module's text."""
    out, current = {}, None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = out.setdefault(line, {})
        elif current is not None and line and line[0].isdigit():
            i, rest = line.split(" ", 1)
            current[int(i)] = rest.strip().strip('"')
        else:
            current = None
    return out


def classify(hlo: str) -> dict[str, tuple[str, str]]:
    """Instruction name -> (kind, phase) for every instruction of a compiled module's text."""
    tables = _sections(hlo)
    files, funcs = tables.get("FileNames", {}), tables.get("FunctionNames", {})
    locs, frames = tables.get("FileLocations", {}), tables.get("StackFrames", {})

    def where(frame: int) -> tuple[str, str]:
        loc = re.search(r"file_location_id=(\d+)", frames.get(frame, ""))
        text = locs.get(int(loc.group(1)), "") if loc else ""
        f = re.search(r"file_name_id=(\d+) function_name_id=(\d+)", text)
        return (files.get(int(f.group(1)), ""), funcs.get(int(f.group(2)), "")) if f else ("", "")

    out = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(", line)
        if not m:
            continue
        name, opcode = m.groups()
        if opcode == "dot" or "__ynn_fusion" in line or re.search(r'custom_call_target="[^"]*(gemm|matmul)', line):
            kind = "matmul"
        elif opcode in _CONTROL:
            kind = "control and copies"
        else:
            kind = "element-wise"
        frame = re.search(r"stack_frame_id=(\d+)", line)
        file, func = where(int(frame.group(1))) if frame else ("", "")
        op_name = re.search(r'op_name="([^"]*)"', line)
        op_name = op_name.group(1) if op_name else ""
        if func in _SAMPLING:
            phase = "data sampling"
        elif func in _PERTURB or "/cond/" in op_name:  # the perturbation is the step's one branch
            phase = "FGM perturbation"
        elif "optax" in file or func in ("apply_updates",):
            phase = "optimizer"
        elif func and not func.startswith("Run.advance"):
            phase = "training gradient"
        else:  # the loop itself, or an instruction XLA made without a source (a copy, a rewritten dot)
            phase = "loop, unattributed"
        out[name] = (kind, phase)
    return out


def self_times(lines, names: set[str]) -> dict[str, float]:
    """Seconds of self time per name: `lines` is an iterable of timelines (one per thread), each an
    iterable of (start_ns, duration_ns, name) spans that nest; a span's self time is its duration
    less that of the spans directly inside it. Only names in `names` are reported."""
    total = collections.defaultdict(float)

    def close(stack, until):
        while stack and stack[-1][0] <= until:
            _, n, s = stack.pop()
            if n in names:
                total[n] += s / 1e9

    for line in lines:
        stack: list[list] = []  # open spans: [end_ns, name, self_ns]
        for start, dur, name in sorted(line, key=lambda e: (e[0], -e[1])):
            close(stack, start)
            if stack:
                stack[-1][2] -= dur
            stack.append([start + dur, name, dur])
        close(stack, float("inf"))
    return dict(total)


def _profile_lines(xspace: str):
    for plane in jax.profiler.ProfileData.from_file(xspace).planes:
        for line in plane.lines:
            yield [(e.start_ns, e.duration_ns, e.name) for e in line.events]


def profile_jax_step(program: VmappedProgram, steps: int) -> dict:
    """Milliseconds per step of self time, by kind and by phase, of the benchmark's compiled
    program (`purify.benchmarks.programs.vmapped_program`: `steps` SGD steps of the vmapped sweep)."""
    jax.block_until_ready(program.call())
    compiled = program.compiled
    labels = classify(compiled.as_text())
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        jax.block_until_ready(program.call())
        jax.profiler.stop_trace()
        (xspace,) = glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)
        seconds = self_times(_profile_lines(xspace), set(labels))
    table = {k: {p: 0.0 for p in PHASES} for k in KINDS}
    for name, s in seconds.items():
        kind, phase = labels[name]
        table[kind][phase] += 1e3 * s / steps
    return {"ms_per_step": table, "networks": program.networks, "steps": steps}


def profile_torch_step(peer: TorchPeer, steps: int) -> dict:
    """Milliseconds per step of self CPU time of the `torch.func.vmap` + `torch.compile` peer
    (`purify.benchmarks.torch_peer.torch_vmap_peer`), split into matmul library calls and the rest. CPU only:
    on CUDA use the PyTorch profiler's device view."""
    torch, step, W = peer.torch, peer.step, peer.weights
    for _ in range(2):  # warm up
        W = step(W)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            W = step(W)
        peer.sync()
    events = prof.key_averages()
    # Inductor's C++ kernels are not profiler events: they are the compiled region's time less
    # the library calls (matmuls, and the random-number draws) made from inside it
    region = sum(e.cpu_time_total for e in events if e.key.startswith("Torch-Compiled Region"))
    matmul = sum(e.self_cpu_time_total for e in events if e.key in _TORCH_MATMULS)
    calls = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::") and e.key not in _TORCH_MATMULS)
    ms = lambda us: us / 1e3 / steps
    return {
        "ms_per_step": {
            "matmul": ms(matmul),
            "other aten calls": ms(calls),
            "Inductor kernels": ms(region - matmul - calls),
        },
        "networks": W.shape[0],
        "steps": steps,
    }


_TORCH_MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul")


def profile_config(program: VmappedProgram, peer: TorchPeer | None, steps: int) -> dict:
    """Both profiles of one benchmark config (the peer's is None without PyTorch)."""
    return {
        "jax": profile_jax_step(program, steps),
        "torch_vmap_compile": profile_torch_step(peer, steps) if peer else None,
    }


def format_profile(size: str, prof: dict) -> list[str]:
    """Table lines: JAX's ms per step by phase (rows) and kind (columns), then the PyTorch peer's."""
    j, tp = prof["jax"], prof.get("torch_vmap_compile")
    wall = lambda p: f", wall {p['wall_ms_per_step']:.2f}" if p and "wall_ms_per_step" in p else ""
    head = f"where a step's time goes, {size} config, {j['networks']} networks (ms per step; spans summed, "
    lines = [head + "so spans on different threads can add up to more than the wall time):"]
    lines.append(f"  {'JAX phase':<20}" + "".join(f"{k:>20}" for k in KINDS) + f"{'total':>12}")
    t = j["ms_per_step"]
    for phase in PHASES:
        row = [t[k][phase] for k in KINDS]
        lines.append(f"  {phase:<20}" + "".join(f"{v:>20.2f}" for v in row) + f"{sum(row):>12.2f}")
    totals = [sum(t[k].values()) for k in KINDS]
    lines.append(f"  {'all' + wall(j):<20}" + "".join(f"{v:>20.2f}" for v in totals) + f"{sum(totals):>12.2f}")
    if tp:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in tp["ms_per_step"].items())
        lines.append(
            f"  torch.func.vmap + torch.compile: {parts} (total {sum(tp['ms_per_step'].values()):.2f}{wall(tp)})"
        )
    return lines
