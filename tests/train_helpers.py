"""Tiny data and configs for the training tests (no dependency on orient3d.data loaders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from orient3d import groups, runs
from orient3d.config import Config, apply_overrides
from orient3d.data import VoxelSet

TINY = (
    "data.res=16",
    "data.n_train=24",
    "data.n_test=8",
    "model.width=4",
    "model.latent=4",
    "train.epochs=2",
    "train.batch_size=8",
    "train.eval_batch_size=8",
    "train.threads=1",
    "train.progress=false",
)


def tiny_config(*overrides: str) -> Config:
    """A config that trains in about a second on one core."""
    return apply_overrides(Config(), [*TINY, *overrides])


def random_polycubes(n: int, res: int = 16, seed: int = 0, source: str = "random") -> VoxelSet:
    """``n`` random unions of 3-6 boxes on a ``res``³ grid, with their stabilizers."""
    gen = torch.Generator().manual_seed(seed)
    vox = torch.zeros(n, res, res, res, dtype=torch.uint8)
    for i in range(n):
        k = int(torch.randint(3, 7, (1,), generator=gen))
        for _ in range(k):
            lo = torch.randint(0, res - 4, (3,), generator=gen)
            size = torch.randint(2, res // 2, (3,), generator=gen)
            hi = torch.minimum(lo + size, torch.tensor(res))
            vox[i, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return VoxelSet(
        voxels=vox,
        labels=torch.zeros(n, dtype=torch.long),
        class_names=("blob",),
        ids=tuple(f"{source}-{i}" for i in range(n)),
        stabilizers=groups.stabilizer_mask(vox, groups.cube_group()),
        source=source,
    )


def tiny_data(cfg: Config) -> tuple[VoxelSet, VoxelSet]:
    d = cfg.data
    return (
        random_polycubes(d.n_train, d.res, seed=cfg.seed, source="train"),
        random_polycubes(d.n_test, d.res, seed=cfg.seed + 1, source="test"),
    )


TIMING = ("seconds", "train_seconds", "eval_seconds", "samples_per_s")


def metric_values(run: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl records without their timing fields (which never repeat)."""
    return [
        {k: v for k, v in r.items() if k not in TIMING}
        for r in runs.read_jsonl(run / "metrics.jsonl")
    ]


def interrupted_fit(
    cfg: Config, data: tuple[VoxelSet, VoxelSet], out: Path, epoch: int, step: int
) -> None:
    """Train into ``out`` and stop at ``step`` of ``epoch`` as Ctrl-C would (then resume it)."""
    from orient3d.training.loop import fit

    def stop(e: int, s: int, steps: int, loss: float, speed: float) -> None:
        if (e, s) == (epoch, step):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, *data, out, progress=stop)


def fit_stored_pose(model_cfg: Any, res: int, x: torch.Tensor, steps: int) -> Any:
    """A VAE (seed 0) fitted by Adam (lr 5e-3) to grids ``x (B, D, D, D)`` in their stored
    pose only, on 1 thread (tiny convs run faster that way on a shared machine)."""
    from orient3d.model import VAE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = VAE(model_cfg, res)
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        for _ in range(steps):
            loss = model(x.float()).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model
