"""The module paths from before the package was regrouped still import, with their names."""

from __future__ import annotations

import importlib

import pytest
import torch

MOVED = {
    "groups": "geometry.groups",
    "so3": "geometry.so3",
    "transforms": "geometry.transforms",
    "stats": "metrics.stats",
    "runs": "rundir.runs",
    "lock": "rundir.lock",
    "runcheck": "rundir.runcheck",
    "evaluate": "evaluation.protocols",
    "recover": "evaluation.recovery",
    "pose_search": "search.poses",
    "search_mode": "training.modes.search",
    "continuous_mode": "training.modes.continuous",
    "modes": "training.modes",
    "prior": "training.prior",
    "distributed": "training.distributed",
    "train": "training.loop",
    "figures": "report.figures",
    "render": "report.render",
    "report_parts.html": "report.html",
    "report_parts.plots": "report.plots",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_moved_module(old: str) -> None:
    new = importlib.import_module(f"orient3d.{MOVED[old]}")
    assert importlib.import_module(f"orient3d.{old}") is new


def test_old_names_of_split_and_renamed_modules() -> None:
    from orient3d import pose, search, search_mode
    from orient3d.data import load_data
    from orient3d.evaluation import continuous
    from orient3d.report import rundata
    from orient3d.report_parts import rundata as old_rundata
    from orient3d.search import continuous as estimation
    from orient3d.train import load_data as old_load_data
    from orient3d.training.modes.search import SearchMode

    for name in pose.__all__:
        assert getattr(pose, name) is getattr(
            estimation if hasattr(estimation, name) else continuous, name
        )
    # The training mode moved above search; its old module path names it, search does not.
    assert search_mode.SearchMode is SearchMode
    assert not hasattr(search, "SearchMode")
    assert {"canonical_pose", "canonicalize", "choose", "score_orientations"} <= set(dir(search))
    assert old_rundata.load_run is rundata.read_run
    assert old_load_data is load_data
    from orient3d.report import build_report, write_report  # noqa: F401


def test_stable_public_names() -> None:
    from orient3d import groups

    O, Oh = groups.cube_group(), groups.cube_group(reflections=True)
    assert O.matrices.shape == (24, 3, 3) and Oh.matrices.shape == (48, 3, 3)
    x = torch.zeros(2, 4, 4, 4)
    x[:, 0, 0, 0] = 1
    assert groups.orbit(x, O).shape == (2, 24, 4, 4, 4)
    assert torch.equal(groups.rotate(x, O, 0), x)
    assert 0 in groups.stabilizer(x[0], O).tolist()


def test_every_subcommand_is_listed() -> None:
    from orient3d.cli import COMMANDS, build_parser

    help_text = build_parser().format_help()
    assert all(name in help_text for name in COMMANDS)


def test_a_subcommand_that_does_not_import_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orient3d import cli

    monkeypatch.setitem(cli.COMMANDS, "broken", "orient3d.cli.no_such_command")
    with pytest.raises(
        ImportError, match="orient3d broken: cannot import orient3d.cli.no_such_command"
    ):
        cli.build_parser()
