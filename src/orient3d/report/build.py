"""Self-contained HTML reports of run and experiment folders.

``write_report(paths, out)`` reads folders only (never the model or training
code) and writes one HTML file that opens from disk: inline CSS, every figure
embedded as a ``data:image/png;base64`` URI, no external reference, no script
needed (one inline script only records whether the images decoded, in
``<html data-images="ok N">``). The file is written atomically.

**Run folders** give: the setup (code version, config keys that differ between
runs, the shared config), the final metrics (``results.json``, else the last
epoch of ``metrics.jsonl``), training curves, pose histograms (``pose_hist`` of
the last epoch), recovery (``recover.json``) and every ``figures/*.png``.

**Experiment folders** (with ``experiment.json``: ``name``, ``question`` or
``questions``, ``runs``: ``[{"run": "runs/x", "params": {...}}]``) add, before
their runs: the questions with the answers from ``summary.json``, its tables and
sections, and the experiment's ``figures/*.png``. The report never writes an
answer itself; it prints the sentences that the experiment computed.

``summary.json`` schema (every key optional)::

    {
      "answers": [{"question": "...", "answer": "one sentence"}, ...],
          # also accepted: a list of sentences, or {"question": "sentence"}
      "tables": [{"title": "...", "columns": [...], "rows": [[...], ...]}],
      "sections": [
        {"title": "...",                 # required
         "text": "...",                  # paragraphs split on blank lines
         "table": {"columns": ["run", "test_mse"], "rows": [["a", 0.01], ...]},
         "figures": ["figures/x.png"]}   # relative to the experiment folder
      ],
      ...                                # any other key: shown as raw JSON
    }

A table cell may be a number, a string, ``null``, a list of numbers, or a mean
with its interval ``{"mean": m, "lo": l, "hi": h, "n": k}`` (shown
``m [l, h] (n=k)``).

Adding sections from code::

    rep = build_report([Path("runs/a"), Path("runs/b")])
    rep.section("Probe", html.table(["run", "acc"], [["a", 0.9]]))  # raw HTML
    rep.write(Path("report.html"))
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orient3d.report.html as H
from orient3d import __version__
from orient3d.metrics.stats import mean_ci
from orient3d.report.plots import curves_png, histograms_png
from orient3d.report.rundata import (
    ExperimentData,
    RunData,
    config_diff,
    is_experiment,
    load_experiment,
    read_run,
    run_labels,
    scalar_items,
)
from orient3d.rundir.runcheck import run_warnings

log = logging.getLogger(__name__)

__all__ = ["Report", "build_report", "run_labels", "write_report"]

CURVE_KEYS = ("test_mse", "test_iou", "train_loss")
_SUMMARY_KEYS = {"answers", "tables", "sections", "name"}


@dataclass
class Report:
    """An ordered list of ``(title, html)`` sections; ``render()`` makes the page."""

    title: str = "orient3d report"
    sections: list[tuple[str, str, int]] = field(default_factory=list)

    def section(self, title: str, html: str, level: int = 2) -> None:
        """Append a section: a heading (h2, or h3 with ``level=3``) and raw HTML."""
        self.sections.append((title, html, level))

    def render(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        parts = [
            f"<h1>{H.esc(self.title)}</h1>",
            f'<p class="note">Generated {H.esc(stamp)} by orient3d {H.esc(__version__)}.</p>',
        ]
        for title, body, level in self.sections:
            lv = 3 if level >= 3 else 2
            parts.append(f"<section><h{lv}>{H.esc(title)}</h{lv}>\n{body}\n</section>")
        return H.page(self.title, "\n".join(parts))

    def write(self, out: Path) -> Path:
        """Write the page atomically (a temporary file in the same folder, then rename)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.render())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.debug("wrote %s", out)
        return out


# ----------------------------------------------------------------------------
# Run sections


def _meta_row(label: str, r: RunData) -> list[Any]:
    m = r.meta
    commit = m.get("git_commit", m.get("commit"))
    if isinstance(commit, str) and len(commit) > 12:
        commit = commit[:12]
    if commit is not None and m.get("git_dirty"):
        commit = f"{commit} (dirty)"
    command = m.get("command", m.get("argv"))
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    return [label, str(r.path), m.get("version"), commit, m.get("time"), m.get("device"), command]


def _setup_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    rows = [_meta_row(lab, r) for lab, r in zip(labels, runs)]
    cols = ["run", "folder", "version", "git commit", "time", "device", "command"]
    out = [H.table(cols, rows)]
    flats = [r.flat_config() for r in runs]
    differ, same = config_diff(flats)
    if len(runs) > 1:
        if differ:
            out.append("<p>Config keys that differ between runs:</p>")
            out.append(H.table(["key", *labels], [[k, *(f.get(k) for f in flats)] for k in differ]))
        else:
            out.append('<p class="note">All runs have the same config.</p>')
    shared = [[k, flats[0].get(k)] for k in same]
    if shared:
        # One run: its config, open. Several: the shared part, folded (the diff matters).
        title, state = ("Shared config", "") if len(runs) > 1 else ("Config", " open")
        body = H.table(["key", "value"], shared)
        out.append(f"<details{state}><summary>{title}</summary>{body}</details>")
    return "\n".join(out)


def _metrics_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    finals = [r.final_metrics() for r in runs]
    cols: list[str] = []
    for vals, _ in finals:
        cols.extend(k for k in vals if k not in cols)
    rows = [[lab, src, *(vals.get(k) for k in cols)] for lab, (vals, src) in zip(labels, finals)]
    out = [H.table(["run", "source", *cols], rows)]
    per = [(r.results or {}).get("per_object") for r in runs]
    keys: list[str] = []
    for p in per:
        if isinstance(p, dict):
            keys.extend(k for k, v in p.items() if isinstance(v, list) and k not in keys)
    if keys:
        ci_rows = []
        for lab, p in zip(labels, per):
            if isinstance(p, dict):
                cells = [_ci_cell(p.get(k)) for k in keys]
                ci_rows.append([lab, *cells])
        out.append(
            "<p>Mean over test objects with its 95% Student-t interval "
            "(results.json per_object):</p>"
        )
        out.append(H.table(["run", *keys], ci_rows))
    return "\n".join(out)


def _ci_cell(values: Any) -> dict[str, Any] | None:
    if not isinstance(values, list) or not values:
        return None
    nums = [float(v) for v in values if isinstance(v, (int, float)) and v is not None]
    m, lo, hi = mean_ci(nums)
    return {"mean": m, "lo": lo, "hi": hi, "n": len(nums)}


def _curves_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    panels = []
    for key in CURVE_KEYS:
        series = [(lab, *r.series(key)) for lab, r in zip(labels, runs)]
        series = [s for s in series if s[1]]
        if series:
            panels.append((key, series))
    if not panels:
        return ""
    caption = "Per-epoch " + ", ".join(p[0] for p in panels) + ", one line per run."
    return H.figure(curves_png(panels), caption, alt="training curves")


def _pose_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    hists, rows = [], []
    for lab, r in zip(labels, runs):
        last = next((m for m in reversed(r.metrics) if isinstance(m.get("pose_hist"), list)), None)
        if last is not None:
            hists.append((f"{lab} (epoch {last.get('epoch', '?')})", last["pose_hist"]))
        final = r.metrics[-1] if r.metrics else {}
        if "pose_entropy" in final or "poses_used" in final:
            rows.append([lab, final.get("pose_entropy"), final.get("poses_used")])
    out = []
    if rows:
        out.append(H.table(["run", "pose_entropy (last epoch)", "poses_used"], rows))
    if hists:
        out.append(
            H.figure(
                histograms_png(hists),
                "Canonical pose histogram, last epoch.",
                alt="pose histograms",
            )
        )
    return "\n".join(out)


def _recover_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    rows = []
    cols: list[str] = []
    for lab, r in zip(labels, runs):
        if r.recover is None:
            continue
        vals = scalar_items(
            {**r.recover, **r.recover.get("details", {})}
            if isinstance(r.recover.get("details"), dict)
            else r.recover
        )
        cols.extend(k for k in vals if k not in cols)
        rows.append((lab, vals))
    if not rows:
        return ""
    return H.table(["run", *cols], [[lab, *(v.get(k) for k in cols)] for lab, v in rows])


def _warnings_html(runs: Sequence[RunData], labels: Sequence[str]) -> str:
    """Gaps or repeats in a run's log, derived files from an older checkpoint."""
    items = [
        f"<li>{H.esc(lab)}: {H.esc(w)}</li>"
        for lab, r in zip(labels, runs)
        for w in run_warnings(r.path, r.metrics, r.results)
    ]
    return f'<ul class="missing">{"".join(items)}</ul>' if items else ""


def _add_runs(rep: Report, runs: Sequence[RunData], heading: str = "") -> None:
    labels = run_labels(runs)
    pre = f"{heading}: " if heading else ""
    warnings = _warnings_html(runs, labels)
    if warnings:
        rep.section(f"{pre}Warnings", warnings)
    rep.section(f"{pre}Setup", _setup_html(runs, labels))
    rep.section(f"{pre}Final metrics", _metrics_html(runs, labels))
    for title, body in (
        ("Training curves", _curves_html(runs, labels)),
        ("Orientation usage", _pose_html(runs, labels)),
        ("Orientation recovery", _recover_html(runs, labels)),
    ):
        if body:
            rep.section(pre + title, body)
    for lab, r in zip(labels, runs):
        if r.figures:
            figs = "".join(H.figure(p, f"{lab}/{p.relative_to(r.path)}") for p in r.figures)
            rep.section(f"Figures of {lab}", figs, level=3)


# ----------------------------------------------------------------------------
# Experiment sections


def _answers(summary: dict[str, Any]) -> list[tuple[str, str]]:
    raw = summary.get("answers", [])
    if isinstance(raw, dict):
        return [(str(q), str(a)) for q, a in raw.items()]
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            ans = item.get("answer", item.get("sentence", item.get("verdict", "")))
            out.append((str(item.get("question", "")), str(ans)))
        else:
            out.append(("", str(item)))
    return out


def _table_block(spec: Any, where: str) -> str:
    if not isinstance(spec, dict) or "columns" not in spec or "rows" not in spec:
        return f'<p class="missing">malformed table in {H.esc(where)}</p>'
    return H.table(spec["columns"], spec["rows"])


def _generic_section(exp: ExperimentData, sec: dict[str, Any], i: int) -> tuple[str, str]:
    parts = []
    if sec.get("text"):
        parts.append(H.paragraphs(str(sec["text"])))
    if "table" in sec:
        parts.append(_table_block(sec["table"], f"summary.json sections[{i}]"))
    for fig in sec.get("figures", []):
        parts.append(H.figure(exp.path / str(fig), str(fig)))
    return str(sec.get("title", f"Section {i + 1}")), "\n".join(parts)


def _add_experiment(rep: Report, exp: ExperimentData) -> None:
    s = exp.summary
    qa = []
    answers = _answers(s)
    answered = {q for q, _ in answers}
    for q in exp.questions():
        if q not in answered:
            qa.append(f'<p class="question">{H.esc(q)}</p>')
            if not answers:
                qa.append('<p class="note">No answer recorded in summary.json.</p>')
    for q, a in answers:
        if q:
            qa.append(f'<p class="question">{H.esc(q)}</p>')
        qa.append(f'<p class="answer">{H.esc(a)}</p>')
    if not s:
        qa.append('<p class="note">summary.json is missing: the experiment has not finished.</p>')
    rep.section(f"Experiment {exp.name}", f'<p class="note">{H.esc(exp.path)}</p>' + "".join(qa))
    if exp.params:
        keys: list[str] = []
        for p in exp.params:
            keys.extend(k for k in p if k not in keys)
        rows = [
            [lab, *(p.get(k) for k in keys)] for lab, p in zip(run_labels(exp.runs), exp.params)
        ]
        rep.section("Runs and their varied parameters", H.table(["run", *keys], rows), level=3)
    for i, t in enumerate(s.get("tables", [])):
        title = t.get("title", f"Table {i + 1}") if isinstance(t, dict) else f"Table {i + 1}"
        rep.section(str(title), _table_block(t, f"summary.json tables[{i}]"), level=3)
    for i, sec in enumerate(s.get("sections", [])):
        if isinstance(sec, dict):
            rep.section(*_generic_section(exp, sec, i), level=3)
    shown = {
        (exp.path / str(f)).resolve()
        for sec in s.get("sections", [])
        if isinstance(sec, dict)
        for f in sec.get("figures", [])
    }
    rest_figs = [p for p in exp.figures if p.resolve() not in shown]
    if rest_figs:
        figs = "".join(H.figure(p, str(p.relative_to(exp.path))) for p in rest_figs)
        rep.section("Experiment figures", figs, level=3)
    rest = {k: v for k, v in s.items() if k not in _SUMMARY_KEYS}
    if rest:
        raw = H.esc(json.dumps(rest, indent=2, default=str))
        rep.section(
            "Other summary data",
            f"<details><summary>summary.json</summary><pre>{raw}</pre></details>",
            level=3,
        )


def build_report(paths: Sequence[Path], title: str | None = None) -> Report:
    """Load every folder (experiment or run) and lay out the report's sections."""
    if not paths:
        raise ValueError("build_report needs at least one run or experiment folder")
    experiments = [load_experiment(Path(p)) for p in paths if is_experiment(Path(p))]
    runs = [read_run(Path(p)) for p in paths if not is_experiment(Path(p))]
    if title is None:
        names = [e.name for e in experiments] + ([f"{len(runs)} run(s)"] if runs else [])
        title = "orient3d report: " + ", ".join(names)
    rep = Report(title=title)
    for exp in experiments:
        _add_experiment(rep, exp)
        if exp.runs:
            _add_runs(rep, exp.runs, heading=exp.name)
    if runs:
        _add_runs(rep, runs)
    return rep


def write_report(
    paths: Sequence[Path], out: Path, extra_sections: Sequence[tuple[str, str]] = ()
) -> Path:
    """Write the HTML report of run and/or experiment folders to ``out``; returns ``out``.

    ``extra_sections``: ``(title, html)`` pairs appended at the end.
    Raises :class:`~orient3d.errors.RunError` for a missing or broken folder.
    """
    rep = build_report(list(paths))
    for title, body in extra_sections:
        rep.section(title, body)
    return rep.write(Path(out))
