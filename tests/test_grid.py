"""Any setting in a grid: static settings split it into one program per group, train.adv_start is a
per-run value of one program, and the rows equal separate sweeps; the xarray export round-trips."""

import numpy as np
import pytest

import purify
from purify.train import compiled

from .conftest import tiny


def _same(row: purify.Results, alone: purify.Results, width: int | None = None, d: int | None = None):
    """Every array of a grid row equals the separate sweep's, bit for bit, on the separate sweep's
    coordinates; entries beyond them (a narrower or lower-dimensional row) are padding."""
    for name, arr in alone.arrays.items():
        got = row[name]
        axes = alone.dims[name]
        index = []
        for ax, n in zip(axes, arr.shape):
            if ax == "time":
                index.append(np.searchsorted(row.coords["time"], alone.coords["time"]))
            else:
                index.append(np.arange(n))
        np.testing.assert_array_equal(got[np.ix_(*index)] if index else got, arr, err_msg=name)
    if width is not None and width < len(row.coords["neuron"]):
        assert np.isnan(row["purity"][..., width:]).all() and np.isnan(row["W_final"][:, width:]).all()
    if d is not None and d < len(row.coords["input"]):
        assert np.isnan(row["W_final"][..., d:]).all()


@pytest.mark.slow
def test_a_grid_over_width_equals_separate_sweeps():
    cfg = tiny()
    grid = {"model.width": [8, 16], "tau": [0.0, 0.3]}
    res = purify.sweep(cfg, grid=grid, seeds=2)
    assert res.meta["swept"] == ["model.width", "tau"]
    assert res.hp["model.width"].tolist() == [8, 8, 16, 16] and np.allclose(res.hp["tau"], [0.0, 0.3, 0.0, 0.3])
    assert len(res.coords["neuron"]) == 16
    for width in (8, 16):
        alone = purify.sweep(cfg.set(width=width), grid={"tau": [0.0, 0.3]}, seeds=2)
        for tau in (0.0, 0.3):
            _same(res.sel(width=width, tau=tau), alone.sel(tau=tau), width=width)
        assert res.row_config(0 if width == 8 else 2).model.width == width


@pytest.mark.slow
def test_a_grid_over_the_data_dimension_keeps_each_rows_dictionary():
    cfg = tiny(**{"data.dictionary": "haar"})
    res = purify.sweep(cfg, grid={"data.d": [8, 16]}, seeds=2)
    assert res.dims["task_M"] == ("hparam", "input", "feature")
    for i, d in enumerate((8, 16)):
        alone = purify.sweep(cfg.set(d=d), seeds=2)
        _same(res.isel(hparam=i), alone.isel(hparam=0), d=d)
        np.testing.assert_array_equal(res["task_M"][i, :d, :d], alone["task_M"])


@pytest.mark.slow
def test_adv_start_is_a_per_run_value_of_one_program():
    cfg = tiny()
    compiled.cache_clear()
    res = purify.sweep(cfg, grid={"train.adv_start": [0, 20, 60], "tau": [0.3]}, seeds=2)
    assert compiled.cache_info().misses == 1  # one program for every adv_start
    union = set()
    for i, start in enumerate((0, 20, 60)):
        alone = purify.sweep(cfg.set(adv_start=start), grid={"tau": [0.3]}, seeds=2)
        union |= set(alone.coords["time"].tolist())
        _same(res.isel(hparam=i), alone.isel(hparam=0))
    assert res.coords["time"].tolist() == sorted(union)  # every row's log steps, each recorded for all


def test_a_grid_row_that_breaks_a_rule_fails_before_compiling(monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(purify.train, "compiled", no_compile)
    with pytest.raises(purify.ConfigError, match=r"grid row \{'model.width': 0\}: model.width=0 is not allowed"):
        purify.sweep(tiny(), grid={"model.width": [8, 0]}, seeds=1)
    with pytest.raises(purify.ConfigError, match=r"train.adv_start=100 is not allowed: must be an integer <= 60"):
        purify.sweep(tiny(), grid={"adv_start": [10, 100]}, seeds=1)
    with pytest.raises(purify.ConfigError, match="grid key 'colour' is not allowed"):
        purify.sweep(tiny(), grid={"colour": [1]}, seeds=1)
    with pytest.raises(purify.ConfigError, match="grid key 'data.d' is not allowed with task="):
        purify.sweep(tiny(), grid={"data.d": [8]}, seeds=1, task=purify.make_task(tiny().data))


@pytest.mark.slow
def test_results_to_xarray_round_trips_through_netcdf(tmp_path):
    xr = pytest.importorskip("xarray", reason="xarray is part of the test extra")
    res = purify.sweep(tiny(), grid={"model.width": [8, 16], "tau": [0.0, 0.3]}, seeds=2)
    ds = res.to_xarray()
    assert ds["purity"].dims == ("hparam", "seed", "time", "neuron")
    assert ds.coords["model_width"].values.tolist() == [8, 8, 16, 16]
    by_width = ds["purity_nw"].isel(time=-1).groupby("model_width").mean(...)
    np.testing.assert_allclose(by_width.sel(model_width=16), res.sel(width=16)["purity_nw"][..., -1].mean())
    ds.to_netcdf(tmp_path / "sweep.nc")
    back = purify.Results.from_xarray(xr.load_dataset(tmp_path / "sweep.nc"))
    assert list(back.coords) == list(res.coords) and back.meta == res.meta
    for name, arr in res.arrays.items():
        assert back.dims[name] == res.dims[name] and back[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(back[name], arr, err_msg=name)
    for name, values in res.hp.items():
        np.testing.assert_array_equal(back.hp[name], values)
