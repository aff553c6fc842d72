"""inh-nodes [INH]: per hidden node, how many features does it carry after each pre-training?

For supervised (clean, FGM, PGD) and contrastive (InfoNCE and spectral; clean and FGM)
pre-training, the histograms over all nodes and seeds of features per node n_i(0.5) =
#{j : |c_ij| >= 0.5 max_j |c_ij|} and of purity max_j c_ij^2 / |w_i|^2, each node weighted by
its norm |w_i| (tiny, barely trained nodes would otherwise dominate). The contrastive
backbones use inh-contrastive's settings, so the two experiments share their runs on disk.
"""

from __future__ import annotations

import numpy as np

from purify import make_task, metrics
from purify.claims import Claim, statistic
from purify.config import Config
from purify.experiment import Context, Experiment, Option

from ._common import (
    BACKBONE_CONTROLS,
    CONTRASTIVE,
    CONTRASTIVE_VIEW_NOISES,
    OBJECTIVES,
    PRETRAIN_PRESETS,
    VIEW_NOISES,
    contrastive_backbones,
    contrastive_config,
    contrastive_name,
    failed_runs,
    features_per_neuron,
    with_test_preset,
)

FEW = 2  # "one or a few features": at most this many

MODELS = ("clean pre-trained backbone", "adversarially pre-trained backbone (supervised or contrastive)")
CLAIMS = (
    Claim(
        "fewer-features",
        f"{{kind}}: {{mode}} pre-training leaves more nodes with <= {FEW} features than clean (norm-weighted fraction)",
        min_effect=0.05,
        why="five percent of the weight norm changing kind; less would not change what the layer's nodes are",
        models=MODELS,
        gates=("above chance", "trained"),
    ),
    Claim(
        "purer",
        "{kind}: {mode} pre-training gives purer nodes than clean",
        min_effect=0.05,
        why="purity lies in [1/d, 1]; a rise below 0.05 would not change what a node detects",
        models=MODELS,
        gates=("above chance", "trained"),
    ),
)


def _node_stats(W: np.ndarray, M) -> dict:
    """W (S, m, d) -> per node (S, m): features, purity, norm."""
    C = np.asarray(metrics.feature_coefficients(W, M))
    norm = np.linalg.norm(W, axis=-1)
    purity = np.asarray(metrics.purity(C, norm**2))
    return {"features": features_per_neuron(W, M), "purity": purity, "norm": norm}


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    tau = cfg.hp.tau
    backbones = {}
    sup = ctx.sweep(cfg, grid={"tau": [0.0, tau]}, seeds=seeds, task=task)
    backbones["supervised/clean"], backbones["supervised/fgm"] = sup["W_final"][0], sup["W_final"][1]
    flags = {"supervised/clean": sup.flagged()[0], "supervised/fgm": sup.flagged()[1]}
    settled = {"supervised/clean": sup.trained()[0], "supervised/fgm": sup.trained()[1]}
    failed = failed_runs(sup, "supervised", "fgm")
    if o["pgd"]:
        pgd = ctx.sweep(cfg.set(**{"train.attack": "pgd"}), grid={"tau": [tau]}, seeds=seeds, task=task)
        backbones["supervised/pgd"] = pgd["W_final"][0]
        flags["supervised/pgd"] = pgd.flagged()[0]
        settled["supervised/pgd"] = pgd.trained()[0]
        failed += failed_runs(pgd, "supervised", "pgd")
    ccfg = cfg.set(**CONTRASTIVE)
    for objective in o["objectives"]:
        res = contrastive_backbones(
            ctx, contrastive_config(ccfg, objective, "fgm"), o["view_noises"], True, seeds, task
        )
        for h, (noise, t) in enumerate(zip(res.hp["noise"], res.hp["tau"])):
            name = contrastive_name(objective, float(noise), "clean" if t == 0 else "fgm")
            backbones[name], flags[name], settled[name] = res["W_final"][h], res.flagged()[h], res.trained()[h]
        failed += failed_runs(res, objective, "fgm")
    stats = {name: _node_stats(np.asarray(W), task.M) for name, W in backbones.items()}

    def few(s):  # per seed, the norm-weighted fraction of nodes with at most FEW features
        return ((s["features"] <= FEW) * s["norm"]).sum(-1) / s["norm"].sum(-1)

    def wpur(s):
        return np.asarray(metrics.weighted_mean(s["purity"], s["norm"]))

    statistics = []
    for name in backbones:
        kind, mode = name.rsplit("/", 1)
        if mode == "clean":
            continue
        pair = flags[name] | flags[f"{kind}/clean"]
        gates = {"trained": settled[name] & settled[f"{kind}/clean"]}
        where = {"kind": kind, "mode": mode.upper()}
        fewer = few(stats[name]) - few(stats[f"{kind}/clean"])
        statistics.append(statistic("fewer-features", fewer, flagged=pair, gates=gates, **where))
        purer = wpur(stats[name]) - wpur(stats[f"{kind}/clean"])
        statistics.append(statistic("purer", purer, flagged=pair, gates=gates, **where))
    return {
        "train_tau": tau,
        "few": FEW,
        "backbones": list(backbones),
        "view_noises": list(o["view_noises"]),
        "nodes": {n: {k: np.asarray(v).tolist() for k, v in s.items()} for n, s in stats.items()},
        "few_fraction": {n: few(s).tolist() for n, s in stats.items()},
        "weighted_purity": {n: wpur(s).tolist() for n, s in stats.items()},
        "failed_runs": failed,
        "flagged_runs": {n: np.argwhere(f).ravel().tolist() for n, f in flags.items() if f.any()},
        "unsettled_runs": {n: np.argwhere(~t).ravel().tolist() for n, t in settled.items() if (~t).any()},
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    kinds = sorted({n.split("/")[0] for n in record["backbones"]}, key=["supervised", "infonce", "spectral"].index)
    fig, axes = plt.subplots(2, len(kinds), figsize=(5 * len(kinds), 8.5), squeeze=False)
    colors = {"clean": "tab:blue", "fgm": "tab:red", "pgd": "tab:purple"}
    top = max(int(np.max(s["features"])) for s in record["nodes"].values()) + 1  # the widest node shown, not d
    for c, kind in enumerate(kinds):
        for name in [n for n in record["backbones"] if n.startswith(kind + "/")]:
            variant, mode = name.rsplit("/", 1)
            variant = variant.split("/", 1)[1] + ", " if "/" in variant else ""
            s = record["nodes"][name]
            feats, pur, w = (np.asarray(s[k], float).ravel() for k in ("features", "purity", "norm"))
            heavy = variant.endswith(f"={record['view_noises'][-1]:g}, ") if variant else True
            style = {
                "histtype": "step",
                "lw": 2.2 if heavy else 1.2,
                "ls": "-" if heavy else "--",
                "color": colors[mode],
            }
            tag = mode.upper() if mode != "clean" else "clean"
            label = f"{variant}{tag} (≤{record['few']} features: {np.mean(record['few_fraction'][name]):.2f})"
            axes[0, c].hist(feats, bins=np.arange(0.5, top + 1.5), weights=w / w.sum(), label=label, **style)
            axes[1, c].hist(
                pur,
                bins=np.linspace(0, 1, 26),
                weights=w / w.sum(),
                **style,
                label=f"{variant}{mode.upper() if mode != 'clean' else 'clean'} "
                f"(weighted mean {np.mean(record['weighted_purity'][name]):.2f})",
            )
        axes[0, c].set_title(
            f"{kind} pre-training" + (" (dashed: weak view noise)" if kind != "supervised" else ""), fontsize=10
        )
        axes[0, c].set_xlabel("features per node n_i(0.5)")
        axes[1, c].set_xlabel("node purity max_j c_ij² / |w_i|²")
        for r in range(2):
            axes[r, c].set_ylabel("fraction of nodes (weighted by |w_i|)")
            axes[r, c].legend(fontsize=8)
            axes[r, c].grid(alpha=0.3)
    cf = record["config"]
    fig.suptitle(
        "Adversarial pre-training leaves each node with one or a few features; clean pre-training leaves mixtures\n"
        f"d={cf['data']['d']}, k={cf['data']['k']}, width={cf['model']['width']}, τ={record['train_tau']:g}; "
        f"all nodes of {len(record['seeds'])} seeds pooled",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = {
    "cpu": {
        **PRETRAIN_PRESETS["cpu"],
        "seeds": 6,
        "options": {"pgd": True, "objectives": ("infonce", "spectral"), "view_noises": CONTRASTIVE_VIEW_NOISES["cpu"]},
    },
    "gpu": {
        **PRETRAIN_PRESETS["gpu"],
        "seeds": 16,
        "options": {"pgd": True, "objectives": ("infonce", "spectral"), "view_noises": CONTRASTIVE_VIEW_NOISES["gpu"]},
    },
}

CONTROLS = {
    **BACKBONE_CONTROLS,
    "train.objective": "exp.objectives lists the contrastive objectives (the supervised backbones are supervised)",
    "hp.noise": "exp.view_noises lists the view noises of the contrastive backbones",
    "hp.init_scale": "the contrastive backbones use common.CONTRASTIVE's settings",
    "train.temperature": "the contrastive backbones use common.CONTRASTIVE's settings",
    "train.batch": "the contrastive backbones use common.CONTRASTIVE's settings",
}

EXPERIMENT = Experiment(
    id="inh-nodes",
    claim="INH",
    title="Features per node and purity after each pre-training",
    summary="histograms of features per node and purity for supervised (clean/FGM/PGD) and contrastive (clean/FGM) "
    "pre-training",
    presets=with_test_preset(PRESETS, CONTROLS, {"view_noises": (0.5,)}),
    run=run,
    controls=CONTROLS,
    plot=plot,
    claims=CLAIMS,
    options=(
        Option("pgd", bool, True, "also pre-train with PGD (supervised)"),
        OBJECTIVES,
        VIEW_NOISES,
    ),
)
