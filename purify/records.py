"""Experiment records on disk: where one is written, writing its JSON and figure together,
redrawing a figure, comparing two records number by number, and printing verdicts.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from .claims import SET_AFTER_RESULTS
from .config import plain
from .experiment import Experiment
from .files import NO_SPACE, _jsonable, atomic_write_bytes, atomic_write_files
from .plotting import mark_flagged


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _exploratory_part(previous: dict | None, preset: str, seeds: int, overrides: dict | None) -> dict | None:
    """The exploratory verdicts a confirmatory record keeps beside its own: those of the record
    it replaces when that one ran the same preset, seed count and overrides (or the exploratory
    part such a record already kept)."""
    if not previous:
        return None
    if previous.get("phase") == "confirmatory":
        return previous.get("exploratory")
    same = (
        previous.get("preset") == preset
        and len(previous.get("seeds", ())) == seeds
        and (previous.get("overrides") or {}) == json.loads(json.dumps(overrides or {}, default=_plain_json))
    )
    if not same:
        return None
    return {
        "seeds": previous.get("seeds"),
        "verdicts": previous.get("verdicts", []),
        "statistics": previous.get("statistics"),
        "provenance": previous.get("provenance"),
    }


RECORD_BYTES = 32 << 20  # room for a record's JSON and figure, checked before anything trains


def write_record(exp: Experiment, record: dict, json_path: Path, png_path: Path) -> None:
    """Write the JSON and its figure, both or neither: both are rendered in memory and written
    to temporary files first, and only then renamed into place. A full disk leaves no half."""
    png = figure_bytes(exp, record)
    blob = (json.dumps(record, indent=2, default=_jsonable) + "\n").encode()
    try:
        atomic_write_files({json_path: blob, png_path: png})
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise OSError(
            exc.errno,
            f"no space left in {json_path.parent} for {json_path.name} and {png_path.name} ({exc.strerror}): neither was "
            "written; with a runs folder (not --no-resume) the finished runs are kept there, so the same command, once "
            "there is space (or with another --out), writes the record without training again",
        ) from None


class Record(dict):
    """An experiment's JSON record; `written` holds the paths of its JSON and figure."""

    written: tuple[Path, Path] = ()


RECORDS = Path("figures")  # where the committed records live, relative to the working folder


def output_folder(
    exp_id: str,
    preset: str,
    seeds: int,
    overrides: dict | None,
    *,
    redirect_to: str | Path = Path("runs") / "figures",
    overwrite: bool = False,
    phase: str = "exploratory",
) -> tuple[Path, str | None]:
    """Where a run writes when no output folder is named, and a note when that is not `figures/`.

    The record `figures/<id>.json` is replaced only by a run of the same preset, seeds, overrides
    and phase (it reproduces it; an exploratory record is also replaced by its confirmation) or
    with `overwrite`; any other run goes to `redirect_to`, so a quick 2-seed try never replaces
    a committed 8-seed figure, nor an exploratory run a confirmatory record.
    """

    path = RECORDS / f"{exp_id}.json"
    if overwrite or not path.exists():
        return RECORDS, None
    try:
        old = json.loads(path.read_text())
        committed = (old["preset"], len(old["seeds"]), old.get("overrides") or {})
        old_phase = old.get("phase", "exploratory")
    except (OSError, ValueError, KeyError, TypeError):
        committed, old_phase = None, None
    mine = (preset, seeds, json.loads(json.dumps(overrides or {}, default=_plain_json)))
    if committed == mine and (old_phase == phase or phase == "confirmatory"):
        return RECORDS, None
    where = Path(redirect_to)
    was = (
        f"{old_phase}, preset {committed[0]}, {committed[1]} seeds, overrides {committed[2] or 'none'}"
        if committed
        else "unreadable"
    )
    hint = " (--confirm reproduces a confirmatory record in place)" if old_phase == "confirmatory" else ""
    return where, (
        f"{path} is the record of another run ({was}); this run ({phase}, preset {preset}, {seeds} seeds, "
        f"overrides {overrides or 'none'}) writes to {where}/ instead{hint}; pass --overwrite to replace the record, "
        "or --out DIR"
    )


def _plain_json(o):

    return plain(o)


def figure_bytes(exp: Experiment, record: dict) -> bytes:
    """The record's figure as PNG bytes, with its flagged runs named under it."""

    import matplotlib.pyplot as plt

    fig = exp.plot(record)
    mark_flagged(fig, record)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(exp: Experiment, record: dict, path: Path) -> None:
    """Draw into memory, then write atomically."""
    atomic_write_bytes(path, figure_bytes(exp, record))


VOLATILE = ("provenance", "wall_seconds", "saved_models")  # what legitimately differs between two runs of one config


def compare_records(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """Every number (or other value) that differs between two result records, as (path, old,
    new); provenance and wall time are left out, NaN equals NaN."""
    out: list[tuple[str, object, object]] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                if not path and k in VOLATILE:
                    continue
                if k not in a or k not in b:
                    out.append((f"{path}/{k}", a.get(k, "<absent>"), b.get(k, "<absent>")))
                else:
                    walk(a[k], b[k], f"{path}/{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            out.append((path, a, b))

    walk(old, new, "")
    return out


def describe_verdict(v: dict) -> str:
    """One verdict in a line: the decision after Holm (and before, when it differs), the
    statistic and its interval, the smallest effect of interest, and flags."""
    lo, hi = v["ci95"]
    raw = v.get("verdict_raw", v["verdict"])
    head = v["verdict"] if raw == v["verdict"] else f"{v['verdict']} (raw: {raw})"
    if v.get("exact"):
        stat = f"{v.get('violations', 0)} violations in {v['n']} cases (exact)"
    else:
        stat = f"{v['mean']:+.4f} (95% CI {lo:+.4f} .. {hi:+.4f}, n={v['n']}, min effect {v.get('min_effect', 0):g})"
    text = f"[{head}] {v['claim']}: {stat}"
    if v.get("n_failed_runs"):
        text += f"; {v['n_failed_runs']} of {v['n'] + v['n_failed_runs']} runs dropped (failed, diverged or at chance)"
    if v.get("invalid_reason"):
        text += f"; invalid: {v['invalid_reason']}"
    if v.get("post_hoc"):
        o = v.get("original")
        reason = v.get("post_hoc_reason", "")
        text += (
            "  POST HOC (rule set after these seeds' results)"
            if reason == SET_AFTER_RESULTS
            else f"  POST HOC ({reason})"
        )
        if o:
            text += f"; original rule: {o['verdict']} at {o['mean']:+.4f}"
    return text


def print_verdicts(record: dict) -> None:
    phase = record.get("phase", "exploratory")
    seeds = record.get("seeds", [])
    span = f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"
    print(f"  {phase} verdicts ({span}):")
    for v in record.get("verdicts", []):
        print("  " + describe_verdict(v))
    exp = record.get("exploratory")
    if exp:
        print(f"  exploratory verdicts kept beside them (seeds {exp['seeds'][0]}..{exp['seeds'][-1]}):")
        for v in exp.get("verdicts", []):
            print("    " + describe_verdict(v))
