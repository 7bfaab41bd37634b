"""What every experiment kind shares: run records, the Kind registry entry, CI cells, JSON.

A :class:`RunRecord` is one finished run as the aggregation sees it: files only
(``config.toml``, ``results.json``, ``metrics.jsonl`` and analysis files such as
``recover.json``), so that aggregation is a pure function of folders and can be
tested with fake ones.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.config import Config
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.metrics.stats import Comparison, compare_groups, mean_ci
from orient3d.rundir.runs import read_json, read_jsonl

__all__ = [
    "AnalysisTask",
    "Kind",
    "RunRecord",
    "ci_cell",
    "compare",
    "jsonable",
    "load_record",
    "read_json",
    "section",
]


@dataclass(frozen=True)
class RunRecord:
    """One finished run: where it is, what was varied, what it measured."""

    name: str
    path: Path  # the run folder
    rel: str  # its path relative to the experiment folder
    params: dict[str, Any]
    config: Config
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)  # analysis files, by stem


@dataclass(frozen=True)
class AnalysisTask:
    """Per-run work after training (needs the model); picklable for worker processes."""

    path: Path
    params: dict[str, Any]
    options: Any
    first_seed: bool  # the run has the experiment's first seed (e.g. draw its picture)


@dataclass(frozen=True)
class Kind:
    """An experiment kind: its questions, options and the steps after training."""

    questions: tuple[str, ...]
    options: type  # a dataclass with defaults, built from the spec's [options]
    summarize: Callable[[Sequence[RunRecord], ExperimentSpec, Any, Path], dict[str, Any]]
    analyze: Callable[[AnalysisTask], None] | None = None
    wants_analysis: Callable[[RunSpec, Any], bool] = lambda run, options: False
    extra_files: tuple[str, ...] = ()  # run files read into RunRecord.extra, e.g. "recover.json"
    analysis_output: str = ""  # the run file ``analyze`` writes (present: nothing to do)
    # refuses, before any training, a spec the kind cannot show (ConfigError naming the key)
    check: Callable[[ExperimentSpec, Any], None] | None = None


def load_record(
    path: Path, params: Mapping[str, Any], exp_dir: Path, extra_files: Iterable[str] = ()
) -> RunRecord:
    """Read a finished run folder (``results.json`` required)."""
    from orient3d.rundir.runs import read_run_config

    path = Path(path)
    extra = {}
    for name in extra_files:
        if (path / name).is_file():
            extra[Path(name).stem] = read_json(path / name)
    return RunRecord(
        name=path.name,
        path=path,
        rel=os.path.relpath(path, exp_dir),
        params=dict(params),
        config=read_run_config(path),
        results=read_json(path / "results.json"),
        metrics=read_jsonl(path / "metrics.jsonl"),
        extra=extra,
    )


def compare(a: Iterable[float], b: Iterable[float]) -> Comparison:
    """:func:`orient3d.metrics.stats.compare_groups`, quiet about scipy's precision warning.

    Nearly identical values (e.g. tiny runs that learned the same thing) make
    scipy warn about catastrophic cancellation; the comparison is still returned.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return compare_groups(list(a), list(b))


def ci_cell(values: Iterable[float], bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """``{"mean", "lo", "hi", "n"}``: the mean and 95% Student-t interval (report cell).

    With fewer than two values the interval is undefined: ``lo`` and ``hi`` are
    null in JSON and print as "n/a". ``bounds``: the range of a bounded quantity
    (e.g. IoU in [0, 1]); the interval is clipped to it.
    """
    vals = [float(v) for v in values]
    m, lo, hi = mean_ci(vals)
    if bounds is not None and math.isfinite(lo):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return jsonable({"mean": m, "lo": lo, "hi": hi, "n": len(vals)})


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def section(
    title: str,
    text: str,
    columns: Sequence[str] | None = None,
    rows: Sequence[Sequence[Any]] | None = None,
    figures: Sequence[str] = (),
) -> dict[str, Any]:
    """One entry of summary.json's ``sections`` (the report's schema)."""
    out: dict[str, Any] = {"title": title, "text": text}
    if columns is not None:
        out["table"] = {"columns": list(columns), "rows": [list(r) for r in rows or []]}
    if figures:
        out["figures"] = list(figures)
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a sentence: ``digits`` significant digits, or "n/a"."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"
