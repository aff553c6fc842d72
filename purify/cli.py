"""The `purify` command: list experiments, run one."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import math
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from . import provenance
from .benchmarks import CONFIGS, format_scaling, format_table, plot_scaling, run_bench, run_scaling
from .claims import confirmation_status, confirmatory_seeds, seeds_round
from .config import Config, ConfigError, parse_value
from .execute import SliceFinished, raise_on_sigterm
from .files import NO_SPACE, atomic_write_json
from .records import RECORDS, compare_records, print_verdicts, save_figure
from .registry import all_experiments, get
from .runner import run_experiment
from .stats import DECISIONS
from .store import damaged_files, merge_runs


def _enable_compilation_cache() -> None:
    """Reuse compiled programs across CLI invocations (override with PURIFY_CACHE_DIR='')."""
    path = os.environ.get("PURIFY_CACHE_DIR", str(Path.home() / ".cache" / "purify" / "jax"))
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _batching(text: str) -> str | int:
    """--batching's value: a name, or a group size (validated by `train.run_group`)."""
    return int(text) if text.lstrip("-").isdigit() else text


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not allowed: write key=value, e.g. --set data.d=128")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def cmd_list(args) -> int:

    exps = all_experiments()
    for exp in exps.values():
        print(f"{exp.id:16s} [{exp.claim}] {exp.summary}")
        for name, p in exp.presets.items():
            c = p["config"]
            size = ", ".join(
                f"{k.split('.')[-1]}={c[k]}" for k in ("data.d", "data.k", "model.width", "train.steps") if k in c
            )
            print(f"    --preset {name:4s} {p['seeds']} seeds, {size}")
    if args.settings:
        print("\nSettings for --set (section.field = default):")
        for section in dataclasses.fields(Config):
            obj = getattr(Config(), section.name)
            for f in dataclasses.fields(obj):
                print(f"    {section.name}.{f.name} = {getattr(obj, f.name)!r}")
        print("\nExperiment options for --set exp.NAME=VALUE (default: the cpu preset's value; rule):")
        for exp in exps.values():
            if not exp.options:
                continue
            print(f"  {exp.id}:")
            preset = exp.presets.get("cpu", {}).get("options", {})
            for o in exp.options:
                print(f"    exp.{o.name} = {preset.get(o.name, o.default)!r}  ({o.rule()}): {o.doc}")
    return 0


def _parse_slice(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise ConfigError(f"--slice {text!r} is not allowed: write i/n with 0 <= i < n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ConfigError(f"--slice {text!r} is not allowed: write i/n with 0 <= i < n, e.g. 0/4")
    return i, n


def init_distributed() -> None:
    """jax.distributed.initialize(): from PURIFY_COORDINATOR (host:port), PURIFY_NUM_PROCESSES and
    PURIFY_PROCESS_ID when set, otherwise from the cluster's own environment (SLURM, Open MPI, ...)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk through gloo
    coordinator = os.environ.get("PURIFY_COORDINATOR")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["PURIFY_NUM_PROCESSES"]),
            process_id=int(os.environ["PURIFY_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()


def cmd_run(args) -> int:

    overrides = _parse_sets(args.set or [])
    run_slice = _parse_slice(args.slice)
    if run_slice and args.no_resume:
        raise ConfigError("--slice is not allowed with --no-resume: a slice's chunks must be saved to be merged")
    if args.distributed:
        init_distributed()
    try:
        record = run_experiment(
            args.experiment,
            preset=args.preset,
            seeds=args.seeds,
            out=args.out,
            runs_dir=None if args.no_resume else args.runs,
            overrides=overrides,
            progress=not args.quiet,
            chunk_size=args.chunk_size,
            run_slice=run_slice,
            overwrite=args.overwrite,
            checkpoint_seconds=args.checkpoint_every,
            confirm=args.confirm,
            batching=_batching(args.batching),
        )
    except SliceFinished as done:
        print(f"purify: {done}")
        return 0
    import jax

    if jax.process_index() != 0:
        return 0
    print(f"{record['experiment']}: {record['title']} ({record['wall_seconds']} s)")
    print_verdicts(record)
    if record.get("failed_runs"):
        print(f"  warning: {len(record['failed_runs'])} run(s) saw NaN/inf (hparam, seed): {record['failed_runs']}")
    print(f"wrote {record.written[0]} and {record.written[1]}")
    return 0


def cmd_bench(args) -> int:

    sizes = [c for c in args.configs.split(",") if c]
    for c in sizes:
        if c not in CONFIGS:
            raise ConfigError(f"--configs {c!r} is not allowed: must be among {sorted(CONFIGS)}")
    if args.max_networks is not None and args.max_networks < 1:
        raise ConfigError(f"--max-networks {args.max_networks} is not allowed: must be an integer >= 1")
    if args.scaling:
        return _bench_scaling(args, sizes)
    networks = None
    if args.networks:
        networks = {c: args.networks for c in sizes}
    result = run_bench(
        sizes,
        networks=networks,
        steps=args.steps,
        torch=not args.no_torch,
        latency=not args.no_latency,
        profile=not args.no_profile,
    )
    print(format_table(result))
    import jax

    path = Path(args.out) / f"bench-{jax.devices()[0].platform}.json"
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return 0


def _bench_scaling(args, sizes) -> int:
    import jax

    platform = jax.devices()[0].platform
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for size in sizes:
        stem = Path(args.out) / f"scaling-{platform}-{size}"

        def save(result, stem=stem):
            atomic_write_json(stem.with_suffix(".json"), result)
            plot_scaling(result, stem.with_suffix(".png"))

        result = run_scaling(
            size, steps=args.steps, max_networks=args.max_networks, torch=not args.no_torch, on_point=save
        )
        print(format_scaling(result))
        print(f"wrote {stem}.json and {stem}.png")
    return 0


def _selected(only: str | None):

    if not only:
        return list(all_experiments().values())
    return [get(x) for x in only.split(",") if x]


def cmd_figures(args) -> int:
    """Redraw every figure from its saved JSON (no training); --rerun runs the experiments anew."""

    missing = []
    if args.rerun and Path(args.out or "figures").resolve() == Path("figures").resolve() and not args.allow_dirty:
        state = provenance.git_state()
        if state["dirty"]:
            raise ConfigError(
                "--rerun into figures/ is not allowed from a dirty working tree: the committed records must name the "
                f"code that made them, and HEAD ({state['commit']}) is not that code; commit first, or pass --out DIR, "
                "or --allow-dirty (the records then carry provenance.git.dirty = true and the diff's hash)"
            )
    # --rerun is from scratch: a fresh runs folder, so nothing finished earlier is reused, while
    # experiments of this rerun that need the same sweep still train it once
    scratch = tempfile.TemporaryDirectory(prefix="purify-rerun-") if args.rerun else None
    for exp in _selected(args.only):
        path = Path(args.out or "figures") / f"{exp.id}.json"
        if args.rerun:
            old = read_record(path) if path.exists() else {}
            record = run_experiment(
                exp.id,
                confirm=old.get("phase") == "confirmatory",  # a confirmatory record is reproduced as one
                preset=args.preset,
                out=args.out,
                runs_dir=scratch.name,
                progress=False,
                overwrite=args.overwrite,
                redirect_to=Path("runs") / "figures",  # not into the temporary runs folder
            )
            print(f"reran {exp.id} from scratch -> {record.written[0]}, {record.written[1]}")
        elif path.exists():
            save_figure(exp, read_record(path), path.with_suffix(".png"))
            print(f"redrew {path.with_suffix('.png')} from {path}")
        else:
            missing.append(exp.id)
    if missing:
        print(
            f"purify: error: no saved JSON for {', '.join(missing)} in {args.out or 'figures'}; run them first or use --rerun",
            file=sys.stderr,
        )
        return 1
    if args.compare:
        return _compare(args)
    return 0


def read_record(path: Path) -> dict:
    """A result record's JSON, or a ConfigError naming the file and what is wrong with it."""

    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"record {str(path)!r} is not allowed: it cannot be read as JSON ({type(exc).__name__}: {exc}); "
            "restore it (git checkout) or rerun the experiment"
        ) from None
    if not isinstance(record, dict) or "experiment" not in record:
        raise ConfigError(f"record {str(path)!r} is not allowed: it is not a purify experiment record")
    return record


def _compare(args) -> int:
    """Print every value of the JSONs in --out that differs from the same experiment's JSON in --compare."""

    moved = 0
    for exp in _selected(args.only):
        ref, new = Path(args.compare) / f"{exp.id}.json", Path(args.out or "figures") / f"{exp.id}.json"
        if not ref.exists() or not new.exists():
            print(f"{exp.id}: nothing to compare ({ref if not ref.exists() else new} is missing)")
            continue
        diffs = compare_records(read_record(ref), read_record(new))
        moved += bool(diffs)
        print(f"{exp.id}: " + (f"identical to {ref}" if not diffs else f"{len(diffs)} value(s) differ from {ref}"))
        for path, a, b in diffs[:20]:
            print(f"    {path}: {a!r} -> {b!r}")
    return 1 if moved else 0


def cmd_check(args) -> int:
    """Run every experiment's preset and print one table of verdicts. A claim that fails is a
    scientific result (exit 0); an experiment that raises is a broken toolkit (exit 1)."""

    rows, broken = [], []
    overrides = _parse_sets(args.set or [])
    selected = _selected(args.only)
    for exp in selected:  # a user's bad input is reported once, before any experiment trains
        exp.config(args.preset, overrides)
    for exp in selected:
        try:
            record = run_experiment(
                exp.id,
                preset=args.preset,
                seeds=args.seeds,
                out=args.out,
                runs_dir=args.runs,
                overrides=overrides,
                progress=False,
                overwrite=args.overwrite,
                confirm=args.confirm,
            )
        except ConfigError:
            raise  # found only once the experiment ran (e.g. the memory a chunk needs): the user's to fix
        except Exception:  # noqa: BLE001 (any failure here is the toolkit's, reported per experiment)
            broken.append(exp.id)
            print(f"purify: {exp.id} broke:\n{traceback.format_exc()}", file=sys.stderr)
            rows.append((exp.id, exp.claim, "ERROR", "ERROR", "the experiment raised; see above", "", "", "", ""))
            continue
        for v in record["verdicts"]:
            lo, hi = v["ci95"]
            flags = (
                ("post hoc; original: " + v["original"]["verdict"])
                if v.get("original")
                else ("post hoc" if v.get("post_hoc") else "exact" if v.get("exact") else "")
            )
            if v.get("invalid_reason"):
                flags = (flags + "; " if flags else "") + "invalid: " + v["invalid_reason"]
            rows.append(
                (
                    exp.id,
                    exp.claim,
                    v.get("verdict_raw", v["verdict"]),
                    v["verdict"],
                    v["claim"],
                    f"{v['mean']:+.4f}",
                    f"[{lo:+.4f}, {hi:+.4f}]",
                    f"{v.get('min_effect', 0):g}",
                    flags,
                )
            )
    width = min(100, max(len(r[4]) for r in rows))
    print(
        f"{'experiment':16s} {'claim':5s} {'raw':16s} {'after Holm':16s} {'statement':{width}s} {'mean':>9s} "
        f"{'95% CI':>20s} {'min effect':>10s}  flags"
    )
    for r in rows:
        print(
            f"{r[0]:16s} {r[1]:5s} {r[2]:16s} {r[3]:16s} {r[4][:width]:{width}s} {r[5]:>9s} {r[6]:>20s} {r[7]:>10s}  {r[8]}"
        )

    counts = {k: sum(r[3] == k for r in rows) for k in DECISIONS}
    print(
        ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" ({'confirmatory' if args.confirm else 'exploratory'}; after Holm within each family)"
        + (f"; BROKEN: {', '.join(broken)}" if broken else "")
    )
    return 1 if broken else 0


VERDICTS_BEGIN = "<!-- verdicts table: generated by `purify claims --table`; do not edit by hand -->"
VERDICTS_END = "<!-- end of the verdicts table -->"


def verdicts_table(records_dir: Path) -> str:
    """A markdown table of every verdict of the records in `records_dir`: the confirmatory
    decision (the headline) beside the exploratory one, with the confirmatory mean and interval,
    or the exploratory ones alone where no confirmation has run."""

    def why_invalid(reason: str) -> str:
        names = {
            "attack converged": "attack gate",
            "trained": "not settled",
            "robust settled": "robustness not settled",
        }
        gates = [g for g in names if f"gate '{g}' failed" in reason]
        if gates:
            return ", ".join(names[g] for g in gates)
        if "a verdict needs" in reason:
            return "< 4 usable seeds"
        return "runs dropped" if "dropped" in reason else reason[:40]

    current: dict[str, str] = {}  # claim id -> the digest of its declaration now

    def cell(v):
        if v is None:
            return "—"
        text = v["verdict"]
        if text == "invalid" and v.get("invalid_reason"):
            text += f" ({why_invalid(v['invalid_reason'])})"
        if v.get("claim_id") in current and v.get("claim_hash") != current[v["claim_id"]]:
            return text + " (declared differently since: post hoc)"
        if v.get("phase") == "confirmatory":
            text += (f" (round {v['round']})" if v["round"] else "") + (" (post hoc)" if v.get("post_hoc") else "")
        return text

    def number(v):
        if v is None or v.get("exact") or not all(map(math.isfinite, [v["mean"], *v["ci95"]])):
            return "—"
        return f"{v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"

    header = (
        "| experiment | claim | exploratory (seeds 0..S−1, post hoc) | confirmatory (fresh seeds; round 0 unless named) | "
        "confirmatory mean [95% CI] | exploratory mean [95% CI] |"
    )
    lines = [
        header,
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for exp_id in all_experiments():
        path = records_dir / f"{exp_id}.json"
        if not path.exists():
            continue
        record = read_record(path)
        if "statistics" not in record:
            lines.append(f"| {exp_id} | *record predates claims as data: not yet rerun* | | | | |")
            continue
        current.clear()
        current.update({c.id: c.digest() for c in all_experiments()[exp_id].claims})
        confirmatory = record["verdicts"] if record.get("phase") == "confirmatory" else []
        exploratory = (record.get("exploratory") or {}).get("verdicts", []) if confirmatory else record["verdicts"]
        for v in confirmatory:
            v["phase"], v["round"] = "confirmatory", seeds_round(record["seeds"])
        rows = max(len(confirmatory), len(exploratory))
        for i in range(rows):
            c = confirmatory[i] if i < len(confirmatory) else None
            e = exploratory[i] if i < len(exploratory) else None
            text = (c or e)["claim"].replace("|", "/")
            lines.append(f"| {exp_id} | {text} | {cell(e)} | {cell(c)} | {number(c)} | {number(e)} |")
    return "\n".join(lines)


def cmd_claims(args) -> int:
    """List every declared claim: id, rule, smallest effect and why, family, models, gates, hash,
    and whether the committed record confirms it under this declaration."""

    if args.table:
        table = verdicts_table(RECORDS)
        if args.readme:
            readme = Path(args.readme)
            text = readme.read_text()
            if VERDICTS_BEGIN not in text or VERDICTS_END not in text:
                raise ConfigError(f"--readme {args.readme!r} is not allowed: it has no verdicts-table markers")
            head, rest = text.split(VERDICTS_BEGIN, 1)
            _, tail = rest.split(VERDICTS_END, 1)
            readme.write_text(f"{head}{VERDICTS_BEGIN}\n{table}\n{VERDICTS_END}{tail}")
            print(f"wrote the verdicts table into {readme}")
        else:
            print(table)
        return 0
    exps = [get(args.experiment)] if args.experiment else list(_selected(None))
    for exp in exps:
        path = RECORDS / f"{exp.id}.json"
        record = read_record(path) if path.exists() else None
        status = confirmation_status(exp.claims, record, exp.confirmation_round)
        first = confirmatory_seeds(1, exp.confirmation_round)[0]
        print(
            f"{exp.id} [{exp.claim}]: {len(exp.claims)} claim(s); --confirm draws confirmation round "
            f"{exp.confirmation_round} (seeds {first}..)"
        )
        for c in exp.claims:
            edge = c.threshold + (c.min_effect if c.direction == ">" else -c.min_effect)
            rule = (
                "exact: no violation"
                if c.exact
                else f"mean {c.direction} {c.threshold:g} by at least {c.min_effect:g} (edge {edge:g})"
            )
            print(f"  {c.id}  [{c.digest()}]  {status[c.id]}")
            print(f"      {c.text}")
            print(f"      rule: {rule}; family: {c.family or exp.id}; models: {', '.join(c.models)}")
            if not c.exact:
                print(f"      smallest effect: {c.why}")
                print(f"      resolution: {c.resolution or 'none'}; gates: {', '.join(c.gates) or 'none'}")
            if c.chosen_after:
                print("      post hoc on the exploratory seeds: rule set after their results")
            if c.replaces:
                print(f"      replaces: {c.replaces}")
    return 0


def cmd_damaged(args) -> int:
    """List (or --remove) the files set aside as damaged or outdated under a runs folder."""

    files = damaged_files(args.runs)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f.stat().st_size / 2**20:9.2f} MiB  {f}")
    if args.remove:
        for f in files:
            f.unlink()
        print(f"removed {len(files)} damaged file(s), {total / 2**20:.2f} MiB, from {args.runs}")
    else:
        print(
            f"{len(files)} damaged file(s), {total / 2**20:.2f} MiB, in {args.runs}"
            + ("; `purify damaged --remove` deletes them" if files else "")
        )
    return 0


def cmd_merge(args) -> int:

    n = merge_runs(args.sources, args.into)
    print(
        f"merged {n} chunk file(s) into {args.into}; now run the same `purify run` without --slice and with --runs "
        f"{args.into}"
    )
    return 0


OUT_HELP = (
    "folder for ID.json and ID.png (default: figures/, the committed records; a run whose preset, seeds or "
    "overrides differ from the record there writes to RUNS/figures/ instead, unless --overwrite)"
)
RUNS_HELP = (
    "folder for finished run chunks and checkpoints, found again on resume (default: runs); safe to share "
    "between concurrent runs"
)


def _add_run_options(p: argparse.ArgumentParser, *, seeds: bool = True, runs: bool = True) -> None:
    p.add_argument(
        "--preset",
        default="cpu",
        help="cpu (minutes on 2 cores, the default), gpu (paper scale) or test (seconds: the test suite's sizes)",
    )
    if seeds:
        p.add_argument("--seeds", type=int, default=None, help="number of seeds, >= 2 (default: the preset's)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    if runs:
        p.add_argument("--runs", default="runs", help=RUNS_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace the committed record in figures/ even if it differs"
    )
    if seeds:
        p.add_argument(
            "--confirm",
            action="store_true",
            help="run on the confirmatory seeds of the experiment's confirmation round (round 0: 1000000 on, round 1: "
            "2000000 on, ...), which no development run touched, with the claims frozen as declared; the record "
            "keeps the exploratory verdicts beside the confirmatory ones",
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="purify", description="Theory simulations of adversarial robustness.")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("list", help="experiments and their presets")
    pl.add_argument("--settings", action="store_true", help="also list every --set key with its default")
    pl.set_defaults(func=cmd_list)
    pr = sub.add_parser("run", help="run one experiment; writes OUT/ID.json and OUT/ID.png")
    pr.add_argument("experiment", help="an experiment id (see `purify list`)")
    _add_run_options(pr)
    pr.add_argument("--no-resume", action="store_true", help="keep nothing on disk between runs (no --runs folder)")
    pr.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting, e.g. data.d=128 or hp.tau=0.3 or exp.n_taus=9",
    )
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument(
        "--verbose", action="store_true", help="say which run chunks are computed, loaded, resumed or waited for"
    )
    pr.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="networks per compiled call (default: as many as fit half the memory; checked against the memory)",
    )
    pr.add_argument(
        "--batching",
        default="vmap",
        metavar="HOW",
        help="how a compiled call batches its networks: vmap (the default, which made every committed record: one "
        "vmap over the chunk), auto (sweep()'s default: groups "
        "of networks scanned on a single CPU device, faster there; same numbers to float rounding), groups, or a "
        "group size N",
    )
    pr.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="write the training state of the chunk in flight at most this often (default 60; 0: after every "
        "step call); Ctrl-C always writes it",
    )
    pr.add_argument(
        "--slice",
        default=None,
        metavar="I/N",
        help="job-array mode: compute only block I of N of the run chunks, then stop",
    )
    pr.add_argument(
        "--distributed", action="store_true", help="one process of several under jax.distributed.initialize()"
    )
    pr.set_defaults(func=cmd_run)
    pb = sub.add_parser(
        "bench", help="throughput of the vmapped sweep against sequential JAX and PyTorch; compile latency"
    )
    pb.add_argument(
        "--configs", default="small,medium", help="comma-separated: small (d=64, m=128), medium (d=256, m=512)"
    )
    pb.add_argument(
        "--networks", type=int, default=None, help="networks per config (default: 64/16 on CPU, 1024/4096 on GPU)"
    )
    pb.add_argument("--steps", type=int, default=50, help="SGD steps per timed call")
    pb.add_argument(
        "--no-torch", action="store_true", help="skip the PyTorch peers (eager loop, torch.func.vmap + compile)"
    )
    pb.add_argument("--no-latency", action="store_true", help="skip the compile-latency row (first vs second call)")
    pb.add_argument(
        "--no-profile", action="store_true", help="skip the profile of where each config's step spends its time"
    )
    pb.add_argument(
        "--scaling",
        action="store_true",
        help="instead of the table: network-steps/s for 1, 2, 4, ... networks per config "
        "(JSON and log-log figure scaling-<platform>-<config>.*)",
    )
    pb.add_argument(
        "--max-networks",
        type=int,
        default=None,
        help="--scaling's largest network count (default: 256 on CPU; on an accelerator, what fits its memory)",
    )
    pb.add_argument("--out", default="figures", help="folder for bench-<platform>.json (default: figures)")
    pb.set_defaults(func=cmd_bench)
    pf = sub.add_parser("figures", help="redraw every figure from its saved JSON (or --rerun the experiments)")
    _add_run_options(pf, seeds=False, runs=False)
    pf.add_argument(
        "--rerun", action="store_true", help="run every experiment anew (from scratch) instead of redrawing"
    )
    pf.add_argument("--only", default=None, help="comma-separated experiment ids (default: all)")
    pf.add_argument(
        "--allow-dirty", action="store_true", help="let --rerun write into figures/ from a tree that differs from HEAD"
    )
    pf.add_argument(
        "--compare",
        default=None,
        metavar="DIR",
        help="then list every value of the JSONs in --out that differs from DIR's (exit 1 if any does)",
    )
    pf.set_defaults(func=cmd_figures)
    pc = sub.add_parser("check", help="run every experiment's preset and print a table of verdicts")
    _add_run_options(pc)
    pc.add_argument("--only", default=None, help="comma-separated experiment ids (default: all)")
    pc.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in every experiment")
    pc.set_defaults(func=cmd_check)
    pcl = sub.add_parser("claims", help="list every experiment's declared claims, their hashes and confirmation")
    pcl.add_argument("experiment", nargs="?", default=None, help="one experiment id (default: all)")
    pcl.add_argument(
        "--table",
        action="store_true",
        help="print every committed verdict as a markdown table (confirmatory beside exploratory)",
    )
    pcl.add_argument(
        "--readme", default=None, metavar="FILE", help="with --table: write it between FILE's table markers"
    )
    pcl.set_defaults(func=cmd_claims)
    pd = sub.add_parser(
        "damaged", help="list the run files set aside as damaged or outdated (kept for inspection); --remove them"
    )
    pd.add_argument("--runs", default="runs", help="the runs folder (default: runs)")
    pd.add_argument("--remove", action="store_true", help="delete them")
    pd.set_defaults(func=cmd_damaged)
    pm = sub.add_parser("merge", help="gather the run chunks of several --slice jobs into one folder")
    pm.add_argument("sources", nargs="+", help="the --runs folders of the slice jobs")
    pm.add_argument("--into", default="runs", help="the folder to gather into (default: runs)")
    pm.set_defaults(func=cmd_merge)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # the command line only writes files; a REPL keeps its own backend

    log = logging.getLogger("purify")  # the toolkit's own notes, on stderr
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("purify: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)

    raise_on_sigterm()  # SIGTERM keeps what finished, as Ctrl-C does
    try:
        if args.command in ("run", "check", "figures"):  # bench measures compile time: no disk cache there
            _enable_compilation_cache()
        return args.func(args)
    except ConfigError as exc:
        print(f"purify: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        term = getattr(exc, "signum", None) == signal.SIGTERM
        msg = str(exc) or ("terminated (SIGTERM)" if term else "interrupted")
        print(f"\npurify: {msg}", file=sys.stderr)
        return 143 if term else 130
    except OSError as exc:
        if exc.errno not in NO_SPACE and exc.errno != errno.EROFS:
            raise
        print(f"purify: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
