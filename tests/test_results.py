"""Results: named axes, selection, reduction, save/load with provenance, plotting."""

import json

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import purify

from .conftest import tiny


@pytest.fixture(scope="module")
def res():
    return purify.sweep(tiny(**{"eval.taus": (0.1, 0.3)}), grid={"tau": [0.0, 0.2, 0.4]}, seeds=[0, 4])


def test_named_axes(res):
    assert res.dims["purity"] == ("hparam", "seed", "time", "neuron")
    assert res.dims["robust_acc"] == ("hparam", "seed", "time", "radius")
    assert res["purity"].shape == (3, 2, len(res.steps), 32)
    assert res.steps[0] == 0 and res.steps[-1] == 60 and 30 in res.steps


def test_selection_by_label_and_position(res):
    one = res.sel(tau=0.2, seed=4)
    assert one.dims["purity_nw"] == ("time",)
    np.testing.assert_array_equal(one["purity_nw"], res["purity_nw"][1, 1])
    assert float(one.hp["tau"]) == pytest.approx(0.2)
    np.testing.assert_array_equal(res.sel(radius=0.3)["robust_acc"], res["robust_acc"][..., 1])
    np.testing.assert_array_equal(res.sel(time=30)["rho_nw"], res["rho_nw"][:, :, list(res.steps).index(30)])
    np.testing.assert_array_equal(res.isel(hparam=[0, 2])["loss"], res["loss"][[0, 2]])
    with pytest.raises(KeyError, match="available values"):
        res.sel(tau=0.3)
    with pytest.raises(KeyError, match="seed=1 not found"):
        res.sel(seed=1)


def test_reduction(res):
    m = res.mean("seed")
    assert m.dims["purity"] == ("hparam", "time", "neuron")
    np.testing.assert_allclose(m["purity_nw"], res["purity_nw"].mean(1))
    np.testing.assert_allclose(res.std("seed")["loss"], res["loss"].std(1))


def test_save_and_load_round_trip(res, tmp_path):
    path = res.save(tmp_path / "sweep")
    assert path.suffix == ".npz"
    back = purify.Results.load(path)
    assert back.dims == res.dims and back.meta["config"] == res.meta["config"]
    for name in res.arrays:
        np.testing.assert_array_equal(back[name], res[name])
    np.testing.assert_array_equal(back.sel(tau=0.4, seed=0)["purity_nw"], res.sel(tau=0.4, seed=0)["purity_nw"])
    prov = back.meta["provenance"]
    assert {"jax", "flax", "optax", "numpy", "python"} <= set(prov["versions"])
    assert prov["device"]["platform"] == "cpu"
    assert purify.Config.from_dict(back.config) == tiny(**{"eval.taus": (0.1, 0.3)})
    json.dumps(back.meta)  # the metadata is plain JSON


def test_plot_draws_one_band_per_row(res):
    ax = res.plot("purity_nw")
    assert len(ax.get_lines()) == 3 and ax.get_xlabel().startswith("SGD step")
    assert "purity" in ax.get_title() and f"mean of {len(res.coords['seed'])} seed(s)" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tau=0", "tau=0.2", "tau=0.4"]
    ax = res.sel(tau=0.2).plot("robust_acc", radius=0.3)
    assert len(ax.get_lines()) == 1 and "evaluation radius 0.3" in ax.get_title()
    # nothing is cut off: the x-label lies inside the saved figure
    fig = ax.figure
    fig.canvas.draw()
    box = ax.xaxis.label.get_window_extent()
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width
    with pytest.raises(ValueError, match="select"):
        res.plot("purity")  # per-neuron: choose a neuron first


def test_plot_marks_the_log_points_of_a_light_evaluation():
    settings = {"eval.light_pgd_steps": 2, "eval.full_at": "final"}
    res = purify.sweep(tiny(**settings), grid={"tau": [0.0, 0.3]}, seeds=2)
    ax = res.plot("robust_acc")
    open_circles = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(open_circles) == 2 and all(line.get_markerfacecolor() == "white" for line in open_circles)
    light = res["full_eval"][0, 0] == 0
    np.testing.assert_array_equal(open_circles[0].get_xdata(), res.steps[light])
    assert len(res.steps) - 1 == light.sum()  # every log point but the last
    assert "light evaluation, PGD 2 steps × 1 start(s) (reads high)" in ax.get_title()
    assert "the rest: PGD 3 steps × 1 start(s)" in ax.get_title()
    assert "light" not in res.plot("purity_nw").get_title()  # no attack measures purity
    assert "light" not in purify.sweep(tiny(), grid={"tau": [0.3]}, seeds=2).plot("robust_acc").get_title()


def test_repr_shows_swept_values_as_written(res):
    assert "'tau': [0.0, 0.2, 0.4]" in repr(res)  # not 0.20000000298023224


def test_load_names_the_path_of_a_damaged_or_foreign_file(tmp_path, res):
    good = res.save(tmp_path / "r.npz")
    blob = good.read_bytes()
    cases = {
        "truncated.npz": blob[: len(blob) // 2],
        "empty.npz": b"",
        "flipped.npz": blob[:200] + bytes([blob[200] ^ 0xFF]) + blob[201:],
        "text.npz": b"hello",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError, match=f"{tmp_path / name} is damaged or not a purify results file"):
            purify.Results.load(tmp_path / name)
    np.savez(tmp_path / "foreign.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="foreign.npz is not a purify results file"):
        purify.Results.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError, match="no results file at .*missing.npz"):
        purify.Results.load(tmp_path / "missing.npz")


def test_atomic_writes_leave_ordinary_permissions(tmp_path):
    import os
    import stat

    from purify.files import atomic_write_json

    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))
