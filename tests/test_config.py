"""Every bad input fails up front with the parameter, its value and what is allowed."""

import jax
import pytest

import purify
import purify.train
from purify import Config, ConfigError
from purify.cli import main

from .conftest import tiny

BAD = [
    ({"data.k": 65}, "data.k=65", "<= the number of features D = 64"),
    ({"data.features": 128}, "data.features=128", "needs data.dictionary='sphere'"),
    ({"data.features": 32, "data.dictionary": "sphere"}, "data.features=32", ">= 64"),
    ({"data.k": 0}, "data.k=0", ">= 1"),
    ({"data.d": 0}, "data.d=0", ">= 1"),
    ({"data.magnitude": "sign", "data.k": 4}, "data.k=4", "odd"),
    ({"data.magnitude": "gaussian"}, "data.magnitude='gaussian'", "'uniform'"),
    ({"data.dictionary": "fourier"}, "data.dictionary='fourier'", "'haar'"),
    ({"data.dictionary": "hadamard", "data.d": 48}, "data.d=48", "power of two"),
    ({"data.sparsity": "dense"}, "data.sparsity='dense'", "'exact_k'"),
    ({"data.n_train": 0}, "data.n_train=0", ">= 1"),
    ({"model.width": 2.5}, "model.width=2.5", "integer"),
    ({"model.width": True}, "model.width=True", "integer"),
    ({"model.width": 0}, "model.width=0", ">= 1"),
    ({"model.bias": "learned"}, "model.bias='learned'", "'relative'"),
    ({"model.head": "fixed", "data.n_tasks": 3}, "model.head='fixed'", "'trained'"),
    ({"train.attack": "cw"}, "train.attack='cw'", "'fgm'"),
    ({"train.norm": "l1"}, "train.norm='l1'", "'linf'"),
    ({"train.adv_start": 5000}, "train.adv_start=5000", "<= 4000"),
    ({"train.steps": 10.0}, "train.steps=10.0", "integer"),
    ({"train.momentum": 1.0}, "train.momentum=1.0", "[0, 1)"),
    ({"hp.tau": -0.1}, "hp.tau=-0.1", ">= 0"),
    ({"hp.lr": 0.0}, "hp.lr=0.0", "> 0"),
    ({"hp.noise": float("nan")}, "hp.noise=nan", "finite"),
    ({"eval.taus": (0.1, -0.2)}, "eval.taus[]=-0.2", ">= 0"),
    ({"eval.restarts": 0}, "eval.restarts=0", ">= 1"),
    ({"eval.full_at": "sometimes"}, "eval.full_at='sometimes'", "'final'"),
    ({"eval.light_pgd_steps": 0}, "eval.light_pgd_steps=0", ">= 1"),
    ({"eval.full_at": "final", "eval.light_pgd_steps": 30}, "eval.light_pgd_steps=30", "<= eval.pgd_steps = 20"),
    ({"eval.full_at": "final", "eval.light_restarts": 5}, "eval.light_restarts=5", "<= eval.restarts = 4"),
]


@pytest.mark.parametrize("settings,named,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_config_names_parameter_value_and_rule(settings, named, allowed):
    with pytest.raises(ConfigError) as err:
        Config().set(**settings).validate()
    assert named in str(err.value) and allowed in str(err.value)


def test_unknown_and_ambiguous_settings():
    with pytest.raises(ConfigError, match="unknown setting"):
        Config().set(**{"data.depth": 3})
    with pytest.raises(ConfigError, match="ambiguous"):
        Config().set(norm="l2")  # train.norm and eval.norm
    assert Config().set(d=128).data.d == 128


@pytest.mark.parametrize(
    "grid,seeds,match",
    [
        ({"tau": [0.1, -0.5]}, 2, "grid.tau=-0.5"),
        ({"gamma": [1.0]}, 2, "grid key 'gamma'"),
        ({"tau": []}, 2, "non-empty"),
        ({"lr": [0.0]}, 2, "grid.lr=0.0"),
        (None, 0, "seeds=0"),
        (None, [1, 1], "distinct"),
    ],
)
def test_bad_sweep_input_fails_before_compiling(monkeypatch, grid, seeds, match):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(purify.train, "compiled", no_compile)
    with pytest.raises(ConfigError, match=match):
        purify.sweep(tiny(), grid=grid, seeds=seeds)


def test_bad_chunk_sizes():
    with pytest.raises(ConfigError, match="chunk_size=0"):
        purify.sweep(tiny(), seeds=2, chunk_size=0)
    with pytest.raises(ConfigError, match="step_chunk=-1"):
        purify.sweep(tiny(), seeds=2, step_chunk=-1)


def test_cli_reports_bad_input_cleanly(capsys):
    assert main(["run", "fp-dynamics", "--set", "data.k=0", "--no-resume", "--out", "/nonexistent-never-written"]) == 2
    err = capsys.readouterr().err
    assert "data.k=0" in err and "Traceback" not in err
    assert main(["run", "no-such-experiment"]) == 2
    assert "experiment='no-such-experiment'" in capsys.readouterr().err
    assert main(["run", "fp-dynamics", "--set", "exp.nothing=1"]) == 2
    assert main(["run", "fp-dynamics", "--preset", "tpu"]) == 2


def test_config_round_trips_through_dict():
    cfg = tiny(**{"train.snapshot_at": (0, 30)})
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_numpy_and_jax_scalars_are_numbers_everywhere():
    import jax.numpy as jnp
    import numpy as np

    from purify.sweeps import fingerprint, grid_table, seed_list

    plain = tiny(**{"model.width": 32, "hp.tau": 0.1, "eval.taus": (0.1, 0.2)})
    typed = tiny().set(
        **{"model.width": np.int64(32), "hp.tau": np.float32(0.1), "eval.taus": np.array([0.1, 0.2], np.float32)}
    )
    assert typed == plain and type(typed.model.width) is int and typed.hp.tau == 0.1  # not 0.10000000149011612
    assert tiny().set(**{"hp.tau": jnp.float32(0.1), "train.steps": np.array(60)}).hp.tau == 0.1
    grid = {"tau": np.array([0.0, 0.1], np.float32), "beta": [np.float64(0.5), jnp.float32(0.6)]}
    table, _ = grid_table(typed, grid)
    assert table["tau"].tolist() == grid_table(plain, {"tau": [0.0, 0.1], "beta": [0.5, 0.6]})[0]["tau"].tolist()
    seeds = seed_list([np.int64(0), np.int64(3)])
    assert fingerprint(typed, table, seeds, 2) == fingerprint(plain, table, seed_list([0, 3]), 2)
    # NumPy and JAX scalars in a grid reach the fingerprint's JSON encoder (hp values share the tiny program of other tests)
    res = purify.sweep(
        tiny().set(**{"model.width": np.int64(32), "hp.tau": np.float32(0.1)}), grid=grid, seeds=np.int64(2)
    )
    assert res.hp["beta"].tolist() == pytest.approx([0.5, 0.6, 0.5, 0.6])


@pytest.mark.parametrize("bad", ["fast", 0, -2, 1.5, True])
def test_a_bad_batching_is_refused_before_anything_compiles(bad, monkeypatch):
    monkeypatch.setattr(purify.train, "compiled", lambda *a, **k: pytest.fail("compiled"))
    with pytest.raises(purify.ConfigError, match=r"batching=.* is not allowed: must be one of 'auto', 'vmap'"):
        purify.sweep(purify.Config(), seeds=1, batching=bad)


def test_the_batching_rule():
    from purify.train import CPU_GROUP, run_group

    cfg = purify.Config()
    assert run_group(cfg, 64, 1, "vmap") == 1
    # a group as large as the chunk is one vmap over it
    assert run_group(cfg, 64, 1, 8) == 8 and run_group(cfg, 4, 1, 8) == 1 and run_group(cfg, 8, 1, 8) == 1
    assert run_group(cfg, 64, 1, "groups") == CPU_GROUP and run_group(cfg, 3, 1, "groups") == 1
    assert run_group(cfg, 64, 1, "auto") == (CPU_GROUP if jax.default_backend() == "cpu" else 1)
    assert run_group(cfg, 64, 4, "auto") == 1  # several devices: the run axis is sharded, not scanned
