"""The experiment protocol: what an experiment declares and the context it runs in.

An `Experiment` is a claim, presets ('cpu': minutes on 2 cores; 'gpu': paper scale; 'test':
seconds, the test suite's sizes), declared options (`Option`: type, default, allowed range; set
with `--set exp.NAME=VALUE`), a `run` that returns the numbers and the statistics its declared
claims are decided on, and a `plot` that redraws the figure from those numbers alone. The
registry (`purify.registry`) finds experiments; `purify.runner.run_experiment` validates every
setting and option before anything trains and writes the record (`purify.records`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .claims import Claim
from .config import Config, ConfigError
from .downstream import fit_and_evaluate, fit_grid
from .sweeps import sweep

# Every experiment reads one label vector (w*[0]); the one that trains several sets the count
# itself. Each protocol fixes its training objective: supervised, or contrastive where declared.
ALWAYS_CONTROLLED = {
    "data.n_tasks": "the experiment reads one task; several tasks are inh-supervised's exp.n_tasks",
    "train.objective": "the protocol trains on the labels; contrastive pre-training is inh-contrastive and inh-nodes",
    "eval.full_at": "figures and verdicts read robust accuracy over training, so every log point gets the full "
    "evaluation ('every')",
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
    batching: str | int = "vmap"

    def sweep(self, cfg: Config, **kwargs):

        return sweep(
            cfg,
            out_dir=self.runs_dir,
            progress=self.progress,
            chunk_size=self.chunk_size,
            run_slice=self.run_slice,
            checkpoint_seconds=self.checkpoint_seconds,
            batching=self.batching,
            **kwargs,
        )

    def downstream_grid(self, cfg: Config, dc, M, axes: dict, **kwargs):
        """`purify.downstream.fit_grid` (named axes, `Results`), resumable in this context's runs folder."""
        return fit_grid(cfg, dc, M, axes, out_dir=self.runs_dir, run_slice=self.run_slice, **kwargs)

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
    # The block of fresh seeds `--confirm` draws (`purify.claims.confirmatory_seeds`): raised by
    # one whenever a claim is declared or changed after this round's seeds were seen.
    confirmation_round: int = 0

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
