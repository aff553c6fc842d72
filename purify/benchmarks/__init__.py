"""`purify bench`: the throughput benchmark, its PyTorch peers and its profile.

The library never imports this package (a layering test keeps it so): the command line does,
for `purify bench`. `programs` holds the JAX side, `torch_peer` the PyTorch side (an optional
extra), `profiling` where a step's time goes, `suite` the run that puts them side by side, `scaling`
the throughput against the number of networks.
"""

from .programs import CONFIGS
from .scaling import format_scaling, plot_scaling, run_scaling
from .suite import format_table, run_bench

__all__ = ["CONFIGS", "format_scaling", "format_table", "plot_scaling", "run_bench", "run_scaling"]
