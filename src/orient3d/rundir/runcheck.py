"""Checks of a run folder's files that need no model: log epochs, derived files' sources.

``metrics.jsonl`` should hold epochs 1..E once each (:func:`epoch_problems`
names gaps and repeats). ``evaluate.json`` and ``recover.json`` record the
checkpoint they were computed from under ``source`` (name, epoch, sha256);
:func:`is_stale` says whether that checkpoint has since changed (a resumed or
retrained run), so a report can mark them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["DERIVED", "epoch_problems", "file_sha256", "is_stale", "run_warnings"]

DERIVED = ("evaluate.json", "recover.json")  # files computed from a checkpoint


def _span(xs: list[int]) -> str:
    return ", ".join(map(str, xs[:8])) + (f" … ({len(xs)} in all)" if len(xs) > 8 else "")


def epoch_problems(records: list[dict[str, Any]], last: int | None = None) -> list[str]:
    """What is wrong with a log's epochs: gaps (missing epochs) and repeated epochs.

    ``last``: the epochs the run trained (results.json's ``epochs_run``), so a
    lost last line counts as missing too."""
    counts = Counter(int(r["epoch"]) for r in records if "epoch" in r)
    end = max(max(counts, default=0), last or 0)
    missing = sorted(set(range(1, end + 1)) - set(counts))
    repeated = sorted(e for e, c in counts.items() if c > 1)
    out = []
    if missing:
        out.append(f"missing epoch(s) {_span(missing)}")
    if repeated:
        out.append(f"epoch(s) {_span(repeated)} logged more than once")
    return out


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def is_stale(run: str | Path, derived: dict[str, Any] | None) -> bool:
    """Whether a derived file's ``source`` checkpoint differs from the run's file of that name."""
    src = (derived or {}).get("source")
    if not isinstance(src, dict) or "sha256" not in src:
        return False
    p = Path(run) / "checkpoints" / f"{src.get('checkpoint', 'best')}.pt"
    return not p.is_file() or file_sha256(p) != src["sha256"]


def _derived(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def run_warnings(
    run: str | Path, metrics: list[dict[str, Any]], results: dict[str, Any] | None = None
) -> list[str]:
    """One line per problem of a run folder: the log's epochs, stale derived files.

    ``metrics``: the log's records; ``results``: results.json (its ``epochs_run``
    makes a lost last line count as missing)."""
    last = (results or {}).get("epochs_run")
    out = [
        f"metrics.jsonl: {p}"
        for p in epoch_problems(metrics, last if isinstance(last, int) else None)
    ]
    for name in DERIVED:
        if is_stale(run, _derived(Path(run) / name)):
            out.append(f"{name}: computed from an older checkpoint (stale; run it again)")
    return out
