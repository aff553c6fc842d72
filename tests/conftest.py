import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

import purify

# One compilation cache per test run, shared by the pytest-xdist workers and by the `purify`
# processes the tests start (through PURIFY_CACHE_DIR): the same tiny programs (a tiny sweep, the
# transfer experiments' shared backbones, fp-dynamics at its test sizes) are otherwise compiled
# once per process. It starts empty and is removed when the run ends, so a test never depends on
# a program compiled by an earlier run; tracing, and so every recompile check, is unaffected.
# A caller may name the folder (PURIFY_TEST_JAX_CACHE: `.ci/run` shares one between its fast and
# slow parts) and then owns it. The controller (or a run without workers) decides; workers
# inherit its environment.
OWNED = "PURIFY_TEST_JAX_CACHE" not in os.environ
CACHE = Path(
    os.environ.setdefault(
        "PURIFY_TEST_JAX_CACHE", str(Path(tempfile.gettempdir()) / f"purify-test-cache-{os.getpid()}")
    )
)
os.environ["PURIFY_CACHE_DIR"] = str(CACHE)
jax.config.update("jax_compilation_cache_dir", str(CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def pytest_sessionfinish(session):
    if OWNED and "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, after every worker is done
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
