"""rep-bound [REP]: the representation-robustness bound and criterion on every sample.

For supervised backbones (clean, FGM, PGD pre-training; shared with inh-nodes on disk) and
two linear heads on each (a clean probe and a PGD-adversarial probe), on every test sample:
the representation shift Delta_eps(g; x) from below (an attack on |g(x + delta) - g(x)|, random
start) and from above (the certified interval/spectral bound); the loss increase that FGM, PGD
and the dense attack achieve against the bound |v| Delta (it must never exceed it); and the
criterion Delta < |f(x)| / |v| (a certified sample must not flip under any attack).
Tightness: the certified over the attacked shift, and certified over attacked robust accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purify import make_task, network
from purify.claims import Claim, statistic
from purify.compilation import program
from purify.config import Config
from purify.downstream import run_keys, splits
from purify.experiment import Context, Experiment, Option
from purify.plotting import band
from purify.representation import per_sample_report

from ._common import (
    BACKBONE_CONTROLS,
    N_DOWN,
    PRETRAIN_PRESETS,
    down_config,
    probe,
    supervised_backbones,
    with_test_preset,
)

HEADS = {"clean probe": "none", "adversarial probe": "pgd"}
# No robust accuracy enters a verdict here: a certified accuracy is a sound lower bound that no
# attack sets, and a weaker attack only shrinks the attacked shift, which makes the tightness
# claim harder to hold, so neither needs the attack gate. Both read the backbones: they must settle.
GATES = ("above chance", "trained")
CLAIMS = (
    Claim(
        "fgm-certifies-more",
        "{head}: at ε={eps:g} the FGM backbone certifies more samples than the clean backbone",
        min_effect=0.02,
        why="two points of certified accuracy: a difference a reader would act on; below it the two are alike",
        models=("clean-trained backbone", "FGM-trained backbone", "clean or PGD-adversarial linear probe"),
        resolution="accuracy difference",
        gates=GATES,
    ),
    Claim(
        "certificate-tight",
        "fgm/{head}: the certified shift is within 2x of the attacked one (median over samples, ε={eps:g})",
        "<",
        2.0,
        min_effect=0.0,
        why="the factor 2 is the claim itself",
        models=("FGM-trained backbone", "clean or PGD-adversarial linear probe"),
        gates=GATES,
    ),
)


def _per_seed(r: dict) -> dict:
    """Per-seed summaries (S,) of a per-sample report (S, n)."""
    ratio = r["shift_certified"] / np.maximum(r["shift_attack"], 1e-12)
    return {
        "violations_loss": (r["loss_increase"] > r["loss_bound"] * (1 + 1e-5) + 1e-6).sum(-1),
        "violations_criterion": (r["certified"] & ~r["robust"]).sum(-1),
        "certified_acc": r["certified"].mean(-1),
        "robust_acc": r["robust"].mean(-1),
        "median_ratio": np.median(ratio, axis=-1),
        "mean_loss_increase": r["loss_increase"].mean(-1),
        "mean_loss_bound": r["loss_bound"].mean(-1),
        "shift_attack": r["shift_attack"].mean(-1),
        "shift_certified": r["shift_certified"].mean(-1),
    }


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    tau, eps = cfg.hp.tau, float(cfg.eval.taus[0])
    seed_ids = np.asarray(seeds)
    backbones, failed = supervised_backbones(cfg, seeds, ctx, task)
    flag = backbones.pop("flagged")
    settled = {"trained": backbones.pop("trained")}
    theta = np.asarray(task.w_star[0])  # the downstream task: the pre-training task (its dense attack is known)
    arch, beta = network.Architecture.of(cfg), cfg.hp.beta
    u = task.label_directions[0]
    keys = run_keys(seed_ids)
    report = program(
        jax.vmap(
            lambda bb, v, c, x, y, k, e: per_sample_report(
                arch,
                bb,
                beta,
                v,
                c,
                x,
                y,
                e,
                cfg.eval.norm,
                k,
                pgd_steps=cfg.eval.pgd_steps,
                restarts=int(o["restarts"]),
                u=u,
            ),
            in_axes=(0, 0, 0, 0, 0, 0, None),
        )
    )
    eps_grid = sorted({round(float(f) * eps, 6) for f in o["eps_fractions"]} | {eps})
    eps_v = round(float(o["verdict_fraction"]) * eps, 6)
    eps_grid = sorted(set(eps_grid) | {eps_v})
    out, curves = {}, {}
    for head, attack in HEADS.items():
        dc = down_config(cfg, o, attack=attack, taus=(eps,))
        for bname, bb in backbones.items():
            name = f"{bname}/{head}"
            fit = probe(ctx, cfg, dc, task, bb, seed_ids, theta, n=dc.n_max, lr=float(o["down_lr"]), tau=eps)
            tests = jax.vmap(
                lambda k, dc=dc: splits(
                    jax.random.split(k, 4)[0], cfg.data, jnp.asarray(theta), task.M, dc, which=(2,)
                )[2]
            )(keys)
            args = (
                bb,
                jnp.asarray(fit["params"]["v"]),
                jnp.asarray(fit["params"]["c"]),
                tests[0],
                tests[1],
                jax.vmap(lambda k: jax.random.fold_in(k, 99))(keys),
            )
            curves[name] = []
            for e in eps_grid:
                r = {k: np.asarray(v) for k, v in report(*args, jnp.float32(e)).items()}
                curves[name].append(_per_seed(r))
                if e == eps:
                    out[name] = r
    per_seed = {name: _per_seed(r) for name, r in out.items()}
    at = {name: {k: np.stack([c[k] for c in cs]) for k in cs[0]} for name, cs in curves.items()}  # (n_eps, S)
    iv = eps_grid.index(eps_v)
    n_test = int(out["clean/clean probe"]["robust"].shape[-1])
    ok = ~flag
    # The bounds are theorems about g: a sound certified shift cannot violate them (Cauchy-Schwarz
    # and a 1-Lipschitz loss), so their counts are checks of `certified_shift`, kept in the record
    # and asserted by the test suite, not evidence about REP.
    soundness = {
        name: {
            "loss_bound_violations": int(s["violations_loss"][:, ok].sum()),
            "criterion_violations": int(s["violations_criterion"][:, ok].sum()),
            "checked": n_test * len(eps_grid) * int(ok.sum()),
        }
        for name, s in at.items()
    }
    statistics = []
    for head in HEADS:
        statistics.append(
            statistic(
                "fgm-certifies-more",
                at[f"fgm/{head}"]["certified_acc"][iv] - at[f"clean/{head}"]["certified_acc"][iv],
                flagged=flag,
                gates=settled,
                head=head,
                eps=eps_v,
            )
        )
        ratio = per_seed[f"fgm/{head}"]["median_ratio"]
        statistics.append(statistic("certificate-tight", ratio, flagged=flag, gates=settled, head=head, eps=eps))
    keep = int(o["keep_samples"])
    hist = {
        name: {
            "shift_attack": r["shift_attack"].ravel()[:keep].tolist(),
            "shift_certified": r["shift_certified"].ravel()[:keep].tolist(),
        }
        for name, r in out.items()
    }
    return {
        "eps": eps,
        "train_tau": tau,
        "norm": cfg.eval.norm,
        "n_test": n_test,
        "eps_grid": eps_grid,
        "eps_verdict": eps_v,
        "per_seed": {n: {k: np.asarray(v).tolist() for k, v in s.items()} for n, s in per_seed.items()},
        "per_seed_by_eps": {n: {k: v.tolist() for k, v in s.items()} for n, s in at.items()},
        "samples": hist,
        "failed_runs": failed,
        "soundness": soundness,
        "statistics": statistics,
    }


def short(name: str) -> str:
    bb, head = name.split("/")
    return f"{bb} backbone, {'clean' if head.startswith('clean') else 'adv.'} head"


def plot(record: dict):
    import matplotlib.pyplot as plt

    names = list(record["per_seed"])
    colors = {"clean": "tab:blue", "fgm": "tab:red", "pgd": "tab:purple"}
    fig, axes = plt.subplots(1, 3, figsize=(19, 6.3))
    ax = axes[0]
    for name in names:
        s = record["samples"][name]
        if "clean probe" not in name:
            continue  # the shift is a property of the backbone: one head is enough
        ax.scatter(
            s["shift_attack"],
            s["shift_certified"],
            s=3,
            alpha=0.4,
            color=colors[name.split("/")[0]],
            label=f"{name.split('/')[0]} backbone",
        )
    lim = max(max(record["samples"][n]["shift_certified"]) for n in names)
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="certified = attacked")
    ax.set_xlabel(f"attacked shift |g(x+δ) − g(x)|, ℓ2 ε={record['eps']:g} (lower bound)")
    ax.set_ylabel("certified shift (upper bound)")
    ax.set_xlim(0, lim * 1.05)
    ax.set_ylim(0, lim * 1.05)
    ax.legend(fontsize=7, markerscale=3)
    ax.grid(alpha=0.3)
    ax.set_title("(a) Δ_ε(g; x) per sample: attack below, certificate above", fontsize=10)
    ax = axes[1]

    grid = np.asarray(record["eps_grid"])
    for name in names:
        if name.startswith("pgd/"):
            continue  # the PGD backbone's curves lie on the FGM backbone's (see the JSON)
        s = record["per_seed_by_eps"][name]
        color, ls = colors[name.split("/")[0]], "-" if "clean probe" in name else "--"
        band(
            ax,
            grid,
            np.asarray(s["robust_acc"], float).T,
            color=color,
            ls=ls,
            marker="o",
            ms=3,
            label=f"{short(name)}: robust (attacks)",
        )
        band(
            ax,
            grid,
            np.asarray(s["certified_acc"], float).T,
            color=color,
            ls=ls,
            marker="s",
            ms=3,
            lw=2.5,
            alpha=0.6,
            label=f"{short(name)}: certified",
        )
    ax.set_xscale("log")
    ax.set_xlabel("ℓ2 radius ε (log scale)")
    ax.set_ylabel("accuracy: under attacks (upper bound) / REP-certified (lower bound)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(
        "(b) what the criterion certifies, against what the attacks leave\n(PGD backbone omitted: it lies on the "
        "FGM one)",
        fontsize=10,
    )
    x = np.arange(len(names))
    ax = axes[2]
    inc = [np.mean(record["per_seed"][n]["mean_loss_increase"]) for n in names]
    bound = [np.mean(record["per_seed"][n]["mean_loss_bound"]) for n in names]
    ax.bar(x - 0.2, inc, 0.4, color="0.6", label="mean loss increase the attacks achieve")
    ax.bar(x + 0.2, bound, 0.4, color="k", alpha=0.7, label="mean bound |v| Δ_certified")
    viol = [int(np.sum(record["per_seed"][n]["violations_loss"])) for n in names]
    for xi, vv, b in zip(x, viol, bound):
        ax.text(xi, b, f"{vv} violations", ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(x, [short(n) for n in names], fontsize=7, rotation=25, ha="right")
    ax.set_ylabel(f"logistic loss increase at ε={record['eps']:g} (log scale)")
    ax.legend(fontsize=8)
    ax.set_title("(c) the loss bound (i) holds on every sample; how loose it is", fontsize=10)
    c = record["config"]
    fig.suptitle(
        "Representation robustness bounds the downstream: certified shift ≥ attacked shift, bound ≥ loss increase, "
        "certified ⇒ robust\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}, {len(record['seeds'])} seeds × "
        f"{record['n_test']} test samples",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


PRESETS = {
    "cpu": {
        **PRETRAIN_PRESETS["cpu"],
        "seeds": 6,
        "options": {
            "n_down": 2048,
            "down_lr": 0.01,
            "restarts": 2,
            "keep_samples": 3000,
            "eps_fractions": (0.02, 0.05, 0.1, 0.25, 0.5),
            "verdict_fraction": 0.1,
        },
    },
    "gpu": {
        **PRETRAIN_PRESETS["gpu"],
        "seeds": 16,
        "options": {
            "n_down": 8192,
            "down_lr": 0.01,
            "restarts": 4,
            "keep_samples": 5000,
            "eps_fractions": (0.01, 0.02, 0.05, 0.1, 0.25, 0.5),
            "verdict_fraction": 0.1,
        },
    },
}

OPTIONS = (
    N_DOWN,
    Option("down_lr", float, 0.01, "learning rate of both linear heads", lo=0.0, strict_lo=True),
    Option("restarts", int, 2, "random restarts of the shift attack and of PGD", lo=1),
    Option("keep_samples", int, 3000, "per-sample shifts kept in the JSON for the scatter plot", lo=1),
    Option(
        "eps_fractions",
        float,
        (0.02, 0.05, 0.1, 0.25, 0.5),
        "radii ε as fractions of eval.taus[0]",
        lo=0.0,
        strict_lo=True,
        many=True,
    ),
    Option(
        "verdict_fraction",
        float,
        0.1,
        "the radius (a fraction of eval.taus[0]) at which backbones are compared",
        lo=0.0,
        strict_lo=True,
    ),
)


EXPERIMENT = Experiment(
    id="rep-bound",
    claim="REP",
    title="The representation bound and criterion on every sample",
    summary="certified vs attacked representation shift, the REP loss bound and criterion per sample, for each "
    "backbone and head",
    presets=with_test_preset(PRESETS, BACKBONE_CONTROLS),
    run=run,
    controls=BACKBONE_CONTROLS,
    plot=plot,
    claims=CLAIMS,
    options=OPTIONS,
)
