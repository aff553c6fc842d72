"""The compiled training program: vmapped = single run, no recompiles, chunking, resume, NaNs."""

import dataclasses
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
import purify.sweeps as sweep_mod
from purify.train import Run, compiled

from .conftest import tiny

TRACE = ("purity_nw", "rho_nw", "clean_acc", "robust_acc", "loss", "purity")


@pytest.mark.slow
def test_vmapped_row_equals_single_run():
    cfg = tiny()
    res = purify.sweep(cfg, grid={"tau": [0.0, 0.3], "lr": [0.05, 0.2]}, seeds=[3, 7])
    run = Run(cfg)
    task = purify.make_task(cfg.data)
    # row (tau=0.3, lr=0.05), seed 7
    hp = {**dataclasses.asdict(cfg.hp), "tau": 0.3, "lr": 0.05}
    single = jax.jit(run.__call__)(jax.random.key(7), hp, task)
    row = res.sel(tau=0.3, lr=0.05, seed=7)
    for name in TRACE:
        np.testing.assert_allclose(
            np.asarray(single.trace[name]).squeeze(), row[name].squeeze(), rtol=1e-4, atol=1e-5, err_msg=name
        )
    np.testing.assert_allclose(np.asarray(single.params["W"]), row["W_final"], rtol=1e-4, atol=1e-6)


LIGHT = {"eval.pgd_steps": 6, "eval.restarts": 2, "eval.light_pgd_steps": 1, "eval.light_restarts": 1}
ATTACKED = ("robust_acc", "attack_acc", "full_eval")


def test_a_light_evaluation_before_the_last_log_point_moves_no_other_number():
    grid = {"tau": [0.0, 0.3]}
    every = purify.sweep(tiny(**LIGHT), grid=grid, seeds=3)
    final = purify.sweep(tiny(**LIGHT, **{"eval.full_at": "final"}), grid=grid, seeds=3)
    assert every.dims["full_eval"] == ("hparam", "seed", "time")
    assert (every["full_eval"] == 1).all()
    assert (final["full_eval"][..., :-1] == 0).all() and (final["full_eval"][..., -1] == 1).all()
    for name in final.arrays:  # what no attack measures is the same program's number, bit for bit
        if name not in ATTACKED:
            np.testing.assert_array_equal(final[name], every[name], err_msg=name)
    for name in ATTACKED[:2]:  # and the last log point is the full evaluation itself
        np.testing.assert_array_equal(final[name][:, :, -1], every[name][:, :, -1], err_msg=name)
    # a PGD of 1 step and 1 start reads high: on average over runs and light points, never below
    # the full one's, and the PGD column (attack 1) strictly above it somewhere
    light, full = final["attack_acc"][:, :, :-1], every["attack_acc"][:, :, :-1]
    assert final["robust_acc"][:, :, :-1].mean() >= every["robust_acc"][:, :, :-1].mean()
    assert light[..., 1].mean() > full[..., 1].mean()
    # an unbatched run picks the same evaluation at each log point
    cfg = tiny(**LIGHT, **{"eval.full_at": "final"})
    single = jax.jit(Run(cfg).__call__)(
        jax.random.key(2), {**dataclasses.asdict(cfg.hp), "tau": 0.3}, purify.make_task(cfg.data)
    )
    np.testing.assert_array_equal(np.asarray(single.trace["full_eval"]), final["full_eval"][1, 2])
    np.testing.assert_allclose(
        np.asarray(single.trace["robust_acc"]).squeeze(), final["robust_acc"][1, 2].squeeze(), atol=1e-6
    )


def test_the_program_cache_does_not_depend_on_how_its_arguments_are_spelled():
    """A REPL call with defaulted or keyword arguments finds the programs a sweep built
    positionally (an lru_cache alone keys on the spelling, and would compile them again)."""
    cfg = tiny()
    compiled.cache_clear()
    built = compiled(cfg, 3, True, False, None, 1)
    assert compiled(cfg, 3, True) is built
    assert compiled(cfg, chunk=3, noise_free=True, group=1, log_steps=None) is built
    assert compiled(cfg, 3, True, group=2) is not built
    assert compiled.cache_info().misses == 2


@pytest.mark.slow
def test_sweeping_hyperparameters_does_not_recompile():
    """One program per static config for noise-free sweeps and one for noisy ones (which skip
    drawing noise that would be multiplied by 0); at a fixed number of networks per chunk (a
    shape), every change of hyper-parameter values or seeds is a new input, not a trace."""
    cfg = tiny()
    compiled.cache_clear()
    purify.sweep(cfg, grid={"tau": [0.0, 0.1]}, seeds=2)
    purify.sweep(cfg, grid={"tau": [0.2, 0.5], "lr": [0.3]}, seeds=[5, 9])
    purify.sweep(cfg, grid={"beta": [0.3], "init_scale": [0.05]}, seeds=4)
    assert compiled.cache_info().misses == 1
    _, init, advance, observe, _ = compiled(cfg, 3, True, False, None)
    assert init._cache_size() == 1 and advance._cache_size() == 1 and observe._cache_size() == 1
    purify.sweep(cfg, grid={"noise": [0.1, 0.2]}, seeds=2)
    purify.sweep(cfg, grid={"noise": [0.0, 0.3], "tau": [0.1]}, seeds=[3, 4])
    assert compiled.cache_info().misses == 2
    _, init, advance, observe, _ = compiled(cfg, 3, False, False, None)
    assert init._cache_size() == 1 and advance._cache_size() == 1 and observe._cache_size() == 1


@pytest.mark.slow
def test_noise_free_program_gives_the_same_numbers():
    cfg = tiny()
    a = purify.sweep(cfg, grid={"noise": [0.0]}, seeds=2)  # noise-free program
    b = purify.sweep(cfg, grid={"noise": [0.0, 0.2]}, seeds=2).sel(noise=0.0)  # noisy program, sigma = 0
    for name in ("W_final", "purity_nw", "robust_acc"):
        np.testing.assert_array_equal(a.sel(noise=0.0)[name], b[name])


@pytest.mark.slow
def test_advance_traces_once_across_hyperparameters_and_chunks():
    cfg = tiny()
    run = Run(cfg, chunk=10)
    task = purify.make_task(cfg.data)
    advance = jax.jit(jax.vmap(chex.assert_max_traces(run.advance, n=1), in_axes=(0, None, None, None)))
    observe = jax.jit(jax.vmap(chex.assert_max_traces(run.observe, n=1), in_axes=(0, None, None)))
    init = jax.jit(jax.vmap(run.init, in_axes=(0, 0, None)))
    for taus in ([0.0, 0.1], [0.4, 0.9]):
        hp = {n: jnp.full((2,), getattr(cfg.hp, n)) for n in purify.config.HPARAM_NAMES}
        hp["tau"] = jnp.asarray(taus)
        state = init(jax.vmap(jax.random.key)(jnp.arange(2)), hp, task)
        for t0, t1 in run.segments(0, 10):
            state = observe(state, task, jnp.int32(t0))
            state = advance(state, task, jnp.int32(t0), jnp.int32(t1))


@pytest.mark.slow
def test_chunked_and_unchunked_sweeps_agree():
    cfg = tiny()
    a = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3)
    b = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3, chunk_size=4, step_chunk=7)
    for name in TRACE + ("W_final",):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_numbers():
    cfg = tiny()
    a = purify.sweep(cfg, seeds=2)
    compiled.cache_clear()
    b = purify.sweep(cfg, seeds=2)
    for name in TRACE:
        np.testing.assert_array_equal(a[name], b[name])


def test_resume_skips_finished_chunks(tmp_path, monkeypatch):
    cfg = tiny()
    full = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=2, chunk_size=1, out_dir=tmp_path)
    files = sorted(tmp_path.rglob("runs_*.npz"))
    assert len(files) == 4
    files[2].unlink()
    calls = []
    real = sweep_mod.run_chunk
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=2, chunk_size=1, out_dir=tmp_path)
    assert len(calls) == 1  # only the deleted chunk ran again
    for name in TRACE:
        np.testing.assert_array_equal(full[name], again[name])


def test_interrupt_keeps_finished_chunks(tmp_path, monkeypatch):
    cfg = tiny()
    real = sweep_mod.run_chunk
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, "run_chunk", flaky)
    with pytest.raises(purify.SweepInterrupted) as err:
        purify.sweep(cfg, seeds=3, chunk_size=1, out_dir=tmp_path)
    steps = cfg.train.steps  # the message counts steps, the progress bar's unit: 3 chunks x steps
    assert (err.value.position, err.value.saved, err.value.total) == (steps, steps, 3 * steps)
    assert f"{steps} of {3 * steps} steps are saved" in str(err.value) and "resume" in str(err.value)
    assert len(list(tmp_path.rglob("runs_*.npz"))) == 1


def test_a_changed_config_never_reuses_old_chunks(tmp_path):
    purify.sweep(tiny(), seeds=2, out_dir=tmp_path)
    b = purify.sweep(tiny(**{"hp.lr": 0.2}), seeds=2, out_dir=tmp_path)
    c = purify.sweep(tiny(**{"hp.lr": 0.2}), seeds=2)
    np.testing.assert_array_equal(b["purity_nw"], c["purity_nw"])
    assert len({p.parent for p in tmp_path.rglob("runs_*.npz")}) == 2


def test_nonfinite_runs_are_flagged_per_run():
    cfg = tiny()
    with pytest.warns(RuntimeWarning, match=r"4 run\(s\) went NaN/inf or diverged"):
        res = purify.sweep(cfg, grid={"lr": [0.1, 1e30, 1e38]}, seeds=2)  # 1e30 diverges, 1e38 overflows
    bad = res.failed()
    assert bad.tolist() == [[False, False], [True, True], [True, True]]
    assert (res["failed_step"][1:] > 0).all()
    assert res["constant_predictor"][1:, :, -1].all()  # the exploded runs went silent: f = 0
    assert np.isfinite(res.sel(lr=0.1)["purity_nw"]).all()
    mean = res.mean("seed")
    assert np.isnan(mean["loss"][1:]).all() and np.isfinite(mean["loss"][0]).all()  # never averaged away
    assert np.isfinite(res["loss"][1]).all()  # the per-run values are kept


def test_tau_zero_fgm_is_exactly_clean_training():
    """fp-dynamics' clean mode is FGM at tau = 0; it must be clean training, bit for bit."""
    a = purify.sweep(tiny(**{"hp.tau": 0.0}), seeds=2)
    b = purify.sweep(tiny(**{"train.attack": "none"}), seeds=2)
    np.testing.assert_array_equal(a["W_final"], b["W_final"])


@pytest.mark.parametrize("attack", ["pgd", "surrogate"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_other_training_attacks_run_and_change_training(attack, norm):
    cfg = tiny(
        **{
            "train.attack": attack,
            "train.norm": norm,
            "eval.norm": norm,
            "train.pgd_steps": 2,
            "hp.tau": 0.2 if norm == "l2" else 0.05,
        }
    )
    res = purify.sweep(cfg, grid={"tau": [0.0, cfg.hp.tau]}, seeds=2)
    assert not res.failed().any()
    assert not np.allclose(res["W_final"][0], res["W_final"][1])


@pytest.mark.slow
def test_snapshots_store_weights_where_asked():
    cfg = tiny(**{"train.snapshot_at": (0, 30, 60)})
    res = purify.sweep(cfg, seeds=2)
    snaps = res["snapshots"]
    assert snaps.shape == (1, 2, 3, 32, 16)
    np.testing.assert_allclose(snaps[:, :, 2], res["W_final"], atol=1e-7)
    norms = np.linalg.norm(snaps[0, 0, 0], axis=-1)
    assert abs(norms.mean() - cfg.hp.init_scale) < 0.3 * cfg.hp.init_scale  # small Gaussian init


@pytest.mark.slow
def test_finite_training_set_and_multi_task():
    cfg = tiny(**{"data.n_train": 50, "data.n_tasks": 3, "model.head": "trained"})
    res = purify.sweep(cfg, seeds=2)
    assert res.dims["robust_acc"] == ("hparam", "seed", "time", "task", "radius")
    assert res["robust_acc"].shape[-2:] == (3, 1)
    assert not res.failed().any()
    # every training batch is drawn from the fixed set of 50 examples
    run = Run(cfg)
    task = purify.make_task(cfg.data)
    state = run.init(jax.random.key(0), dataclasses.asdict(cfg.hp), task)
    x, _ = run._batch(state, task, jnp.int32(3))
    dists = jnp.min(jnp.linalg.norm(x[:, None] - state.train_set[0][None], axis=-1), axis=1)
    assert float(dists.max()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        {"model.bias": "fixed"},
        {"model.bias": "trainable"},
        {"model.activation": "relu"},
        {"model.head": "trained"},
        {"train.momentum": 0.9},
    ],
)
def test_model_variants_train(variant):
    res = purify.sweep(tiny(**variant), seeds=2)
    assert not res.failed().any()
    assert (res["clean_acc"][..., -1] > 0.55).all(), res["clean_acc"][..., -1]


@pytest.mark.slow
def test_low_rank_adversarial_phase():
    """adv_rank = r: W frozen after the switch, the update W_eff - W_clean has rank r, and the
    clean phase is bit-identical to full-rank training."""
    full = purify.sweep(tiny(**{"train.snapshot_at": (30, 60)}), grid={"tau": [0.3]}, seeds=2)
    low = purify.sweep(tiny(**{"train.adv_rank": 2, "train.snapshot_at": (30, 60)}), grid={"tau": [0.3]}, seeds=2)
    np.testing.assert_array_equal(full["snapshots"][:, :, 0], low["snapshots"][:, :, 0])
    np.testing.assert_array_equal(low["W_final"], low["snapshots"][:, :, 0])
    update = low["snapshots"][0, :, 1] - low["snapshots"][0, :, 0]
    assert [np.linalg.matrix_rank(u, tol=1e-6) for u in update] == [2, 2]
    assert low.dims["U_final"] == ("hparam", "seed", "neuron", "rank")
    with pytest.raises(purify.ConfigError, match="train.adv_rank=17"):
        tiny(**{"train.adv_rank": 17})


def test_segments_cover_every_step_once_and_cut_at_every_observation():
    """The Python loop of a run: advance calls (t0, t1) tile [start, steps) and every log or
    snapshot step starts a segment, so it is observed before it is trained on."""
    run = Run(tiny(**{"train.snapshot_at": (7, 45)}), chunk=10)
    for start in (0, 20, 37):
        segs = run.segments(start, 10)
        assert segs[0][0] == start and segs[-1][1] == 60
        assert all(a < b and b == c for (a, b), (c, _) in itertools.pairwise(segs))
        starts = {a for a, _ in segs}
        assert {t for t in run.observe_at if start <= t < 60} <= starts
        assert {t for t in range(start + 1, 60) if t % 10 == 0} <= starts


@pytest.mark.slow
@pytest.mark.parametrize("attack,norm", [("fgm", "l2"), ("fgm", "linf"), ("pgd", "l2")])
def test_the_training_attack_raises_the_loss(attack, norm):
    """The training perturbation must ascend the loss: with its sign flipped (or pointing
    anywhere else) adversarial training would be clean training with noise. Checked per example
    on a partly trained network, against the clean loss and against the flipped perturbation."""
    cfg = tiny(**{"train.attack": attack, "train.norm": norm, "hp.tau": 0.3 if norm == "l2" else 0.05})
    run = purify.train.Run(cfg)
    task = purify.make_task(cfg.data)
    state = run.init(jax.random.key(0), cfg.hp, task)
    state = run.advance(state, task, 0, 20)
    x, y = run._batch(state, task, jnp.int32(7))
    delta = run.perturb(state.params, x, y, state.hp, jax.random.key(1))
    loss = lambda v: run.example_loss(state.params, v, y, state.hp.beta)
    clean, up, down = loss(x), loss(x + delta), loss(x - delta)
    moved = jnp.abs(up - clean) > 1e-6  # examples whose units are all silent cannot move
    assert int(moved.sum()) > len(x) // 2
    assert bool(jnp.all(jnp.where(moved, up > clean, True)))
    assert float(up.mean()) > float(down.mean())
