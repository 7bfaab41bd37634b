"""The SLURM path through submitit's local executor: jobs preempted or killed halfway.

The runs are submitted as the SLURM launcher submits them, but to
``submitit.LocalExecutor``, whose jobs are processes on this machine. One job is
preempted (SIGUSR2, what SLURM sends before a job's end), the other killed
(SIGKILL), each right after its run's first checkpoint. The preempted job
requeues itself and resumes; submitting again sends the killed run alone, which
resumes too. The summary must equal that of the same experiment run locally.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orient3d.experiments import (
    ExperimentSpec,
    analyze_experiment,
    expand_runs,
    run_experiment,
    spec_from_dict,
)
from orient3d.experiments.core import plan_experiment
from orient3d.experiments.launcher import Launcher
from orient3d.experiments.slurm import RunJob, submit

submitit = pytest.importorskip("submitit")

pytestmark = pytest.mark.slow  # four tiny trainings in job processes that import torch

TIMEOUT_S = 300.0


def _spec(cache: Path) -> ExperimentSpec:
    # 96 objects, 4 epochs: the three epochs after the first checkpoint take long enough
    # (a second or more) that a signal sent at that checkpoint lands before the run ends.
    base = {
        "data": {"n_train": 96, "n_test": 8, "cache_dir": str(cache)},
        "model": {"width": 4},
        "train": {"epochs": 4, "batch_size": 16, "progress": False, "threads": 1, "device": "cpu"},
    }
    grid = {"model.latent": [4], "train.mode": ["single", "augmented"]}
    return spec_from_dict(
        {"name": "t", "kind": "single_vs_all", "seeds": [0], "base": base, "grid": grid}
    )


def _local_executor(folder: Path) -> Any:
    executor = submitit.LocalExecutor(folder)
    executor.update_parameters(timeout_min=60)
    return executor


def _child(pid: int) -> int | None:
    """The process a local job's controller started (the job's task), if running."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # (state, ppid, ...)
            return int(stat.parent.name)
    return None


def _signal_at_first_checkpoint(jobs: list[Any], runs: list[Path], sigs: list[int]) -> None:
    """Send ``sigs[i]`` to job ``i``'s task as soon as run ``i`` has its first checkpoint."""
    tasks: dict[int, int | None] = dict.fromkeys(range(len(jobs)))
    deadline = time.monotonic() + TIMEOUT_S
    while tasks:
        for i in sorted(tasks):
            if tasks[i] is None:  # found before the checkpoint, not in the race after it
                tasks[i] = _child(int(jobs[i].job_id))
            elif (runs[i] / "checkpoints" / "last.pt").is_file():
                os.kill(tasks.pop(i), sigs[i])  # type: ignore[arg-type]
                continue
            assert not jobs[i].done(), f"job {i} ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def _wait(jobs: list[Any]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not all(j.done() for j in jobs):
        assert time.monotonic() < deadline, "jobs did not end"
        time.sleep(0.2)


def _science(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "seconds"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_jobs_preempted_or_killed_resume_to_the_local_summary(tmp_path: Path) -> None:
    spec = _spec(tmp_path / "cache")
    runs = expand_runs(spec)
    out = tmp_path / "jobs"
    how = Launcher("slurm", gpus_per_run=0)
    sub = submit(plan_experiment(spec, out), how, executor=_local_executor)
    assert sub.runs == tuple(r.name for r in runs) and sub.analysis is None
    folders = [out / "runs" / r.name for r in runs]
    _signal_at_first_checkpoint(list(sub.jobs), folders, [signal.SIGUSR2, signal.SIGKILL])
    _wait(list(sub.jobs))

    preempted, killed = folders
    assert sub.jobs[0].result() == "resume"  # requeued by itself, resumed and finished
    assert (preempted / "results.json").is_file()
    assert json.loads((preempted / "meta.json").read_text())["resumed"][0]["epoch"] >= 1
    log = (preempted / "slurm" / f"{sub.jobs[0].job_id}.err").read_text()
    assert "stopped; its requeued job resumes from the last checkpoint" in log
    assert not (killed / "results.json").exists()  # killed halfway
    assert (killed / "checkpoints" / "last.pt").is_file()
    with pytest.raises(submitit.core.utils.UncompletedJobError):  # killed: no result
        sub.jobs[1].result()

    again = submit(plan_experiment(spec, out), how, executor=_local_executor)
    assert again.runs == (runs[1].name,) and again.finished == 1
    assert again.jobs[0].result() == "resume"
    assert json.loads((killed / "meta.json").read_text())["resumed"][0]["epoch"] >= 1

    summary = analyze_experiment(spec, out)
    local = run_experiment(spec, tmp_path / "local")
    assert _science(summary) == _science(local)
    written = [json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "local")]
    assert _science(written[0]) == _science(written[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gloo on the CPU")
def test_a_run_of_two_processes_trains_under_torchrun(tmp_path: Path) -> None:
    """gpus_per_run=2: the job trains its run with torchrun, two processes (gloo here)."""
    spec = _spec(tmp_path / "cache")
    run = expand_runs(spec)[0]
    path = tmp_path / "run"
    (path / "slurm").mkdir(parents=True)
    assert RunJob(run.name, run.config, path, "test", gpus=2)() == "new"
    meta = json.loads((path / "meta.json").read_text())
    assert meta["world_size"] == 2  # rank 0 wrote it
    assert meta["command"].endswith(f"train {path / 'slurm' / 'run.toml'} --out {path} --force")
    assert (path / "results.json").is_file() and (path / "slurm" / "run.toml").is_file()
    assert RunJob(run.name, run.config, path, "test", gpus=2)() == "done"
