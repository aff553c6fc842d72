"""inh-supervised [INH]: does a clean linear head on an adversarially pre-trained backbone inherit robustness?

Backbones: the fp-dynamics protocol (clean, then FGM) at several pre-training radii (0 is
clean pre-training), cut at several lengths of the adversarial phase (weight snapshots), plus a
multi-task backbone (T tasks, trained multi-output head, every task in the loss) and a backbone
with trainable thresholds. Downstream: a *clean* logistic-regression head on the frozen
representation, learning rate chosen on a validation split by clean accuracy, for three new
tasks: a dense theta, a sparse theta (half the features) and the pre-training task itself.
Next to it: the oracle pure-feature representation with the same clean head, and an
end-to-end model adversarially trained on each downstream task (the same protocol).
Robustness is always measured end to end on the input (min over FGM, PGD, dense attack).
"""

from __future__ import annotations

import numpy as np

from purify import make_task
from purify.claims import SET_AFTER_RESULTS, Claim, statistic
from purify.config import Config
from purify.downstream import backbones, bayes_accuracy, downstream_tasks
from purify.experiment import Context, Experiment, Option
from purify.plotting import band
from purify.stats import accuracy_resolution, verdict

from ._common import (
    ACC_EFFECT,
    ACC_GAIN_HEADS,
    DOWN_LRS,
    N_DOWN,
    PRETRAIN_PRESETS,
    chance_runs,
    clean_heads,
    down_config,
    end_to_end,
    failed_runs,
    oracle_backbone,
    snapshot_steps,
    weighted_purity,
    with_test_preset,
)


def final_clean_accuracy(res) -> np.ndarray:
    """(hparam, seed) clean accuracy of the pre-trained networks at the last log step, averaged over tasks."""
    dims = list(res.dims["clean_acc"])
    a = np.take(np.asarray(res["clean_acc"]), -1, axis=dims.index("time"))
    dims.remove("time")
    return a.mean(axis=dims.index("task")) if "task" in dims else a


HEADS = ("clean linear head on the clean backbone", "clean linear head on the FGM backbone")
GATES = ("above chance", "trained", "attack converged")
CLAIMS = (
    Claim(
        "head-inherits",
        "task '{task}': a clean head on the FGM(τ={tau:g}) backbone is more robust than on the clean backbone",
        min_effect=ACC_EFFECT,
        why=ACC_GAIN_HEADS,
        models=("clean-trained backbone", "FGM-trained backbone") + HEADS,
        resolution="accuracy difference",
        gates=GATES,
    ),
    Claim(
        "near-end-to-end",
        "task 'dense': the clean head on the FGM backbone comes within 0.05 of the end-to-end adversarially trained "
        "model",
        ">",
        -0.05,
        min_effect=0.0,
        why="the tolerance 0.05 is the claim itself",
        models=("FGM-trained backbone", HEADS[1], "end-to-end FGM-trained net"),
        resolution="accuracy difference",
        gates=GATES,
    ),
    Claim(
        "variant-inherits",
        "{variant} pre-training: FGM backbone's clean head more robust than clean backbone's (task 'dense')",
        min_effect=ACC_EFFECT,
        why=ACC_GAIN_HEADS,
        models=("multi-task or trainable-threshold backbone, clean and FGM",) + HEADS,
        resolution="accuracy difference",
        gates=GATES,
    ),
    Claim(
        "purity-correlation",
        "inherited robustness rises with backbone purity (per-seed correlation over the {rows} x {cols} cells with "
        "adversarial pre-training); gain holds at {holds}/{cells} cells",
        min_effect=0.3,
        why="a correlation below 0.3 explains less than a tenth of the variance across cells",
        models=("FGM-trained backbones at every radius and length",) + HEADS,
        chosen_after=SET_AFTER_RESULTS
        + "; the rule itself replaced one that correlated over cells of which 7 of 16 are the same clean network",
        replaces="purity-correlation-all",
        gates=("above chance", "trained"),
    ),
    Claim(
        "purity-correlation-all",
        "inherited robustness rises with backbone purity (per-seed correlation over all radii x lengths)",
        min_effect=0.0,
        why="the original rule: a positive correlation",
        models=("backbones at every radius and length",) + HEADS,
        gates=("above chance", "trained"),
    ),
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    seed_ids = np.asarray(seeds)
    tau = cfg.hp.tau
    pre_taus = sorted({0.0, tau, *o["pre_taus"]})
    fractions = tuple(o["adv_fractions"])
    snaps = snapshot_steps(cfg, (0.0, *fractions))
    lrs = np.asarray(o["down_lrs"], np.float32)
    dc = down_config(cfg, o)
    thetas = downstream_tasks(cfg.data.n_features, np.asarray(task.w_star[0]))
    failed = []  # [backbone, hparam row, seed] of every pre-training run that went non-finite or diverged

    # -- pre-training --------------------------------------------------------------------------
    snap_cfg = cfg.set(**{"train.snapshot_at": snaps})
    single = ctx.sweep(snap_cfg, grid={"tau": pre_taus}, seeds=seeds, task=task)
    failed += failed_runs(single, "single-task")
    T = int(o["n_tasks"])
    multi_cfg = cfg.set(**{"data.n_tasks": T, "model.head": "trained"})
    multi = ctx.sweep(multi_cfg, grid={"tau": [0.0, tau]}, seeds=seeds)
    failed += failed_runs(multi, "multi-task")
    bias_cfg = cfg.set(**{"model.bias": "trainable"})
    trainable = ctx.sweep(bias_cfg, grid={"tau": [0.0, tau]}, seeds=seeds, task=task)
    failed += failed_runs(trainable, "trainable-bias")

    # -- clean heads ---------------------------------------------------------------------------
    Wsnap = single["snapshots"]  # (H, S, n_snap, m, d); the last snapshot is the final weights
    H, S, n_snap = Wsnap.shape[:3]
    grid_W = np.moveaxis(Wsnap, 2, 1).reshape(H * n_snap, S, *Wsnap.shape[3:])
    purity = weighted_purity(grid_W, task.M).reshape(H, n_snap, S)
    i_clean, i_adv = pre_taus.index(0.0), pre_taus.index(tau)
    # the backbones are the pre-trained networks as saved (a trainable-threshold network keeps its
    # trained thresholds); backbones of one architecture share a flat program
    variant_runs = (("multi-task", multi), ("trainable bias", trainable))
    relative = np.concatenate([grid_W, multi["W_final"]])
    G = H * n_snap
    # the heads a verdict reads: on the final clean and FGM(hp.tau) backbones and on the multi-task ones
    audited = (i_clean * n_snap + n_snap - 1, i_adv * n_snap + n_snap - 1, G, G + 1)
    fits, n_bad = clean_heads(ctx, cfg, dc, task, {"W": relative}, seed_ids, thetas, lrs, audit=audited)
    fits_tb, n_bad_tb = clean_heads(
        ctx,
        bias_cfg,
        dc,
        task,
        {k: v.reshape((2, S) + v.shape[1:]) for k, v in backbones(trainable).items()},
        seed_ids,
        thetas,
        lrs,
        audit=(0, 1),
    )
    fits = {name: {k: np.concatenate([v, fits_tb[name][k]]) for k, v in h.items()} for name, h in fits.items()}
    n_bad += n_bad_tb
    heads = {name: {k: v[:G].reshape(H, n_snap, S) for k, v in h.items()} for name, h in fits.items()}
    variants = {}
    for i, (label, res) in enumerate(variant_runs):
        rows = slice(G + 2 * i, G + 2 * i + 2)
        variants[label] = {
            "robust": fits["dense"]["robust"][rows],
            "clean": fits["dense"]["clean"][rows],
            "other_tasks": {n: {k: v[rows] for k, v in h.items()} for n, h in fits.items() if n != "dense"},
            "purity": weighted_purity(res["W_final"], task.M),
            "pretrain_clean_acc": final_clean_accuracy(res),
            "flagged": res.flagged(),
            "trained": res.trained(),
            "head_collapsed": fits["dense"]["collapsed"][rows],
            "head_attack_gap": fits["dense"]["attack_gap"][rows],
        }
    W_or = np.broadcast_to(oracle_backbone(task), (1, S) + oracle_backbone(task).shape)
    fits, _ = clean_heads(ctx, cfg, dc, task, {"W": W_or}, seed_ids, thetas, lrs)
    oracle = {name: {k: v[0] for k, v in h.items()} for name, h in fits.items()}

    # -- end-to-end adversarial training on each downstream task --------------------------------
    e2e = end_to_end(ctx, snap_cfg, task, thetas, seeds)  # snap_cfg: the single-task program, compiled once

    # -- statistics ----------------------------------------------------------------------------
    last = n_snap - 1
    flag = single.flagged()  # (H, S): failed, diverged or at chance
    pair = flag[i_adv] | flag[i_clean]
    settled = single.trained()
    trained = settled[i_adv] & settled[i_clean]
    statistics = []
    for name in thetas:
        h = heads[name]
        gain = h["robust"][i_adv, last] - h["robust"][i_clean, last]
        collapsed = h["collapsed"][i_adv, last] | h["collapsed"][i_clean, last]
        gates = {
            "trained": trained,
            "attack converged": np.maximum(h["attack_gap"][i_adv, last], h["attack_gap"][i_clean, last]),
        }
        statistics.append(statistic("head-inherits", gain, flagged=pair | collapsed, gates=gates, task=name, tau=tau))
    gap = heads["dense"]["robust"][i_adv, last] - e2e["dense"]["robust"]
    statistics.append(
        statistic(
            "near-end-to-end",
            gap,
            flagged=flag[i_adv] | heads["dense"]["collapsed"][i_adv, last],
            gates={
                "trained": settled[i_adv] & e2e["dense"]["trained"],
                "attack converged": np.maximum(heads["dense"]["attack_gap"][i_adv, last], e2e["dense"]["attack_gap"]),
            },
        )
    )
    for label, v in variants.items():
        settled_v = v["trained"]
        statistics.append(
            statistic(
                "variant-inherits",
                v["robust"][1] - v["robust"][0],
                flagged=v["flagged"][0] | v["flagged"][1] | v["head_collapsed"][0] | v["head_collapsed"][1],
                gates={"trained": settled_v[0] & settled_v[1], "attack converged": v["head_attack_gap"].max(0)},
                variant=label,
            )
        )
    # where inheritance holds, descriptively (no claim): per (pre-training radius, adversarial
    # length) cell, the gain over the clean backbone decided as head-inherits would decide it
    acc = {"min_effect": ACC_EFFECT, "why": ACC_GAIN_HEADS, "resolution": accuracy_resolution(cfg.eval.n_eval, 2)}
    base = heads["dense"]["robust"][i_clean, last]
    cell = {}
    for i, t in enumerate(pre_taus):
        for j, step in enumerate(snaps):
            v = verdict(heads["dense"]["robust"][i, j] - base, ">", 0.0, "", flagged=flag[i] | flag[i_clean], **acc)
            cell[f"{t:g}@{step}"] = {"verdict": v["verdict"], "mean": v["mean"], "purity": float(purity[i, j].mean())}
    holds = [k for k, v in cell.items() if v["verdict"] == "holds"]

    def correlation(rows, cols):
        out = []
        for s in range(S):
            p = purity[np.ix_(rows, cols, [s])].ravel()
            r = heads["dense"]["robust"][np.ix_(rows, cols, [s])].ravel()
            out.append(np.corrcoef(p, r)[0, 1] if not flag[rows, s].any() else np.nan)
        return np.asarray(out)

    every = np.arange(len(pre_taus))
    # the cells that vary: an adversarial radius and some adversarial training (the tau = 0 row and
    # the snapshot at the switch are all the same clean network, which makes a correlation easy)
    adv_rows = np.asarray([i for i, t in enumerate(pre_taus) if t > 0])
    adv_cols = np.asarray([j for j, step in enumerate(snaps) if step > cfg.train.adv_start])
    corr_key = "correlation"  # the original rule's instance and its successor's, whose texts differ
    every_settled = {"trained": settled.all(0)}  # the backbones of every radius settled
    statistics.append(
        statistic(
            "purity-correlation-all",
            correlation(every, np.arange(n_snap)),
            pair_key=corr_key,
            gates=every_settled,
        )
    )
    statistics.append(
        statistic(
            "purity-correlation",
            correlation(adv_rows, adv_cols),
            pair_key=corr_key,
            gates={"trained": settled[adv_rows].all(0)},
            rows=len(adv_rows),
            cols=len(adv_cols),
            holds=len(holds),
            cells=len(cell),
        )
    )
    return {
        "tau_eval": float(cfg.eval.taus[0]),
        "train_tau": tau,
        "pre_taus": pre_taus,
        "snapshot_steps": list(snaps),
        "adv_start": cfg.train.adv_start,
        "tasks": list(thetas),
        "bayes_accuracy": {n: bayes_accuracy(cfg.data, t) for n, t in thetas.items()}
        if cfg.data.magnitude == "uniform" and cfg.data.sparsity == "exact_k"
        else None,
        "down_lrs": lrs.tolist(),
        "down": dc.__dict__ | {"taus": list(dc.taus)},
        "purity": purity.tolist(),
        "heads": {n: {k: np.asarray(v).tolist() for k, v in h.items()} for n, h in heads.items()},
        "oracle": {n: {k: v.tolist() for k, v in h.items()} for n, h in oracle.items()},
        "end_to_end": {n: {k: v.tolist() for k, v in h.items()} for n, h in e2e.items()},
        "variants": {
            n: {
                k: (
                    v.tolist()
                    if k != "other_tasks"
                    else {t: {a: b.tolist() for a, b in r.items()} for t, r in v.items()}
                )
                for k, v in h.items()
            }
            for n, h in variants.items()
        },
        "inheritance_map": cell,
        "failed_runs": failed,
        "chance_runs": chance_runs(single, "single-task")
        + [run for label, r in variant_runs for run in chance_runs(r, label)],
        "n_failed_downstream": n_bad,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    tau_e, tau = record["tau_eval"], record["train_tau"]
    pre_taus, snaps = record["pre_taus"], record["snapshot_steps"]
    i_clean, i_adv = pre_taus.index(0.0), pre_taus.index(tau)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    ax = axes[0, 0]
    tasks = record["tasks"]
    bars = [
        ("clean backbone + clean head", lambda n: record["heads"][n]["robust"][i_clean][-1], "tab:blue"),
        (f"FGM backbone (τ={tau:g}) + clean head", lambda n: record["heads"][n]["robust"][i_adv][-1], "tab:red"),
        ("oracle pure features + clean head", lambda n: record["oracle"][n]["robust"], "tab:green"),
        ("end-to-end FGM-trained on the task", lambda n: record["end_to_end"][n]["robust"], "tab:gray"),
    ]
    w = 0.2
    for b, (label, get, color) in enumerate(bars):
        vals = [np.asarray(get(n), float) for n in tasks]
        x = np.arange(len(tasks)) + (b - 1.5) * w
        ax.bar(x, [v.mean() for v in vals], w, color=color, label=label, alpha=0.85)
        for xi, v in zip(x, vals):
            ax.plot([xi] * len(v), v, "k.", ms=3)
    ax.set_xticks(np.arange(len(tasks)), [f"task '{n}'" for n in tasks])
    ax.set_ylabel(f"robust accuracy at ℓ2 τ={tau_e:g}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("(a) clean heads on three downstream tasks (dots: seeds)", fontsize=10)

    ax = axes[0, 1]
    rob = np.asarray(record["heads"]["dense"]["robust"], float)  # (H, n_snap, S)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(snaps)))
    for j, step in enumerate(snaps):
        band(
            ax,
            np.asarray(pre_taus),
            rob[:, j].T,
            label=f"{step - record['adv_start']} adversarial steps",
            color=colors[j],
        )
    ax.set_xlabel("pre-training radius τ_pre (0 = clean pre-training)")
    ax.set_ylabel(f"clean head's robust accuracy at τ={tau_e:g} (task 'dense')")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("(b) where inheritance holds: pre-training radius × length of the adversarial phase", fontsize=10)

    ax = axes[1, 0]
    pur = np.asarray(record["purity"], float)
    sc = None
    for i, t in enumerate(pre_taus):
        sc = ax.scatter(
            pur[i].ravel(), rob[i].ravel(), c=[t] * pur[i].size, vmin=0, vmax=max(pre_taus), cmap="plasma", s=14
        )
    for label, v in record["variants"].items():
        ax.scatter(
            v["purity"],
            v["robust"],
            marker="x" if label == "multi-task" else "+",
            s=40,
            color="k",
            label=f"{label} (clean and FGM)",
        )
    fig.colorbar(sc, ax=ax, label="pre-training radius τ_pre")
    ax.set_xlabel("backbone purity (norm-weighted mean of max_j c_ij² / |w_i|²)")
    ax.set_ylabel(f"clean head's robust accuracy at τ={tau_e:g} (task 'dense')")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("(c) inherited robustness against purity reached (every backbone, every seed)", fontsize=10)

    ax = axes[1, 1]
    labels, vals, cleans, collapsed = [], [], [], [0, 0]
    for label, v in record["variants"].items():
        labels += [f"{label}\nclean", f"{label}\nFGM"]
        vals += [np.asarray(v["robust"][0], float), np.asarray(v["robust"][1], float)]
        cleans += [np.mean(v["clean"][0]), np.mean(v["clean"][1])]
        collapsed += [int(np.sum(c)) for c in v.get("head_collapsed", [[], []])]
    labels = ["single-task\nclean", "single-task\nFGM", *labels]
    vals = [rob[i_clean, -1], rob[i_adv, -1], *vals]
    cl = np.asarray(record["heads"]["dense"]["clean"], float)
    cleans = [cl[i_clean, -1].mean(), cl[i_adv, -1].mean(), *cleans]
    ax.bar(np.arange(len(vals)), [v.mean() for v in vals], color=["tab:blue", "tab:red"] * (len(vals) // 2), alpha=0.85)
    for i, v in enumerate(vals):
        ax.plot([i] * len(v), v, "k.", ms=3)
        note = f"\n{collapsed[i]}/{len(v)} collapsed\n(clean < 0.75)" if collapsed[i] else ""
        ax.text(i, max(v) + 0.02, f"clean acc\n{cleans[i]:.2f}{note}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(vals)), labels, fontsize=8)
    ax.set_ylabel(f"clean head's robust accuracy at τ={tau_e:g} (task 'dense')")
    ax.set_ylim(0, 1)
    ax.set_title("(d) pre-training variants: multi-task head, trainable thresholds", fontsize=10)
    c = record["config"]
    fig.suptitle(
        "Robustness inheritance (supervised): a clean linear head on an adversarially pre-trained backbone is robust\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, {len(record['seeds'])} seeds, "
        f"{record['down']['n_max']} downstream samples",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = {
    "cpu": {
        **PRETRAIN_PRESETS["cpu"],
        "seeds": 6,
        "options": {
            "pre_taus": (0.125, 0.375),
            "adv_fractions": (0.125, 0.5, 1.0),
            "n_tasks": 3,
            "n_down": 2048,
            "down_lrs": (0.003, 0.01, 0.03),
        },
    },
    "gpu": {
        **PRETRAIN_PRESETS["gpu"],
        "seeds": 16,
        "options": {
            "pre_taus": (0.06, 0.12, 0.25, 0.35),
            "adv_fractions": (0.05, 0.1, 0.25, 0.5, 1.0),
            "n_tasks": 4,
            "n_down": 8192,
            "down_lrs": (0.001, 0.003, 0.01, 0.03),
        },
    },
}

OPTIONS = (
    Option("pre_taus", float, (0.125, 0.375), "further pre-training radii (besides 0 and hp.tau)", lo=0.0, many=True),
    Option(
        "adv_fractions",
        float,
        (0.125, 0.5, 1.0),
        "cuts of the adversarial phase, as fractions of its length",
        lo=0.0,
        hi=1.0,
        many=True,
    ),
    Option("n_tasks", int, 3, "tasks of the multi-task backbone", lo=2),
    N_DOWN,
    DOWN_LRS,
)


CONTROLS = {
    "data.n_tasks": "exp.n_tasks sets the multi-task backbone's task count (the others have one)",
    "model.head": "the multi-task backbone has a trained head, the single-task ones the fixed head",
    "model.bias": "the trainable-threshold backbone is one of the experiment's backbones, beside relative thresholds",
    "train.snapshot_at": "the experiment snapshots W at each exp.adv_fractions point",
}

EXPERIMENT = Experiment(
    id="inh-supervised",
    claim="INH",
    title="Robustness inheritance after supervised pre-training",
    summary="clean vs adversarial supervised pre-training (single, multi-task, trainable bias) -> clean linear "
    "heads on new tasks",
    presets=with_test_preset(PRESETS, CONTROLS, {"adv_fractions": (0.5, 1.0), "n_tasks": 2, "n_down": 256}),
    run=run,
    controls=CONTROLS,
    plot=plot,
    options=OPTIONS,
    claims=CLAIMS,
)
