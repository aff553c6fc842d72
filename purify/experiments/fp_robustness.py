"""fp-robustness [FP]: l2 robust accuracy against the radius tau for five models.

The best linear classifier sign<M w*, x> (its exact per-example robust accuracy on the
held-out batch, the population closed form of docs/science.md section 4 when it applies, and the same
classifier under the toolkit's attacks), the clean-trained and the FGM-trained networks (the
fp-dynamics protocol, same seeds) and the oracle pure network. Seeds are bands; the window
1/sqrt(d) .. 1/sqrt(k) is shaded.
"""

from __future__ import annotations

import numpy as np

from purify.experiment import Experiment
from purify.plotting import band

from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS
from ._common import RADIUS_OPTIONS, with_test_preset
from ._purification import ROBUSTNESS_CLAIMS as CLAIMS
from ._purification import robustness as run


def plot(record: dict):
    import matplotlib.pyplot as plt

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
    presets=with_test_preset(
        {
            "cpu": {**DYNAMICS_PRESETS["cpu"], "options": {"n_taus": 13, "tau_max": None}},
            "gpu": {**DYNAMICS_PRESETS["gpu"], "options": {"n_taus": 17, "tau_max": None}},
        },
        None,
        {"n_taus": 4},
    ),
    options=RADIUS_OPTIONS,
    run=run,
    plot=plot,
    claims=CLAIMS,
)
