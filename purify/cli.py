"""The `purify` command: list experiments, run one."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .config import Config, ConfigError, parse_value


def _enable_compilation_cache() -> None:
    """Reuse compiled programs across CLI invocations (override with PURIFY_CACHE_DIR='')."""
    path = os.environ.get("PURIFY_CACHE_DIR", str(Path.home() / ".cache" / "purify" / "jax"))
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not allowed: write key=value, e.g. --set data.d=128")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def cmd_list(args) -> int:
    from experiments import all_experiments

    for exp in all_experiments().values():
        print(f"{exp.id:16s} [{exp.claim}] {exp.summary}")
        for name, p in exp.presets.items():
            c = p["config"]
            size = ", ".join(f"{k.split('.')[-1]}={c[k]}" for k in ("data.d", "data.k", "model.width", "train.steps") if k in c)
            opts = p.get("options", {})
            extra = f"; options: {', '.join('exp.' + o for o in opts)}" if opts else ""
            print(f"    --preset {name:4s} {p['seeds']} seeds, {size}{extra}")
    if args.settings:
        print("\nSettings for --set (section.field = default):")
        for section in dataclasses.fields(Config):
            obj = getattr(Config(), section.name)
            for f in dataclasses.fields(obj):
                print(f"    {section.name}.{f.name} = {getattr(obj, f.name)!r}")
    return 0


def cmd_run(args) -> int:
    from experiments import print_verdicts, run_experiment

    overrides = _parse_sets(args.set or [])
    record = run_experiment(args.experiment, preset=args.preset, seeds=args.seeds, out=args.out,
                            runs_dir=None if args.no_resume else args.runs, overrides=overrides, progress=not args.quiet)
    print(f"{record['experiment']}: {record['title']} ({record['wall_seconds']} s)")
    print_verdicts(record)
    if record.get("failed_runs"):
        print(f"  warning: {len(record['failed_runs'])} run(s) saw NaN/inf (hparam, seed): {record['failed_runs']}")
    print(f"wrote {Path(args.out) / (record['experiment'] + '.json')} and {Path(args.out) / (record['experiment'] + '.png')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="purify", description="Theory simulations of adversarial robustness.")
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("list", help="experiments and their presets")
    pl.add_argument("--settings", action="store_true", help="also list every --set key with its default")
    pl.set_defaults(func=cmd_list)
    pr = sub.add_parser("run", help="run one experiment; writes OUT/ID.json and OUT/ID.png")
    pr.add_argument("experiment")
    pr.add_argument("--preset", default="cpu", help="cpu (minutes on 2 cores) or gpu (paper scale)")
    pr.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the preset's)")
    pr.add_argument("--out", default="figures", help="folder for the figure and JSON (default: figures)")
    pr.add_argument("--runs", default="runs", help="folder for resumable run chunks (default: runs)")
    pr.add_argument("--no-resume", action="store_true", help="keep nothing on disk between runs")
    pr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. data.d=128 or hp.tau=0.3 or exp.n_taus=9")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            _enable_compilation_cache()
        return args.func(args)
    except ConfigError as exc:
        print(f"purify: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        msg = str(exc) or "interrupted"
        print(f"\npurify: {msg}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
