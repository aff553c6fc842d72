"""Plotting helpers shared by the experiments: seed bands over training time or radius."""

from __future__ import annotations

import numpy as np

from .config import Config
from .trace import LABELS


def flagged_mask(record: dict, row: int, n_seeds: int, keys=("failed_runs", "chance_runs")) -> np.ndarray:
    """(n_seeds,) runs of hparam row `row` listed as [row, seed] in a record's flagged-run lists."""
    out = np.zeros(n_seeds, bool)
    for key in keys:
        for item in record.get(key, []):
            if len(item) == 2 and int(item[0]) == row:
                out[int(item[1])] = True
    return out


def flagged_note(record: dict, limit: int = 6) -> str:
    """One line naming a record's flagged runs (its 'failed_runs' and 'chance_runs' lists), or
    saying there are none: every figure carries it, so a reader sees what no verdict used."""
    parts = []
    for key, what in (("failed_runs", "failed or diverged"), ("chance_runs", "at chance (clean accuracy <= 0.6)")):
        items = record.get(key) or []
        if items:
            shown = ", ".join(str(list(i) if isinstance(i, (list, tuple)) else i) for i in items[:limit])
            more = f", … {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{len(items)} {what}: {shown}{more}")
    if not parts:
        return "flagged runs: none (no run failed, diverged or ended at chance)"
    return "flagged runs, left out of every verdict: " + "; ".join(parts)


def seeds_note(record: dict) -> str:
    """Which seeds the figure shows and what they are: exploratory (the development seeds, on
    which the rules were set) or confirmatory (drawn once the claims were frozen)."""
    seeds = record.get("seeds") or []
    span = f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"
    if record.get("phase") == "confirmatory":
        return f"{span}: confirmatory (drawn after the claims were frozen; the exploratory verdicts are in the JSON)"
    return f"{span}: exploratory (the development seeds; their verdicts are post hoc)"


def mark_flagged(fig, record: dict) -> str:
    """Write `flagged_note` and `seeds_note` under the figure; returns the text."""
    text = flagged_note(record)
    any_flagged = bool(record.get("failed_runs") or record.get("chance_runs"))
    fig.text(0.5, -0.01, text, ha="center", va="top", fontsize=8, color="tab:red" if any_flagged else "0.25")
    fig.text(0.5, -0.035, seeds_note(record), ha="center", va="top", fontsize=8, color="0.25")
    return text


def band(ax, x, runs, label=None, color=None, kind="minmax", flagged=None, **kw):
    """Draw the mean of `runs` (seeds, len(x)) and a band: 'minmax' over seeds or 'std'.

    Runs containing NaN (failed) are left out of the line and the band, and counted in the label.
    `flagged` (seeds,) marks runs that failed, diverged or ended at chance: they are left out of
    the line and band too, drawn as thin dashed lines of their own, and counted in the label.
    """
    runs = np.asarray(runs, dtype=float)
    ok = np.all(np.isfinite(runs), axis=-1)
    n_bad = int((~ok).sum())
    marked = np.zeros(len(runs), bool) if flagged is None else np.asarray(flagged, bool) & ok
    if n_bad:
        label = f"{label} ({n_bad} failed run(s) omitted)"
    if marked.any():
        label = f"{label} ({int(marked.sum())} flagged run(s), dashed)"
        for r in runs[marked]:
            ax.plot(x, r, color=color or "0.4", lw=0.8, ls="--", alpha=0.8)
    ok &= ~marked
    good = runs[ok]
    if len(good) == 0:  # still named in the legend, so a reader sees the curve is missing and why
        ax.plot([], [], color=color or "0.4", ls="--", label=f"{label}: no usable run")
        return None
    mean = good.mean(0)
    (line,) = ax.plot(x, mean, label=label, color=color, **kw)
    if kind == "std":
        lo, hi = mean - good.std(0), mean + good.std(0)
    else:
        lo, hi = good.min(0), good.max(0)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def light_points(res, metric: str) -> np.ndarray:
    """(time,) True at the log points where `metric` comes from the light evaluation of some
    run (`EvalConfig.full_at`); all False for a metric no attack measures."""
    n = len(res.steps)
    if metric not in ("robust_acc", "attack_acc") or "full_eval" not in res.arrays:
        return np.zeros(n, bool)
    full = np.asarray(res["full_eval"], float).reshape(-1, n)
    return np.any(full == 0, axis=0)


def _pgd(res, prefix: str) -> str:
    """'PGD s steps x r start(s)' of the (light_) evaluation, each value as every row has it."""
    base = Config.from_dict(res.config).eval

    def values(name):
        column = res.hp.get(f"eval.{prefix}{name}")
        vals = np.unique(np.asarray(column)) if column is not None else [getattr(base, prefix + name)]
        return "/".join(f"{int(v)}" for v in vals)

    return f"PGD {values('pgd_steps')} steps × {values('restarts')} start(s)"


def plot_metric(res, metric: str, ax=None, label_by: str | None = None, radius: float | None = None, **kw):
    """Mean over seeds with a min-max band over training steps, one line per hyper-parameter row."""
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    r, at = res, ""
    if "radius" in res.dims[metric] and "radius" in res.coords:
        r = res.sel(radius=radius) if radius is not None else res.isel(radius=0)
        at = f" at evaluation radius {float(radius if radius is not None else res.coords['radius'][0]):g}"
    dims = r.dims[metric]
    arr = r[metric]
    extra = [d for d in dims if d not in ("hparam", "seed", "time")]
    if extra:
        raise ValueError(f"{metric} has axes {extra}; select them first, e.g. res.sel({extra[0]}=...)")
    if "hparam" not in dims:
        arr = arr[None]
    if "seed" not in dims:
        arr = arr[:, None]
    names = [label_by] if label_by else (res.meta.get("swept") or [])
    light = light_points(r, metric)
    for h in range(arr.shape[0]):
        vals = {n: np.atleast_1d(r.hp[n])[h] for n in names}
        label = ", ".join(f"{n}={v:g}" for n, v in vals.items()) or None
        line = band(ax, r.steps, arr[h], label=label, **kw)
        if line is not None and light.any():
            x, y = line.get_data()
            ax.plot(x[light], y[light], "o", ms=4, mfc="white", mec=line.get_color(), zorder=3)
    ax.set_xscale("symlog", linthresh=max(1, int(r.steps[1]) if len(r.steps) > 1 else 1))
    ax.set_xlabel("SGD step (symlog scale)")
    ax.set_ylabel(LABELS.get(metric, metric))
    n_seeds = arr.shape[1]
    band_of = "min-max" if kw.get("kind", "minmax") == "minmax" else "± 1 std"
    light_note = f"\nopen circles: light evaluation, {_pgd(res, 'light_')} (reads high)\nthe rest: {_pgd(res, '')}"
    light_note = light_note if light.any() else ""
    ax.set_title(
        f"{LABELS.get(metric, metric)}{at} over training\nmean of {n_seeds} seed(s), band: {band_of} over seeds"
        + light_note,
        fontsize=9,
    )
    if any(n for n in names):
        ax.legend(fontsize=8)
    if own:
        ax.figure.tight_layout()
    return ax
