"""A sweep's grid, resolved once: its columns, its rows, and the groups of rows that share a program.

A grid maps settings to lists of values, e.g. ``{"tau": [0, 0.1], "model.width": [64, 128]}``;
its rows are their Cartesian product (first key slowest). Each column is named once
(`Config.column`: hyper-parameters bare, other settings dotted), and how it varies is read
from its field (`Config.sweep_kind`): hyper-parameters and per-run settings are values inside one
compiled program, static settings split the rows into groups, one program each. `sweep`,
its assembly and `Results.row_config` all read this one resolution.

    g = resolve(cfg, {"tau": [0.0, 0.2], "model.width": [64, 128]})
    [grp.label for grp in g.groups]      # ['model.width=64', 'model.width=128']
    g.groups[0].hp["tau"]                # array([0. , 0.2], dtype=float32)
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import HPARAM_NAMES, PER_RUN, STATIC, Config, ConfigError, HParams, plain, setting

GridSpec = Mapping[str, Iterable[Any]]  # setting -> its values


@dataclass(frozen=True)
class Group:
    """The rows of a grid that share one compiled program.

    cfg: the static config of the program (the base config with this group's static settings).
    rows: the rows' indices in the grid. hp: every hyper-parameter, (len(rows),) float32.
    per_run: each swept per-run setting (dotted), (len(rows),) int32; empty when none is swept.
    static: the static settings that set this group apart, as (column, value) pairs.
    """

    cfg: Config
    rows: tuple[int, ...]
    hp: dict[str, np.ndarray]
    per_run: dict[str, np.ndarray]
    static: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{n}={v}" for n, v in self.static)

    @property
    def noise_free(self) -> bool:
        """Every run of the group has noise 0, so its program draws none."""
        return bool(np.all(self.hp["noise"] == 0))

    @property
    def adv_start(self) -> np.ndarray | None:
        """Each row's first adversarial step when the grid sweeps it, else None (one constant)."""
        return self.per_run.get("train.adv_start")

    def log_steps(self) -> tuple[int, ...] | None:
        """The steps a program serving every row records at: the union of each row's own log
        steps when a per-run setting moves them, else None (the config's own)."""
        if self.adv_start is None:
            return None
        union = set()
        for a in np.unique(self.adv_start):
            union |= set(self.cfg.set(**{"train.adv_start": int(a)}).train.log_steps.tolist())
        return tuple(sorted(union))

    def table(self) -> dict[str, np.ndarray]:
        """What decides the group's numbers beside its config: hyper-parameters and per-run values."""
        return {**self.hp, **self.per_run}


@dataclass(frozen=True)
class Grid:
    """A resolved grid: the base config, the swept columns, every row and the groups."""

    cfg: Config
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    groups: tuple[Group, ...]

    def hp_table(self) -> dict[str, np.ndarray]:
        """Every row's hyper-parameters, and each swept setting's values: `Results.hp`."""
        out = hp_table(self.cfg, self.rows)
        for n in self.columns:
            if n not in HPARAM_NAMES:
                out[n] = np.asarray([row[n] for row in self.rows])
        return out

    def row_config(self, i: int) -> Config:
        return row_config(self.cfg, self.rows[i])


def _values(key: str, values) -> list:
    if not isinstance(values, (str, bytes)) and isinstance(values, Iterable):
        values = plain(list(values))  # NumPy / JAX arrays and scalars become Python values
    if not isinstance(values, tuple) or len(values) == 0:
        raise ConfigError(f"grid[{key!r}]={values!r} is not allowed: must be a non-empty list of values")
    return list(values)


def resolve(cfg: Config, grid: GridSpec | None) -> Grid:
    """The grid's columns, rows and groups; every row's full config is validated here, before
    anything compiles. A ConfigError names a key that is no setting, or one given twice."""
    columns, values = [], []
    for key, vals in dict(grid or {}).items():
        try:
            name = cfg.column(key, vals)
        except ConfigError as exc:
            raise ConfigError(
                f"grid key {key!r} is not allowed: {exc}; a grid sweeps hyper-parameters "
                f"{list(HPARAM_NAMES)} or any setting of `purify list --settings`"
            ) from None
        if name in columns:
            raise ConfigError(f"grid key {key!r} is not allowed: {name!r} is already in the grid")
        columns.append(name)
        values.append(_values(key, vals))
    rows = tuple(dict(zip(columns, combo)) for combo in itertools.product(*values)) if columns else ({},)
    for row in rows:
        row_config(cfg, row)  # validates
    kinds = {n: cfg.sweep_kind(setting(n)) for n in columns}
    members: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        members.setdefault(tuple((n, v) for n, v in row.items() if kinds[n] == STATIC), []).append(i)
    groups = []
    for static, idx in members.items():
        cfg_g = cfg.set(**dict(static)) if static else cfg
        sub = [rows[i] for i in idx]
        per_run = {
            n: np.asarray([row.get(n, cfg_g.get(n)) for row in sub], np.int32) for n in columns if kinds[n] == PER_RUN
        }
        groups.append(Group(cfg_g, tuple(idx), hp_table(cfg_g, sub), per_run, static))
    return Grid(cfg, tuple(columns), rows, tuple(groups))


def row_config(cfg: Config, row: Mapping) -> Config:
    """The full config of one grid row: cfg with the row's settings and hyper-parameters."""
    hp = {n: v for n, v in row.items() if n in HPARAM_NAMES}
    HParams(**{**{n: getattr(cfg.hp, n) for n in HPARAM_NAMES}, **hp}).validate(prefix="grid")
    try:
        return cfg.set(**{setting(n): v for n, v in row.items()}).validate()
    except ConfigError as exc:
        raise ConfigError(f"grid row {dict(row)}: {exc}") from None


def hp_table(cfg: Config, rows: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """{hyper-parameter: (len(rows),) float32}: each row's value, or the config's where unswept."""
    return {n: np.asarray([row.get(n, getattr(cfg.hp, n)) for row in rows], np.float32) for n in HPARAM_NAMES}


def grid_table(cfg: Config, grid: GridSpec | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """The hyper-parameter table of a grid of hyper-parameters only, and its column names."""
    g = resolve(cfg, grid)
    bad = [n for n in g.columns if n not in HPARAM_NAMES]
    if bad:
        raise ConfigError(f"grid key {bad[0]!r} is not allowed here: hyper-parameters are {list(HPARAM_NAMES)}")
    return hp_table(cfg, g.rows), list(g.columns)


def seed_list(seeds: int | Sequence[int]) -> np.ndarray:
    """A seed count (0..n-1) or a list of distinct seeds >= 0, as an integer array."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"seeds={seeds!r} is not allowed: must be >= 1 or a list of seeds")
        return np.arange(int(seeds))
    arr = np.asarray(list(seeds))
    if arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 0).any() or len(np.unique(arr)) != len(arr):
        raise ConfigError(f"seeds={seeds!r} is not allowed: must be a count or a list of distinct integers >= 0")
    return arr
