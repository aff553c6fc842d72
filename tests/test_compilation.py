"""Every program purify runs compiles through `purify.compilation.program`, and on this backend its
options give the same numbers, bit for bit, as XLA's defaults: a whole training run, a downstream
fit with its evaluation, and the reference attack of the 'attack converged' gate."""

import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify import network
from purify.compilation import compiler_options, over_runs, program
from purify.downstream import DownstreamConfig
from purify.downstream.program import make_evaluate, make_fit

from .conftest import tiny

ROOT = pathlib.Path(purify.__file__).parent


def _same(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_no_program_bypasses_the_shared_options():
    """`jax.jit` is called in `compilation.py` only (the benchmark may time other variants)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in ROOT.rglob("*.py")
        if path.name != "compilation.py" and "benchmarks" not in path.parts
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bjax\.jit\b|\bfrom jax import jit\b", line)
    ]
    assert not offenders, offenders


def test_the_options_are_set_on_cpu_only_where_asked():
    assert compiler_options(quick=False) is None
    assert jax.default_backend() != "cpu" or compiler_options(quick=True) == {"xla_backend_optimization_level": 1}


@pytest.mark.slow
def test_quick_compilation_agrees_with_o3_to_float_rounding():
    """-O1 and -O3 are the same program up to how LLVM vectorizes: a training run and a
    downstream fit agree to float rounding, not to the bit (which is why each program keeps the
    level its records were made with)."""
    cfg = tiny(**{"train.steps": 20, "train.adv_start": 10})
    run, task = purify.Run(cfg), purify.make_task(cfg.data)
    hp = {**dataclasses.asdict(cfg.hp), "tau": 0.3}
    key = jax.random.key(3)
    a, b = jax.jit(run.__call__)(key, hp, task), program(run.__call__, quick=True)(key, hp, task)
    np.testing.assert_allclose(np.asarray(a.params["W"]), np.asarray(b.params["W"]), rtol=1e-5, atol=1e-6)
    for name in a.trace:
        np.testing.assert_allclose(np.asarray(a.trace[name]), np.asarray(b.trace[name]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_default_is_xlas_default_bit_for_bit():
    """A downstream fit and its evaluation, through `program`, are `jax.jit`'s own numbers."""
    cfg = purify.Config().set(**{"data.d": 16, "data.k": 2, "model.width": 32}).validate()
    task = purify.make_task(cfg.data)
    arch = network.Architecture.of(cfg)
    dc = DownstreamConfig(
        method="full",
        attack="fgm",
        head_init="robust",
        steps=8,
        probe_steps=4,
        n_max=64,
        n_val=32,
        n_test=32,
        batch=16,
        taus=(0.2,),
        eval_pgd_steps=2,
    ).validate(32, 16)
    W = jax.random.normal(jax.random.key(1), (32, 16)) / 4
    args = (
        jax.random.key(5),
        {"W": W},
        jnp.float32(0.5),
        jnp.ones(16),
        task.M,
        jnp.int32(64),
        {"lr": 0.01, "probe_lr": 0.05, "tau": 0.2, "lam": 0.0},
    )
    fit = make_fit(cfg.data, dc, arch)
    params = program(fit)(*args)
    _same(jax.jit(fit)(*args), params)
    evaluate = make_evaluate(cfg.data, dc, arch)
    eargs = (params, args[0], args[2], args[3], task.M)
    _same(jax.jit(evaluate)(*eargs), program(evaluate)(*eargs))


def test_over_runs_in_groups_is_vmap_for_any_group_and_padding():
    f = lambda s, c: {"y": jnp.sin(s["x"]) * c, "k": jax.random.normal(s["k"], (2,))}
    state = {"x": jnp.linspace(-2.0, 2.0, 7), "k": jax.vmap(jax.random.key)(jnp.arange(7))}
    want = over_runs(f, 1)(state, 3.0)
    for group in (2, 3, 7, 9):
        _same(want, over_runs(f, group)(state, 3.0))


@pytest.mark.slow
def test_grouped_training_agrees_with_vmap():
    """Groups of runs scanned give a plain vmap's numbers to float rounding (bit for bit at some
    sizes, not all: the cpu preset's fp-dynamics moves in the seventh digit), so `purify run`
    keeps the vmap that made the committed records; `sweep`'s default `auto` is groups here."""
    for settings in ({}, {"data.d": 64, "data.k": 4, "model.width": 256, "train.batch": 128}):
        cfg = tiny(**{"train.steps": 20, "train.adv_start": 10, **settings})
        vm = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3, batching="vmap")
        assert vm.meta["provenance"]["batching"] == "vmap"
        auto = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3)
        assert auto.meta["provenance"]["batching"] == "auto"
        for group, gr in [(2, None), (4, None), ("auto", auto)]:
            gr = gr or purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3, batching=group)
            gr = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=3, batching=group)
            for name in ("W_final", "purity_nw", "clean_acc", "robust_acc", "loss"):
                np.testing.assert_allclose(
                    gr[name], vm[name], rtol=1e-5, atol=1e-6, err_msg=f"{name}, groups of {group}"
                )
