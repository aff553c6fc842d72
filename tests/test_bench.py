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
