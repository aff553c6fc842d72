"""What a training run records over time, declared once (docs/science.md section 3).

Each traced quantity is one `Quantity`: its name, its axes at one log point, the label a plot
shows, its definition and how it is computed from a `Probe` of the current weights. From these
declarations follow the trace buffers of a run (`buffers`), the axes of every array in a
`Results` (`dims`), the trace's share of the memory estimate (`floats_per_log_point`) and the
plot labels (`LABELS`). Adding a metric means adding one `Quantity` here.

The run-health rules also live here, with their definitions: a run has *diverged* when its
weights or held-out loss go non-finite or explode (`healthy`), a neuron is *dead* when it is
zero on every held-out input (`dead_fraction`), and a run is a *constant predictor* when it
predicts one class on nearly every held-out input (`constant_predictor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import attacks, contrastive, metrics, network
from .data import sample

# A run is marked diverged when its held-out logistic loss (summed over tasks, per example)
# exceeds 100 times that of the zero predictor, ln 2, or a first-layer row norm exceeds 1e6 (the
# data have norm ~1 and logistic training grows weights only logarithmically; an exploding run
# with relative thresholds can instead go silent, f = 0, with a harmless-looking loss).
DIVERGED_LOSS = 100 * math.log(2.0)
DIVERGED_NORM = 1e6
# A run predicting one class on more than this fraction of held-out inputs is flagged constant.
CONSTANT_RATE = 0.98
# A supervised run whose final held-out clean accuracy (mean over tasks) is at most this is
# flagged *at chance*, like a diverged run: the labels are balanced, so 0.5 is guessing, and at
# n_eval = 1024 a guesser exceeds 0.6 with probability below 1e-9. Its numbers (rho, purity,
# robustness) describe a network that learned nothing and never enter a verdict.
CHANCE_ACCURACY = 0.6


@dataclass(frozen=True)
class Quantity:
    """One traced quantity. `axes` are its axes at one log point (the buffer leads with 'time');
    `supervised` quantities need labels and stay NaN under a contrastive objective."""

    name: str
    axes: tuple[str, ...]
    label: str
    definition: str
    compute: Callable[[Probe], jax.Array]
    supervised: bool = False


class Probe:
    """The measurements of one run's current weights, each computed at most once per log point.

    run: the `train.Run`; state: its `RunState`; task: the data task; t: the step (traced);
    light: attack with the light evaluation (`EvalConfig.full_at`) instead of the full one.
    """

    def __init__(self, run, state, task, t, light: bool = False):
        self.run, self.state, self.task, self.t = run, state, task, t
        self.cfg = run.cfg
        self.params = state.params
        self.beta = state.hp.beta
        self.light = bool(light)
        self.spec = run.cfg.eval.light_spec if self.light else run.cfg.eval.spec

    @cached_property
    def W(self) -> jax.Array:
        return network.effective_weights(self.params)

    @cached_property
    def neurons(self) -> dict[str, jax.Array]:
        return metrics.neuron_metrics(self.W, self.task.M, self.task.w_star[0])

    def weighted(self, name: str) -> jax.Array:
        return metrics.weighted_mean(self.neurons[name], self.neurons["norm"])

    @cached_property
    def head(self) -> jax.Array:
        return network.head(self.run.arch, self.params)

    @cached_property
    def eval_batch(self) -> tuple[jax.Array, jax.Array]:
        return self.run.eval_batch(self.state, self.task)

    @cached_property
    def hidden(self) -> jax.Array:
        return network.hidden(self.run.arch, self.params, self.eval_batch[0], self.beta)

    @cached_property
    def logits(self) -> jax.Array:
        return self.hidden @ self.head

    @cached_property
    def loss(self) -> jax.Array:
        cfg, streams = self.cfg, self.state.streams
        if cfg.train.contrastive:
            # views of clean held-out inputs, as in training (the eval batch carries the view noise once already)
            clean, _, _ = sample(streams.eval_data, cfg.data, self.task, cfg.eval.n_eval, 0.0, noise_free=True)
            v1, v2 = contrastive.views(
                jax.random.fold_in(streams.eval_data, 1), clean, self.state.hp.noise, cfg.train.view_mask
            )
            return self.run.example_loss(self.params, v1, v2, self.beta).mean()
        return network_loss(self.logits, self.eval_batch[1])

    @cached_property
    def attacked(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Clean (T,), robust (T, radius) and per-attack (T, radius, attack) accuracy; each task attacked separately."""
        x, y = self.eval_batch
        key = jax.random.fold_in(self.state.streams.eval_attack, self.t)
        out = []
        for j in range(self.cfg.data.n_tasks):
            margin = lambda v, j=j: y[:, j] * self.run.logits(self.params, v, self.beta)[:, j]
            out.append(attacks.robust_accuracy(margin, x, y[:, j], self.task.label_directions[j], key, self.spec))
        return tuple(jnp.stack(parts) for parts in zip(*out))


def network_loss(f: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over examples of the logistic loss softplus(-y f), summed over tasks."""
    return jax.nn.softplus(-y * f).sum(-1).mean()


def dead_fraction(g: jax.Array) -> jax.Array:
    """Fraction of hidden units that are zero on every input of g (n, m)."""
    return (jnp.abs(g).max(0) == 0).mean()


def _per_neuron(name: str, label: str, definition: str) -> list[Quantity]:
    """A per-neuron metric and its norm-weighted mean over neurons (tiny dead neurons otherwise dominate)."""
    return [
        Quantity(name, ("neuron",), label, definition, lambda p: p.neurons[name]),
        Quantity(
            f"{name}_nw",
            (),
            f"{label} (norm-weighted)",
            f"sum_i |w_i| {name}_i / sum_i |w_i|",
            lambda p: p.weighted(name),
        ),
    ]


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("norm", ("neuron",), "row norm |w_i|", "|w_i|_2", lambda p: p.neurons["norm"]),
    *_per_neuron("purity", "purity", "max_j c_ij^2 / |w_i|^2, C = W M"),
    *_per_neuron("features", "features per neuron (γ = 0.5)", "#{j : |c_ij| >= 0.5 max_j |c_ij|}"),
    *_per_neuron("participation", "participation ratio", "(sum_j c_ij^2)^2 / sum_j c_ij^4"),
    *_per_neuron("rho", "dense-mixture coherence ρ", "|<w_i, M w*>| / (|w*| max_j |c_ij|)"),
    Quantity(
        "alignment",
        (),
        "mixture alignment (mean pairwise cos)",
        "mean pairwise cosine of the neurons' mixtures (main feature removed)",
        lambda p: metrics.mixture_alignment(metrics.feature_coefficients(p.W, p.task.M), jnp.sign(p.head[:, 0])),
    ),
    Quantity(
        "dead_fraction",
        (),
        "fraction of dead neurons",
        "fraction of units zero on every held-out input",
        lambda p: dead_fraction(p.hidden),
    ),
    Quantity(
        "loss",
        (),
        "held-out loss",
        "logistic loss softplus(-y f) summed over tasks (contrastive: the objective on clean inputs' views)",
        lambda p: p.loss,
    ),
    Quantity(
        "clean_acc",
        ("task",),
        "clean accuracy",
        "fraction of held-out inputs with y f(x) > 0",
        lambda p: p.attacked[0],
        supervised=True,
    ),
    Quantity(
        "positive_rate",
        ("task",),
        "fraction predicted +1",
        "fraction of held-out inputs with f(x) > 0",
        lambda p: (p.logits > 0).mean(0),
        supervised=True,
    ),
    Quantity(
        "robust_acc",
        ("task", "radius"),
        "robust accuracy",
        "fraction correct clean and under every attack (FGM, PGD, dense)",
        lambda p: p.attacked[1],
        supervised=True,
    ),
    Quantity(
        "attack_acc",
        ("task", "radius", "attack"),
        "accuracy under each attack",
        "fraction correct under FGM, PGD and the dense attack",
        lambda p: p.attacked[2],
        supervised=True,
    ),
    Quantity(
        "full_eval",
        (),
        "full evaluation (1) or light (0)",
        "1 where robust_acc and attack_acc come from the full evaluation (eval.pgd_steps x eval.restarts), "
        "0 where from the light one (eval.light_pgd_steps x eval.light_restarts: reads high)",
        lambda p: jnp.float32(0.0 if p.light else 1.0),
        supervised=True,
    ),
)
BY_NAME = {q.name: q for q in QUANTITIES}
LABELS = {q.name: q.label for q in QUANTITIES}


def axis_sizes(cfg) -> dict[str, int]:
    """The length of every axis a traced quantity can have, for a config."""
    return {
        "neuron": cfg.model.width,
        "task": cfg.data.n_tasks,
        "radius": len(cfg.eval.taus),
        "attack": len(attacks.ATTACK_NAMES),
    }


def shape(q: Quantity, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[a] for a in q.axes)


def measure(probe: Probe) -> dict[str, jax.Array]:
    """One row of the trace: every quantity at the probe's weights (float32)."""
    sizes = axis_sizes(probe.cfg)
    skip = probe.cfg.train.contrastive  # no labels: accuracies stay NaN
    return {
        q.name: (jnp.full(shape(q, sizes), jnp.nan) if skip and q.supervised else q.compute(probe)).astype(jnp.float32)
        for q in QUANTITIES
    }


def buffers(cfg, n_log: int) -> dict[str, jax.Array]:
    """The empty trace of one run: name -> (n_log, *axes) NaN until written."""
    sizes = axis_sizes(cfg)
    return {q.name: jnp.full((n_log,) + shape(q, sizes), jnp.nan, jnp.float32) for q in QUANTITIES}


def floats_per_log_point(cfg) -> int:
    sizes = axis_sizes(cfg)
    return sum(math.prod(shape(q, sizes)) for q in QUANTITIES)


def dims(name: str) -> tuple[str, ...] | None:
    """The axes of a traced array in a Results (after 'hparam', 'seed'), or None if not traced."""
    q = BY_NAME.get(name)
    return None if q is None else ("time",) + q.axes


def healthy(row: dict[str, jax.Array], W: jax.Array) -> jax.Array:
    """False once a run has diverged: non-finite weights, held-out loss above DIVERGED_LOSS or a
    weight row norm above DIVERGED_NORM (a NaN compares False, so it is unhealthy too)."""
    return jnp.all(jnp.isfinite(W)) & (row["loss"] < DIVERGED_LOSS) & (row["norm"].max() < DIVERGED_NORM)


def at_chance(final_clean_acc: Any) -> np.ndarray:
    """True where a run's final clean accuracy (mean over tasks) is at most CHANCE_ACCURACY; a
    non-finite accuracy (a contrastive run has none) is not flagged here."""
    final = np.asarray(final_clean_acc)
    return np.isfinite(final) & (final <= CHANCE_ACCURACY)


def constant_predictor(positive_rate: Any) -> np.ndarray:
    """True where a run predicts one class on more than CONSTANT_RATE of held-out inputs."""
    rate = np.asarray(positive_rate)
    return (rate > CONSTANT_RATE) | (rate < 1 - CONSTANT_RATE)
