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

from typing import TYPE_CHECKING

from orient3d.lazy import homes, lazy_names

if TYPE_CHECKING:
    from orient3d.search.discrete import (
        Choice,
        Precision,
        canonical_pose,
        canonicalize,
        choice_from_pose,
        choose,
        score_and_encode,
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
    "score_and_encode",
    "score_orientations",
    "scoring_context",
]

# The names above load with orient3d.search.discrete on first use (it imports torch;
# orient3d.search.options does not).
__getattr__, __dir__ = lazy_names(__name__, homes("orient3d.search.discrete", __all__))
