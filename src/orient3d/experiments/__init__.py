"""Experiments: grids of training runs that answer the project's questions.

``run_experiment(config, out, workers=1)`` trains (or resumes) every run of an
experiment TOML into ``out/runs/<name>``, measures what its kind asks for, and
writes ``out/experiment.json``, ``out/summary.json`` (tables with 95% intervals,
verdicts, one-sentence answers, report sections), ``out/figures/*.png`` and
``out/report.html``. Kinds (:data:`KINDS`):

- ``single_vs_all`` (question 1): test MSE of single vs augmented per latent size;
- ``recover``: recovery accuracy of single-orientation models per latent size;
- ``search_modes`` (question 2): oracle, augmented and search (hard, soft) at one
  latent size: curves, consistency and usage of the canonical poses, pictures;
- ``canonical`` (:mod:`.canonical`): what makes one canonical pose emerge.
- ``continuous`` (:mod:`.continuous`): SO(3) pose error against method,
  and the canonical pose of continuous search training.

Every kind summarizes per *cell* (:mod:`.cells`): only runs that differ in
seed alone are replicates, so means, intervals, verdicts and figures are taken
within one set of grid values and variant; tables carry the grid keys as columns,
``summary.json`` lists the cells, and a kind refuses a grid it cannot show before
any training (``Kind.check``).

A new kind is a module with a ``KIND`` (:class:`~.common.Kind`) listed in
:data:`KINDS`.

``analyze_experiment(config, out)`` does the steps after training alone, on runs
trained elsewhere; :mod:`.slurm` trains the runs as SLURM jobs (submitit), where
:mod:`.launcher` reads the ``[launcher]`` settings.

``run_demo(out)`` runs all three at 16³ on procedural shapes (:mod:`.demo`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orient3d.lazy import homes, lazy_names

if TYPE_CHECKING:
    from orient3d.experiments.core import (
        KINDS,
        analyze_experiment,
        get_kind,
        run_experiment,
        spec_with,
        write_report,
    )
    from orient3d.experiments.spec import (
        ExperimentSpec,
        RunSpec,
        expand_runs,
        load_spec,
        spec_from_dict,
    )

# Where each name lives: loaded on first use, so that ``orient3d.experiments.launcher``
# (read by the command line's argument parser) imports without torch.
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        **homes(
            "orient3d.experiments.core",
            [
                *("KINDS", "analyze_experiment", "get_kind", "run_experiment"),
                *("spec_with", "write_report"),
            ],
        ),
        **homes(
            "orient3d.experiments.spec",
            ("ExperimentSpec", "RunSpec", "expand_runs", "load_spec", "spec_from_dict"),
        ),
    },
)

__all__ = [
    "KINDS",
    "ExperimentSpec",
    "RunSpec",
    "analyze_experiment",
    "expand_runs",
    "get_kind",
    "load_spec",
    "run_experiment",
    "spec_from_dict",
    "spec_with",
    "write_report",
]
