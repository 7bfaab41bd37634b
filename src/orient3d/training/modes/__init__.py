"""Training modes: what one step's loss is computed on (see :mod:`.base` for the protocol).

``single`` and ``augmented`` (:mod:`.base`), ``search`` (:mod:`.search`: the best of
the 24 cube rotations per sample) and ``continuous`` (:mod:`.continuous`: a general
pose per sample). :data:`MODES` maps ``train.mode`` to a factory
``(cfg, train_set, generator) -> Mode``.
"""

from __future__ import annotations

from orient3d.errors import ConfigError
from orient3d.training.modes.base import AugmentedMode, Mode, ModeFactory, Prepared, SingleMode
from orient3d.training.modes.continuous import ContinuousMode
from orient3d.training.modes.search import SearchMode

__all__ = [
    "MODES",
    "AugmentedMode",
    "ContinuousMode",
    "Mode",
    "ModeFactory",
    "Prepared",
    "SearchMode",
    "SingleMode",
    "get_mode",
]

MODES: dict[str, ModeFactory] = {
    "single": SingleMode,
    "augmented": AugmentedMode,
    "search": SearchMode,
    "continuous": ContinuousMode,
}


def get_mode(name: str) -> ModeFactory:
    """The factory of mode ``name`` from :data:`MODES`."""
    if name not in MODES:
        raise ConfigError(f"train.mode: {name!r} is not one of {', '.join(MODES)}")
    return MODES[name]
