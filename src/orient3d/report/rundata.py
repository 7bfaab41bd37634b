"""Reading run and experiment folders (files only; no model or training code).

A run folder holds ``config.toml`` (required), ``meta.json``, ``metrics.jsonl``
and/or ``results.json`` (at least one), optional ``recover.json`` and
``figures/*.png``. An experiment folder holds ``experiment.json`` (required),
``summary.json``, ``figures/*.png`` and its runs. Problems raise one
:class:`~orient3d.errors.RunError` naming the path and what is wrong.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orient3d.config import flatten
from orient3d.errors import RunError
from orient3d.rundir.jsonio import read_json, read_jsonl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = [
    "ExperimentData",
    "RunData",
    "config_diff",
    "flatten",
    "is_experiment",
    "load_experiment",
    "read_run",
    "run_labels",
    "scalar_items",
]

# Final metrics listed first, in this order; the others follow alphabetically.
# (``protocol`` says whether test metrics were measured with search: always shown.)
PREFERRED_METRICS = (
    "protocol",
    "mode",
    "test_mse",
    "test_iou",
    "test_bce",
    "test_neg_elbo",
    "train_loss",
)


def scalar_items(d: dict[str, Any]) -> dict[str, float | int | str | bool]:
    """The entries of ``d`` that fit in a table cell (numbers, strings, bools), ordered."""
    keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool))}
    first = [k for k in PREFERRED_METRICS if k in keep]
    return {k: keep[k] for k in first + sorted(k for k in keep if k not in first)}


@dataclass(frozen=True)
class RunData:
    """The files of one run folder, parsed."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] | None = None
    recover: dict[str, Any] | None = None
    figures: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    def final_metrics(self) -> tuple[dict[str, float | int | str | bool], str]:
        """Scalar final metrics and their source: ``results.json`` or the last epoch."""
        if self.results is not None:
            return scalar_items(self.results), "results.json"
        if self.metrics:
            return scalar_items(self.metrics[-1]), "metrics.jsonl (last epoch)"
        return {}, "none"

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(epochs, values)`` of a per-epoch number in metrics.jsonl (missing rows skipped)."""
        xs, ys = [], []
        for i, row in enumerate(self.metrics):
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs.append(float(row.get("epoch", i)))
                ys.append(float(v))
        return xs, ys


def read_run(path: Path) -> RunData:
    """Read a run folder; RunError names the folder and the missing or broken file."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunError(f"{path}: not a folder (expected a run folder)")
    cfg_path = path / "config.toml"
    if not cfg_path.is_file():
        raise RunError(f"{path}: not a run folder: config.toml is missing")
    try:
        config = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RunError(f"{cfg_path}: invalid TOML: {err}") from err
    has_metrics = (path / "metrics.jsonl").is_file()
    has_results = (path / "results.json").is_file()
    if not (has_metrics or has_results):
        raise RunError(
            f"{path}: incomplete run folder: neither results.json nor metrics.jsonl is present"
        )
    meta = read_json(path / "meta.json") if (path / "meta.json").is_file() else {}
    results = read_json(path / "results.json") if has_results else None
    recover = read_json(path / "recover.json") if (path / "recover.json").is_file() else None
    for name, obj in (("meta.json", meta), ("results.json", results), ("recover.json", recover)):
        if obj is not None and not isinstance(obj, dict):
            raise RunError(f"{path / name}: expected a JSON object")
    return RunData(
        path=path,
        config=config,
        meta=meta,
        metrics=read_jsonl(path / "metrics.jsonl") if has_metrics else [],
        results=results,
        recover=recover,
        figures=tuple(sorted((path / "figures").glob("*.png"))),
    )


def is_experiment(path: Path) -> bool:
    return (Path(path) / "experiment.json").is_file()


@dataclass(frozen=True)
class ExperimentData:
    """An experiment folder: its spec, summary, figures and runs (with their varied params)."""

    path: Path
    spec: dict[str, Any]
    summary: dict[str, Any]
    runs: tuple[RunData, ...]
    params: tuple[dict[str, Any], ...]
    figures: tuple[Path, ...]

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.path.name)

    def questions(self) -> list[str]:
        q = self.spec.get("questions", self.spec.get("question", []))
        return [q] if isinstance(q, str) else [str(s) for s in q]


def load_experiment(path: Path) -> ExperimentData:
    """Read an experiment folder and every run it lists (paths relative to it)."""
    path = Path(path)
    spec = read_json(path / "experiment.json")
    if not isinstance(spec, dict):
        raise RunError(f"{path / 'experiment.json'}: expected a JSON object")
    summary_path = path / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    if not isinstance(summary, dict):
        raise RunError(f"{summary_path}: expected a JSON object")
    runs, params = [], []
    for i, entry in enumerate(spec.get("runs", [])):
        if isinstance(entry, str):
            entry = {"run": entry}
        if not isinstance(entry, dict) or "run" not in entry:
            raise RunError(f"{path / 'experiment.json'}: runs[{i}] has no 'run' path")
        runs.append(read_run(path / str(entry["run"])))
        params.append(dict(entry.get("params", {})))
    return ExperimentData(
        path=path,
        spec=spec,
        summary=summary,
        runs=tuple(runs),
        params=tuple(params),
        figures=tuple(sorted((path / "figures").glob("*.png"))),
    )


def config_diff(configs: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Dotted keys whose values differ between the flat configs, and those shared by all."""
    keys: list[str] = []
    for c in configs:
        keys.extend(k for k in c if k not in keys)
    differ: list[str] = []
    same: list[str] = []
    missing = object()
    for k in keys:
        vals = [c.get(k, missing) for c in configs]
        (same if all(v == vals[0] for v in vals) else differ).append(k)
    return differ, same


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """Short unique labels: folder names, or paths from the common parent if names clash."""
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    resolved = [r.path.resolve() for r in runs]
    common = Path(os.path.commonpath([str(p) for p in resolved]))
    return [str(p.relative_to(common)) or p.name for p in resolved]
