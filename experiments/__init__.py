"""The experiments the toolkit ships: one module per experiment, each runnable on its own.

Every experiment has presets ('cpu': minutes on 2 cores; 'gpu': paper scale), writes
`<out>/<id>.json` (numbers, verdicts, full config, seeds, provenance) and `<out>/<id>.png`,
and can redraw its figure from the JSON alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from purify.config import Config, ConfigError
from purify.provenance import provenance
from purify.results import atomic_write_bytes, atomic_write_json


@dataclass
class Context:
    """Where an experiment keeps its runs, how it reports progress, how it splits the work."""

    runs_dir: Path | None = Path("runs")
    progress: bool = True
    options: dict = field(default_factory=dict)
    chunk_size: int | None = None
    run_slice: tuple[int, int] | None = None

    def sweep(self, cfg: Config, **kwargs):
        from purify import sweep

        return sweep(cfg, out_dir=self.runs_dir, progress=self.progress, chunk_size=self.chunk_size, run_slice=self.run_slice, **kwargs)


@dataclass(frozen=True)
class Experiment:
    id: str
    claim: str
    title: str
    summary: str
    presets: dict[str, dict]  # name -> {"config": {dotted: value}, "seeds": int, "options": {...}}
    run: Callable[[Config, int, Context], dict]
    plot: Callable[[dict], object]  # record -> matplotlib Figure, from the JSON alone

    def config(self, preset: str, overrides: dict | None = None) -> tuple[Config, int, dict]:
        if preset not in self.presets:
            raise ConfigError(f"preset={preset!r} is not allowed for {self.id}: must be one of {sorted(self.presets)}")
        p = self.presets[preset]
        options = dict(p.get("options", {}))
        settings = dict(p["config"])
        for key, value in (overrides or {}).items():
            if key.startswith("exp."):
                name = key[4:]
                if name not in options:
                    raise ConfigError(f"{key}={value!r} is not allowed: {self.id} options are {sorted('exp.' + o for o in options)}")
                options[name] = value
            else:
                settings[key] = value
        cfg = Config().set(**settings).validate()
        return cfg, int(p["seeds"]), options


def _registry() -> dict[str, Experiment]:
    from . import (
        fp_dynamics,
        fp_linf,
        fp_lowcomplexity,
        fp_lowrank,
        fp_phase,
        fp_principle,
        fp_robustness,
        inh_contrastive,
        inh_nodes,
        inh_supervised,
        nrt_transfer,
        rep_bound,
        roli_init,
    )

    exps = (fp_dynamics, fp_robustness, fp_principle, fp_lowcomplexity, fp_phase, fp_lowrank, fp_linf,
            inh_supervised, inh_contrastive, inh_nodes, nrt_transfer, roli_init, rep_bound)
    return {m.EXPERIMENT.id: m.EXPERIMENT for m in exps}


def get(exp_id: str) -> Experiment:
    reg = _registry()
    if exp_id not in reg:
        raise ConfigError(f"experiment={exp_id!r} is not allowed: must be one of {sorted(reg)}")
    return reg[exp_id]


def all_experiments() -> dict[str, Experiment]:
    return _registry()


def run_experiment(exp_id: str, preset: str = "cpu", seeds: int | None = None, out: str | Path = "figures",
                   runs_dir: str | Path | None = "runs", overrides: dict | None = None, progress: bool = True,
                   chunk_size: int | None = None, run_slice: tuple[int, int] | None = None) -> dict:
    """Run one experiment and write <out>/<id>.json and <out>/<id>.png. Returns the JSON dict.

    Under jax.distributed every process runs this; the sweeps split the runs among them and
    gather the results, and only process 0 writes files.
    """
    import jax

    exp = get(exp_id)
    cfg, default_seeds, options = exp.config(preset, overrides)
    seeds = default_seeds if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ConfigError(f"seeds={seeds!r} is not allowed: must be an integer >= 2 (bands and intervals need several seeds)")
    ctx = Context(runs_dir=Path(runs_dir) if runs_dir else None, progress=progress and jax.process_index() == 0, options=options,
                  chunk_size=chunk_size, run_slice=run_slice)
    t0 = time.time()
    body = exp.run(cfg, seeds, ctx)
    record = {
        "experiment": exp.id, "claim": exp.claim, "title": exp.title, "preset": preset,
        "seeds": list(range(seeds)), "options": options, "overrides": overrides or {},
        "config": cfg.to_dict(), "provenance": provenance(), "wall_seconds": round(time.time() - t0, 2),
        **body,
    }
    if jax.process_index() == 0:
        out = Path(out)
        atomic_write_json(out / f"{exp.id}.json", record)
        save_figure(exp, record, out / f"{exp.id}.png")
    return record


def save_figure(exp: Experiment, record: dict, path: Path) -> None:
    """Draw into memory, then write atomically."""
    import io

    import matplotlib.pyplot as plt

    fig = exp.plot(record)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def print_verdicts(record: dict) -> None:
    for v in record.get("verdicts", []):
        lo, hi = v["ci95"]
        print(f"  [{v['verdict']:>12}] {v['claim']}: {v['mean']:+.4f}  (95% CI {lo:+.4f} .. {hi:+.4f}, n={v['n']})")


def main_for(exp_id: str) -> None:
    """`python -m experiments.<module>` runs the experiment with the CLI's options."""
    import sys

    from purify.cli import main

    sys.exit(main(["run", exp_id, *sys.argv[1:]]))

