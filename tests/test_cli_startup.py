"""The command line answers help and argument errors without importing torch.

Each case runs in a fresh interpreter and reports which heavy libraries were
imported by the time ``orient3d.cli.main`` returned or exited; no timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orient3d.cli import COMMANDS

HEAVY = ("torch", "numpy", "scipy", "matplotlib")

_PROBE = """
import json, sys
%s
from orient3d.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
"""


def _run(argv: list[str], cwd: Path, before: str = "") -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE % (before, HEAVY), json.dumps(argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


CASES = [
    ["--help"],
    *([name, "--help"] for name in COMMANDS),
    ["data", "preview", "--help"],
    ["no-such-command"],  # argparse: invalid choice
    ["evaluate"],  # a required argument missing
    ["compare"],
    ["recover", "RUN", "--choice", "best"],  # a value outside its choices
    ["train", "--out"],  # an option without its value
    ["data", "preview", "--res", "x", "--out", "a.png"],  # not an int
]


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_help_and_argument_errors_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    res = _run(argv, tmp_path)
    assert res["code"] == (0 if "--help" in argv else 2)
    assert res["heavy"] == [], f"orient3d {' '.join(argv)} imported {res['heavy']}"


def test_config_errors_are_reported_before_torch_loads(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    res = _run(["train", "--out", out, "--train.epochs=many"], tmp_path)
    assert res["code"] == 2 and "torch" not in res["heavy"]
    res = _run(["train", "--out", out, "--train.no_such_key=1"], tmp_path)
    assert res["code"] == 2 and "torch" not in res["heavy"]
    assert not Path(out).exists()


def test_a_wrong_run_folder_is_reported_before_torch_loads(tmp_path: Path) -> None:
    for command in ("evaluate", "recover"):
        res = _run([command, str(tmp_path / "missing_run")], tmp_path)
        assert res["code"] == 2 and "torch" not in res["heavy"]


def test_the_probe_sees_torch_when_it_was_imported(tmp_path: Path) -> None:
    """The checks above can fail: the probe reports torch once something imported it."""
    res = _run(["--help"], tmp_path, before="import torch")
    assert res["code"] == 0 and "torch" in res["heavy"]


def test_a_subcommand_that_cannot_import_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orient3d import cli

    monkeypatch.setitem(cli.COMMANDS, "ghost", "orient3d.cli.no_such_module")
    with pytest.raises(ImportError, match="orient3d ghost: cannot import orient3d.cli.no_such"):
        cli.build_parser()


def test_the_light_names_match_the_heavy_modules() -> None:
    """Names the arguments read without torch are those the code uses."""
    from orient3d.evaluation import names, protocols
    from orient3d.search import continuous, options

    assert tuple(continuous.METHODS) == options.METHOD_NAMES
    assert continuous.PoseOptions is options.PoseOptions
    assert protocols.PROTOCOLS == names.PROTOCOLS
    assert set(names.DEFAULT_PROTOCOL.values()) <= set(names.PROTOCOLS)
