"""nrt-transfer [NRT]: does clean fine-tuning carry a clean backbone's non-robust features downstream?

On a new dense task, at several downstream training-set sizes, with clean training throughout:
full fine-tuning from the clean backbone; the same network trained from scratch (small random
first layer); linear probes on the clean and on the FGM backbone; and the remedy, full
fine-tuning from the FGM backbone with and without the feature-discrepancy penalty
lam |g - g_pre|^2 / m at several strengths lam. Learning rates are swept and chosen on validation by clean accuracy
(every model here is trained clean). Reported on the test split: clean and robust accuracy,
the confidence sigma(|f|) on clean and on PGD-attacked inputs, and the accuracy under a
representation attack crafted on the clean pre-trained backbone (the shift attack on g_pre at
the same radius) and transferred unchanged to each model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from purify import attacks, make_task, network
from purify.claims import SET_AFTER_RESULTS, Claim, statistic
from purify.compilation import program
from purify.config import Config, ConfigError
from purify.downstream import Along, downstream_tasks, flatten_along, logits, run_keys, select_by_validation, splits
from purify.experiment import Context, Experiment, Option
from purify.plotting import band
from purify.trace import at_chance

from ._common import (
    BACKBONE_CONTROLS,
    N_DOWN,
    PRETRAIN_PRESETS,
    attack_gaps,
    down_config,
    supervised_backbones,
    with_test_preset,
)

MODELS = (
    "fine-tuned (clean backbone)",
    "from scratch",
    "linear probe (clean backbone)",
    "linear probe (FGM backbone)",
    "fine-tuned (FGM backbone)",
)


ACC = "two accuracy points: a robustness difference a reader would act on; below it the two models are alike"
_acc = {"min_effect": 0.02, "why": ACC, "resolution": "accuracy difference", "gates": ("above chance", "trained")}
# Robust accuracies are re-measured with the reference attack. The transfer-attack claims read
# the accuracy under one fixed, transferred perturbation, not a worst case: no attack to converge.
_robust = {**_acc, "gates": ("above chance", "trained", "attack converged")}
AUDITED = MODELS[:2]  # with every remedy model: the ones whose robust accuracy a verdict reads
REMEDY = "n={n}: remedy: FGM backbone + discrepancy penalty (λ={lam:g}) more robust than fine-tuning the clean backbone"
CLAIMS = (
    Claim(
        "fine-tuning-less-robust",
        "n={n}: fine-tuning the clean backbone ends less robust than training from scratch (NRT)",
        models=MODELS[:2],
        **_robust,
    ),
    Claim(
        "remedy",
        REMEDY,
        models=(MODELS[0], "fine-tuned (FGM backbone) + discrepancy penalty"),
        chosen_after=SET_AFTER_RESULTS + "; lambda = the largest of a grid widened after seeing results (the rule "
        "fixed before the first run used lambda = 1)",
        replaces="remedy-lambda-1",
        **_robust,
    ),
    Claim("remedy-lambda-1", REMEDY, models=(MODELS[0], "fine-tuned (FGM backbone) + discrepancy penalty"), **_robust),
    Claim(
        "transfer-attack-hurts",
        "n={n}: the representation attack crafted on the clean backbone hurts its fine-tuned model more than the "
        "scratch model",
        models=MODELS[:2],
        **_acc,
    ),
    Claim(
        "transfer-attack-excess",
        "n={n}: the transferred representation attack does more harm beyond random noise to the fine-tuned model "
        "than to the scratch model",
        models=MODELS[:2],
        chosen_after=SET_AFTER_RESULTS
        + "; added after the statistic above was seen to be confounded by the two models' clean accuracy",
        **_acc,
    ),
)


def remedy_name(lam: float) -> str:
    return f"fine-tuned (FGM backbone) + discrepancy λ={lam:g}"


def _extra_metrics(cfg: Config, dc, task, theta, eps):
    """Confidence on clean / PGD inputs and accuracy under the transferred representation attack."""
    arch, beta = network.Architecture.of(cfg), cfg.hp.beta

    def one(params, key, pre):
        _, _, (x, y) = splits(jax.random.split(key, 4)[0], cfg.data, theta, task.M, dc, which=(2,))
        f = lambda v: logits(arch, params, v, beta)
        k1, k2 = jax.random.split(jax.random.fold_in(key, 11))
        delta = attacks.pgd(lambda v: -y * f(v), x, eps, dc.norm, dc.eval_pgd_steps, key=k1)
        # the perturbation that moves the pre-trained representation most, crafted once per sample
        g_pre = lambda v: network.hidden(arch, pre, v, beta)
        obj = lambda v: ((g_pre(v) - g_pre(x)) ** 2).sum(-1)
        rep_delta = attacks.pgd(obj, x, eps, dc.norm, 2 * dc.eval_pgd_steps, key=k2, restarts=2)
        return {
            "conf_clean": jax.nn.sigmoid(jnp.abs(f(x))).mean(),
            "conf_attacked": jax.nn.sigmoid(jnp.abs(f(x + delta))).mean(),
            "acc_transfer": (y * f(x + rep_delta) > 0).mean(),
            "acc_random": (y * f(x + attacks.random_start(k2, x.shape, eps, dc.norm)) > 0).mean(),
        }

    return program(jax.vmap(one))


def run(cfg: Config, seeds, ctx: Context) -> dict:
    o = ctx.options
    task = make_task(cfg.data)
    tau, eps = cfg.hp.tau, float(cfg.eval.taus[0])
    bbs, failed = supervised_backbones(cfg, seeds, ctx, task)
    bbs_flagged = bbs.pop("flagged")
    settled = {"trained": bbs.pop("trained")}  # the backbones the models start from
    theta = downstream_tasks(cfg.data.n_features, np.asarray(task.w_star[0]))["dense"]
    sizes = [int(n) for n in o["sizes"]]
    seed_ids = np.asarray(seeds)
    S, N = len(seed_ids), len(sizes)
    m, d = cfg.model.width, cfg.data.d
    # the development seeds 0..S-1 keep the stream their records were made with; any other
    # block (the confirmatory seeds) draws its scratch inits from its own seeds
    development = seed_ids.tolist() == list(range(S))
    rng = np.random.default_rng(12345 if development else [12345, *seed_ids.tolist()])
    scratch = {"W": (rng.standard_normal((S, m, d)) * cfg.hp.init_scale / np.sqrt(d)).astype(np.float32)}
    if "b" in bbs["clean"]:  # fixed or trainable thresholds start where the relative rule would be
        scratch["b"] = (cfg.hp.beta * cfg.data.min_magnitude * np.linalg.norm(scratch["W"], axis=-1)).astype(np.float32)
    lams = [float(v) for v in o["lams"]]
    starts = {
        MODELS[0]: ("full", bbs["clean"], 0.0),
        MODELS[1]: ("full", scratch, 0.0),
        MODELS[2]: ("probe", bbs["clean"], 0.0),
        MODELS[3]: ("probe", bbs["fgm"], 0.0),
        MODELS[4]: ("full", bbs["fgm"], 0.0),
    }
    starts.update({remedy_name(lam): ("full+dm", bbs["fgm"], lam) for lam in lams})
    extra = None
    res = {}
    n_failed = 0
    for name, (method, W0, lam) in starts.items():
        lrs = np.asarray(o["lrs"]["probe" if method == "probe" else "full"], np.float32)
        L = len(lrs)
        dc = down_config(
            cfg,
            o,
            method="full" if method == "full+dm" else method,
            n_max=max(sizes),
            taus=(eps,),
            discrepancy=method == "full+dm",
        )
        axes = {"n": np.asarray(sizes), "seed": seed_ids, "lr": lrs}
        fit = ctx.downstream_grid(
            cfg,
            dc,
            task.M,
            axes,
            seeds=Along(("seed",), seed_ids),
            backbone=Along(("seed",), W0),
            theta=theta,
            beta=cfg.hp.beta,
            n=Along(("n",), np.asarray(sizes)),
            lr=Along(("lr",), lrs),
            lam=lam,
        )
        n_failed += int(fit["failed"].sum())
        extra = extra or _extra_metrics(cfg, dc, task, jnp.asarray(theta), eps)
        # the extra metrics in one vmapped call over the grid's runs, as the fits were made
        flat = {
            k.removeprefix("params/"): v.reshape((N * S * L,) + v.shape[3:])
            for k, v in fit.arrays.items()
            if k.startswith("params/")
        }
        keys = run_keys(flatten_along(Along(("seed",), seed_ids), axes))
        pre = flatten_along(Along(("seed",), bbs["clean"]), axes)
        ex = {k: np.asarray(v).reshape(N, S, L) for k, v in extra(flat, keys, pre).items()}
        best, picked = select_by_validation(
            fit["val_clean"],
            fit["clean"],
            fit["robust"][..., 0],
            *(ex[k] for k in ("conf_clean", "conf_attacked", "acc_transfer", "acc_random")),
        )
        res[name] = dict(zip(("clean", "robust", "conf_clean", "conf_attacked", "acc_transfer", "acc_random"), picked))
        if name in AUDITED or method == "full+dm":  # the models whose robust accuracy a verdict reads
            ni, si = (a.ravel() for a in np.meshgrid(np.arange(N), np.arange(S), indexing="ij"))
            res[name]["attack_gap"] = attack_gaps(cfg, dc, task, fit, (ni, si, best[ni, si]), theta).reshape(N, S)

    chance = {name: at_chance(np.nan_to_num(r["clean"], nan=0.0)) for name, r in res.items()}  # (N, S)
    statistics = []
    for ni, n in enumerate(sizes):
        ft, sc = res[MODELS[0]], res[MODELS[1]]
        flag = bbs_flagged | chance[MODELS[0]][ni] | chance[MODELS[1]][ni]  # (S,)
        gates = {**settled, "attack converged": np.maximum(ft["attack_gap"][ni], sc["attack_gap"][ni])}
        gain = sc["robust"][ni] - ft["robust"][ni]
        statistics.append(statistic("fine-tuning-less-robust", gain, flagged=flag, gates=gates, n=n))
        for lam, claim in ((lams[-1], "remedy"), (1.0, "remedy-lambda-1")):
            if claim == "remedy-lambda-1" and (1.0 not in lams or lams[-1] == 1.0):
                continue
            rm = res[remedy_name(lam)]
            f = flag | chance[remedy_name(lam)][ni]
            g = {**settled, "attack converged": np.maximum(ft["attack_gap"][ni], rm["attack_gap"][ni])}
            gain = rm["robust"][ni] - ft["robust"][ni]
            statistics.append(statistic(claim, gain, flagged=f, gates=g, n=n, lam=lam, pair_key=f"n={n}"))
        statistics.append(
            statistic(
                "transfer-attack-hurts",
                sc["acc_transfer"][ni] - ft["acc_transfer"][ni],
                flagged=flag,
                gates=settled,
                n=n,
            )
        )
        # the same, net of clean-accuracy differences: the attack's damage beyond random noise of the same norm
        excess = lambda r, ni=ni: r["acc_random"][ni] - r["acc_transfer"][ni]
        statistics.append(
            statistic("transfer-attack-excess", excess(ft) - excess(sc), flagged=flag, gates=settled, n=n)
        )
    return {
        "eps": eps,
        "train_tau": tau,
        "sizes": sizes,
        "models": list(starts),
        "lams": lams,
        "lrs": {k: list(v) for k, v in o["lrs"].items()},
        "results": {name: {k: np.asarray(v).tolist() for k, v in r.items()} for name, r in res.items()},
        "n_failed_downstream": n_failed,
        "failed_runs": failed,
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    sizes = np.asarray(record["sizes"])
    colors = dict(zip(record["models"], ["tab:blue", "k", "tab:cyan", "tab:orange", "tab:red"]))
    remedies = record["models"][len(colors) :]
    colors.update(zip(remedies, plt.cm.Purples(np.linspace(0.45, 0.95, len(remedies)))))
    panels = [
        ("robust", f"robust accuracy at ℓ2 ε={record['eps']:g}"),
        ("clean", "clean accuracy"),
        ("acc_transfer", "accuracy under the representation attack\ncrafted on the clean backbone (transferred)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    ax = axes[1, 1]
    for name in (record["models"][0], record["models"][1], record["models"][-1]):
        for key, ls, mk in (("conf_clean", "-", "o"), ("conf_attacked", ":", "x")):
            band(
                ax,
                sizes,
                np.asarray(record["results"][name][key], float).T,
                color=colors[name],
                ls=ls,
                marker=mk,
                label=f"{name}, {'clean' if key == 'conf_clean' else 'PGD-attacked'} inputs",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("downstream training samples n")
    ax.set_ylabel("confidence: mean σ(|f(x)|) of the predicted class")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for ax, (key, ylabel) in zip(axes.ravel()[:3], panels):
        for name in record["models"]:
            band(
                ax,
                sizes,
                np.asarray(record["results"][name][key], float).T,
                label=name,
                color=colors[name],
                marker="o",
                ls="--" if "probe" in name else "-",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("downstream training samples n")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    c = record["config"]
    fig.suptitle(
        "Non-robustness transfer: clean fine-tuning from a clean backbone vs from scratch, probes, and the "
        "robust-backbone remedy\n"
        f"clean downstream training, learning rate chosen on validation clean accuracy; d={c['data']['d']}, "
        f"k={c['data']['k']}, "
        f"width={c['model']['width']}; {len(record['seeds'])} seeds, bands min–max",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


_LRS = {"probe": (0.003, 0.01, 0.03), "full": (0.001, 0.003, 0.01)}
PRESETS = {
    "cpu": {
        **PRETRAIN_PRESETS["cpu"],
        "seeds": 6,
        "options": {"sizes": (128, 512, 2048), "lrs": _LRS, "lams": (1.0, 10.0, 100.0), "n_down": 2048},
    },
    "gpu": {
        **PRETRAIN_PRESETS["gpu"],
        "seeds": 16,
        "options": {"sizes": (128, 512, 2048, 8192), "lrs": _LRS, "lams": (1.0, 10.0, 100.0, 1000.0), "n_down": 8192},
    },
}

OPTIONS = (
    Option("sizes", int, (128, 512, 2048), "downstream training-set sizes (each <= exp.n_down)", lo=1, many=True),
    Option("lrs", dict, _LRS, "learning rates swept for linear probes ('probe') and fine-tuning ('full')"),
    Option("lams", float, (1.0, 10.0, 100.0), "strengths λ of the feature-discrepancy penalty", lo=0.0, many=True),
    N_DOWN,
)


def _check(cfg: Config, o: dict) -> None:
    if max(o["sizes"]) > o["n_down"]:
        raise ConfigError(f"exp.sizes={o['sizes']!r} is not allowed: every size must be <= exp.n_down = {o['n_down']}")
    if not {"probe", "full"} <= set(o["lrs"]):
        raise ConfigError(f"exp.lrs={o['lrs']!r} is not allowed: must name learning rates for 'probe' and 'full'")


EXPERIMENT = Experiment(
    id="nrt-transfer",
    claim="NRT",
    title="Non-robustness transfer in fine-tuning, and its remedy",
    summary="fine-tuned vs from-scratch vs linear probe across downstream sizes; confidence; transferred "
    "representation attacks; DM remedy",
    presets=with_test_preset(PRESETS, BACKBONE_CONTROLS),
    run=run,
    controls=BACKBONE_CONTROLS,
    plot=plot,
    options=OPTIONS,
    check=_check,
    claims=CLAIMS,
)
