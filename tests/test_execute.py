"""The executor and its store: damaged chunk files are named, set aside and recomputed; downstream
fits resume from their chunks like sweeps."""

import jax
import numpy as np
import pytest

import purify

from .conftest import tiny


def test_a_damaged_chunk_is_named_set_aside_and_recomputed(tmp_path):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    first = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=2, out_dir=tmp_path, chunk_size=2)
    files = sorted(tmp_path.glob("*/runs_*.npz"))
    assert len(files) == 2
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:]):
        files[0].write_bytes(damage(files[0].read_bytes()))
        with pytest.warns(RuntimeWarning, match=f"damaged chunk file {files[0]}"):
            again = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=2, out_dir=tmp_path, chunk_size=2)
        np.testing.assert_array_equal(again["W_final"], first["W_final"])
        assert files[0].exists() and files[0].with_name(files[0].name + ".damaged").exists()


@pytest.mark.slow
def test_downstream_fits_resume_from_their_chunks(tmp_path, monkeypatch):
    cfg = tiny()
    task = purify.make_task(cfg.data)
    W = np.asarray(jax.random.normal(jax.random.key(0), (3, 32, 16))) * 0.3
    dc = purify.DownstreamConfig(steps=10, n_max=64, n_val=32, n_test=32, batch=16, taus=(0.1,), eval_pgd_steps=2)
    kw = {
        "seeds": [0, 1, 2],
        "backbone": {"W": W},
        "beta": 0.6,
        "theta": np.ones(16),
        "n": 64,
        "lr": 0.01,
        "chunk": 2,
        "out_dir": tmp_path,
    }
    first = purify.fit_and_evaluate(cfg, dc, task.M, **kw)
    assert len(list(tmp_path.glob("*/runs_*.npz"))) == 2
    from purify import execute

    monkeypatch.setattr(execute.ChunkStore, "save", lambda *a: pytest.fail("a finished chunk was computed again"))
    again = purify.fit_and_evaluate(cfg, dc, task.M, **kw)
    for k in ("clean", "robust", "val_clean"):
        np.testing.assert_array_equal(again[k], first[k])
    np.testing.assert_array_equal(again["params"]["v"], first["params"]["v"])


@pytest.mark.slow
def test_downstream_fits_slice_like_sweeps(tmp_path):
    cfg = tiny()
    task = purify.make_task(cfg.data)
    W = np.asarray(jax.random.normal(jax.random.key(1), (4, 32, 16))) * 0.3
    dc = purify.DownstreamConfig(steps=5, n_max=32, n_val=16, n_test=16, batch=8, taus=(0.1,), eval_pgd_steps=1)
    kw = {
        "seeds": [0, 1, 2, 3],
        "backbone": {"W": W},
        "beta": 0.6,
        "theta": np.ones(16),
        "n": 32,
        "lr": 0.01,
        "chunk": 1,
    }
    whole = purify.fit_and_evaluate(cfg, dc, task.M, **kw)
    for i in range(2):
        with pytest.raises(purify.SliceFinished):
            purify.fit_and_evaluate(cfg, dc, task.M, **kw, out_dir=tmp_path / f"s{i}", run_slice=(i, 2))
    purify.merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all")
    assert len(list((tmp_path / "all").glob("*/runs_*.npz"))) == 4
    merged = purify.fit_and_evaluate(cfg, dc, task.M, **kw, out_dir=tmp_path / "all")
    np.testing.assert_array_equal(merged["robust"], whole["robust"])
    np.testing.assert_array_equal(merged["params"]["v"], whole["params"]["v"])
