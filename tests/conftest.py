import pytest

import purify


def tiny(**settings) -> purify.Config:
    """A config that compiles and runs in a second or two on a CPU."""
    base = {"data.d": 16, "data.k": 2, "model.width": 32, "train.steps": 60, "train.adv_start": 30, "train.batch": 32,
            "eval.n_eval": 64, "eval.pgd_steps": 3, "train.n_log": 8, "hp.tau": 0.3, "eval.taus": (0.3,)}
    base.update(settings)
    return purify.Config().set(**base).validate()


@pytest.fixture
def tiny_cfg():
    return tiny()
