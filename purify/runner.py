"""Run one experiment: validate, train, decide its claims, write its record and figure."""

from __future__ import annotations

import numbers
import sys
import time
from pathlib import Path

import jax

from .claims import confirmatory_seeds, decide
from .config import ConfigError
from .experiment import Context
from .files import check_free_space, writable_folder
from .provenance import provenance
from .records import RECORD_BYTES, Record, _exploratory_part, _read_json, output_folder, write_record
from .registry import get
from .store import recording_folders
from .sweeps import check_chunk_memory
from .train import run_group


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
    batching: str | int = "vmap",
) -> dict:
    """Run one experiment and write <out>/<id>.json and <out>/<id>.png. Returns the JSON dict.

    confirm: run on the confirmatory seeds of the experiment's `confirmation_round`
    (`purify.claims.confirmatory_seeds`), which no development run touched, with the claims as declared now; the record's verdicts are then
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

    exp = get(exp_id)
    cfg, default_seeds, options = exp.config(preset, overrides)
    seeds = default_seeds if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 2:
        raise ConfigError(
            f"seeds={seeds!r} is not allowed: must be an integer >= 2 (bands and intervals need several seeds)"
        )
    seeds = int(seeds)
    seed_ids = confirmatory_seeds(seeds, exp.confirmation_round) if confirm else list(range(seeds))
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
    run_group(cfg, 1, 1, batching)  # its own error before anything trains
    ctx = Context(
        runs_dir=Path(runs_dir) if runs_dir else None,
        progress=progress and jax.process_index() == 0,
        options=options,
        chunk_size=chunk_size,
        run_slice=run_slice,
        checkpoint_seconds=checkpoint_seconds,
        batching=batching,
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
        "provenance": {**provenance(), "batching": batching},
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
