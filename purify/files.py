"""Files that are never half-written: atomic writes (alone or several together), and the checks
made before a run trains (a folder this user can write, a disk with room for what it will write).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    atomic_write_files({path: payload})


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # the errors of a full disk or an exhausted quota


def atomic_write_files(payloads: dict) -> None:
    """Write several files so that a failure leaves none of them changed: every payload goes to
    a temporary file beside its path first (where a full disk shows), then all are renamed."""
    staged = []
    try:
        for path, payload in payloads.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; results are meant to be shared
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def writable_folder(path: str | os.PathLike, name: str) -> Path:
    """`path` if this process can write files there (a folder, or one it can create), else a
    ConfigError naming `name`, the path and why, so that no work is done that could not be
    saved. Nothing is created: the nearest existing folder on the way is probed."""

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={str(path)!r} is not allowed: it is a file; must be a folder (created if missing)")
    probe_in = path
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(f"{probe_in} is a file")
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".purify-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{name}={str(path)!r} is not allowed: it cannot be written ({getattr(exc, 'strerror', None) or exc} in "
            f"{probe_in}); must be a folder this user can write"
        ) from None
    return path


def check_free_space(folder: str | Path, need: int, name: str) -> None:
    """A ConfigError naming the folder, the bytes a run will write there and the bytes free,
    when the folder's disk cannot hold them (with 10% to spare): refused before it trains."""

    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < 1.1 * need:
        raise ConfigError(
            f"{name}={str(folder)!r} is not allowed for this run: it will write about {need / 2**20:.1f} MiB there, "
            f"and its disk has {free / 2**20:.1f} MiB free; free some space or pick a folder on another disk"
        )


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")
