"""``run_experiment``: train an experiment's runs, analyze them, summarize, report.

Steps, each resumable:

1. expand the spec into runs (:func:`~orient3d.experiments.spec.expand_runs`) and
   write ``DIR/experiment.json`` (name, kind, questions, runs with their params);
2. train what is missing (:mod:`~orient3d.experiments.runner`: finished runs are
   skipped, interrupted ones resumed, runs of ``reuse`` folders taken as they are);
3. the kind's per-run analysis (files in the run folders, skipped when present);
4. the kind's summary: ``DIR/summary.json`` (tables with intervals, verdicts, the
   answers, ``sections`` for the report, and ``cells``: each group of replicate
   runs, those differing in seed alone, with its grid values) and
   ``DIR/figures/*.png``;
5. ``DIR/report.html`` through :func:`orient3d.report.write_report`.

:func:`plan_experiment` is step 1 with each run's state, :func:`finish_experiment`
steps 3 to 5; :func:`analyze_experiment` runs them on runs trained elsewhere (the
jobs of :mod:`orient3d.experiments.slurm`), refusing while any run is unfinished.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orient3d.config import Config, from_dict
from orient3d.errors import ConfigError, RunError
from orient3d.experiments.cells import cells, cells_json, grid_keys
from orient3d.experiments.common import AnalysisTask, Kind, jsonable, load_record, read_json
from orient3d.experiments.runner import Progress, parallel_map, reusable_run, run_state
from orient3d.experiments.spec import ExperimentSpec, RunSpec, expand_runs, load_spec

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "Plan",
    "analyze_experiment",
    "finish_experiment",
    "get_kind",
    "plan_experiment",
    "run_experiment",
    "write_report",
]

# kind -> the module defining its KIND; imported on use, so one kind cannot break another
KINDS: dict[str, str] = {
    "single_vs_all": "orient3d.experiments.single_vs_all",
    "recover": "orient3d.experiments.recover",
    "search_modes": "orient3d.experiments.search_modes",
    "canonical": "orient3d.experiments.canonical",
    "continuous": "orient3d.experiments.continuous",
}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` registered as ``name`` (ConfigError listing the kinds if none)."""
    if name not in KINDS:
        raise ConfigError(f"kind: {name!r} is not one of {', '.join(KINDS)}")
    kind = importlib.import_module(KINDS[name]).KIND
    assert isinstance(kind, Kind), f"{KINDS[name]}.KIND is not a Kind"
    return kind


def _kind(spec: ExperimentSpec) -> tuple[Kind, Any]:
    kind = get_kind(spec.kind)
    try:
        options = from_dict(kind.options, spec.options, "options.")
    except ConfigError as err:
        raise ConfigError(f"[options] of kind {spec.kind}: {err}") from None
    if kind.check is not None:
        try:
            kind.check(spec, options)
        except ConfigError as err:
            raise ConfigError(f"kind {spec.kind}: {err}") from None
    return kind, options


def train_run(cfg: Config, path: Path, state: str, command: str) -> None:
    """Train (state ``new``) or resume (``resume``) one run in this process."""
    from orient3d.training.loop import train

    train(cfg, path, resume=state == "resume", force=state == "new", command=command)


def _train_task(task: tuple[Config, Path, str, str]) -> None:
    """:func:`train_run` of one task (module level: runs in worker processes)."""
    train_run(*task)


def _on_gpu(cfg: Config, i: int, workers: int) -> Config:
    """With several workers and GPUs, run ``i`` trains on ``cuda:(i mod #GPUs)``."""
    from orient3d.training.distributed import sweep_device

    device = sweep_device(i, cfg.train.device) if workers > 1 else cfg.train.device
    if device == cfg.train.device:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))


def _locate(spec: ExperimentSpec, runs: Sequence[RunSpec], out: Path) -> list[tuple[Path, str]]:
    """Each run's folder and state: ``done``, ``resume``, ``new`` or ``reused``."""
    reuse = [(out / p).resolve() for p in spec.reuse]
    where = []
    for run in runs:
        own = out / "runs" / run.name
        found = (
            None if (own / "results.json").is_file() else reusable_run(run.name, run.config, reuse)
        )
        where.append((found, "reused") if found else (own, run_state(own, run.config)))
    return where


def _train_all(plan: Plan, workers: int, progress: Progress | None) -> None:
    todo = plan.todo()
    done = len(plan.runs) - len(todo)
    if done:
        log.info("%s: %d of %d runs already finished", plan.spec.name, done, len(plan.runs))
    tasks = [
        (_on_gpu(r.config, i, workers), p, s, train_command(plan.spec, r))
        for i, (r, p, s) in enumerate(todo)
    ]
    parallel_map(
        _train_task,
        tasks,
        workers=workers,
        labels=[f"train {r.name}" for r, _, _ in todo],
        progress=progress,
    )


def train_command(spec: ExperimentSpec, run: RunSpec) -> str:
    """What a run's meta.json records as the command that trained it."""
    return f"orient3d experiment ({spec.name}) run {run.name}"


def _write_spec(
    spec: ExperimentSpec,
    kind: Kind,
    runs: Sequence[RunSpec],
    where: Sequence[tuple[Path, str]],
    out: Path,
) -> None:
    from orient3d.rundir.runs import now, write_json

    record = {
        "name": spec.name,
        "kind": spec.kind,
        "questions": list(spec.questions or kind.questions),
        "seeds": list(spec.seeds),
        "grid": {k: list(v) for k, v in spec.grid},
        "variants": {n: dict(items) for n, items in spec.variants},
        "options": dict(spec.options),
        "overrides": list(spec.overrides),
        "created": now(),
        "runs": [
            {"run": os.path.relpath(p, out), "params": run.params}
            for run, (p, _) in zip(runs, where)
        ],
    }
    write_json(out / "experiment.json", jsonable(record))


def _nest_if_taken(spec: ExperimentSpec, out: Path) -> tuple[ExperimentSpec, Path]:
    """A folder holding another experiment: write into ``out/<name>`` and reuse its runs.

    So ``orient3d experiment configs/recover.toml --out DIR`` with the DIR of a
    finished single_vs_all takes that experiment's runs and keeps its summary.
    """
    marker = out / "experiment.json"
    if not marker.is_file() or read_json(marker).get("name") == spec.name:
        return spec, out
    log.info(
        "%s holds experiment %s: writing %s into %s",
        out,
        read_json(marker).get("name"),
        spec.name,
        out / spec.name,
    )
    reuse = tuple(r if Path(r).is_absolute() else str(Path("..") / r) for r in spec.reuse)
    return dataclasses.replace(spec, reuse=(*reuse, "..")), out / spec.name


def write_report(folders: Sequence[Path], out: Path) -> Path | None:
    """``orient3d.report.write_report(folders, out)`` if the report module is there."""
    try:
        from orient3d.report import write_report as _write
    except ImportError:
        log.warning("orient3d.report is not available: no %s", out)
        return None
    return _write([Path(f) for f in folders], out)


@dataclasses.dataclass(frozen=True)
class Plan:
    """An experiment laid out in its folder: its runs, where each lives and its state."""

    spec: ExperimentSpec
    kind: Kind
    options: Any
    out: Path  # the experiment folder (``out/<name>`` when ``out`` holds another one)
    runs: tuple[RunSpec, ...]
    where: tuple[tuple[Path, str], ...]  # each run's folder and state (see :func:`_locate`)

    def todo(self) -> list[tuple[RunSpec, Path, str]]:
        """The runs left to train (state ``new`` or ``resume``), with folder and state."""
        return [(r, p, s) for r, (p, s) in zip(self.runs, self.where) if s in ("new", "resume")]


def plan_experiment(
    config: str | Path | ExperimentSpec, out: str | Path, overrides: Sequence[str] = ()
) -> Plan:
    """Steps 1 and the state of step 2: the spec, its runs' folders and states.

    Writes ``out/experiment.json``; a run folder holding another config is a
    RunError naming the keys (nothing is trained). ``overrides`` as for
    :func:`run_experiment`.
    """
    spec = config if isinstance(config, ExperimentSpec) else load_spec(config, overrides)
    kind, options = _kind(spec)
    spec, folder = _nest_if_taken(spec, Path(out))
    folder.mkdir(parents=True, exist_ok=True)
    runs = expand_runs(spec)
    where = _locate(spec, runs, folder)
    _write_spec(spec, kind, runs, where, folder)
    return Plan(spec, kind, options, folder, tuple(runs), tuple(where))


def finish_experiment(
    plan: Plan, *, workers: int = 1, progress: Progress | None = None, t0: float | None = None
) -> dict[str, Any]:
    """Steps 3 to 5 on trained runs: per-run analysis, summary.json, figures, report.

    ``t0``: when the work began (``perf_counter``), for summary.json's ``seconds``.
    """
    t0 = time.perf_counter() if t0 is None else t0
    spec, kind, options, out = plan.spec, plan.kind, plan.options, plan.out
    pairs = list(zip(plan.runs, plan.where))
    if kind.analyze is not None:
        first = spec.seeds[0]
        tasks = [
            AnalysisTask(p, run.params, options, run.config.seed == first)
            for run, (p, _) in pairs
            if kind.wants_analysis(run, options)
            and not (kind.analysis_output and (p / kind.analysis_output).is_file())
        ]
        parallel_map(
            kind.analyze,
            tasks,
            workers=workers,
            labels=[f"analyze {t.path.name}" for t in tasks],
            progress=progress,
        )
    records = [load_record(p, run.params, out, kind.extra_files) for run, (p, _) in pairs]
    summary = kind.summarize(records, spec, options, out)
    summary.setdefault("cells", cells_json(cells(records), grid_keys(spec)))
    summary["seconds"] = time.perf_counter() - t0
    from orient3d.rundir.runs import write_json

    write_json(out / "summary.json", jsonable(summary))
    write_report([out], out / "report.html")
    return summary


def run_experiment(
    config: str | Path | ExperimentSpec,
    out: str | Path,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or resume) an experiment into ``out``; returns its summary.json dict.

    ``config``: an experiment TOML path or a parsed spec. ``overrides``
    (``data.source=PATH``) apply to every run's base config (TOML paths only;
    a spec carries its own). ``progress(message, done, total)`` is called after
    each run trains.
    """
    plan = plan_experiment(config, out, overrides)
    t0 = time.perf_counter()
    _train_all(plan, workers, progress)
    return finish_experiment(plan, workers=workers, progress=progress, t0=t0)


def analyze_experiment(
    config: str | Path | ExperimentSpec,
    out: str | Path,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Steps 3 to 5 alone, on runs trained elsewhere (e.g. SLURM jobs); trains nothing.

    A RunError names the runs that have not finished (no ``results.json``).
    """
    plan = plan_experiment(config, out, overrides)
    todo = plan.todo()
    if todo:
        names = ", ".join(f"{r.name} ({s})" for r, _, s in todo)
        raise RunError(
            f"{plan.out}: {len(todo)} of {len(plan.runs)} runs have not finished: {names}; "
            "train them first (the same command without --analyze-only)"
        )
    return finish_experiment(plan, workers=workers, progress=progress)


def spec_with(spec: ExperimentSpec, **changes: Any) -> ExperimentSpec:
    """A copy of ``spec`` with fields replaced (e.g. ``overrides`` or ``seeds``)."""
    return dataclasses.replace(spec, **changes)
