"""An asymmetric L-shaped mesh, its turned copies, and a tiny run trained on its pose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import trimesh

from orient3d.config import Config, apply_overrides, dumps
from orient3d.data.arrays import resample
from orient3d.data.files import voxelize_trimesh
from orient3d.geometry.groups import cube_group
from train_helpers import fit_stored_pose

RES = 16
O = cube_group()


def l_mesh() -> trimesh.Trimesh:
    """Three boxes in an L with a foot: no rotation of O maps it onto itself.

    Every corner is an integer and the largest side is 13 = RES - 3, so the
    voxelizer's lattice falls on the same points in every pose: voxelizing the turned
    mesh gives exactly the turned grid (``test_mesh_and_grid_frames_agree``)."""
    parts = [
        trimesh.creation.box(bounds=[[0, 0, 0], [9, 4, 4]]),
        trimesh.creation.box(bounds=[[0, 0, 4], [4, 4, 13]]),
        trimesh.creation.box(bounds=[[0, 4, 0], [4, 7, 4]]),
    ]
    return trimesh.util.concatenate(parts)


def turned(mesh: trimesh.Trimesh, R: np.ndarray) -> trimesh.Trimesh:
    """``mesh`` turned by ``R`` about the centre of its bounding box."""
    c = mesh.bounds.mean(axis=0)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = c - R @ c
    out = mesh.copy()
    out.apply_transform(T)
    return out


def matrix(g: int) -> np.ndarray:
    return O.matrices[g].double().numpy()


def canonical_grids() -> np.ndarray:
    """The L at 16³, and at 32³ max-pooled to 16³: ``(2, 16, 16, 16)``."""
    mesh = l_mesh()
    fine = voxelize_trimesh(mesh, 2 * RES)[None]
    return np.concatenate([voxelize_trimesh(mesh, RES)[None], resample(fine, RES)])


def tiny_run(path: Path, grids: np.ndarray, steps: int = 60) -> Path:
    """A run folder (config.toml, checkpoints/best.pt) of a tiny VAE fitted to ``grids``
    in their stored pose only (mode single)."""
    cfg = apply_overrides(
        Config(), [f"data.res={RES}", "model.latent=8", "model.width=8", "train.mode=single"]
    )
    model = fit_stored_pose(cfg.model, RES, torch.from_numpy(grids), steps)
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.toml").write_text(dumps(cfg))
    torch.save({"model": model.state_dict(), "epoch": 1}, path / "checkpoints" / "best.pt")
    return path
