"""fp-dynamics [FP]: clean training, then FGM training from the clean weights.

One sweep over the training radius tau in {0, tau_adv}: with tau = 0 the FGM phase is exactly
clean training (delta = 0), so both modes share one compiled program, the same seeds (init and
data) and the same clean phase. Over training steps it records norm-weighted purity, features
per neuron, dense-mixture coherence rho, clean accuracy and robust accuracy at eval.taus[0].
"""

from __future__ import annotations

import jax
import numpy as np

from purify import make_task
from purify.claims import Claim, statistic
from purify.config import Config
from purify.evaluate import reference_gaps
from purify.experiment import Context, Experiment
from purify.landmarks import window
from purify.store import fingerprint

from ._common import NETS, PURIFICATION_PRESETS

CLAIMS = (
    Claim(
        "purity-rises",
        "FGM training after clean training raises norm-weighted purity (final, adversarial - clean, paired by seed)",
        ">",
        0.0,
        min_effect=0.05,
        why="purity lies in [1/d, 1]; a rise below 0.05 would not change what a neuron detects",
        models=NETS,
        gates=("above chance", "trained"),
    ),
    Claim(
        "rho-falls",
        "FGM training lowers the dense-mixture coherence rho (final, adversarial - clean)",
        "<",
        0.0,
        min_effect=0.05,
        why="rho is of order 1 after clean training; a fall below 0.05 leaves the dense mixture in place",
        models=NETS,
        gates=("above chance", "trained"),
    ),
    Claim(
        "robust-rises",
        "FGM training raises {norm} robust accuracy at tau={tau:g} (final, adversarial - clean)",
        ">",
        0.0,
        min_effect=0.02,
        why="two accuracy points: a robustness gain a reader would act on; below it the two trainings are alike",
        models=NETS,
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "stays-accurate",
        "the adversarially trained network stays accurate: clean accuracy - 0.9 > 0",
        ">",
        0.0,
        min_effect=0.0,
        why="the claim is the threshold 0.9 itself: an adversarially trained net that keeps nine in ten right",
        models=NETS[1:],
        resolution="accuracy",
        gates=("above chance", "trained"),
    ),
)

METRICS = [
    ("purity_nw", "norm-weighted purity", "max_j c_ij² / ‖w_i‖²"),
    ("features_nw", "features per neuron", "#{j : |c_ij| ≥ ½ max_j |c_ij|}"),
    ("rho_nw", "dense-mixture coherence ρ", "|⟨w_i, M w*⟩| / (‖w*‖ max_j |c_ij|)"),
    ("alignment", "mixture alignment", "mean pairwise cos of mixtures"),
    ("clean_acc", "clean accuracy", "fraction correct, held-out"),
    ("robust_acc", "robust accuracy", "min over FGM/PGD/dense attacks"),
]


def _seeds_key(seeds) -> int | list[int]:
    """The development seeds 0..n-1 by their count (the name the saved files have always had)."""
    seeds = [int(s) for s in seeds]
    return len(seeds) if seeds == list(range(len(seeds))) else seeds


def run(cfg: Config, seeds, ctx: Context) -> dict:
    tau = cfg.hp.tau
    res = ctx.sweep(cfg, grid={"tau": [0.0, tau]}, seeds=seeds)
    # named by what it holds, so a run of another config never overwrites it
    saved = f"fp-dynamics-{fingerprint({'config': cfg.to_dict(), 'seeds': _seeds_key(seeds)})}.npz"
    if ctx.runs_dir is not None and jax.process_index() == 0:
        res.save(ctx.runs_dir / saved)
    steps = res.steps
    curves = {}
    for name, _, _ in METRICS:
        arr = res[name][..., 0] if name == "robust_acc" else res[name]  # robust at eval.taus[0]
        curves[name] = {"clean": arr[0], "adversarial": arr[1]}
    final = {name: {m: c[:, -1] for m, c in d.items()} for name, d in curves.items()}
    switch = int(np.flatnonzero(steps == cfg.train.adv_start)[0])
    diff = lambda n: final[n]["adversarial"] - final[n]["clean"]
    eval_tau = cfg.eval.taus[0]
    flagged = res.flagged()  # failed, diverged or at chance: never in a verdict
    pair = flagged[0] | flagged[1]
    trained = res.trained()
    gates = {"trained": trained[0] & trained[1]}
    attack_gap = reference_gaps(cfg, res, make_task(cfg.data), (eval_tau,), rows=(0, 1))[..., 0].max(0)
    statistics = [
        statistic("purity-rises", diff("purity_nw"), flagged=pair, gates=gates),
        statistic("rho-falls", diff("rho_nw"), flagged=pair, gates=gates),
        statistic(
            "robust-rises",
            diff("robust_acc"),
            flagged=pair,
            gates={**gates, "attack converged": attack_gap},
            norm=cfg.eval.norm,
            tau=eval_tau,
        ),
        statistic(
            "stays-accurate", final["clean_acc"]["adversarial"] - 0.9, flagged=flagged[1], gates={"trained": trained[1]}
        ),
    ]
    failed = np.argwhere(res.failed()).tolist()
    chance = np.argwhere(res.at_chance()).tolist()
    constant = res["constant_predictor"][:, :, -1]
    return {
        "results_file": saved if ctx.runs_dir is not None else None,
        "steps": steps.tolist(),
        "adv_start": cfg.train.adv_start,
        "train_tau": tau,
        "eval_tau": eval_tau,
        "window": list(window(cfg.data, cfg.eval.norm)),
        "norm": cfg.eval.norm,
        "modes": {
            "clean": "clean throughout (tau = 0)",
            "adversarial": f"clean, then FGM {cfg.train.norm} tau = {tau:g} from step {cfg.train.adv_start}",
        },
        "curves": {n: {m: v.tolist() for m, v in d.items()} for n, d in curves.items()},
        "at_switch": {n: {m: v[:, switch].tolist() for m, v in d.items()} for n, d in curves.items()},
        "final": {
            n: {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v.tolist()} for m, v in d.items()}
            for n, d in final.items()
        },
        "failed_runs": failed,
        "chance_runs": chance,
        "constant_predictor_final": {"clean": constant[0].tolist(), "adversarial": constant[1].tolist()},
        "trained": trained.tolist(),
        "attack_gap_reference": attack_gap.tolist(),
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    from purify.plotting import band, flagged_mask

    steps = np.asarray(record["steps"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    colors = {"clean": "tab:blue", "adversarial": "tab:red"}
    for ax, (name, title, formula) in zip(axes.ravel(), METRICS):
        for row, (mode, label) in enumerate(record["modes"].items()):
            runs = np.asarray(record["curves"][name][mode], dtype=float)
            flagged = flagged_mask(record, row, len(runs))
            band(ax, steps, runs, label=label, color=colors[mode], flagged=flagged)
        ax.axvline(record["adv_start"], color="k", lw=0.8, ls=":")
        norm = {"l2": "ℓ2", "linf": "ℓ∞"}[record.get("norm", "l2")]
        ax.set_title(
            f"{title}" + (f" ({norm}) at τ = {record['eval_tau']:g}" if name == "robust_acc" else ""), fontsize=10
        )
        ax.set_ylabel(formula, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("SGD step (dotted: FGM starts)")
    axes[0, 0].legend(fontsize=8, loc="best")
    c = record["config"]
    n_seeds = len(record["seeds"])
    fig.suptitle(
        "Feature purification: FGM training after clean training purifies neurons and raises robust accuracy\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, β={c['hp']['beta']:g}, "
        f"window 1/√d..1/√k = {record['window'][0]:.3g}..{record['window'][1]:.3g}; "
        f"line: mean, band: min–max over {n_seeds} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = PURIFICATION_PRESETS

EXPERIMENT = Experiment(
    id="fp-dynamics",
    claim="FP",
    title="Clean then FGM training: per-neuron purity, mixtures and robustness over time",
    summary="clean then FGM training; purity, features/neuron, rho, clean and robust accuracy over time",
    presets=PRESETS,
    run=run,
    plot=plot,
    claims=CLAIMS,
)
