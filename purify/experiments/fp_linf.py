"""fp-linf [FP]: the dynamics and robustness experiments in l-inf with a dense dictionary.

The data use a Haar (dense) dictionary, so no input coordinate is a feature. Training and
evaluation attacks are l-inf; radii are the l2 ones divided by sqrt(2d/pi), the l-inf radius
that moves a dense unit direction as far (docs/science.md section 4). It runs fp-dynamics and
fp-robustness with these settings (one sweep, shared) and draws both in one figure.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from purify.config import Config
from purify.experiment import Context, Experiment
from purify.plotting import band

from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS
from ._common import RADIUS_OPTIONS, with_test_preset
from ._purification import DYNAMICS_CLAIMS, ROBUSTNESS_CLAIMS, dynamics, linf_settings, robust_settled_gates, robustness

PARTS = ("fp-dynamics", "fp-robustness")


def _claims():
    """The two experiments' claims, their ids prefixed by the part they come from; every claim
    on robust accuracy also asks the networks to have settled in it ('robust settled')."""
    out = []
    for part in PARTS:
        for c in {"fp-dynamics": DYNAMICS_CLAIMS, "fp-robustness": ROBUSTNESS_CLAIMS}[part]:
            out.append(
                dataclasses.replace(c, id=f"{part.removeprefix('fp-')}/{c.id}", gates=robust_settled_gates(c.gates))
            )
    return tuple(out)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    # the two experiments' own protocols, with this experiment's settings
    dyn = dynamics(cfg, seeds, ctx)
    rob = robustness(cfg, seeds, ctx)
    statistics = [
        {**s, "claim": f"{part.removeprefix('fp-')}/{s['claim']}"}
        for part, body in zip(PARTS, (dyn, rob))
        for s in body["statistics"]
    ]
    return {
        "dynamics": {k: v for k, v in dyn.items() if k != "statistics"},
        "robustness": {k: v for k, v in rob.items() if k != "statistics"},
        "failed_runs": dyn["failed_runs"],
        "chance_runs": dyn["chance_runs"],
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    dyn, rob = record["dynamics"], record["robustness"]
    steps = np.asarray(dyn["steps"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = {"clean": "tab:blue", "adversarial": "tab:red"}
    for ax, name, ylabel in (
        (axes[0], "purity_nw", "norm-weighted purity"),
        (axes[1], "robust_acc", f"ℓ∞ robust accuracy at τ = {dyn['eval_tau']:.4g}"),
    ):
        for mode, label in dyn["modes"].items():
            band(ax, steps, np.asarray(dyn["curves"][name][mode], dtype=float), label=label, color=colors[mode])
        ax.axvline(dyn["adv_start"], color="k", lw=0.8, ls=":")
        ax.set_xlabel("SGD step (dotted: FGM starts)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("purity over training", fontsize=10)
    axes[1].set_title("robustness over training", fontsize=10)
    ax = axes[2]
    taus = np.asarray(rob["taus"])
    lo, hi = rob["window"]
    ax.axvspan(lo, hi, color="0.9", zorder=0, label=f"window (1/√d .. 1/√k)/√(2d/π) = {lo:.3g} .. {hi:.3g}")
    for (name, runs), color in zip(rob["curves"].items(), ["tab:gray", "k", "tab:blue", "tab:red", "tab:green"]):
        kw = {"ls": "--", "lw": 2.5, "zorder": 5} if name.startswith("linear (exact") else {}
        band(ax, taus, np.asarray(runs, dtype=float), label=name, color=color, **kw)
    ax.set_xlabel("ℓ∞ attack radius τ")
    ax.set_ylabel("robust accuracy (min over FGM, PGD, dense attack)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("robust accuracy against the radius", fontsize=10)
    c = record["config"]
    fig.suptitle(
        f"Feature purification in ℓ∞ with a dense (Haar) dictionary: d={c['data']['d']}, k={c['data']['k']}, "
        f"width={c['model']['width']}; mean and min–max band over {len(record['seeds'])} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def _linf(preset: dict) -> dict:
    cfg = dict(preset["config"])
    cfg.update(linf_settings(cfg["data.d"], cfg["hp.tau"], cfg["eval.taus"]))
    return {**preset, "config": cfg, "options": {"n_taus": 13, "tau_max": None, **preset.get("options", {})}}


EXPERIMENT = Experiment(
    id="fp-linf",
    claim="FP",
    title="Feature purification in l-inf with a dense dictionary",
    summary="fp-dynamics and fp-robustness in l-inf with a Haar dictionary, radii divided by sqrt(2d/pi)",
    presets={name: _linf(p) for name, p in with_test_preset(DYNAMICS_PRESETS, None, {"n_taus": 4}).items()},
    run=run,
    plot=plot,
    options=RADIUS_OPTIONS,
    claims=_claims(),
    # round 1: the robust-settled gate was added after round 0's seeds were seen
    confirmation_round=1,
)
