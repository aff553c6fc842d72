"""fp-lowcomplexity [FP]: can low-complexity models be robust in the window, however trained?

At the same data and tau: a linear classifier, random-features polynomials of degree <= 2 and
<= 3, and the NTK-linearized two-layer network (same width, standard-scale init), each trained
clean and adversarially on the network's schedule (see purify/baselines.py; Adam, learning
rate `exp.lr`), next to the clean and FGM-trained ReLU networks (the fp-dynamics sweep) and the
oracle pure network. "However trained" is taken per seed as the better of the two trainings
that did not collapse: a training whose clean accuracy is below COLLAPSED_BELOW predicts almost
one class, and its robust accuracy, near the majority rate, is not robustness (SCIENCE section
3); when both collapsed, the majority rate itself stands in (a constant predictor is always
available).
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np

from purify import attacks, baselines, make_task, sample
from purify.claims import SET_AFTER_RESULTS, Claim, statistic
from purify.compilation import program
from purify.config import Config
from purify.engine import Chunk, run_chunk
from purify.evaluate import (
    REFERENCE_N,
    REFERENCE_RESTARTS,
    REFERENCE_STEPS,
    eval_keys,
    eval_spec,
    landmark_curves,
    network_curves,
    reference_gaps,
)
from purify.experiment import Context, Experiment, Option
from purify.files import atomic_write_bytes
from purify.landmarks import window
from purify.plotting import band
from purify.store import fingerprint

from ._common import COLLAPSED_BELOW, RADIUS_OPTIONS, chance_runs, failed_runs, radius_grid, with_test_preset
from ._common import PURIFICATION_PRESETS as DYNAMICS_PRESETS

MODELS = {
    "linear": "linear",
    "poly2": "polynomial, degree ≤ 2 (random features)",
    "poly3": "polynomial, degree ≤ 3 (random features)",
    "ntk": "NTK-linearized network",
}


ACC = "two accuracy points: a robustness advantage a reader would act on; below it the models are alike"


def _claims() -> tuple[Claim, ...]:
    """Per baseline: the rule in use ("however trained": its better non-collapsed training) and
    the original one it replaced (the better of its two trainings, collapsed ones included)."""
    out = []
    for n, description in MODELS.items():
        models = ("FGM-trained net", f"{description} (clean- and adversarially trained)")
        out.append(
            Claim(
                f"beats-{n}",
                f"the FGM-trained ReLU net is more robust at tau={{tau:.3g}} than the {description}, however trained "
                f"(its better non-collapsed training, clean accuracy >= {COLLAPSED_BELOW})",
                min_effect=0.02,
                why=ACC,
                models=models,
                resolution="accuracy difference",
                gates=("above chance", "trained", "attack converged"),
                chosen_after=SET_AFTER_RESULTS
                + "; the collapse rule was set in the commit that first saved these results",
                replaces=f"beats-{n}-better-of",
            )
        )
        out.append(
            Claim(
                f"beats-{n}-better-of",
                f"the FGM-trained ReLU net is more robust at tau={{tau:.3g}} than the {description} (the better of "
                "its clean and adversarial training)",
                min_effect=0.02,
                why=ACC,
                models=models,
                resolution="accuracy difference",
                gates=("above chance", "trained", "attack converged"),
            )
        )
    return tuple(out)


def build(name: str, cfg: Config, key: jax.Array):
    if name == "linear":
        return baselines.linear(cfg, key)
    if name.startswith("poly"):
        return baselines.polynomial(cfg, key, degree=int(name[-1]))
    return baselines.ntk(cfg, key, cfg.hp.beta)


def baseline_curves(cfg: Config, task, name: str, index: int, seeds, taus, lr: float, audit_tau: float):
    """Clean accuracy and robust accuracy (2 trainings: clean, adversarial) x (seeds,) [x (n_tau,)]
    of one baseline, and the reference attack's gap (2, seeds) at audit_tau (on the first
    REFERENCE_N examples, as `purify.evaluate.reference_gaps` measures the networks')."""
    ec, spec = cfg.eval, eval_spec(cfg, taus)
    audit_spec = eval_spec(cfg, (audit_tau,))
    n_ref = min(REFERENCE_N, ec.n_eval)

    schedule = baselines.Schedule(cfg, task, lambda key: build(name, cfg, key), lr)
    logits = lambda key_init: build(name, cfg, key_init)[1]

    def evaluate(params, key_init, kd, ka):
        f = logits(key_init)
        x, _, y = sample(kd, cfg.data, task, ec.n_eval, cfg.hp.noise)
        margin = lambda v: y[:, 0] * f(params, v)
        clean, robust, _ = attacks.robust_accuracy(margin, x, y[:, 0], task.label_directions[0], ka, spec)
        xs, ys = x[:n_ref], y[:n_ref, 0]
        default, strong = attacks.audited_accuracy(
            lambda v: ys * f(params, v),
            xs,
            ys,
            task.label_directions[0],
            jax.random.fold_in(ka, 0xA0D),
            audit_spec,
            REFERENCE_STEPS,
            REFERENCE_RESTARTS,
        )
        return clean, robust, (default - strong)[0]

    # runs: (training, seed) = (clean, adversarial) x seeds, the same seed keys in both trainings
    seed_keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    k_init, k_data = jax.vmap(lambda k: tuple(jax.random.split(jax.random.fold_in(k, 1000 + index))))(seed_keys)
    kd, ka = (jnp.stack(k) for k in zip(*(eval_keys(s) for s in seeds)))
    taus_run = jnp.asarray([0.0, cfg.hp.tau])
    # outer axis: the training (its radius), inner: the seed
    init = program(jax.vmap(jax.vmap(schedule.init), in_axes=None, axis_size=2))
    advance = program(
        jax.vmap(
            jax.vmap(lambda st, ki, kt, tau: schedule.advance(st, ki, kt, tau, 0, schedule.steps), (0, 0, 0, None)),
            (0, None, None, 0),
        )
    )
    measure = program(jax.vmap(jax.vmap(evaluate), (0, None, None, None)))

    def outputs(state):
        clean, robust, gap = measure(state.params, k_init, kd, ka)
        return {"clean": clean, "robust": robust, "gap": gap, "params": state.params}

    out = run_chunk(
        Chunk(
            init=lambda: init(k_init),
            advance=lambda state, t0, t1: advance(state, k_init, k_data, taus_run),
            observe=lambda state, t: state,  # measured once, at the end (`outputs`)
            segments=schedule.segments,
            steps=schedule.steps,
            outputs=outputs,
        )
    )
    flat = {jax.tree_util.keystr(path): np.asarray(v) for path, v in jax.tree_util.tree_leaves_with_path(out["params"])}
    return np.asarray(out["clean"]), np.asarray(out["robust"]), np.asarray(out["gap"]), flat


def save_baselines(ctx: Context, cfg: Config, seeds, params: dict) -> str | None:
    """Every baseline's trained parameters, (2 trainings: clean, adversarial, seed, ...) per
    array, in one .npz of the runs folder named by what it holds (docs/runs.md)."""
    if ctx.runs_dir is None or jax.process_index() != 0:
        return None
    name = f"fp-lowcomplexity-baselines-{fingerprint({'config': cfg.to_dict(), 'seeds': [int(s) for s in seeds]})}.npz"
    buf = io.BytesIO()
    np.savez(buf, **{f"{model}{key}": v for model, p in params.items() for key, v in p.items()})
    atomic_write_bytes(ctx.runs_dir / name, buf.getvalue())
    return name


def _majority(cfg: Config, task, seed: int) -> float:
    """The majority-class rate of a seed's evaluation batch: what a constant predictor scores."""
    _, _, y = sample(eval_keys(seed)[0], cfg.data, task, cfg.eval.n_eval, cfg.hp.noise)
    p = float((np.asarray(y[:, 0]) > 0).mean())
    return max(p, 1 - p)


def run(cfg: Config, seeds, ctx: Context) -> dict:
    task = make_task(cfg.data)
    taus = tuple(float(t) for t in radius_grid(cfg, ctx.options))
    res = ctx.sweep(cfg, grid={"tau": [0.0, cfg.hp.tau]}, seeds=seeds, task=task)
    nets = network_curves(cfg, res, task, taus)
    lm = landmark_curves(cfg, task, res.coords["seed"], taus, noise=cfg.hp.noise, beta=cfg.hp.beta)
    curves = {"ReLU net": {"clean": nets["robust"][0], "adversarial": nets["robust"][1]}}
    clean_acc = {"ReLU net": {"clean": nets["clean"][0], "adversarial": nets["clean"][1]}}
    lo, hi = window(cfg.data, cfg.eval.norm)
    mid = np.sqrt(lo * hi)
    j = int(np.argmin(np.abs(np.asarray(taus) - mid)))
    baseline_gap, baseline_params = {}, {}
    for i, name in enumerate(MODELS):
        acc, rob, gap, params = baseline_curves(
            cfg, task, name, i, res.coords["seed"], taus, float(ctx.options["lr"]), taus[j]
        )
        curves[name] = {"clean": rob[0], "adversarial": rob[1]}
        clean_acc[name] = {"clean": acc[0], "adversarial": acc[1]}
        baseline_gap[name], baseline_params[name] = gap, params  # (2, S, ...): clean, adversarial training
    baselines_file = save_baselines(ctx, cfg, res.coords["seed"], baseline_params)
    majority = np.asarray([_majority(cfg, task, s) for s in res.coords["seed"]])
    collapsed = {n: {m: np.asarray(a) < COLLAPSED_BELOW for m, a in d.items()} for n, d in clean_acc.items()}
    relu = curves["ReLU net"]["adversarial"][:, j]
    flagged = res.flagged()[1]
    trained = res.trained()[1]
    # every robust accuracy a verdict reads, re-measured: the ReLU net's and both of each baseline's trainings
    relu_gap = reference_gaps(cfg, res, task, (taus[j],), rows=(1,))[0, :, 0]
    statistics = []
    for n in MODELS:
        trainings = ("clean", "adversarial")
        best = np.maximum.reduce([np.where(collapsed[n][m], -np.inf, curves[n][m][:, j]) for m in trainings])
        best = np.where(np.isfinite(best), best, majority)
        better_of = np.maximum(curves[n]["clean"][:, j], curves[n]["adversarial"][:, j])
        # a collapsed training enters only through the majority rate, which no attack moves
        entering = np.maximum.reduce(
            [np.where(collapsed[n][m], 0.0, baseline_gap[n][i]) for i, m in enumerate(trainings)]
        )
        gates = {"trained": trained, "attack converged": np.maximum(relu_gap, entering)}
        gates_all = {"trained": trained, "attack converged": np.maximum(relu_gap, baseline_gap[n].max(0))}
        statistics.append(statistic(f"beats-{n}", relu - best, flagged=flagged, gates=gates, tau=taus[j]))
        statistics.append(
            statistic(f"beats-{n}-better-of", relu - better_of, flagged=flagged, gates=gates_all, tau=taus[j])
        )
    return {
        "taus": list(taus),
        "window": [lo, hi],
        "norm": cfg.eval.norm,
        "tau_for_verdicts": taus[j],
        "train_tau": cfg.hp.tau,
        "models": MODELS,
        "optimizer": f"baselines: Adam, learning rate {ctx.options['lr']}; ReLU nets: SGD as configured",
        "curves": {n: {m: v.tolist() for m, v in d.items()} for n, d in curves.items()},
        "clean_accuracy": {n: {m: v.tolist() for m, v in d.items()} for n, d in clean_acc.items()},
        "oracle": lm["oracle"].tolist(),
        "majority_rate": majority.tolist(),
        "baselines_file": baselines_file,
        "attack_gap_reference": {
            "ReLU net (FGM)": relu_gap.tolist(),
            **{n: g.tolist() for n, g in baseline_gap.items()},
        },
        "collapsed_below_clean_accuracy": COLLAPSED_BELOW,
        "collapsed": {n: {m: v.tolist() for m, v in d.items()} for n, d in collapsed.items()},
        "failed_runs": failed_runs(res),
        "chance_runs": chance_runs(res),
        "attack_gap_reference_relu": relu_gap.tolist(),
        "statistics": statistics,
    }


def plot(record: dict):
    import matplotlib.pyplot as plt

    taus = np.asarray(record["taus"])
    lo, hi = record["window"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    colors = {"ReLU net": "tab:red", "linear": "k", "poly2": "tab:orange", "poly3": "tab:brown", "ntk": "tab:purple"}
    for ax, mode in zip(axes, ("clean", "adversarial")):
        ax.axvspan(lo, hi, color="0.9", zorder=0, label=f"window {lo:.3g} .. {hi:.3g}")
        ax.axhline(
            np.mean(record["majority_rate"]), color="0.3", lw=1, ls="-.", label="constant predictor (majority rate)"
        )
        for name, d in record["curves"].items():
            label = name if name == "ReLU net" else record["models"][name]
            acc = np.mean(record["clean_accuracy"][name][mode])
            n_col = int(np.sum(record["collapsed"][name][mode]))
            note = f"; collapsed in {n_col}/{len(record['seeds'])} seeds" if n_col else ""
            band(
                ax,
                taus,
                np.asarray(d[mode], dtype=float),
                label=f"{label} (clean acc {acc:.2f}{note})",
                color=colors[name],
                ls=":" if n_col else "-",
            )
        band(ax, taus, np.asarray(record["oracle"], dtype=float), label="oracle pure net", color="tab:green", ls="--")
        ax.set_xlabel(f"{'ℓ2' if record['norm'] == 'l2' else 'ℓ∞'} attack radius τ")
        ax.set_title(
            f"{'clean' if mode == 'clean' else 'adversarially (FGM, τ = ' + format(record['train_tau'], 'g') + ')'} "
            "trained",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("robust accuracy (min over FGM, PGD, dense attack)")
    c = record["config"]
    held = sum(v["verdict"] == "holds" for v in record["verdicts"])
    fig.suptitle(
        f"Claim: linear, polynomial and NTK models cannot be robust in the window, however trained "
        f"(holds for {held} of {len(record['verdicts'])} models at τ = {record['tau_for_verdicts']:.3g})\n"
        f"d={c['data']['d']}, k={c['data']['k']}, width={c['model']['width']}; {record['optimizer']}; bands: "
        f"min–max over {len(record['seeds'])} seeds",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    id="fp-lowcomplexity",
    claim="FP",
    title="Linear, polynomial and NTK models against the ReLU network, clean and adversarial",
    summary="linear, random-features polynomial (deg 2, 3) and NTK-linearized models, clean and adversarial, vs the "
    "ReLU net",
    presets=with_test_preset(
        {name: {**p, "options": {"n_taus": 13, "tau_max": None, "lr": 0.01}} for name, p in DYNAMICS_PRESETS.items()},
        None,
        {"n_taus": 4},
    ),
    options=(*RADIUS_OPTIONS, Option("lr", float, 0.01, "Adam learning rate of the baselines", lo=0.0, strict_lo=True)),
    run=run,
    plot=plot,
    claims=_claims(),
)
