"""Training modes: the protocol every mode follows, and the plain modes.

A mode decides what the loss of one step is computed on (:class:`Prepared`) from
the grids the loop shows it. ``single`` shows every object as stored;
``augmented`` has the loop turn each sample by a fresh random element of O;
``search`` (in :mod:`orient3d.search_mode`) picks each sample's best pose first.
:data:`MODES` maps ``train.mode`` to a factory ``(cfg, train_set, generator) ->
Mode``; modes in other modules are imported on first use by :func:`get_mode`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.errors import ConfigError
from orient3d.model import VAE

__all__ = ["MODES", "AugmentedMode", "Mode", "ModeFactory", "Prepared", "SingleMode", "get_mode"]


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
MODES: dict[str, ModeFactory] = {"single": SingleMode, "augmented": AugmentedMode}
# Modes living in other modules, imported on first use ("module:attribute").
_LAZY_MODES = {
    "search": "orient3d.search:SearchMode",
    "continuous": "orient3d.continuous_mode:ContinuousMode",
}


def get_mode(name: str) -> ModeFactory:
    """The factory of mode ``name`` from :data:`MODES` (importing lazy ones)."""
    if name not in MODES and name in _LAZY_MODES:
        module, attr = _LAZY_MODES[name].split(":")
        try:
            MODES[name] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"train.mode: {name!r} is not available: {err}") from err
    if name not in MODES:
        raise ConfigError(f"train.mode: {name!r} is not one of {', '.join(MODES)}")
    return MODES[name]
