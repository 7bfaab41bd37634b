"""Run an experiment: a grid of training runs, their measurements and a report.

  orient3d experiment CONFIG --out DIR [--workers N] [--key=value ...]

CONFIG is an experiment TOML (configs/single_vs_all.toml, configs/recover.toml,
configs/search_modes.toml): name, kind, seeds, a [base] run config, a [grid] of
dotted keys and values, optional [variants] and [options]. Dotted overrides
(--data.source=PATH, --train.epochs=3) apply to every run's base config.

DIR receives runs/<name>/ (one run folder each), experiment.json, summary.json
(tables with 95% intervals, verdicts, the answers), figures/*.png and report.html.
Running the same command again resumes: finished runs are skipped, interrupted
ones continue from their last checkpoint. --workers N trains N runs side by side
in one-thread processes, which end with this one (even after kill -9). One
process at a time writes DIR and each run folder (a lock; a second is refused).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orient3d.cli.checks import check_config_path
from orient3d.errors import ConfigError, RunError
from orient3d.rundir import runs


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment TOML file")
    parser.add_argument("--out", metavar="DIR", required=True, help="experiment folder")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs trained side by side (default 1)"
    )
    # Unknown ``--key=value`` arguments are collected as overrides by orient3d.cli.main.
    parser.set_defaults(overrides=[], _accepts_overrides=True)


def print_progress(message: str, done: int, total: int) -> None:
    print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)


def print_answers(summary: dict[str, object], out: Path) -> None:
    for item in summary.get("answers", []) or []:  # type: ignore[attr-defined]
        print(f"{item['question']}\n  {item['answer']}")
    report = out / "report.html"
    if report.is_file():
        print(f"report: {report}")


def check_experiment_folder(out: Path) -> None:
    """``out`` may hold an experiment (resumed) or nothing, not a file or a training run."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; pick another --out")
    if (out / runs.CONFIG).is_file() and not (out / "experiment.json").is_file():
        raise RunError(f"{out}: holds a training run, not an experiment; pick another --out")


def main(args: argparse.Namespace) -> int:
    from orient3d.experiments import run_experiment

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    check_config_path(args.config, args.overrides, "experiment")
    out = Path(args.out)
    check_experiment_folder(out)
    runs.lock_run(out, "orient3d experiment " + " ".join([args.config, "--out", args.out]))
    summary = run_experiment(
        args.config,
        out,
        workers=args.workers,
        progress=print_progress,
        overrides=args.overrides,
    )
    print_answers(summary, out)
    return 0
