"""The experiments the toolkit ships: one module per experiment (`purify run fp-dynamics`).

Each public module defines `EXPERIMENT` (a `purify.experiment.Experiment`) whose id is the
module's name with dashes; the registry finds them by file name and imports only the one it is
asked for. Modules whose names start with `_` hold what several experiments share
(`_common`: protocols, presets, smallest effects). The claims, rules and science behind each
experiment are in docs/science.md.
"""
