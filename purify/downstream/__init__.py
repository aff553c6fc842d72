"""Downstream learning on a pre-trained two-layer backbone (docs/science.md section 2 "Downstream").

The downstream model is f(x) = <v, g(x)> + c, with g the pre-trained network's own hidden
representation (`purify.network.hidden`: the backbone's unit and threshold rule, its saved
thresholds 'b' when it has them), seen through a low-rank update W + U V and a threshold
offset db. Parameters: the backbone's as saved ({'W': (m, d)}, plus 'b' (m,) for fixed or
trainable thresholds) and {'U': (m, r), 'V': (r, d), 'db': (m,), 'v': (m,), 'c': ()}; a method
trains a subset, the rest stay at their start (W = the backbone, U = 0, db = 0), so before any
training g is exactly the pre-trained network's hidden layer:

    probe: v, c (linear probing on the frozen representation)
    bias: db, v, c (bias-only fine-tuning)
    lowrank: U, V, v, c (a rank-r update of the first layer)
    full: W, v, c (full fine-tuning)

The head starts at random (RanLI: v ~ N(0, 1/m), c = 0), or from a linear-probing stage of
`probe_steps` steps: adversarial (RoLI, attack `init_attack` at radius hp tau) or clean (StLI).
The loss is logistic on x + delta (delta the FGM/PGD attack of the stage, or 0), plus
hp lam * mean_i |g(x_i) - g_pre(x_i)|^2 / m (the feature-discrepancy penalty towards the
pre-trained representation g_pre on clean inputs: the [NRT] remedy; only with `discrepancy`).

Data: a finite training set of `n_max` samples of which the first hp-independent `n` are used
(`n` is an argument, so downstream sample sizes share one program), a validation split for
model selection and a test split, drawn from the run key; labels y = sign<theta, z> for a
downstream task theta (d,). Optimizer: Adam (optax) with the learning rate per run.

Modules: `program` (the model, its fit and evaluation as pure functions), `fitting` (many fits
at once, resumable, and the reference attack of the gate), `tasks` (backbones, downstream
tasks, Bayes accuracy, validation selection).
"""

from .fitting import Along, fit_and_evaluate, fit_grid, flatten_along, reference_gaps
from .program import (
    DOWN_ATTACKS,
    HEAD_INIT_NAMES,
    HEAD_INITS,
    METHODS,
    SPLITS,
    TRAINED,
    DownstreamConfig,
    initial_params,
    logits,
    make_evaluate,
    make_fit,
    representation,
    run_keys,
    splits,
)
from .tasks import backbones, bayes_accuracy, downstream_tasks, select_by_validation

__all__ = [
    "DOWN_ATTACKS",
    "HEAD_INITS",
    "HEAD_INIT_NAMES",
    "METHODS",
    "SPLITS",
    "TRAINED",
    "Along",
    "DownstreamConfig",
    "backbones",
    "bayes_accuracy",
    "downstream_tasks",
    "fit_and_evaluate",
    "fit_grid",
    "flatten_along",
    "initial_params",
    "logits",
    "make_evaluate",
    "make_fit",
    "reference_gaps",
    "representation",
    "run_keys",
    "select_by_validation",
    "splits",
]
