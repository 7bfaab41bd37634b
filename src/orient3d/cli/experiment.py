"""Run an experiment: a grid of training runs, their measurements and a report.

  orient3d experiment CONFIG --out DIR [--workers N] [--key=value ...]
  orient3d experiment CONFIG --out DIR --launcher slurm [--slurm.partition=P ...]
  orient3d experiment CONFIG --out DIR --analyze-only

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

--launcher slurm submits the unfinished runs as a SLURM job array (one job per
run, through submitit; logs under DIR/runs/<name>/slurm/) and a job that writes
the summary and report once they have ended, then returns. Options
(--slurm.partition, --slurm.time, --slurm.gpus-per-run, --slurm.cpus-per-run,
--slurm.array-parallelism) override the experiment TOML's [launcher] table.
--analyze-only writes the summary and report from finished runs and trains
nothing; unfinished runs are an error that names them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orient3d.cli.checks import check_config_path
from orient3d.errors import ConfigError, RunError
from orient3d.experiments import launcher
from orient3d.rundir import runs

if TYPE_CHECKING:
    from orient3d.experiments.slurm import Submission


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment TOML file")
    parser.add_argument("--out", metavar="DIR", required=True, help="experiment folder")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs trained side by side (default 1)"
    )
    parser.add_argument(
        "--analyze-only",
        action="store_true",
        help="summary and report from finished runs; train nothing",
    )
    launcher.add_args(parser)
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


def print_submission(sub: Submission, args: argparse.Namespace) -> None:
    """What was submitted, and how to watch it."""
    ids = [sub.jobs[0].job_id.split("_")[0]] if sub.jobs else []
    ids += [sub.analysis.job_id] if sub.analysis is not None else []
    if sub.jobs:
        done = f" ({sub.finished} other runs had finished)" if sub.finished else ""
        print(f"submitted {len(sub.jobs)} runs as SLURM job {ids[0]}{done}")
        print(f"  logs:    {sub.out / 'runs'}/<run>/slurm/")
    else:
        print(f"all {sub.finished} runs have finished")
    if ids:
        print(f"  watch:   squeue --jobs={','.join(ids)}")
    again = " ".join(map(shlex.quote, [args.config, "--out", args.out, *args.overrides]))
    analysis = ""
    if sub.analysis is not None:
        analysis = f"job {sub.analysis.job_id} writes it when the runs end, or "
    print(f"  summary: {analysis}orient3d experiment {again} --analyze-only")


def main(args: argparse.Namespace) -> int:
    from orient3d.experiments import analyze_experiment, load_spec, run_experiment

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    check_config_path(args.config, args.overrides, "experiment")
    launcher.check_overrides(args.overrides)
    spec = load_spec(args.config, args.overrides)
    how = launcher.from_args(args, spec.launcher)  # (the TOML's table is checked by load_spec)
    slurm = how.kind == "slurm" and not args.analyze_only
    if slurm:
        from orient3d.experiments.slurm import require_submitit

        require_submitit()
    out = Path(args.out)
    check_experiment_folder(out)
    words = [args.config, "--out", args.out] + ["--analyze-only"] * args.analyze_only
    runs.lock_run(out, "orient3d experiment " + " ".join(words))
    if args.analyze_only:
        summary = analyze_experiment(spec, out, workers=args.workers, progress=print_progress)
    elif slurm:
        from orient3d.experiments.core import plan_experiment
        from orient3d.experiments.slurm import submit

        sub = submit(plan_experiment(spec, out), how, lock_folder=out)
        print_submission(sub, args)
        return 0
    else:
        summary = run_experiment(spec, out, workers=args.workers, progress=print_progress)
    print_answers(summary, out)
    return 0
