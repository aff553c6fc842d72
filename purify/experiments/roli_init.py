"""roli-init [RoLI]: backbone x fine-tuning method x head initialization, with adversarial fine-tuning.

Backbones: supervised pre-training clean, FGM or PGD (shared with rep-bound and inh-nodes on
disk). Downstream, on a new dense task and at two training-set sizes, every combination of a
method (linear probe, bias-only, low-rank first-layer update, full fine-tuning) and a head
initialization (RanLI: random; RoLI: adversarial linear probing first; StLI: clean linear
probing first), fine-tuned adversarially (attack `ft_attack` at the pre-training radius).
Learning rates are swept per method and one is chosen per run on a validation split by robust
accuracy among those that did not collapse (validation clean accuracy >= 0.75, as in
fp-lowcomplexity); a run whose chosen model still ends below 0.75 clean accuracy is flagged
collapsed and enters no verdict. The test split reports clean and robust accuracy (end to end
on the input).
"""

from __future__ import annotations

import warnings

import numpy as np

from purify import make_task
from purify.claims import SET_AFTER_RESULTS, Claim, statistic
from purify.config import Config, ConfigError
from purify.downstream import HEAD_INIT_NAMES, HEAD_INITS, METHODS, Along, downstream_tasks, select_by_validation
from purify.experiment import Context, Experiment, Option

from ._common import (
    ACC_DIFFERENCE,
    ACC_EFFECT,
    BACKBONE_CONTROLS,
    COLLAPSED_BELOW,
    N_DOWN,
    PRETRAIN_PRESETS,
    attack_gaps,
    down_config,
    supervised_backbones,
    with_test_preset,
)

METHOD_NAMES = {"probe": "linear probe", "bias": "bias-only", "lowrank": "low-rank", "full": "full FT"}

_acc = {
    "min_effect": ACC_EFFECT,
    "why": ACC_DIFFERENCE,
    "resolution": "accuracy difference",
    "gates": ("above chance", "trained", "attack converged"),
}
# The cells a verdict reads (RanLI and RoLI heads on the clean and FGM backbones): their chosen
# models are re-measured with the reference attack; StLI heads and the PGD backbone enter none.
AUDITED_INITS, AUDITED_BACKBONES = ("random", "robust"), ("clean", "fgm")
COLLAPSE_RULE = (
    SET_AFTER_RESULTS + "; collapsed runs (clean accuracy < 0.75) were excluded from learning-rate selection and from "
    "the comparison after the results, as in fp-lowcomplexity; the original rule selected on all runs"
)
FT = ("adversarially fine-tuned models on the FGM and clean backbones",)


def _pair(claim_id: str, text: str, models: tuple) -> tuple[Claim, Claim]:
    """The rule in use (collapse excluded) and the original rule it replaced (every run)."""
    return (
        Claim(claim_id, text, models=models, chosen_after=COLLAPSE_RULE, replaces=f"{claim_id}-all-runs", **_acc),
        Claim(f"{claim_id}-all-runs", text + " (every run, collapsed ones included)", models=models, **_acc),
    )


CLAIMS = (
    *_pair(
        "needs-robust-backbone",
        "n={n}: {method} ({init}) needs a robust backbone: FGM backbone more robust than clean",
        FT,
    ),
    *_pair(
        "probing-best",
        "n={n}: on the FGM backbone linear probing is the most robust method ({init})",
        ("linear probe and the other fine-tuning methods on the FGM backbone",),
    ),
    *_pair(
        "roli-beats-ranli",
        "n={n}: {method} on the FGM backbone: RoLI head init beats RanLI",
        ("models fine-tuned from RoLI and from RanLI heads on the FGM backbone",),
    ),
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    tau, eps = cfg.hp.tau, float(cfg.eval.taus[0])
    bbs, failed = supervised_backbones(cfg, seeds, ctx, task)
    flag = bbs.pop("flagged")  # (S,) seeds whose pre-training failed, diverged or ended at chance
    settled = {"trained": bbs.pop("trained")}  # (S,) seeds whose three backbones settled
    names = list(bbs)
    theta = downstream_tasks(cfg.data.n_features, np.asarray(task.w_star[0]))["dense"]
    sizes = [int(n) for n in o["sizes"]]
    seed_ids = np.asarray(seeds)
    B, S, N = len(names), len(seed_ids), len(sizes)
    stacked = {k: np.stack([bbs[n][k] for n in names]) for k in bbs[names[0]]}  # (B, S, ...)
    methods, inits = [m for m in METHODS if m in o["methods"]], [h for h in HEAD_INITS if h in o["head_inits"]]
    robust = np.zeros((len(methods), len(inits), B, N, S))
    clean, chosen_lr = np.zeros_like(robust), np.zeros_like(robust)
    robust_orig, clean_orig = np.zeros_like(robust), np.zeros_like(robust)
    gap, gap_orig = np.full_like(robust, np.nan), np.full_like(robust, np.nan)
    n_failed = 0
    for mi, method in enumerate(methods):
        lrs = np.asarray(o["lrs"][method], np.float32)
        L = len(lrs)
        for hi, init in enumerate(inits):
            dc = down_config(
                cfg,
                o,
                method=method,
                head_init=init,
                attack=o["ft_attack"],
                init_attack=o["ft_attack"],
                n_max=max(sizes),
                taus=(eps,),
                rank=int(o["rank"]),
                steps=max(4, cfg.train.steps // int(o["steps_divisor"])),
                probe_steps=max(4, cfg.train.steps // (2 * int(o["steps_divisor"]))),
            )
            shape = (B, N, S, L)
            fit = ctx.downstream_grid(
                cfg,
                dc,
                task.M,
                {"backbone": names, "n": np.asarray(sizes), "seed": seed_ids, "lr": lrs},
                seeds=Along(("seed",), seed_ids),
                backbone=Along(("backbone", "seed"), stacked),
                theta=theta,
                beta=cfg.hp.beta,
                n=Along(("n",), np.asarray(sizes)),
                lr=Along(("lr",), lrs),
                probe_lr=float(o["probe_lr"]),
                tau=tau,
            )
            n_failed += int(fit["failed"].sum())
            val_r, val_c = fit["val_robust"][..., 0], fit["val_clean"]
            tests = (fit["robust"][..., 0], fit["clean"])
            # the learning rate with the best validation robust accuracy among those that did not
            # collapse (validation clean accuracy >= COLLAPSED_BELOW); the original rule took the
            # best validation robust accuracy of all, which rewards near-constant predictors
            best, (r, c) = select_by_validation(np.where(val_c >= COLLAPSED_BELOW, val_r, np.nan), *tests)
            best_orig, (ro, co) = select_by_validation(val_r, *tests)
            robust[mi, hi], clean[mi, hi], chosen_lr[mi, hi] = r, c, lrs[best]
            robust_orig[mi, hi], clean_orig[mi, hi] = ro, co
            if init in AUDITED_INITS:
                b = np.asarray([names.index(n) for n in AUDITED_BACKBONES if n in names])
                bi, ni_, si = (a.ravel() for a in np.meshgrid(b, np.arange(N), np.arange(S), indexing="ij"))
                chosen = [np.ravel_multi_index((bi, ni_, si, sel[bi, ni_, si]), shape) for sel in (best, best_orig)]
                union, inverse = np.unique(np.concatenate(chosen), return_inverse=True)  # each model audited once
                g = attack_gaps(cfg, dc, task, fit, np.unravel_index(union, shape), theta)[inverse]
                gap[mi, hi][bi, ni_, si], gap_orig[mi, hi][bi, ni_, si] = g[: len(bi)], g[len(bi) :]
    ib, hb = {n: i for i, n in enumerate(names)}, {h: i for i, h in enumerate(inits)}
    h0 = hb.get("random", 0)  # the method comparisons use RanLI heads (the first init run, if RanLI is not)
    # a run collapsed when even its chosen learning rate ends below COLLAPSED_BELOW clean accuracy
    collapsed = clean < COLLAPSED_BELOW
    collapsed_orig = clean_orig < COLLAPSED_BELOW
    statistics = []

    def compare(claim, a, b, **where):
        """The rule in use (collapsed runs excluded) and the original one (every run) beside it."""
        g = {**settled, "attack converged": np.maximum(gap[a], gap[b])}
        g0 = {**settled, "attack converged": np.maximum(gap_orig[a], gap_orig[b])}
        diff, diff0 = robust[a] - robust[b], robust_orig[a] - robust_orig[b]
        statistics.append(statistic(claim, diff, flagged=collapsed[a] | collapsed[b] | flag, gates=g, **where))
        statistics.append(statistic(f"{claim}-all-runs", diff0, flagged=flag, gates=g0, **where))

    for ni, n in enumerate(sizes):
        for mi, method in enumerate(methods):
            if method != "full":
                where = {"n": n, "method": METHOD_NAMES[method], "init": HEAD_INIT_NAMES[inits[h0]]}
                compare("needs-robust-backbone", (mi, h0, ib["fgm"], ni), (mi, h0, ib["clean"], ni), **where)
        if "probe" in methods and len(methods) > 1:
            p = methods.index("probe")

            def probing_best(rob, col, gp, p=p, ni=ni):
                """The probe's margin over the best other method, the probe's collapse and the
                largest attack gap among the models compared (S,)."""
                others = np.delete(np.where(col[:, h0, ib["fgm"], ni], -np.inf, rob[:, h0, ib["fgm"], ni]), p, 0)
                g = {**settled, "attack converged": gp[:, h0, ib["fgm"], ni].max(0)}
                return rob[p, h0, ib["fgm"], ni] - others.max(0), col[p, h0, ib["fgm"], ni], g

            where = {"n": n, "init": HEAD_INIT_NAMES[inits[h0]]}
            diff, col, g = probing_best(robust, collapsed, gap)
            diff0, _, g0 = probing_best(robust_orig, np.zeros_like(collapsed_orig), gap_orig)
            statistics.append(statistic("probing-best", diff, flagged=col | flag, gates=g, **where))
            statistics.append(statistic("probing-best-all-runs", diff0, flagged=flag, gates=g0, **where))
        if "robust" in hb and "random" in hb:
            for mi, method in enumerate(methods):
                compare(
                    "roli-beats-ranli",
                    (mi, hb["robust"], ib["fgm"], ni),
                    (mi, hb["random"], ib["fgm"], ni),
                    n=n,
                    method=METHOD_NAMES[method],
                )
    return {
        "eps": eps,
        "train_tau": tau,
        "backbones": names,
        "methods": methods,
        "head_inits": [HEAD_INIT_NAMES[h] for h in inits],
        "sizes": sizes,
        "lrs": {k: list(v) for k, v in o["lrs"].items()},
        "ft_attack": o["ft_attack"],
        "robust": robust.tolist(),
        "clean": clean.tolist(),
        "chosen_lr": chosen_lr.tolist(),
        "collapsed_below_clean_accuracy": COLLAPSED_BELOW,
        "collapsed": collapsed.tolist(),
        "n_collapsed": int(collapsed.sum()),
        "n_collapsed_original_rule": int(collapsed_orig.sum()),
        "attack_gap": gap.tolist(),
        "original_rule": {
            "robust": robust_orig.tolist(),
            "clean": clean_orig.tolist(),
            "attack_gap": gap_orig.tolist(),
        },
        "n_failed_downstream": n_failed,
        "dims": ["method", "head_init", "backbone", "size", "seed"],
        "failed_runs": failed,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    col = np.asarray(record.get("collapsed", np.zeros(np.shape(record["robust"]), bool)), bool)
    # collapsed runs (near-constant predictors) are left out of the means and counted in the cell
    with warnings.catch_warnings():  # a cell whose every seed collapsed has no mean: NaN, drawn blank
        warnings.simplefilter("ignore", RuntimeWarning)
        rob = np.nanmean(np.where(col, np.nan, np.asarray(record["robust"], float)), -1)  # (method, init, bb, size)
        cl = np.nanmean(np.where(col, np.nan, np.asarray(record["clean"], float)), -1)
    n_col = col.sum(-1)
    methods, inits, bbs, sizes = record["methods"], record["head_inits"], record["backbones"], record["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes) + 2.5, 7.5), squeeze=False, layout="constrained")
    rows = [(m, b) for b in range(len(bbs)) for m in range(len(methods))]
    im = None
    for ni, n in enumerate(sizes):
        ax = axes[0, ni]
        grid = np.array([[rob[m, h, b, ni] for h in range(len(inits))] for m, b in rows])
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for r, (m, b) in enumerate(rows):
            for h in range(len(inits)):
                ax.text(
                    h,
                    r,
                    f"{grid[r, h]:.2f}\n(clean {cl[m, h, b, ni]:.2f})"
                    + (f"\n{n_col[m, h, b, ni]} collapsed" if n_col[m, h, b, ni] else ""),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if grid[r, h] < 0.6 else "k",
                )
        ax.set_xticks(range(len(inits)), inits)
        ax.set_yticks(
            range(len(rows)),
            [f"{bbs[b]} backbone · {METHOD_NAMES[methods[m]]}" for m, b in rows] if ni == 0 else [],
            fontsize=8,
        )
        for r in range(len(methods), len(rows), len(methods)):
            ax.axhline(r - 0.5, color="w", lw=2)
        ax.set_xlabel("head initialization")
        ax.set_title(f"{n} downstream training samples", fontsize=10)
    fig.colorbar(im, ax=axes[0, :].tolist(), label=f"robust test accuracy at ℓ2 ε={record['eps']:g} (mean over seeds)")
    c = record["config"]
    fig.suptitle(
        "RoLI: a robust backbone is necessary, and an adversarially probed head (RoLI) helps adversarial fine-tuning\n"
        f"{record['ft_attack'].upper()} fine-tuning at τ={record['train_tau']:g}; learning rate per run chosen on "
        "validation robust accuracy among runs with clean accuracy ≥ 0.75 (collapsed runs left out of the means); "
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, {len(record['seeds'])} seeds",
        fontsize=11,
    )
    return fig


_LRS = {
    "probe": (0.003, 0.01, 0.03),
    "bias": (0.003, 0.01, 0.03),
    "lowrank": (0.001, 0.003, 0.01),
    "full": (0.0003, 0.001, 0.003),
}
PRESETS = {
    "cpu": {
        **PRETRAIN_PRESETS["cpu"],
        "seeds": 4,
        "options": {
            "methods": METHODS,
            "head_inits": HEAD_INITS,
            "sizes": (256, 2048),
            "lrs": _LRS,
            "probe_lr": 0.01,
            "ft_attack": "fgm",
            "rank": 4,
            "n_down": 2048,
            "steps_divisor": 8,
        },
    },
    "gpu": {
        **PRETRAIN_PRESETS["gpu"],
        "seeds": 16,
        "options": {
            "methods": METHODS,
            "head_inits": HEAD_INITS,
            "sizes": (512, 8192),
            "lrs": _LRS,
            "probe_lr": 0.01,
            "ft_attack": "pgd",
            "rank": 8,
            "n_down": 8192,
            "steps_divisor": 4,
        },
    },
}

OPTIONS = (
    Option("methods", str, METHODS, "fine-tuning methods", choices=METHODS, many=True),
    Option(
        "head_inits",
        str,
        HEAD_INITS,
        "head initializations: random (RanLI), robust (RoLI), standard (StLI)",
        choices=HEAD_INITS,
        many=True,
    ),
    Option("sizes", int, (256, 2048), "downstream training-set sizes (each <= exp.n_down)", lo=1, many=True),
    Option("lrs", dict, _LRS, "learning rates swept per method (method -> list)"),
    Option("probe_lr", float, 0.01, "learning rate of the RoLI / StLI probing stage", lo=0.0, strict_lo=True),
    Option("ft_attack", str, "fgm", "attack of adversarial fine-tuning and of the RoLI stage", choices=("fgm", "pgd")),
    Option("rank", int, 4, "rank of the low-rank update", lo=1),
    N_DOWN,
    Option("steps_divisor", int, 8, "fine-tuning steps = train.steps / this", lo=1),
)


def _check(cfg: Config, o: dict) -> None:
    if max(o["sizes"]) > o["n_down"]:
        raise ConfigError(f"exp.sizes={o['sizes']!r} is not allowed: every size must be <= exp.n_down = {o['n_down']}")
    if o["rank"] > min(cfg.model.width, cfg.data.d):
        raise ConfigError(
            f"exp.rank={o['rank']!r} is not allowed: must be <= min(model.width, data.d) = "
            f"{min(cfg.model.width, cfg.data.d)}"
        )
    missing = [m for m in o["methods"] if m not in o["lrs"]]
    if missing:
        raise ConfigError(f"exp.lrs={o['lrs']!r} is not allowed: it names no learning rates for {missing}")


EXPERIMENT = Experiment(
    id="roli-init",
    claim="RoLI",
    title="Backbone x fine-tuning method x head initialization under adversarial fine-tuning",
    summary="backbone {clean, FGM, PGD} x {LP, bias-only, low-rank, full FT} x head init {RanLI, RoLI, StLI}, "
    "learning rates swept",
    presets=with_test_preset(
        PRESETS,
        BACKBONE_CONTROLS,
        {"methods": ("probe", "full"), "head_inits": ("random", "robust"), "n_down": 256, "sizes": (64, 256)},
    ),
    run=run,
    controls=BACKBONE_CONTROLS,
    plot=plot,
    options=OPTIONS,
    check=_check,
    claims=CLAIMS,
)
