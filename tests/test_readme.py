"""The README's REPL example runs exactly as written."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_repl_example_runs_verbatim(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (running the documented example is the test)
    res, one, avg, back = scope["res"], scope["one"], scope["avg"], scope["back"]
    assert res["purity"].shape[:2] == (4, 16)  # 64 networks
    assert one.dims["purity"] == ("time", "neuron")
    assert avg.dims["robust_acc"] == ("hparam", "time", "radius")
    assert (tmp_path / "purity.png").exists() and (tmp_path / "runs" / "tau-sweep.npz").exists()
    assert back.dims == res.dims
    # the full evaluation at the last log point only, and the Results say so
    assert (res["full_eval"][..., -1] == 1).all() and (res["full_eval"][..., :-1] == 0).all()
    # regression guard (a scientific hypothesis, not a property of the code): the largest
    # training radius purifies more than clean training
    final = avg["purity_nw"][:, -1]
    assert final[3] > final[0] + 0.1, final


@pytest.mark.slow
def test_readme_transfer_example_runs_verbatim(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    code = next(b for b in blocks if "fit_and_evaluate" in b)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (running the documented example is the test)
    robust, con = scope["robust"], scope["con"]
    assert robust.shape == (2, 4)
    # regression guard: the clean head inherits the FGM backbone's robustness
    assert robust[1].mean() > robust[0].mean() + 0.05, robust
    assert con["purity_nw"].shape[:2] == (2, 2) and not con.failed().any()
