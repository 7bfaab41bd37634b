"""The voxel renderer: shapes, content, orientation cues, contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orient3d import groups, render
from orient3d.data import generate


@pytest.fixture(scope="module")
def objs():
    return generate(9, 32, np.random.default_rng(0))


def _object_pixels(img: np.ndarray) -> int:
    """Pixels that are neither background white nor the floor/shadow greys."""
    grey = (img.max(-1).astype(int) - img.min(-1)) <= 8
    return int((~grey).sum())


def test_render_shape_and_content(objs) -> None:
    img = render.render(objs.voxels[0])
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert _object_pixels(img) > 200
    empty = render.render(np.zeros((32, 32, 32), np.uint8))
    assert _object_pixels(empty) == 0 and (empty < 250).any()  # floor only


def test_render_accepts_probabilities_and_batches(objs) -> None:
    probs = objs.voxels[:3].float() * 0.9
    batch = render.render_batch(probs, size=48)
    assert batch.shape == (3, 48, 48, 3)
    assert np.array_equal(batch[1], render.render(objs.voxels[1].numpy(), size=48))


def test_orientation_is_visible(objs) -> None:
    O = groups.cube_group()
    x = objs.voxels[0]
    images = {render.render(groups.rotate(x, O, g)).tobytes() for g in range(24)}
    assert len(images) == 24
    slab = torch.zeros(16, 16, 16, dtype=torch.uint8)
    slab[2:14, 2:14, 0:2] = 1
    up = slab.flip(-1)
    assert not np.array_equal(render.render(slab), render.render(up))
    # front faces (-y) are tinted orange: a wall facing front shows much more orange
    # than the same wall turned to face the side
    wall = torch.zeros_like(slab)
    wall[2:14, 0:2, 0:12] = 1
    side = groups.rotate(wall, O, O.index_of(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])))

    def orange(im: np.ndarray) -> int:
        return int(((im[..., 0].astype(int) - im[..., 2]) > 60).sum())

    assert orange(render.render(wall)) > 3 * orange(render.render(side)) + 100


def test_sheet_shape_labels_and_png(objs, tmp_path: Path) -> None:
    sheet = render.render_sheet(objs.voxels, ncols=4, size=40, pad=2)
    assert sheet.shape == (3 * 42, 4 * 42, 3)
    labelled = render.render_sheet(objs.voxels, ncols=4, labels=list(objs.ids), size=40, pad=2)
    assert labelled.shape == sheet.shape and not np.array_equal(labelled, sheet)
    path = render.save_png(labelled, tmp_path / "sub" / "s.png")
    from matplotlib.image import imread

    assert imread(path).shape[:2] == sheet.shape[:2]


def test_sheet_of_64_tiles_each_object_in_place() -> None:
    """The batched sheet equals each grid rendered alone, tile by tile, on white."""
    vs = generate(64, 32, np.random.default_rng(1))
    sheet = render.render_sheet(vs.voxels, ncols=8)
    assert sheet.shape == (8 * 98, 8 * 98, 3)
    white = np.ones(sheet.shape[:2], bool)
    for k in range(64):
        r, c = divmod(k, 8)
        tile = sheet[r * 98 : r * 98 + 96, c * 98 : c * 98 + 96]
        assert np.array_equal(tile, render.render(vs.voxels[k])), k
        white[r * 98 : r * 98 + 96, c * 98 : c * 98 + 96] = False
    assert (sheet[white] == 255).all()  # the 2-pixel gaps between tiles
