"""What produced a result: package versions, device, host, time, git commit and whether the
working tree differed from it (`git_state`: dirty flag and the hash of the difference)."""

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
EXPERIMENTS_FOLDER = "experiments"
# The records a run writes are outputs, not code: a rerun of every experiment writes them one by
# one, and the tree must not turn dirty under it.
OUTPUTS = ("figures",)


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)


def git_state(where: Path | None = None) -> dict:
    """{'commit', 'dirty', 'diff_sha256'} of the git working tree holding `where` (default:
    this package): dirty when a tracked file differs from HEAD or an untracked, not ignored
    file exists outside OUTPUTS; diff_sha256 hashes `git diff HEAD` and the untracked files'
    names and bytes, so two dirty runs can be told apart. All None outside a git tree."""
    cwd = Path(where or PACKAGE_ROOT)
    none = {"commit": None, "dirty": None, "diff_sha256": None}
    try:
        top = _git("rev-parse", "--show-toplevel", cwd=cwd)
        if top.returncode != 0:
            return none
        root = Path(top.stdout.decode().strip())
        commit = _git("rev-parse", "HEAD", cwd=root).stdout.decode().strip() or None
        spec = ["--", ".", *(f":(exclude){o}" for o in OUTPUTS)]
        status = _git("status", "--porcelain", *spec, cwd=root).stdout.decode()
        if not status.strip():
            return {"commit": commit, "dirty": False, "diff_sha256": None}
        h = hashlib.sha256(_git("diff", "HEAD", "--binary", *spec, cwd=root).stdout)
        untracked = _git("ls-files", "--others", "--exclude-standard", "-z", *spec, cwd=root).stdout
        for name in sorted(n for n in untracked.split(b"\0") if n):
            h.update(name + b"\0")
            try:
                h.update((root / name.decode()).read_bytes())
            except OSError:
                pass
        return {"commit": commit, "dirty": True, "diff_sha256": h.hexdigest()}
    except (OSError, subprocess.SubprocessError):
        return none


def source_digest(root: Path | None = None) -> str:
    """A 16-hex-digit hash of every Python source file of the library (names and bytes), the
    experiments package left out: what decides a saved run's numbers beside its config (an
    experiment decides them only through the config it hands over). `root` None: this installed
    package, hashed once per process."""
    return _digest(PACKAGE_ROOT) if root is None else _digest.__wrapped__(Path(root))


@functools.cache
def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == EXPERIMENTS_FOLDER:
            continue
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
        "git": git_state(),
        "source_digest": source_digest(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
