"""`purify bench` end to end at a tiny size: every row it prints is measured (PyTorch, an optional
extra, is reported absent or measured, never silently dropped)."""

import importlib.util

from purify.bench import format_table, run_bench


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
