"""Robust accuracy from a third-party attack library: an independent cross-check of the reference.

The reference attack of the 'attack converged' gate (`purify.attacks.audited_accuracy`) is this
toolkit's own code. `foolbox_accuracy` attacks the same model with foolbox 3 (Rauber et al.,
through its JAX model; the optional extra `purify[crosscheck]`): PGD with and without a random
start, the basic iterative method and DeepFool, in the norm of the evaluation. A binary model
f(x) (label sign f) is wrapped as the two logits (0, f), so foolbox's untargeted attacks flip
exactly its prediction. A prediction is robust only if it is correct and survives every attack.

    >>> import jax, jax.numpy as jnp
    >>> from purify import landmarks, make_task, sample
    >>> from purify.config import DataConfig
    >>> task = make_task(DataConfig(d=16, k=2))
    >>> x, _, y = sample(jax.random.key(0), DataConfig(d=16, k=2), task, 64, 0.0)
    >>> acc = foolbox_accuracy(landmarks.linear_logits(task), x, y[:, 0], (0.0, 0.3), "l2", steps=10)
    >>> acc.shape
    (2,)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .compilation import program
from .config import ConfigError

FOOLBOX_VERSION = "3.3.4"
BOUND = 1e3  # foolbox clips to a box; the data are unbounded, so the box is far outside them


def require_foolbox():
    """foolbox, or a ConfigError that says how to install it."""
    try:
        import foolbox
    except ImportError:
        raise ConfigError(
            "the foolbox cross-check is not allowed here: foolbox is not installed; install the optional extra with "
            f"pip install 'purify[crosscheck]' (foolbox=={FOOLBOX_VERSION})"
        ) from None
    return foolbox


def foolbox_attacks(norm: str, steps: int) -> dict:
    """name -> foolbox attack, for the norm 'l2' or 'linf'."""
    fb = require_foolbox()
    prefix = {"l2": "L2", "linf": "Linf"}.get(norm)
    if prefix is not None:
        cls = lambda name: getattr(fb.attacks, prefix + name)
        return {
            "PGD": cls("PGD")(steps=steps, random_start=True),
            "PGD, no random start": cls("PGD")(steps=steps, random_start=False),
            "BIM": cls("BasicIterativeAttack")(steps=steps),
            "DeepFool": cls("DeepFoolAttack")(steps=max(steps, 50)),
        }
    raise ConfigError(f"norm={norm!r} is not allowed: the foolbox cross-check supports 'l2' and 'linf'")


def foolbox_accuracy(logit_fn, x, y, taus, norm: str, steps: int = 200) -> np.ndarray:
    """Robust accuracy (n_tau,) of the binary model logit_fn: (n, d) -> (n,) on inputs x (n, d)
    with labels y (n,) in {-1, +1}, under every attack of `foolbox_attacks(norm, steps)`."""
    fb = require_foolbox()
    two = program(lambda v: jnp.stack([jnp.zeros(v.shape[0], v.dtype), logit_fn(v)], -1))
    model = fb.JAXModel(two, bounds=(-BOUND, BOUND))
    x, labels = jnp.asarray(x), (jnp.asarray(y) > 0).astype(jnp.int32)
    taus = [float(t) for t in taus]
    robust = np.broadcast_to(np.asarray(jnp.asarray(y) * logit_fn(x) > 0), (len(taus), x.shape[0])).copy()
    for attack in foolbox_attacks(norm, steps).values():
        _, _, success = attack(model, x, labels, epsilons=taus)
        robust &= ~np.asarray(success, bool)
    return robust.mean(1)
