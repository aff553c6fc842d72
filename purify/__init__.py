"""purify: theory simulations of adversarial robustness in sparse-coding models.

    import purify
    cfg = purify.Config().set(d=64, k=4, width=256, steps=3000, adv_start=1500)
    res = purify.sweep(cfg, grid={"tau": [0.0, 0.1, 0.2, 0.3]}, seeds=16)
    res.sel(tau=0.2).mean("seed")["purity_nw"]
"""

from .config import Config, ConfigError, DataConfig, EvalConfig, HParams, ModelConfig, TrainConfig
from .data import SparseCoding, Task, make_task, sample
from .downstream import DownstreamConfig, fit_and_evaluate
from .network import TwoLayer
from .results import Results
from .sweeps import SliceFinished, SweepInterrupted, auto_chunk_size, merge_runs, sweep
from .train import Run, make_run

__version__ = "0.1.0"

__all__ = [
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
    "TwoLayer",
    "auto_chunk_size",
    "fit_and_evaluate",
    "make_run",
    "make_task",
    "merge_runs",
    "sample",
    "sweep",
]
