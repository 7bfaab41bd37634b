"""Training modes: the protocol every mode follows, and the plain modes.

A mode decides what the loss of one step is computed on (:class:`Prepared`) from
the grids the loop shows it. ``single`` shows every object as stored;
``augmented`` has the loop turn each sample by a fresh random element of O;
``search`` (:mod:`orient3d.training.modes.search`) picks each sample's best pose
first. The registry of all modes is :data:`orient3d.training.modes.MODES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.model import VAE

__all__ = ["AugmentedMode", "Mode", "ModeFactory", "ModeSync", "Prepared", "SingleMode"]


@dataclass(frozen=True)
class ModeSync:
    """A mode's state kept in step across ranks (dotted names reach into attributes).

    A mode with state that must agree across ``torchrun`` processes carries one as
    its class attribute ``dist_sync`` (:mod:`orient3d.training.distributed` reads it).
    """

    rows: tuple[str, ...] = ()  # (N, ...) per-object tensors: rows exchanged after each step
    sums: tuple[str, ...] = ()  # per-epoch counters (tensors or numbers): summed before end_epoch
    cats: tuple[str, ...] = ()  # per-epoch lists of tensors: joined before end_epoch
    # the mode draws its random numbers for the whole global batch from the shared
    # generator and keeps its own rows (its ``rank``, ``world`` attributes): N processes
    # then draw what one process draws. Otherwise it gets a generator of its own per rank.
    shared_draws: bool = False


@dataclass
class Prepared:
    x: Tensor  # (B*K, D, D, D) float grids the loss is computed on (in the model's frame)
    weight: Tensor | None  # (B*K,) per-row weights; None means K == 1 and weight 1
    choice: Tensor | None  # (B,) chosen element r per sample, or None


class Mode(Protocol):
    rotate_inputs: bool  # the loop shows each sample turned by a fresh random element g of O

    def start_epoch(self, model: VAE, epoch: int) -> None: ...
    def prepare(
        self, model: VAE, x_shown: Tensor, g: Tensor, idx: Tensor, epoch: int
    ) -> Prepared: ...
    def end_epoch(self, epoch: int) -> dict[str, Any]: ...
    def canonicalize(self, model: VAE, x_shown: Tensor) -> Tensor | None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SingleMode:
    """Every object in its stored (canonical) pose."""

    rotate_inputs = False

    def __init__(self, cfg: Config, train: VoxelSet, generator: torch.Generator) -> None:
        pass

    def start_epoch(self, model: VAE, epoch: int) -> None:
        pass

    def prepare(self, model: VAE, x_shown: Tensor, g: Tensor, idx: Tensor, epoch: int) -> Prepared:
        return Prepared(x_shown, None, None)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {}

    def canonicalize(self, model: VAE, x_shown: Tensor) -> Tensor | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class AugmentedMode(SingleMode):
    """A fresh random rotation of O per sample per step: the model learns all 24 poses."""

    rotate_inputs = True


ModeFactory = Callable[[Config, VoxelSet, torch.Generator], Mode]
