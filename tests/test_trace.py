"""Each traced quantity is declared once: buffers, Results axes and labels follow the declaration."""

import jax
import jax.numpy as jnp
import pytest

import purify
from purify import trace
from purify.train import Run

from .conftest import tiny


@pytest.mark.parametrize("objective", ["supervised", "infonce"])
def test_what_is_measured_has_the_declared_axes(objective):
    cfg = (
        tiny(**{"data.n_tasks": 2, "model.head": "trained", "eval.taus": (0.1, 0.3)})
        if objective == "supervised"
        else tiny(**{"train.objective": objective, "train.attack": "fgm"})
    )
    run, task = Run(cfg), purify.make_task(cfg.data)
    state = run.init(jax.random.key(0), cfg.hp, task)
    measured = jax.eval_shape(lambda s: run.measure(s, task, jnp.int32(0)), state)
    sizes = trace.axis_sizes(cfg)
    assert set(measured) == {q.name for q in trace.QUANTITIES}
    for q in trace.QUANTITIES:
        assert measured[q.name].shape == trace.shape(q, sizes), q.name
        assert state.trace[q.name].shape == (len(run.log_steps),) + trace.shape(q, sizes)


@pytest.mark.slow
def test_results_axes_and_plot_labels_come_from_the_declarations(tmp_path):
    cfg = tiny(**{"data.n_tasks": 2, "model.head": "trained"})
    res = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=1)
    for q in trace.QUANTITIES:
        assert res.dims[q.name] == ("hparam", "seed", "time") + q.axes
    ax = res.isel(task=0).plot("purity_nw")
    assert ax.get_ylabel() == trace.LABELS["purity_nw"]


def test_health_rules_flag_divergence_and_constant_predictors():
    row = {"loss": jnp.asarray(1.0), "norm": jnp.asarray([1.0, 2.0])}
    assert bool(trace.healthy(row, jnp.ones((2, 2))))
    assert not bool(trace.healthy({**row, "loss": jnp.asarray(trace.DIVERGED_LOSS + 1)}, jnp.ones((2, 2))))
    assert not bool(trace.healthy({**row, "norm": jnp.asarray([2e6])}, jnp.ones((2, 2))))
    assert not bool(trace.healthy(row, jnp.full((2, 2), jnp.nan)))
    assert trace.constant_predictor([0.99, 0.5, 0.01]).tolist() == [True, False, True]
