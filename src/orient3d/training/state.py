"""Training state: everything a checkpoint holds, how it is built and how it is saved.

:class:`TrainState` bundles the model, optimizer, LR schedule, AMP scaler, the
training mode and the random generators; its ``state_dict`` is a checkpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from orient3d import __version__
from orient3d.config import Config, TrainConfig, to_dict
from orient3d.data import VoxelSet
from orient3d.model import VAE
from orient3d.rundir import runs
from orient3d.training import distributed
from orient3d.training.distributed import Dist
from orient3d.training.modes import Mode, get_mode

__all__ = ["TrainState", "build_state", "save_state"]

log = logging.getLogger(__name__)


_SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainConfig], Any]] = {
    "constant": lambda opt, t: torch.optim.lr_scheduler.LambdaLR(opt, _constant),
    "cosine": lambda opt, t: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs),
    "step": lambda opt, t: torch.optim.lr_scheduler.StepLR(opt, t.lr_step_epochs, gamma=0.5),
}


def _constant(epoch: int) -> float:
    return 1.0


@dataclass
class TrainState:
    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    mode: Mode
    data_gen: torch.Generator  # CPU: batch order, rotations, the mode's draws
    noise_gen: torch.Generator  # on the device: z ~ q(z|x)
    forward: torch.nn.Module  # the step's forward (distributed.ShardForward, in DDP if several)
    dist: Dist = field(default_factory=Dist)  # this rank's place (one process: 0 of 1)
    mode_gen: torch.Generator | None = None  # the mode's draws when per rank (DDP)
    epoch: int = 0  # epochs completed
    best: float = math.inf  # best validation neg ELBO so far
    best_epoch: int = 0
    stale: int = 0  # epochs since the best
    stopped: bool = False  # early stopping ended the run
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "mode": self.mode.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "stopped": self.stopped,
            "world": self.dist.world,  # the number of processes that trained it
            **self.extra,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        self.mode.load_state_dict(s["mode"])
        self.data_gen.set_state(s["data_gen"].cpu())
        self.noise_gen.set_state(s["noise_gen"].cpu())
        self.epoch, self.best, self.best_epoch = s["epoch"], s["best"], s["best_epoch"]
        self.stale, self.stopped = s["stale"], s["stopped"]
        gens = s.get("mode_gens")
        saved_world = s.get("world", len(gens) if gens is not None else None)
        if saved_world is not None and saved_world != self.dist.world:
            self._warn_world_change(int(saved_world))
        elif self.mode_gen is not None and gens is not None:
            self.mode_gen.set_state(gens[self.dist.rank].cpu())

    def _warn_world_change(self, saved_world: int) -> None:
        """A resume on another number of processes goes on, but is no longer exact."""
        if self.dist.main:
            log.warning(
                "resuming a checkpoint of epoch %d trained by %d process(es) with %d: each "
                "process now takes another slice of every batch and the mode's own random "
                "draws restart from other generators (BatchNorm on the CPU also normalizes "
                "over other slices), so the run will not match an uninterrupted one exactly",
                self.epoch,
                saved_world,
                self.dist.world,
            )


def build_state(cfg: Config, train_set: VoxelSet, device: torch.device, dist: Dist) -> TrainState:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = VAE(cfg.model, cfg.data.res)
    model.to(device)
    if cfg.train.channels_last:
        model.use_channels_last()
    t = cfg.train
    # foreach: one kernel per op over all parameters (CPU defaults to a Python loop)
    foreach = True if device.type == "cpu" else None
    opt = torch.optim.Adam(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, foreach=foreach
    )
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    factory = get_mode(t.mode)
    sync = getattr(factory, "dist_sync", None)
    mode_gen = distributed.mode_generator(cfg.seed, dist, data_gen, sync)
    mode = factory(cfg, train_set, mode_gen)
    if sync is not None and sync.shared_draws:  # it keeps this rank's rows of each draw
        mode.rank, mode.world = dist.rank, dist.world  # type: ignore[attr-defined]
    return TrainState(
        model=model,
        optimizer=opt,
        scheduler=_SCHEDULES[t.lr_schedule](opt, t),
        scaler=torch.amp.GradScaler(device.type, enabled=t.precision == "fp16"),
        mode=mode,
        data_gen=data_gen,
        noise_gen=noise_gen,
        forward=distributed.wrap_model(model, dist, device),
        dist=dist,
        mode_gen=None if mode_gen is data_gen else mode_gen,
        extra={"config": to_dict(cfg), "version": __version__},
    )


def save_state(st: TrainState, cfg: Config, out: Path, epoch: int) -> None:
    """Rank 0 writes the checkpoints (with every rank's mode generator); the others wait."""
    gens = st.dist.gather(st.mode_gen.get_state()) if st.mode_gen is not None else None
    if st.dist.main:
        state = st.state_dict() if gens is None else {**st.state_dict(), "mode_gens": gens}
        if st.best_epoch == epoch:
            runs.save_checkpoint(runs.checkpoint_path(out, "best"), state)
        if epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs or st.stopped:
            runs.save_checkpoint(runs.checkpoint_path(out, "last"), state)
    st.dist.barrier()
