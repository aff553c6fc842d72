"""fp-lowrank [FP]: is what adversarial training changes low-rank, and along the label direction?

Part 1: the singular values of W_adv - W_clean (FGM phase minus the clean weights at the switch),
beside those of the same span of clean training, and the alignment of the top right singular
vectors (in feature space, Delta M) with the label direction w*/|w*| (random: ~1/sqrt(d)).
Part 2: adversarial training restricted to a rank-r update W + U V (r = 1, 2, 4, 8), from the same
clean weights and seeds, and the fraction of the full-rank robust-accuracy gain each rank recovers.
"""

from __future__ import annotations

import numpy as np

from purify import Results, make_task
from purify.claims import Claim, statistic
from purify.config import Config, ConfigError
from purify.evaluate import network_curves, reference_gaps
from purify.experiment import Context, Experiment, Option
from purify.plotting import band

from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS
from ._common import chance_runs, failed_runs, with_test_preset

TOP = 5  # singular directions whose label alignment is reported

TRAINED = ("above chance", "trained")
CLAIMS = (
    Claim(
        "label-aligned",
        "the top singular direction of W_adv - W_clean aligns with the label direction (|cos| > 0.5; random ~ "
        "1/sqrt(d))",
        ">",
        0.5,
        min_effect=0.0,
        why="the bound 0.5 (60 degrees), far above random alignment 1/sqrt(d), is the claim itself",
        models=("FGM-trained net", "clean weights at the switch"),
        gates=TRAINED,
    ),
    Claim(
        "one-direction",
        "W_adv - W_clean is dominated by one direction (top singular value's share of the squared spectrum > 0.5)",
        ">",
        0.5,
        min_effect=0.0,
        why="the claim is a majority of the squared spectrum",
        models=("FGM-trained net", "clean weights at the switch"),
        gates=TRAINED,
    ),
    Claim(
        "rank-recovers",
        "rank-{r} adversarial training recovers more than half of the full-rank robust-accuracy gain",
        ">",
        0.5,
        min_effect=0.0,
        why="the claim is a majority of the gain",
        models=("rank-r FGM-trained net", "FGM-trained net", "clean-trained net"),
        gates=(*TRAINED, "attack converged"),
    ),
)


def spectrum(delta: np.ndarray, M: np.ndarray, w_star: np.ndarray):
    """Per seed: normalized singular values (S, min(m, d)) and |<v_i, w*/|w*|>| of the top right
    singular vectors in feature coordinates (S, TOP)."""
    u = w_star / np.linalg.norm(w_star)
    svals, align = [], []
    for D in delta:
        _, s, vt = np.linalg.svd(D @ M, full_matrices=False)
        svals.append(s / s[0])
        align.append(np.abs(vt[:TOP] @ u))
    return np.stack(svals), np.stack(align)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    a, n = cfg.train.adv_start, cfg.train.steps
    ranks = tuple(int(r) for r in ctx.options["ranks"])
    full_cfg = cfg.set(**{"train.snapshot_at": (a, n)})
    full = ctx.sweep(full_cfg, grid={"tau": [0.0, cfg.hp.tau]}, seeds=seeds)
    snaps = full["snapshots"]  # (hparam, seed, snapshot, neuron, input)
    M, w_star = full["task_M"], np.atleast_2d(full["task_w_star"])[0]
    s_adv, a_adv = spectrum(snaps[1, :, 1] - snaps[1, :, 0], M, w_star)
    s_cln, a_cln = spectrum(snaps[0, :, 1] - snaps[0, :, 0], M, w_star)
    robust = full["robust_acc"][:, :, -1, 0]  # (2, seeds) at eval.taus[0]
    clean_rob, full_rob = robust[0], robust[1]
    per_rank, failed = {}, failed_runs(full)
    chance = chance_runs(full)
    base_flag = full.flagged()
    task, eval_tau = make_task(cfg.data), (cfg.eval.taus[0],)
    base_gap = reference_gaps(full_cfg, full, task, eval_tau, rows=(0, 1))[..., 0].max(0)  # (S,)
    for r in ranks:
        rcfg = cfg.set(**{"train.adv_rank": r})
        res = ctx.sweep(rcfg, grid={"tau": [cfg.hp.tau]}, seeds=seeds)
        per_rank_flag = res.flagged()[0] | base_flag[0] | base_flag[1]
        rob = res["robust_acc"][0, :, -1, 0]
        per_rank[r] = {
            "robust_acc": rob,
            "recovered": (rob - clean_rob) / (full_rob - clean_rob),
            "flagged": per_rank_flag,
            "attack_gap": np.maximum(base_gap, reference_gaps(rcfg, res, task, eval_tau, rows=(0,))[0, :, 0]),
        }
        failed += failed_runs(res, f"rank {r}")
        chance += chance_runs(res, f"rank {r}")
    # Control, no training: remove the label direction u = M w*/|w*| from every clean neuron,
    # W (I - u u^T): the rank-1 edit a rank-1 update could learn. Tells expressivity from optimization.
    u = (M @ w_star) / np.linalg.norm(w_star)
    W_clean_all = snaps[:, :, 0]
    projected = W_clean_all - (W_clean_all @ u)[..., None] * u
    proj_res = Results({**full.arrays, "W_final": projected}, full.dims, full.coords, full.hp, full.meta)
    proj_rob = network_curves(cfg, proj_res, make_task(cfg.data), cfg.eval.taus)["robust"][1, :, 0]
    energy1 = s_adv[:, 0] ** 2 / (s_adv**2).sum(-1)
    pair = base_flag[0] | base_flag[1]
    trained = full.trained()
    pair_gates = {"trained": trained[0] & trained[1]}
    statistics = [
        statistic("label-aligned", a_adv[:, 0], flagged=pair, gates=pair_gates),
        statistic("one-direction", energy1, flagged=pair, gates=pair_gates),
    ] + [
        statistic(
            "rank-recovers",
            per_rank[r]["recovered"],
            flagged=per_rank[r]["flagged"],
            gates={**pair_gates, "attack converged": per_rank[r]["attack_gap"]},
            r=r,
        )
        for r in ranks
    ]
    return {
        "adv_start": a,
        "steps": n,
        "train_tau": cfg.hp.tau,
        "eval_tau": cfg.eval.taus[0],
        "ranks": list(ranks),
        "random_alignment": float(1 / np.sqrt(cfg.data.d)),
        "singular_values": {"adversarial": s_adv.tolist(), "clean": s_cln.tolist()},
        "label_alignment_top": {"adversarial": a_adv.tolist(), "clean": a_cln.tolist()},
        "top_energy_share": {
            "adversarial": energy1.tolist(),
            "clean": (s_cln[:, 0] ** 2 / (s_cln**2).sum(-1)).tolist(),
        },
        "robust_acc": {
            "clean": clean_rob.tolist(),
            "full rank": full_rob.tolist(),
            **{f"rank {r}": v["robust_acc"].tolist() for r, v in per_rank.items()},
        },
        "recovered": {f"rank {r}": v["recovered"].tolist() for r, v in per_rank.items()},
        "attack_gap_reference": {f"rank {r}": v["attack_gap"].tolist() for r, v in per_rank.items()},
        "label_direction_removed": {
            "robust_acc": proj_rob.tolist(),
            "recovered": ((proj_rob - clean_rob) / (full_rob - clean_rob)).tolist(),
        },
        "failed_runs": failed,
        "chance_runs": chance,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    for mode, color in (("adversarial", "tab:red"), ("clean", "tab:blue")):
        s = np.asarray(record["singular_values"][mode])[:, :20]
        label = "W_adv − W_clean (FGM phase)" if mode == "adversarial" else "same span of clean training"
        band(ax, np.arange(1, s.shape[1] + 1), s, label=label, color=color, marker="o", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title("spectrum of the weight change", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    for off, (mode, color) in zip((-0.2, 0.2), (("adversarial", "tab:red"), ("clean", "tab:blue"))):
        al = np.asarray(record["label_alignment_top"][mode])
        idx = np.arange(1, al.shape[1] + 1) + off
        ax.bar(idx, al.mean(0), width=0.4, color=color, alpha=0.8, label=mode)
        ax.errorbar(idx, al.mean(0), yerr=[al.mean(0) - al.min(0), al.max(0) - al.mean(0)], fmt="none", color="k", lw=1)
    ax.axhline(record["random_alignment"], color="0.4", ls=":", label="random direction 1/√d")
    ax.set_xlabel("right singular vector (feature space)")
    ax.set_ylabel("|cos(v_i, w*)|")
    ax.set_ylim(0, 1.05)
    ax.set_title("alignment with the label direction", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    ranks = record["ranks"]
    rob = {k: np.asarray(v) for k, v in record["robust_acc"].items()}
    x = np.arange(len(ranks) + 1)
    runs = np.stack([rob[f"rank {r}"] for r in ranks] + [rob["full rank"]], axis=1)
    band(ax, x, runs, label="rank-r FGM phase", color="tab:red", marker="o")
    ax.axhline(rob["clean"].mean(), color="tab:blue", ls="--", label="clean training")
    proj = np.asarray(record["label_direction_removed"]["robust_acc"])
    ax.axhline(
        proj.mean(),
        color="tab:green",
        ls=":",
        lw=2,
        label="clean weights with the label direction projected out (no training)",
    )
    ax.set_xticks(x, [str(r) for r in ranks] + ["full"])
    ax.set_xlabel("rank of the adversarial update")
    ax.set_ylabel(f"robust accuracy at τ = {record['eval_tau']:g}")
    ax.set_title("how much robustness a rank-r update buys", fontsize=10)
    ax.legend(fontsize=8)
    c = record["config"]
    fig.suptitle(
        f"What adversarial training changes: a low-rank update along the label direction? d={c['data']['d']}, "
        f"k={c['data']['k']}, "
        f"width={c['model']['width']}; bands: min–max over {len(record['seeds'])} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def _check_ranks(cfg: Config, options: dict) -> None:
    top = min(cfg.model.width, cfg.data.d)
    if max(options["ranks"]) > top:
        raise ConfigError(
            f"exp.ranks={options['ranks']!r} is not allowed: every rank must be <= min(model.width, data.d) = {top}"
        )


CONTROLS = {
    "train.adv_rank": "exp.ranks lists the ranks; the full-rank baseline is rank 0",
    "train.snapshot_at": "the experiment snapshots W at the switch and the end to project the update",
}

EXPERIMENT = Experiment(
    id="fp-lowrank",
    claim="FP",
    title="Low-rank structure of the adversarial weight change; rank-restricted adversarial training",
    summary="singular spectrum of W_adv - W_clean and its label alignment; adversarial training restricted to rank r",
    presets=with_test_preset(
        {name: {**p, "options": {"ranks": (1, 2, 4, 8)}} for name, p in DYNAMICS_PRESETS.items()},
        CONTROLS,
        {"ranks": (1, 2)},
    ),
    run=run,
    controls=CONTROLS,
    plot=plot,
    options=(Option("ranks", int, (1, 2, 4, 8), "ranks r of the restricted adversarial update", lo=1, many=True),),
    check=lambda cfg, o: _check_ranks(cfg, o),
    claims=CLAIMS,
)
