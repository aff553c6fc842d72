"""No silent wrong result: settings an experiment controls are refused, values that float32 or
the seed words cannot hold are refused, saved work is reused only by the code that computed
it, full disks and foreign locks keep what finished, and damaged files say which file."""

import errno
import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import purify
from purify import execute, files, store
from purify import sweeps as sweep_mod
from purify.cli import main
from purify.config import ConfigError
from purify.records import describe_verdict
from purify.registry import get
from purify.runner import run_experiment
from purify.stats import verdict

from .conftest import tiny


def _refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything compiles a training program."""
    monkeypatch.setattr(sweep_mod, "_sweep_group", lambda *a, **k: pytest.fail("trained after a bad input"))


# -- settings the experiment controls ------------------------------------------------------------


@pytest.mark.parametrize(
    "exp_id, setting, governs",
    [
        ("fp-lowrank", "train.adv_rank=2", "exp.ranks"),
        ("fp-lowrank", "adv_rank=2", "exp.ranks"),  # a bare name resolves to the same setting
        ("inh-contrastive", "train.attack=surrogate", "exp.attacks"),
        ("inh-contrastive", "train.objective=spectral", "exp.objectives"),
        ("fp-principle", "train.snapshot_at=5", "snapshots W"),
        ("inh-supervised", "data.n_tasks=2", "exp.n_tasks"),
        ("inh-supervised", "model.head=trained", "trained head"),
        ("inh-supervised", "model.bias=trainable", "trainable-threshold"),
        ("fp-dynamics", "data.n_tasks=2", "reads one task"),
        ("fp-robustness", "train.objective=infonce", "trains on the labels"),
        ("fp-scaling", "data.d=32", "exp.ds"),
        ("nrt-transfer", "train.attack=pgd", "PGD-trained by name"),
    ],
)
def test_a_set_of_a_controlled_setting_is_refused_before_training(exp_id, setting, governs, capsys, no_training):
    err = _refused(capsys, "run", exp_id, "--set", setting, "--quiet", "--no-resume")
    key = setting.split("=")[0]
    assert f"{key}=" in err and f"not allowed for {exp_id}" in err and "would not be used" in err
    assert governs in err


def test_a_conditional_control_applies_only_while_its_option_is_set():
    exp = get("fp-phase")
    with pytest.raises(ConfigError, match=r"exp\.ds \(now \(16, 32\)\) sets it"):
        exp.config("cpu", {"data.d": 32, "exp.ds": (16, 32)})
    cfg, _, _ = exp.config("cpu", {"data.d": 32})  # exp.ds unset: data.d is honoured
    assert cfg.data.d == 32
    with pytest.raises(ConfigError, match=r"model\.width=32 is not allowed for fp-phase: must be >= data\.d=64"):
        exp.config("cpu", {"model.width": 32})  # would train width-0 networks


def test_every_experiment_declares_what_it_controls_and_its_record_says_so():
    from purify.registry import all_experiments

    for exp in all_experiments().values():
        controlled = exp.controlled()
        assert {"data.n_tasks", "train.objective"} <= set(controlled)
        for name in list(controlled) + list(exp.derives):
            purify.Config().resolve(name)  # every declared name is a real setting


# -- values that the program's dtypes cannot hold ------------------------------------------------


@pytest.mark.parametrize(
    "setting, rule",
    [
        ("hp.tau=1e39", "float32"),
        ("hp.lr=1e-50", "float32"),
        ("hp.init_scale=1e-50", "float32"),
        ("hp.noise=1e-45", "float32"),
        ("eval.taus=1e40", "float32"),
        ("data.task_seed=99999999999999999999", "<= 4294967295"),
        ("data.task_seed=4294967296", "<= 4294967295"),  # 2**32 would alias task seed 0
        ("train.steps=3000000000", "int32"),
        ("eval.n_eval=1", ">= 256"),
    ],
)
def test_values_the_program_cannot_hold_are_refused(setting, rule, capsys, no_training):
    err = _refused(capsys, "run", "fp-dynamics", "--set", setting, "--quiet", "--no-resume")
    assert setting.split("=")[0] in err and rule in err


def test_float32_limits_in_the_config_itself():
    with pytest.raises(ConfigError, match=r"hp\.lr=1e-50 .* float32"):
        tiny(**{"hp.lr": 1e-50})
    with pytest.raises(ConfigError, match=r"grid\.tau=1e\+39"):
        purify.sweep(tiny(), grid={"tau": [0.0, 1e39]}, seeds=2)
    assert tiny(**{"hp.noise": 0.0, "hp.lr": 1e-30}).hp.lr == 1e-30  # 0 and normal values pass


def test_check_reports_a_bad_input_once_before_anything_trains(tmp_path, capsys, no_training):
    err = _refused(capsys, "check", "--set", "data.d=0", "--out", str(tmp_path), "--runs", str(tmp_path / "r"))
    assert err.count("data.d=0 is not allowed") == 1 and "BROKEN" not in err
    # an option that only some experiments have is found before the first one trains
    err = _refused(capsys, "check", "--set", "exp.ranks=1", "--out", str(tmp_path), "--runs", str(tmp_path / "r"))
    assert "exp.ranks is not allowed" in err


def test_fit_and_evaluate_validates_every_argument():
    cfg = tiny()
    task = purify.make_task(cfg.data)
    W = np.zeros((2, 32, 16), np.float32) + 0.1
    dc = purify.DownstreamConfig(steps=4, n_max=32, n_val=16, n_test=16, batch=8)
    kw = {"seeds": [0, 1], "backbone": {"W": W}, "beta": 0.6, "theta": np.ones(16), "n": 32, "lr": 0.01}
    cases = [
        ({"lr": -0.01}, r"lr=-0\.01 is not allowed: must be > 0"),
        ({"lr": 1e-50}, "float32"),
        ({"tau": np.nan}, "tau=nan is not allowed"),
        ({"beta": -1.0}, "beta=-1.0 is not allowed"),
        ({"lam": "x"}, "lam='x' is not allowed"),
        ({"seeds": 2.5}, r"seeds=2\.5 is not allowed"),
        ({"seeds": [0, 1, 2]}, r"backbone\['W'\] of shape \(2, 32, 16\) is not allowed: must broadcast"),
        ({"theta": np.ones(8)}, r"theta of shape \(8,\) is not allowed"),
        ({"theta": np.ones((3, 16))}, r"theta of shape \(3, 16\) is not allowed: must broadcast"),
        ({"n": 2.5}, "n=2.5 is not allowed"),
        ({"lr": [0.1, 0.2, 0.3]}, r"lr of shape \(3,\) is not allowed"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message):
            purify.fit_and_evaluate(cfg, dc, task.M, **{**kw, **change})
    with pytest.raises(ConfigError, match=r"M of shape \(8, 8\) is not allowed"):
        purify.fit_and_evaluate(cfg, dc, np.eye(8), **kw)
    with pytest.raises(ConfigError, match="down.steps=0 is not allowed"):
        purify.fit_and_evaluate(cfg, purify.DownstreamConfig(steps=0), task.M, **kw)
    purify.DownstreamConfig(steps=0, head_init="robust").validate(32, 16)  # the probing stage alone is a fit


# -- saved work and the code that computed it ----------------------------------------------------


def test_the_source_digest_follows_every_edit(tmp_path):
    from purify.provenance import PACKAGE_ROOT, source_digest

    copy = tmp_path / "purify"
    subprocess.run(["cp", "-r", str(PACKAGE_ROOT), str(copy)], check=True)
    before = source_digest(copy)
    assert before == source_digest(PACKAGE_ROOT)
    # an experiment decides a chunk's numbers only through the config it hands to the library
    path = copy / "experiments" / "fp_dynamics.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    assert source_digest(copy) == before
    path = copy / "metrics.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    assert source_digest(copy) != before


@pytest.mark.slow
def test_a_chunk_from_other_code_is_set_aside_and_recomputed(tmp_path, monkeypatch):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    first = purify.sweep(cfg, seeds=2, out_dir=tmp_path)
    chunk = next(tmp_path.glob("*/runs_*.npz"))
    monkeypatch.setattr(store, "source_digest", lambda: "0123456789abcdef")  # the package after an edit
    calls = []
    real = sweep_mod.run_chunk
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.warns(RuntimeWarning, match=f"outdated chunk file {chunk} .*computed by other code"):
        again = purify.sweep(cfg, seeds=2, out_dir=tmp_path)
    assert calls == [1] and chunk.with_name(chunk.name + ".damaged").exists()
    np.testing.assert_array_equal(again["W_final"], first["W_final"])
    with np.load(chunk) as z:
        assert str(z["__code__"]) == "0123456789abcdef"  # recomputed by, and tagged with, the new code


def test_a_chunk_missing_a_quantity_is_damaged(tmp_path):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    first = purify.sweep(cfg, seeds=2, out_dir=tmp_path)
    chunk = next(tmp_path.glob("*/runs_*.npz"))
    with np.load(chunk) as z:
        arrays = {k: z[k] for k in z.files if k != "purity"}  # what an older version wrote
    np.savez(chunk, **arrays)
    with pytest.warns(RuntimeWarning, match=r"damaged chunk file .*lacks \['purity'\]"):
        again = purify.sweep(cfg, seeds=2, out_dir=tmp_path)
    np.testing.assert_array_equal(again["purity"], first["purity"])


def test_a_chunk_saved_without_parameters_serves_a_call_that_wants_them(tmp_path, monkeypatch):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    lean = purify.sweep(cfg, seeds=2, out_dir=tmp_path, keep_params=False)
    assert "W_final" not in lean
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: pytest.fail("recomputed a saved chunk"))
    assert purify.sweep(cfg, seeds=2, out_dir=tmp_path)["W_final"].shape == (1, 2, 32, 16)


# -- full disks -----------------------------------------------------------------------------------


def _no_space(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_folder_without_room_for_the_run_is_refused_before_training(tmp_path, monkeypatch, no_training):
    usage = type("usage", (), {"free": 1000, "total": 10**9, "used": 0})
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage)
    with pytest.raises(ConfigError, match=r"out_dir='.*' is not allowed for this run: it will write about .* MiB"):
        purify.sweep(tiny(), seeds=2, out_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="out='.*' is not allowed for this run"):
        run_experiment("fp-dynamics", seeds=2, out=tmp_path / "out", runs_dir=None)


def test_a_full_disk_mid_run_keeps_the_finished_chunks(tmp_path, monkeypatch):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    grid = {"tau": [0.0, 0.3]}
    whole = purify.sweep(cfg, grid=grid, seeds=2, chunk_size=2)
    real_save, saves = store.ChunkStore.save, []

    def second_save_fails(self, lo, hi, arrays):
        saves.append(lo)
        if len(saves) == 2:
            _no_space()
        real_save(self, lo, hi, arrays)

    monkeypatch.setattr(store.ChunkStore, "save", second_save_fails)
    with pytest.raises(execute.RunsFolderFull, match=r"no space left in .* saving runs 2\.\.3 .*1 of 2 chunk\(s\)"):
        purify.sweep(cfg, grid=grid, seeds=2, chunk_size=2, out_dir=tmp_path)
    finished = [f for f in tmp_path.glob("*/runs_*.npz") if not f.name.endswith(".ckpt.npz")]
    assert [f.name for f in finished] == ["runs_0000000-0000002.npz"]
    assert list(tmp_path.glob("*/runs_0000002-0000004.ckpt.npz"))  # the chunk in flight's checkpoint stays
    monkeypatch.setattr(store.ChunkStore, "save", real_save)
    again = purify.sweep(cfg, grid=grid, seeds=2, chunk_size=2, out_dir=tmp_path)
    for name in whole.arrays:
        np.testing.assert_array_equal(again[name], whole[name], err_msg=name)


def test_a_full_disk_for_checkpoints_lets_the_chunk_finish(tmp_path, monkeypatch, caplog):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    monkeypatch.setattr(store.ChunkStore, "save_checkpoint", lambda *a: _no_space())
    with caplog.at_level("WARNING", logger="purify"):
        res = purify.sweep(cfg, seeds=2, out_dir=tmp_path, checkpoint_seconds=0)
    assert "no space left" in caplog.text and caplog.text.count("for a checkpoint") == 1
    assert np.isfinite(res["purity"]).all() and len(list(tmp_path.glob("*/runs_*.npz"))) == 1


def test_a_record_and_its_figure_are_written_both_or_neither(tmp_path, monkeypatch):
    calls = []
    real = os.fsync

    def second_fails(fd):
        calls.append(fd)
        if len(calls) == 2:
            _no_space()
        real(fd)

    monkeypatch.setattr(files.os, "fsync", second_fails)
    with pytest.raises(OSError, match="No space"):
        files.atomic_write_files({tmp_path / "a.json": b"{}", tmp_path / "a.png": b"png"})
    assert list(tmp_path.iterdir()) == []  # neither file, no temporary left behind


@pytest.mark.slow
def test_a_full_disk_at_the_record_is_one_clear_message(tmp_path, monkeypatch, capsys):
    from .test_cli import TEST

    monkeypatch.setattr(files.os, "fsync", lambda fd: _no_space())
    out = tmp_path / "out"
    rc = main(["run", "fp-dynamics", "--seeds", "2", "--out", str(out), "--no-resume", *TEST])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "fp-dynamics.json and fp-dynamics.png" in err and "neither was written" in err
    assert not out.exists() or list(out.iterdir()) == []


# -- locks ----------------------------------------------------------------------------------------


def _lock_for(tmp_path, cfg):
    table = sweep_mod.grid_table(cfg, None)[0]
    folder = tmp_path / sweep_mod.fingerprint(
        cfg, table, np.arange(2), 2, purify.make_task(cfg.data), purify.train.run_group(cfg, 2, 1)
    )
    folder.mkdir(parents=True)
    return folder / "runs_0000000-0000002.lock"


def test_a_lock_whose_pid_now_names_another_process_is_taken_over(tmp_path):
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    lock = _lock_for(tmp_path, cfg)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = store.process_start(other.pid)
        assert started is not None
        # the holder that wrote this lock started at another time: its pid was reused since
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "started": started - 1}))
        t0 = time.monotonic()
        purify.sweep(cfg, seeds=2, out_dir=tmp_path)
        assert time.monotonic() - t0 < 60 and not lock.exists()
        # the same pid with its own start time is a live holder
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "started": started}))
        assert not store._stale(lock)
        # ... until it stops refreshing its lock: then its holder is hung, and the wait ends
        old = time.time() - store.STALE_SECONDS - 1
        os.utime(lock, (old, old))
        assert store._stale(lock)
        # a lock its holder has created and not yet written is live, for a heartbeat
        lock.write_text("")
        assert not store._stale(lock)
        old = time.time() - store.HEARTBEAT_SECONDS - 1
        os.utime(lock, (old, old))
        assert store._stale(lock)
    finally:
        other.kill()
        other.wait()


def test_a_held_lock_is_refreshed_and_a_wait_reports_progress(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(store, "HEARTBEAT_SECONDS", 0.05)
    s = store.ChunkStore(tmp_path, "tag")
    held = s.lock(0, 2)
    path = s.lock_path(0, 2)
    os.utime(path, (0, 0))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5  # the heartbeat refreshed it
    from purify.plan import make_plan

    plan = make_plan(2, 2)
    released = []

    def compute(idx, work):
        pytest.fail("computed a chunk another process holds")

    def release_later():
        time.sleep(1.0)
        s.save(0, 2, {"x": np.zeros(2)})
        held.release()
        released.append(1)

    import threading

    threading.Thread(target=release_later, daemon=True).start()
    s2 = store.ChunkStore(tmp_path, "tag")
    with caplog.at_level("WARNING", logger="purify"):
        out = execute.execute(plan, s2, compute, poll_seconds=0.05, report_seconds=0.3)
    assert released and out["x"].shape == (2,)
    assert "waiting for them" in caplog.text and "still waiting for runs 0..1" in caplog.text


# -- the smaller items ----------------------------------------------------------------------------


def test_results_load_names_the_file_whatever_is_wrong(tmp_path):
    empty_header = tmp_path / "header.npz"
    np.savez(empty_header, __header__=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(ValueError, match=f"{empty_header} is damaged or not a purify results file: its header lacks"):
        purify.Results.load(empty_header)
    npy = tmp_path / "one.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(ValueError, match=f"{npy} is not a purify results file"):
        purify.Results.load(npy)


def test_figures_on_a_truncated_record_names_it(tmp_path, capsys):
    (tmp_path / "fp-dynamics.json").write_text('{"experiment": "fp-dyn')
    err = _refused(capsys, "figures", "--out", str(tmp_path), "--only", "fp-dynamics")
    assert f"record '{tmp_path / 'fp-dynamics.json'}' is not allowed: it cannot be read as JSON" in err


def test_memory_refusals_name_the_settings(no_training):
    with pytest.raises(ConfigError, match=r"data\.d=100000000.*eval\.n_eval=64"):
        purify.sweep(tiny(**{"data.d": 10**8, "model.width": 4}), seeds=2)
    with pytest.raises(ConfigError, match=r"eval\.n_eval=1000000000"):
        purify.sweep(tiny(**{"eval.n_eval": 10**9}), seeds=2)


@pytest.mark.slow
def test_row_config_gives_back_the_values_asked_for(tmp_path):
    res = purify.sweep(tiny(**{"train.steps": 4, "train.adv_start": 2}), grid={"lr": [0.1, 0.3]}, seeds=1)
    assert res.row_config(0).hp.lr == 0.1 and res.row_config(1).hp.lr == 0.3


def test_a_verdict_from_a_minority_of_runs_is_invalid_and_says_how_many_were_dropped():
    flagged = [True] * 10 + [False] * 5
    values = [-0.3, -0.2, -0.4, -0.3, -0.1, -0.2, -0.3, -0.25, -0.2, -0.1, 0.3, 0.2, 0.4, 0.3, 0.35]
    v = verdict(values, ">", flagged=flagged, min_effect=0.05, why="")
    assert v["verdict"] == "invalid" and "10 of 15 runs were dropped" in v["invalid_reason"]
    text = describe_verdict(v)
    assert "10 of 15 runs dropped" in text and "invalid:" in text
    half = verdict([0.3, 0.2, 0.4, 0.3, 0.1, 0.2, 0.3, 0.25], ">", flagged=[True] * 4 + [False] * 4, min_effect=0.05)
    assert half["verdict"] != "invalid"  # half dropped: still a sample, and it says so
    assert "4 of 8 runs dropped" in describe_verdict(half)


def test_damaged_files_are_kept_listed_and_removable(tmp_path, capsys):
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / "runs_0000000-0000002.npz.damaged").write_bytes(b"x" * 2048)
    assert main(["damaged", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "runs_0000000-0000002.npz.damaged" in out and "1 damaged file(s)" in out
    assert main(["damaged", "--runs", str(tmp_path), "--remove"]) == 0
    assert "removed 1 damaged file(s)" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.damaged"))


def test_seed_words_cover_every_allowed_seed():
    # the largest allowed seed is its own key, distinct from seed 0 (2**32 would alias 0)
    big = jax.random.key_data(jax.random.key(purify.config.SEED_MAX))
    assert not np.array_equal(big, jax.random.key_data(jax.random.key(0)))
