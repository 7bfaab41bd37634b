"""Train several variants of one configuration side by side, epoch by epoch.

Every variant starts from the same weights (``torch.manual_seed(cfg.seed)``),
the same data order and the same rotations, and runs the training loop's step
(mode ``prepare``, per-sample negative ELBO, optional soft weights) with its own
timing, so that epoch-time ratios compare like with like on a noisy machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from orient3d.config import Config, apply_overrides
from orient3d.data import VoxelSet
from orient3d.geometry.groups import cube_group, rotate
from orient3d.model import VAE
from orient3d.training.modes import get_mode

O = cube_group()


@dataclass
class Run:
    name: str
    cfg: Config
    model: VAE
    opt: torch.optim.Optimizer
    mode: Any
    data_gen: torch.Generator
    noise_gen: torch.Generator
    seconds: list[float] = field(default_factory=list)  # wall time of each epoch
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time of each epoch (process)
    mse: list[float] = field(default_factory=list)  # test MSE after each epoch, if measured
    extras: list[dict[str, Any]] = field(default_factory=list)  # mode.end_epoch() records


def make_run(name: str, base: list[str], overrides: list[str], epochs: int, train: VoxelSet) -> Run:
    """A variant: ``base`` then ``overrides`` on the default config."""
    cfg = apply_overrides(Config(), [*base, f"train.epochs={epochs}", *overrides])
    torch.manual_seed(cfg.seed)
    model = VAE(cfg.model, cfg.data.res).use_channels_last()
    # foreach, as the training loop has it on CPU (one kernel per op over all parameters)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, foreach=True)
    mode = get_mode(cfg.train.mode)(cfg, train, torch.Generator().manual_seed(cfg.seed + 7))
    gens = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)
    return Run(name, cfg, model, opt, mode, *gens)


def train_epoch(run: Run, voxels: torch.Tensor, epoch: int, max_steps: int = 0) -> float:
    """One epoch of the training step; returns its wall time (evaluation excluded)."""
    run.model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    run.mode.start_epoch(run.model, epoch)
    n, bs = voxels.shape[0], run.cfg.train.batch_size
    perm = torch.randperm(n, generator=run.data_gen)
    for step, s in enumerate(range(0, n, bs)):
        if max_steps and step >= max_steps:
            break
        idx = perm[s : s + bs]
        g = torch.zeros(idx.shape[0], dtype=torch.long)
        if run.mode.rotate_inputs:
            g = torch.randint(len(O), (idx.shape[0],), generator=run.data_gen)
        x_shown = rotate(voxels[idx], O, g).float()  # (B, D, D, D)
        prep = run.mode.prepare(run.model, x_shown, g, idx, epoch)
        out = run.model(prep.x, generator=run.noise_gen)
        w = prep.weight
        loss = out.neg_elbo.mean() if w is None else (w * out.neg_elbo).sum() / idx.shape[0]
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
    seconds = time.perf_counter() - t0
    run.cpu_seconds.append(time.process_time() - c0)
    run.extras.append(run.mode.end_epoch(epoch))
    return seconds
