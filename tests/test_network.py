"""The model is defined once: every consumer sees the pre-trained network's own hidden layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purify
from purify import downstream, network, representation

from .conftest import tiny


@pytest.mark.slow
@pytest.mark.parametrize("bias", ["relative", "fixed", "trainable"])
@pytest.mark.parametrize("adv_rank", [0, 2])
def test_downstream_representation_is_the_pretrained_networks_hidden_layer(bias, adv_rank):
    """g(x) of the downstream model at its start equals the pre-trained network's hidden units,
    for every threshold rule and for a low-rank W + U V, to float precision."""
    cfg = tiny(**{"model.bias": bias, "train.adv_rank": adv_rank, "train.steps": 40, "train.adv_start": 20})
    res = purify.sweep(cfg, grid={"tau": [0.0, 0.3]}, seeds=2)
    bb = downstream.backbones(res)  # (4 runs, ...)
    x, _, _ = purify.sample(jax.random.key(7), cfg.data, purify.make_task(cfg.data), 64, 0.0)
    arch, beta = purify.Architecture.of(cfg), cfg.hp.beta
    params = {
        k[: -len("_final")]: np.asarray(res[k]).reshape((-1,) + res[k].shape[2:])
        for k in res.arrays
        if k.endswith("_final")
    }
    for r in range(4):
        own = network.hidden(arch, {k: v[r] for k, v in params.items()}, x, beta)
        start = downstream.initial_params(jax.random.key(r), {k: v[r] for k, v in bb.items()}, 2)
        seen = downstream.representation(arch, start, x, beta)
        np.testing.assert_allclose(np.asarray(seen), np.asarray(own), rtol=1e-5, atol=1e-6)
    if bias == "trainable":  # the trained thresholds matter: the relative rule would give another g
        relative = network.hidden(
            network.Architecture.of(cfg.set(**{"model.bias": "relative"})), {"W": bb["W"][1]}, x, beta
        )
        assert not np.allclose(
            np.asarray(relative), np.asarray(network.hidden(arch, {k: v[1] for k, v in bb.items()}, x, beta))
        )


def test_a_backbone_without_its_thresholds_is_refused():
    cfg = tiny(**{"model.bias": "trainable"})
    with pytest.raises(purify.ConfigError, match="model.bias='trainable'"):
        purify.fit_and_evaluate(
            cfg,
            purify.DownstreamConfig(),
            jnp.eye(16),
            seeds=[0],
            backbone={"W": np.zeros((1, 32, 16))},
            beta=0.6,
            theta=np.ones(16),
            n=10,
            lr=0.01,
        )


def test_rep_bounds_use_the_networks_thresholds():
    """The certified shift of a fixed-threshold network is computed with its saved thresholds."""
    arch = network.Architecture(bias="fixed", z_min=0.5)
    W = jax.random.normal(jax.random.key(0), (8, 4))
    x = jax.random.normal(jax.random.key(1), (32, 4))
    low, high = {"W": W, "b": jnp.zeros(8)}, {"W": W, "b": jnp.full((8,), 100.0)}
    assert float(representation.certified_shift(arch, low, 0.6, x, 0.1, "l2").min()) > 0
    assert (
        float(representation.certified_shift(arch, high, 0.6, x, 0.1, "l2").max()) == 0.0
    )  # every unit silent: g cannot move


def test_thresholds_follow_each_rule():
    W = jnp.asarray([[3.0, 4.0], [0.0, 1.0]])
    rel = network.thresholds(network.Architecture(bias="relative", z_min=0.5), {"W": W}, 0.6)
    np.testing.assert_allclose(rel, [0.6 * 0.5 * 5.0, 0.6 * 0.5 * 1.0], rtol=1e-6)
    trainable = network.thresholds(network.Architecture(bias="trainable"), {"W": W, "b": jnp.asarray([-1.0, 2.0])}, 0.6)
    np.testing.assert_array_equal(trainable, [0.0, 2.0])  # clipped at 0
    offset = network.thresholds(
        network.Architecture(bias="fixed"), {"W": W, "b": jnp.asarray([1.0, 2.0]), "db": jnp.asarray([0.5, -0.5])}, 0.6
    )
    np.testing.assert_array_equal(offset, [1.5, 1.5])
    np.testing.assert_array_equal(
        network.soft_threshold(jnp.asarray([-3.0, -0.5, 0.5, 3.0]), 1.0), [-2.0, 0.0, 0.0, 2.0]
    )


@pytest.mark.parametrize("bias", ["relative", "fixed", "trainable"])
def test_a_threshold_offset_never_makes_a_threshold_negative(bias):
    """Bias-only fine-tuning trains db without bound; b + db < 0 would turn the dead zone into an
    overlap and break the certified bound's assumption b >= 0."""
    W = jnp.asarray([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    params = {"W": W, "b": jnp.asarray([1.0, 0.3, 0.2]), "db": jnp.asarray([-5.0, -0.1, 0.4])}
    b = network.thresholds(network.Architecture(bias=bias, z_min=0.5), params, 0.6)
    base = network.thresholds(network.Architecture(bias=bias, z_min=0.5), {k: params[k] for k in ("W", "b")}, 0.6)
    np.testing.assert_allclose(b, np.maximum(np.asarray(base) + np.asarray(params["db"]), 0.0), rtol=1e-6)
    assert float(b[0]) == 0.0 and float(b.min()) >= 0.0
    # and the gradient through a clipped offset is zero, not a push further below zero
    g = jax.grad(
        lambda db: network.thresholds(network.Architecture(bias=bias, z_min=0.5), {**params, "db": db}, 0.6).sum()
    )(params["db"])
    assert float(g[0]) == 0.0 and float(g[2]) == 1.0
