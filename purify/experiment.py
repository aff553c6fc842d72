"""The experiment protocol and its registry.

An `Experiment` is a claim, presets ('cpu': minutes on 2 cores; 'gpu': paper scale), declared
options (`Option`: type, default, allowed range; set with `--set exp.NAME=VALUE`), a `run`
that returns the numbers and verdicts, and a `plot` that redraws the figure from those numbers
alone. `run_experiment` validates every setting and option before anything trains, then
writes `<out>/<id>.json` (numbers, verdicts, full config, seeds, provenance) and `<out>/<id>.png`.

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
import io
import json
import math
import numbers
import pkgutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims import SET_AFTER_RESULTS, Claim, confirmatory_seeds, decide
from .config import Config, ConfigError, plain
from .downstream import fit_and_evaluate
from .files import NO_SPACE, _jsonable, atomic_write_bytes, atomic_write_files, check_free_space, writable_folder
from .plotting import mark_flagged
from .provenance import provenance
from .store import recording_folders
from .sweeps import check_chunk_memory, sweep

ENTRY_POINT_GROUP = "purify.experiments"

# Every experiment reads one label vector (w*[0]); the one that trains several sets the count
# itself. Each protocol fixes its training objective: supervised, or contrastive where declared.
ALWAYS_CONTROLLED = {
    "data.n_tasks": "the experiment reads one task; several tasks are inh-supervised's exp.n_tasks",
    "train.objective": "the protocol trains on the labels; contrastive pre-training is inh-contrastive and inh-nodes",
}
# The smallest evaluation set an experiment's verdicts may rest on.
MIN_N_EVAL = 256
MIN_N_EVAL_REASON = (
    "at 256 held-out examples the 95% binomial half-width of an accuracy near 0.5 is 0.061, about the distance "
    "from chance to the 0.6 at-chance line; fewer cannot tell a run that learned from one that guessed"
)


@dataclass(frozen=True)
class Option:
    """One experiment option: its type (int, float, str, bool or dict), default, rule and meaning.

    many: a tuple of values (a single value is accepted and becomes a 1-tuple). optional: None
    is allowed (and means what `doc` says). lo/hi bound numbers (strict_lo: > lo); choices lists
    the allowed values. A dict option (a table, e.g. learning rates per method) is set in a
    preset only, not from the command line.
    """

    name: str
    kind: type
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    strict_lo: bool = False
    choices: tuple | None = None
    many: bool = False
    optional: bool = False

    def rule(self) -> str:
        if self.kind is dict:
            return "a table set in a preset"
        what = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}[self.kind]
        parts = [what]
        if self.lo is not None:
            parts.append(f"{'>' if self.strict_lo else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"<= {self.hi:g}")
        if self.choices:
            parts = [f"one of {', '.join(map(repr, self.choices))}"]
        text = " ".join(parts)
        if self.many:
            plural = text.replace("an integer", "integers").replace("a finite number", "finite numbers")
            text = f"a non-empty list of {plural.replace('one of', 'values among')}"
        return text + (", or none" if self.optional else "")

    def check(self, value: Any, where: str) -> Any:
        """The value normalized (a tuple for `many`), or ConfigError naming it and the rule."""
        name = f"exp.{self.name}"
        bad = lambda: ConfigError(f"{name}={value!r} is not allowed{where}: must be {self.rule()}")
        if value is None:
            if self.optional:
                return None
            raise bad()
        if self.kind is dict:
            if not isinstance(value, Mapping):
                raise bad()
            return dict(value)
        items = value if self.many and isinstance(value, (tuple, list)) else (value,)
        if self.many and len(items) == 0 or (not self.many and isinstance(value, (tuple, list))):
            raise bad()
        out = []
        for v in items:
            if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # NumPy scalars are numbers too
                v = v.item()
            if self.kind is bool:
                if not isinstance(v, bool):
                    raise bad()
            elif self.kind is int:
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise bad()
                v = int(v)
            elif self.kind is float:
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise bad()
                v = float(v)
            elif not isinstance(v, str):
                raise bad()
            if self.choices is not None and v not in self.choices:
                raise bad()
            if self.lo is not None and (v <= self.lo if self.strict_lo else v < self.lo):
                raise bad()
            if self.hi is not None and v > self.hi:
                raise bad()
            out.append(v)
        return tuple(out) if self.many else out[0]


@dataclass
class Context:
    """Where an experiment keeps its runs, how it reports progress, how it splits the work."""

    runs_dir: Path | None = Path("runs")
    progress: bool = True
    options: dict = field(default_factory=dict)
    chunk_size: int | None = None
    run_slice: tuple[int, int] | None = None
    checkpoint_seconds: float = 60.0

    def sweep(self, cfg: Config, **kwargs):

        return sweep(
            cfg,
            out_dir=self.runs_dir,
            progress=self.progress,
            chunk_size=self.chunk_size,
            run_slice=self.run_slice,
            checkpoint_seconds=self.checkpoint_seconds,
            **kwargs,
        )

    def downstream(self, cfg: Config, dc, M, **kwargs):
        """`purify.downstream.fit_and_evaluate`, resumable in this context's runs folder."""

        return fit_and_evaluate(cfg, dc, M, out_dir=self.runs_dir, run_slice=self.run_slice, **kwargs)


@dataclass(frozen=True)
class Experiment:
    id: str
    claim: str
    title: str
    summary: str
    presets: dict[str, dict]  # name -> {"config": {dotted: value}, "seeds": int, "options": {name: value}}
    run: Callable[[Config, int, Context], dict]
    plot: Callable[[dict], object]  # record -> matplotlib Figure, from the JSON alone
    options: tuple[Option, ...] = ()
    check: Callable[[Config, dict], None] | None = None  # relations between options and settings
    # Settings the experiment sets itself, so a --set of them would be overwritten: dotted name ->
    # what governs it instead (a reason), or (option, reason) when it is set only while that
    # option is not none. A --set of one is refused before anything runs (see `config`).
    controls: Mapping[str, str | tuple[str, str]] = field(default_factory=dict)
    # Settings the experiment honours but transforms where its protocol says so (e.g. a radius
    # converted to l-inf): dotted name -> how. They are written into the record.
    derives: Mapping[str, str] = field(default_factory=dict)
    # What the experiment asserts, declared as data (`purify.claims`): `run` returns a
    # "statistics" list of `claims.statistic(...)` instances and the runner decides them.
    claims: tuple[Claim, ...] = ()

    def find_claim(self, claim_id: str) -> Claim:
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise ConfigError(f"claim={claim_id!r} is not allowed: {self.id} declares {[c.id for c in self.claims]}")

    def controlled(self) -> dict[str, str | tuple[str, str]]:
        """Every setting this experiment controls, the ones every experiment controls included."""
        return {**ALWAYS_CONTROLLED, **self.controls}

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise ConfigError(
            f"exp.{name} is not allowed: {self.id} options are "
            f"{sorted('exp.' + o.name for o in self.options) or 'none'}"
        )

    def config(self, preset: str, overrides: dict | None = None) -> tuple[Config, int, dict]:
        """The validated config, seed count and options of a preset with overrides applied.
        Every setting and every option is checked here, before anything compiles."""
        if preset not in self.presets:
            raise ConfigError(f"preset={preset!r} is not allowed for {self.id}: must be one of {sorted(self.presets)}")
        p = self.presets[preset]
        values = {o.name: o.default for o in self.options}
        for name, value in p.get("options", {}).items():
            self.option(name)
            values[name] = value
        settings = dict(p["config"])
        for key, value in (overrides or {}).items():
            if not key.startswith("exp."):
                self._refuse_controlled(key, value, values, overrides or {})
            if key.startswith("exp."):
                opt = self.option(key[4:])
                if opt.kind is dict:
                    raise ConfigError(
                        f"{key}={value!r} is not allowed: {key} is {opt.rule()} (see `purify list --settings`)"
                    )
                values[opt.name] = value
            else:
                settings[key] = value
        cfg = Config().set(**settings).validate()
        options = {o.name: o.check(values[o.name], f" for {self.id}") for o in self.options}
        if self.check is not None:
            self.check(cfg, options)
        if cfg.eval.n_eval < MIN_N_EVAL:
            raise ConfigError(
                f"eval.n_eval={cfg.eval.n_eval} is not allowed for {self.id}: must be >= {MIN_N_EVAL}, so that an "
                f"accuracy entering a verdict resolves the at-chance line ({MIN_N_EVAL_REASON})"
            )
        return cfg, int(p["seeds"]), options

    def _refuse_controlled(self, key: str, value: Any, options: dict, overrides: dict) -> None:
        try:
            dotted = Config().resolve(key, value)
        except ConfigError:
            return  # an unknown setting is reported by Config.set with its own message
        rule = self.controlled().get(dotted)
        if rule is None:
            return
        if isinstance(rule, tuple):
            option, reason = rule
            current = overrides.get(f"exp.{option}", options.get(option))
            if current is None:
                return  # the option is off: the experiment honours the setting
            governs = f"exp.{option} (now {current!r}) sets it: {reason}"
        else:
            governs = rule
        raise ConfigError(
            f"{key}={value!r} is not allowed for {self.id}: the experiment sets {dotted} itself, so the value would "
            f"not be used; {governs}"
        )


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


def run_experiment(
    exp_id: str,
    preset: str = "cpu",
    seeds: int | None = None,
    out: str | Path | None = None,
    runs_dir: str | Path | None = "runs",
    overrides: dict | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    run_slice: tuple[int, int] | None = None,
    overwrite: bool = False,
    checkpoint_seconds: float = 60.0,
    redirect_to: str | Path | None = None,
    confirm: bool = False,
) -> dict:
    """Run one experiment and write <out>/<id>.json and <out>/<id>.png. Returns the JSON dict.

    confirm: run on the confirmatory seeds (`purify.claims.CONFIRMATORY_START` on), which no
    development run touched, with the claims as declared now; the record's verdicts are then
    the confirmatory ones, and the exploratory verdicts of the record it replaces (same preset,
    seed count and overrides) are kept beside them under "exploratory".

    out None: the committed records' folder `figures/`, unless its record of this experiment
    came from another preset, seed count or overrides: then, unless `overwrite`, the files go to
    `redirect_to` (default `<runs_dir>/figures/`) instead and a note says so (see `output_folder`). Before anything
    trains, every setting is validated and the output and runs folders are checked writable,
    and a hand-chosen chunk size against the memory. Under jax.distributed every process runs
    this; the sweeps split the runs among them and gather the results, and only process 0
    writes files.
    """

    import jax

    exp = get(exp_id)
    cfg, default_seeds, options = exp.config(preset, overrides)
    seeds = default_seeds if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 2:
        raise ConfigError(
            f"seeds={seeds!r} is not allowed: must be an integer >= 2 (bands and intervals need several seeds)"
        )
    seeds = int(seeds)
    seed_ids = confirmatory_seeds(seeds) if confirm else list(range(seeds))
    if out is None:
        out, note = output_folder(
            exp_id,
            preset,
            seeds,
            overrides,
            redirect_to=redirect_to or Path(runs_dir or "runs") / "figures",
            overwrite=overwrite,
            phase="confirmatory" if confirm else "exploratory",
        )
        if note and jax.process_index() == 0:
            print(f"purify: {note}", file=sys.stderr)
    # pre-flight: nothing trains that could not be saved or would not fit
    out = writable_folder(out, "out")
    check_free_space(out, RECORD_BYTES, "out")
    if runs_dir:
        runs_dir = writable_folder(runs_dir, "runs")
    if chunk_size is not None:
        check_chunk_memory(cfg, chunk_size)
    ctx = Context(
        runs_dir=Path(runs_dir) if runs_dir else None,
        progress=progress and jax.process_index() == 0,
        options=options,
        chunk_size=chunk_size,
        run_slice=run_slice,
        checkpoint_seconds=checkpoint_seconds,
    )
    previous = _read_json(Path(out) / f"{exp.id}.json")
    exploratory = _exploratory_part(previous, preset, seeds, overrides) if confirm else None
    frozen = None
    if confirm and previous and previous.get("phase") == "confirmatory" and previous.get("seeds") == seed_ids:
        frozen = {v["claim_id"]: v["claim_hash"] for v in previous.get("verdicts", []) if "claim_id" in v}

    t0 = time.time()
    with recording_folders() as folders:
        body = exp.run(cfg, seed_ids, ctx)
    if "verdicts" in body:
        raise RuntimeError(
            f"{exp.id}.run returned verdicts: an experiment returns 'statistics' (purify.claims.statistic) and the "
            "runner decides them under the declared claims"
        )
    body["verdicts"] = decide(
        exp.claims,
        body.get("statistics", []),
        n_eval=cfg.eval.n_eval,
        phase="confirmatory" if confirm else "exploratory",
        family=exp.id,
        frozen=frozen,
    )
    record = {
        "experiment": exp.id,
        "claim": exp.claim,
        "title": exp.title,
        "preset": preset,
        "phase": "confirmatory" if confirm else "exploratory",
        "seeds": seed_ids,
        "claims": {c.id: {"hash": c.digest(), **c.declaration()} for c in exp.claims},
        "options": options,
        "overrides": overrides or {},
        "config": cfg.to_dict(),
        "controls": {k: (v if isinstance(v, str) else f"exp.{v[0]}: {v[1]}") for k, v in exp.controlled().items()},
        "derives": dict(exp.derives),
        "provenance": provenance(),
        "wall_seconds": round(time.time() - t0, 2),
        **body,
    }
    # every model's saved runs: its parameters and traced numbers, in the layout of docs/runs.md
    record["saved_models"] = {
        "runs_dir": str(runs_dir) if runs_dir else None,
        "folders": sorted(str(Path(f).relative_to(runs_dir)) for f in folders) if runs_dir else [],
    }
    if confirm:
        record["exploratory"] = exploratory
    record = Record(record)
    record.written = (out / f"{exp.id}.json", out / f"{exp.id}.png")
    if jax.process_index() == 0:
        write_record(exp, record, *record.written)
    return record


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
