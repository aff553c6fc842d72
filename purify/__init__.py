"""purify: theory simulations of adversarial robustness in sparse-coding models.

import purify
cfg = purify.Config().set(d=64, k=4, width=256, steps=3000, adv_start=1500)   # docs/science.md: the model
res = purify.sweep(cfg, grid={"tau": [0.0, 0.1, 0.2, 0.3]}, seeds=16)
res.sel(tau=0.2).mean("seed")["purity_nw"]
"""

from .config import Config, ConfigError, DataConfig, EvalConfig, HParams, ModelConfig, TrainConfig
from .data import SparseCoding, Task, make_task, sample
from .downstream import Along, DownstreamConfig, backbones, fit_and_evaluate, fit_grid
from .execute import SliceFinished, SweepInterrupted
from .network import Architecture
from .results import Results
from .store import merge_runs
from .sweeps import auto_chunk_size, sweep
from .train import Run, make_run

__version__ = "0.1.0"

__all__ = [
    "Along",
    "Architecture",
    "Config",
    "ConfigError",
    "DataConfig",
    "DownstreamConfig",
    "EvalConfig",
    "HParams",
    "ModelConfig",
    "Results",
    "Run",
    "SliceFinished",
    "SparseCoding",
    "SweepInterrupted",
    "Task",
    "TrainConfig",
    "auto_chunk_size",
    "backbones",
    "fit_and_evaluate",
    "fit_grid",
    "make_run",
    "make_task",
    "merge_runs",
    "sample",
    "sweep",
]
