"""`purify bench` end to end at a tiny size: every row it prints is measured (PyTorch, an optional
extra, is reported absent or measured, never silently dropped)."""

import importlib.util

import pytest

from purify.benchmarks import format_table, run_bench
from purify.benchmarks.profiling import KINDS, PHASES, self_times


@pytest.mark.slow
def test_bench_prints_every_row_and_the_compile_latency():
    result = run_bench(("small",), networks={"small": 2}, steps=2, torch=True, latency=True)
    row = result["rows"][0]
    assert row["network_steps_per_s"] > 0 and row["speedup_vs_sequential_jax"] > 0
    if importlib.util.find_spec("torch") is None:
        assert row["torch"].startswith("absent") and row["speedup_vs_torch_vmap_compile"] is None
    else:
        assert row["torch"] == "measured" and row["speedup_vs_torch_vmap_compile"] > 0
    lat = result["compile_latency"]
    assert lat["first_seconds"] > lat["second_seconds"] > 0  # the first call compiles, the second does not
    table = format_table(result)
    assert "vs torch vmap" in table and "compile latency" in table and f"ratio {lat['first_over_second']:.2f}" in table
    # the profile: each phase of the step is found where it must be
    prof = result["profile"]["small"]
    ms = prof["jax"]["ms_per_step"]
    assert set(ms) == set(KINDS) and all(set(v) == set(PHASES) for v in ms.values())
    assert ms["matmul"]["FGM perturbation"] > 0 and ms["matmul"]["training gradient"] > 0
    assert ms["matmul"]["optimizer"] == 0  # SGD has no matmul
    assert ms["element-wise"]["data sampling"] > 0 and ms["element-wise"]["optimizer"] > 0
    assert "where a step's time goes, small config" in table
    if importlib.util.find_spec("torch") is not None:
        assert prof["torch_vmap_compile"]["ms_per_step"]["matmul"] > 0
        assert "torch.func.vmap + torch.compile: matmul" in table


def test_self_time_subtracts_nested_spans():
    # a loop (0-100) holding a dot (10-40) and a fusion (50-70) that holds a copy (55-60); a
    # second thread's dot (0-30); an unnamed span around everything is not reported
    lines = [
        [(0, 1000, "Execute"), (0, 100, "while"), (10, 30, "dot"), (50, 20, "fusion"), (55, 5, "copy")],
        [(0, 30, "dot")],
    ]
    got = self_times(lines, {"while", "dot", "fusion", "copy"})
    assert got == {"while": 50e-9, "dot": 60e-9, "fusion": 15e-9, "copy": 5e-9}


@pytest.mark.slow
def test_the_scaling_curve_doubles_the_networks_and_keeps_each_point(tmp_path, monkeypatch):
    from purify.benchmarks import scaling

    seen = []
    result = scaling.run_scaling(
        "small", steps=2, max_networks=5, torch=False, on_point=lambda r: seen.append(len(r["points"]))
    )
    assert result["networks"] == [1, 2, 4] and result["stopped_by"] == "max_networks=5"
    assert seen[:3] == [1, 2, 3]  # the CLI writes the JSON and the figure after every point
    for p in result["points"]:
        assert p["jax_vmap"] > 0 and p["jax_default"] > 0 and p["sequential_jax"] > 0 and p["mb_per_network"] > 0
        assert p["torch_vmap_compile"] is None
        assert p["runs_per_operation"] == 1  # a chunk of at most CPU_GROUP runs is one vmap
        if p["runs_per_operation"] == 1:
            assert p["jax_default"] == p["jax_vmap"]  # the same program, timed once
    # a device that reports its memory stops the curve before it would not fit
    monkeypatch.setattr(scaling, "_device_bytes", lambda: 10 * result["points"][0]["mb_per_network"] * 1e6)
    small = scaling.run_scaling("small", steps=2, max_networks=64, torch=False)
    last = small["points"][-1]
    assert last["networks"] < 64 and small["stopped_by"].startswith(f"memory: {2 * last['networks']} networks")
    assert 2 * last["networks"] * last["mb_per_network"] > 0.8 * 10 * result["points"][0]["mb_per_network"]
    path = tmp_path / "curve.png"
    scaling.plot_scaling(result, path)
    assert path.stat().st_size > 10_000
    assert "sequential JAX loop" in scaling.format_scaling(result)


def test_scaling_refuses_a_bad_network_count():
    from purify.benchmarks.scaling import run_scaling

    with pytest.raises(ValueError, match=r"max_networks=0 is not allowed: must be an integer >= 1"):
        run_scaling(max_networks=0)


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_three_steps_at_tiny_size(tmp_path):
    """scripts/gpu-check on this CPU with --tiny: the same commands a GPU runs, at test sizes."""
    import json
    import pathlib
    import subprocess

    script = pathlib.Path(__file__).parents[1] / "scripts" / "gpu-check"
    out = tmp_path / "gpu"
    done = subprocess.run([str(script), str(out), "--tiny"], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["bench", "scaling", "fp-dynamics"]
    assert all(": finished," in line for line in lines)
    assert json.loads((out / "bench-cpu.json").read_text())["rows"][0]["networks"] == 4
    assert json.loads((out / "scaling-cpu-small.json").read_text())["networks"] == [1, 2, 4]
    assert json.loads((out / "fp-dynamics.json").read_text())["preset"] == "test"
    assert (out / "scaling-cpu-small.png").exists() and (out / "fp-dynamics.png").exists()
    bad = subprocess.run([str(script), str(out), "--huge"], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "--huge is not allowed" in bad.stderr
