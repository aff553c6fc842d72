"""Results of a sweep: NumPy arrays with named axes, selection, reduction, save and load.

Axes: 'hparam' (rows of the hyper-parameter grid), 'seed', 'time' (log steps), 'neuron',
'radius' (evaluation taus), 'attack', 'task' (only when there are several), 'snapshot',
'input'. `res.hp` holds the hyper-parameter values of each 'hparam' row.

    res.sel(tau=0.2)           # one grid row (axis dropped) or several (axis kept)
    res.sel(seed=3)            # one run's trajectory
    res.mean("seed")           # NaN propagates: a failed run is never averaged away
    res["purity_nw"], res.dims["purity_nw"]
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .claims import TRAINED_DRIFT, TRAINED_LOSS_SHARE
from .config import Config, plain, setting
from .files import _jsonable, atomic_write_bytes
from .plotting import plot_metric
from .trace import at_chance


class Results:
    """Arrays with named axes plus the config, seeds and provenance that produced them."""

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        dims: dict[str, tuple[str, ...]],
        coords: dict[str, np.ndarray],
        hp: dict[str, np.ndarray],
        meta: dict,
    ):
        self.arrays = arrays
        self.dims = dims
        self.coords = coords  # dim -> labels along it (hparam rows are 0..H-1)
        self.hp = hp  # name -> (H,) values, or scalars once 'hparam' is dropped
        self.meta = meta  # config, swept names, provenance, ...

    # -- access -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise KeyError(f"no metric {name!r}; available: {sorted(self.arrays)}")
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def steps(self) -> np.ndarray:
        return self.coords["time"]

    def __repr__(self) -> str:
        shape = {d: len(v) for d, v in self.coords.items()}

        swept = {n: list(plain(np.unique(np.asarray(self.hp[n])))) for n in self.meta.get("swept", [])}
        return f"Results(axes={shape}, swept={swept}, metrics={sorted(self.arrays)})"

    def failed(self) -> np.ndarray:
        """Boolean mask over the remaining (hparam, seed) axes: runs that went non-finite or diverged
        (held-out loss above 100 ln 2 or a weight row norm above 1e6); see `failed_step` for the first
        log step it was seen."""
        return self["failed_step"] >= 0

    def at_chance(self) -> np.ndarray:
        """Boolean mask over (hparam, seed): supervised runs whose final held-out clean accuracy is at
        most `purify.trace.CHANCE_ACCURACY` (0.6), i.e. that learned nothing."""

        if "clean_acc" not in self.arrays:
            return np.zeros(self["failed_step"].shape, bool)
        dims = self.dims["clean_acc"]
        final = np.take(self["clean_acc"], -1, axis=dims.index("time"))
        rest = tuple(i for i, d in enumerate(d for d in dims if d != "time") if d not in ("hparam", "seed"))
        return at_chance(final.mean(axis=rest) if rest else final)

    def flagged(self) -> np.ndarray:
        """Runs that never enter a verdict: failed (non-finite or diverged) or at chance."""
        return self.failed() | self.at_chance()

    def _tail_motion(self, metric: str, tail: float):
        """(moved, whole) per (hparam, seed): how far `metric` (averaged over its other axes)
        moved over the last `tail` of training (max minus min) and over all of it; None where
        the log has no such stretch."""
        steps = np.asarray(self.steps, float)
        before = np.flatnonzero(steps <= steps[0] + (1 - tail) * (steps[-1] - steps[0]))
        if len(steps) < 2 or not len(before) or before[-1] == len(steps) - 1:
            return None
        dims = list(self.dims[metric])
        a = np.moveaxis(np.asarray(self[metric], float), dims.index("time"), -1)
        dims.remove("time")
        rest = tuple(i for i, d in enumerate(dims) if d not in ("hparam", "seed"))
        window = a[..., before[-1] :]
        moved, whole = window.max(-1) - window.min(-1), np.abs(a[..., -1] - a[..., 0])
        return (moved.mean(axis=rest), whole.mean(axis=rest)) if rest else (moved, whole)

    def settled(self, metric: str, drift: float, tail: float = 0.2) -> np.ndarray:
        """Boolean mask over (hparam, seed): runs whose traced `metric` (e.g. 'robust_acc',
        averaged over its other axes) moved by at most `drift` (max minus min) over the last
        `tail` of training, the stretch `trained` reads."""
        if metric not in self.arrays:
            raise ValueError(f"metric={metric!r} is not allowed: not traced; traced: {sorted(self.arrays)}")
        motion = self._tail_motion(metric, tail)
        if motion is None:
            return np.zeros(self["failed_step"].shape, bool)
        return np.isfinite(motion[0]) & (motion[0] <= drift)

    def trained(self, drift: float | None = None, tail: float = 0.2) -> np.ndarray:
        """Boolean mask over (hparam, seed): runs whose training had settled over the last `tail`
        of training (from the last log step at or before step (1 - tail) x steps to the end).

        A supervised run: its held-out clean accuracy moved (max minus min, averaged over tasks)
        by at most `drift` (default `purify.claims.TRAINED_DRIFT`). A contrastive run, which has
        no labels: its held-out objective moved by at most `purify.claims.TRAINED_LOSS_SHARE` of
        its whole change from the first log step to the last. Log steps are spaced
        geometrically, so the stretch starts at the log step just before the last fifth; a run
        logged only at its end, or with neither trace, is not shown to have settled."""

        drift = TRAINED_DRIFT if drift is None else drift
        if "clean_acc" in self.arrays and np.isfinite(np.asarray(self["clean_acc"], float)).any():
            return self.settled("clean_acc", drift, tail)
        motion = self._tail_motion("loss", tail) if "loss" in self.arrays else None
        if motion is None:
            return np.zeros(self["failed_step"].shape, bool)
        moved, whole = motion
        return moved <= TRAINED_LOSS_SHARE * whole

    # -- selection and reduction --------------------------------------------------------------
    def _take(self, dim: str, index, drop: bool) -> Results:
        arrays, dims = {}, {}
        for name, arr in self.arrays.items():
            axes = self.dims[name]
            if dim in axes:
                ax = axes.index(dim)
                arr = np.take(arr, index, axis=ax)
                axes = axes[:ax] + axes[ax + 1 :] if drop else axes
            arrays[name], dims[name] = arr, axes
        coords = dict(self.coords)
        if drop:
            coords.pop(dim)
        else:
            coords[dim] = np.asarray(coords[dim])[index]
        hp = {n: np.asarray(v)[index] for n, v in self.hp.items()} if dim == "hparam" else self.hp
        return Results(arrays, dims, coords, hp, self.meta)

    def isel(self, **indices: int) -> Results:
        """Select by position along named axes; an integer drops the axis, a list keeps it."""
        out = self
        for dim, index in indices.items():
            out._need(dim)
            out = out._take(dim, index, drop=np.ndim(index) == 0)
        return out

    def sel(self, **labels: Any) -> Results:
        """Select by label: seed=, time= (a step), radius=, attack=, task=, or a hyper-parameter
        value (tau=0.2). An exact single match drops the axis."""
        out = self
        labels = {self._column(k): v for k, v in labels.items()}
        hp_query = {k: v for k, v in labels.items() if k in self.hp}
        for dim, value in labels.items():
            if dim in hp_query:
                continue
            out._need(dim)
            where = (
                np.flatnonzero(np.asarray(out.coords[dim]) == value)
                if not isinstance(value, float)
                else np.flatnonzero(np.isclose(np.asarray(out.coords[dim], dtype=float), value))
            )
            if len(where) != 1:
                raise KeyError(f"{dim}={value!r} not found; available: {list(np.asarray(out.coords[dim]).tolist())}")
            out = out._take(dim, int(where[0]), drop=True)
        if hp_query:
            out._need("hparam")
            mask = np.ones(len(out.coords["hparam"]), bool)
            for name, value in hp_query.items():
                column = np.asarray(out.hp[name])
                if column.dtype.kind in "fiub" and not isinstance(value, str):
                    mask &= np.isclose(column.astype(float), float(value))
                else:
                    mask &= column == value
            rows = np.flatnonzero(mask)
            if len(rows) == 0:
                avail = {n: np.unique(np.asarray(out.hp[n])).tolist() for n in hp_query}
                raise KeyError(f"no hyper-parameter row matches {hp_query}; available values: {avail}")
            out = (
                out._take("hparam", int(rows[0]), drop=True)
                if len(rows) == 1
                else out._take("hparam", rows, drop=False)
            )
        return out

    def _column(self, key: str) -> str:
        """A selection key as named in `hp`: 'width' finds a swept 'model.width' (keyword
        arguments cannot hold a dot); axes and hyper-parameters are their own names."""
        if key in self.hp or key in self.coords:
            return key
        matches = [n for n in self.hp if n.rsplit(".", 1)[-1] == key]
        return matches[0] if len(matches) == 1 else key

    def row_config(self, row: int):
        """The full `Config` of hparam row `row`: the saved config with that row's swept
        settings and hyper-parameters (a grid may sweep any setting, see `purify.sweep`)."""

        self._need("hparam")
        # plain: a float32 0.1 is the 0.1 that was asked for, not 0.10000000149011612
        values = {setting(n): plain(np.asarray(v)[row]) for n, v in self.hp.items()}
        return Config.from_dict(self.config).set(**values)

    def to_xarray(self):
        """An `xarray.Dataset` (needs `pip install -e ".[xarray]"`): one variable per array with
        its named dims, every axis's coordinate, and each hparam row's settings (every column of
        `hp`, swept or not) as coordinates along 'hparam', so `ds.sel(hparam=ds.tau == 0.2)`,
        `ds.groupby("tau")`, faceted plots and `ds.to_netcdf(...)` work. The config, swept names
        and provenance travel in `ds.attrs` as JSON; `Results.from_xarray` inverts it."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError('Results.to_xarray needs xarray: pip install -e ".[xarray]"') from None
        # Empty axes (no snapshots, no low-rank update) and their arrays stay out of the Dataset:
        # netCDF3 reads a zero-length dimension as unlimited. The attrs keep them for from_xarray.
        coords = {d: (d, np.asarray(v)) for d, v in self.coords.items() if len(v)}
        if "hparam" in self.coords:
            coords.update({_xr_name(n): ("hparam", np.asarray(v)) for n, v in self.hp.items()})
        data = {name: (self.dims[name], arr) for name, arr in self.arrays.items() if arr.size}
        empty = {
            name: [list(self.dims[name]), list(arr.shape), arr.dtype.str]
            for name, arr in self.arrays.items()
            if not arr.size
        }
        attrs = {
            "purify_meta": json.dumps(self.meta, default=_jsonable),
            "purify_hp": json.dumps(list(self.hp)),
            "purify_axes": json.dumps(list(self.coords)),
            "purify_empty": json.dumps(
                {"arrays": empty, "axes": {d: np.asarray(v).dtype.str for d, v in self.coords.items() if not len(v)}}
            ),
        }
        if "hparam" not in self.coords:
            attrs["purify_hp_values"] = json.dumps({n: np.asarray(v).tolist() for n, v in self.hp.items()})
        return xr.Dataset(data, coords=coords, attrs=attrs)

    @classmethod
    def from_xarray(cls, ds) -> Results:
        """The Results a `to_xarray` Dataset was made from (after netCDF/zarr I/O too)."""
        names = json.loads(ds.attrs["purify_hp"])
        if "purify_hp_values" in ds.attrs:
            hp = {n: np.asarray(v) for n, v in json.loads(ds.attrs["purify_hp_values"]).items()}
        else:
            hp = {n: np.asarray(ds.coords[_xr_name(n)].values) for n in names}
        arrays = {n: np.asarray(v.values) for n, v in ds.data_vars.items()}
        dims = {n: tuple(v.dims) for n, v in ds.data_vars.items()}
        coords = {d: np.asarray(ds.coords[d].values) for d in ds.dims}
        empty = json.loads(ds.attrs["purify_empty"])
        for name, (axes, shape, dtype) in empty["arrays"].items():
            arrays[name], dims[name] = np.zeros(shape, np.dtype(dtype)), tuple(axes)
        coords.update({d: np.zeros(0, np.dtype(dtype)) for d, dtype in empty["axes"].items()})
        coords = {d: coords[d] for d in json.loads(ds.attrs["purify_axes"])}
        return cls(arrays, dims, coords, hp, json.loads(ds.attrs["purify_meta"]))

    def _need(self, dim: str) -> None:
        if dim not in self.coords:
            raise KeyError(f"no axis {dim!r}; axes are {list(self.coords)}")

    def reduce(self, dim: str, fn=np.mean) -> Results:
        """Apply fn(array, axis=...) along `dim` in every metric that has it, dropping the axis.

        Reducing over runs ('seed' or 'hparam'): a failed run (non-finite or diverged) turns the
        result NaN, so it is never averaged away; the per-run arrays keep its values.
        """
        self._need(dim)
        fail, fail_dims = None, ()
        if dim in ("seed", "hparam") and "failed_step" in self.arrays:
            fail, fail_dims = self.arrays["failed_step"] >= 0, self.dims["failed_step"]
        arrays, dims = {}, {}
        for name, arr in self.arrays.items():
            axes = self.dims[name]
            if dim in axes:
                if fail is not None and fail.any() and axes[: len(fail_dims)] == fail_dims and arr.dtype.kind == "f":
                    arr = np.where(fail.reshape(fail.shape + (1,) * (arr.ndim - fail.ndim)), np.nan, arr)
                arr, axes = fn(arr, axis=axes.index(dim)), tuple(d for d in axes if d != dim)
            arrays[name], dims[name] = arr, axes
        coords = {d: v for d, v in self.coords.items() if d != dim}
        return Results(arrays, dims, coords, self.hp, self.meta)

    def mean(self, dim: str = "seed") -> Results:
        return self.reduce(dim, np.mean)

    def std(self, dim: str = "seed") -> Results:
        return self.reduce(dim, np.std)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One .npz holding the arrays and, as JSON, axes, coordinates, config and provenance."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        header = {
            "dims": self.dims,
            "coords": {d: np.asarray(v).tolist() for d, v in self.coords.items()},
            "hp": {n: np.asarray(v).tolist() for n, v in self.hp.items()},
            "meta": self.meta,
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            __header__=np.frombuffer(json.dumps(header, default=_jsonable).encode(), dtype=np.uint8),
            **{f"a/{k}": v for k, v in self.arrays.items()},
        )
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Results:
        """The Results saved at `path`; a file that is missing, damaged or not written by
        `Results.save` raises an error naming the path and which of these it is."""

        try:
            with np.load(path, allow_pickle=False) as z:
                if "__header__" not in z.files:
                    raise ValueError(f"{path} is not a purify results file (no header; write one with Results.save)")
                header = json.loads(z["__header__"].tobytes().decode())
                arrays = {k[2:]: z[k] for k in z.files if k.startswith("a/")}
        except FileNotFoundError:
            raise FileNotFoundError(f"no results file at {path}") from None
        except (OSError, EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{path} is damaged or not a purify results file ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            if str(path) in str(exc):
                raise
            raise ValueError(f"{path} is damaged or not a purify results file (ValueError: {exc})") from None
        except (AttributeError, TypeError) as exc:  # e.g. a .npy: one array, not an archive
            raise ValueError(f"{path} is not a purify results file: {type(exc).__name__}: {exc}") from None
        try:
            dims = {k: tuple(v) for k, v in header["dims"].items()}
            coords = {d: np.asarray(v) for d, v in header["coords"].items()}
            hp = {n: np.asarray(v) for n, v in header["hp"].items()}
            meta = header["meta"]
            missing = sorted(set(arrays) ^ set(dims))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path} is damaged or not a purify results file: its header lacks {exc} (it needs dims, coords, hp, "
                "meta)"
            ) from None
        if missing:
            raise ValueError(f"{path} is damaged: arrays and header disagree on {missing}")
        return cls(arrays, dims, coords, hp, meta)

    # -- plotting -----------------------------------------------------------------------------
    def plot(self, metric: str, ax=None, label_by: str | None = None, **kw):
        """Mean over seeds with a band (see purify.plotting.band), one line per grid row."""

        return plot_metric(self, metric, ax=ax, label_by=label_by, **kw)


def _xr_name(column: str) -> str:
    """An hp column as an xarray coordinate name: 'model.width' -> 'model_width' (a dot would
    not survive attribute access); hyper-parameters keep their names."""
    return column.replace(".", "_")


def warn_failed(res: Results) -> None:
    bad = np.argwhere(res.failed())
    if len(bad):
        warnings.warn(
            f"{len(bad)} run(s) went NaN/inf or diverged and are marked failed (indices hparam, seed): {bad.tolist()}",
            RuntimeWarning,
            stacklevel=3,
        )
    low = np.argwhere(res.at_chance() & ~res.failed())
    if len(low):
        warnings.warn(
            f"{len(low)} run(s) ended at chance (final clean accuracy <= 0.6) and are flagged; they enter no verdict "
            f"(indices hparam, seed): {low.tolist()}",
            RuntimeWarning,
            stacklevel=3,
        )
