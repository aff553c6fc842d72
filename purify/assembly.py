"""One `Results` from the groups of a sweep: rows in grid order along 'hparam', every array on
the union of the groups' coordinates (NaN, or -1 for integers, where a row has no entry).
"""

from __future__ import annotations

import json

import numpy as np

from . import attacks, network, trace
from .grid import Grid
from .provenance import provenance
from .results import Results


def assemble(grid: Grid, parts: list, seeds: np.ndarray) -> Results:
    """One Results from every group's runs (`parts[i]` of `grid.groups[i]`): rows in
    grid order along 'hparam'. Where groups
    differ in an axis (width, d, log steps, ...), its coordinate is the union and a row's
    entries outside its own are NaN (-1 for integer arrays)."""
    S, cfg, rows = len(seeds), grid.cfg, grid.rows
    order = [list(g.rows) for g in grid.groups]
    runs = [p[1] for p in parts]
    coords = {
        "hparam": np.arange(len(rows)),
        "seed": seeds,
        "time": _union([r.log_steps for r in runs]),
        "neuron": np.arange(max(r.cfg.model.width for r in runs)),
        "radius": _union([np.asarray(r.cfg.eval.taus, np.float32) for r in runs]),
        "attack": np.asarray(attacks.ATTACK_NAMES),
        "task": np.arange(max(r.cfg.data.n_tasks for r in runs)),
        "snapshot": _union([r.snapshot_at for r in runs]),
        "input": np.arange(max(r.cfg.data.d for r in runs)),
        "rank": np.arange(max(r.cfg.train.adv_rank for r in runs)),
        "feature": np.arange(max(r.cfg.data.n_features for r in runs)),
    }
    labelled = ("time", "radius", "snapshot")  # placed by label; the others by position
    arrays, dims = {}, {}
    for name in parts[0][0]:
        axes = _axes(name)
        pieces = []
        for (flat, run, _), idx in zip(parts, order):
            own = {
                "time": run.log_steps,
                "radius": np.asarray(run.cfg.eval.taus, np.float32),
                "snapshot": run.snapshot_at,
            }
            arr = flat[name].reshape((len(idx), S) + flat[name].shape[1:])
            pieces.append(_widen(arr, axes, coords, own, labelled))
        full = np.empty((len(rows), S) + pieces[0].shape[2:], pieces[0].dtype)
        for piece, idx in zip(pieces, order):
            full[idx] = piece
        arrays[name], dims[name] = full, ("hparam", "seed") + axes
    arrays["constant_predictor"] = trace.constant_predictor(arrays["positive_rate"])
    dims["constant_predictor"] = dims["positive_rate"]
    tasks = [p[2] for p in parts]
    same_task = all(
        t.M.shape == tasks[0].M.shape
        and np.array_equal(t.M, tasks[0].M)
        and t.w_star.shape == tasks[0].w_star.shape
        and np.array_equal(t.w_star, tasks[0].w_star)
        for t in tasks
    )
    for key, attr, axes in (("task_M", "M", ("input", "feature")), ("task_w_star", "w_star", ("task", "feature"))):
        if same_task:
            arrays[key], dims[key] = np.asarray(getattr(tasks[0], attr)), axes
        else:  # the data model is swept: each row has its own dictionary and labels
            rows_of = [np.asarray(getattr(t, attr))[None, None] for t in tasks]
            per_part = [_widen(a, axes, coords, {}, ())[0, 0] for a in rows_of]
            full = np.empty((len(rows),) + per_part[0].shape, np.float32)
            for piece, idx in zip(per_part, order):
                full[idx] = piece
            arrays[key], dims[key] = full, ("hparam",) + axes
    hp = grid.hp_table()
    meta = {
        "config": json.loads(json.dumps(cfg.to_dict())),
        "swept": list(grid.columns),
        "provenance": provenance(),
        "seed_rule": "run key = jax.random.key(seed), same on every grid row",
    }
    res = Results(arrays, dims, coords, hp, meta)
    if coords["task"].size == 1:
        res = res.isel(task=0)
    return res


def _union(values: list) -> np.ndarray:
    return np.unique(np.concatenate([np.asarray(v).ravel() for v in values])) if values else np.asarray([])


def _widen(arr: np.ndarray, axes: tuple, coords: dict, own: dict, labelled: tuple) -> np.ndarray:
    """arr (H, S, *axes) placed into the full coordinates of each axis: labelled axes (time,
    radius, snapshot) by label, the others by position; the rest NaN (floats) or -1."""
    shape = arr.shape[:2] + tuple(len(coords[a]) for a in axes)
    if shape == arr.shape and all(a not in labelled or np.array_equal(own[a], coords[a]) for a in axes):
        return arr
    fill = np.nan if arr.dtype.kind == "f" else -1
    out = np.full(shape, fill, arr.dtype)
    where = [slice(None), slice(None)]
    for a, n in zip(axes, arr.shape[2:]):
        where.append(np.searchsorted(coords[a], own[a]) if a in labelled else np.arange(n))
    out[np.ix_(*[np.arange(s) if isinstance(w, slice) else w for w, s in zip(where, arr.shape)])] = arr
    return out


def _axes(name: str) -> tuple[str, ...]:
    """The axes of one of a sweep's flat arrays after its run axis."""
    if (traced := trace.dims(name)) is not None:
        return traced
    if name == "failed_step":
        return ()
    if name == "snapshots":
        return ("snapshot", "neuron", "input")
    if name.endswith("_final") and name[: -len("_final")] in network.PARAM_AXES:
        return network.PARAM_AXES[name[: -len("_final")]]
    raise KeyError(f"a sweep produced an array {name!r} with no declared axes")
