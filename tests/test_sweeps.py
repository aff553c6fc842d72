"""Scale: sharding over devices, several processes, slices and merging, the chunk-size chooser."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
import purify.sweeps as sweep_mod
from purify.cli import main
from purify.config import HPARAM_NAMES
from purify.train import Run

from .conftest import tiny

WORKER = Path(__file__).with_name("scale_worker.py")
COMPARE = ("purity_nw", "rho_nw", "clean_acc", "robust_acc", "loss", "W_final", "failed_step")


@pytest.fixture(scope="module")
def reference():
    return purify.sweep(tiny(), grid={"tau": [0.0, 0.3]}, seeds=3, chunk_size=6)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(extra)
    return env


def _assert_same(a, b, exact=False):
    for name in COMPARE:
        if exact:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_sharded_over_four_fake_devices_equals_one_device(reference, tmp_path):
    """6 runs on 4 devices: the chunk is padded to 8, the padding dropped."""
    out = tmp_path / "sharded.npz"
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out)],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = purify.Results.load(out)
    assert sharded.meta["devices"] == 4
    _assert_same(sharded, reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_under_jax_distributed_equal_one(reference, tmp_path):
    out, port = tmp_path / "dist.npz", str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), str(i), "2", port],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    first, second = purify.Results.load(out), purify.Results.load(tmp_path / "dist.p1.npz")
    assert first.meta["processes"] == 2
    _assert_same(first, reference)
    _assert_same(second, first, exact=True)


def test_slices_and_merge_reproduce_the_unsliced_sweep(reference, tmp_path, monkeypatch):
    dirs = []
    for i in range(3):
        d = tmp_path / f"slice{i}"
        with pytest.raises(purify.SliceFinished) as done:
            purify.sweep(tiny(), grid={"tau": [0.0, 0.3]}, seeds=3, chunk_size=2, out_dir=d, run_slice=(i, 3))
        assert done.value.computed == 1
        dirs.append(d)
    assert purify.merge_runs(dirs, tmp_path / "all") == 3
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: pytest.fail("a merged chunk was recomputed"))
    merged = purify.sweep(tiny(), grid={"tau": [0.0, 0.3]}, seeds=3, chunk_size=2, out_dir=tmp_path / "all")
    _assert_same(merged, reference)


@pytest.mark.slow
def test_cli_slice_and_merge(tmp_path, capsys):
    tiny_cli = [
        "--seeds",
        "2",
        "--quiet",
        "--chunk-size",
        "1",
        "--out",
        str(tmp_path / "fig"),
        "--set",
        "data.d=32",
        "--set",
        "data.k=3",  # the regime with headroom: sign magnitudes, k odd, a window at d = 32
        "--set",
        "exp.uniform_k=none",
        "--set",
        "model.width=32",
        "--set",
        "train.steps=20",
        "--set",
        "train.adv_start=10",
        "--set",
        "eval.n_eval=256",
        "--set",
        "train.batch=16",
    ]
    for i in range(2):
        assert main(["run", "fp-dynamics", "--slice", f"{i}/2", "--runs", str(tmp_path / f"r{i}"), *tiny_cli]) == 0
        assert f"slice {i}/2 finished" in capsys.readouterr().out
    assert not (tmp_path / "fig").exists()
    assert main(["merge", str(tmp_path / "r0"), str(tmp_path / "r1"), "--into", str(tmp_path / "r")]) == 0
    assert main(["run", "fp-dynamics", "--runs", str(tmp_path / "r"), *tiny_cli]) == 0
    assert (tmp_path / "fig" / "fp-dynamics.json").exists()
    assert main(["run", "fp-dynamics", "--slice", "2/2", *tiny_cli]) == 2


def _xla_bytes(cfg, c):
    run = Run(cfg, chunk=max(1, cfg.train.steps // 20))
    task = purify.make_task(cfg.data)
    keys = jax.vmap(jax.random.key)(jnp.arange(c))
    hp = {n: jnp.full((c,), getattr(cfg.hp, n)) for n in HPARAM_NAMES}
    state = jax.eval_shape(jax.vmap(run.init, in_axes=(0, 0, None)), keys, hp, task)
    sizes = []
    for fn, args in (
        (jax.vmap(run.advance, in_axes=(0, None, None, None)), (state, task, jnp.int32(0), jnp.int32(1))),
        (jax.vmap(run.observe, in_axes=(0, None, None)), (state, task, jnp.int32(0))),
    ):
        m = jax.jit(fn, donate_argnums=0).lower(*args).compile().memory_analysis()
        sizes.append(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)
    return max(sizes)


@pytest.mark.slow
def test_chunk_size_chooser_respects_the_budget():
    """At two budgets, XLA's memory analysis of the chosen chunk fits; the per-network estimate
    stays within 1x..3x of XLA's per-network growth (safe, not wildly conservative)."""
    cfg = tiny(**{"eval.n_eval": 256})
    sizes = {}
    for budget in (600_000, 4_000_000):
        c = purify.auto_chunk_size(cfg, 10_000, budget_bytes=budget, devices=jax.local_devices()[:1])
        sizes[c] = _xla_bytes(cfg, c)
        assert c >= 1 and sizes[c] <= budget, (budget, c, sizes[c])
    (c1, b1), (c2, b2) = sorted(sizes.items())
    per_network = (b2 - b1) / (c2 - c1)
    assert 1.0 <= sweep_mod.network_bytes(cfg) / per_network <= 3.0


def test_a_budget_below_one_network_is_refused():
    with pytest.raises(
        purify.ConfigError, match=r"model\.width=32, data\.d=16.* more than the 0\.00 GiB memory budget"
    ):
        purify.auto_chunk_size(tiny(), 10, budget_bytes=1000)


def test_chunk_size_is_chosen_when_not_given(tmp_path):
    cfg = tiny()
    one = sweep_mod.network_bytes(cfg) + 20_000  # room for one network, not two
    assert purify.auto_chunk_size(cfg, 3, budget_bytes=one, devices=jax.local_devices()[:1]) == 1
    res = purify.sweep(cfg, seeds=3, memory_budget_bytes=one, out_dir=tmp_path)
    assert len(list(tmp_path.rglob("runs_*.npz"))) == 3  # three chunks of one network
    assert res["loss"].shape[:2] == (1, 3)


def test_keep_params_false_drops_final_weights():
    res = purify.sweep(tiny(), seeds=2, keep_params=False)
    assert "W_final" not in res and "purity_nw" in res


@pytest.mark.slow
def test_a_sweep_on_another_task_is_not_resumed_from_disk(tmp_path):
    """The resume fingerprint covers the task: a downstream task's sweep must not reuse another's runs."""
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    t1 = purify.make_task(cfg.data)
    t2 = purify.Task(M=t1.M, w_star=-t1.w_star)
    a = purify.sweep(cfg, grid={"tau": [0.0]}, seeds=1, task=t1, out_dir=tmp_path)
    b = purify.sweep(cfg, grid={"tau": [0.0]}, seeds=1, task=t2, out_dir=tmp_path)
    again = purify.sweep(cfg, grid={"tau": [0.0]}, seeds=1, task=t2, out_dir=tmp_path)
    assert not np.allclose(a["W_final"], b["W_final"])
    np.testing.assert_array_equal(b["W_final"], again["W_final"])
