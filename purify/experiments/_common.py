"""Protocols shared by several experiments: the purification presets, the radius grid,
pre-training of backbones (supervised and contrastive) and downstream heads on them.

Pre-training is the purification protocol of fp-dynamics (clean for adv_start steps, then the
attack) run through `Context.sweep`, so backbones are resumable and identical across
experiments that ask for the same config and seeds. Downstream fits go through
`Context.downstream` (`purify.downstream.fit_and_evaluate`), resumable in the same runs folder,
on the backbone's own parameters (`purify.downstream.backbones`).
"""

from __future__ import annotations

import numpy as np

from purify import downstream, metrics
from purify.config import Config, ConfigError
from purify.data import Task
from purify.downstream import Along, select_by_validation
from purify.evaluate import network_curves, reference_gaps
from purify.experiment import ALWAYS_CONTROLLED, Context, Option
from purify.landmarks import headroom, window
from purify.results import Results
from purify.trace import at_chance

# A trained model whose clean accuracy is under this (halfway from chance to a working model)
# has collapsed to a near-constant predictor: robust by being useless. No verdict counts its
# robust accuracy (fp-lowcomplexity, roli-init, and every clean head of `clean_heads`).
COLLAPSED_BELOW = 0.75

# Smallest effects of relevance that several claims declare, each written once: two accuracy
# points is a robustness difference a reader would act on.
ACC_EFFECT = 0.02
ACC_DIFFERENCE = "two accuracy points: a robustness difference a reader would act on; below it the two are alike"
ACC_GAIN_TRAININGS = (
    "two accuracy points: a robustness gain a reader would act on; below it the two trainings are alike"
)
ACC_GAIN_HEADS = "two accuracy points: a robustness gain a reader would act on; below it the two heads are alike"

# The model families of the purification protocol, as claims name them.
NETS = ("clean-trained net", "FGM-trained net")

# The purification protocol (fp-dynamics): clean for adv_start steps, then FGM at hp.tau.
PURIFICATION_PRESETS = {
    "cpu": {
        "config": {
            "data.d": 64,
            "data.k": 4,
            "model.width": 256,
            "train.steps": 4000,
            "train.adv_start": 2000,
            "train.batch": 256,
            "train.attack": "fgm",
            "hp.tau": 0.25,
            "hp.lr": 0.1,
            "hp.beta": 0.6,
            "eval.taus": (0.25,),
            "eval.n_eval": 1024,
        },
        "seeds": 8,
    },
    "gpu": {
        "config": {
            "data.d": 256,
            "data.k": 8,
            "model.width": 1024,
            "train.steps": 20000,
            "train.adv_start": 10000,
            "train.batch": 512,
            "train.attack": "fgm",
            "hp.tau": 0.177,
            "hp.lr": 0.1,
            "hp.beta": 0.6,
            "eval.taus": (0.177,),
            "eval.n_eval": 4096,
            "train.n_log": 40,
        },
        "seeds": 32,
    },
}

# The regime with headroom, the main one of the purification claims (docs/science.md section 4):
# `sign` magnitudes with k odd give every example a label margin |<w*, z>| >= 1/sqrt(k), so
# between 1/sqrt(d), where the best linear classifier has lost every example of the smallest
# margin, and the oracle pure network's smallest flip radius (1 - beta)/sqrt(k), the oracle is
# exactly robust and the linear classifier is not (`purify.landmarks.headroom`). Its verdict
# radius is the middle of that window (`headroom_radius`); FGM trains at HEADROOM_TRAIN_TAU.
HEADROOM_REGIME = "margin regime (sign magnitudes, headroom)"
NO_HEADROOM_REGIME = "uniform regime (no headroom)"
# FGM runs nine times as long as clean training, logged at 40 points: at 2000 + 2000 steps the
# FGM nets' robust accuracy at the verdict radius was still rising (0.881 mean, development seeds
# 0-3) while their clean accuracy had long settled, and at 2000 + 8000 (0.977, seeds 0-7) it
# still moved by more than ROBUST_DRIFT from the log step before the last fifth (5257) to the end
# in 7 of 8 runs. The gpu preset keeps the cpu preset's ratio, unmeasured.
HEADROOM_SETTINGS = {
    "cpu": {"data.k": 5, "data.magnitude": "sign", "train.steps": 20000, "train.adv_start": 2000, "train.n_log": 40},
    # k = 5 at d = 256: the headroom (0.0625 .. 0.179) reaches into the asymptotic window (0.140 .. 1)
    "gpu": {"data.k": 5, "data.magnitude": "sign", "train.steps": 100000, "train.adv_start": 10000, "train.n_log": 40},
}
# FGM's training radius in the regime with headroom: its verdict radius rounded down to two
# places (0.1519 on the cpu preset, 0.1593 on the gpu one, 0.2039 on the test one).
HEADROOM_TRAIN_TAU = {"cpu": 0.15, "gpu": 0.15, "test": 0.2}
# Today's uniform regime, kept as the second row: its k and FGM radius per preset.
# Its schedule is the purification protocol's of the same preset, so the second row is today's
# uniform regime as it was run (and its sweep the one the other experiments share).
_SCHEDULE = ("train.steps", "train.adv_start", "train.n_log")
UNIFORM_ROW = {
    "cpu": {"uniform_k": 4, "uniform_tau": 0.25},
    "gpu": {"uniform_k": 8, "uniform_tau": 0.177},
    "test": {"uniform_k": 2, "uniform_tau": 0.3},
}
# What the second row changes (the main row takes every setting as given): `derives` of both experiments.
REGIME_DERIVES = {
    "data.magnitude": "the second row is the uniform regime without headroom ('uniform')",
    "data.k": "exp.uniform_k in the second row",
    "hp.tau": "exp.uniform_tau in the second row",
    "eval.taus": "(exp.uniform_tau,) in the second row",
    **{k: "exp.uniform_schedule in the second row" for k in _SCHEDULE},
}
REGIME_OPTIONS = (
    Option(
        "uniform_k",
        int,
        4,
        "k of the second row, the uniform regime without headroom (none: no second row)",
        lo=1,
        optional=True,
    ),
    Option("uniform_tau", float, 0.25, "FGM training radius of the second row", lo=0.0, strict_lo=True),
    Option("uniform_schedule", dict, {}, "the second row's train.steps, train.adv_start and train.n_log"),
)


def headroom_radius(cfg: Config) -> float:
    """The verdict radius of the regime with headroom, to 4 decimals: the middle of the part of
    `landmarks.headroom`'s window (1/sqrt(d) .. the oracle's smallest flip radius) inside the
    asymptotic window `DataConfig.window` (sqrt(k)/sqrt(d) .. 1 in the units of sign
    magnitudes) where the two overlap (d > (k / (1 - beta))^2), else the middle of the whole
    headroom. A clear error where the headroom is empty or the data model has none."""
    try:
        lo, hi = headroom(cfg.data, cfg.hp.beta)
    except ValueError as e:
        name, value = ("data.k", cfg.data.k) if "even" in str(e) else ("data.magnitude", cfg.data.magnitude)
        raise ConfigError(f"{name}={value!r} is not allowed for the headroom regime: {e}") from None
    if not lo < hi:
        raise ConfigError(
            f"data.d={cfg.data.d}, data.k={cfg.data.k}, hp.beta={cfg.hp.beta:g} are not allowed for the headroom "
            f"regime: its window is empty (1/sqrt(d) = {lo:.4g} >= the oracle's smallest flip radius {hi:.4g}); "
            "raise d, lower k or lower beta"
        )
    w_lo = cfg.data.window[0]
    return round(((w_lo if w_lo < hi else lo) + hi) / 2, 4)


def regime_presets(options: dict[str, dict] | None = None) -> dict:
    """The cpu, gpu and test presets of the purification protocol in the regime with headroom
    (HEADROOM_SETTINGS, FGM at HEADROOM_TRAIN_TAU, evaluated at the headroom radius), each with
    its second row's options (UNIFORM_ROW) and `options[preset]`. The test preset's tiny sizes
    are d = 32, k = 3, which keep a window (1/sqrt(32) = 0.177 < 0.4/sqrt(3) = 0.231)."""
    options = options or {}
    presets = {}
    for name, p in PURIFICATION_PRESETS.items():
        config = {**p["config"], **HEADROOM_SETTINGS[name], "hp.tau": HEADROOM_TRAIN_TAU[name]}
        schedule = {"uniform_schedule": {k: Config().set(**p["config"]).get(k) for k in _SCHEDULE}}
        presets[name] = {
            **p,
            "config": config,
            "options": {**UNIFORM_ROW[name], **schedule, **options.get(name, {})},
        }
    tiny = {"uniform_schedule": {k: TINY.get(k, Config().get(k)) for k in _SCHEDULE}}
    presets = with_test_preset(presets, None, {**UNIFORM_ROW["test"], **tiny, **options.get("test", {})})
    presets["test"]["config"] |= {"data.d": 32, "data.k": 3, "hp.tau": HEADROOM_TRAIN_TAU["test"]}
    for p in presets.values():
        p["config"]["eval.taus"] = (headroom_radius(Config().set(**p["config"])),)
    return presets


def uniform_row(cfg: Config, options: dict) -> Config | None:
    """The second row's config: `cfg` in the uniform regime without headroom (k = exp.uniform_k,
    FGM and evaluation at exp.uniform_tau); None when exp.uniform_k is none."""
    if options["uniform_k"] is None:
        return None
    tau = float(options["uniform_tau"])
    settings = {"data.magnitude": "uniform", "data.k": options["uniform_k"], "hp.tau": tau, "eval.taus": (tau,)}
    return cfg.set(**settings, **options["uniform_schedule"])


def regime_record(rows: dict) -> dict:
    """The record's part of an experiment run in several regimes, {name: (config, body)}: each
    body under `regimes` with its config, the flagged runs of all as [regime, row, seed] (so a
    figure's note says which regime a run belongs to) and every statistic."""
    out = {"regimes": {}, "failed_runs": [], "chance_runs": [], "statistics": []}
    for name, (cfg, body) in rows.items():
        out["regimes"][name] = {"config": cfg.to_dict(), **{k: v for k, v in body.items() if k != "statistics"}}
        for key in ("failed_runs", "chance_runs"):
            out[key] += [[name, *item] for item in body.get(key, [])]
        out["statistics"] += body["statistics"]
    return out


def check_regimes(cfg: Config, options: dict) -> None:
    """Both rows, validated before anything trains: the main one must have headroom."""
    headroom_radius(cfg)
    if options["uniform_k"] is not None and options["uniform_k"] > cfg.data.d:
        raise ConfigError(f"exp.uniform_k={options['uniform_k']} is not allowed: must be <= data.d={cfg.data.d}")
    unknown = set(options["uniform_schedule"]) - set(_SCHEDULE)
    if unknown:
        raise ConfigError(f"exp.uniform_schedule={options['uniform_schedule']!r} is not allowed: keys {_SCHEDULE}")
    if options["uniform_k"] is not None:
        uniform_row(cfg, options)  # the second row's config, validated before anything trains


# Backbone pre-training presets for the transfer experiments: the same protocol.
PRETRAIN_PRESETS = {name: dict(p) for name, p in PURIFICATION_PRESETS.items()}

# The `test` preset's sizes: every code path of an experiment in seconds, for the test suite
# (verdicts at two seeds are `invalid` by design: a verdict needs 4 usable runs).
TINY = {
    "data.d": 16,
    "data.k": 2,
    "model.width": 32,
    "train.steps": 40,
    "train.adv_start": 20,
    "train.batch": 32,
    "eval.n_eval": 256,
    "eval.pgd_steps": 2,
    "eval.restarts": 1,
    "hp.tau": 0.3,
    "eval.taus": (0.3,),
}


def test_preset(cpu: dict, controls=None, options=None) -> dict:
    """The `test` preset: `cpu` at the sizes of `TINY`, two seeds, and `options` on top of the
    cpu preset's. A setting the experiment controls keeps the cpu preset's value (the experiment
    would overwrite it); one controlled only while an option is set is sized like the rest."""
    controlled = {**ALWAYS_CONTROLLED, **(controls or {})}
    tiny = {k: v for k, v in TINY.items() if not isinstance(controlled.get(k), str)}
    return {
        "config": {**cpu["config"], **tiny},
        "seeds": 2,
        "options": {**cpu.get("options", {}), **(options or {})},
    }


def with_test_preset(presets: dict, controls=None, options=None) -> dict:
    """`presets` and its `test` preset (`test_preset` of its cpu preset)."""
    return {**presets, "test": test_preset(presets["cpu"], controls, options)}


# Contrastive pre-training's settings on top of the pre-training preset (inh-contrastive, inh-nodes).
CONTRASTIVE = {"hp.init_scale": 0.1, "train.temperature": 0.2, "train.batch": 128}
CONTRASTIVE_VIEW_NOISES = {"cpu": (0.1, 0.5), "gpu": (0.1, 0.3, 0.5)}

RADIUS_OPTIONS = (
    Option("n_taus", int, 13, "radii in the evaluation grid 0 .. tau_max", lo=2),
    Option(
        "tau_max",
        float,
        None,
        "largest radius of the grid (none: 1.25 times the window's upper end 1/sqrt(k))",
        lo=0.0,
        strict_lo=True,
        optional=True,
    ),
)
N_DOWN = Option("n_down", int, 2048, "downstream training-set size drawn per run", lo=1)
OBJECTIVES = Option(
    "objectives", str, ("infonce", "spectral"), "contrastive objectives", choices=("infonce", "spectral"), many=True
)
VIEW_NOISES = Option(
    "view_noises",
    float,
    CONTRASTIVE_VIEW_NOISES["cpu"],
    "view-noise levels σ of contrastive pre-training",
    lo=0.0,
    many=True,
)
DOWN_LRS = Option(
    "down_lrs",
    float,
    (0.003, 0.01, 0.03),
    "learning rates of the clean heads (chosen on validation)",
    lo=0.0,
    strict_lo=True,
    many=True,
)


def failed_runs(res: Results, *label) -> list[list]:
    """The failed or diverged runs of a sweep as [*label, hparam row, seed index] (the record's
    'failed_runs' entries; a figure names them, no verdict counts them)."""
    return [[*label, *ij] for ij in np.argwhere(res.failed()).tolist()]


def chance_runs(res: Results, *label) -> list[list]:
    """The runs of a sweep that ended at chance, as [*label, hparam row, seed index]."""
    return [[*label, *ij] for ij in np.argwhere(res.at_chance()).tolist()]


def radius_grid(cfg: Config, options: dict) -> np.ndarray:
    """The evaluation radii: n_taus points from 0 to tau_max (default 1.25 x the window's top)."""
    hi = options["tau_max"] or 1.25 * window(cfg.data, cfg.eval.norm)[1]
    return np.linspace(0.0, float(hi), int(options["n_taus"]))


# What `supervised_backbones` sets: its three backbones are named by how they were trained.
BACKBONE_CONTROLS = {
    "train.attack": "the backbones are clean, FGM- and PGD-trained by name (train.attack is FGM, then PGD)",
}


def supervised_backbones(cfg: Config, seeds, ctx: Context, task) -> tuple[dict, list]:
    """{'clean', 'fgm', 'pgd'}: the final parameters of supervised pre-training (clean, then
    clean / FGM / PGD) as backbones {'W': (S, m, d), ...}, plus 'flagged' (S,): seeds any of whose
    three pre-training runs failed, diverged or ended at chance, and 'trained' (S,): seeds whose
    three runs settled (`Results.trained`); and the failed pre-training runs."""
    tau = cfg.hp.tau
    sup = ctx.sweep(cfg, grid={"tau": [0.0, tau]}, seeds=seeds, task=task)
    pgd = ctx.sweep(cfg.set(**{"train.attack": "pgd"}), grid={"tau": [tau]}, seeds=seeds, task=task)
    failed = failed_runs(sup, "fgm") + failed_runs(pgd, "pgd")
    failed += chance_runs(sup, "fgm", "at chance")
    failed += chance_runs(pgd, "pgd", "at chance")
    return {
        "clean": downstream.backbones(sup, rows=0),
        "fgm": downstream.backbones(sup, rows=1),
        "pgd": downstream.backbones(pgd, rows=0),
        "flagged": sup.flagged().any(0) | pgd.flagged()[0],
        "trained": sup.trained().all(0) & pgd.trained()[0],
    }, failed


def contrastive_config(cfg: Config, objective: str, attack: str) -> Config:
    return cfg.set(**{"train.objective": objective, "train.attack": attack})


def contrastive_name(objective: str, noise: float, mode: str) -> str:
    return f"{objective}/σ={noise:g}/{mode}"


def contrastive_backbones(ctx: Context, pcfg: Config, noises, with_clean: bool, seeds, task):
    """One sweep over view noise x (0 and) the radius: rows (noise, tau), noise slowest."""
    taus = [0.0, pcfg.hp.tau] if with_clean else [pcfg.hp.tau]
    return ctx.sweep(pcfg, grid={"noise": list(noises), "tau": taus}, seeds=seeds, task=task)


def down_config(cfg: Config, options: dict, **kw) -> downstream.DownstreamConfig:
    """Downstream sizes that scale with the pre-training config: a quarter of its steps, its
    batch halved, its evaluation size and radii, and options['n_down'] training samples."""
    base = {
        "steps": max(4, cfg.train.steps // 4),
        "probe_steps": max(4, cfg.train.steps // 8),
        "batch": max(8, cfg.train.batch // 2),
        "n_max": int(options["n_down"]),
        "n_val": max(32, cfg.eval.n_eval // 2),
        "n_test": cfg.eval.n_eval,
        "taus": tuple(cfg.eval.taus),
        "eval_pgd_steps": cfg.eval.pgd_steps,
        "restarts": cfg.eval.restarts,
        "pgd_steps": min(5, cfg.eval.pgd_steps),
        "norm": cfg.eval.norm,
        "noise": cfg.hp.noise,
    }
    base.update(kw)
    return downstream.DownstreamConfig(**base)


def snapshot_steps(cfg: Config, fractions) -> tuple[int, ...]:
    """Steps adv_start + f (steps - adv_start): the adversarial phase cut at fractions f."""
    a, n = cfg.train.adv_start, cfg.train.steps
    return tuple(sorted({round(a + f * (n - a)) for f in fractions}))


def oracle_backbone(task: Task) -> np.ndarray:
    """The oracle pure representation's first layer: one unit per feature, W = M^T (d, d), unit
    rows (thresholds by the relative rule: beta z_min)."""
    return np.asarray(task.M).T.copy()


def weighted_purity(W: np.ndarray, M) -> np.ndarray:
    """`purify.metrics.weighted_purity` of each backbone in W (..., m, d), one at a time: XLA sums
    a batch of rows in another order than one row, and the records hold these means to the last bit."""
    W = np.asarray(W)
    flat = W.reshape((-1,) + W.shape[-2:])
    return np.asarray([float(metrics.weighted_purity(w, M)) for w in flat]).reshape(W.shape[:-2])


def features_per_neuron(W: np.ndarray, M) -> np.ndarray:
    """Features per neuron n_i(0.5) of each neuron of each backbone: (..., m)."""
    W = np.asarray(W)
    flat = W.reshape((-1,) + W.shape[-2:])
    out = [np.asarray(metrics.features_per_neuron(metrics.feature_coefficients(w, M))) for w in flat]
    return np.asarray(out).reshape(W.shape[:-1])


def probe(
    ctx: Context,
    cfg: Config,
    dc: downstream.DownstreamConfig,
    task: Task,
    backbone: dict,
    seeds: np.ndarray,
    theta: np.ndarray,
    **kw,
) -> dict:
    """Fit and evaluate downstream models on backbones {'W': (R, m, d), ...} with per-run seeds (R,)."""
    return ctx.downstream(cfg, dc, task.M, seeds=seeds, backbone=backbone, beta=cfg.hp.beta, theta=theta, **kw)


def attack_gaps(cfg: Config, dc: downstream.DownstreamConfig, task: Task, res: Results, index, theta) -> np.ndarray:
    """(len,): the reference attack's gap at the first radius (`downstream.reference_gaps`) of the
    fitted models of a `fit_grid` result at the grid points `index` (one index array per grid
    axis, in the grid's order; its 'seed' axis labels the seeds), on task vectors `theta`: (D,)
    for all, or one per point."""
    index = tuple(np.asarray(i, int).ravel() for i in index)
    seeds = np.asarray(res.coords["seed"])[index[list(res.meta["swept"]).index("seed")]]
    params = {k.removeprefix("params/"): res[k][index] for k in res.arrays if k.startswith("params/")}
    return downstream.reference_gaps(
        cfg, dc, task.M, seeds=seeds, params=params, beta=cfg.hp.beta, theta=np.asarray(theta)
    )[:, 0]


def clean_heads(
    ctx: Context,
    cfg: Config,
    dc: downstream.DownstreamConfig,
    task: Task,
    backbone: dict,
    seeds: np.ndarray,
    thetas: dict,
    lrs,
    audit=(),
) -> tuple[dict, int]:
    """Clean linear heads on backbones {'W': (B, S, m, d), ...} for every task in `thetas` (name ->
    (D,)), on one grid (task, backbone, seed, learning rate); per (task, backbone, seed) the
    learning rate with the best clean validation accuracy is kept. Returns {task: {'robust',
    'clean', 'at_chance', 'collapsed', 'attack_gap'}} with (B, S) test accuracies (robust at the
    first radius), the heads at chance (clean accuracy <= 0.6, or not finite), the collapsed ones
    (clean accuracy below COLLAPSED_BELOW, at chance included) and, for the kept heads on the
    backbones `audit` (indices into B), the reference attack's gap at the first radius
    (`downstream.reference_gaps`; NaN on the other backbones), and the number of non-finite fits."""

    names = list(thetas)
    B, S = backbone["W"].shape[:2]
    stack = np.stack([thetas[n] for n in names])  # (task, D)
    seeds = np.asarray(seeds)
    axes = {"task": names, "backbone": np.arange(B), "seed": seeds, "lr": np.asarray(lrs, np.float32)}
    res = ctx.downstream_grid(
        cfg,
        dc,
        task.M,
        axes,
        seeds=Along(("seed",), seeds),
        backbone=Along(("backbone", "seed"), backbone),
        theta=Along(("task",), stack),
        beta=cfg.hp.beta,
        n=dc.n_max,
        lr=Along(("lr",), np.asarray(lrs, np.float32)),
    )
    best, (robust, clean) = select_by_validation(res["val_clean"], res["robust"][..., 0], res["clean"])
    K = len(names)
    gap = np.full((K, B, S), np.nan)
    audit = sorted({int(b) for b in audit})
    if audit:
        k, b, s = (a.ravel() for a in np.meshgrid(np.arange(K), np.asarray(audit), np.arange(S), indexing="ij"))
        gap[k, b, s] = attack_gaps(cfg, dc, task, res, (k, b, s, best[k, b, s]), stack[k])
    heads = {
        n: {
            "robust": robust[i],
            "clean": clean[i],
            "at_chance": at_chance(np.nan_to_num(clean[i], nan=0.0)),
            "collapsed": ~(np.nan_to_num(clean[i], nan=0.0) >= COLLAPSED_BELOW),
            "attack_gap": gap[i],
        }
        for i, n in enumerate(names)
    }
    return heads, int(res["failed"].sum())


def end_to_end(ctx, cfg: Config, task: Task, thetas: dict, seeds) -> dict:
    """The reference a transferred head is held against: the network trained end to end on each
    downstream task with cfg's schedule at hp.tau (clean, then the attack). Returns {task:
    {'robust', 'clean', 'attack_gap', 'trained'}} with (S,) accuracies at the first evaluation
    radius, the reference attack's gap there (`purify.evaluate.reference_gaps`) and whether the
    net settled (`Results.trained`)."""
    import jax.numpy as jnp

    out = {}
    for name, theta in thetas.items():
        dtask = Task(M=task.M, w_star=jnp.asarray(theta, jnp.float32)[None, :])
        res = ctx.sweep(cfg, grid={"tau": [cfg.hp.tau]}, seeds=seeds, task=dtask)
        curves = network_curves(cfg, res, dtask, cfg.eval.taus[:1])
        gap = reference_gaps(cfg, res, dtask, cfg.eval.taus[:1], rows=(0,))[0, :, 0]
        out[name] = {
            "robust": curves["robust"][0, :, 0],
            "clean": curves["clean"][0],
            "attack_gap": gap,
            "trained": res.trained()[0],
        }
    return out
