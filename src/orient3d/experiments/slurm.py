"""An experiment's runs as SLURM jobs through submitit: a job array, one job per run.

  orient3d experiment CONFIG --out DIR --launcher slurm [--slurm.partition=P ...]

:func:`submit` lays the experiment out as the local runner does
(:func:`~orient3d.experiments.core.plan_experiment`: finished runs are skipped, a
run folder holding another config is refused), submits one job per run left as
a job array, and a job that analyzes the experiment once the array has ended
(``afterany``): it writes summary.json and report.html, or fails naming the
runs that did not finish. Submitting again submits only what is unfinished.

A run's job (:class:`RunJob`) reads its run folder when it starts, as the local
runner does (:func:`~orient3d.experiments.runner.run_state`): finished: nothing
to do; a checkpoint: resume; otherwise start. The run folder's lock and config
check hold as for any run. With ``gpus_per_run > 1`` it trains under torchrun,
one process per GPU. A preempted or timed-out job requeues itself (submitit
calls :meth:`RunJob.checkpoint`: the same run, which resumes from the run
folder's last checkpoint).

Files: ``DIR/slurm/`` holds submitit's files (job pickles, sbatch scripts, every
job's log) and ``submissions.jsonl`` (one line per submission: job ids);
``DIR/runs/<name>/slurm/`` holds links to the logs of that run's jobs
(``<job id>.out``, ``<job id>.err``).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from orient3d.config import Config, dumps
from orient3d.errors import ConfigError, RunError
from orient3d.experiments.core import Plan, analyze_experiment, train_command, train_run
from orient3d.experiments.launcher import Launcher
from orient3d.experiments.runner import run_state
from orient3d.experiments.spec import ExperimentSpec

log = logging.getLogger(__name__)

__all__ = [
    "AnalysisJob",
    "RunJob",
    "Submission",
    "require_submitit",
    "sbatch_script",
    "submit",
    "torchrun_argv",
]

JOBS_DIR = "slurm"  # DIR/slurm: submitit's folder; DIR/runs/<name>/slurm: the run's log links
RECORD = "submissions.jsonl"
LOCK_WAIT_S = 600.0  # the analysis job waits this long for the experiment folder's lock


def require_submitit() -> ModuleType:
    """The ``submitit`` module, or a ConfigError saying what to install."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit, which is not installed: "
            "pip install 'orient3d[slurm]' (in a clone: pip install -e '.[slurm]')"
        ) from None
    return submitit


def _job_logging() -> None:
    """Log lines in the job's log file (a job is an entry point, like the CLI)."""
    from orient3d.devices import tune_allocator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    tune_allocator()


def torchrun_argv(path: Path, gpus: int, state: str, config_file: Path | None) -> list[str]:
    """``torchrun --standalone --nproc-per-node GPUS -m orient3d train``: the run ``path``
    from ``config_file`` (state ``new``, overwriting a partial start) or ``--resume``."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    argv += [f"--nproc-per-node={gpus}", "-m", "orient3d", "train"]
    if state == "resume":
        return [*argv, "--resume", str(path)]
    if config_file is None:
        raise ValueError("a new run needs its config file")
    return [*argv, str(config_file), "--out", str(path), "--force"]


def _run_to_end(argv: Sequence[str], where: Path) -> None:
    """Run ``argv``; if this job is stopped meanwhile, stop it too (then re-raise)."""
    log.info("%s", shlex.join(argv))
    proc = subprocess.Popen(list(argv))
    try:
        code = proc.wait()
    except BaseException:  # preempted (submitit exits), cancelled: end the ranks first
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if code != 0:
        raise RunError(f"{where}: torchrun ended with status {code}; see this job's log")


@dataclass(frozen=True)
class RunJob:
    """One run's job: train the run to its end, resuming what an earlier job left."""

    name: str
    config: Config
    path: Path  # the run folder (absolute)
    command: str  # recorded in the run's meta.json
    gpus: int = 1  # > 1: torchrun with one process per GPU

    def __call__(self) -> str:
        """Train or resume the run; returns the state it found (``done``: nothing to do)."""
        _job_logging()
        state = run_state(self.path, self.config)  # another config in the folder: RunError
        log.info("run %s: %s", self.name, state)
        if state == "done":
            return state
        if self.gpus > 1:
            config_file = None
            if state == "new":
                from orient3d.rundir.runs import write_text

                config_file = self.path / JOBS_DIR / "run.toml"
                write_text(config_file, dumps(self.config))
            _run_to_end(torchrun_argv(self.path, self.gpus, state, config_file), self.path)
        else:
            train_run(self.config, self.path, state, self.command)
        return state

    def checkpoint(self) -> Any:
        """Preempted or timed out: this run again; the requeued job resumes it from the
        run folder's last checkpoint (``submitit.helpers.DelayedSubmission``)."""
        from submitit.helpers import DelayedSubmission

        log.info("run %s: stopped; its requeued job resumes from the last checkpoint", self.name)
        return DelayedSubmission(self)


def _hold_when_free(folder: Path, command: str, wait_s: float) -> None:
    """Take ``folder``'s lock, waiting up to ``wait_s`` for its holder (the submitter)."""
    from orient3d.rundir import lock

    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.hold(folder, command)
            return
        except RunError:
            if time.monotonic() > deadline:
                raise
            time.sleep(5.0)


@dataclass(frozen=True)
class AnalysisJob:
    """The job after the array: ``--analyze-only`` (summary.json, figures, report.html)."""

    spec: ExperimentSpec
    out: Path  # the experiment folder (absolute)
    lock_folder: Path  # the folder the command line locks (--out)

    def __call__(self) -> str:
        """Analyze the finished runs; returns summary.json's path (RunError: unfinished)."""
        from orient3d.rundir import lock

        _job_logging()
        with lock.scope():
            command = f"orient3d experiment ({self.spec.name}) analysis"
            _hold_when_free(self.lock_folder, command, LOCK_WAIT_S)
            summary = analyze_experiment(self.spec, self.out)
        for item in summary.get("answers", []) or []:
            log.info("%s\n  %s", item["question"], item["answer"])
        return str(self.out / "summary.json")

    def checkpoint(self) -> Any:
        """Preempted: the analysis again (per-run analysis files already written are kept)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


# ------------------------------------------------------------------------ submission


def _run_parameters(launcher: Launcher, name: str) -> dict[str, Any]:
    """submitit.SlurmExecutor parameters of the runs' array."""
    params: dict[str, Any] = {
        "job_name": f"orient3d-{name}",
        "time": launcher.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,  # one task; torchrun starts the processes of several GPUs
        "array_parallelism": launcher.array_parallelism,
    }
    if launcher.partition:
        params["partition"] = launcher.partition
    if launcher.gpus_per_run:
        params["gpus_per_node"] = launcher.gpus_per_run
    if launcher.cpus_per_run:
        params["cpus_per_task"] = launcher.cpus_per_run
    if launcher.setup:
        params["setup"] = list(launcher.setup)
    if launcher.sbatch:
        params["additional_parameters"] = dict(launcher.sbatch)
    return params


def _analysis_parameters(launcher: Launcher, name: str, after: str | None) -> dict[str, Any]:
    """The analysis job: one run's resources (at most one GPU), after the array ends."""
    params = _run_parameters(launcher, name)
    params["job_name"] = f"orient3d-{name}-analysis"
    del params["array_parallelism"]
    if launcher.gpus_per_run:
        params["gpus_per_node"] = 1
    if after:
        params["dependency"] = f"afterany:{after}"
    return params


def _submit_command(folder: Path) -> str:
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", str(folder)])


def sbatch_script(launcher: Launcher, folder: Path, runs: int, name: str) -> str:
    """The sbatch script of an array of ``runs`` jobs, as :func:`submit` would submit it."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = _run_parameters(launcher, name)
    folder = Path(folder).absolute()
    map_count = runs if runs > 1 else None
    return _make_sbatch_string(_submit_command(folder), folder, map_count=map_count, **params)


def _slurm_executor(folder: Path, params: dict[str, Any]) -> Any:
    submitit = require_submitit()
    try:
        executor = submitit.SlurmExecutor(folder)
    except RuntimeError as err:  # no srun here
        raise RunError(f"--launcher slurm: {err}") from None
    executor.update_parameters(**params)
    return executor


def _queued(job_ids: Sequence[str]) -> list[str]:
    """Those of ``job_ids`` still in this user's SLURM queue (pending or running)."""
    if not job_ids or shutil.which("squeue") is None:
        return []
    cmd = ["squeue", "--noheader", "--format=%F", f"--user={getpass.getuser()}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("cannot read the queue (%s); not checking for earlier jobs", err)
        return []
    queued = set(out.split())
    return [j for j in job_ids if j.split("_")[0] in queued]


def _check_nothing_queued(folder: Path) -> None:
    """Refuse while jobs of the last submission into ``folder`` are still queued."""
    record = folder / RECORD
    if not record.is_file():
        return
    lines = record.read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    ids = {f"{j} (run {n})": j for n, j in last.get("runs", {}).items()}
    if last.get("analysis"):
        ids[f"{last['analysis']} (analysis)"] = last["analysis"]
    live = set(_queued(list(ids.values())))
    busy = [what for what, j in ids.items() if j in live]
    if busy:
        bases = sorted({j.split("_")[0] for j in live})
        raise RunError(
            f"{folder.parent}: jobs of the last submission are still queued or running: "
            f"{', '.join(busy)}; wait for them (squeue --jobs={','.join(bases)}) "
            f"or cancel them (scancel {' '.join(bases)})"
        )


@contextlib.contextmanager
def _refused(what: str) -> Iterator[None]:
    """sbatch's refusal (a bad partition, a time over the limit) as one RunError."""
    try:
        yield
    except (RuntimeError, ValueError) as err:  # submitit's FailedJobError: sbatch's stderr
        raise RunError(f"submitting {what} failed: {str(err).strip()}") from None


def _link_logs(run: Path, job: Any) -> None:
    """``run/slurm/<job id>.out`` and ``.err``: links to the job's log files."""
    where = run / JOBS_DIR
    for suffix, target in (("out", job.paths.stdout), ("err", job.paths.stderr)):
        link = where / f"{job.job_id}.{suffix}"
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(target, where))


def _submit_runs(
    plan: Plan, launcher: Launcher, folder: Path, executor: Callable[[Path], Any] | None
) -> list[Any]:
    """The unfinished runs of ``plan`` as one batch (a job array), their logs linked."""
    if executor is None:
        ex = _slurm_executor(folder, _run_parameters(launcher, plan.spec.name))
    else:
        ex = executor(folder)
    gpus = launcher.gpus_per_run
    run_jobs = [
        RunJob(r.name, r.config, p.absolute(), train_command(plan.spec, r), gpus)
        for r, p, _ in plan.todo()
    ]
    for job in run_jobs:
        (job.path / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    with _refused("the runs' jobs"), ex.batch():
        jobs = [ex.submit(job) for job in run_jobs]
    for job, sub in zip(run_jobs, jobs):
        _link_logs(job.path, sub)
    return jobs


@dataclass(frozen=True)
class Submission:
    """What :func:`submit` sent: the runs' jobs and the analysis job."""

    out: Path  # the experiment folder
    runs: tuple[str, ...]  # the runs submitted, one job each (in ``jobs``)
    jobs: tuple[Any, ...]  # submitit Jobs
    analysis: Any | None  # the analysis job (SLURM only), after ``jobs``
    finished: int  # runs already finished, not submitted


def submit(
    plan: Plan,
    launcher: Launcher,
    *,
    lock_folder: Path | None = None,
    executor: Callable[[Path], Any] | None = None,
) -> Submission:
    """Submit the unfinished runs of ``plan`` (one job each, an array) and the analysis.

    ``executor(folder)``: a configured submitit executor writing to ``folder``
    instead of SLURM (e.g. ``submitit.LocalExecutor``, for tests); then no
    analysis job is submitted: call ``analyze_experiment`` once the jobs end.
    ``lock_folder``: the experiment folder's lock the analysis job takes (default
    ``plan.out``).
    """
    require_submitit()
    todo = plan.todo()
    folder = (plan.out / JOBS_DIR).absolute()
    if executor is None:
        _check_nothing_queued(folder)
    jobs = _submit_runs(plan, launcher, folder, executor) if todo else []
    analysis = None
    try:
        if executor is None:
            after = jobs[0].job_id.split("_")[0] if jobs else None
            params = _analysis_parameters(launcher, plan.spec.name, after)
            ex = _slurm_executor(folder, params)
            lock_at = Path(lock_folder if lock_folder is not None else plan.out).absolute()
            with _refused("the analysis job"):
                analysis = ex.submit(AnalysisJob(plan.spec, plan.out.absolute(), lock_at))
    finally:  # (the runs' jobs are recorded even if the analysis job was refused)
        _record(folder, [r.name for r, _, _ in todo], jobs, analysis)
    return Submission(
        plan.out,
        tuple(r.name for r, _, _ in todo),
        tuple(jobs),
        analysis,
        len(plan.runs) - len(todo),
    )


def _record(folder: Path, names: Sequence[str], jobs: Sequence[Any], analysis: Any) -> None:
    from orient3d.rundir.jsonio import append_jsonl
    from orient3d.rundir.runs import now

    entry = {
        "time": now(),
        "runs": {n: str(j.job_id) for n, j in zip(names, jobs)},
        "analysis": None if analysis is None else str(analysis.job_id),
    }
    folder.mkdir(parents=True, exist_ok=True)
    append_jsonl(folder / RECORD, entry)
