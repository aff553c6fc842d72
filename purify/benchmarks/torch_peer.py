"""The benchmark's PyTorch peers, the same work written in PyTorch: an eager loop over networks,
and the strongest, N stacked networks under `torch.func.vmap` and `torch.compile`.

PyTorch is an optional extra (`pip install -e '.[torch]'`, pinned); without it every peer
returns None and the benchmark says so. Nothing in the library imports this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from purify.config import Config

from .programs import _best_of

TORCH_NETWORKS = 256  # the eager PyTorch loop times at most this many networks


def _torch_problem(cfg: Config):
    """The benchmark's work written in PyTorch: the same data model (identity dictionary, exact-k
    latents with magnitudes U[1,2]/sqrt(k) and random signs, labels sign <w*, z>), the same
    network (soft threshold at the relative threshold beta z_min |w_i|, no gradient through it,
    a fixed head of ones), FGM l2 at radius tau and plain SGD. Returns (torch, device, sync,
    batch(n) -> (z, y) of shape (n, B, d), (n, B), loss(W, x, y) for one network)."""
    import torch

    dev = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    d, k, B = cfg.data.d, cfg.data.k, cfg.train.batch
    beta, z_min = cfg.hp.beta, 1 / math.sqrt(k)
    torch.manual_seed(0)
    w_star = torch.randint(0, 2, (d,), device=dev).float() * 2 - 1

    def support(n):
        """(n, B, k) distinct feature indices by Floyd's algorithm, as purify.data samples them:
        k draws and no sort over d columns (top-k over d would cost PyTorch more than the step)."""
        u, chosen = torch.rand(k, n, B, device=dev), []
        for i, j in enumerate(range(d - k, d)):
            t = torch.clamp((u[i] * (j + 1)).floor().long(), max=j)
            taken = torch.zeros_like(t, dtype=torch.bool)
            for c in chosen:
                taken |= c == t
            chosen.append(torch.where(taken, j, t))
        return torch.stack(chosen, dim=-1)

    def batch(n):
        idx = support(n)
        signs = torch.randint(0, 2, (n, B, k), device=dev).float() * 2 - 1
        vals = signs * (1 + torch.rand(n, B, k, device=dev)) / math.sqrt(k)
        z = torch.zeros(n, B, d, device=dev).scatter_(-1, idx, vals)
        return z, torch.sign(z @ w_star)  # identity dictionary: x = z, as in the JAX program

    def loss(W, x, y):
        u = x @ W.T
        b = beta * z_min * W.detach().norm(dim=-1)
        f = (torch.relu(u - b) - torch.relu(-u - b)).sum(-1)
        return torch.nn.functional.softplus(-y * f).mean()

    return torch, dev, sync, batch, loss


def _init_weights(torch, cfg: Config, n: int, dev: str):
    d, m = cfg.data.d, cfg.model.width
    return torch.randn(n, m, d, device=dev) * cfg.hp.init_scale / math.sqrt(d)


def measure_torch(cfg: Config, n: int, steps: int) -> float | None:
    """Seconds for an eager PyTorch loop over n networks, or None without PyTorch.

    Runs on CUDA when JAX runs on a GPU and PyTorch sees one, so both sides use the same chip.
    """
    try:
        torch, dev, sync, batch, loss = _torch_problem(cfg)
    except ImportError:
        return None
    tau, lr = cfg.hp.tau, cfg.hp.lr

    def train_all():
        for W in _init_weights(torch, cfg, n, dev):
            W.requires_grad_(True)
            for _ in range(steps):
                z, y = batch(1)
                x, y = z[0], y[0]
                xr = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(loss(W, xr, y), xr)
                x_adv = x + tau * g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
                loss(W, x_adv, y).backward()
                with torch.no_grad():
                    W -= lr * W.grad
                    W.grad = None

    train_all()  # warm-up
    sync()
    t = time.perf_counter()
    train_all()
    sync()
    return time.perf_counter() - t


def torch_vmap_step(torch, cfg: Config, batch, loss):
    """One training step of every network, W (n, m, d) -> W: `torch.func.vmap` over networks of
    `torch.func.grad` (FGM's input gradient, then the weight gradient at x + delta), data
    sampling included, under `torch.compile(fullgraph=True)`."""
    from torch.func import grad, vmap

    tau, lr = cfg.hp.tau, cfg.hp.lr

    def one_network(W, x, y):
        g = grad(loss, argnums=1)(W, x, y)
        x_adv = x + tau * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return W - lr * grad(loss)(W, x_adv, y)

    every_network = vmap(one_network)

    @torch.compile(fullgraph=True, dynamic=False)
    def step(W):
        z, y = batch(W.shape[0])
        return every_network(W, z, y)

    return step


class TorchPeer(NamedTuple):
    """The strongest PyTorch peer, compiled and ready: W = step(W) trains every network one step."""

    torch: Any
    step: Callable
    weights: Any
    sync: Callable[[], None]
    compile_seconds: float


def torch_vmap_peer(cfg: Config, n: int) -> TorchPeer | None:
    """The strongest PyTorch peer over n networks' weights stacked (n, m, d), `torch_vmap_step`,
    compiled by its first call; None without PyTorch. Same device rule as `measure_torch`."""
    try:
        torch, dev, sync, batch, loss = _torch_problem(cfg)
    except ImportError:
        return None
    # a fresh compile per network count: shapes stay static (a shape seen second would get a
    # dynamic-shape graph) and a curve of many counts never reaches dynamo's recompile limit,
    # past which it would fall back to eager without saying so
    torch._dynamo.reset()
    step = torch_vmap_step(torch, cfg, batch, loss)
    W = _init_weights(torch, cfg, n, dev)
    t = time.perf_counter()
    W = step(W)
    sync()
    return TorchPeer(torch, step, W, sync, time.perf_counter() - t)


def measure_torch_vmap(peer: TorchPeer, steps: int) -> dict:
    """{'seconds': for `steps` steps of the peer, 'compile_seconds': its first call}."""
    W = peer.weights

    def train():
        nonlocal W
        for _ in range(steps):
            W = peer.step(W)
        peer.sync()

    train()  # warm-up
    return {"seconds": _best_of(train, 3), "compile_seconds": peer.compile_seconds}
