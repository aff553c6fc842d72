import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

import purify

# One compilation cache per test run, shared by the pytest-xdist workers: the same tiny programs
# (a tiny sweep, the transfer experiments' shared backbones) are otherwise compiled once per
# worker. It is keyed by the controlling pytest process and removed when the run ends, so a
# test never depends on a program compiled by an earlier run; tracing, and so every recompile
# check, is unaffected.
# the controller (or a run without workers) names the folder; workers inherit its environment
CACHE = Path(
    os.environ.setdefault(
        "PURIFY_TEST_JAX_CACHE", str(Path(tempfile.gettempdir()) / f"purify-test-cache-{os.getpid()}")
    )
)
jax.config.update("jax_compilation_cache_dir", str(CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def pytest_sessionfinish(session):
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, after every worker is done
        shutil.rmtree(CACHE, ignore_errors=True)


def tiny(**settings) -> purify.Config:
    """A config that compiles and runs in a second or two on a CPU."""
    base = {
        "data.d": 16,
        "data.k": 2,
        "model.width": 32,
        "train.steps": 60,
        "train.adv_start": 30,
        "train.batch": 32,
        "eval.n_eval": 64,
        "eval.pgd_steps": 3,
        "eval.restarts": 1,  # one start: tests cover the code paths; restarts have their own tests
        "train.n_log": 8,
        "hp.tau": 0.3,
        "eval.taus": (0.3,),
    }
    base.update(settings)
    return purify.Config().set(**base).validate()


@pytest.fixture
def tiny_cfg():
    return tiny()
