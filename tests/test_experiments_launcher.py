"""The SLURM launcher without a cluster: settings, sbatch scripts, jobs and submission.

The submission test puts stand-ins for ``sbatch``, ``srun`` and ``squeue`` on the
PATH: they record the scripts submitit writes and answer with job ids, so the
real submission path runs and its scripts are read back.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from orient3d import cli
from orient3d import config as C
from orient3d.errors import ConfigError, RunError
from orient3d.experiments import analyze_experiment, expand_runs, load_spec, spec_from_dict
from orient3d.experiments.launcher import Launcher, launcher_from, parse_time
from orient3d.experiments.slurm import RunJob, sbatch_script, torchrun_argv
from test_experiments import fake_run, make_single_vs_all, spec_dict

submitit = pytest.importorskip("submitit")

# ------------------------------------------------------------------------- settings


def test_toml_table_then_command_line() -> None:
    table = {
        "kind": "slurm",
        "partition": "gpu",
        "time": "1-02:03:04",
        "gpus-per-run": 2,  # "-" and "_" both name the key
        "cpus_per_run": 8,
        "array_parallelism": 4,
        "setup": ["module load cuda"],
        "sbatch": {"account": "proj", "mem": "32G"},
    }
    got = launcher_from(table)
    assert got == Launcher(
        kind="slurm",
        partition="gpu",
        time_min=math.ceil((86400 + 2 * 3600 + 3 * 60 + 4) / 60),
        gpus_per_run=2,
        cpus_per_run=8,
        array_parallelism=4,
        setup=("module load cuda",),
        sbatch=(("account", "proj"), ("mem", "32G")),
    )
    cli_values = {"partition": "big", "gpus_per_run": "4", "time": "30", "cpus_per_run": None}
    over = launcher_from(table, cli_values, kind="local")
    assert (over.kind, over.partition, over.gpus_per_run, over.time_min) == ("local", "big", 4, 30)
    assert over.cpus_per_run == 8  # not given on the command line: the table's
    assert launcher_from() == Launcher()


@pytest.mark.parametrize(
    ("text", "minutes"),
    [(90, 90), ("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590)],
)
def test_slurm_time_formats(text: Any, minutes: int) -> None:
    assert parse_time(text, "time") == minutes


@pytest.mark.parametrize(
    ("table", "cli_values", "needle"),
    [
        ({"partiton": "gpu"}, {}, "partiton"),
        ({"gpus_per_run": -1}, {}, "gpus_per_run"),
        ({"gpus_per_run": "2"}, {}, "gpus_per_run"),  # a TOML string is not a number
        ({"kind": "pbs"}, {}, "pbs"),
        ({"time": "soon"}, {}, "time"),
        ({"time": 0}, {}, "time"),
        ({"sbatch": {"mem": [1]}}, {}, "sbatch.mem"),
        ({"setup": "module load cuda"}, {}, "setup"),
        ({}, {"cpus_per_run": "many"}, "--slurm.cpus-per-run"),
        ({}, {"array_parallelism": "0"}, "--slurm.array-parallelism"),
        ({}, {"time": "1:2:3:4"}, "--slurm.time"),
    ],
)
def test_bad_settings_name_the_key(
    table: dict[str, Any], cli_values: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        launcher_from(table, cli_values)


def test_launcher_table_checked_with_the_spec(tmp_path: Path) -> None:
    toml = tmp_path / "e.toml"
    toml.write_text('name = "t"\nkind = "single_vs_all"\n[launcher]\npartiton = "gpu"\n')
    with pytest.raises(ConfigError, match=rf"{toml}.*partiton"):
        load_spec(toml)
    toml.write_text('name = "t"\nkind = "single_vs_all"\n[launcher]\nkind = "slurm"\n')
    assert load_spec(toml).launcher == {"kind": "slurm"}


def _config_file(tmp_path: Path, launcher: str = "") -> str:
    toml = tmp_path / "e.toml"
    base = '[base.data]\nn_train = 8\nn_test = 4\n[grid]\n"train.mode" = ["single"]\n'
    toml.write_text(f'name = "t"\nkind = "single_vs_all"\nseeds = [0]\n{base}{launcher}')
    return str(toml)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--slurm.partition=gpu"], "--slurm.partition: applies to --launcher slurm, not local"),
        (["--launcher", "slurm", "--slurm.nodes=2"], "--slurm.nodes: unknown option"),
        (["--launcher", "slurm", "--slurm.gpus-per-run=two"], "--slurm.gpus-per-run: 'two'"),
    ],
)
def test_cli_option_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    out = tmp_path / "exp"
    rc = cli.main(["experiment", _config_file(tmp_path), "--out", str(out), *extra])
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_without_submitit_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit: ImportError
    out = tmp_path / "exp"
    config = _config_file(tmp_path, '[launcher]\nkind = "slurm"\n')
    assert cli.main(["experiment", config, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs submitit" in err and "pip install" in err and "[slurm]" in err
    assert not out.exists()


# -------------------------------------------------------------------- scripts, jobs


def _lines(script: str) -> set[str]:
    return set(script.splitlines())


def test_sbatch_script_of_an_array(tmp_path: Path) -> None:
    how = Launcher("slurm", "gpu", 90, gpus_per_run=2, cpus_per_run=8, array_parallelism=3)
    folder = tmp_path / "exp" / "slurm"
    lines = _lines(sbatch_script(how, folder, runs=5, name="svsa"))
    assert {
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --array=0-4%3",  # five runs, three at a time
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --job-name=orient3d-svsa",
        f"#SBATCH --output={folder}/%A_%a_0_log.out",
        f"#SBATCH --error={folder}/%A_%a_0_log.err",
    } <= lines
    command = [x for x in lines if "-m submitit.core._submit" in x]
    assert len(command) == 1 and command[0].endswith(f"-m submitit.core._submit {folder}")
    assert sys.executable in command[0] and command[0].startswith("srun ")
    # more parallelism than runs: all at once; no partition given: the cluster's
    two = _lines(sbatch_script(Launcher("slurm", gpus_per_run=0), folder, runs=2, name="x"))
    assert "#SBATCH --array=0-1%2" in two
    assert not any(x.startswith(("#SBATCH --partition", "#SBATCH --gpus")) for x in two)
    one = sbatch_script(Launcher("slurm"), folder, runs=1, name="x")
    assert "--array" not in one and f"#SBATCH --output={folder}/%j_0_log.out" in _lines(one)


def test_torchrun_command(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", tmp_path / "run" / "slurm" / "run.toml"
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    head += ["-m", "orient3d", "train"]
    assert torchrun_argv(run, 4, "new", cfg) == [*head, str(cfg), "--out", str(run), "--force"]
    assert torchrun_argv(run, 4, "resume", None) == [*head, "--resume", str(run)]


def _runs(seeds: list[int] | None = None) -> list[Any]:
    d = spec_dict(grid={"train.mode": ["single", "augmented"]}, seeds=seeds or [0])
    return expand_runs(spec_from_dict(d))


def test_run_job_keeps_the_run_folder_safety(tmp_path: Path) -> None:
    run = _runs()[0]
    path = tmp_path / run.name
    other = C.apply_overrides(run.config, ["model.latent=3"])
    fake_run(path, other, checkpoint=True)  # an interrupted run of another config
    with pytest.raises(RunError, match=r"different config \(model\.latent\)"):
        RunJob(run.name, run.config, path, "test")()
    done = tmp_path / "done"
    fake_run(done, run.config, {"test_mse": 0.1})
    assert RunJob(run.name, run.config, done, "test")() == "done"  # nothing to train


# ---------------------------------------------------------------------- analyze-only


def test_analyze_only_names_unfinished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_from_dict(spec_dict())
    make_single_vs_all(tmp_path)
    runs = expand_runs(spec)
    (tmp_path / "runs" / runs[3].name / "results.json").unlink()
    (tmp_path / "runs" / runs[5].name / "checkpoints").mkdir()
    (tmp_path / "runs" / runs[5].name / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / "runs" / runs[5].name / "results.json").unlink()
    with pytest.raises(RunError) as err:
        analyze_experiment(spec, tmp_path)
    msg = str(err.value)
    assert f"{runs[3].name} (new)" in msg and f"{runs[5].name} (resume)" in msg
    assert "2 of 12 runs" in msg and not (tmp_path / "summary.json").exists()


def test_analyze_only_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "e.toml"
    d = spec_dict()
    lines = [f'name = "{d["name"]}"', f'kind = "{d["kind"]}"', "seeds = [0, 1, 2]"]
    lines += ["[base.data]", "res = 16", "n_train = 8", "n_test = 4", "[base.train]", "epochs = 2"]
    lines += ["[grid]", '"model.latent" = [2, 8]', '"train.mode" = ["single", "augmented"]']
    toml.write_text("\n".join(lines) + "\n")
    out = tmp_path / "exp"
    make_single_vs_all(out)
    assert cli.main(["experiment", str(toml), "--out", str(out), "--analyze-only"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["cells"]) == 4 and (out / "report.html").is_file()
    assert "report:" in capsys.readouterr().out


# ------------------------------------------------------------------ a pretend cluster


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sbatch`` (keeps each script as N.sh, answers job N), ``srun``, ``squeue``
    (prints the file ``queue``) on the PATH; returns the folder they write."""
    bin_dir, cap = tmp_path / "bin", tmp_path / "cluster"
    bin_dir.mkdir()
    cap.mkdir()
    scripts = {
        "sbatch": 'n=$(( $(cat "$CAP/n" 2>/dev/null || echo 100) + 1 ))\n'
        'echo $n > "$CAP/n"\ncp "$1" "$CAP/$n.sh"\necho "Submitted batch job $n"\n',
        "srun": "exit 0\n",
        "squeue": 'cat "$CAP/queue" 2>/dev/null\n',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setenv("CAP", str(cap))
    return cap


def test_submission_to_a_pretend_cluster(
    tmp_path: Path, cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, '[launcher]\nkind = "slurm"\npartition = "cpu"\n')
    config_text = Path(config).read_text().replace('["single"]', '["single", "augmented"]')
    Path(config).write_text(config_text.replace("seeds = [0]", "seeds = [0, 1]"))
    out = tmp_path / "exp"
    runs = expand_runs(load_spec(config))
    fake_run(out / "runs" / runs[0].name, runs[0].config, {"test_mse": 0.1})  # finished
    argv = ["experiment", config, "--out", str(out), "--slurm.array-parallelism=2"]
    assert cli.main([*argv, "--slurm.gpus-per-run=0"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 3 runs as SLURM job 101 (1 other runs had finished)" in printed
    assert "squeue --jobs=101,102" in printed and "--analyze-only" in printed
    array, analysis = (_lines((cluster / f"{n}.sh").read_text()) for n in (101, 102))
    assert {"#SBATCH --array=0-2%2", "#SBATCH --partition=cpu"} <= array
    assert "#SBATCH --dependency=afterany:101" in analysis
    assert not any("--array" in x for x in analysis)
    # each array task holds its run, in order; its logs are linked from the run folder
    for i, run in enumerate(runs[1:]):
        pickled = out / "slurm" / f"101_{i}_submitted.pkl"
        job = submitit.helpers.DelayedSubmission.load(pickled).function
        assert isinstance(job, RunJob) and job.name == run.name and job.config == run.config
        link = out / "runs" / run.name / "slurm" / f"101_{i}.out"
        assert (
            link.is_symlink() and link.resolve() == out.resolve() / "slurm" / f"101_{i}_0_log.out"
        )
    record = json.loads((out / "slurm" / "submissions.jsonl").read_text().splitlines()[-1])
    assert record["runs"] == {r.name: f"101_{i}" for i, r in enumerate(runs[1:])}
    assert record["analysis"] == "102"
    # again while the array is queued: refused, naming the jobs
    (cluster / "queue").write_text("101\n")
    assert cli.main(argv) == 2
    assert "still queued or running" in capsys.readouterr().err
    # once it has left the queue (with one run finished meanwhile): the rest only
    (cluster / "queue").write_text("77\n")
    fake_run(out / "runs" / runs[1].name, runs[1].config, {"test_mse": 0.1})
    assert cli.main(argv) == 0
    assert "submitted 2 runs as SLURM job 103" in capsys.readouterr().out
    assert "#SBATCH --array=0-1%2" in _lines((cluster / "103.sh").read_text())
    assert "#SBATCH --gpus-per-node=1" in _lines((cluster / "103.sh").read_text())  # default
    # every run finished: the analysis job alone, with nothing to wait for
    for run in runs[2:]:
        fake_run(out / "runs" / run.name, run.config, {"test_mse": 0.1})
    (cluster / "queue").write_text("")
    assert cli.main(argv) == 0
    assert "all 4 runs have finished" in capsys.readouterr().out
    last = (cluster / "n").read_text().strip()
    assert last == "105" and not any(
        "--dependency" in x for x in _lines((cluster / "105.sh").read_text())
    )


def test_refusals_of_the_cluster_are_one_line(
    tmp_path: Path, cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, '[launcher]\nkind = "slurm"\n')
    argv = ["experiment", config, "--out", str(tmp_path / "exp")]
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text(
        '#!/bin/bash\necho "sbatch: error: invalid partition specified" >&2\nexit 1\n'
    )
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "submitting the runs' jobs failed: sbatch: error: invalid partition specified" in err
    (tmp_path / "bin" / "srun").unlink()  # not a SLURM machine
    assert cli.main(argv) == 2
    assert 'Could not detect "srun"' in capsys.readouterr().err


def test_analysis_job_writes_the_summary_and_lets_the_lock_go(tmp_path: Path) -> None:
    from orient3d.experiments.slurm import AnalysisJob
    from orient3d.rundir import lock

    spec = spec_from_dict(spec_dict())
    make_single_vs_all(tmp_path)
    assert AnalysisJob(spec, tmp_path, tmp_path)() == str(tmp_path / "summary.json")
    assert len(json.loads((tmp_path / "summary.json").read_text())["cells"]) == 4
    assert not lock.held(tmp_path)
