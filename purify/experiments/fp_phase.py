"""fp-phase [FP]: where adversarial training helps, over sparsity k (and dimension d) and radius tau.

For each (d, k), one sweep trains clean (tau = 0) and FGM networks at every tau of the grid (the
fp-dynamics protocol) and evaluates each at every tau. The gap at (k, tau) is the robust
accuracy of the network FGM-trained at tau minus that of the clean network, both at tau, paired
by seed. Beside it, rho * sqrt(k) of the clean network: its dense mixture along the label
direction, on the scale where a pure network would have sqrt(k/d). The theory's window is
1/sqrt(d) << tau <~ 1/sqrt(k): the lines are drawn on the maps.
"""

from __future__ import annotations

import numpy as np

from purify import make_task
from purify.claims import Claim, statistic
from purify.config import Config, ConfigError
from purify.evaluate import reference_gaps
from purify.experiment import Context, Experiment, Option
from purify.stats import mean_ci

from ._common import ACC_EFFECT, ACC_GAIN_TRAININGS, chance_runs, failed_runs, with_test_preset

# The window's edges as claims: a radius counts as well below the window at or under
# 1/(EDGE sqrt(d)) and well above it at or over EDGE/sqrt(k); there the theory says FGM training
# gains nothing over clean training (below: both are robust; above: neither can be). Below, the
# FGM net is trained at that radius; above, training at it leaves a network at chance (dropped,
# never evidence), so the FGM net is the one trained at the mid-window radius, evaluated there:
# the robustness FGM training buys does not reach past the window.
EDGE = 2.0
NO_GAIN = 0.02
NO_GAIN_WHY = (
    "two accuracy points, the smallest gain the mid-window claim counts: a gain under it is no gain; the claim "
    "is the bound itself"
)

CLAIMS = (
    Claim(
        "no-gain-below",
        f"d={{d}}, k={{k}}: FGM training gains less than {NO_GAIN:g} robust accuracy over clean training at "
        f"tau={{tau:g}}, below the window (tau <= 1/({EDGE:g} sqrt(d)))",
        "<",
        NO_GAIN,
        min_effect=0.0,
        why=NO_GAIN_WHY,
        models=("clean-trained net", "FGM-trained net (per k, d and tau)"),
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "no-gain-above",
        f"d={{d}}, k={{k}}: the FGM net trained mid-window (tau={{train_tau:g}}) gains less than {NO_GAIN:g} robust "
        f"accuracy over the clean net at tau={{tau:g}}, above the window (tau >= {EDGE:g}/sqrt(k))",
        "<",
        NO_GAIN,
        min_effect=0.0,
        why=NO_GAIN_WHY,
        models=("clean-trained net", "FGM-trained net (per k and d, at the mid-window radius)"),
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "gap-mid-window",
        "d={d}, k={k}: FGM training beats clean training in robust accuracy at tau={tau:g} (mid-window)",
        min_effect=ACC_EFFECT,
        why=ACC_GAIN_TRAININGS,
        models=("clean-trained net", "FGM-trained net (per k, d and tau)"),
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
)


def _edges(taus, d: int, k: int) -> tuple[int | None, int | None]:
    """The grid radii the edge claims read: the largest at or under 1/(EDGE sqrt(d)) and the
    smallest at or over EDGE/sqrt(k), each None where the grid has none."""
    taus = np.asarray(taus, float)
    below = np.flatnonzero(taus <= 1 / (EDGE * np.sqrt(d)))
    above = np.flatnonzero(taus >= EDGE / np.sqrt(k))
    return (int(below[-1]) if len(below) else None, int(above[0]) if len(above) else None)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    ks, taus = tuple(ctx.options["ks"]), tuple(ctx.options["taus"])
    ds = tuple(ctx.options["ds"] or (cfg.data.d,))  # None: the config's d
    gap = np.full((len(ds), len(ks), len(taus), len(seeds)), np.nan)
    trained = np.zeros(gap.shape, bool)
    attack_gap = np.full((len(ds), len(ks), len(seeds)), np.nan)  # at the mid-window radius
    edges = {}  # (a, b, claim) -> the statistic's values, gates and where at an edge radius
    flag = np.zeros(gap.shape, bool)  # the pair (clean row, row j) has a failed, diverged or at-chance run
    clean_acc = np.full_like(gap, np.nan)
    rho_sqrt_k = np.full((len(ds), len(ks), len(seeds)), np.nan)
    failed, chance = [], []
    for a, d in enumerate(ds):
        for b, k in enumerate(ks):
            c = cfg.set(
                **{"data.d": d, "data.k": k, "model.width": cfg.model.width // cfg.data.d * d, "eval.taus": taus}
            )
            res = ctx.sweep(c, grid={"tau": (0.0, *taus)}, seeds=seeds)
            final = res["robust_acc"][:, :, -1, :]  # (1 + n_tau rows, seeds, n_tau eval radii)
            flagged = res.flagged()
            settled = res.trained()
            mid = np.sqrt((1 / np.sqrt(d)) * (1 / np.sqrt(k)))
            jm = int(np.argmin(np.abs(np.log(np.asarray(taus) / mid))))
            attack_gap[a, b] = reference_gaps(c, res, make_task(c.data), (taus[jm],), rows=(0, 1 + jm))[..., 0].max(0)
            jb, ja = _edges(taus, d, k)
            for name, j, row in (("no-gain-below", jb, jb), ("no-gain-above", ja, jm)):
                if j is None:
                    continue
                ref = reference_gaps(c, res, make_task(c.data), (taus[j],), rows=(0, 1 + row))[..., 0]
                where = {"tau": float(taus[j])} | ({"train_tau": float(taus[row])} if name == "no-gain-above" else {})
                edges[a, b, name] = {
                    "values": final[1 + row, :, j] - final[0, :, j],
                    "flagged": flagged[0] | flagged[1 + row],
                    "gates": {"trained": settled[0] & settled[1 + row], "attack converged": ref.max(0)},
                    "where": where,
                }
            for j in range(len(taus)):
                trained[a, b, j] = settled[0] & settled[1 + j]
                gap[a, b, j] = final[1 + j, :, j] - final[0, :, j]
                flag[a, b, j] = flagged[0] | flagged[1 + j]
                clean_acc[a, b, j] = final[0, :, j]
            rho_sqrt_k[a, b] = res["rho_nw"][0, :, -1] * np.sqrt(k)
            failed += failed_runs(res, d, k)
            chance += chance_runs(res, d, k)
    statistics = []
    for a, d in enumerate(ds):
        for b, k in enumerate(ks):
            mid = np.sqrt((1 / np.sqrt(d)) * (1 / np.sqrt(k)))  # geometric middle of the window
            j = int(np.argmin(np.abs(np.log(np.asarray(taus) / mid))))
            statistics.append(
                statistic(
                    "gap-mid-window",
                    gap[a, b, j],
                    flagged=flag[a, b, j],
                    gates={"trained": trained[a, b, j], "attack converged": attack_gap[a, b]},
                    d=d,
                    k=k,
                    tau=float(taus[j]),
                )
            )
            for name in ("no-gain-below", "no-gain-above"):
                e = edges.get((a, b, name))
                if e is not None:
                    statistics.append(
                        statistic(name, e["values"], flagged=e["flagged"], gates=e["gates"], d=d, k=k, **e["where"])
                    )
    mean = np.nanmean(gap, axis=-1)
    ci = np.asarray(
        [[[mean_ci(gap[a, b, j])[1:] for j in range(len(taus))] for b in range(len(ks))] for a in range(len(ds))]
    )
    significant = ci[..., 0] > 0
    boundary = {
        f"d={d}, k={k}": [float(t) for t, s in zip(taus, significant[a, b]) if s]
        for a, d in enumerate(ds)
        for b, k in enumerate(ks)
    }
    return {
        "ks": list(ks),
        "ds": list(ds),
        "taus": list(taus),
        "gap_mean": mean.tolist(),
        "gap_ci95": ci.tolist(),
        "gap_per_seed": gap.tolist(),
        "clean_robust_acc_mean": np.nanmean(clean_acc, axis=-1).tolist(),
        "rho_sqrt_k_mean": np.nanmean(rho_sqrt_k, axis=-1).tolist(),
        "rho_sqrt_k_per_seed": rho_sqrt_k.tolist(),
        "radii_where_gap_is_significant": boundary,
        "failed_runs": failed,
        "chance_runs": chance,
        "attack_gap_reference": attack_gap.tolist(),
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    ks, ds, taus = record["ks"], record["ds"], np.asarray(record["taus"])
    gap, ci = np.asarray(record["gap_mean"]), np.asarray(record["gap_ci95"])
    map_width = max(5.5, 0.85 * len(taus))
    fig, axes = plt.subplots(
        1,
        len(ds) + 1,
        figsize=(map_width * len(ds) + 4.5, 4.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [map_width] * len(ds) + [4.5]},
    )
    vmax = max(0.05, float(np.nanmax(np.abs(gap))))

    def at(tau):  # position of a radius on the equal-width cell axis (log-interpolated)
        return float(np.interp(np.log(tau), np.log(taus), np.arange(len(taus)) + 0.5, left=0.0, right=len(taus)))

    for a, d in enumerate(ds):
        ax = axes[0, a]
        im = ax.pcolormesh(np.arange(len(taus) + 1), np.arange(len(ks) + 1), gap[a], cmap="RdBu", vmin=-vmax, vmax=vmax)
        for b, k in enumerate(ks):
            for j in range(len(taus)):
                mark = "" if ci[a, b, j, 0] > 0 or ci[a, b, j, 1] < 0 else "?"
                ax.text(j + 0.5, b + 0.5, f"{gap[a, b, j]:+.2f}{mark}", ha="center", va="center", fontsize=7.5)
            ax.plot([at(1 / np.sqrt(k))] * 2, [b, b + 1], color="k", lw=2.5)
            ax.plot([at(EDGE / np.sqrt(k))] * 2, [b, b + 1], color="k", lw=1.2, ls=":")
        ax.axvline(at(1 / np.sqrt(d)), color="0.3", ls="--", lw=1.5, label="1/√d")
        ax.axvline(
            at(1 / (EDGE * np.sqrt(d))), color="0.3", ls=":", lw=1.2, label=f"1/({EDGE:g}√d), {EDGE:g}/√k: edges"
        )
        ax.plot([], [], color="k", lw=2.5, label="1/√k (per row)")
        ax.set_xticks(np.arange(len(taus)) + 0.5, [f"{t:g}" for t in taus])
        ax.set_yticks(np.arange(len(ks)) + 0.5, [str(k) for k in ks])
        ax.set_ylabel("active features k")
        ax.set_xlabel("ℓ2 radius τ, training = evaluation (cells equal width)")
        ax.set_title(
            f"robust-accuracy gap, FGM − clean (d={d}); ? = 95% CI spans 0\n"
            "each cell: FGM trained at its τ (the claim past 2/√k reads the mid-window FGM net)",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.18), ncol=2)
        fig.colorbar(im, ax=ax, label="gap in robust accuracy")
    ax = axes[0, -1]
    rho = np.asarray(record["rho_sqrt_k_per_seed"])
    for a, d in enumerate(ds):
        m = rho[a].mean(-1)
        ax.plot(ks, m, "o-", label=f"clean net, d={d}")
        ax.fill_between(ks, rho[a].min(-1), rho[a].max(-1), alpha=0.2)
        ax.plot(ks, np.sqrt(np.asarray(ks) / d), ":", color="0.4", label=f"pure neuron √(k/d), d={d}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("active features k")
    ax.set_ylabel("ρ·√k (norm-weighted, final)")
    ax.set_title("dense mixture of the clean network", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"Phase diagram: where FGM training beats clean training, over k and τ (mean over {len(record['seeds'])} "
        "seeds)",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = {
    "cpu": {
        "config": {
            "data.d": 64,
            "model.width": 256,
            "train.steps": 3000,
            "train.adv_start": 1500,
            "train.batch": 256,
            "train.attack": "fgm",
            "hp.lr": 0.1,
            "hp.beta": 0.6,
            "eval.n_eval": 512,
            "train.n_log": 6,
        },
        "seeds": 4,
        "options": {"ks": (2, 4, 8), "ds": None, "taus": (0.06, 0.125, 0.2, 0.3, 0.45, 0.6, 0.75, 1.0, 1.45)},
    },
    "gpu": {
        "config": {
            "data.d": 128,
            "model.width": 512,
            "train.steps": 12000,
            "train.adv_start": 6000,
            "train.batch": 512,
            "train.attack": "fgm",
            "hp.lr": 0.1,
            "hp.beta": 0.6,
            "eval.n_eval": 2048,
            "train.n_log": 12,
        },
        "seeds": 16,
        "options": {
            "ks": (2, 4, 8, 16),
            "ds": (64, 128, 256),
            "taus": (0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.75, 1.0, 1.45),
        },
    },
}


def _check_sizes(cfg: Config, options: dict) -> None:
    ds = options["ds"] or (cfg.data.d,)
    if max(options["ks"]) > min(ds):
        raise ConfigError(f"exp.ks={options['ks']!r} is not allowed: every k must be <= the smallest d = {min(ds)}")
    if cfg.model.width < cfg.data.d:
        raise ConfigError(
            f"model.width={cfg.model.width} is not allowed for fp-phase: must be >= data.d={cfg.data.d}, since the "
            "width per input dimension, model.width // data.d, is kept at every d"
        )


CONTROLS = {
    "data.k": "exp.ks lists the sparsities",
    "hp.tau": "exp.taus lists the training radii (each trained against the clean row)",
    "eval.taus": "exp.taus are the evaluation radii too",
    "data.d": ("ds", "exp.ds lists the dimensions; unset it (none) to use data.d"),
}

EXPERIMENT = Experiment(
    id="fp-phase",
    claim="FP",
    title="Phase diagram of the adversarial-training gap over k, d and tau",
    summary="robust-accuracy gap (FGM - clean) and rho*sqrt(k) of the clean net over k (and d) and tau",
    presets=with_test_preset(PRESETS, CONTROLS, {"ks": (2, 4), "taus": (0.125, 0.3, 1.0)}),
    run=run,
    controls=CONTROLS,
    derives={"model.width": "scaled with d: model.width / data.d is kept at every exp.ds"},
    plot=plot,
    claims=CLAIMS,
    # round 1: the edge claims were declared after round 0's seeds were seen
    confirmation_round=1,
    options=(
        Option("ks", int, (2, 4, 8), "sparsities k (one training per k and radius)", lo=1, many=True),
        Option("ds", int, None, "dimensions d (none: the config's data.d)", lo=1, many=True, optional=True),
        Option(
            "taus",
            float,
            (0.06, 0.125, 0.2, 0.3, 0.45, 0.6, 0.75, 1.0, 1.45),
            "training and evaluation radii (edge claims need one at or under 1/(2 sqrt(d)) and one at or over "
            "2/sqrt(k))",
            lo=0.0,
            strict_lo=True,
            many=True,
        ),
    ),
    check=lambda cfg, o: _check_sizes(cfg, o),
)
