"""Continuous pose estimation's options and method names (no torch: the command
line's arguments read them). The methods are in :mod:`orient3d.search.continuous`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METHOD_NAMES", "PoseOptions"]

# the keys of orient3d.search.continuous.METHODS, in order
METHOD_NAMES = ("gradient", "cube-start", "grid-refine")


@dataclass(frozen=True)
class PoseOptions:
    steps: int = 60  # gradient steps (Adam) of the final refinement
    lr: float = 0.03  # Adam learning rate on the 6D parameters
    top_k: int = 8  # grid-refine: rotations kept per object after each level
    levels: int = 2  # grid-refine: subdivision rounds after the coarse grid
    grid_level: int = 1  # grid-refine: level of the coarse SO(3) grid (96 rotations)
    chunk: int = 256  # grids per forward pass when scoring candidates
    # grid-refine: then restart from the `cosets` best of the 24 cube-group turns R·M of
    # the pose found (the same subdivision rounds and gradient) and keep the better of
    # the two; 0: off. Most failures of the plain search are such turns (90° or 180°).
    cosets: int = 4
