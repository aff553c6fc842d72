"""Unit tests, nothing compiled: the chunk plan and the grid's one resolution."""

import itertools

import numpy as np
import pytest

from purify.config import PER_RUN, STATIC, Config, ConfigError
from purify.grid import resolve
from purify.plan import make_plan


@pytest.mark.parametrize("n_runs,chunk,devices", [(1, 1, 1), (7, 3, 1), (8, 4, 2), (10, 3, 4), (5, 64, 8)])
def test_chunks_cover_every_run_once_and_pad_to_the_devices(n_runs, chunk, devices):
    plan = make_plan(n_runs, chunk, devices)
    seen = []
    for c in plan.chunks:
        lo, hi = plan.bounds(c)
        seen += range(lo, hi)
        idx = plan.indices(c)
        assert len(idx) == plan.padded and plan.padded % devices == 0
        # padding computes the runs that follow (the last run at the end); their outputs are dropped
        assert list(idx[: hi - lo]) == list(range(lo, hi)) and set(idx[hi - lo :]) <= set(range(hi, n_runs)) | {
            n_runs - 1
        }
    assert seen == list(range(n_runs))
    assert plan.chunk_size == min(chunk, n_runs)


@pytest.mark.parametrize("n_chunks,n_slices", [(10, 3), (4, 4), (7, 2), (3, 5)])
def test_slices_partition_the_chunks_in_order(n_chunks, n_slices):
    parts = [list(make_plan(n_chunks * 2, 2, run_slice=(i, n_slices)).chunks) for i in range(n_slices)]
    assert list(itertools.chain(*parts)) == list(range(n_chunks))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1  # as even as the count allows


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"chunk_size": 0}, "chunk_size=0 is not allowed: must be an integer >= 1"),
        ({"chunk_size": True}, "chunk_size=True is not allowed"),
        ({"run_slice": (2, 2)}, r"run_slice=\(2, 2\) is not allowed: must be \(i, n\) with 0 <= i < n"),
        ({"run_slice": (0, 2), "processes": (0, 2)}, "run_slice is not allowed together with distributed"),
        ({"processes": (0, 16)}, "8 runs is not allowed with 16 processes"),
        ({"chunk_size": 8, "processes": (0, 2)}, "chunk_size=8 is not allowed with 2 processes"),
    ],
)
def test_a_bad_plan_names_its_parameter(kwargs, message):
    args = {"n_runs": 8, "chunk_size": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        make_plan(**args)


def test_a_grid_resolves_its_columns_rows_and_groups_once():
    cfg = Config()
    g = resolve(cfg, {"hp.tau": [0.0, 0.2], "width": [64, 128], "adv_start": [10, 20]})
    assert g.columns == ("tau", "model.width", "train.adv_start")  # hyper-parameters bare, the rest dotted
    assert len(g.rows) == 8 and g.rows[0] == {"tau": 0.0, "model.width": 64, "train.adv_start": 10}
    # width is static (one program each), adv_start per run, tau a hyper-parameter
    assert [grp.label for grp in g.groups] == ["model.width=64", "model.width=128"]
    first = g.groups[0]
    assert first.cfg.model.width == 64 and first.rows == (0, 1, 4, 5)  # tau slowest, then width
    np.testing.assert_allclose(first.hp["tau"], [0.0, 0.0, 0.2, 0.2])
    np.testing.assert_array_equal(first.adv_start, [10, 20, 10, 20])
    assert first.per_run["train.adv_start"].dtype == np.int32 and set(first.table()) >= {"tau", "train.adv_start"}
    assert first.noise_free and set(first.log_steps()) >= {0, 10, 20, cfg.train.steps}
    table = g.hp_table()
    np.testing.assert_array_equal(table["model.width"], [64, 64, 128, 128] * 2)
    row = g.row_config(6)  # tau = 0.2, width 128, adv_start 10
    assert (row.hp.tau, row.model.width, row.train.adv_start) == (0.2, 128, 10)


def test_the_kind_of_a_setting_is_declared_on_its_field():
    cfg = Config()
    assert cfg.sweep_kind("train.adv_start") == PER_RUN and cfg.sweep_kind("adv_start") == PER_RUN
    assert cfg.sweep_kind("model.width") == STATIC and cfg.sweep_kind("data.d") == STATIC
    assert cfg.sweep_kind("tau") == "hyper-parameter" and cfg.sweep_kind("hp.lr") == "hyper-parameter"
    g = resolve(cfg, {"lr": [0.1, 0.2]})
    assert len(g.groups) == 1 and g.groups[0].per_run == {} and g.groups[0].log_steps() is None


@pytest.mark.parametrize(
    "grid,message",
    [
        ({"nope": [1]}, "grid key 'nope' is not allowed: .*unknown setting"),
        ({"norm": ["l2"]}, "grid key 'norm' is not allowed: .*ambiguous"),
        ({"tau": [0.1], "hp.tau": [0.2]}, "grid key 'hp.tau' is not allowed: 'tau' is already in the grid"),
        ({"tau": []}, r"grid\['tau'\]=\(\) is not allowed: must be a non-empty list"),
        ({"tau": [-1.0]}, "grid row .*grid.tau=-1.0 is not allowed|grid.tau=-1.0 is not allowed"),
        ({"width": [0]}, r"grid row \{'model.width': 0\}: model.width=0 is not allowed"),
    ],
)
def test_a_bad_grid_is_named_before_anything_compiles(grid, message):
    with pytest.raises(ConfigError, match=message):
        resolve(Config(), grid)
