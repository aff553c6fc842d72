"""The one loop every kind of run goes through: init, then advance segment by segment (observing
where the program asks), with checkpoints, resume and Ctrl-C handled once.

A program is three pure functions over a typed state with a leading run axis, compiled with
`jit(vmap(...))`: `init` (the state of a chunk of runs), `advance(state, t0, t1)` (steps t0 to
t1 - 1) and `observe(state, t)` (what is measured at step t). `Chunk` binds them to one chunk's
inputs; `run_chunk` runs it to the end. Pre-training (`purify.train.Run`, run by
`purify.sweep`) and downstream fitting (`purify.downstream.FitProgram`, run by
`purify.fit_grid` and `fit_and_evaluate`) are both programs, so a Ctrl-C, a checkpoint and a
resumed chunk behave the same for both, and a resumed chunk gives the numbers of an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from .execute import ChunkWork, DeferredInterrupt
from .store import flat_state, restore_state


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of runs of a program, its compiled functions bound to the chunk's inputs.

    init: () -> the initial state (every leaf leads with the run axis).
    advance: (state, t0, t1) -> the state after steps t0 .. t1 - 1.
    observe: (state, t) -> the state with step t's measurements recorded (also at t = steps).
    segments: (start) -> the (t0, t1) advance calls from step `start` to `steps`.
    steps: where the program ends.
    outputs: the final state -> {name: host array (runs, ...)}, what the chunk saves.
    observe_at: the steps t0 at which `observe` runs before advancing.
    checkpoint_after: (t1) -> whether a checkpoint may be written after the call ending at t1.
    sharding: where the state lives (every call's output is put back there, so each compiled
      call sees the same input layout and traces once); None: left where it is.
    """

    init: Callable[[], Any]
    advance: Callable[[Any, int, int], Any]
    observe: Callable[[Any, int], Any]
    segments: Callable[[int], list[tuple[int, int]]]
    steps: int
    outputs: Callable[[Any], dict]
    observe_at: frozenset[int] = frozenset()
    checkpoint_after: Callable[[int], bool] = lambda t1: True
    sharding: Any = None


def run_chunk(chunk: Chunk, work: ChunkWork | None = None) -> dict:
    """Run `chunk` to the end and return its outputs, resuming from `work`'s checkpoint when
    there is one and checkpointing through it (see `purify.execute.ChunkWork`); None: no
    checkpoints. A state saved at step t has not been observed at t yet: the rerun observes it
    first, so a resumed chunk repeats exactly the calls an uninterrupted one makes."""
    place = (lambda s: jax.device_put(s, chunk.sharding)) if chunk.sharding is not None else (lambda s: s)
    state, start = place(chunk.init()), 0
    ckpt = work.resume() if work is not None else None
    if ckpt is not None:
        restored = restore_state(state, ckpt)
        if restored is None:
            work.reject("it does not fit this chunk's state")
        else:
            state, start = place(restored), int(ckpt["__done__"])
    # (state, steps done) change together in one assignment, so an interrupt never separates them
    current = (state, start)
    try:
        with DeferredInterrupt() as interrupt:
            for t0, t1 in chunk.segments(start):
                state = current[0]
                if t0 in chunk.observe_at:
                    state = place(chunk.observe(state, t0))
                state = place(chunk.advance(state, t0, t1))
                current = (state, t1)
                if not chunk.checkpoint_after(t1):
                    continue
                if work is not None and work.active:
                    jax.block_until_ready(current[0])
                    work.advanced(current[1], lambda s=current[0]: flat_state(s))
                interrupt.check()
    except KeyboardInterrupt:
        state = current[0]
        # after a second Ctrl-C the state handed to the call in flight may be donated (deleted):
        # then the last checkpoint stands
        alive = not any(x.is_deleted() for x in jax.tree_util.tree_leaves(state))
        if work is not None and alive:
            work.done = current[1]
            work.interrupted(flat_state(state))
        raise
    return chunk.outputs(chunk.observe(current[0], chunk.steps))
