"""Compare runs side by side: the config keys that differ and the final metrics.

Final metrics come from results.json, or from the last epoch of metrics.jsonl
when results.json is missing (the "source" column says which). Prints an
aligned text table, or JSON with --json; then a warning per problem: epochs
missing from or repeated in metrics.jsonl, an evaluate.json or recover.json
computed from an older checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from orient3d.report.rundata import RunData, config_diff, read_run, run_labels
from orient3d.rundir.runcheck import run_warnings

__all__ = ["add_args", "compare_rows", "format_table", "main"]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def compare_rows(runs: list[RunData]) -> list[dict[str, Any]]:
    """One dict per run: ``run``, ``path``, ``config`` (differing keys), ``metrics``,
    ``source`` and ``warnings``."""
    flats = [r.flat_config() for r in runs]
    differ, _ = config_diff(flats)
    rows = []
    for label, r, flat in zip(run_labels(runs), runs, flats):
        metrics, source = r.final_metrics()
        rows.append(
            {
                "run": label,
                "path": str(r.path),
                "config": {k: flat.get(k) for k in differ},
                "metrics": metrics,
                "source": source,
                "warnings": run_warnings(r.path, r.metrics, r.results),
            }
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """An aligned text table: run, differing config keys, source, metrics."""
    cfg_keys = list(rows[0]["config"]) if rows else []
    met_keys: list[str] = []
    for r in rows:
        met_keys.extend(k for k in r["metrics"] if k not in met_keys)
    header = ["run", *cfg_keys, "source", *met_keys]
    body = [
        [
            r["run"],
            *(_fmt(r["config"][k]) for k in cfg_keys),
            r["source"],
            *(_fmt(r["metrics"].get(k)) for k in met_keys),
        ]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
        for line in [header, ["-" * w for w in widths], *body]
    ]
    lines += [f"warning: {r['run']}: {w}" for r in rows for w in r.get("warnings", [])]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    rows = compare_rows([read_run(p) for p in args.runs])
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_table(rows))
    return 0
