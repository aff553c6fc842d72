"""The purification protocol's parts that several experiments run: its dynamics (fp-dynamics,
fp-linf), its robust-accuracy curves (fp-robustness, fp-linf), the neuron-by-neuron split of
the update (fp-principle, fp-scaling) and the l-inf version of an l2 protocol (fp-linf,
attack-audit). Each experiment module runs them with its own settings and draws its own figure.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from purify import make_task, metrics
from purify.claims import ROBUST_DRIFT, Claim, statistic
from purify.config import Config
from purify.evaluate import landmark_curves, network_curves, reference_gaps
from purify.experiment import Context
from purify.landmarks import exact_robust_accuracies, linear_robust_accuracy, window
from purify.store import fingerprint

from ._common import ACC_DIFFERENCE, ACC_EFFECT, ACC_GAIN_TRAININGS, NETS, chance_runs, failed_runs, radius_grid


def robust_settled_gates(gates: tuple[str, ...]) -> tuple[str, ...]:
    """A robust-accuracy claim's gates (those with 'attack converged', last) with 'robust
    settled' before the attack gate; other gates unchanged."""
    return gates[:-1] + ("robust settled", gates[-1]) if "attack converged" in gates else gates


# -- dynamics: clean training, then FGM from the clean weights ----------------------------------

DYNAMICS_CLAIMS = (
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
        min_effect=ACC_EFFECT,
        why=ACC_GAIN_TRAININGS,
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


def dynamics(cfg: Config, seeds, ctx: Context, *, regime: str | None = None) -> dict:
    """The purification protocol's sweep, its curves over training and the statistics of
    DYNAMICS_CLAIMS. With `regime` (a name, written into every statistic's `where`) the
    absolute claim `fgm-reaches-oracle` is added at eval.taus[0], read against the oracle's
    exact population robust accuracy, and robust accuracy's own settling ('robust settled')."""
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
    gaps = reference_gaps(cfg, res, make_task(cfg.data), (eval_tau,), rows=(0, 1))[..., 0]  # (2, S)
    attack_gap = gaps.max(0)
    steady = res.settled("robust_acc", ROBUST_DRIFT)
    where = {"regime": regime} if regime else {}
    statistics = [
        statistic("purity-rises", diff("purity_nw"), flagged=pair, gates=gates, **where),
        statistic("rho-falls", diff("rho_nw"), flagged=pair, gates=gates, **where),
        statistic(
            "robust-rises",
            diff("robust_acc"),
            flagged=pair,
            gates={**gates, "robust settled": steady[0] & steady[1], "attack converged": attack_gap},
            norm=cfg.eval.norm,
            tau=eval_tau,
            **where,
        ),
        statistic(
            "stays-accurate",
            final["clean_acc"]["adversarial"] - 0.9,
            flagged=flagged[1],
            gates={"trained": trained[1]},
            **where,
        ),
    ]
    exact = None
    if regime:
        exact = exact_robust_accuracies(cfg.data, cfg.hp.beta, [eval_tau])
        statistics.append(
            statistic(
                "fgm-reaches-oracle",
                exact["oracle_robust_exact"][0] - final["robust_acc"]["adversarial"],
                flagged=flagged[1],
                gates={"trained": trained[1], "robust settled": steady[1], "attack converged": gaps[1]},
                tau=eval_tau,
                **where,
            )
        )
    failed = failed_runs(res)
    chance = chance_runs(res)
    constant = res["constant_predictor"][:, :, -1]
    return {
        **({"regime": regime, **{k: v[0] for k, v in exact.items()}} if regime else {}),
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


# -- robustness: robust accuracy against the radius, beside the exact linear references ----------

ROBUSTNESS_CLAIMS = (
    Claim(
        "fgm-beats-clean",
        "FGM-trained net more robust than clean-trained at tau={tau:.3g} (inside the window)",
        min_effect=ACC_EFFECT,
        why=ACC_DIFFERENCE,
        models=NETS,
        resolution="accuracy difference",
        gates=("above chance", "trained", "attack converged"),
    ),
    Claim(
        "clean-beats-linear",
        "clean-trained net more robust than the best linear classifier at tau={tau:.3g}",
        min_effect=ACC_EFFECT,
        why=ACC_DIFFERENCE,
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


# The claims as the paper states them, absolute (fp-dynamics, fp-robustness): adversarial
# training reaches the oracle's robustness; clean training stays where a classifier without a
# defence is.
ABSOLUTE_GAP = 0.1
ABSOLUTE_WHY = (
    "the paper's robust accuracy 1 - o(1) (and clean training's o(1)) read at this finite d as ten accuracy "
    "points: a network within ten points of the oracle is robust in the theorem's sense, one ten points above "
    "the better of chance and the linear classifier has a defence the claim says clean training lacks"
)
ABSOLUTE_CLAIMS = (
    Claim(
        "fgm-reaches-oracle",
        "{regime}: the FGM-trained net's robust accuracy at tau={tau:.3g} reaches the oracle pure net's exact "
        f"one within {ABSOLUTE_GAP:g} (oracle - FGM < {ABSOLUTE_GAP:g})",
        "<",
        ABSOLUTE_GAP,
        min_effect=0.0,
        why=ABSOLUTE_WHY,
        models=(NETS[1], "oracle pure net (exact)"),
        resolution="accuracy",
        gates=("above chance", "trained", "robust settled", "attack converged"),
    ),
    Claim(
        "clean-not-robust",
        "{regime}: the clean-trained net's robust accuracy at tau={tau:.3g} stays within "
        f"{ABSOLUTE_GAP:g} of the better of chance and the best linear classifier "
        f"(clean - max(constant, linear exact) < {ABSOLUTE_GAP:g})",
        "<",
        ABSOLUTE_GAP,
        min_effect=0.0,
        why=ABSOLUTE_WHY,
        models=(NETS[0], "best linear classifier (exact)", "constant predictor"),
        resolution="accuracy",
        gates=("above chance", "trained", "robust settled", "attack converged"),
    ),
)


def robustness(
    cfg: Config,
    seeds,
    ctx: Context,
    *,
    taus=None,
    verdict_tau: float | None = None,
    regime: str | None = None,
) -> dict:
    """Robust accuracy against the radius for the five models, and the statistics of
    ROBUSTNESS_CLAIMS at one radius: `verdict_tau` (added to the grid), or else the grid's
    middle radius inside the window 1/sqrt(d) .. 1/sqrt(k). The grid: `taus`, or else
    `radius_grid` of the options. With `regime` (a name, written into every statistic's
    `where`) the absolute claims of ABSOLUTE_CLAIMS are added, read against the exact
    population robust accuracies of the oracle and the linear classifier (l2 only:
    `landmarks.exact_robust_accuracies`)."""
    task = make_task(cfg.data)
    taus = radius_grid(cfg, ctx.options) if taus is None else np.asarray(taus, float)
    if verdict_tau is not None:
        taus = np.unique(np.append(taus, float(verdict_tau)))
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
    if verdict_tau is not None:
        j = int(np.flatnonzero(taus == float(verdict_tau))[0])
    else:
        j = int(np.flatnonzero(inside)[len(np.flatnonzero(inside)) // 2]) if inside.any() else int(len(taus) // 2)
    flagged = res.flagged()
    trained = res.trained()
    steady = res.settled("robust_acc", ROBUST_DRIFT)  # read by the claims that declare "robust settled"
    gap = reference_gaps(cfg, res, task, (float(taus[j]),), rows=(0, 1))[..., 0]  # (2, S)
    where = {"tau": float(taus[j])} | ({"regime": regime} if regime else {})
    statistics = [
        statistic(
            "fgm-beats-clean",
            nets["robust"][1][:, j] - nets["robust"][0][:, j],
            flagged=flagged[0] | flagged[1],
            gates={
                "trained": trained[0] & trained[1],
                "robust settled": steady[0] & steady[1],
                "attack converged": gap.max(0),
            },
            **where,
        ),
        statistic(
            "clean-beats-linear",
            nets["robust"][0][:, j] - lm["linear_exact"][:, j],
            flagged=flagged[0],
            gates={"trained": trained[0], "robust settled": steady[0], "attack converged": gap[0]},
            **where,
        ),
        statistic(
            "attacks-exact-on-linear",
            np.abs(lm["linear_attacked"] - lm["linear_exact"]).max(axis=1),
            **({"regime": regime} if regime else {}),
        ),
    ]
    exact = None
    if regime:
        exact = exact_robust_accuracies(cfg.data, cfg.hp.beta, taus)
        floor = np.maximum(lm["constant"][:, j], lm["linear_exact"][:, j])
        statistics += [
            statistic(
                "fgm-reaches-oracle",
                exact["oracle_robust_exact"][j] - nets["robust"][1][:, j],
                flagged=flagged[1],
                gates={"trained": trained[1], "robust settled": steady[1], "attack converged": gap[1]},
                **where,
            ),
            statistic(
                "clean-not-robust",
                nets["robust"][0][:, j] - floor,
                flagged=flagged[0],
                gates={"trained": trained[0], "robust settled": steady[0], "attack converged": gap[0]},
                **where,
            ),
        ]
    return {
        **({"regime": regime, **exact} if regime else {}),  # the exact population curves over `taus`
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
        "failed_runs": failed_runs(res),
        "chance_runs": chance_runs(res),
        "constant_predictor_accuracy": lm["constant"][:, 0].tolist(),
        "fgm_minus_constant_at_verdict_tau": (nets["robust"][1][:, j] - lm["constant"][:, j]).tolist(),
        "trained": trained.tolist(),
        "attack_gap_reference": gap.tolist(),
        "statistics": statistics,
    }


# -- the principle: w = beta w' + v, neuron by neuron ----------------------------------------------

# A neuron counts as split into a kept direction and a removed dense mixture when, besides
# |beta_i w'_i| > |v_i|, the removed part is a real share of the weight: |v_i| >= RESIDUAL_SHARE |w_i|
# (sin of the angle between w_i and w'_i). Continued clean training moves w_i by a few percent
# only, so this is the part of the principle its control can fail.
RESIDUAL_SHARE = 0.25


def decompose(W_init, W_clean, W_after) -> dict[str, np.ndarray]:
    """Per seed and neuron (S, m) arrays of the decomposition of W_clean against W_after."""
    out = {k: [] for k in ("beta", "along_norm", "residual_norm", "cos_clean_init", "cos_adv_init")}
    for w0, w, w1 in zip(W_init, W_clean, W_after):
        res = metrics.principle(w, w1, w0)
        for k, values in out.items():
            values.append(np.asarray(res[k]))
    return {k: np.stack(v) for k, v in out.items()}


def summarize(parts: dict, weight: np.ndarray) -> dict[str, np.ndarray]:
    """Per-seed (S,) statistics, plain and weighted by the clean norms `weight` (S, m)."""
    holds = (parts["along_norm"] > parts["residual_norm"]).astype(float)
    share = parts["residual_norm"] / np.maximum(np.hypot(parts["along_norm"], parts["residual_norm"]), 1e-30)
    split = holds * (share >= RESIDUAL_SHARE)
    w = weight / weight.sum(-1, keepdims=True)
    return {
        "holds_fraction": holds.mean(-1),
        "holds_fraction_nw": (holds * w).sum(-1),
        "split_fraction_nw": (split * w).sum(-1),
        "residual_share_nw": (share * w).sum(-1),
        "abs_cos_clean_init": np.abs(parts["cos_clean_init"]).mean(-1),
        "abs_cos_clean_init_nw": (np.abs(parts["cos_clean_init"]) * w).sum(-1),
        "abs_cos_adv_init": np.abs(parts["cos_adv_init"]).mean(-1),
        "abs_cos_adv_init_nw": (np.abs(parts["cos_adv_init"]) * w).sum(-1),
    }


# -- l-inf ------------------------------------------------------------------------------------------


def linf_settings(d: int, tau: float, taus) -> dict:
    """The l-inf version of an l2 protocol: a Haar dictionary, l-inf attacks, radii / sqrt(2d/pi)."""
    s = math.sqrt(2 * d / math.pi)
    return {
        "data.dictionary": "haar",
        "train.norm": "linf",
        "eval.norm": "linf",
        "hp.tau": round(tau / s, 5),
        "eval.taus": tuple(round(t / s, 5) for t in taus),
    }
