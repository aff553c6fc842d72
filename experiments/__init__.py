"""The experiments the toolkit ships: one module per experiment, each runnable on its own
(`python -m experiments.fp_dynamics --seeds 8`).

Each module defines `EXPERIMENT` (a `purify.experiment.Experiment`) and is registered in the
entry-point group `purify.experiments` (pyproject.toml); the library finds experiments only
through that registry. Protocols several experiments share live in `experiments.common`. The
claims, rules and science behind each experiment are in docs/science.md.
"""
