"""The experiment protocol: the registry and the declared options, checked before anything trains."""

import subprocess
import sys

import pytest

from purify.cli import main
from purify.config import ConfigError
from purify.experiment import ENTRY_POINT_GROUP, Option, all_experiments, get


def test_the_registry_is_the_entry_point_group():
    import importlib.metadata

    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert names == set(all_experiments()) and "fp-dynamics" in names
    with pytest.raises(ConfigError, match="experiment='nope' is not allowed"):
        get("nope")


def test_the_library_does_not_import_the_experiments_package():
    code = (
        "import sys, purify, purify.cli, purify.experiment; "
        "print('experiments' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize(
    "exp_id,option,value,message",
    [
        ("fp-robustness", "n_taus", 0, "exp.n_taus=0 is not allowed for fp-robustness: must be an integer >= 2"),
        (
            "fp-robustness",
            "tau_max",
            -1.0,
            "exp.tau_max=-1.0 is not allowed for fp-robustness: must be a finite number > 0, or none",
        ),
        ("nrt-transfer", "sizes", 0, "exp.sizes=0 is not allowed for nrt-transfer"),
        ("nrt-transfer", "sizes", 4096, "exp.sizes=(4096,) is not allowed: every size must be <= exp.n_down = 2048"),
        ("fp-phase", "ks", 128, "exp.ks=(128,) is not allowed: every k must be <= the smallest d = 64"),
        ("roli-init", "lrs", 0.1, "exp.lrs=0.1 is not allowed: exp.lrs is a table set in a preset"),
        ("fp-dynamics", "n_taus", 3, "exp.n_taus is not allowed: fp-dynamics options are none"),
    ],
)
def test_bad_options_fail_before_anything_trains(exp_id, option, value, message, monkeypatch):
    exp = all_experiments()[exp_id]
    monkeypatch.setattr(
        type(exp), "run", property(lambda self: pytest.fail("trained despite a bad option")), raising=False
    )
    with pytest.raises(ConfigError) as err:
        exp.config("cpu", {f"exp.{option}": value})
    assert message in str(err.value)


def test_a_single_value_is_a_list_of_one_and_numpy_scalars_are_numbers():
    import numpy as np

    _, _, options = get("fp-phase").config("cpu", {"exp.ks": 4, "exp.taus": np.float32(0.25)})
    assert options["ks"] == (4,) and options["taus"] == (0.25,)
    assert Option("n", int, 1, "").check(np.int64(3), "") == 3


def test_the_cli_names_a_bad_option(capsys):
    assert main(["run", "fp-robustness", "--set", "exp.n_taus=0"]) == 2
    assert "exp.n_taus=0 is not allowed" in capsys.readouterr().err


def test_list_settings_shows_every_option(capsys):
    assert main(["list", "--settings"]) == 0
    out = capsys.readouterr().out
    for exp in all_experiments().values():
        for o in exp.options:
            assert f"exp.{o.name} = " in out


def test_output_folder_replaces_a_record_only_with_a_run_like_it(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from purify.experiment import output_folder

    monkeypatch.chdir(tmp_path)
    assert output_folder("fp-dynamics", "cpu", 2, None) == (Path("figures"), None)  # no record yet
    Path("figures").mkdir()
    record = {"preset": "cpu", "seeds": list(range(8)), "overrides": {"eval.taus": [0.1, 0.2]}}
    Path("figures/fp-dynamics.json").write_text(json.dumps(record))
    same = output_folder("fp-dynamics", "cpu", 8, {"eval.taus": (0.1, 0.2)})
    assert same == (Path("figures"), None)  # a reproduction replaces it
    for preset, seeds, overrides in [
        ("gpu", 8, {"eval.taus": (0.1, 0.2)}),
        ("cpu", 2, {"eval.taus": (0.1, 0.2)}),
        ("cpu", 8, None),
    ]:
        where, note = output_folder("fp-dynamics", preset, seeds, overrides, redirect_to="elsewhere")
        assert where == Path("elsewhere") and "figures/fp-dynamics.json is the record of another run" in note
    assert output_folder("fp-dynamics", "gpu", 2, None, overwrite=True) == (Path("figures"), None)
    # an exploratory record is replaced by its confirmation, a confirmatory one never by an exploratory run
    assert output_folder("fp-dynamics", "cpu", 8, {"eval.taus": (0.1, 0.2)}, phase="confirmatory")[1] is None
    Path("figures/fp-dynamics.json").write_text(json.dumps({**record, "phase": "confirmatory"}))
    where, note = output_folder("fp-dynamics", "cpu", 8, {"eval.taus": (0.1, 0.2)}, redirect_to="elsewhere")
    assert where == Path("elsewhere") and "(confirmatory, preset cpu" in note and "--confirm reproduces" in note
    assert output_folder("fp-dynamics", "cpu", 8, {"eval.taus": (0.1, 0.2)}, phase="confirmatory")[1] is None
    Path("figures/fp-dynamics.json").write_text("{damaged")
    where, note = output_folder("fp-dynamics", "cpu", 8, None, redirect_to="elsewhere")
    assert where == Path("elsewhere") and "unreadable" in note
