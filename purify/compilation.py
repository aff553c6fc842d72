"""How purify compiles a program: `jax.jit`, in one place, with one choice of XLA options.

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
