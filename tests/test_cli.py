"""The command line and the experiments, at tiny sizes."""

import json
import subprocess
import sys

import pytest

import purify.train
from purify.cli import main
from purify.landmarks import headroom, window
from purify.registry import all_experiments
from purify.stats import DECISIONS

# Every experiment's `test` preset: its own tiny sizes (purify.experiments._common.TINY), two seeds.
TEST = ["--preset", "test", "--quiet"]


@pytest.fixture
def settings_set_by_experiments(monkeypatch):
    """Every setting that experiment code changes from the value it was handed: through
    `Config.set` called from an `purify.experiments` module, or as a grid key of `Context.sweep` whose
    values leave out the config's own value. Each must be declared in controls or derives."""
    import sys as _sys

    from purify.config import Config, plain, setting
    from purify.experiment import Context

    seen = set()
    original_set, original_sweep = Config.set, Context.sweep

    def recording_set(self, **dotted):
        caller = _sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("purify.experiments"):
            for key, value in dotted.items():
                name = self.resolve(key, value)
                old, new = self.get(name), plain(value)
                if isinstance(old, tuple) and not isinstance(new, tuple):
                    new = (new,)
                if old != new:
                    seen.add(name)
        return original_set(self, **dotted)

    def recording_sweep(self, cfg, grid=None, **kwargs):
        for key, values in (grid or {}).items():
            name = setting(cfg.column(key, values))
            if cfg.get(name) not in [plain(v) for v in values]:
                seen.add(name)
        return original_sweep(self, cfg, grid=grid, **kwargs)

    monkeypatch.setattr(Config, "set", recording_set)
    monkeypatch.setattr(Context, "sweep", recording_sweep)
    return seen


def test_list_names_every_experiment_and_preset(capsys):
    assert main(["list", "--settings"]) == 0
    out = capsys.readouterr().out
    for exp_id in all_experiments():
        assert exp_id in out
    assert "--preset cpu" in out and "--preset gpu" in out and "hp.tau = 0.25" in out


# Each experiment end to end at its `test` preset; fp-dynamics (the main job) stays in the fast suite.
QUICK = ("fp-dynamics",)


@pytest.mark.parametrize(
    "exp_id", [pytest.param(e, marks=() if e in QUICK else pytest.mark.slow) for e in sorted(all_experiments())]
)
def test_each_experiment_writes_a_wellformed_result_and_figure(exp_id, tmp_path, capsys, settings_set_by_experiments):
    assert (
        main(
            [
                "run",
                exp_id,
                "--seeds",
                "2",
                "--out",
                str(tmp_path),
                "--runs",
                str(tmp_path / "runs"),
                *TEST,
            ]
        )
        == 0
    )
    exp = all_experiments()[exp_id]
    undeclared = settings_set_by_experiments - set(exp.controlled()) - set(exp.derives)
    assert not undeclared, f"{exp_id} sets {sorted(undeclared)} without declaring them in controls or derives"
    record = json.loads((tmp_path / f"{exp_id}.json").read_text())
    png = (tmp_path / f"{exp_id}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert record["seeds"] == [0, 1]
    if isinstance(exp.controlled().get("data.d"), str):  # the experiment sets d itself (its own grid of d)
        assert record["config"]["data"]["d"] == 64
    else:  # TINY's 16, or 32 where a regime needs a window
        assert record["config"]["data"]["d"] == exp.presets["test"]["config"]["data.d"] <= 32
    assert set(record["controls"]) == set(exp.controlled()) and set(record["derives"]) == set(exp.derives)
    assert record["provenance"]["versions"]["jax"]
    verdicts = record["verdicts"]
    assert verdicts and all(v["verdict"] in DECISIONS for v in verdicts)
    declared = {c.id: c.digest() for c in exp.claims}
    assert record["phase"] == "exploratory" and {k: c["hash"] for k, c in record["claims"].items()} == declared
    assert len(record["statistics"]) >= len(verdicts)  # replaced rules' statistics ride along as originals
    for v in verdicts:  # every verdict names its declared claim, its effect size, its adjustment and if post hoc
        assert {"verdict_raw", "min_effect", "post_hoc", "p_holm", "claim_id", "claim_hash"} <= set(v), v["claim"]
        assert declared[v["claim_id"]] == v["claim_hash"] and v["models"]
        assert v["exact"] or v.get("min_effect_why"), v["claim"]
        assert v["post_hoc"] and v["post_hoc_reason"]  # exploratory seeds: every rule was set after their results
        # two seeds decide nothing: fewer than MIN_SEEDS usable runs
        assert v["exact"] or (v["verdict"] == "invalid" and "a verdict needs 4" in v["invalid_reason"]), v["claim"]
    if exp_id == "rep-bound":  # the bounds are theorems about certified_shift: never violated
        for name, counts in record["soundness"].items():
            assert counts["loss_bound_violations"] == 0 and counts["criterion_violations"] == 0, name
    assert exp_id in capsys.readouterr().out
    # the figure can be redrawn from the JSON alone
    assert exp.plot(record) is not None


@pytest.mark.parametrize("preset", ["cpu", "gpu", "test"])
def test_presets_are_valid_configs(preset):
    for exp in all_experiments().values():
        assert set(exp.presets) == {"cpu", "gpu", "test"}, exp.id
        cfg, seeds, _ = exp.config(preset)
        if preset == "test":  # seconds, not minutes; its radii are whatever each experiment sets at d = 16
            assert seeds == 2 and cfg.train.steps <= 40, exp.id
            continue
        assert seeds >= (8 if exp.id == "fp-dynamics" else 4)  # fp-phase: 4 per cell to stay within minutes
        lo, hi = window(cfg.data, cfg.eval.norm)
        if cfg.data.magnitude == "sign":  # the regime with headroom: tracked where the oracle is exactly robust
            lo, hi = headroom(cfg.data, cfg.hp.beta)
        assert lo < cfg.eval.taus[0] < hi, exp.id  # robust accuracy is tracked inside the window (in the attack's norm)


@pytest.mark.slow
def test_python_m_purify_runs(tmp_path):
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "purify", "run", "fp-dynamics"),
            *("--seeds", "2", "--out", str(tmp_path), "--no-resume", *TEST),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fp-dynamics.png").exists()


def test_figures_are_redrawn_from_json_alone(tmp_path, capsys):
    out = tmp_path / "fig"
    assert main(["run", "fp-dynamics", "--seeds", "2", "--out", str(out), "--no-resume", *TEST]) == 0
    png = out / "fp-dynamics.png"
    png.unlink()
    assert main(["figures", "--out", str(out), "--only", "fp-dynamics"]) == 0
    assert png.exists() and "redrew" in capsys.readouterr().out
    assert main(["figures", "--out", str(out), "--only", "fp-robustness"]) == 1  # no JSON saved for it
    assert "no saved JSON for fp-robustness" in capsys.readouterr().err


def test_check_prints_verdicts_and_fails_only_when_the_toolkit_breaks(tmp_path, capsys, monkeypatch):
    args = [
        "check",
        "--only",
        "fp-dynamics",
        "--seeds",
        "2",
        "--out",
        str(tmp_path),
        "--runs",
        str(tmp_path / "r"),
        "--preset",
        "test",
    ]
    assert main(args) == 0  # whatever the verdicts say
    out = capsys.readouterr().out
    assert "fp-dynamics" in out and "95% CI" in out and " hold" in out
    import dataclasses

    import purify.experiments.fp_dynamics as fpd

    def broken(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(fpd, "EXPERIMENT", dataclasses.replace(fpd.EXPERIMENT, run=broken))
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "ERROR" in captured.out and "simulated bug" in captured.err


@pytest.mark.slow
def test_figures_rerun_starts_from_scratch(tmp_path, monkeypatch, capsys):
    import purify.sweeps as sweep_mod

    out = tmp_path / "fig"
    assert main(["run", "fp-dynamics", "--seeds", "2", "--out", str(out), "--runs", str(tmp_path / "runs"), *TEST]) == 0
    calls = []
    real = sweep_mod.run_chunk
    monkeypatch.setattr(sweep_mod, "run_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.chdir(tmp_path)  # the default runs/ folder would hold the finished chunks
    assert main(["figures", "--rerun", "--preset", "test", "--out", str(out), "--only", "fp-dynamics"]) == 0
    assert calls  # trained again
    assert "from scratch" in capsys.readouterr().out


def test_figures_compare_lists_every_moved_number(tmp_path, capsys):
    import json

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    record = {
        "experiment": "fp-dynamics",
        "provenance": {"created": 1},
        "wall_seconds": 3,
        "final": {"x": [0.5, float("nan")]},
    }
    (a / "fp-dynamics.json").write_text(json.dumps(record))
    (b / "fp-dynamics.json").write_text(json.dumps({**record, "provenance": {"created": 2}, "wall_seconds": 9}))
    args = ["figures", "--only", "fp-dynamics", "--out", str(b), "--compare", str(a)]
    from purify.cli import _compare, build_parser

    assert _compare(build_parser().parse_args(args)) == 0
    assert "identical" in capsys.readouterr().out
    (b / "fp-dynamics.json").write_text(json.dumps({**record, "final": {"x": [0.625, float("nan")]}}))
    assert _compare(build_parser().parse_args(args)) == 1
    assert "/final/x[0]: 0.5 -> 0.625" in capsys.readouterr().out


@pytest.mark.slow
def test_a_run_unlike_the_committed_record_does_not_replace_it(tmp_path, monkeypatch, capsys):
    import json
    import shutil
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    committed = Path(__file__).parents[1] / "figures" / "fp-dynamics.json"
    (tmp_path / "figures").mkdir()
    shutil.copy(committed, tmp_path / "figures")
    shutil.copy(committed.with_suffix(".png"), tmp_path / "figures")
    before = (tmp_path / "figures" / "fp-dynamics.json").read_bytes()
    assert main(["run", "fp-dynamics", "--seeds", "2", *TEST]) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "figures" / "fp-dynamics.json").read_bytes() == before  # untouched
    moved = Path("runs") / "figures" / "fp-dynamics.json"
    assert json.loads(moved.read_text())["seeds"] == [0, 1]
    assert "is the record of another run (" in captured.err and "preset cpu, 8 seeds" in captured.err
    assert "--overwrite" in captured.err
    assert f"wrote {moved}" in captured.out
    # asked for: --overwrite (or naming --out) replaces it
    assert main(["run", "fp-dynamics", "--seeds", "2", "--overwrite", *TEST]) == 0
    assert json.loads((tmp_path / "figures" / "fp-dynamics.json").read_text())["seeds"] == [0, 1]
    # now the record is this run's: running it again reproduces it in place
    assert main(["run", "fp-dynamics", "--seeds", "2", *TEST]) == 0
    assert "record of another run" not in capsys.readouterr().err


def test_help_explains_every_option():
    from purify.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("run", "check", "figures"):
        for action in sub[name]._actions:
            if action.dest != "help":
                assert action.help, f"purify {name} {action.option_strings or action.dest} has no help text"


@pytest.mark.slow
def test_broken_runs_give_invalid_verdicts_not_fails(tmp_path, capsys):
    """lr = 1e6 diverges every run: no verdict may come out of them (not even 'fails'), and
    the figure marks them."""
    args = ["run", "fp-dynamics", "--seeds", "2", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), *TEST]
    with pytest.warns(RuntimeWarning, match="marked failed|at chance"):
        assert main([*args, "--set", "hp.lr=1e6"]) == 0
    record = json.loads((tmp_path / "fp-dynamics.json").read_text())
    assert record["failed_runs"] or record["chance_runs"]
    n_claims = len(all_experiments()["fp-dynamics"].claims)
    assert [v["verdict"] for v in record["verdicts"]] == ["invalid"] * (2 * n_claims)  # both regimes
    assert all(v["n"] == 0 and v["n_failed_runs"] == 2 for v in record["verdicts"])
    # every figure names its flagged runs under the plot
    import matplotlib.pyplot as plt

    from purify.plotting import mark_flagged

    fig = all_experiments()["fp-dynamics"].plot(record)
    note = mark_flagged(fig, record)
    assert note in [t.get_text() for t in fig.texts]
    assert "left out of every verdict" in note
    for key, what in (("failed_runs", "failed or diverged"), ("chance_runs", "at chance")):
        assert (f"{len(record[key])} {what}" in note) == bool(record[key])
    plt.close(fig)
    clean = {**record, "failed_runs": [], "chance_runs": []}
    assert "none" in mark_flagged(all_experiments()["fp-dynamics"].plot(clean), clean)


def test_a_run_at_chance_is_flagged():
    import numpy as np

    from purify.results import Results

    acc = np.asarray([[[0.9, 0.97], [0.6, 0.55]], [[0.5, 0.95], [np.nan, np.nan]]])  # (hparam, seed, time)
    res = Results(
        {"clean_acc": acc, "failed_step": np.full((2, 2), -1)},
        {"clean_acc": ("hparam", "seed", "time"), "failed_step": ("hparam", "seed")},
        {"hparam": np.arange(2), "seed": np.arange(2), "time": np.arange(2)},
        {},
        {},
    )
    np.testing.assert_array_equal(res.at_chance(), [[False, True], [False, False]])
    np.testing.assert_array_equal(res.flagged(), res.at_chance())


@pytest.mark.slow
def test_confirm_runs_on_fresh_seeds_and_keeps_the_exploratory_verdicts_beside(tmp_path, capsys, monkeypatch):
    """--confirm draws the confirmatory block (disjoint from the development seeds), keeps the
    exploratory verdicts of the record it replaces, and a claim re-declared between two
    confirmations on the same seeds comes out post hoc."""
    import dataclasses

    import purify.experiments.fp_robustness as module
    from purify.claims import confirmatory_seeds

    now = module.EXPERIMENT.confirmation_round
    args = ["run", "fp-robustness", "--seeds", "2", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), *TEST]
    args += ["--set", "exp.n_taus=3"]
    assert main(args) == 0
    explored = json.loads((tmp_path / "fp-robustness.json").read_text())
    assert explored["phase"] == "exploratory" and explored["seeds"] == [0, 1]
    capsys.readouterr()
    assert main([*args, "--confirm"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "fp-robustness.json").read_text())
    assert record["phase"] == "confirmatory" and record["seeds"] == confirmatory_seeds(2, now)
    assert not set(record["seeds"]) & set(explored["seeds"])
    assert record["exploratory"]["seeds"] == [0, 1] and record["exploratory"]["verdicts"] == explored["verdicts"]
    assert all(not v["post_hoc"] for v in record["verdicts"])  # declared before these seeds were drawn
    first = confirmatory_seeds(2, now)
    assert f"confirmatory verdicts (seeds {first[0]}..{first[1]})" in out and "exploratory verdicts kept beside" in out
    # the confirmatory seeds give other numbers than the development ones
    assert record["regimes"] != explored["regimes"]
    # re-declare one claim and confirm again on the same block: that claim is post hoc, the others are not
    moved = tuple(dataclasses.replace(c, min_effect=0.01) if c.id == "fgm-beats-clean" else c for c in module.CLAIMS)
    monkeypatch.setattr(module, "EXPERIMENT", dataclasses.replace(module.EXPERIMENT, claims=moved))
    assert main([*args, "--confirm"]) == 0
    again = json.loads((tmp_path / "fp-robustness.json").read_text())
    flags = {v["claim_id"]: v["post_hoc"] for v in again["verdicts"]}
    assert flags == {c.id: c.id == "fgm-beats-clean" for c in module.CLAIMS}
    assert again["exploratory"]["seeds"] == [0, 1]  # still the exploratory verdicts, carried forward
    # the honest way to change a claim: the next confirmation round, a fresh block, nothing post hoc
    nxt = dataclasses.replace(module.EXPERIMENT, claims=moved, confirmation_round=now + 1)
    monkeypatch.setattr(module, "EXPERIMENT", nxt)
    assert main([*args, "--confirm"]) == 0
    fresh = json.loads((tmp_path / "fp-robustness.json").read_text())
    assert fresh["seeds"] == confirmatory_seeds(2, now + 1)
    assert all(not v["post_hoc"] for v in fresh["verdicts"]) and fresh["regimes"] != record["regimes"]


@pytest.mark.parametrize("bad", ["fast", "0"])
def test_a_bad_batching_is_refused_with_its_value(bad, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(purify.train, "compiled", lambda *a, **k: pytest.fail("compiled"))
    assert main(["run", "fp-dynamics", *TEST, "--out", str(tmp_path), "--no-resume", "--batching", bad]) == 2
    err = capsys.readouterr().err
    assert f"batching={bad!r}" in err or f"batching={int(bad)!r}" in err
    assert "must be one of 'auto', 'vmap', 'groups' or an integer >= 1" in err
