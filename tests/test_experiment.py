"""The experiment protocol: the registry and the declared options, checked before anything trains."""

import subprocess
import sys

import pytest

from purify.cli import main
from purify.config import ConfigError
from purify.experiment import Option
from purify.registry import ENTRY_POINT_GROUP, all_experiments, experiment_ids, get


def test_builtin_experiments_are_the_modules_of_the_package():
    import pathlib

    import purify.experiments

    folder = pathlib.Path(purify.experiments.__file__).parent
    modules = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert set(experiment_ids()) == {m.replace("_", "-") for m in modules}
    assert set(all_experiments()) == set(experiment_ids()) and "fp-dynamics" in experiment_ids()
    with pytest.raises(ConfigError, match=r"experiment='nope' is not allowed: must be one of \['attack-audit'"):
        get("nope")


def test_get_imports_only_the_experiment_asked_for():
    code = (
        "import sys; from purify.registry import get; exp = get('fp-robustness'); "
        "print(exp.id, sorted(m for m in sys.modules if m.startswith('purify.experiments.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    # fp-robustness runs the shared purification protocol (_purification, _common) and no other experiment
    shared = "'purify.experiments._common', 'purify.experiments._purification'"
    assert out == f"fp-robustness [{shared}, 'purify.experiments.fp_robustness']"


EXAMPLE = """
from purify.experiment import Experiment
EXPERIMENT = Experiment(id={id!r}, claim="x", title="t", summary="s", presets={{}}, run=None, plot=None)
"""


def test_a_new_file_is_an_experiment_without_reinstalling(tmp_path, monkeypatch):
    from purify import registry

    (tmp_path / "myexps").mkdir()
    (tmp_path / "myexps" / "__init__.py").write_text("")
    (tmp_path / "myexps" / "_shared.py").write_text("X = 1\n")
    (tmp_path / "myexps" / "my_claim.py").write_text(EXAMPLE.format(id="my-claim"))
    (tmp_path / "myexps" / "misnamed.py").write_text(EXAMPLE.format(id="other"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "BUILTIN_PACKAGE", "myexps")
    monkeypatch.setattr(registry, "_entry_points", dict)
    assert registry.experiment_ids() == ["misnamed", "my-claim"]
    assert registry.get("my-claim").id == "my-claim"
    with pytest.raises(RuntimeError, match="myexps.misnamed does not define an Experiment with id 'misnamed'"):
        registry.get("misnamed")


def test_other_packages_register_through_the_entry_point_group(tmp_path, monkeypatch):
    import importlib.metadata

    from purify import registry

    (tmp_path / "their_pkg.py").write_text(EXAMPLE.format(id="their-claim") + "\nNOT_ONE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def points(*pairs):
        eps = {n: importlib.metadata.EntryPoint(n, v, ENTRY_POINT_GROUP) for n, v in pairs}
        monkeypatch.setattr(registry, "_entry_points", lambda: eps)

    points(("their-claim", "their_pkg:EXPERIMENT"))
    assert experiment_ids()[-1] == "their-claim" and "fp-dynamics" in experiment_ids()
    assert get("their-claim").id == "their-claim"
    points(("their-claim", "their_pkg:NOT_ONE"))
    with pytest.raises(RuntimeError, match="their_pkg:NOT_ONE in group purify.experiments does not define"):
        get("their-claim")
    points(("fp-dynamics", "their_pkg:EXPERIMENT"))
    with pytest.raises(RuntimeError, match="takes the id of a built-in experiment"):
        get("fp-dynamics")


def test_the_library_does_not_import_the_experiments_package():
    code = (
        "import sys, purify, purify.cli, purify.experiment, purify.registry, purify.runner, purify.records; "
        "print('purify.experiments' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
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
        ("fp-principle", "n_taus", 3, "exp.n_taus is not allowed: fp-principle options are none"),
        ("fp-robustness", "uniform_k", 65, "exp.uniform_k=65 is not allowed: must be <= data.d=64"),
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


@pytest.mark.parametrize("exp_id", experiment_ids())
def test_no_experiment_takes_a_light_evaluation(exp_id):
    # its figures and verdicts read robust accuracy over training: a light log point would enter them
    with pytest.raises(ConfigError) as err:
        get(exp_id).config("test", {"eval.full_at": "final"})
    assert f"eval.full_at='final' is not allowed for {exp_id}" in str(err.value) and "'every'" in str(err.value)


def test_a_single_value_is_a_list_of_one_and_numpy_scalars_are_numbers():
    import numpy as np

    _, _, options = get("fp-phase").config("cpu", {"exp.ks": 4, "exp.taus": np.float32(0.25)})
    assert options["ks"] == (4,) and options["taus"] == (0.25,)
    assert Option("n", int, 1, "").check(np.int64(3), "") == 3


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"data.k": 4}, "data.k=4 is not allowed: must be odd when data.magnitude='sign'"),
        ({"data.magnitude": "uniform"}, "data.magnitude='uniform' is not allowed for the headroom regime"),
        (
            {"data.d": 16},
            "data.d=16, data.k=5, hp.beta=0.6 are not allowed for the headroom regime: its window is empty",
        ),
    ],
)
def test_a_main_regime_without_headroom_is_refused_before_anything_trains(setting, message):
    with pytest.raises(ConfigError) as err:
        get("fp-robustness").config("cpu", setting)
    assert message in str(err.value)


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

    from purify.records import output_folder

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
