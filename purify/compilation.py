"""How purify compiles a program: `jax.jit`, in one place, with one choice of XLA options, and
how a program of one run is batched over many (`over_runs`).

On CPU, `quick=True` lowers LLVM's optimization from -O3 to -O1: a new config's training
programs compile about 30% sooner at the same step time (the matmuls are library calls;
`purify bench` measures both). The two levels are not bit-identical: LLVM vectorizes some loops
differently, so a few values differ in the last bits (up to 1e-6 on a tiny training run). A
program therefore keeps the level its committed records were made with: the training programs
-O1, every other program (evaluation, the reference attack, the downstream fit) XLA's default.
Other platforms keep XLA's defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def compiler_options(quick: bool = True) -> dict | None:
    """The XLA options of a program on this backend (None: XLA's defaults)."""
    return {"xla_backend_optimization_level": 1} if quick and jax.default_backend() == "cpu" else None


def program(fn: Callable, *, quick: bool = False, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)`, with `compiler_options(quick)`.

    Args:
      fn: the function to compile (pure; typically `jax.vmap` of one run).
      quick: on CPU, compile with LLVM at -O1 (sooner; last-bit differences from -O3).
      **jit_kwargs: passed to `jax.jit` (donate_argnums, static_argnums, ...).

    Example:
        >>> f = program(jax.vmap(lambda x: x * 2.0))
        >>> f(jnp.arange(3.0))
        Array([0., 2., 4.], dtype=float32)
    """
    return jax.jit(fn, compiler_options=compiler_options(quick), **jit_kwargs)


def over_runs(fn: Callable, group: int = 1) -> Callable:
    """fn(state, *shared) of one run, batched over the leading run axis of `state` (every other
    argument shared by all runs).

    group = 1: `jax.vmap`, every run of the chunk in each batched operation. group = b > 1: a
    `lax.map` over groups of b runs, each group vmapped (the run axis padded to a multiple of b
    with copies of its first run, the padding dropped). The same numbers up to float rounding
    (bit for bit at some sizes, not all; tested); on XLA:CPU, whose batched matmuls run well
    below its square-matmul rate, groups can be faster (`purify bench` measures both).

    Example:
        >>> f = over_runs(lambda s, c: s * c, group=2)
        >>> f(jnp.arange(5.0), 3.0)
        Array([ 0.,  3.,  6.,  9., 12.], dtype=float32)
    """

    def call(state, *shared):
        one = jax.vmap(fn, in_axes=(0,) + (None,) * len(shared))
        if group <= 1:
            return one(state, *shared)
        n = jax.tree_util.tree_leaves(state)[0].shape[0]
        pad = -n % group
        if pad:
            state = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]), state)
        total = n + pad  # explicit sizes: a leaf may have an empty axis (no snapshots)
        groups = jax.tree_util.tree_map(lambda x: x.reshape(total // group, group, *x.shape[1:]), state)
        out = jax.lax.map(lambda s: one(s, *shared), groups)
        return jax.tree_util.tree_map(lambda x: x.reshape(total, *x.shape[2:])[:n], out)

    return call
