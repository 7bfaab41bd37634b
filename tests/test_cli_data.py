"""`orient3d data preview` end to end on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from orient3d.cli import main


def test_preview_procedural(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sheet.png"
    args = ["data", "preview", "--res", "16", "--n", "18", "--per-class", "2", "--size", "32"]
    rc = main([*args, "--cache-dir", str(tmp_path / "c"), "--out", str(out)])
    assert rc == 0 and out.is_file()
    img = imread(out)
    assert img.shape[0] > 9 * 32 and img.shape[1] >= 8 * 32
    text = capsys.readouterr().out
    assert "trivial stabilizer" in text and "| polycube | 2 |" in text


def test_preview_file_and_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = (np.random.default_rng(0).random((6, 16, 16, 16)) < 0.2).astype(np.uint8)
    np.savez(tmp_path / "g.npz", voxels=g)
    out = tmp_path / "f.png"
    rc = main(
        ["data", "preview", "--source", str(tmp_path / "g.npz"), "--no-cache", "--out", str(out)]
    )
    assert rc == 0 and out.is_file()
    np.save(tmp_path / "bad.npy", g * 3)
    rc = main(
        ["data", "preview", "--source", str(tmp_path / "bad.npy"), "--no-cache", "--out", str(out)]
    )
    assert rc == 2 and "bad.npy" in capsys.readouterr().err
