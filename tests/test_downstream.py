"""Downstream learning: methods, head initializations, the pure-feature probe's analytic optimum,
vmapped row = single run, the discrepancy penalty, model selection, the sparse task's Bayes rate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify import downstream, representation
from purify.config import ConfigError, DataConfig
from purify.downstream import DownstreamConfig, fit_and_evaluate

DATA = DataConfig(d=16, k=2)
CFG = purify.Config(data=DATA)  # the backbones: relative thresholds, soft-threshold units


def _backbone(key=0):
    task = purify.make_task(DATA)
    rng = np.random.default_rng(key)
    W = np.concatenate([np.asarray(task.M).T, -np.asarray(task.M).T]) + 0.2 * rng.normal(size=(32, 16)) / 4
    return task, W.astype(np.float32)


@pytest.mark.slow
def test_pure_feature_probe_reaches_the_analytic_optimum():
    """On orthonormal pure features g_j = phi_b(z_j) the features are exchangeable after flipping
    signs by theta, so the optimal linear head is v proportional to theta: accuracy 1."""
    task = purify.make_task(DATA)
    theta = np.asarray(jax.random.rademacher(jax.random.key(5), (16,), dtype=jnp.float32))
    dc = DownstreamConfig(steps=800, n_max=2048, n_test=1024, batch=256, taus=(0.1,))
    out = fit_and_evaluate(
        CFG, dc, task.M, seeds=[0, 1], backbone={"W": np.asarray(task.M).T}, beta=0.5, theta=theta, n=2048, lr=0.05
    )
    v = out["params"]["v"]
    cos = v @ theta / (np.linalg.norm(v, axis=1) * np.linalg.norm(theta))
    assert np.all(cos > 0.99), cos
    assert np.all(out["clean"] >= 0.99), out["clean"]


@pytest.mark.slow
@pytest.mark.parametrize("method", downstream.METHODS)
def test_each_method_trains_exactly_its_parameters(method):
    task, W = _backbone()
    dc = DownstreamConfig(
        method=method, steps=20, n_max=256, n_val=64, n_test=64, batch=32, rank=2, taus=(0.1,), eval_pgd_steps=2
    )
    p = fit_and_evaluate(
        CFG, dc, task.M, seeds=[0], backbone={"W": W}, beta=0.5, theta=np.ones(16), n=256, lr=0.01, tau=0.1
    )["params"]
    start = downstream.initial_params(jax.random.split(downstream.run_keys([0])[0], 4)[1], {"W": jnp.asarray(W)}, 2)
    for name in ("W", "U", "V", "db", "v", "c"):
        moved = not np.array_equal(p[name][0], np.asarray(start[name]))
        assert moved == (name in downstream.TRAINED[method]), (method, name)


@pytest.mark.slow
@pytest.mark.parametrize("head_init", ["robust", "standard"])
def test_probed_head_init_runs_a_probe_stage_first(head_init):
    task, W = _backbone()
    base = {
        "method": "probe",
        "steps": 0,
        "probe_steps": 30,
        "n_max": 256,
        "n_val": 64,
        "n_test": 64,
        "batch": 32,
        "taus": (0.1,),
        "eval_pgd_steps": 2,
    }
    rand = fit_and_evaluate(  # the random head, trained for one step: about where it started
        CFG,
        DownstreamConfig(head_init="random", **{**base, "steps": 1}),
        task.M,
        seeds=[0],
        backbone={"W": W},
        beta=0.5,
        theta=np.ones(16),
        n=256,
        lr=0.01,
        tau=0.1,
    )
    init = fit_and_evaluate(
        CFG,
        DownstreamConfig(head_init=head_init, **base),
        task.M,
        seeds=[0],
        backbone={"W": W},
        beta=0.5,
        theta=np.ones(16),
        n=256,
        lr=0.01,
        tau=0.1,
    )
    assert not np.allclose(rand["params"]["v"], init["params"]["v"])  # steps=0: only the init stage moved the head
    with pytest.raises(purify.ConfigError, match="down.steps=0 is not allowed"):  # an unfitted random head
        DownstreamConfig(head_init="random", **base).validate(32, 16)
    assert init["clean"][0] > rand["clean"][0]


@pytest.mark.slow
def test_vmapped_downstream_row_equals_a_single_run():
    task, W = _backbone()
    dc = DownstreamConfig(
        method="full", steps=15, n_max=128, n_val=32, n_test=64, batch=16, taus=(0.1,), attack="fgm", eval_pgd_steps=2
    )
    many = fit_and_evaluate(
        CFG,
        dc,
        task.M,
        seeds=[3, 4, 5],
        backbone={"W": W},
        beta=0.5,
        theta=np.ones(16),
        n=[64, 128, 100],
        lr=[0.01, 0.003, 0.02],
        tau=0.1,
    )
    one = fit_and_evaluate(
        CFG, dc, task.M, seeds=[4], backbone={"W": W}, beta=0.5, theta=np.ones(16), n=128, lr=0.003, tau=0.1
    )
    np.testing.assert_allclose(many["params"]["W"][1], one["params"]["W"][0], rtol=1e-5, atol=1e-6)
    assert many["robust"][1, 0] == one["robust"][0, 0]


@pytest.mark.slow
def test_discrepancy_penalty_keeps_the_representation_near_the_pretrained_one():
    task, W = _backbone()
    kw = {
        "method": "full",
        "steps": 200,
        "n_max": 256,
        "n_val": 32,
        "n_test": 64,
        "batch": 32,
        "taus": (0.1,),
        "eval_pgd_steps": 2,
        "discrepancy": True,
    }
    out = fit_and_evaluate(
        CFG,
        DownstreamConfig(**kw),
        task.M,
        seeds=[0, 0],
        backbone={"W": W},
        beta=0.5,
        theta=np.ones(16),
        n=256,
        lr=0.01,
        lam=[0.0, 100.0],
    )
    drift = np.linalg.norm(out["params"]["W"] - W[None], axis=(1, 2))
    assert drift[1] < 0.5 * drift[0], drift


def test_downstream_bad_inputs_are_named_before_compiling():
    task, W = _backbone()
    with pytest.raises(ConfigError, match="down.method='lora'"):
        fit_and_evaluate(
            CFG,
            DownstreamConfig(method="lora"),
            task.M,
            seeds=[0],
            backbone={"W": W},
            beta=0.5,
            theta=np.ones(16),
            n=10,
            lr=0.01,
        )
    with pytest.raises(ConfigError, match="down.n_max=1024"):
        fit_and_evaluate(
            CFG, DownstreamConfig(), task.M, seeds=[0], backbone={"W": W}, beta=0.5, theta=np.ones(16), n=5000, lr=0.01
        )
    with pytest.raises(ConfigError, match="down.rank=64"):
        fit_and_evaluate(
            CFG,
            DownstreamConfig(rank=64),
            task.M,
            seeds=[0],
            backbone={"W": W},
            beta=0.5,
            theta=np.ones(16),
            n=10,
            lr=0.01,
        )


def test_model_selection_takes_the_best_validation_score_per_run():
    val = np.array([[0.2, 0.9, np.nan], [np.nan, 0.1, 0.3]])
    test = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    test2 = np.arange(12.0).reshape(2, 3, 2)
    best, (a, b) = downstream.select_by_validation(val, test, test2)
    assert best.tolist() == [1, 2] and a.tolist() == [2.0, 6.0] and b.tolist() == [[2.0, 3.0], [10.0, 11.0]]


def test_bayes_accuracy_of_a_sparse_task_matches_the_tie_rate():
    cfg = DataConfig(d=16, k=2)
    theta = downstream.downstream_tasks(16, np.ones(16))["sparse"]
    task = purify.data.Task(M=jnp.eye(16), w_star=jnp.asarray(theta)[None])
    _, z, _ = purify.data.sample(jax.random.key(0), cfg, task, 200_000, 0.0)
    tie = float(jnp.mean(z @ jnp.asarray(theta) == 0))
    assert abs((1 - tie / 2) - downstream.bayes_accuracy(cfg, theta)) < 0.003


@pytest.mark.slow
def test_per_sample_rep_report_bounds_hold_on_a_trained_probe():
    task, W = _backbone()
    dc = DownstreamConfig(steps=150, n_max=512, n_val=32, n_test=128, batch=64, taus=(0.15,))
    theta = np.asarray(task.w_star[0])
    fit = fit_and_evaluate(CFG, dc, task.M, seeds=[0], backbone={"W": W}, beta=0.5, theta=theta, n=512, lr=0.02)
    x, y = downstream.splits(
        jax.random.split(downstream.run_keys([0])[0], 4)[0], DATA, jnp.asarray(theta), task.M, dc, which=(2,)
    )[2]
    arch = purify.Architecture.of(CFG)
    r = representation.per_sample_report(
        arch,
        {"W": jnp.asarray(W)},
        0.5,
        jnp.asarray(fit["params"]["v"][0]),
        jnp.asarray(fit["params"]["c"][0]),
        x,
        y,
        0.15,
        "l2",
        jax.random.key(1),
        u=task.label_directions[0],
    )
    r = {k: np.asarray(v) for k, v in r.items()}
    assert np.all(r["shift_attack"] <= r["shift_certified"] * (1 + 1e-5) + 1e-6)
    assert np.all(r["loss_increase"] <= r["loss_bound"] * (1 + 1e-5) + 1e-6)
    assert not np.any(r["certified"] & ~r["robust"])
    assert 0 < r["certified"].mean() <= r["robust"].mean()
    # the report's robust accuracy is the evaluation's (same attacks, same test split) up to the PGD start
    assert abs(r["robust"].mean() - fit["robust"][0, 0]) < 0.05


@pytest.mark.slow
def test_reference_gaps_measure_what_the_default_evaluation_misses():
    """At radius 0 nothing can move a prediction: the gap is exactly 0. At a radius inside the
    window, a deliberately weak default (PGD 1 step, 1 start) leaves robust errors that the
    reference (APGD from three starts and a random search) finds: the gap is positive on
    average over 8 fitted heads, and never negative (the reference includes the default)."""
    task = purify.make_task(DATA)
    W = (np.random.default_rng(0).normal(size=(32, 16)) / 4).astype(np.float32)  # random: mixed features
    theta = np.asarray(jax.random.rademacher(jax.random.key(3), (16,), dtype=jnp.float32))
    weak = DownstreamConfig(steps=200, n_max=512, n_test=256, taus=(0.0, 0.2), eval_pgd_steps=1, restarts=1)
    out = fit_and_evaluate(CFG, weak, task.M, seeds=range(8), backbone={"W": W}, beta=0.5, theta=theta, n=512, lr=0.05)
    assert (out["clean"] > 0.7).all(), out["clean"]  # heads that work
    gaps = downstream.reference_gaps(
        CFG, weak, task.M, seeds=range(8), params=out["params"], beta=0.5, theta=theta, n=128
    )
    assert gaps.shape == (8, 2)
    assert (gaps[:, 0] == 0).all(), gaps[:, 0]
    assert (gaps >= 0).all() and gaps[:, 1].mean() > 0.01, gaps[:, 1]


def test_flatten_along_places_each_axis_where_the_grid_has_it():
    """An argument along ('seed', 'task') of a (task, seed, lr) grid, flattened in C order: run
    r = (t, s, l) gets value[s, t]; a constant passes through; a wrong axis or size is named."""
    from purify.downstream import Along, flatten_along

    axes = {"task": ["a", "b"], "seed": [10, 11, 12], "lr": [0.1, 0.2]}
    value = np.arange(6).reshape(3, 2) * 10  # (seed, task)
    flat = flatten_along(Along(("seed", "task"), value), axes)
    t, s, _ = np.unravel_index(np.arange(12), (2, 3, 2))
    np.testing.assert_array_equal(flat, value[s, t])
    stacked = flatten_along(Along(("task",), {"W": np.ones((2, 4, 5)) * np.arange(2)[:, None, None]}), axes)
    assert stacked["W"].shape == (12, 4, 5) and (stacked["W"][:, 0, 0] == t).all()
    assert flatten_along(0.5, axes) == 0.5
    with pytest.raises(ConfigError, match="must name distinct axes among"):
        flatten_along(Along(("width",), np.ones(2)), axes)
    with pytest.raises(ConfigError, match=r"leading axes \('seed',\) must have sizes \[3\]"):
        flatten_along(Along(("seed",), np.ones(4)), axes)


@pytest.mark.slow
def test_fit_grid_is_fit_and_evaluate_on_named_axes():
    """The grid's results are the flat fits reshaped: the same numbers, the axes named."""
    from purify.downstream import Along, fit_grid

    task, W = _backbone()
    dc = DownstreamConfig(steps=10, n_max=128, n_val=64, n_test=64, batch=32, taus=(0.1, 0.2), eval_pgd_steps=2)
    thetas = np.stack([np.ones(16), np.sign(np.arange(16) - 7.5)]).astype(np.float32)
    lrs = np.asarray([0.01, 0.03], np.float32)
    res = fit_grid(
        CFG,
        dc,
        task.M,
        {"task": ["ones", "half"], "seed": [3, 4], "lr": lrs},
        seeds=Along(("seed",), np.asarray([3, 4])),
        backbone={"W": W},
        theta=Along(("task",), thetas),
        beta=0.5,
        n=128,
        lr=Along(("lr",), lrs),
    )
    assert res.dims["robust"] == ("task", "seed", "lr", "radius") and res["robust"].shape == (2, 2, 2, 2)
    assert res.dims["params/W"] == ("task", "seed", "lr", "neuron", "input")
    t, s, l = np.unravel_index(np.arange(8), (2, 2, 2))
    flat = fit_and_evaluate(
        CFG, dc, task.M, seeds=np.asarray([3, 4])[s], backbone={"W": W}, beta=0.5, theta=thetas[t], n=128, lr=lrs[l]
    )
    np.testing.assert_array_equal(res["robust"].reshape(8, 2), flat["robust"])
    np.testing.assert_array_equal(res["clean"].reshape(8), flat["clean"])
    np.testing.assert_array_equal(res["params/v"].reshape(8, -1), flat["params"]["v"])
    assert list(res.coords["task"]) == ["ones", "half"] and res.sel(task="half")["clean"].shape == (2, 2)


@pytest.mark.slow
def test_an_interrupted_fit_resumes_after_its_probing_stage_with_the_same_numbers(tmp_path, monkeypatch):
    """A downstream chunk runs in the engine: a Ctrl-C during fine-tuning keeps the checkpoint
    written after the probing stage, and the rerun fine-tunes from it (never probing again) to
    the numbers of an uninterrupted fit."""
    from purify.downstream import program as prog

    task, W = _backbone()
    dc = DownstreamConfig(
        method="full",
        head_init="robust",
        steps=12,
        probe_steps=8,
        n_max=64,
        n_val=32,
        n_test=32,
        batch=16,
        taus=(0.1,),
        eval_pgd_steps=2,
    )
    kw = {"seeds": [0, 1], "backbone": {"W": W}, "beta": 0.5, "theta": np.ones(16), "n": 64, "lr": 0.01, "tau": 0.1}
    whole = fit_and_evaluate(CFG, dc, task.M, **kw)
    real, calls, stop = prog._compiled_advance, [], [True]

    def interrupted(data, dc_, arch, t0, t1):
        calls.append(t0)
        if t0 == dc.probe_steps and stop[0]:
            raise KeyboardInterrupt
        return real(data, dc_, arch, t0, t1)

    monkeypatch.setattr(prog, "_compiled_advance", interrupted)
    with pytest.raises((KeyboardInterrupt, purify.SweepInterrupted)):
        fit_and_evaluate(CFG, dc, task.M, out_dir=tmp_path, **kw)
    assert calls == [0, dc.probe_steps]
    assert len(list(tmp_path.rglob("*.ckpt.npz"))) == 1
    calls.clear()
    stop[0] = False
    resumed = fit_and_evaluate(CFG, dc, task.M, out_dir=tmp_path, **kw)
    assert calls == [dc.probe_steps]  # the probing stage came from the checkpoint
    for name in ("clean", "robust", "val_robust"):
        np.testing.assert_array_equal(resumed[name], whole[name])
    np.testing.assert_array_equal(resumed["params"]["W"], whole["params"]["W"])
    assert not list(tmp_path.rglob("*.ckpt.npz"))
