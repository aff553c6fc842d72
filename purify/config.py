"""Static configuration and sweepable hyper-parameters, validated before anything compiles.

A training run is fixed by a :class:`Config` (everything that fixes shapes or program
structure: dimensions, modes, step counts) and by :class:`HParams` (float scalars that may vary
across a vmapped sweep without recompiling). Every field is checked up front and a bad value
raises :class:`ConfigError` naming the parameter, its value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flax import struct

from .attacks import EvalSpec


class ConfigError(ValueError):
    """A configuration value is not allowed. The message names parameter, value and rule."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed: {allowed}")


# Integer settings become int32 inside the compiled programs (steps, sizes, counters); seeds
# become the 32-bit words of a threefry key, where 2**32 would silently alias seed 0.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1
# Float settings enter float32 programs: a value beyond float32's largest finite number becomes
# inf, and a non-zero one below its smallest normal number flushes to 0 (XLA on CPU and GPU).
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, value, "must be an integer")
    hi = INT32_MAX if hi is None else hi
    if lo is not None and value < lo:
        _fail(name, value, f"must be an integer >= {lo}")
    if value > hi:
        why = (
            " (the largest 32-bit seed)"
            if hi == SEED_MAX
            else " (it is an int32 in the program)"
            if hi == INT32_MAX
            else ""
        )
        _fail(name, value, f"must be an integer <= {hi}{why}")


def _float(name: str, value: Any, lo: float | None = None, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(name, value, "must be a finite real number")
    if abs(value) > FLOAT32_MAX or (value != 0 and abs(value) < FLOAT32_TINY):
        _fail(
            name,
            value,
            f"must be 0 or of magnitude between {FLOAT32_TINY:.4g} and {FLOAT32_MAX:.4g}: the program computes in "
            "float32, where a larger value becomes inf and a smaller non-zero one becomes 0",
        )
    if lo is not None and (value <= lo if strict else value < lo):
        _fail(name, value, f"must be {'>' if strict else '>='} {lo}")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        _fail(name, value, f"must be one of {', '.join(repr(o) for o in options)}")


# How a setting may vary across the runs of one sweep, declared on its field (`sweep_kind`):
# STATIC settings fix shapes or program structure, so each value is a program of its own;
# PER_RUN ones are values of one program (integers read at run time, per run); every HParams
# field is a HYPERPARAMETER (a float scalar per run). A grid sweeps any of them.
STATIC, PER_RUN, HYPERPARAMETER = "static", "per-run", "hyper-parameter"


def per_run(default: Any) -> Any:
    """A dataclass field that a sweep may vary per run inside one program."""
    return field(default=default, metadata={"sweep": PER_RUN})


DICTIONARIES = ("identity", "haar", "hadamard", "sphere")
SPARSITIES = ("exact_k", "iid")
MAGNITUDES = ("uniform", "sign")
LABELS = ("rademacher", "gaussian")
ACTIVATIONS = ("soft_threshold", "relu")
BIAS_MODES = ("relative", "fixed", "trainable")
HEADS = ("fixed", "trained")
ATTACKS = ("none", "fgm", "pgd", "surrogate")
NORMS = ("l2", "linf")
FULL_AT = ("every", "final")
OBJECTIVES = ("supervised", "infonce", "spectral")


@dataclass(frozen=True)
class DataConfig:
    """Sparse-coding data x = M z + xi (docs/science.md section 2).

    d: ambient dimension. features: D, the number of features (columns of M); None means D = d.
    dictionary 'identity', 'haar' (uniformly random orthonormal) and 'hadamard' are d x d
    orthonormal; 'sphere' draws D unit-norm columns uniformly on the sphere of R^d, not
    orthogonal, so D > d gives an over-complete dictionary (features in superposition).
    k: active features per sample (exact_k) or expected number (iid), out of D. magnitude 'uniform': non-zero z_j = +-U[1,2]/sqrt(k); 'sign': +-1
    (needs odd k, so margins <w*, z> are odd integers). n_tasks: number of independent label
    vectors w*. n_train: None samples fresh data every step (online); an integer draws one fixed
    training set of that size per run. task_seed fixes M and w*, shared by all runs of a sweep.
    """

    d: int = 64
    features: int | None = None
    k: int = 4
    dictionary: str = "identity"
    sparsity: str = "exact_k"
    magnitude: str = "uniform"
    label: str = "rademacher"
    n_tasks: int = 1
    n_train: int | None = None
    task_seed: int = 0

    def validate(self) -> None:
        _int("data.d", self.d, lo=1)
        _choice("data.dictionary", self.dictionary, DICTIONARIES)
        if self.features is not None:
            _int("data.features", self.features, lo=self.d)
            if self.features != self.d and self.dictionary != "sphere":
                _fail(
                    "data.features",
                    self.features,
                    f"must equal data.d = {self.d} (or be None) for the orthonormal dictionary "
                    f"{self.dictionary!r}; an over-complete dictionary needs data.dictionary='sphere'",
                )
        _int("data.k", self.k, lo=1)
        if self.k > self.n_features:
            _fail("data.k", self.k, f"must be <= the number of features D = {self.n_features}")
        if self.dictionary == "hadamard" and (self.d & (self.d - 1)) != 0:
            _fail("data.d", self.d, "must be a power of two for dictionary='hadamard'")
        _choice("data.sparsity", self.sparsity, SPARSITIES)
        _choice("data.magnitude", self.magnitude, MAGNITUDES)
        if self.magnitude == "sign" and self.k % 2 == 0:
            _fail("data.k", self.k, "must be odd when data.magnitude='sign' (margins must not tie)")
        _choice("data.label", self.label, LABELS)
        _int("data.n_tasks", self.n_tasks, lo=1)
        if self.n_train is not None:
            _int("data.n_train", self.n_train, lo=1)
        _int("data.task_seed", self.task_seed, lo=0, hi=SEED_MAX)

    @property
    def n_features(self) -> int:
        """D: the number of features (columns of M); d unless data.features says otherwise."""
        return self.d if self.features is None else self.features

    @property
    def orthonormal(self) -> bool:
        """Whether M is d x d orthonormal (then C = W M keeps norms and z = M^T x exactly)."""
        return self.dictionary != "sphere"

    @property
    def min_magnitude(self) -> float:
        """Smallest non-zero |z_j|: the scale thresholds and radii are measured in."""
        return 1.0 / math.sqrt(self.k) if self.magnitude == "uniform" else 1.0

    @property
    def window(self) -> tuple[float, float]:
        """The l2 radius window of docs/science.md section 4, (1/sqrt(d), 1/sqrt(k)) in z's scale."""
        s = self.min_magnitude * math.sqrt(self.k)
        return s / math.sqrt(self.d), s / math.sqrt(self.k)


@dataclass(frozen=True)
class ModelConfig:
    """Two-layer network f(x) = sum_i a_i phi_{b_i}(<w_i, x>).

    activation 'soft_threshold': phi_b(u) = ReLU(u - b) - ReLU(-u - b) (the papers' unit);
    'relu': ReLU(u - b) (ablation). bias 'relative': b_i = beta |w_i| z_min, stop-gradient;
    'fixed': b_i = beta z_min |w_i(0)|, frozen; 'trainable': starts there, clipped at >= 0.
    z_min is the smallest non-zero feature magnitude, so beta is the threshold as a fraction of
    it. head 'fixed': a_i = 1 (soft threshold) or alternating +-1 (relu), one output;
    'trained': a learned (width x n_tasks) head.
    """

    width: int = 256
    activation: str = "soft_threshold"
    bias: str = "relative"
    head: str = "fixed"

    def validate(self, data: DataConfig) -> None:
        _int("model.width", self.width, lo=1)
        _choice("model.activation", self.activation, ACTIVATIONS)
        _choice("model.bias", self.bias, BIAS_MODES)
        _choice("model.head", self.head, HEADS)
        if self.head == "fixed" and data.n_tasks != 1:
            _fail(
                "model.head", self.head, f"a fixed head has one output; use 'trained' for data.n_tasks={data.n_tasks}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """SGD on the logistic loss softplus(-y f), adversarial from step `adv_start` on.

    steps: total SGD steps. adv_start: first adversarial step (0: adversarial from scratch;
    == steps: clean throughout). attack: 'none', 'fgm', 'pgd' (pgd_steps steps, random start)
    or 'surrogate' (loss + tau * ||grad_x loss||_*). The radius tau is a hyper-parameter, so a
    sweep over tau (tau = 0 is clean training) shares one compiled program.
    n_log: number of log-spaced evaluation points. snapshot_at: steps at which the full first
    layer W is stored (the weight trajectory is kept only where asked). adv_rank = r > 0
    restricts the adversarial phase to a rank-r update: W_eff = W + U V with W frozen from
    `adv_start` on and U (m x r, zero at first), V (r x d) trained only then.
    objective: 'supervised' (logistic loss on the labels) or contrastive pre-training,
    'infonce' (cosine similarities at `temperature`) or 'spectral', on two views of each sample
    that share z and draw their own noise (hp.noise) and coordinate masks (`view_mask`); a
    contrastive attack perturbs view 1 to maximize the anchor's loss (see purify.contrastive).
    """

    steps: int = 4000
    adv_start: int = per_run(2000)
    batch: int = 256
    attack: str = "fgm"
    norm: str = "l2"
    pgd_steps: int = 5
    momentum: float = 0.0
    n_log: int = 24
    snapshot_at: tuple[int, ...] = ()
    adv_rank: int = 0
    objective: str = "supervised"
    temperature: float = 0.2
    view_mask: float = 0.0

    @property
    def contrastive(self) -> bool:
        return self.objective != "supervised"

    def validate(self) -> None:
        _int("train.steps", self.steps, lo=1)
        _int("train.adv_start", self.adv_start, lo=0, hi=self.steps)
        _int("train.batch", self.batch, lo=1)
        _choice("train.attack", self.attack, ATTACKS)
        _choice("train.norm", self.norm, NORMS)
        _int("train.pgd_steps", self.pgd_steps, lo=1)
        _float("train.momentum", self.momentum, lo=0.0)
        if self.momentum >= 1:
            _fail("train.momentum", self.momentum, "must be in [0, 1)")
        _int("train.n_log", self.n_log, lo=2)
        for s in self.snapshot_at:
            _int("train.snapshot_at[]", s, lo=0, hi=self.steps)
        _int("train.adv_rank", self.adv_rank, lo=0)
        _choice("train.objective", self.objective, OBJECTIVES)
        _float("train.temperature", self.temperature, lo=0.0, strict=True)
        _float("train.view_mask", self.view_mask, lo=0.0)
        if self.view_mask >= 1:
            _fail("train.view_mask", self.view_mask, "must be in [0, 1)")
        if self.contrastive and self.attack == "surrogate":
            _fail(
                "train.attack", self.attack, f"must be 'none', 'fgm' or 'pgd' with train.objective={self.objective!r}"
            )

    @property
    def log_steps(self) -> np.ndarray:
        """Sorted unique evaluation steps: 0, `adv_start`, `steps`, and log-spaced points.

        When adversarial training starts mid-run, the log spacing restarts at `adv_start` (half
        the points on each phase), so the adversarial phase is resolved as finely as the clean one.
        """
        a, n = self.adv_start, self.steps
        if 0 < a < n:
            half = max(2, (self.n_log - 3) // 2)
            grid = np.concatenate([np.geomspace(1, a, half), a + np.geomspace(1, n - a, max(self.n_log - 3 - half, 2))])
        else:
            grid = np.geomspace(1, n, max(2, self.n_log - 2))
        pts = np.unique(np.concatenate([[0, a, n], grid.round().astype(int)]))
        return pts[(pts >= 0) & (pts <= n)]


@dataclass(frozen=True)
class EvalConfig:
    """Robust accuracy on a fixed held-out batch (one per run), at radii `taus`.

    The robust prediction is correct only if it is correct clean and under every attack: FGM,
    PGD (pgd_steps steps, step 2.5 tau / pgd_steps, `restarts` random starts) and the
    dense-direction attack -y tau M w*/|w*| (l2) or -y tau sign(M w*) (linf).

    full_at: the log points measured with that full evaluation. 'every' (the default, and
    every committed record); 'final': only the last one (step train.steps), every earlier one
    with a light evaluation, the same attacks with PGD at light_pgd_steps steps and
    light_restarts starts. A weaker PGD reads high, so a light point is marked: the traced
    `full_eval` is 1 at a full point and 0 at a light one, and plots draw light points open.
    The PGD costs pgd_steps x restarts input gradients per example and radius at every log
    point, most of a short sweep's time with the defaults; 'final' cuts it to light_pgd_steps x
    light_restarts and leaves the final numbers bit for bit as 'every' gives them.
    """

    n_eval: int = 1024
    taus: tuple[float, ...] = (0.25,)
    norm: str = "l2"
    pgd_steps: int = EvalSpec.pgd_steps
    restarts: int = EvalSpec.restarts
    full_at: str = "every"
    light_pgd_steps: int = 5
    light_restarts: int = 1

    def validate(self) -> None:
        _int("eval.n_eval", self.n_eval, lo=1)
        if len(self.taus) == 0:
            _fail("eval.taus", self.taus, "must name at least one radius")
        for t in self.taus:
            _float("eval.taus[]", t, lo=0.0)
        _choice("eval.norm", self.norm, NORMS)
        _int("eval.pgd_steps", self.pgd_steps, lo=1)
        _int("eval.restarts", self.restarts, lo=1)
        _choice("eval.full_at", self.full_at, FULL_AT)
        _int("eval.light_pgd_steps", self.light_pgd_steps, lo=1)
        _int("eval.light_restarts", self.light_restarts, lo=1)
        if self.full_at != "every":  # the light evaluation is the weaker one, or it is not light
            if self.light_pgd_steps > self.pgd_steps:
                _fail("eval.light_pgd_steps", self.light_pgd_steps, f"must be <= eval.pgd_steps = {self.pgd_steps}")
            if self.light_restarts > self.restarts:
                _fail("eval.light_restarts", self.light_restarts, f"must be <= eval.restarts = {self.restarts}")

    @property
    def spec(self):
        """The attack settings of the evaluation (an `attacks.EvalSpec`)."""
        return EvalSpec(tuple(float(t) for t in self.taus), self.norm, self.pgd_steps, self.restarts)

    @property
    def light_spec(self):
        """The attack settings at the log points of a light evaluation (see `full_at`)."""
        return EvalSpec(tuple(float(t) for t in self.taus), self.norm, self.light_pgd_steps, self.light_restarts)


@struct.dataclass
class HParams:
    """Float hyper-parameters; any of them may vary across a sweep without recompiling.

    A pytree: inside a compiled run its fields are the run's scalars (arrays under vmap).

    lr: SGD learning rate. tau: training attack radius (0 = clean). noise: sigma, xi ~
    N(0, sigma^2/d I). beta: threshold as a fraction of the smallest feature magnitude.
    init_scale: std of each first-layer row's norm at init (small: feature-learning regime).
    """

    lr: float = 0.1
    tau: float = 0.25
    noise: float = 0.0
    beta: float = 0.6
    init_scale: float = 0.01

    def validate(self, prefix: str = "hp") -> None:
        _float(f"{prefix}.lr", self.lr, lo=0.0, strict=True)
        _float(f"{prefix}.tau", self.tau, lo=0.0)
        _float(f"{prefix}.noise", self.noise, lo=0.0)
        _float(f"{prefix}.beta", self.beta, lo=0.0)
        _float(f"{prefix}.init_scale", self.init_scale, lo=0.0, strict=True)


HPARAM_NAMES = tuple(f.name for f in dataclasses.fields(HParams))


def hparams_of(values: Any, dtype=None) -> HParams:
    """An HParams from a mapping or an HParams, each field cast to an array of `dtype` if given."""
    if isinstance(values, HParams):
        values = {n: getattr(values, n) for n in HPARAM_NAMES}
    if dtype is None:
        return HParams(**{n: values[n] for n in HPARAM_NAMES})
    import jax.numpy as jnp

    return HParams(**{n: jnp.asarray(values[n], dtype) for n in HPARAM_NAMES})


@dataclass(frozen=True)
class Config:
    """Everything static about a run, plus the default hyper-parameters of a sweep."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    hp: HParams = field(default_factory=HParams)

    def validate(self) -> Config:
        self.data.validate()
        self.model.validate(self.data)
        self.train.validate()
        if self.train.adv_rank > min(self.model.width, self.data.d):
            _fail(
                "train.adv_rank",
                self.train.adv_rank,
                f"must be <= min(model.width, data.d) = {min(self.model.width, self.data.d)}",
            )
        if self.train.contrastive and self.data.n_train is not None:
            _fail(
                "data.n_train",
                self.data.n_train,
                f"must be None (online data) with train.objective={self.train.objective!r}",
            )
        self.eval.validate()
        self.hp.validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - names
            if unknown:
                _fail(kind.__name__, sorted(unknown), f"unknown fields; known: {sorted(names)}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return kind(**values)

        parts = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig, "hp": HParams}
        unknown = set(d) - set(parts)
        if unknown:
            _fail("config", sorted(unknown), f"unknown sections; known: {sorted(parts)}")
        return cls(**{name: build(kind, d.get(name, {})) for name, kind in parts.items()})

    def resolve(self, key: str, value: Any = None) -> str:
        """The dotted name ('section.field') of a setting written dotted or, when unique across
        sections, bare ('width' -> 'model.width'); a ConfigError naming key and value otherwise."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if "." in key:
            sec, name = key.split(".", 1)
        else:
            owners = [s for s, obj in sections.items() if name_in(obj, key)]
            if len(owners) != 1:
                _fail(
                    key,
                    value,
                    "unknown setting; see `purify list --settings`"
                    if not owners
                    else f"ambiguous; write one of {[o + '.' + key for o in owners]}",
                )
            sec, name = owners[0], key
        if sec not in sections or not name_in(sections[sec], name):
            _fail(key, value, "unknown setting; see `purify list --settings`")
        return f"{sec}.{name}"

    def column(self, key: str, value: Any = None) -> str:
        """The name a grid column and `Results.hp` use for a setting written dotted or bare: a
        hyper-parameter by its bare name ('hp.tau' and 'tau' -> 'tau'), any other setting dotted
        ('width' -> 'model.width'); `setting` inverts it."""
        bare = key.removeprefix("hp.")
        if bare in HPARAM_NAMES and (key == bare or key.startswith("hp.")):
            return bare
        return self.resolve(key, value).removeprefix("hp.")

    def sweep_kind(self, key: str) -> str:
        """STATIC, PER_RUN or HYPERPARAMETER: how a setting may vary inside one sweep's program."""
        sec, name = self.resolve(key).split(".", 1)
        if sec == "hp":
            return HYPERPARAMETER
        f = next(f for f in dataclasses.fields(getattr(self, sec)) if f.name == name)
        return f.metadata.get("sweep", STATIC)

    def get(self, key: str) -> Any:
        """The value of a setting, dotted or bare (see `resolve`)."""
        sec, name = self.resolve(key).split(".", 1)
        return getattr(getattr(self, sec), name)

    def set(self, **dotted: Any) -> Config:
        """Return a copy with dotted fields replaced, e.g. ``cfg.set(**{"data.d": 128})``.

        A bare field name is accepted when it is unique across sections (``d=128``).
        """
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in dotted.items():
            sec, name = self.resolve(key, value).split(".", 1)
            value = plain(value)
            if isinstance(getattr(sections[sec], name), tuple) and not isinstance(value, tuple):
                value = (value,)
            sections[sec] = dataclasses.replace(sections[sec], **{name: value})
        return Config(**sections)


def plain(value: Any) -> Any:
    """A value as Python writes it: NumPy scalars and 0-d arrays become numbers, 1-d arrays and
    lists become tuples (what a REPL user has in hand is accepted wherever a number is)."""
    if hasattr(value, "ndim") and hasattr(value, "dtype"):
        import numpy as np

        arr = np.asarray(value)
        if arr.ndim == 0:
            # float32 0.1 is 0.1, not 0.10000000149011612: the shortest decimal that names it
            return float(str(arr[()])) if arr.dtype.kind == "f" else arr.item()
        return tuple(plain(v) for v in arr)
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def setting(column: str) -> str:
    """The dotted setting of a grid column (`Config.column`): 'tau' -> 'hp.tau'."""
    return f"hp.{column}" if column in HPARAM_NAMES else column


def name_in(obj: Any, name: str) -> bool:
    return name in {f.name for f in dataclasses.fields(obj)}


def parse_value(text: str) -> Any:
    """Parse a command-line value: int, float, None, bool, comma tuple, else string."""
    if "," in text:
        return tuple(parse_value(t) for t in text.split(",") if t != "")
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
