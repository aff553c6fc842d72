"""fp-principle [FP]: the purification principle, neuron by neuron.

From the clean weights w_i at the switch, FGM training continues to w'_i (the fp-dynamics
protocol, with weight snapshots at init, at the switch and at the end). Per neuron:
w_i = beta_i w'_i + v_i with beta_i = <w_i, w'_i>/|w'_i|^2; the principle says |beta_i w'_i| >
|v_i| for most neurons, and both w_i and w'_i are nearly uncorrelated with the init w_i^0. As a
control, the same decomposition against clean training continued for as long.

Tiny neurons that never grew keep their init direction; as docs/science.md section 3 asks, statistics
are norm-weighted (weights |w_i|), with the plain ones reported beside them.
"""

from __future__ import annotations

import numpy as np

from purify import make_task
from purify.claims import SET_AFTER_RESULTS, Claim, statistic
from purify.config import Config
from purify.experiment import Context, Experiment

from ._common import NETS, chance_runs, failed_runs, with_test_preset
from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS
from ._purification import RESIDUAL_SHARE, decompose, summarize

COS_LIMIT = 0.2  # the original "nearly uncorrelated": |cos| below this; under the finite-d floor at d = 64
# "Nearly uncorrelated" at finite d: a neuron that grew along the feature where its random init
# was largest keeps cos(w, w0) ~ that coordinate's share of the init, sqrt(2 ln d / d) (0.36 at
# d = 64), however purely it grew; the claim is that the weights sit within COS_EXCESS of it.
COS_EXCESS = 0.1
# The removed part v_i is the dense mixture when it points along M w* more than a random
# direction does: by DENSE_ALIGNMENT in norm-weighted mean |cos|.
DENSE_ALIGNMENT = 0.1

GATES = ("above chance", "trained")
COS_WHY = f"the bound {COS_LIMIT} is the claim; its finite-d floor sqrt(2 ln d / d) is reported beside it"
FLOOR_WHY = (
    f"{COS_EXCESS:g} above the floor sqrt(2 ln d / d) is a third of the floor itself (0.36 at d = 64): a "
    "neuron that kept that much more of its init than the top-feature share did not grow away from it"
)
# The original rule (fixed before the first run): most neurons obey |beta w'| > |v|. It is the
# same as |cos(w, w')| > 1/sqrt(2), which continued clean training (the control) passes better
# than FGM does, so it cannot tell purification from more training. `fgm-splits` replaced it,
# set against the control paired by seed after the control was seen to pass.
CLAIMS = (
    Claim(
        "fgm-splits",
        f"FGM, not continued clean training, splits neurons into |beta_i w'_i| > |v_i| with a removed part "
        f"|v_i| >= {RESIDUAL_SHARE:g} |w_i| (norm-weighted fraction, FGM - clean control, paired by seed)",
        min_effect=0.25,
        why="a quarter of the weight norm moving to split neurons; less would be a few neurons, not a principle",
        models=NETS,
        gates=GATES,
        chosen_after=SET_AFTER_RESULTS
        + "; the rule itself was set after the control was seen to pass the original rule (1.000 vs 0.981)",
        replaces="most-obey",
    ),
    Claim(
        "most-obey",
        "most neurons obey |beta_i w'_i| > |v_i| (norm-weighted fraction > 0.5)",
        ">",
        0.5,
        min_effect=0.0,
        why="the original rule: a majority of neurons",
        models=NETS[1:],
        gates=GATES,
    ),
    Claim(
        "clean-uncorrelated",
        f"clean weights nearly uncorrelated with init (norm-weighted mean |cos(w, w0)| < {COS_LIMIT})",
        "<",
        COS_LIMIT,
        min_effect=0.0,
        why=COS_WHY,
        models=("clean weights at the switch",),
        gates=GATES,
    ),
    Claim(
        "clean-near-floor",
        "clean weights as uncorrelated with init as the finite-d floor allows: norm-weighted mean |cos(w, w0)| "
        f"- sqrt(2 ln d / d) < {COS_EXCESS:g}",
        "<",
        COS_EXCESS,
        min_effect=0.0,
        why=FLOOR_WHY,
        models=("clean weights at the switch",),
        gates=GATES,
        replaces="clean-uncorrelated",
    ),
    Claim(
        "adv-near-floor",
        "adversarial weights as uncorrelated with init as the finite-d floor allows: norm-weighted mean "
        f"|cos(w', w0)| - sqrt(2 ln d / d) < {COS_EXCESS:g}",
        "<",
        COS_EXCESS,
        min_effect=0.0,
        why=FLOOR_WHY,
        models=NETS[1:],
        gates=GATES,
        replaces="adv-uncorrelated",
    ),
    Claim(
        "removed-is-dense",
        "the removed part v_i is the dense mixture: norm-weighted mean |cos(v_i, M w*)| minus the same for a "
        "random direction, FGM (paired by seed)",
        ">",
        0.0,
        min_effect=DENSE_ALIGNMENT,
        why="a random direction in d = 64 has |cos| ~ 0.1 with any v; ten points more is alignment a reader sees, "
        "less is noise around a random split",
        models=NETS,
        gates=GATES,
    ),
    Claim(
        "adv-uncorrelated",
        f"adversarial weights nearly uncorrelated with init (norm-weighted mean |cos(w', w0)| < {COS_LIMIT})",
        "<",
        COS_LIMIT,
        min_effect=0.0,
        why=COS_WHY,
        models=NETS[1:],
        gates=GATES,
    ),
)


def dense_alignment(W_clean, W_adv, beta, cfg: Config, seeds) -> dict[str, np.ndarray]:
    """Per seed (S,): the norm-weighted (by |v_i|) mean |cos(v_i, M w*)| of the removed parts
    v_i = w_i - beta_i w'_i, and the same for a random unit direction drawn from the seed."""
    u = np.asarray(make_task(cfg.data).label_directions[0], np.float64)
    V = np.asarray(W_clean, np.float64) - np.asarray(beta)[..., None] * np.asarray(W_adv, np.float64)
    norms = np.linalg.norm(V, axis=-1)
    weight = norms / np.maximum(norms.sum(-1, keepdims=True), 1e-30)
    out = {"label": [], "random": []}
    for s, (v, n, w) in enumerate(zip(V, norms, weight)):
        r = np.random.default_rng([int(seeds[s]), 7]).standard_normal(cfg.data.d)
        for name, direction in (("label", u), ("random", r / np.linalg.norm(r))):
            out[name].append(float((w * np.abs(v @ direction) / np.maximum(n, 1e-30)).sum()))
    return {k: np.asarray(v) for k, v in out.items()}


def run(cfg: Config, seeds, ctx: Context) -> dict:
    a, n = cfg.train.adv_start, cfg.train.steps
    cfg = cfg.set(**{"train.snapshot_at": (0, a, n)})
    res = ctx.sweep(cfg, grid={"tau": [0.0, cfg.hp.tau]}, seeds=seeds)
    snaps = res["snapshots"]  # (hparam, seed, snapshot, neuron, input)
    W_init, W_clean = snaps[1, :, 0], snaps[1, :, 1]
    adv = decompose(W_init, W_clean, snaps[1, :, 2])
    control = decompose(W_init, W_clean, snaps[0, :, 2])
    weight = np.linalg.norm(W_clean, axis=-1)
    s_adv, s_ctl = summarize(adv, weight), summarize(control, weight)
    flagged = res.flagged()
    pair = flagged[0] | flagged[1]
    # The original rule (fixed before the first run): most neurons obey |beta w'| > |v|. It is
    # the same as |cos(w, w')| > 1/sqrt(2), which continued clean training (the control) passes
    # better than FGM does, so it cannot tell purification from more training. The rule below
    # was set afterwards, against the control paired by seed: post hoc.
    trained = res.trained()
    both = {"trained": trained[0] & trained[1]}
    floor = float(np.sqrt(2 * np.log(cfg.data.d) / cfg.data.d))
    dense = dense_alignment(W_clean, snaps[1, :, 2], adv["beta"], cfg, seeds)
    statistics = [
        statistic("most-obey", s_adv["holds_fraction_nw"], flagged=flagged[1], gates={"trained": trained[1]}),
        statistic("fgm-splits", s_adv["split_fraction_nw"] - s_ctl["split_fraction_nw"], flagged=pair, gates=both),
        statistic("clean-uncorrelated", s_adv["abs_cos_clean_init_nw"], flagged=flagged[1], gates=both),
        statistic("adv-uncorrelated", s_adv["abs_cos_adv_init_nw"], flagged=flagged[1], gates=both),
        statistic("clean-near-floor", s_adv["abs_cos_clean_init_nw"] - floor, flagged=flagged[1], gates=both),
        statistic("adv-near-floor", s_adv["abs_cos_adv_init_nw"] - floor, flagged=flagged[1], gates=both),
        statistic("removed-is-dense", dense["label"] - dense["random"], flagged=pair, gates=both),
    ]
    ratio = np.log10(np.maximum(adv["along_norm"], 1e-30) / np.maximum(adv["residual_norm"], 1e-30))
    return {
        "config": cfg.to_dict(),  # as run: with the snapshots this experiment adds
        "adv_start": a,
        "steps": n,
        "train_tau": cfg.hp.tau,
        "cos_limit": COS_LIMIT,
        "residual_share": RESIDUAL_SHARE,
        # a neuron that grew along the feature where its random init was largest keeps
        # cos(w, w0) ~ that coordinate's share of the init, ~sqrt(2 ln d / d): the finite-d floor
        "reference_cos_top_feature": floor,
        "cos_excess": COS_EXCESS,
        # per seed: norm-weighted mean |cos(v_i, M w*)| and the same for a random unit direction
        "removed_alignment": {k: v.tolist() for k, v in dense.items()},
        "per_seed": {
            "adversarial": {k: v.tolist() for k, v in s_adv.items()},
            "control_clean": {k: v.tolist() for k, v in s_ctl.items()},
        },
        "neurons": {
            "log10_along_over_residual": ratio.tolist(),
            "beta": adv["beta"].tolist(),
            "cos_clean_init": adv["cos_clean_init"].tolist(),
            "cos_adv_init": adv["cos_adv_init"].tolist(),
            "clean_norm": weight.tolist(),
        },
        "failed_runs": failed_runs(res),
        "chance_runs": chance_runs(res),
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    nr = record["neurons"]
    weight = np.asarray(nr["clean_norm"]).ravel()
    dense = record.get("removed_alignment")
    fig, axes = plt.subplots(1, 4 if dense else 3, figsize=(18 if dense else 14, 4.2))
    ax = axes[0]
    ratio = np.asarray(nr["log10_along_over_residual"]).ravel()
    ax.hist(ratio, bins=40, weights=weight / weight.sum(), color="tab:red", alpha=0.8)
    ax.axvline(0, color="k", lw=1, ls="--", label="|β w'| = |v|")
    ax.set_xlabel("log10 ( |β_i w'_i| / |v_i| )")
    ax.set_ylabel("fraction of neurons (weighted by |w_i|)")
    pa = record["per_seed"]["adversarial"]
    pc = record["per_seed"]["control_clean"]
    title = f"|β w'| > |v|: {100 * np.mean(pa['holds_fraction_nw']):.0f}% of norm"
    if "split_fraction_nw" in pa:
        title += (
            f"\nalso |v| ≥ {record['residual_share']:g}|w|: {100 * np.mean(pa['split_fraction_nw']):.0f}% (FGM) vs "
            f"{100 * np.mean(pc['split_fraction_nw']):.0f}% (clean control)"
        )
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.hist(np.asarray(nr["beta"]).ravel(), bins=40, weights=weight / weight.sum(), color="tab:purple", alpha=0.8)
    ax.set_xlabel("β_i = ⟨w_i, w'_i⟩ / |w'_i|²")
    ax.set_ylabel("fraction of neurons (weighted by |w_i|)")
    ax.set_title("scale of the adversarial weight inside the clean one", fontsize=10)
    ax = axes[2]
    bins = np.linspace(-1, 1, 41)
    ax.hist(
        np.asarray(nr["cos_clean_init"]).ravel(),
        bins=bins,
        weights=weight / weight.sum(),
        alpha=0.6,
        label="clean w_i vs init",
    )
    ax.hist(
        np.asarray(nr["cos_adv_init"]).ravel(),
        bins=bins,
        weights=weight / weight.sum(),
        alpha=0.6,
        label="adversarial w'_i vs init",
    )
    if "cos_excess" in record:
        floor, lim = record["reference_cos_top_feature"], record["reference_cos_top_feature"] + record["cos_excess"]
        ax.axvspan(-lim, lim, color="0.9", zorder=0, label=f"|cos| < floor + {record['cos_excess']:g} (the claim)")
        for x in (-floor, floor):
            ax.axvline(x, color="0.4", lw=0.9, ls="--", label="finite-d floor √(2 ln d / d)" if x > 0 else None)
    else:
        lim = record["cos_limit"]
        ax.axvspan(-lim, lim, color="0.9", zorder=0, label=f"|cos| < {lim} (the claim)")
    ax.set_xlabel("cos(w, w⁰)")
    ax.set_ylabel("fraction of neurons (weighted by |w_i|)")
    ax.set_title(
        f"correlation with init: mean |cos| {np.mean(pa['abs_cos_clean_init_nw']):.2f} (clean), "
        f"{np.mean(pa['abs_cos_adv_init_nw']):.2f} (adv.)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    if dense:
        ax = axes[3]
        for x, (name, label) in enumerate((("label", "M w* (the dense mixture)"), ("random", "a random direction"))):
            values = np.asarray(dense[name])
            ax.scatter(np.full(len(values), x), values, color=("tab:red", "0.4")[x], zorder=3)
            ax.hlines(values.mean(), x - 0.25, x + 0.25, color="k", lw=1.5)
        ax.set_xticks([0, 1], ["M w* (the dense\nmixture)", "a random\ndirection"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean |cos(v_i, ·)|, weighted by |v_i|")
        ax.set_title("is the removed part v_i the dense mixture?\none point per seed, line: mean", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    c = record["config"]
    by_id = {v.get("claim_id"): v["verdict"] for v in record["verdicts"]}
    clean_init = by_id.get("clean-near-floor", by_id.get("clean-uncorrelated"))
    adv_init = by_id.get("adv-near-floor", by_id.get("adv-uncorrelated"))
    init_note = {"holds": "both as far from init as d allows", "opposite": "but both stay correlated with init"}.get(
        clean_init if clean_init == adv_init else "", "correlation with init unclear"
    )
    fig.suptitle(
        "Purification principle: clean weight = β · adversarial weight + a smaller dense part, per neuron; "
        + init_note
        + "\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}; FGM τ={record['train_tau']:g} from "
        f"step {record['adv_start']} "
        f"to {record['steps']}; all neurons of {len(record['seeds'])} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


CONTROLS = {"train.snapshot_at": "the experiment snapshots W at 0, the switch and the end to split the update"}

EXPERIMENT = Experiment(
    id="fp-principle",
    claim="FP",
    title="The purification principle per neuron: beta/v decomposition and correlation with init",
    summary="beta/v decomposition of clean vs FGM-continued weights; correlations with init; per-neuron histograms",
    presets=with_test_preset({k: dict(v) for k, v in DYNAMICS_PRESETS.items()}, CONTROLS),
    run=run,
    controls=CONTROLS,
    plot=plot,
    claims=CLAIMS,
    # round 1: the floor-relative and dense-mixture claims were declared after round 0's seeds were seen
    confirmation_round=1,
)
