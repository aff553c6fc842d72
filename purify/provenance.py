"""What produced a result: package versions, device, host, time and git commit."""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import jax

PACKAGES = ("purify", "jax", "jaxlib", "flax", "optax", "chex", "numpy", "matplotlib")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


PACKAGE_ROOT = Path(__file__).resolve().parent


def source_digest(root: Path | None = None) -> str:
    """A 16-hex-digit hash of every Python source file of the package (names and bytes): what
    decides a saved run's numbers beside its config. `root` None: this installed package,
    hashed once per process."""
    return _digest(PACKAGE_ROOT) if root is None else _digest.__wrapped__(Path(root))


@functools.cache
def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def provenance() -> dict:
    devs = jax.devices()
    return {
        "versions": versions(),
        "device": {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)},
        "host": {"machine": platform.machine(), "system": platform.system(), "node": platform.node()},
        "git_commit": git_commit(),
        "source_digest": source_digest(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
