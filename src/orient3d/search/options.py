"""Continuous pose estimation's options and method names (no torch: the command
line's arguments read them). The methods are in :mod:`orient3d.search.continuous`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orient3d.errors import ConfigError

__all__ = ["HEAD_METHOD", "METHOD_NAMES", "PoseOptions", "check_search_options"]

# the keys of orient3d.search.continuous.METHODS, in order
METHOD_NAMES = ("gradient", "cube-start", "grid-refine")
# the method that needs a fitted proposal head (orient3d.training.so3_head)
HEAD_METHOD = "head-refine"


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
    # head-refine: the head's log-probabilities averaged over this many exact cube-turned
    # views of each grid (orient3d.geometry.groups.view_elements), one encoder pass each
    head_views: int = 1


def check_search_options(
    steps: int,
    top_k: int,
    levels: int,
    cosets: int,
    name: Callable[[str], str],
    head_views: int = PoseOptions.head_views,
) -> None:
    """One ConfigError for the first of these out of range, named by ``name(field)``
    (``--top-k`` on the command line, ``options.top_k`` in an experiment)."""
    for field, value, low, high in (
        ("steps", steps, 0, None),
        ("top_k", top_k, 1, None),
        ("levels", levels, 0, None),
        ("cosets", cosets, 0, 24),
        ("head_views", head_views, 1, 24),
    ):
        if value < low or (high is not None and value > high):
            want = f">= {low}" if high is None else f"in {low}..{high}"
            raise ConfigError(f"{name(field)}: {value} is invalid, must be {want}")
