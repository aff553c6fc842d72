"""attack-audit: is every robust accuracy the toolkit reports a converged one?

The default evaluation (FGM, PGD with eval.pgd_steps steps and eval.restarts starts, and the
dense attack along M w*; robust = correct under all) is an upper bound on robust accuracy: a
weak attack, or a model whose gradient misleads it (gradient masking), makes it too high.
This experiment measures how far too high, for every model family the experiments report, at
the radii the README quotes, against a much stronger reference: APGD (Croce & Hein 2020) on the
margin loss with `steps` iterations and `restarts` starts, the first at the FGM point, the
second at the dense direction, the others random (`purify.attacks.strong_attack`), and a
gradient-free random search of 500 queries (`purify.attacks.random_search`, which flat dead
zones cannot stop), counted together with the default attacks.

Families, l2 (the purification protocol's data): the best linear classifier; networks trained
clean, clean then FGM, clean then PGD; the oracle pure network; clean linear heads (on a new
dense task) on the clean and on the FGM backbone. l-inf (fp-linf's data: Haar dictionary,
radii / sqrt(2d/pi)): linear, clean-trained, FGM-trained, oracle.

Claim (statistical, one instance per family and radius, Holm over all of them): the gap
(default - strong) robust accuracy, per seed, is below MAX_GAP = 0.01, half the smallest
accuracy effect any claim declares, with its 95% interval: the upper bound must lie below
0.01. max_gap, the largest mean gap over the cells, is reported beside it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purify import attacks, landmarks, make_task, network
from purify.claims import Claim, statistic
from purify.compilation import program
from purify.config import Config
from purify.crosscheck import FOOLBOX_VERSION, foolbox_accuracy, foolbox_attacks, require_foolbox
from purify.data import Task, sample
from purify.downstream import backbones, downstream_tasks, logits, run_keys, splits
from purify.evaluate import eval_keys
from purify.experiment import Context, Experiment, Option
from purify.plotting import band

from ._common import (
    BACKBONE_CONTROLS,
    N_DOWN,
    PRETRAIN_PRESETS,
    down_config,
    failed_runs,
    probe,
    supervised_backbones,
    with_test_preset,
)
from ._purification import linf_settings

MAX_GAP = 0.01  # the rule: default robust accuracy may overstate the strong attack's by at most this
CLAIMS = (
    Claim(
        "within-reference",
        "{norm}, {family}, radius {tau:g}: the default evaluation overstates the strong reference's robust accuracy "
        f"by less than {MAX_GAP}",
        "<",
        MAX_GAP,
        min_effect=0.0,
        why=f"the tolerance {MAX_GAP} is the claim: half the smallest accuracy effect (0.02) any claim declares, "
        "so an attack gap cannot decide one",
        models=("every audited family",),
    ),
)
RADII = (
    0.125,
    0.25,
    0.2604,
    0.375,
)  # l2: the window's lower end, training/eval tau, fp-robustness's verdict tau, 0.375


def audit(model, params, data_fn, seeds, spec: attacks.EvalSpec, u_fn, steps: int, restarts: int, foolbox=False):
    """Default and strong robust accuracy (S, n_tau) of S models: model(params_s, x) -> (n,)
    logits, data_fn(seed_index) -> (x, y) their evaluation batch, u_fn(seed_index) -> the
    dense-attack direction; with foolbox, a third: foolbox 3's robust accuracy (S, n_tau) on
    the same inputs (`purify.crosscheck.foolbox_accuracy`, `steps` iterations), else None."""

    def one(p, x, y, u, key):
        margin = lambda v: y * model(p, v)
        return attacks.audited_accuracy(margin, x, y, u, key, spec, steps, restarts)

    xs, ys, us = zip(*((*data_fn(i), u_fn(i)) for i in range(len(seeds))))
    keys = jnp.stack([jax.random.fold_in(eval_keys(int(s))[1], 0xA0D) for s in seeds])
    default, strong = program(jax.vmap(one))(params, jnp.stack(xs), jnp.stack(ys), jnp.stack(us), keys)
    third = None
    if foolbox:
        per_seed = [jax.tree_util.tree_map(lambda a, i=i: a[i], params) for i in range(len(seeds))]
        third = np.asarray(
            [
                foolbox_accuracy(lambda v, p=p: model(p, v), x, y, spec.taus, spec.norm, steps)
                for p, x, y in zip(per_seed, xs, ys)
            ]
        )
    return np.asarray(default), np.asarray(strong), third


def network_families(
    cfg: Config, task: Task, bbs: dict, seeds, n: int, steps: int, restarts: int, taus, foolbox: bool = False
) -> dict:
    """The trained networks (backbones with the fixed head), the linear classifier and the oracle."""
    arch, beta = network.Architecture.of(cfg), cfg.hp.beta
    spec = attacks.EvalSpec(tuple(taus), cfg.eval.norm, cfg.eval.pgd_steps, cfg.eval.restarts)

    def data(i):
        x, _, y = sample(eval_keys(int(seeds[i]))[0], cfg.data, task, cfg.eval.n_eval, cfg.hp.noise)
        return x[:n], y[:n, 0]

    u = lambda i: task.label_directions[0]
    S = len(seeds)
    out = {}
    for name, bb in bbs.items():
        params = {k: jnp.asarray(v) for k, v in bb.items()}
        out[name] = audit(
            lambda p, v: network.logits(arch, p, v, beta)[:, 0], params, data, seeds, spec, u, steps, restarts, foolbox
        )
    lin, orc = landmarks.linear_logits(task), landmarks.oracle_logits(cfg.data, task, beta)
    none = jnp.zeros(S)
    out["linear"] = audit(lambda p, v: lin(v), none, data, seeds, spec, u, steps, restarts, foolbox)
    out["oracle"] = audit(lambda p, v: orc(v), none, data, seeds, spec, u, steps, restarts, foolbox)
    return out


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    steps, restarts, n = int(o["steps"]), int(o["restarts"]), int(o["n_audit"])
    seed_ids = np.asarray(seeds)
    taus = tuple(float(t) for t in o["radii"])
    families = {}

    # -- l2 -------------------------------------------------------------------------------------
    task = make_task(cfg.data)
    bbs, failed = supervised_backbones(cfg, seeds, ctx, task)
    flagged = bbs.pop("flagged")
    bbs.pop("trained")  # the audit compares attacks on the same models: settling does not enter
    fool = bool(o["foolbox"])
    l2 = network_families(
        cfg, task, {f"{k}-trained net": v for k, v in bbs.items()}, seed_ids, n, steps, restarts, taus, fool
    )
    # clean linear heads on the clean and FGM backbones, on a new dense task
    theta = downstream_tasks(cfg.data.n_features, np.asarray(task.w_star[0]))["dense"]
    dc = down_config(cfg, o, taus=taus)
    arch, beta = network.Architecture.of(cfg), cfg.hp.beta
    keys = run_keys(seed_ids)
    u_down = jnp.asarray(task.M) @ jnp.asarray(theta) / np.linalg.norm(theta)
    spec_down = dc.spec

    def down_data(i):
        x, y = splits(jax.random.split(keys[i], 4)[0], cfg.data, jnp.asarray(theta), task.M, dc, which=(2,))[2]
        return x[:n], y[:n]

    for bname in ("clean", "fgm"):
        fit = probe(ctx, cfg, dc, task, bbs[bname], seed_ids, theta, n=dc.n_max, lr=float(o["head_lr"]))
        params = {k: jnp.asarray(v) for k, v in fit["params"].items()}
        l2[f"clean head on {bname} backbone"] = audit(
            lambda p, v: logits(arch, p, v, beta),
            params,
            down_data,
            seed_ids,
            spec_down,
            lambda i: u_down,
            steps,
            restarts,
            fool,
        )
    families["l2"] = {"radii": list(taus), "models": l2}

    # -- l-inf (fp-linf's protocol) -------------------------------------------------------------
    lcfg = cfg.set(**linf_settings(cfg.data.d, cfg.hp.tau, cfg.eval.taus))
    ltaus = linf_settings(cfg.data.d, cfg.hp.tau, taus)["eval.taus"]
    ltask = make_task(lcfg.data)
    res = ctx.sweep(lcfg, grid={"tau": [0.0, lcfg.hp.tau]}, seeds=seeds, task=ltask)
    failed += failed_runs(res, "linf")
    flagged = flagged | res.flagged().any(0)
    lbbs = {"clean-trained net": backbones(res, rows=0), "FGM-trained net": backbones(res, rows=1)}
    families["linf"] = {
        "radii": list(ltaus),
        "models": network_families(lcfg, ltask, lbbs, seed_ids, n, steps, restarts, ltaus, fool),
    }

    # -- the rule -------------------------------------------------------------------------------
    ok = ~flagged
    table, cells, worst, statistics, crosscheck = {}, [], (None, None, -np.inf), [], []
    for norm, fam in families.items():
        table[norm] = {"radii": fam["radii"], "models": {}}
        for name, (default, strong, third) in fam["models"].items():
            gap = default - strong  # (S, n_tau), >= 0 by construction
            mean_gap = gap[ok].mean(0) if ok.any() else np.full(gap.shape[1], np.nan)
            table[norm]["models"][name] = {
                "default": default.tolist(),
                "strong": strong.tolist(),
                "gap_mean": mean_gap.tolist(),
                "gap_max_over_seeds": gap.max(0).tolist(),
            }
            if third is not None:  # > 0 where foolbox finds errors the reference missed
                below = strong - third
                table[norm]["models"][name]["foolbox"] = third.tolist()
                table[norm]["models"][name]["reference_minus_foolbox_mean"] = (
                    below[ok].mean(0) if ok.any() else np.full(below.shape[1], np.nan)
                ).tolist()
                crosscheck.append(float(np.nanmax(below[ok].mean(0))) if ok.any() else np.nan)
            for j, g in enumerate(mean_gap):
                statistics.append(
                    statistic(
                        "within-reference", gap[:, j], flagged=flagged, norm=norm, family=name, tau=fam["radii"][j]
                    )
                )
                cells.append(g)
                if g > worst[2]:
                    worst = (f"{norm}: {name}", fam["radii"][j], float(g))
    cells = np.asarray(cells)
    max_gap = float(np.nanmax(cells)) if np.isfinite(cells).any() else float("nan")
    return {
        "max_gap": max_gap,
        "max_gap_at": {"family": worst[0], "radius": worst[1]},
        "rule_max_gap": MAX_GAP,
        "strong_attack": {
            "kind": "APGD, margin loss, starts at FGM, the dense direction and random points; and a gradient-free "
            "random search (500 queries)",
            "steps": steps,
            "restarts": restarts,
            "queries": 500,
        },
        "default_attack": {"pgd_steps": cfg.eval.pgd_steps, "restarts": cfg.eval.restarts, "also": ["fgm", "dense"]},
        "n_audit": n,
        "foolbox": {
            "version": FOOLBOX_VERSION,
            "attacks": list(foolbox_attacks("l2", steps)),
            "steps": steps,
            "reference_minus_foolbox_max": float(np.nanmax(crosscheck)) if crosscheck else None,
        }
        if fool
        else None,
        "families": table,
        "failed_runs": failed,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    fams = record["families"]
    fig, axes = plt.subplots(1, len(fams), figsize=(6.5 * len(fams), 4.6), squeeze=False)
    for ax, (norm, fam) in zip(axes[0], fams.items()):
        radii = np.asarray(fam["radii"])
        for name, m in fam["models"].items():
            gap = np.asarray(m["default"], float) - np.asarray(m["strong"], float)
            band(ax, radii, gap, label=name, marker="o", ms=3)
        ax.axhline(
            record["rule_max_gap"],
            color="k",
            ls="--",
            lw=1,
            label=f"allowed: upper 95% bound < {record['rule_max_gap']:g}",
        )
        ax.set_xlabel(f"{'ℓ2' if norm == 'l2' else 'ℓ∞'} attack radius τ")
        ax.set_ylabel("robust accuracy: default − strong attack")
        ax.set_title(f"{'ℓ2' if norm == 'l2' else 'ℓ∞'} (mean and min–max over {len(record['seeds'])} seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    vs = record["verdicts"]
    v = f"{sum(x['verdict'] == 'holds' for x in vs)} of {len(vs)} verdict(s) hold"
    sa = record["strong_attack"]
    search = f" and a {sa['queries']}-query random search" if sa.get("queries") else ""
    rule = (
        f"each cell: upper 95% bound of the gap < {record['rule_max_gap']:g}"
        if "statistics" in record
        else f"rule ≤ {record['rule_max_gap']:g}"
    )
    fb = record.get("foolbox")
    fool = (
        f"\nfoolbox {fb['version']} cross-check ({'; '.join(fb['attacks'])}): reference − foolbox robust accuracy "
        f"≤ {fb['reference_minus_foolbox_max']:+.4f} in every cell (mean over seeds; > 0: foolbox finds errors the "
        "reference misses)"
        if fb
        else ""
    )
    fig.suptitle(
        f"Attack audit: the default evaluation (FGM, PGD {record['default_attack']['pgd_steps']} steps × "
        f"{record['default_attack']['restarts']} starts, dense) against APGD ({sa['steps']} steps, {sa['restarts']} "
        f"starts){search}\nlargest mean overstatement max_gap = {record['max_gap']:.4f}; {v} ({rule})" + fool,
        fontsize=10,
    )
    fig.tight_layout()
    return fig


OPTIONS = (
    Option("radii", float, RADII, "l2 radii audited (l-inf: divided by sqrt(2d/pi))", lo=0.0, many=True),
    Option("steps", int, 100, "APGD iterations per start", lo=1),
    Option("restarts", int, 10, "APGD starts (the first at the FGM point)", lo=1),
    Option("n_audit", int, 512, "evaluation examples audited per model (the first of its eval batch)", lo=1),
    Option("head_lr", float, 0.01, "learning rate of the clean heads", lo=0.0, strict_lo=True),
    Option(
        "foolbox",
        bool,
        False,
        "also attack every audited model with foolbox 3 (PGD with and without random start, BIM, DeepFool; "
        "`steps` iterations): a third-party cross-check of the reference (needs purify[crosscheck])",
    ),
    N_DOWN,
)


def _check(cfg: Config, o: dict) -> None:
    if o["foolbox"]:
        require_foolbox()


CONTROLS = {
    **BACKBONE_CONTROLS,
    "data.dictionary": "the l-inf half trains on a Haar dictionary (fp-linf's protocol)",
    "train.norm": "the l2 half trains in l2, the l-inf half in l-inf",
    "eval.norm": "the l2 half evaluates in l2, the l-inf half in l-inf",
}

EXPERIMENT = Experiment(
    id="attack-audit",
    claim="EVAL",
    title="Robust accuracy from converged attacks: default evaluation vs APGD",
    summary="max over model families and radii of default minus APGD robust accuracy; holds when <= 0.01",
    presets=with_test_preset(
        {
            "cpu": {**PRETRAIN_PRESETS["cpu"], "options": {"n_audit": 512}},
            "gpu": {**PRETRAIN_PRESETS["gpu"], "options": {"n_audit": 2048, "radii": (0.0884, 0.177, 0.25)}},
        },
        CONTROLS,
        {"steps": 5, "restarts": 2, "n_audit": 32, "radii": (0.3,), "n_down": 256},
    ),
    options=OPTIONS,
    run=run,
    controls=CONTROLS,
    derives={
        "hp.tau": "the l-inf half divides it by sqrt(2d/pi) (fp-linf's conversion)",
        "eval.taus": "the l-inf half divides them by sqrt(2d/pi) (fp-linf's conversion)",
    },
    plot=plot,
    claims=CLAIMS,
    check=_check,
)
