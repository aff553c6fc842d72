"""The package as a user installs it: a wheel with only `purify` at its top level, which runs from
a fresh virtual environment outside this checkout."""

import json
import pathlib
import site
import subprocess
import sys
import zipfile

import pytest

from .test_cli import TEST

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # build isolation fetches the build backend pyproject.toml names from the package registry
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (path,) = out.glob("purify-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_only_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"purify"}
    assert "purify/experiments/fp_dynamics.py" in names and "purify/experiments/_common.py" in names
    assert not any(n.startswith("tests/") for n in names)


@pytest.mark.slow
def test_the_wheel_runs_from_a_fresh_environment(wheel, tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    (new_site,) = env.glob("lib/python*/site-packages")
    # the dependencies come from this environment's site-packages, after the wheel's own folder;
    # a path listed in a .pth file is not itself scanned for .pth files, so this checkout's
    # editable install stays out of the fresh environment
    deps = [p for p in site.getsitepackages() if pathlib.Path(p).exists()]
    (new_site / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import purify; print(purify.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert pathlib.Path(where).is_relative_to(new_site), where
    listing = subprocess.run(
        [str(env / "bin" / "purify"), "list"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "fp-dynamics" in listing and "rep-bound" in listing
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(env / "bin" / "purify"), "run", "fp-dynamics", "--seeds", "2", "--out", str(out), "--no-resume"] + TEST,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "fp-dynamics.json").read_text())
    assert record["seeds"] == [0, 1] and (out / "fp-dynamics.png").exists()
