"""Many downstream fits at once: one jit(vmap) program over a flat run axis, chunk by chunk and
resumable (`purify.execute`), every argument checked before it compiles; `fit_grid`, the same
over named axes, returning `Results`; and the reference attack behind the 'attack converged'
gate of downstream robust accuracies.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .. import attacks, network
from ..compilation import program
from ..config import SEED_MAX, Config, ConfigError, DataConfig, _float
from ..engine import run_chunk
from ..evaluate import REFERENCE_N, REFERENCE_RESTARTS, REFERENCE_STEPS
from ..execute import execute
from ..files import check_free_space, writable_folder
from ..plan import make_plan
from ..results import Results
from ..store import ChunkStore, array_digest, fingerprint
from .program import DownstreamConfig, FitInputs, FitProgram, _evaluation_only, fit_chunk, logits, run_keys, splits


def _seed_array(seeds) -> np.ndarray:
    """seeds as a 1-d integer array in 0..2**32-1, or a ConfigError."""

    arr = np.asarray(seeds)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu" or (arr < 0).any() or (arr > SEED_MAX).any():
        raise ConfigError(
            f"seeds={seeds!r} is not allowed: must be a non-empty 1-d array of integers in 0..{SEED_MAX}, one per run"
        )
    return arr


def _broadcast(name: str, value: np.ndarray, shape: tuple) -> np.ndarray:
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise ConfigError(
            f"{name} of shape {np.shape(value)} is not allowed: must broadcast to {shape} (n_runs = {shape[0]})"
        ) from None


def _per_run(name: str, value, n_runs: int, strict: bool) -> np.ndarray:
    """A per-run float32 argument (a scalar or (n_runs,)), each value checked like a setting:
    finite in float32 and > 0 (strict) or >= 0."""
    try:
        arr = np.asarray(value, dtype=float) if np.ndim(value) else np.asarray([value], dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not allowed: must be a number or one number per run") from None
    for v in np.unique(arr):
        _float(name, float(v), lo=0.0, strict=strict)
    return _broadcast(name, arr if np.ndim(value) else arr[0], (n_runs,)).astype(np.float32)


def fit_and_evaluate(
    cfg: Config,
    dc: DownstreamConfig,
    M,
    *,
    seeds,
    backbone: dict,
    beta,
    theta,
    n,
    lr,
    probe_lr=None,
    tau=0.0,
    lam=0.0,
    chunk: int = 256,
    out_dir: str | Path | None = None,
    devices=None,
    run_slice: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Fit and evaluate a flat batch of n_runs downstream runs; every argument but cfg, dc, M is
    (n_runs, ...) or broadcast. run_slice=(i, n): compute and save only block i of n of the
    chunks, then raise SliceFinished (merge the slices' folders, then call again).

    cfg: the backbones' config (its data model and architecture: unit, threshold rule). backbone:
    the pre-trained parameters as saved, {'W': (n_runs, m, d)} plus 'b' (n_runs, m) for fixed or trainable
    thresholds (see `backbones`; a head 'a' is ignored). seeds (n_runs,) ints pick the data and init
    keys; beta, n, lr, probe_lr, tau, lam (n_runs,) or scalars. Runs go through one jit(vmap)
    program in chunks of `chunk` (`purify.execute`); with out_dir, finished chunks are saved
    and a repeated call resumes. Returns numpy arrays with a leading (n_runs,) axis, as
    `make_evaluate` names them, plus 'params' (the fitted parameters) and 'failed'
    (non-finite parameters).
    """
    seeds = _seed_array(seeds)
    n_runs = len(seeds)
    backbone = {k: np.asarray(v, np.float32) for k, v in network.backbone_params(backbone).items()}
    if "W" not in backbone or not set(backbone) <= {"W", "b"}:
        raise ConfigError(
            f"backbone={sorted(backbone)} is not allowed: must hold 'W' (n_runs, m, d) and, for fixed or trainable "
            "thresholds, 'b' (n_runs, m); see purify.downstream.backbones"
        )
    if backbone["W"].ndim not in (2, 3):
        raise ConfigError(
            f"backbone['W'] of shape {backbone['W'].shape} is not allowed: must be (m, d) or (n_runs, m, d)"
        )
    m, d = backbone["W"].shape[-2:]
    arch = network.Architecture.of(cfg.validate())
    if d != cfg.data.d:
        raise ConfigError(
            f"backbone['W'] of shape {backbone['W'].shape} is not allowed: its inputs must be data.d={cfg.data.d}"
        )
    if np.shape(M) != (cfg.data.d, cfg.data.n_features):
        raise ConfigError(
            f"M of shape {np.shape(M)} is not allowed: must be (data.d, D) = ({cfg.data.d}, {cfg.data.n_features})"
        )
    if not np.isfinite(np.asarray(M)).all():
        raise ConfigError("M is not allowed: it holds non-finite values")
    if arch.bias != "relative" and "b" not in backbone:
        raise ConfigError(
            f"backbone={sorted(backbone)} is not allowed with model.bias={arch.bias!r}: pass the saved thresholds 'b'"
        )
    dc = dc.validate(m, d)
    n_in = np.asarray(n)
    if n_in.dtype.kind not in "iu":
        raise ConfigError(f"n={n!r} is not allowed: downstream sample sizes must be integers")
    n_arr = _broadcast("n", n_in, (n_runs,)).astype(np.int32)
    if n_arr.min() < 1 or n_arr.max() > dc.n_max:
        raise ConfigError(
            f"n={sorted(set(n_arr.tolist()))} is not allowed: every downstream sample size must be in "
            f"1..down.n_max={dc.n_max}"
        )
    full = lambda name, v, strict: _per_run(name, v, n_runs, strict)
    hp = {
        "lr": full("lr", lr, True),
        "probe_lr": full("probe_lr", lr if probe_lr is None else probe_lr, True),
        "tau": full("tau", tau, False),
        "lam": full("lam", lam, False),
    }
    beta = full("beta", beta, False)
    D = cfg.data.n_features
    if np.ndim(theta) not in (1, 2) or np.shape(theta)[-1] != D:
        raise ConfigError(f"theta of shape {np.shape(theta)} is not allowed: must be (D,) or (n_runs, D) with D={D}")
    theta = _broadcast("theta", np.asarray(theta, np.float32), (n_runs, D))
    if not np.isfinite(theta).all() or (np.abs(theta).sum(-1) == 0).any():
        raise ConfigError("theta is not allowed: every task vector must be finite and non-zero")
    shapes = {"W": (m, d), "b": (m,)}
    backbone = {k: _broadcast(f"backbone[{k!r}]", v, (n_runs, *shapes[k])) for k, v in backbone.items()}
    # only the latent model matters downstream: configs that differ elsewhere share programs
    data = dataclasses.replace(cfg.data, n_tasks=1, n_train=None, task_seed=0, label="rademacher")
    keys = run_keys(seeds)
    M = jnp.asarray(M)
    devices = list(devices or jax.local_devices())
    if run_slice is not None and out_dir is None:
        raise ConfigError("run_slice needs out_dir: a slice's chunks must be saved to be merged")
    if out_dir is not None:
        writable_folder(out_dir, "out_dir")
        per_run = m * d + (m + d) * dc.rank + 4 * m + 64  # fitted parameters and scores
        check_free_space(out_dir, 4 * n_runs * per_run, "out_dir")
    plan = make_plan(n_runs, chunk, len(devices), run_slice)
    spec = {
        "kind": "downstream",
        "data": dataclasses.asdict(data),
        "down": dataclasses.asdict(dc),
        "arch": dataclasses.asdict(arch),
        "chunk": plan.chunk_size,
        "inputs": array_digest(np.asarray(M), seeds, beta, theta, n_arr, *hp.values(), *backbone.values()),
    }
    mesh = Mesh(np.asarray(devices), ("runs",))
    on_runs = NamedSharding(mesh, P("runs"))

    def compute(idx, work):
        inputs = FitInputs(
            keys[idx],
            {k: v[idx] for k, v in backbone.items()},
            beta[idx],
            theta[idx],
            n_arr[idx],
            {k: v[idx] for k, v in hp.items()},
        )
        return run_chunk(fit_chunk(data, dc, arch, jax.device_put(inputs, on_runs), M, on_runs), work)

    flat = execute(
        plan,
        ChunkStore(out_dir, fingerprint(spec)),
        compute,
        per_chunk=FitProgram(data, dc, arch).steps,
        unit="step",
        slice_mode=run_slice is not None,
    )
    result = {k: v for k, v in flat.items() if not k.startswith("params/")}
    result["params"] = {k[len("params/") :]: v for k, v in flat.items() if k.startswith("params/")}
    finite = np.stack([np.isfinite(a.reshape(n_runs, -1)).all(-1) for a in result["params"].values()]).all(0)
    result["failed"] = ~finite
    return result


@functools.lru_cache(maxsize=64)
def _compiled_reference(data: DataConfig, dc: DownstreamConfig, arch: network.Architecture, n: int):
    """jit(vmap) of one run's (default - reference) robust accuracy (n_tau,) on its first n test examples."""

    def one(p, key, b, th, M):
        k_data, _, _, _ = jax.random.split(key, 4)
        _, _, (x, y) = splits(k_data, data, th, M, dc, which=(2,))
        x, y = x[:n], y[:n]
        u = M @ th / jnp.linalg.norm(M @ th)
        margin = lambda v: y * logits(arch, p, v, b)
        key_att = jax.random.fold_in(jax.random.fold_in(key, 7), 0xA0D)
        default, strong = attacks.audited_accuracy(
            margin, x, y, u, key_att, dc.spec, REFERENCE_STEPS, REFERENCE_RESTARTS
        )
        return default - strong

    return program(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))


def reference_gaps(
    cfg: Config, dc: DownstreamConfig, M, *, seeds, params: dict, beta, theta, n: int | None = None, chunk: int = 64
) -> np.ndarray:
    """How much the downstream evaluation overstates robust accuracy, per fitted model: (n_runs,
    n_tau) = default minus reference robust accuracy (`attacks.audited_accuracy`, the reference
    of the 'attack converged' gate) on the first n examples of each run's own test split, both
    attacks drawn from the run's own attack stream.

    params: fitted parameters {name: (n_runs, ...)}, as `fit_and_evaluate` returns them (or the
    models a selection kept); seeds, beta, theta as there (per run or broadcast)."""

    seeds = _seed_array(seeds)
    n_runs = len(seeds)
    n = min(int(REFERENCE_N if n is None else n), dc.n_test)
    arch = network.Architecture.of(cfg.validate())
    data = dataclasses.replace(cfg.data, n_tasks=1, n_train=None, task_seed=0, label="rademacher")
    beta = _per_run("beta", beta, n_runs, False)
    theta = _broadcast("theta", np.asarray(theta, np.float32), (n_runs, cfg.data.n_features))
    f = _compiled_reference(data, _evaluation_only(dc), arch, n)
    keys, M = run_keys(seeds), jnp.asarray(M)
    out = []
    for lo in range(0, n_runs, chunk):
        sl = slice(lo, lo + chunk)
        p = {k: jnp.asarray(v[sl]) for k, v in params.items()}
        out.append(np.asarray(f(p, keys[sl], beta[sl], theta[sl], M)))
    return np.concatenate(out) if out else np.zeros((0, len(dc.taus)))


@dataclasses.dataclass(frozen=True)
class Along:
    """An argument of `fit_grid` that varies along named axes of the grid: `value`'s leading
    axes are `dims` (in any order, a subset of the grid's), its trailing ones its own (a
    backbone's (m, d), a task vector's (D,)). Any other argument is the same in every run."""

    dims: tuple[str, ...]
    value: Any


# The axes of what a fit returns, after the grid's: robust accuracies per radius, by attack.
OUTPUT_AXES = {"val_robust": ("radius",), "robust": ("radius",), "by_attack": ("radius", "attack")}
PARAMETER_AXES = {**network.PARAM_AXES, "v": ("neuron",), "c": ()}


def flatten_along(arg, axes: dict[str, Any], name: str = "argument") -> Any:
    """An `Along` argument broadcast to the grid `axes` (name -> labels, in order) and flattened
    into the grid's run axis (first axis slowest): what `fit_grid` hands `fit_and_evaluate`,
    for code that vmaps its own function over the same runs. A constant is returned as is."""
    return _on_grid(name, arg, {k: len(v) for k, v in axes.items()})


def _on_grid(name: str, arg, axes: dict[str, int]) -> Any:
    if not isinstance(arg, Along):
        return arg
    unknown = [d for d in arg.dims if d not in axes]
    if unknown or len(set(arg.dims)) != len(arg.dims):
        raise ConfigError(f"{name} along {arg.dims} is not allowed: must name distinct axes among {list(axes)}")

    def place(a):
        a = np.asarray(a)
        lead = len(arg.dims)
        if a.ndim < lead or tuple(a.shape[:lead]) != tuple(axes[d] for d in arg.dims):
            raise ConfigError(
                f"{name} of shape {a.shape} is not allowed: its leading axes {arg.dims} must have sizes "
                f"{[axes[d] for d in arg.dims]}"
            )
        order = sorted(range(lead), key=lambda i: list(axes).index(arg.dims[i]))
        a = np.transpose(a, order + list(range(lead, a.ndim)))
        dims = [arg.dims[i] for i in order]
        shape = [axes[d] if d in dims else 1 for d in axes]
        a = a.reshape(tuple(shape) + a.shape[lead:])
        full = np.broadcast_to(a, tuple(axes.values()) + a.shape[len(axes) :])
        return full.reshape((-1,) + full.shape[len(axes) :])

    return {k: place(v) for k, v in arg.value.items()} if isinstance(arg.value, dict) else place(arg.value)


def fit_grid(
    cfg: Config, dc: DownstreamConfig, M, axes: dict[str, Any], *, seeds, backbone, theta, **kwargs
) -> Results:
    """`fit_and_evaluate` over a grid of named axes: one run per grid point, every argument a
    constant or `Along(dims, value)`, and the results with the grid's axes first.

    Args:
      axes: axis name -> its coordinate labels, in grid order (first slowest), e.g.
        {"task": ["dense", "sparse"], "backbone": [0, 1], "seed": seeds, "lr": lrs}.
      seeds, backbone, theta, and every keyword of `fit_and_evaluate` (beta, n, lr, ...):
        constants, or `Along`.

    Returns:
      Results: 'clean', 'val_clean', 'failed' on the grid's axes; 'robust', 'val_robust'
      (..., radius); 'by_attack' (..., radius, attack); 'params/<name>' the fitted parameters.

    Example:
      >>> res = fit_grid(cfg, dc, task.M, {"seed": [0, 1], "lr": [0.01, 0.03]},
      ...                seeds=Along(("seed",), [0, 1]), backbone=Along(("seed",), bb),
      ...                theta=theta, beta=cfg.hp.beta, n=256, lr=Along(("lr",), [0.01, 0.03]))
      >>> res["clean"].shape  # (seed, lr)
      (2, 2)
    """
    sizes = {name: len(labels) for name, labels in axes.items()}
    if not sizes or min(sizes.values()) < 1:
        raise ConfigError(f"axes={ {k: len(v) for k, v in axes.items()} } is not allowed: every axis needs a label")
    runs = int(np.prod(list(sizes.values())))
    flat = {
        "seeds": _on_grid("seeds", seeds, sizes),
        "backbone": _on_grid("backbone", backbone, sizes),
        "theta": _on_grid("theta", theta, sizes),
        **{k: _on_grid(k, v, sizes) for k, v in kwargs.items()},
    }
    if np.ndim(flat["seeds"]) == 0:
        flat["seeds"] = np.full(runs, flat["seeds"])
    out = fit_and_evaluate(cfg, dc, M, **flat)
    lead = tuple(sizes)
    arrays, dims = {}, {}
    for name, a in out.items():
        if name == "params":
            for k, v in a.items():
                arrays[f"params/{k}"] = v.reshape(tuple(sizes.values()) + v.shape[1:])
                dims[f"params/{k}"] = lead + PARAMETER_AXES[k]
            continue
        arrays[name] = np.asarray(a).reshape(tuple(sizes.values()) + np.shape(a)[1:])
        dims[name] = lead + OUTPUT_AXES.get(name, ())
    coords = {name: np.asarray(labels) for name, labels in axes.items()}
    coords["radius"] = np.asarray(dc.taus, np.float32)
    coords["attack"] = np.asarray(attacks.ATTACK_NAMES)
    meta = {"config": cfg.to_dict(), "down": dataclasses.asdict(dc), "swept": list(axes)}
    return Results(arrays, dims, coords, {}, meta)
