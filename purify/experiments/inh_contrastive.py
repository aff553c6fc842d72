"""inh-contrastive [INH]: robustness inheritance after contrastive pre-training.

Backbones: the two-layer network pre-trained with InfoNCE (cosine similarity, temperature) or
the spectral contrastive loss on two views of each sample (shared z, own noise), clean for
adv_start steps and then clean, FGM or PGD on the anchor view (the perturbation maximizes
the anchor's contrastive loss), at several view-noise levels (the augmentation strength decides
whether clean contrastive training already purifies). No labels are seen in pre-training. Downstream: a clean
logistic head on the frozen representation (learning rate chosen on validation by clean
accuracy) for a dense, a sparse and the supervised experiments' task, with the oracle
pure-feature representation and a network FGM-trained end to end on each task (supervised,
with this experiment's batch and init) as references; robustness end to end on the input.
"""

from __future__ import annotations

import numpy as np

from purify import make_task
from purify.claims import Claim, statistic
from purify.config import Config
from purify.downstream import backbones, downstream_tasks
from purify.experiment import Context, Experiment, Option
from purify.plotting import band

from ._common import (
    ACC_EFFECT,
    ACC_GAIN_HEADS,
    CONTRASTIVE,
    CONTRASTIVE_VIEW_NOISES,
    DOWN_LRS,
    N_DOWN,
    OBJECTIVES,
    PRETRAIN_PRESETS,
    VIEW_NOISES,
    clean_heads,
    contrastive_backbones,
    contrastive_config,
    contrastive_name,
    down_config,
    end_to_end,
    failed_runs,
    oracle_backbone,
    weighted_purity,
    with_test_preset,
)

BACKBONES = ("clean contrastive backbone", "FGM/PGD contrastive backbone")
HEADS = ("clean linear head on the clean backbone", "clean linear head on the attacked backbone")
# Contrastive pre-training has no accuracy to settle: "trained" reads its held-out objective
# (`Results.trained`). Claims on heads' robust accuracies are re-measured with the reference attack.
ATTACKED = ("above chance", "trained", "attack converged")
CLAIMS = (
    Claim(
        "head-inherits",
        "{objective}, view noise σ={noise:g}, task '{task}': a clean head on the {attack}(τ={tau:g}) backbone is more "
        "robust than on the clean one",
        min_effect=ACC_EFFECT,
        why=ACC_GAIN_HEADS,
        models=BACKBONES + HEADS,
        resolution="accuracy difference",
        gates=ATTACKED,
    ),
    Claim(
        "near-end-to-end",
        "{objective}, view noise σ={noise:g}, task 'dense': the clean head on the {attack} backbone comes within 0.05 "
        "of the end-to-end FGM-trained model",
        ">",
        -0.05,
        min_effect=0.0,
        why="the tolerance 0.05 is the claim itself",
        models=BACKBONES[1:] + HEADS[1:] + ("end-to-end FGM-trained net",),
        resolution="accuracy difference",
        gates=ATTACKED,
    ),
    Claim(
        "purifies",
        "{objective}, view noise σ={noise:g}: {attack} contrastive pre-training purifies (purity rises over clean, "
        "which reaches {clean_purity:.2f})",
        min_effect=0.05,
        why="purity lies in [1/d, 1]; a rise below 0.05 would not change what a node detects",
        models=BACKBONES,
        gates=("above chance", "trained"),
    ),
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    seed_ids = np.asarray(seeds)
    tau = cfg.hp.tau
    dc = down_config(cfg, o, noise=0.0)
    lrs = np.asarray(o["down_lrs"], np.float32)
    thetas = downstream_tasks(cfg.data.n_features, np.asarray(task.w_star[0]))
    variants = ["clean", *o["attacks"]]
    noises = [float(v) for v in o["view_noises"]]
    out, failed = {}, []
    for objective in o["objectives"]:
        for attack in o["attacks"]:
            pcfg = contrastive_config(cfg, objective, attack)
            res = contrastive_backbones(ctx, pcfg, noises, attack == o["attacks"][0], seeds, task)
            failed += failed_runs(res, objective, attack)
            flagged, settled = res.flagged(), res.trained()
            for h, (noise, t) in enumerate(zip(res.hp["noise"], res.hp["tau"])):
                name = contrastive_name(objective, float(noise), "clean" if t == 0 else attack)
                bb = {k: v[None] for k, v in backbones(res, rows=h).items()}  # (1, S, ...)
                entry = {
                    "purity": weighted_purity(bb["W"][0], task.M).tolist(),
                    "time": res.coords["time"].tolist(),
                    "purity_trace": np.asarray(res["purity_nw"][h]).tolist(),
                    "loss_trace": np.asarray(res["loss"][h]).tolist(),
                    "flagged": flagged[h].tolist(),
                    "trained": settled[h].tolist(),
                }
                fits, _ = clean_heads(ctx, pcfg, dc, task, bb, seed_ids, thetas, lrs, audit=(0,))
                entry.update({tname: {k: v[0].tolist() for k, v in h.items()} for tname, h in fits.items()})
                out[name] = entry
    W_or = np.broadcast_to(oracle_backbone(task), (1, len(seed_ids)) + oracle_backbone(task).shape)
    fits, _ = clean_heads(ctx, cfg.set(**{"model.bias": "relative"}), dc, task, {"W": W_or}, seed_ids, thetas, lrs)
    oracle = {tname: {k: v[0].tolist() for k, v in h.items()} for tname, h in fits.items()}
    # the end-to-end reference: supervised FGM training on each task, with this experiment's batch and init
    e2e = end_to_end(ctx, cfg.set(**{"train.objective": "supervised", "train.attack": "fgm"}), task, thetas, seeds)
    statistics = []
    for objective in o["objectives"]:
        for noise in noises:
            clean = out[contrastive_name(objective, noise, "clean")]
            for attack in o["attacks"]:
                adv = out[contrastive_name(objective, noise, attack)]
                pair = np.asarray(adv["flagged"]) | np.asarray(clean["flagged"])
                settled = {"trained": np.asarray(adv["trained"]) & np.asarray(clean["trained"])}
                where = {"objective": objective, "noise": noise, "attack": attack.upper(), "tau": tau}
                for tname in ("dense", "sparse"):
                    gain = np.asarray(adv[tname]["robust"]) - np.asarray(clean[tname]["robust"])
                    collapsed = np.asarray(adv[tname]["collapsed"]) | np.asarray(clean[tname]["collapsed"])
                    gap = np.maximum(adv[tname]["attack_gap"], clean[tname]["attack_gap"])
                    gates = {**settled, "attack converged": gap}
                    statistics.append(
                        statistic("head-inherits", gain, flagged=pair | collapsed, gates=gates, task=tname, **where)
                    )
                e2e_gap = np.maximum(np.asarray(adv["dense"]["attack_gap"]), e2e["dense"]["attack_gap"])
                statistics.append(
                    statistic(
                        "near-end-to-end",
                        np.asarray(adv["dense"]["robust"]) - e2e["dense"]["robust"],
                        flagged=np.asarray(adv["flagged"]) | np.asarray(adv["dense"]["collapsed"]),
                        gates={
                            "trained": np.asarray(adv["trained"]) & e2e["dense"]["trained"],
                            "attack converged": e2e_gap,
                        },
                        **where,
                    )
                )
                statistics.append(
                    statistic(
                        "purifies",
                        np.asarray(adv["purity"]) - np.asarray(clean["purity"]),
                        flagged=pair,
                        gates=settled,
                        clean_purity=round(float(np.mean(clean["purity"])), 2),
                        **where,
                    )
                )
    return {
        "tau_eval": float(cfg.eval.taus[0]),
        "train_tau": tau,
        "objectives": list(o["objectives"]),
        "variants": variants,
        "view_noises": noises,
        "tasks": list(thetas),
        "backbones": out,
        "oracle": oracle,
        "end_to_end": {n: {k: v.tolist() for k, v in h.items()} for n, h in e2e.items()},
        "down_lrs": lrs.tolist(),
        "down": dc.__dict__ | {"taus": list(dc.taus)},
        "failed_runs": failed,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    objectives, variants, noises = record["objectives"], record["variants"], record["view_noises"]
    tau_e = record["tau_eval"]
    groups = [(ob, nz) for ob in objectives for nz in noises]
    colors = {"clean": "tab:blue", "fgm": "tab:red", "pgd": "tab:purple"}
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    w = 0.8 / len(variants)

    def bars(ax, get, ylabel):
        for vi, v in enumerate(variants):
            vals = [np.asarray(get(record["backbones"][contrastive_name(ob, nz, v)]), float) for ob, nz in groups]
            x = np.arange(len(groups)) + (vi - (len(variants) - 1) / 2) * w
            ax.bar(
                x,
                [a.mean() for a in vals],
                w,
                color=colors.get(v, "gray"),
                alpha=0.85,
                label=f"{'clean' if v == 'clean' else v.upper()} pre-training",
            )
            for xi, a in zip(x, vals):
                ax.plot([xi] * len(a), a, "k.", ms=3)
        ax.set_xticks(np.arange(len(groups)), [f"{ob}\nview noise σ={nz:g}" for ob, nz in groups], fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1)

    for ax, tname in ((axes[0, 0], "dense"), (axes[0, 1], "sparse")):
        bars(ax, lambda e, tname=tname: e[tname]["robust"], f"clean head's robust accuracy at ℓ2 τ={tau_e:g}")
        ax.axhline(
            np.mean(record["oracle"][tname]["robust"]),
            color="tab:green",
            ls="--",
            label="oracle pure features + clean head",
        )
        ax.axhline(
            np.mean(record["end_to_end"][tname]["robust"]),
            color="0.3",
            ls=":",
            lw=2,
            label="end-to-end FGM-trained on the task",
        )
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(
            f"({'a' if tname == 'dense' else 'b'}) clean linear heads, new {tname} task (dots: seeds)", fontsize=10
        )
    bars(axes[1, 0], lambda e: e["purity"], "backbone purity (norm-weighted)")
    axes[1, 0].legend(fontsize=8, loc="upper left")
    axes[1, 0].set_title("(c) purity reached by each pre-training", fontsize=10)
    ax = axes[1, 1]
    for ob, nz in groups:
        for v in variants:
            e = record["backbones"][contrastive_name(ob, nz, v)]
            band(
                ax,
                np.asarray(e["time"]),
                np.asarray(e["purity_trace"], float),
                label=f"{ob}, σ={nz:g}, {v}",
                color=colors.get(v, "gray"),
                ls="-" if ob == objectives[0] else "--",
                lw=2.5 if nz == noises[-1] else 1.2,
            )
    ax.axvline(record["config"]["train"]["adv_start"], color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("pre-training step (dotted: attack switched on)")
    ax.set_ylabel("backbone purity (norm-weighted)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("(d) purification during contrastive pre-training (thick: strong view noise)", fontsize=10)
    c = record["config"]
    fig.suptitle(
        "Robustness inheritance (contrastive): clean heads on adversarially vs clean contrastively pre-trained "
        "backbones\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, temperature "
        f"{c['train']['temperature']:g}, "
        f"τ={record['train_tau']:g}; {len(record['seeds'])} seeds, bands min–max",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = {
    "cpu": {
        "config": {**PRETRAIN_PRESETS["cpu"]["config"], **CONTRASTIVE},
        "seeds": 6,
        "options": {
            "objectives": ("infonce", "spectral"),
            "attacks": ("fgm",),
            "view_noises": CONTRASTIVE_VIEW_NOISES["cpu"],
            "n_down": 2048,
            "down_lrs": (0.003, 0.01, 0.03),
        },
    },
    "gpu": {
        "config": {**PRETRAIN_PRESETS["gpu"]["config"], **CONTRASTIVE},
        "seeds": 16,
        "options": {
            "objectives": ("infonce", "spectral"),
            "attacks": ("fgm", "pgd"),
            "view_noises": CONTRASTIVE_VIEW_NOISES["gpu"],
            "n_down": 8192,
            "down_lrs": (0.001, 0.003, 0.01, 0.03),
        },
    },
}

CONTROLS = {
    "train.objective": "exp.objectives lists the contrastive objectives (the end-to-end baseline is supervised)",
    "train.attack": "exp.attacks lists the pre-training attacks (the end-to-end baseline trains with FGM)",
    "hp.noise": "exp.view_noises lists the view noises",
}

EXPERIMENT = Experiment(
    id="inh-contrastive",
    claim="INH",
    title="Robustness inheritance after contrastive pre-training",
    summary="clean vs adversarial contrastive pre-training (InfoNCE and spectral loss, two view-noise levels) -> "
    "clean linear heads on new tasks",
    presets=with_test_preset(PRESETS, CONTROLS, {"view_noises": (0.5,), "n_down": 256}),
    run=run,
    controls=CONTROLS,
    derives={"model.bias": "the oracle's clean heads use relative thresholds"},
    plot=plot,
    claims=CLAIMS,
    options=(
        OBJECTIVES,
        Option(
            "attacks",
            str,
            ("fgm",),
            "attacks of adversarial pre-training (the first also gets a clean twin)",
            choices=("fgm", "pgd"),
            many=True,
        ),
        VIEW_NOISES,
        N_DOWN,
        DOWN_LRS,
    ),
)
