"""The experiments by id.

The toolkit's own experiments are the public modules of `purify.experiments`, found by their
file names (a new file there needs no reinstall; `get` imports only the one asked for). A
researcher registers more from their own package through the entry-point group
`purify.experiments` (name = experiment id, value = `module:EXPERIMENT`):

    [project.entry-points."purify.experiments"]
    my-claim = "mypackage.my_claim:EXPERIMENT"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil

from .config import ConfigError
from .experiment import Experiment

ENTRY_POINT_GROUP = "purify.experiments"

BUILTIN_PACKAGE = "purify.experiments"


def _builtin_modules() -> dict[str, str]:
    """Built-in experiment id -> module, read from the package's files without importing them:
    every public module of `purify.experiments` is one experiment, its id the module name with
    dashes (fp_dynamics -> fp-dynamics); modules starting with `_` hold what experiments share."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    folders = list(spec.submodule_search_locations or ()) if spec else []
    names = sorted(m.name for m in pkgutil.iter_modules(folders) if not m.name.startswith("_") and not m.ispkg)
    return {name.replace("_", "-"): f"{BUILTIN_PACKAGE}.{name}" for name in names}


def _entry_points() -> dict:
    """Third-party experiments, registered in the entry-point group `purify.experiments`."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _ids(builtin: dict[str, str], plugins: dict) -> list[str]:
    return [*builtin, *(name for name in plugins if name not in builtin)]


def experiment_ids() -> list[str]:
    """Every experiment id, built-in ones first, without importing any experiment."""
    return _ids(_builtin_modules(), _entry_points())


def _load(exp_id: str, builtin: dict[str, str], plugins: dict) -> Experiment:
    if exp_id in builtin:
        if exp_id in plugins:
            ep = plugins[exp_id]
            raise RuntimeError(
                f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP} takes the id of a built-in "
                f"experiment ({builtin[exp_id]}): rename it"
            )
        where, exp = builtin[exp_id], getattr(importlib.import_module(builtin[exp_id]), "EXPERIMENT", None)
    else:
        ep = plugins[exp_id]
        where, exp = f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP}", ep.load()
    if not isinstance(exp, Experiment) or exp.id != exp_id:
        raise RuntimeError(f"{where} does not define an Experiment with id {exp_id!r} as EXPERIMENT")
    return exp


def all_experiments() -> dict[str, Experiment]:
    """Every experiment, by id: the built-in ones, then those of installed packages."""
    builtin, plugins = _builtin_modules(), _entry_points()
    return {exp_id: _load(exp_id, builtin, plugins) for exp_id in _ids(builtin, plugins)}


def get(exp_id: str) -> Experiment:
    """One experiment by id; imports only its module."""
    builtin, plugins = _builtin_modules(), _entry_points()
    if exp_id not in builtin and exp_id not in plugins:
        raise ConfigError(f"experiment={exp_id!r} is not allowed: must be one of {sorted(_ids(builtin, plugins))}")
    return _load(exp_id, builtin, plugins)
