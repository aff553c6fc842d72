"""fp-robustness [FP]: l2 robust accuracy against the radius tau for five models.

The best linear classifier sign<M w*, x> (its exact per-example robust accuracy on the
held-out batch, the population closed form of docs/science.md section 4 when it applies, and the same
classifier under the toolkit's attacks), the clean-trained and the FGM-trained networks (the
fp-dynamics protocol, same seeds) and the oracle pure network. Seeds are bands; the window
1/sqrt(d) .. 1/sqrt(k) is shaded.
"""

from __future__ import annotations

import numpy as np

from purify import make_task
from purify.claims import Claim, statistic
from purify.config import Config
from purify.evaluate import landmark_curves, network_curves, reference_gaps
from purify.experiment import Context, Experiment
from purify.landmarks import linear_robust_accuracy, window

from ._common import NETS, RADIUS_OPTIONS, radius_grid
from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS

ACC = "two accuracy points: a robustness difference a reader would act on; below it the two are alike"
CLAIMS = (
    Claim(
        "fgm-beats-clean",
        "FGM-trained net more robust than clean-trained at tau={tau:.3g} (inside the window)",
        min_effect=0.02,
        why=ACC,
        models=NETS,
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "clean-beats-linear",
        "clean-trained net more robust than the best linear classifier at tau={tau:.3g}",
        min_effect=0.02,
        why=ACC,
        models=(NETS[0], "best linear classifier (exact)"),
        resolution="accuracy",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "attacks-exact-on-linear",
        "the attacks reproduce the linear classifier's exact robust accuracy: max abs error over the grid < 0.005",
        "<",
        0.005,
        min_effect=0.0,
        why="the tolerance 0.005 (5 of 1024 examples) is the claim itself: the attacks find the known optimum",
        models=("best linear classifier (attacked)", "best linear classifier (exact)"),
    ),
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    task = make_task(cfg.data)
    taus = radius_grid(cfg, ctx.options)
    res = ctx.sweep(cfg, grid={"tau": [0.0, cfg.hp.tau]}, seeds=seeds, task=task)
    nets = network_curves(cfg, res, task, taus)
    lm = landmark_curves(cfg, task, res.coords["seed"], taus, noise=cfg.hp.noise, beta=cfg.hp.beta)
    closed = None  # the population closed form is an l2 statement
    if (
        cfg.eval.norm == "l2"
        and cfg.hp.noise == 0
        and cfg.data.label == "rademacher"
        and cfg.data.sparsity == "exact_k"
    ):
        closed = [linear_robust_accuracy(cfg.data, float(t)) for t in taus]
    curves = {
        "linear (exact on the eval batch)": lm["linear_exact"],
        "linear under attacks": lm["linear_attacked"],
        "clean-trained net": nets["robust"][0],
        f"FGM-trained net (τ={cfg.hp.tau:g})": nets["robust"][1],
        "oracle pure net": lm["oracle"],
        "constant predictor (majority class)": lm["constant"],
    }
    lo, hi = window(cfg.data, cfg.eval.norm)
    inside = (taus > lo) & (taus < hi)
    j = int(np.flatnonzero(inside)[len(np.flatnonzero(inside)) // 2]) if inside.any() else int(len(taus) // 2)
    flagged = res.flagged()
    trained = res.trained()
    gap = reference_gaps(cfg, res, task, (float(taus[j]),), rows=(0, 1))[..., 0]  # (2, S)
    statistics = [
        statistic(
            "fgm-beats-clean",
            nets["robust"][1][:, j] - nets["robust"][0][:, j],
            flagged=flagged[0] | flagged[1],
            gates={"trained": trained[0] & trained[1], "attack converged": gap.max(0)},
            tau=float(taus[j]),
        ),
        statistic(
            "clean-beats-linear",
            nets["robust"][0][:, j] - lm["linear_exact"][:, j],
            flagged=flagged[0],
            gates={"trained": trained[0], "attack converged": gap[0]},
            tau=float(taus[j]),
        ),
        statistic("attacks-exact-on-linear", np.abs(lm["linear_attacked"] - lm["linear_exact"]).max(axis=1)),
    ]
    return {
        "norm": cfg.eval.norm,
        "taus": taus.tolist(),
        "window": [lo, hi],
        "train_tau": cfg.hp.tau,
        "tau_for_verdicts": float(taus[j]),
        "curves": {k: np.asarray(v).tolist() for k, v in curves.items()},
        "clean_accuracy": {
            "clean-trained net": nets["clean"][0].tolist(),
            "FGM-trained net": nets["clean"][1].tolist(),
            "linear": lm["linear_attacked_clean"].tolist(),
            "oracle pure net": lm["oracle_clean"].tolist(),
        },
        "linear_population_closed_form": closed,
        "by_attack_fgm_net": {"attacks": ["fgm", "pgd", "dense"], "acc": nets["by_attack"][1].tolist()},
        "failed_runs": np.argwhere(res.failed()).tolist(),
        "chance_runs": np.argwhere(res.at_chance()).tolist(),
        "constant_predictor_accuracy": lm["constant"][:, 0].tolist(),
        "fgm_minus_constant_at_verdict_tau": (nets["robust"][1][:, j] - lm["constant"][:, j]).tolist(),
        "trained": trained.tolist(),
        "attack_gap_reference": gap.tolist(),
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    from purify.plotting import band

    taus = np.asarray(record["taus"])
    fig, ax = plt.subplots(figsize=(8, 5.2))
    lo, hi = record["window"]
    ax.axvspan(lo, hi, color="0.9", zorder=0, label=f"window 1/√d .. 1/√k = {lo:.3g} .. {hi:.3g}")
    styles = ["tab:gray", "k", "tab:blue", "tab:red", "tab:green", "tab:brown"]
    for (name, runs), color in zip(record["curves"].items(), styles):
        # the exact linear curve goes on top, dashed and wide, so the attacked one shows beneath it
        kw = {"ls": "--", "lw": 2.5, "zorder": 5} if name.startswith("linear (exact") else {}
        if name.startswith("constant"):
            kw = {"ls": "-.", "lw": 1.2}
        band(ax, taus, np.asarray(runs, dtype=float), label=name, color=color, **kw)
    if record.get("linear_population_closed_form"):
        ax.plot(
            taus,
            record["linear_population_closed_form"],
            ":",
            color="tab:purple",
            lw=2,
            label="linear, population closed form",
        )
    ax.set_xlabel(f"{'ℓ2' if record.get('norm', 'l2') == 'l2' else 'ℓ∞'} attack radius τ")
    ax.set_ylabel("robust accuracy (min over FGM, PGD, dense attack)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    c = record["config"]
    ax.set_title(
        "Inside the window, FGM training beats clean training and the best linear classifier\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}; "
        f"mean and min–max band over {len(record['seeds'])} seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    id="fp-robustness",
    claim="FP",
    title="Robust accuracy vs radius: linear, clean, adversarial, oracle",
    summary="robust accuracy vs tau for linear (closed form + attacked), clean, FGM-trained and oracle",
    presets={
        "cpu": {**DYNAMICS_PRESETS["cpu"], "options": {"n_taus": 13, "tau_max": None}},
        "gpu": {**DYNAMICS_PRESETS["gpu"], "options": {"n_taus": 17, "tau_max": None}},
    },
    options=RADIUS_OPTIONS,
    run=run,
    plot=plot,
    claims=CLAIMS,
)
