"""fp-robustness [FP]: l2 robust accuracy against the radius tau for five models, in two regimes.

The best linear classifier sign<M w*, x> (its exact per-example robust accuracy on the
held-out batch, the population closed form of docs/science.md section 4, and the same
classifier under the toolkit's attacks), the clean-trained and the FGM-trained networks (the
fp-dynamics protocol, same seeds) and the oracle pure network (attacked, and its exact
population robust accuracy). Seeds are bands.

The main regime has headroom (`_common.HEADROOM_REGIME`): `sign` magnitudes with k odd, where
between 1/sqrt(d) and the oracle's smallest flip radius the oracle is exactly robust and the
linear classifier is not; the claims are decided at the middle of that window, absolutely (FGM
within 0.1 of the oracle, clean within 0.1 of the better of chance and the linear classifier)
and relatively. The second row is the uniform regime, where no classifier can be robust at the
radii tested: the same claims at the middle of the grid inside 1/sqrt(d) .. 1/sqrt(k).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from purify.config import Config
from purify.experiment import Context, Experiment
from purify.landmarks import headroom
from purify.plotting import band

from ._common import (
    HEADROOM_REGIME,
    NO_HEADROOM_REGIME,
    RADIUS_OPTIONS,
    REGIME_DERIVES,
    REGIME_OPTIONS,
    check_regimes,
    headroom_radius,
    regime_presets,
    regime_record,
    uniform_row,
)
from ._purification import ABSOLUTE_CLAIMS, ROBUSTNESS_CLAIMS, robust_settled_gates, robustness

CLAIMS = ABSOLUTE_CLAIMS + tuple(
    dataclasses.replace(
        c,
        text="{regime}: " + c.text.replace(" (inside the window)", ""),
        gates=robust_settled_gates(c.gates),
    )
    for c in ROBUSTNESS_CLAIMS
)

OPTIONS = (
    RADIUS_OPTIONS[0],
    dataclasses.replace(
        RADIUS_OPTIONS[1],
        doc="largest radius of both grids (none: three times the headroom's top in the main row, 1.25 times "
        "the window's upper end 1/sqrt(k) in the second)",
    ),
    *REGIME_OPTIONS,
)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    tv = headroom_radius(cfg)
    lo, hi = headroom(cfg.data, cfg.hp.beta)
    # the main row's grid reaches three times the headroom's top: the oracle's steps beyond it show
    taus = np.linspace(0.0, ctx.options["tau_max"] or 3 * hi, int(ctx.options["n_taus"]))
    main = robustness(cfg, seeds, ctx, taus=taus, verdict_tau=tv, regime=HEADROOM_REGIME)
    main["headroom"] = [lo, hi]
    rows = {HEADROOM_REGIME: (cfg, main)}
    second = uniform_row(cfg, ctx.options)
    if second is not None:
        rows[NO_HEADROOM_REGIME] = (second, robustness(second, seeds, ctx, regime=NO_HEADROOM_REGIME))
    j = main["taus"].index(main["tau_for_verdicts"])
    return {
        "main_regime": HEADROOM_REGIME,
        "tau_for_verdicts": tv,
        # the two exact landmarks at the main regime's verdict radius (population values)
        "oracle_robust_exact": main["oracle_robust_exact"][j],
        "linear_robust_exact": main["linear_robust_exact"][j],
        **regime_record(rows),
    }


def _panel(ax, row: dict) -> None:
    taus = np.asarray(row["taus"])
    if row.get("headroom"):
        lo, hi = row["headroom"]
        shaded = f"shaded: the headroom 1/√d .. oracle's smallest flip radius = {lo:.3g} .. {hi:.3g}"
    else:
        lo, hi = row["window"]
        shaded = f"shaded: the window 1/√d .. 1/√k = {lo:.3g} .. {hi:.3g}"
    ax.axvspan(lo, hi, color="0.9", zorder=0)
    styles = ["tab:gray", "k", "tab:blue", "tab:red", "tab:green", "tab:brown"]
    for (name, runs), color in zip(row["curves"].items(), styles):
        # the exact linear curve goes on top, dashed and wide, so the attacked one shows beneath it
        kw = {"ls": "--", "lw": 2.5, "zorder": 5} if name.startswith("linear (exact") else {}
        if name.startswith("constant"):
            kw = {"ls": "-.", "lw": 1.2}
        band(ax, taus, np.asarray(runs, dtype=float), label=name, color=color, **kw)
    ax.plot(taus, row["oracle_robust_exact"], ":", color="tab:green", lw=2.2, label="oracle, exact (population)")
    ax.plot(taus, row["linear_robust_exact"], ":", color="tab:purple", lw=2, label="linear, exact (population)")
    tv = row["tau_for_verdicts"]
    ax.axvline(tv, color="0.35", lw=0.9, ls="--", zorder=1)
    ax.annotate(f"verdict τ = {tv:.3g}", (tv, 0.02), xytext=(4, 0), textcoords="offset points", fontsize=8)
    ax.set_xlabel("ℓ2 attack radius τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    c = row["config"]["data"]
    ax.set_title(f"{row['regime']}: d={c['d']}, k={c['k']}\n{shaded}", fontsize=9.5)


def plot(record: dict):
    import matplotlib.pyplot as plt

    rows = record["regimes"]
    fig, axes = plt.subplots(1, len(rows), figsize=(7.2 * len(rows), 5.6), squeeze=False)
    for ax, row in zip(axes[0], rows.values()):
        _panel(ax, row)
    axes[0][0].set_ylabel("robust accuracy (min over FGM, PGD, dense attack)")
    for ax in axes[0]:
        ax.legend(fontsize=7.5, loc="upper right")
    c = record["config"]
    fig.suptitle(
        "Where the oracle is exactly robust and the linear classifier is not (left), does FGM training reach "
        "the oracle?\n"
        f"width={c['model']['width']}; mean and min–max band over {len(record['seeds'])} seeds; "
        f"exact at the verdict radius: oracle {record['oracle_robust_exact']:.3f}, "
        f"linear {record['linear_robust_exact']:.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


_GRIDS = {"cpu": {"n_taus": 13, "tau_max": None}, "gpu": {"n_taus": 17, "tau_max": None}, "test": {"n_taus": 4}}

EXPERIMENT = Experiment(
    id="fp-robustness",
    claim="FP",
    title="Robust accuracy vs radius: linear, clean, adversarial, oracle; with and without headroom",
    summary="robust accuracy vs tau for linear (exact + attacked), clean, FGM-trained and oracle (exact + attacked), "
    "in the margin regime with headroom and the uniform one without",
    presets=regime_presets(_GRIDS),
    options=OPTIONS,
    check=check_regimes,
    derives=REGIME_DERIVES,
    run=run,
    plot=plot,
    claims=CLAIMS,
    # round 1: the absolute claims and the two regimes were declared after round 0's seeds were seen
    confirmation_round=1,
)
