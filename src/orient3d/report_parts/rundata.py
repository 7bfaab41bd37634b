"""Compatibility: moved to :mod:`orient3d.report.rundata`, where ``load_run`` is ``read_run``.

(``load_run`` also named :func:`orient3d.evaluation.protocols.load_run`, which loads a
trained model; this one only reads a run folder's files.)
"""

from orient3d.report.rundata import (
    PREFERRED_METRICS,
    ExperimentData,
    RunData,
    config_diff,
    flatten,
    is_experiment,
    load_experiment,
    read_run,
    run_labels,
    scalar_items,
)

load_run = read_run

__all__ = [
    "PREFERRED_METRICS",
    "ExperimentData",
    "RunData",
    "config_diff",
    "flatten",
    "is_experiment",
    "load_experiment",
    "load_run",
    "run_labels",
    "scalar_items",
]
