"""Claims as data: declaration, hash, the runner's decisions, gates, confirmation and provenance."""

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from purify import claims
from purify.claims import (
    CONFIRMATORY_START,
    DEVELOPMENT_SEEDS_BELOW,
    SET_AFTER_RESULTS,
    Claim,
    confirmation_status,
    decide,
    statistic,
)
from purify.registry import all_experiments

GAIN = Claim(
    "gain",
    "FGM beats clean at tau={tau:g}",
    min_effect=0.02,
    why="two accuracy points",
    models=("clean net", "FGM net"),
    resolution="accuracy difference",
    gates=("above chance", "trained"),
)
ALL = np.ones(6, bool)
VALUES = [0.05, 0.06, 0.07, 0.05, 0.065, 0.055]


def test_every_experiment_declares_well_formed_claims_with_unique_ids():
    exps = all_experiments()
    for exp in exps.values():
        assert exp.claims, f"{exp.id} declares no claims"
        ids = [c.id for c in exp.claims]
        assert len(ids) == len(set(ids)), exp.id
        for c in exp.claims:
            assert c.models and (c.exact or c.why)
            assert c.replaces is None or c.replaces in ids, (exp.id, c.id)
            # every claim now in force was set after the exploratory results: it says so
            assert c.chosen_after and c.chosen_after.startswith(SET_AFTER_RESULTS), (exp.id, c.id)


def test_the_hash_names_the_declaration_and_ignores_commentary():
    h = GAIN.digest()
    assert len(h) == 16 and h == Claim(**dataclasses.asdict(GAIN)).digest()
    assert dataclasses.replace(GAIN, note="a remark").digest() == h
    for change in ({"min_effect": 0.03}, {"threshold": 0.01}, {"why": "other"}, {"gates": ("above chance",)}):
        assert dataclasses.replace(GAIN, **change).digest() != h, change


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"direction": ">="}, "direction"),
        ({"min_effect": -0.1}, "min_effect"),
        ({"why": ""}, "why is required"),
        ({"resolution": "loss"}, "resolution"),
        ({"gates": ("converged",)}, "gates"),
        ({"models": ()}, "models is required"),
    ],
)
def test_a_malformed_claim_is_refused_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(GAIN, **kwargs)


def test_the_runner_decides_fills_the_text_and_records_the_hash():
    (v,) = decide((GAIN,), [statistic("gain", VALUES, gates={"trained": ALL}, tau=0.25)], n_eval=1024)
    assert v["verdict"] == "holds" and v["claim"] == "FGM beats clean at tau=0.25"
    assert v["claim_id"] == "gain" and v["claim_hash"] == GAIN.digest() and v["models"] == list(GAIN.models)
    assert v["post_hoc"] and v["post_hoc_reason"] == SET_AFTER_RESULTS  # exploratory: set after the results
    assert v["resolution"] == pytest.approx(0.5 * np.sqrt(2 / 1024))
    (c,) = decide(
        (GAIN,), [statistic("gain", VALUES, gates={"trained": ALL}, tau=0.25)], n_eval=1024, phase="confirmatory"
    )
    assert not c["post_hoc"] and c["verdict"] == "holds"


def test_an_undeclared_statistic_or_a_missing_gate_is_an_error():
    with pytest.raises(ValueError, match="not declared"):
        decide((GAIN,), [statistic("other", VALUES)], n_eval=1024)
    with pytest.raises(ValueError, match="lacks gate 'trained'"):
        decide((GAIN,), [statistic("gain", VALUES, tau=0.25)], n_eval=1024)


def test_an_under_trained_run_makes_the_verdict_invalid_naming_the_gate():
    trained = ALL.copy()
    trained[2] = False
    (v,) = decide((GAIN,), [statistic("gain", VALUES, gates={"trained": trained}, tau=0.25)], n_eval=1024)
    assert v["verdict"] == "invalid" and "gate 'trained' failed: 1 of 6" in v["invalid_reason"]
    assert not v["gates"]["trained"]["passed"] and v["gates"]["above chance"]["passed"]
    # a run already dropped (flagged) is not counted against the gate
    flagged = ~trained
    (w,) = decide(
        (GAIN,), [statistic("gain", VALUES, flagged=flagged, gates={"trained": trained}, tau=0.25)], n_eval=1024
    )
    assert w["gates"]["trained"]["passed"] and w["n"] == 5 and w["verdict"] == "holds"


def test_more_than_half_at_chance_fails_the_above_chance_gate():
    flagged = np.array([1, 1, 1, 1, 0, 0], bool)
    (v,) = decide((GAIN,), [statistic("gain", VALUES, flagged=flagged, gates={"trained": ALL}, tau=0.25)], n_eval=1024)
    assert v["verdict"] == "invalid" and not v["gates"]["above chance"]["passed"]


def test_a_claim_changed_after_confirmation_is_post_hoc():
    stat = [statistic("gain", VALUES, gates={"trained": ALL}, tau=0.25)]
    (v,) = decide((GAIN,), stat, n_eval=1024, phase="confirmatory", frozen={"gain": GAIN.digest()})
    assert not v["post_hoc"]
    moved = dataclasses.replace(GAIN, min_effect=0.01)
    (w,) = decide((moved,), stat, n_eval=1024, phase="confirmatory", frozen={"gain": GAIN.digest()})
    assert w["post_hoc"] and GAIN.digest() in w["post_hoc_reason"] and moved.digest() in w["post_hoc_reason"]
    record = {"phase": "confirmatory", "seeds": claims.confirmatory_seeds(4), "verdicts": [v]}
    assert confirmation_status((GAIN,), record) == {"gain": "confirmed"}
    assert confirmation_status((moved,), record) == {"gain": "changed since confirmation"}
    assert confirmation_status((GAIN,), {"phase": "exploratory", "verdicts": [v]}) == {"gain": "exploratory only"}


def test_a_replaced_rule_rides_along_as_the_original_of_its_successor():
    old = Claim("old", "old rule at n={n}", min_effect=0.0, why="the sign", models=("m",), gates=())
    new = dataclasses.replace(old, id="new", text="new rule at n={n}", min_effect=0.02, replaces="old")
    stats_ = [
        statistic("new", VALUES, n=1),
        statistic("old", [0.01, 0.02, 0.015, 0.012], n=1),
        statistic("new", VALUES, n=2),
        statistic("old", [0.01, 0.02, 0.015, 0.012], n=2),
    ]
    out = decide((new, old), stats_, n_eval=1024)
    assert [v["claim"] for v in out] == ["new rule at n=1", "new rule at n=2"]
    assert all(v["original"]["claim_id"] == "old" for v in out)
    assert out[0]["original"]["claim"] == "old rule at n=1" and out[1]["family_size"] == 2
    with pytest.raises(ValueError, match="without their successor"):
        decide((new, old), stats_[1:2], n_eval=1024)


def test_families_are_adjusted_separately():
    a = dataclasses.replace(GAIN, id="a", gates=(), family="one")
    b = dataclasses.replace(GAIN, id="b", gates=(), family="two")
    out = decide((a, b), [statistic("a", VALUES, tau=0.1), statistic("b", VALUES, tau=0.1)], n_eval=1024)
    assert [v["family"] for v in out] == ["one", "two"] and all(v["family_size"] == 1 for v in out)


def test_the_confirmatory_blocks_are_disjoint_from_each_other_and_every_development_seed():
    assert claims.confirmatory_seeds(3) == [CONFIRMATORY_START, CONFIRMATORY_START + 1, CONFIRMATORY_START + 2]
    assert CONFIRMATORY_START >= DEVELOPMENT_SEEDS_BELOW
    big = claims.ROUND_STRIDE
    assert claims.confirmatory_seeds(big)[-1] < claims.confirmatory_seeds(1, round=1)[0]
    assert claims.seeds_round(claims.confirmatory_seeds(5, round=2)) == 2 and claims.seeds_round([0, 1]) is None
    assert claims.seeds_round([CONFIRMATORY_START, CONFIRMATORY_START + big]) is None  # two blocks: no round
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="round="):
            claims.confirmatory_seeds(2, round=bad)
    with pytest.raises(ValueError, match="at most"):
        claims.confirmatory_seeds(big + 1)
    from pathlib import Path

    for path in sorted(Path("figures").glob("*.json")):
        record = json.loads(path.read_text())
        seeds = record.get("seeds") or []
        if record.get("phase") == "confirmatory":
            assert claims.seeds_round(seeds) is not None, path
            assert max(record["exploratory"]["seeds"]) < DEVELOPMENT_SEEDS_BELOW, path
        else:
            assert all(s < DEVELOPMENT_SEEDS_BELOW for s in seeds), path


def test_no_claim_changed_after_its_rounds_seeds_were_seen():
    """A committed confirmatory record on an experiment's current round was decided under the
    claims declared now, every one of them: a claim declared or changed since must move the
    experiment to the next round (fresh seeds), not be re-decided on seeds that shaped it."""
    from pathlib import Path

    from purify.registry import all_experiments

    for exp_id, exp in all_experiments().items():
        path = Path("figures") / f"{exp_id}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("phase") != "confirmatory":
            continue
        seen = claims.seeds_round(record["seeds"])
        assert exp.confirmation_round >= seen, exp_id
        if exp.confirmation_round == seen:
            declared = {c.id: c.digest() for c in exp.claims}
            assert {k: c["hash"] for k, c in record["claims"].items()} == declared, exp_id


def test_confirmation_status_names_the_round():
    stat = [statistic("gain", VALUES, gates={"trained": ALL}, tau=0.25)]
    (v,) = decide((GAIN,), stat, n_eval=1024, phase="confirmatory")
    record = {"phase": "confirmatory", "seeds": claims.confirmatory_seeds(4), "verdicts": [v]}
    assert confirmation_status((GAIN,), record, round=0) == {"gain": "confirmed"}
    assert confirmation_status((GAIN,), record, round=1) == {"gain": "confirmed on round 0, awaiting round 1"}


# -- provenance: the dirty flag ------------------------------------------------------------------


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_state_flags_a_dirty_tree_and_hashes_the_difference(tmp_path):
    from purify.provenance import git_state

    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_state(plain) == {"commit": None, "dirty": None, "diff_sha256": None}  # not a git tree
    tmp_path = tmp_path / "repo"
    tmp_path.mkdir()
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False and clean["diff_sha256"] is None and len(clean["commit"]) == 40
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "x.json").write_text("{}")  # a record written by a run is an output, not code
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    one = git_state(tmp_path)
    assert one["dirty"] is True and len(one["diff_sha256"]) == 64
    (tmp_path / "b.py").write_text("y = 1\n")  # an untracked source file changes the state too
    two = git_state(tmp_path)
    assert two["dirty"] and two["diff_sha256"] != one["diff_sha256"]


def test_figures_rerun_into_figures_refuses_a_dirty_tree(monkeypatch, capsys, tmp_path):
    from purify import provenance
    from purify.cli import main

    monkeypatch.chdir(tmp_path)  # were the refusal to fail, the rerun would write there, not into the repository
    monkeypatch.setattr(
        provenance, "git_state", lambda where=None: {"commit": "abc", "dirty": True, "diff_sha256": "d"}
    )
    assert main(["figures", "--rerun", "--only", "fp-robustness"]) == 2
    err = capsys.readouterr().err
    assert "dirty working tree" in err and "--allow-dirty" in err and "--out DIR" in err


def test_results_trained_measures_the_drift_over_the_last_fifth_of_training():
    """Log steps 0, 10, 100, 700, 1000: the last fifth starts at the log step at or before 800
    (700), so the drift of a run is max - min of its clean accuracy at 700 and 1000."""
    from purify import Results

    steps = np.array([0, 10, 100, 700, 1000])
    acc = np.array(
        [
            [[0.5, 0.6, 0.9, 0.950, 0.960]],  # moved 0.010 at the end: settled
            [[0.5, 0.6, 0.7, 0.900, 0.950]],  # moved 0.050: still learning
            [[0.5, 0.6, 0.9, 0.950, 0.935]],  # fell 0.015: settled
        ]
    ).transpose(1, 0, 2)  # (hparam 1, seed 3, time 5)
    res = Results(
        {"clean_acc": acc, "failed_step": np.full((1, 3), -1)},
        {"clean_acc": ("hparam", "seed", "time"), "failed_step": ("hparam", "seed")},
        {"hparam": np.arange(1), "seed": np.arange(3), "time": steps},
        {},
        {},
    )
    assert res.trained().tolist() == [[True, False, True]]
    assert res.trained(drift=0.005).tolist() == [[False, False, False]]
    ended_only = Results(
        {"clean_acc": acc[..., [0, 4]], "failed_step": np.full((1, 3), -1)},
        res.dims,
        {**res.coords, "time": steps[[0, 4]]},
        {},
        {},
    )
    # logged at 0 and 1000 only: the stretch is the whole run, its learning included
    assert ended_only.trained().tolist() == [[False, False, False]]


def test_results_settled_reads_a_traced_metric_over_its_other_axes():
    """The 'robust settled' gate: robust accuracy (hparam, seed, time, radius), averaged over
    radii, moved at most the drift over the last fifth (log steps 700 and 1000 here)."""
    from purify import Results
    from purify.claims import GATES, ROBUST_DRIFT

    assert "robust settled" in GATES and ROBUST_DRIFT == 0.03
    steps = np.array([0, 10, 100, 700, 1000])
    robust = np.zeros((1, 2, 5, 2))
    robust[0, 0, :, 0] = [0.1, 0.5, 0.8, 0.90, 0.92]  # radius 0: +0.02
    robust[0, 0, :, 1] = [0.1, 0.3, 0.5, 0.60, 0.63]  # radius 1: +0.03; mean +0.025: settled
    robust[0, 1, :, 0] = [0.1, 0.5, 0.8, 0.85, 0.92]  # +0.07
    robust[0, 1, :, 1] = [0.1, 0.3, 0.5, 0.60, 0.60]  # 0; mean +0.035: still rising
    res = Results(
        {"robust_acc": robust, "failed_step": np.full((1, 2), -1)},
        {"robust_acc": ("hparam", "seed", "time", "radius"), "failed_step": ("hparam", "seed")},
        {"hparam": np.arange(1), "seed": np.arange(2), "time": steps},
        {},
        {},
    )
    assert res.settled("robust_acc", ROBUST_DRIFT).tolist() == [[True, False]]
    assert res.settled("robust_acc", 0.04).tolist() == [[True, True]]
    with pytest.raises(ValueError, match="metric='purity' is not allowed: not traced"):
        res.settled("purity", 0.1)


def test_results_trained_reads_the_objective_of_a_contrastive_run():
    """No labels (clean accuracy NaN): a run has settled when its held-out objective moved over
    the last fifth by at most a tenth of its whole change; with neither trace, no run has."""
    from purify import Results
    from purify.claims import TRAINED_LOSS_SHARE

    assert TRAINED_LOSS_SHARE == 0.1
    steps = np.array([0, 10, 100, 700, 1000])
    loss = np.array(
        [
            [[4.0, 3.0, 2.0, 1.05, 1.00]],  # whole change 3.0, last fifth 0.05 <= 0.3: settled
            [[4.0, 3.0, 2.0, 1.50, 1.00]],  # last fifth 0.5 > 0.3: still learning
            [[-1.0, -2.0, -3.0, -3.9, -4.0]],  # a negative objective (spectral): 0.1 <= 0.3
        ]
    ).transpose(1, 0, 2)
    dims = {
        "loss": ("hparam", "seed", "time"),
        "clean_acc": ("hparam", "seed", "time"),
        "failed_step": ("hparam", "seed"),
    }
    coords = {"hparam": np.arange(1), "seed": np.arange(3), "time": steps}
    arrays = {"loss": loss, "clean_acc": np.full_like(loss, np.nan), "failed_step": np.full((1, 3), -1)}
    assert Results(arrays, dims, coords, {}, {}).trained().tolist() == [[True, False, True]]
    bare = {"failed_step": np.full((1, 3), -1)}
    assert Results(bare, {"failed_step": dims["failed_step"]}, coords, {}, {}).trained().tolist() == [[False] * 3]


def test_the_readme_verdicts_table_is_generated_from_the_records():
    """No verdict in the README is typed by hand: its table is `purify claims --table`'s."""
    from pathlib import Path

    from purify.cli import VERDICTS_BEGIN, VERDICTS_END, verdicts_table

    text = Path("README.md").read_text()
    block = text.split(VERDICTS_BEGIN, 1)[1].split(VERDICTS_END, 1)[0].strip()
    assert block == verdicts_table(Path("figures")), "rerun `purify claims --table --readme README.md`"


def test_every_figure_says_which_seeds_it_shows():
    from purify.plotting import seeds_note

    assert (
        seeds_note({"seeds": [0, 1, 2, 3]})
        == "seeds 0..3: exploratory (the development seeds; their verdicts are post hoc)"
    )
    conf = seeds_note({"seeds": [CONFIRMATORY_START, CONFIRMATORY_START + 7], "phase": "confirmatory"})
    assert conf.startswith("seeds 1000000..1000007: confirmatory")


def test_the_attack_gate_bounds_the_gap_by_half_the_smallest_effect():
    """The upper 95% bound of the mean gap (default - reference) must lie below min_effect / 2
    (0.01 for GAIN's 0.02); a claim with min_effect 0 uses ATTACK_TOLERANCE."""
    claim = dataclasses.replace(GAIN, gates=("above chance", "attack converged"))
    small = [0.002, 0.004, 0.0, 0.003, 0.001, 0.002]  # mean 0.002, upper bound about 0.0036
    (v,) = decide((claim,), [statistic("gain", VALUES, gates={"attack converged": small}, tau=0.25)], n_eval=1024)
    g = v["gates"]["attack converged"]
    assert g["passed"] and g["tolerance"] == 0.01 and g["gap_upper95"] < 0.005 and v["verdict"] == "holds"
    wide = [0.0, 0.02, 0.0, 0.015, 0.0, 0.012]  # mean 0.0078 below 0.01, but its upper bound is above
    (w,) = decide((claim,), [statistic("gain", VALUES, gates={"attack converged": wide}, tau=0.25)], n_eval=1024)
    assert not w["gates"]["attack converged"]["passed"] and w["verdict"] == "invalid"
    assert "gate 'attack converged' failed" in w["invalid_reason"]
    zero = dataclasses.replace(claim, min_effect=0.0, why="the tolerance is the claim")
    (z,) = decide((zero,), [statistic("gain", VALUES, gates={"attack converged": small}, tau=0.25)], n_eval=1024)
    assert z["gates"]["attack converged"]["tolerance"] == claims.ATTACK_TOLERANCE


# Claims that name robustness but need no attack gate, each with the reason.
NO_ATTACK_GATE = {
    ("attack-audit", "within-reference"): "it is the audit: its statistic is the gap itself",
    ("fp-robustness", "attacks-exact-on-linear"): "exact: the attacks against the closed form",
    ("fp-linf", "robustness/attacks-exact-on-linear"): "exact: the attacks against the closed form",
    ("inh-supervised", "purity-correlation"): "a correlation, not in accuracy units",
    ("inh-supervised", "purity-correlation-all"): "a correlation, not in accuracy units",
    ("nrt-transfer", "transfer-attack-hurts"): "accuracy under one fixed transferred perturbation",
    ("nrt-transfer", "transfer-attack-excess"): "accuracy under one fixed transferred perturbation",
    ("rep-bound", "fgm-certifies-more"): "certified accuracy: a sound lower bound no attack sets",
    ("rep-bound", "certificate-tight"): "a weaker attack only makes the claim harder to hold",
}


def test_every_claim_on_robustness_declares_the_attack_gate():
    """A claim whose sentence or models speak of robustness, heads or fine-tuned models reads a
    robust accuracy unless exempted above: it must declare 'attack converged' (and its
    experiment must measure it, which `decide` enforces), so the reference attack re-measures
    every model family that enters a robust-accuracy verdict."""
    from purify.registry import all_experiments

    missing = []
    for eid, exp in all_experiments().items():
        for c in exp.claims:
            words = (c.text + " " + " ".join(c.models)).lower()
            speaks = "robust" in words or "head" in words or "fine-tun" in words
            if speaks and (eid, c.id) not in NO_ATTACK_GATE and "attack converged" not in c.gates:
                missing.append((eid, c.id))
    assert not missing, f"claims on robustness without the attack gate: {missing}"
    for key in NO_ATTACK_GATE:
        exp = all_experiments()[key[0]]
        assert any(c.id == key[1] for c in exp.claims), f"exempted claim {key} is not declared"


def test_every_claim_on_trained_models_declares_the_trained_gate():
    """Every claim about trained models, except the attack audit's (the same models under two
    attacks) and exact checks, needs its models to have settled."""
    from purify.registry import all_experiments

    missing = [
        (eid, c.id)
        for eid, exp in all_experiments().items()
        for c in exp.claims
        if "trained" not in c.gates and not c.exact and eid != "attack-audit" and not c.id.endswith("exact-on-linear")
    ]
    assert not missing, f"claims without the trained gate: {missing}"


def test_the_verdicts_table_marks_a_verdict_decided_under_an_earlier_declaration(tmp_path):
    """A committed verdict whose claim hash is not the claim's digest now was decided under
    another rule: the table says so instead of showing it as current."""
    import json
    import shutil
    from pathlib import Path

    from purify.cli import verdicts_table

    src = Path(__file__).resolve().parents[1] / "figures" / "fp-dynamics.json"
    shutil.copy(src, tmp_path / "fp-dynamics.json")
    assert "declared differently since" not in verdicts_table(tmp_path)
    record = json.loads(src.read_text())
    record["verdicts"][0]["claim_hash"] = "0" * 16
    (tmp_path / "fp-dynamics.json").write_text(json.dumps(record))
    rows = [r for r in verdicts_table(tmp_path).splitlines() if r.startswith("| fp-dynamics")]
    assert "declared differently since: post hoc" in rows[0]
    assert all("declared differently" not in r for r in rows[1:])
