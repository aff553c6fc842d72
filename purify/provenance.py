"""What produced a result: package versions, device, host, time and git commit."""

from __future__ import annotations

import datetime
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


def provenance() -> dict:
    devs = jax.devices()
    return {
        "versions": versions(),
        "device": {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs)},
        "host": {"machine": platform.machine(), "system": platform.system(), "node": platform.node()},
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
