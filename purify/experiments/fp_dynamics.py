"""fp-dynamics [FP]: clean training, then FGM training from the clean weights, in two regimes.

One sweep over the training radius tau in {0, tau_adv}: with tau = 0 the FGM phase is exactly
clean training (delta = 0), so both modes share one compiled program, the same seeds (init and
data) and the same clean phase. Over training steps it records norm-weighted purity, features
per neuron, dense-mixture coherence rho, clean accuracy and robust accuracy at eval.taus[0].

The main regime has headroom (`_common.HEADROOM_REGIME`, evaluated at the middle of its window,
where the oracle is exactly robust): there the claims include the absolute one, FGM's final
robust accuracy within 0.1 of the oracle's. The second row is the uniform regime without
headroom (`exp.uniform_k`, `exp.uniform_tau`), drawn as dashed lines.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from purify.config import Config
from purify.experiment import Context, Experiment
from purify.plotting import band, flagged_mask

from ._common import (
    HEADROOM_REGIME,
    NO_HEADROOM_REGIME,
    REGIME_DERIVES,
    REGIME_OPTIONS,
    check_regimes,
    regime_presets,
    regime_record,
    uniform_row,
)
from ._purification import ABSOLUTE_CLAIMS, DYNAMICS_CLAIMS, METRICS, dynamics, robust_settled_gates

CLAIMS = (ABSOLUTE_CLAIMS[0],) + tuple(
    dataclasses.replace(
        c,
        text="{regime}: " + c.text,
        gates=robust_settled_gates(c.gates),
    )
    for c in DYNAMICS_CLAIMS
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    rows = {HEADROOM_REGIME: (cfg, dynamics(cfg, seeds, ctx, regime=HEADROOM_REGIME))}
    second = uniform_row(cfg, ctx.options)
    if second is not None:
        rows[NO_HEADROOM_REGIME] = (second, dynamics(second, seeds, ctx, regime=NO_HEADROOM_REGIME))
    main = rows[HEADROOM_REGIME][1]
    return {
        "main_regime": HEADROOM_REGIME,
        "eval_tau": main["eval_tau"],
        # the two exact landmarks at the main regime's evaluation radius (population values)
        "oracle_robust_exact": main["oracle_robust_exact"],
        "linear_robust_exact": main["linear_robust_exact"],
        **regime_record(rows),
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13.5, 7.8), sharex=True)
    colors = {"clean": "tab:blue", "adversarial": "tab:red"}
    main = record["regimes"][record["main_regime"]]
    for ax, (name, title, formula) in zip(axes.ravel(), METRICS):
        for regime, body in record["regimes"].items():
            steps = np.asarray(body["steps"])
            for row, (mode, label) in enumerate(body["modes"].items()):
                runs = np.asarray(body["curves"][name][mode], dtype=float)
                if regime == record["main_regime"]:
                    band(ax, steps, runs, label=label, color=colors[mode], flagged=flagged_mask(body, row, len(runs)))
                else:
                    at = f"; its robust accuracy at τ = {body['eval_tau']:g}"
                    ax.plot(
                        steps,
                        np.nanmean(runs, 0),
                        "--",
                        lw=1.1,
                        color=colors[mode],
                        alpha=0.8,
                        label=f"{label}, {regime}: mean{at}",
                    )
        ax.axvline(main["adv_start"], color="k", lw=0.8, ls=":")
        norm = {"l2": "ℓ2", "linf": "ℓ∞"}[main.get("norm", "l2")]
        at = f" ({norm}) at τ = {main['eval_tau']:g}" if name == "robust_acc" else ""
        ax.set_title(f"{title}{at}", fontsize=10)
        ax.set_ylabel(formula, fontsize=8)
        ax.grid(alpha=0.3)
    robust = axes.ravel()[[m[0] for m in METRICS].index("robust_acc")]
    robust.axhline(
        record["oracle_robust_exact"], color="tab:green", ls=":", lw=1.6, label="oracle pure net, exact (main regime)"
    )
    for ax in axes[1]:
        ax.set_xlabel("SGD step (dotted: FGM starts)")
    handles, labels = robust.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.105), ncol=2, fontsize=8, frameon=False)
    c = main["config"]
    second = [n for n in record["regimes"] if n != record["main_regime"]]
    rest = f"; dashed: {second[0]}, k={record['regimes'][second[0]]['config']['data']['k']}" if second else ""
    fig.suptitle(
        "Feature purification: FGM training after clean training purifies neurons and raises robust accuracy\n"
        f"solid: {record['main_regime']}, d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, "
        f"β={c['hp']['beta']:g}, mean and min–max band over {len(record['seeds'])} seeds{rest}",
        fontsize=10.5,
    )
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


EXPERIMENT = Experiment(
    id="fp-dynamics",
    claim="FP",
    title="Clean then FGM training: per-neuron purity, mixtures and robustness over time",
    summary="clean then FGM training; purity, features/neuron, rho, clean and robust accuracy over time",
    presets=regime_presets(),
    options=REGIME_OPTIONS,
    check=check_regimes,
    derives=REGIME_DERIVES,
    run=run,
    plot=plot,
    claims=CLAIMS,
    # round 1: the absolute claim and the two regimes were declared after round 0's seeds were seen
    confirmation_round=1,
)
