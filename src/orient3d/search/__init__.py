"""Orientation search: score candidate poses with a trained VAE and choose the best.

- :mod:`.discrete`: every element of a finite group (the 24 cube rotations) scored
  exactly in one pass, then a hard or soft choice;
- :mod:`.poses`: the coarse-to-fine search over general poses (SO(3) grid → top-K →
  subdivide, with optional shifts and scales), the one such implementation;
- :mod:`.continuous`: continuous pose estimation (gradient, cube starts, grid +
  gradient refinement) built on :mod:`.poses`.

The package namespace keeps the names of the former ``orient3d.search`` module,
but for the training mode ``SearchMode``: it lives above search, in
:mod:`orient3d.training.modes.search` (its old module path ``orient3d.search_mode``
still imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orient3d.search.discrete import (
        Choice,
        Precision,
        canonical_pose,
        canonicalize,
        choice_from_pose,
        choose,
        score_orientations,
        scoring_context,
    )

__all__ = [
    "Choice",
    "Precision",
    "canonical_pose",
    "canonicalize",
    "choice_from_pose",
    "choose",
    "score_orientations",
    "scoring_context",
]


def __getattr__(name: str) -> Any:
    # The names above load with orient3d.search.discrete on first use (it imports
    # torch; orient3d.search.options does not).
    if name in __all__:
        return getattr(importlib.import_module("orient3d.search.discrete"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
