"""Finished chunks of runs on disk: atomic files under a fingerprint, damaged files set aside.

A batch of runs is named by the fingerprint of everything that decides its numbers; its
finished chunks live in `root/<fingerprint>/runs_<lo>-<hi>.npz`, each written atomically
(a reader never sees half a file) and tagged with the fingerprint. A chunk file that cannot be
read, or carries another tag, is never used: it is renamed to `*.damaged` with a warning that
names it, and the chunk is computed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError
from .results import atomic_write_bytes


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


class ChunkStore:
    """The finished chunks of one batch of runs (root None: nothing is kept)."""

    def __init__(self, root: str | Path | None, tag: str):
        self.root = Path(root) if root is not None else None
        self.tag = tag

    @property
    def folder(self) -> Path | None:
        return None if self.root is None else self.root / self.tag

    def path(self, lo: int, hi: int) -> Path | None:
        return None if self.root is None else self.folder / f"runs_{lo:07d}-{hi:07d}.npz"

    def load(self, lo: int, hi: int) -> dict | None:
        """The chunk's arrays, or None if it is not there (or was damaged and set aside)."""
        path = self.path(lo, hi)
        if path is None or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["__tag__"]) != self.tag:
                    raise ValueError(f"it belongs to another batch of runs (tag {z['__tag__']})")
                return {k: z[k] for k in z.files if k != "__tag__"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            self._set_aside(path, exc)
            return None

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        aside = path.with_name(path.name + ".damaged")
        try:
            path.replace(aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place (could not move it)"
        warnings.warn(
            f"damaged chunk file {path} ({type(exc).__name__}: {exc}); {where}; its runs are computed again",
            RuntimeWarning,
            stacklevel=3,
        )

    def save(self, lo: int, hi: int, arrays: dict) -> None:
        path = self.path(lo, hi)
        if path is None:
            return
        buf = io.BytesIO()
        np.savez(buf, __tag__=np.asarray(self.tag), **arrays)
        atomic_write_bytes(path, buf.getvalue())


def merge_runs(sources: Sequence[str | Path], into: str | Path) -> int:
    """Copy the chunk files of several run folders (e.g. one per --slice job) into one folder,
    where a sweep with the same config, grid and seeds finds them all. Returns files copied."""
    into, copied = Path(into), 0
    for src in map(Path, sources):
        if not src.is_dir():
            raise ConfigError(f"source={str(src)!r} is not allowed: not a folder")
        for f in sorted(src.glob("*/runs_*.npz")):
            dest = into / f.parent.name / f.name
            if dest.exists() or dest.resolve() == f.resolve():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(dest)
            copied += 1
    return copied
