"""fp-dynamics [FP]: clean training, then FGM training from the clean weights.

One sweep over the training radius tau in {0, tau_adv}: with tau = 0 the FGM phase is exactly
clean training (delta = 0), so both modes share one compiled program, the same seeds (init and
data) and the same clean phase. Over training steps it records norm-weighted purity, features
per neuron, dense-mixture coherence rho, clean accuracy and robust accuracy at eval.taus[0].
"""

from __future__ import annotations

import numpy as np

from purify.experiment import Experiment
from purify.plotting import band, flagged_mask

from ._common import PURIFICATION_PRESETS, with_test_preset
from ._purification import DYNAMICS_CLAIMS as CLAIMS
from ._purification import METRICS
from ._purification import dynamics as run


def plot(record: dict):
    import matplotlib.pyplot as plt

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
    presets=with_test_preset(PRESETS),
    run=run,
    plot=plot,
    claims=CLAIMS,
)
