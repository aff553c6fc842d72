"""Faults, injected: Ctrl-C and SIGKILL of a real `purify run` mid-chunk, damaged chunk and
checkpoint files, read-only and misnamed folders, two processes on one runs folder. Each test
asserts that nothing finished is lost and that the final numbers equal an uninterrupted run's."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import purify
from purify import execute
from purify import sweeps as sweep_mod
from purify.records import compare_records
from purify.runner import run_experiment

from .conftest import CACHE, tiny

# fp-dynamics at a size where compiling takes seconds (found in the shared cache after the first
# run) and training a few: 2 grid rows x 2 seeds in 2 chunks of 2 networks, 20 step calls each.
STEPS = 6000
RUN = [
    sys.executable,
    "-m",
    "purify.cli",
    "run",
    "fp-dynamics",
    "--seeds",
    "2",
    "--chunk-size",
    "2",
    *(
        [
            "--set",
            "data.d=32",
            "--set",
            "data.k=3",  # odd: the regime with headroom has sign magnitudes
            "--set",
            "exp.uniform_k=none",  # the main row only: one sweep
            "--set",
            "model.width=64",
            "--set",
            "train.batch=256",
            "--set",
            "eval.n_eval=256",
        ]
    ),
    *f"--set train.steps={STEPS} --set train.adv_start={STEPS // 2} --set eval.pgd_steps=2".split(),
    *["--set", "hp.tau=0.3", "--set", "eval.taus=0.3"],
]
TOTAL = 2 * STEPS  # the progress bar's unit: steps, summed over the 2 chunks


def _env(cache: bool = True) -> dict:
    return {**os.environ, "PURIFY_CACHE_DIR": str(CACHE) if cache else "", "PYTHONUNBUFFERED": "1"}


def _start(tmp: Path, name: str, *extra: str, runs: Path | None = None) -> subprocess.Popen:
    runs = runs or tmp / f"runs-{name}"
    return subprocess.Popen(
        [*RUN, "--out", str(tmp / name), "--runs", str(runs), *extra],
        cwd=tmp,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _record(folder: Path) -> dict:
    return json.loads((folder / "fp-dynamics.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's record."""
    tmp = tmp_path_factory.mktemp("reference")
    rc, _, err = _finish(_start(tmp, "ref", "--quiet"))
    assert rc == 0, err
    return _record(tmp / "ref")


def _checkpoint(runs: Path) -> Path | None:
    found = list(runs.glob("*/runs_*.ckpt.npz"))
    return found[0] if found else None


@pytest.mark.slow
def test_ctrl_c_mid_chunk_saves_a_checkpoint_and_the_rerun_resumes_to_identical_numbers(tmp_path, reference):
    runs = tmp_path / "runs"
    # checkpoints only on Ctrl-C here: what is saved is what the interrupt itself wrote
    proc = _start(tmp_path, "a", "--checkpoint-every", "3600", runs=runs)
    seen, lock = [], threading.Lock()

    def read():
        for ch in iter(lambda: proc.stderr.read(1), ""):
            with lock:
                seen.append(ch)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    position = 0
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the progress bar to show training inside the first chunk
        with lock:
            text = "".join(seen)
        bars = re.findall(rf"(\d+)/{TOTAL} \[", text)
        position = int(bars[-1]) if bars else 0
        if 0 < position < STEPS - STEPS // 10:
            break
        assert proc.poll() is None, text
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    text = "".join(seen)
    assert proc.returncode == 130, text
    m = re.search(
        rf"interrupted at step (\d+) of {TOTAL} \(2 chunk\(s\) x {STEPS} steps\): (\d+) of {TOTAL} steps", text
    )
    assert m, text
    at, saved = int(m.group(1)), int(m.group(2))
    assert 0 < saved == at < STEPS and "run the same command again to resume" in text
    assert "stopping after the step call in flight" in text
    ckpt = _checkpoint(runs)
    assert ckpt is not None  # written by the interrupt, not by a timer
    with np.load(ckpt) as z:
        assert int(z["__done__"]) == saved
    assert not list(runs.glob("*/runs_*.lock"))  # released on the way out

    rc, _, err = _finish(_start(tmp_path, "a", "--verbose", "--quiet", runs=runs))
    assert rc == 0, err
    assert f"resuming runs 0..1 from their checkpoint at {saved}" in err
    assert compare_records(reference, _record(tmp_path / "a")) == []
    assert _checkpoint(runs) is None and len(list(runs.glob("*/runs_*.npz"))) == 2


@pytest.mark.slow
def test_sigkill_mid_chunk_loses_at_most_the_last_step_call(tmp_path, reference):
    runs = tmp_path / "runs"
    proc = _start(tmp_path, "k", "--quiet", "--checkpoint-every", "0", runs=runs)
    deadline = time.time() + 240
    while _checkpoint(runs) is None:  # the first checkpoint of the first chunk: mid-chunk
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with np.load(_checkpoint(runs)) as z:
        saved = int(z["__done__"])
    assert 0 < saved < STEPS
    assert list(runs.glob("*/runs_*.lock"))  # the dead process's lock is left behind ...

    rc, _, err = _finish(_start(tmp_path, "k", "--verbose", "--quiet", runs=runs))
    assert rc == 0, err  # ... and found stale: its process is gone
    assert "resuming runs 0..1 from their checkpoint" in err
    assert compare_records(reference, _record(tmp_path / "k")) == []
    assert not list(runs.glob("*/runs_*.lock")) and _checkpoint(runs) is None


@pytest.mark.slow
def test_sigterm_mid_chunk_checkpoints_says_so_and_exits_143(tmp_path, reference):
    runs = tmp_path / "runs"
    proc = _start(tmp_path, "t", "--quiet", "--checkpoint-every", "3600", runs=runs)
    deadline = time.time() + 240
    while _checkpoint(runs) is None:  # the first checkpoint, after the first step call: training is under way
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.005)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = _finish(proc, timeout=120)
    assert rc == 143, err
    assert "SIGTERM: stopping after the step call in flight" in err and "Traceback" not in err
    m = re.search(rf"terminated \(SIGTERM\) at step (\d+) of {TOTAL} .*: (\d+) of {TOTAL} steps are saved", err)
    assert m and int(m.group(2)) == int(m.group(1)) > 0, err
    with np.load(_checkpoint(runs)) as z:
        assert int(z["__done__"]) == int(m.group(2))
    rc, _, err = _finish(_start(tmp_path, "t", "--verbose", "--quiet", runs=runs))
    assert rc == 0, err
    assert f"resuming runs 0..1 from their checkpoint at {m.group(2)}" in err
    assert compare_records(reference, _record(tmp_path / "t")) == []


@pytest.mark.slow
def test_sigkill_before_the_first_timed_checkpoint_keeps_the_first_step_call(tmp_path, reference):
    runs = tmp_path / "runs"
    proc = _start(tmp_path, "e", "--quiet", runs=runs)  # the default interval: 60 s, longer than this run
    t0, deadline = time.time(), time.time() + 240
    while _checkpoint(runs) is None:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.005)
    proc.kill()
    proc.wait(timeout=60)
    assert time.time() - t0 < 60  # killed before the 60-s mark, and yet ...
    with np.load(_checkpoint(runs)) as z:
        assert 0 < int(z["__done__"]) < STEPS  # ... a checkpoint exists: written after the first step call
    rc, _, err = _finish(_start(tmp_path, "e", "--verbose", "--quiet", runs=runs))
    assert rc == 0, err
    assert "resuming runs 0..1 from their checkpoint" in err
    assert compare_records(reference, _record(tmp_path / "e")) == []


@pytest.mark.slow
def test_two_processes_on_one_runs_folder_compute_each_chunk_once(tmp_path, reference):
    runs = tmp_path / "runs"
    procs = [_start(tmp_path, name, "--quiet", "--verbose", runs=runs) for name in ("p", "q")]
    results = [_finish(p) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err
    errs = "".join(err for _, _, err in results)
    assert errs.count("computing runs 0..1") == 1 and errs.count("computing runs 2..3") == 1, errs
    for name in ("p", "q"):
        assert compare_records(reference, _record(tmp_path / name)) == []
    assert len(list(runs.glob("*/runs_*.npz"))) == 2 and not list(runs.glob("*/runs_*.lock"))


# -- folders that cannot be written: refused before anything compiles ----------------------------


def _read_only(path: Path) -> str:
    """Make a folder read-only for this user: chmod, and for root (who writes through chmod) the
    immutable attribute, or where the file system has none a read-only bind mount. Checked, so
    the test never passes on a folder that is still writable. Returns how, for `_writable_again`."""
    path.chmod(0o555)
    how = "chmod"
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode == 0:
            how = "chattr"
        else:
            subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], check=True)
            how = "mount"
    with pytest.raises(OSError):
        (path / "probe").write_text("x")
    return how


def _writable_again(path: Path, how: str) -> None:
    if how == "chattr":
        subprocess.run(["chattr", "-i", str(path)], check=False)
    elif how == "mount":
        subprocess.run(["umount", str(path)], check=False)
    path.chmod(0o755)


def _refused(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [*RUN, "--quiet", *args],
        cwd=cwd,
        env=_env(cache=False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_unwritable_or_misnamed_folders_are_refused_before_training(tmp_path):
    readonly, a_file = tmp_path / "readonly", tmp_path / "a-file"
    readonly.mkdir()
    a_file.write_text("not a folder")
    how = _read_only(readonly)
    try:
        err = _refused(["--out", str(readonly), "--runs", str(tmp_path / "runs")], tmp_path)
        assert f"out='{readonly}' is not allowed: it cannot be written" in err
        err = _refused(["--out", str(tmp_path / "out"), "--runs", str(readonly)], tmp_path)
        assert f"runs='{readonly}' is not allowed: it cannot be written" in err
        err = _refused(["--out", str(readonly / "sub"), "--runs", str(tmp_path / "runs")], tmp_path)
        assert f"out='{readonly / 'sub'}' is not allowed: it cannot be written" in err
        err = _refused(["--out", str(a_file), "--runs", str(tmp_path / "runs")], tmp_path)
        assert f"out='{a_file}' is not allowed: it is a file" in err
        assert not list(tmp_path.rglob("*.npz"))  # nothing trained
    finally:
        _writable_again(readonly, how)


def test_a_hand_chosen_chunk_size_is_checked_against_the_memory():
    with pytest.raises(purify.ConfigError, match=r"chunk_size=1000000 is not allowed here: .* model\.width=32"):
        purify.sweep(tiny(), seeds=2, grid={"tau": [0.0] * 3}, chunk_size=10**6, memory_budget_bytes=1 << 16)
    out = Path(tempfile.mkdtemp())
    big = {"model.width": 4096, "data.d": 1024, "eval.n_eval": 4096}
    with pytest.raises(purify.ConfigError, match=r"chunk_size=4096 is not allowed here: .* model\.width=4096"):
        run_experiment("fp-dynamics", seeds=2, chunk_size=4096, runs_dir=None, out=out, overrides=big)
    assert not list(out.iterdir())


# -- in process: checkpoints resume exactly; damaged ones are named and never used ---------------


def _interrupt_at(monkeypatch, done_at: int):
    real = execute.ChunkWork.advanced

    def advanced(self, done, state):
        real(self, done, state)
        if done == done_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(execute.ChunkWork, "advanced", advanced)
    return real


@pytest.mark.slow
def test_a_checkpoint_resumes_only_the_remaining_steps_with_identical_numbers(tmp_path, monkeypatch):
    cfg = tiny(**{"train.steps": 60, "train.adv_start": 30})
    grid = {"tau": [0.0, 0.3]}
    whole = purify.sweep(cfg, grid=grid, seeds=2, step_chunk=10)
    real = _interrupt_at(monkeypatch, 40)
    with pytest.raises(purify.SweepInterrupted, match="40 of 60 steps are saved") as err:
        purify.sweep(cfg, grid=grid, seeds=2, step_chunk=10, out_dir=tmp_path, checkpoint_seconds=3600)
    assert (err.value.position, err.value.saved) == (40, 40)
    monkeypatch.setattr(execute.ChunkWork, "advanced", real)
    trained, compiled = [], purify.train.compiled

    def counting(*a):
        progs = compiled(*a)
        advance = lambda s, task, t0, t1: trained.extend(range(int(t0), int(t1))) or progs.advance(s, task, t0, t1)
        return progs._replace(advance=advance)

    monkeypatch.setattr(purify.train, "compiled", counting)
    again = purify.sweep(cfg, grid=grid, seeds=2, step_chunk=10, out_dir=tmp_path)
    assert trained == list(range(40, 60))  # steps 40..59 only
    for name in whole.arrays:
        np.testing.assert_array_equal(again[name], whole[name], err_msg=name)


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "foreign"])
def test_a_damaged_checkpoint_is_named_set_aside_and_the_chunk_recomputed(tmp_path, monkeypatch, damage):
    cfg = tiny(**{"train.steps": 40, "train.adv_start": 20})
    whole = purify.sweep(cfg, seeds=2, step_chunk=10)
    real = _interrupt_at(monkeypatch, 20)
    with pytest.raises(purify.SweepInterrupted):
        purify.sweep(cfg, seeds=2, step_chunk=10, out_dir=tmp_path)
    ckpt = _checkpoint(tmp_path)
    blob = ckpt.read_bytes()
    if damage == "foreign":  # another config's checkpoint (same shapes) under this chunk's name
        with pytest.raises(purify.SweepInterrupted):
            purify.sweep(cfg.set(**{"hp.lr": 0.05}), seeds=2, step_chunk=10, out_dir=tmp_path / "other")
        blob = _checkpoint(tmp_path / "other").read_bytes()
    monkeypatch.setattr(execute.ChunkWork, "advanced", real)
    payload = {
        "truncated": blob[: len(blob) // 2],
        "empty": b"",
        "flipped": flip(blob, len(blob) // 2),  # in the arrays: caught by the CRC
        "foreign": blob,
    }[damage]
    ckpt.write_bytes(payload)
    with pytest.warns(RuntimeWarning, match=f"damaged checkpoint file {ckpt}"):
        again = purify.sweep(cfg, seeds=2, step_chunk=10, out_dir=tmp_path)
    assert ckpt.with_name(ckpt.name + ".damaged").exists()
    for name in whole.arrays:
        np.testing.assert_array_equal(again[name], whole[name], err_msg=name)


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_and_a_live_one_waited_for(tmp_path, monkeypatch, caplog):
    import socket

    cfg = tiny()
    table = sweep_mod.grid_table(cfg, None)[0]
    folder = tmp_path / sweep_mod.fingerprint(
        cfg, table, np.arange(2), 2, purify.make_task(cfg.data), purify.train.run_group(cfg, 2, 1)
    )
    folder.mkdir()
    chunk, lock = folder / "runs_0000000-0000002.npz", folder / "runs_0000000-0000002.lock"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": 0}))
    first = purify.sweep(cfg, seeds=2, out_dir=tmp_path)  # the lock's process is gone: taken over
    assert not lock.exists() and chunk.exists()

    # a live holder (this process, standing in for another) finishes the chunk while the sweep waits
    chunk.rename(tmp_path / "finished.npz")
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "since": 0}))

    def holder_finishes():
        (tmp_path / "finished.npz").rename(chunk)
        lock.unlink()

    threading.Timer(1.5, holder_finishes).start()
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: pytest.fail("computed a chunk another process holds"))
    with caplog.at_level("INFO", logger="purify"):
        again = purify.sweep(cfg, seeds=2, out_dir=tmp_path)
    assert f"being computed by process {os.getppid()}" in caplog.text and "waiting" in caplog.text
    np.testing.assert_array_equal(again["W_final"], first["W_final"])
