"""The third-party cross-check (foolbox 3): exact on the linear classifier, never above the
clean accuracy, and wired into attack-audit, with a clear error when foolbox is missing."""

import jax
import numpy as np
import pytest

from purify import landmarks, make_task, sample
from purify.config import ConfigError, DataConfig
from purify.crosscheck import foolbox_accuracy

DATA = DataConfig(d=16, k=2)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_foolbox_reproduces_the_linear_classifiers_exact_robust_accuracy(norm):
    """For a linear classifier every gradient attack is optimal after one step: foolbox's robust
    accuracy equals the closed form (margin / dual norm of the weights > tau) at every radius."""
    task = make_task(DATA)
    x, _, y = sample(jax.random.key(0), DATA, task, 128, 0.0)
    y = y[:, 0]
    taus = (0.0, 0.05, 0.2) if norm == "linf" else (0.0, 0.1, 0.3)
    acc = foolbox_accuracy(landmarks.linear_logits(task), x, y, taus, norm, steps=10)
    r = np.asarray(landmarks.linear_margin(task, x, y, norm=norm))
    exact = [(r > t).mean() for t in taus]
    np.testing.assert_allclose(acc, exact, atol=1 / 128 + 1e-9)  # one example on the boundary at most
    assert acc[0] == pytest.approx(float((np.asarray(y * landmarks.linear_logits(task)(x)) > 0).mean()))
    assert np.all(np.diff(acc) <= 0)


@pytest.mark.slow
def test_the_audit_records_the_foolbox_cross_check_per_family():
    """attack-audit's audit() with foolbox: a third (S, n_tau) accuracy on the same inputs, equal
    to the reference's on the linear model (both exact there); without foolbox, None."""
    from purify import attacks
    from purify.experiments.attack_audit import audit

    task = make_task(DATA)
    lin = landmarks.linear_logits(task)
    seeds = np.arange(2)

    def data(i):
        x, _, y = sample(jax.random.key(int(i)), DATA, task, 64, 0.0)
        return x, y[:, 0]

    spec = attacks.EvalSpec((0.0, 0.3), "l2", 5, 1)
    u = lambda i: task.label_directions[0]
    default, strong, fool = audit(lambda p, v: lin(v), np.zeros(2), data, seeds, spec, u, 10, 2, foolbox=True)
    assert fool.shape == default.shape == (2, 2)
    np.testing.assert_allclose(fool, strong, atol=1 / 64 + 1e-9)
    _, _, none = audit(lambda p, v: lin(v), np.zeros(2), data, seeds, spec, u, 10, 2)
    assert none is None


def test_a_missing_foolbox_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_foolbox(name, *a, **k):
        if name == "foolbox":
            raise ImportError("no foolbox")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_foolbox)
    from purify.experiments.attack_audit import EXPERIMENT

    with pytest.raises(ConfigError, match=r"purify\[crosscheck\]"):
        EXPERIMENT.check(None, {"foolbox": True})
