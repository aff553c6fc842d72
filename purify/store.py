"""Finished chunks of runs on disk: atomic files under a fingerprint, checkpoints, locks, damaged files set aside.

A batch of runs is named by the fingerprint of everything that decides its numbers; its
finished chunks live in `root/<fingerprint>/runs_<lo>-<hi>.npz`, each written atomically
(a reader never sees half a file) and tagged with the fingerprint. While a chunk is being
computed, `runs_<lo>-<hi>.ckpt.npz` holds its latest checkpoint (the training state and the
step it reached, same tag) and `runs_<lo>-<hi>.lock` names the process computing it, so that
a second process on the same folder waits for that chunk instead of computing it again.

Every file also carries the digest of the package's source that computed it. A chunk or
checkpoint file that cannot be read, carries another tag, was computed by other code, or lacks
a quantity the reader expects is never used: it is renamed to `*.damaged` with a warning that
names it and why, and its work is done again. `damaged_files` lists them and
`purify damaged --remove` deletes them.

A lock records its holder's host, pid, the process's start time and a random token, so a lock
whose pid now belongs to another process (pid reuse) is recognised as stale; while held, a
thread refreshes it every `HEARTBEAT_SECONDS`, and a lock not refreshed for `STALE_SECONDS` is
stale whatever its host (its holder is gone or hung), which bounds any wait for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import jax
import numpy as np

from .config import ConfigError
from .files import atomic_write_bytes
from .provenance import source_digest


def fingerprint(spec: Any) -> str:
    """A 16-hex-digit hash of a JSON-able spec (NumPy values allowed)."""
    blob = json.dumps(spec, sort_keys=True, default=_plain)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def array_digest(*arrays) -> str:
    """A hash of the bytes, shapes and dtypes of arrays (to name inputs too large for JSON)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _plain(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"cannot fingerprint {type(o).__name__}")


_USED: contextvars.ContextVar[set | None] = contextvars.ContextVar("purify_store_used", default=None)


@contextlib.contextmanager
def recording_folders():
    """Collect the chunk folders every ChunkStore opened inside the block: where the saved runs
    (with their parameters) of an experiment's models are. Yields the set, filled as it goes."""
    used: set[Path] = set()
    token = _USED.set(used)
    try:
        yield used
    finally:
        _USED.reset(token)


class ChunkStore:
    """The finished chunks of one batch of runs (root None: nothing is kept)."""

    def __init__(self, root: str | Path | None, tag: str):
        self.root = Path(root) if root is not None else None
        self.tag = tag
        used = _USED.get()
        if used is not None and self.root is not None:
            used.add(self.root / tag)

    @property
    def folder(self) -> Path | None:
        return None if self.root is None else self.root / self.tag

    def _file(self, lo: int, hi: int, suffix: str) -> Path | None:
        return None if self.root is None else self.folder / f"runs_{lo:07d}-{hi:07d}{suffix}"

    def path(self, lo: int, hi: int) -> Path | None:
        return self._file(lo, hi, ".npz")

    def load(self, lo: int, hi: int, expect: set[str] | frozenset[str] = frozenset()) -> dict | None:
        """The chunk's arrays, or None if it is not there (or was damaged and set aside). A chunk
        without one of the `expect`ed arrays (what an older version wrote) is damaged."""
        return self._read(self.path(lo, hi), "chunk", expect)

    def save(self, lo: int, hi: int, arrays: dict) -> None:
        """Write the finished chunk atomically; its checkpoint is then obsolete and removed."""
        path = self.path(lo, hi)
        if path is None:
            return
        self._write(path, arrays)
        ckpt = self.checkpoint_path(lo, hi)
        ckpt.unlink(missing_ok=True)

    # -- checkpoints of the chunk in flight ---------------------------------------------------
    def checkpoint_path(self, lo: int, hi: int) -> Path | None:
        return self._file(lo, hi, ".ckpt.npz")

    def load_checkpoint(self, lo: int, hi: int) -> dict | None:
        """The checkpoint's arrays (a training state flattened, plus its step), or None."""
        return self._read(self.checkpoint_path(lo, hi), "checkpoint")

    def save_checkpoint(self, lo: int, hi: int, arrays: dict) -> None:
        path = self.checkpoint_path(lo, hi)
        if path is not None:
            self._write(path, arrays)

    # -- locks: one process computes a chunk ----------------------------------------------------
    def lock_path(self, lo: int, hi: int) -> Path | None:
        return self._file(lo, hi, ".lock")

    def lock(self, lo: int, hi: int) -> ChunkLock | None:
        """Claim the chunk for this process: a held ChunkLock, or None while another live process
        holds it. Without a root there is nothing to share and the lock is always granted."""
        if self.root is None:
            return ChunkLock(None)
        path = self.lock_path(lo, hi)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _stale(path):
                    return None
                # break the stale lock by renaming it: of several processes that find it stale,
                # exactly one rename succeeds, and only then is a fresh lock created
                try:
                    path.replace(path.with_name(f"{path.name}.stale-{os.getpid()}"))
                    path.with_name(f"{path.name}.stale-{os.getpid()}").unlink()
                except FileNotFoundError:
                    pass
                continue
            me = _me()
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return ChunkLock(path, me["token"])
        return None

    # -- files --------------------------------------------------------------------------------
    def _read(self, path: Path | None, what: str, expect=frozenset()) -> dict | None:
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["__tag__"]) != self.tag:
                    raise ValueError(f"it belongs to another batch of runs (tag {z['__tag__']})")
                code = str(z["__code__"]) if "__code__" in z.files else "unrecorded"
                if code != source_digest():
                    raise StaleCode(
                        f"it was computed by other code (source digest {code}; this code is {source_digest()})"
                    )
                missing = sorted(set(expect) - set(z.files))
                if missing:
                    raise KeyError(f"it lacks {missing}")
                return {k: z[k] for k in z.files if k not in META_KEYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as exc:
            self.set_aside(path, exc, what)
            return None

    def _write(self, path: Path, arrays: dict) -> None:
        buf = io.BytesIO()
        np.savez(buf, __tag__=np.asarray(self.tag), __code__=np.asarray(source_digest()), **arrays)
        atomic_write_bytes(path, buf.getvalue())

    def set_aside(self, path: Path, exc: BaseException, what: str) -> None:
        """Rename a file that must not be used to `*.damaged`, with a warning naming it."""
        aside = path.with_name(path.name + ".damaged")
        try:
            path.replace(aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place (could not move it)"
        redo = "its runs are computed again" if what == "chunk" else "the chunk restarts from its last finished state"
        kind = "outdated" if isinstance(exc, StaleCode) else "damaged"
        warnings.warn(
            f"{kind} {what} file {path} ({type(exc).__name__}: {exc}); {where}; {redo}",
            RuntimeWarning,
            stacklevel=4,
        )


class StaleCode(ValueError):
    """A saved file was computed by another version of the package's source."""


META_KEYS = ("__tag__", "__code__")
STALE_SECONDS = 600.0  # a lock not refreshed for this long belongs to a process that is gone or hung
HEARTBEAT_SECONDS = 30.0  # how often a held lock is refreshed, whatever its holder is doing


def process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None where unknown.
    Two processes that share a pid at different times have different start times."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in (...) may hold spaces
    except (IndexError, ValueError):
        return None


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
        "token": secrets.token_hex(8),
        "since": time.time(),
    }


def _stale(path: Path) -> bool:
    """A lock is stale when it has not been refreshed for STALE_SECONDS (its holder is gone or
    hung), or on this host when its pid is not alive or now names a process that started at
    another time than the holder (pid reuse). Unreadable: stale once it has stayed so for a
    heartbeat (a lock is created empty and written a moment later, so a fresh empty one is live)."""
    try:
        age = time.time() - path.stat().st_mtime
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return False  # released meanwhile: try again
    except (OSError, ValueError):
        unread_for = lock_age(path)
        return unread_for is not None and unread_for > HEARTBEAT_SECONDS
    if age > STALE_SECONDS:
        return True
    if owner.get("host") == socket.gethostname():
        try:
            pid = int(owner["pid"])
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        started = owner.get("started")
        return started is not None and process_start(pid) not in (None, started)
    return False


def lock_age(path: Path) -> float | None:
    """Seconds since a lock was last refreshed, or None if it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


class ChunkLock:
    """A held lock on one chunk (path None: nothing to lock). A daemon thread refreshes it every
    HEARTBEAT_SECONDS while it is held, so other processes see its holder alive even through a
    long compile; `release()` (or leaving the `with`) stops that and removes the lock."""

    def __init__(self, path: Path | None, token: str | None = None):
        self.path, self.token = path, token
        self._stop = threading.Event()
        if path is not None:
            threading.Thread(target=self._beat, daemon=True, name=f"purify-lock-{path.name}").start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.refresh()

    def refresh(self) -> None:
        if self.path is not None:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self.path is None:
            return
        try:
            o = json.loads(self.path.read_text())
            if o.get("token", self.token) == self.token and o.get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.path = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: Path) -> str:
    """Who holds a lock file, in words."""
    try:
        o = json.loads(path.read_text())
        return f"process {o['pid']} on {o['host']}"
    except (OSError, ValueError, KeyError):
        return "another process"


DAMAGED_SUFFIX = ".damaged"


def damaged_files(root: str | Path) -> list[Path]:
    """Every file set aside as damaged or outdated under a runs folder, oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"runs={str(root)!r} is not allowed: not a folder")
    return sorted(root.rglob(f"*{DAMAGED_SUFFIX}"), key=lambda p: p.stat().st_mtime)


def merge_runs(sources: Sequence[str | Path], into: str | Path) -> int:
    """Copy the chunk files of several run folders (e.g. one per --slice job) into one folder,
    where a sweep with the same config, grid and seeds finds them all. Returns files copied."""
    into, copied = Path(into), 0
    for src in map(Path, sources):
        if not src.is_dir():
            raise ConfigError(f"source={str(src)!r} is not allowed: not a folder")
        for f in sorted(src.glob("*/runs_*.npz")):
            if f.name.endswith(".ckpt.npz"):  # a slice's unfinished chunk: its job resumes it, not the merge
                continue
            dest = into / f.parent.name / f.name
            if dest.exists() or dest.resolve() == f.resolve():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(dest)
            copied += 1
    return copied


# -- a training state as flat arrays (checkpoints) ----------------------------------------------


def flat_state(state) -> dict:
    """A training state as flat host arrays s0, s1, ... (PRNG keys as their raw data)."""
    leaves = jax.tree_util.tree_leaves(state)
    return {f"s{i}": np.asarray(jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}


def restore_state(template, arrays: dict):
    """`template` (a state of the right structure) with the checkpoint's arrays, or None if they
    do not fit it (then the checkpoint is not this chunk's and is not used)."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    out = []
    for i, x in enumerate(leaves):
        a = arrays.get(f"s{i}")
        want = jax.random.key_data(x) if _is_key(x) else x
        if a is None or a.shape != want.shape or a.dtype != want.dtype:
            return None
        out.append(jax.random.wrap_key_data(a, impl=jax.random.key_impl(x)) if _is_key(x) else a)
    if len(arrays) - 1 != len(leaves):  # the arrays plus __done__
        return None
    return jax.tree_util.tree_unflatten(treedef, out)


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
