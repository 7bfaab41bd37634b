"""Continuous pose estimation for a trained VAE: gradient, cube starts, grid search.

The score of a rotation ``R`` for an input ``x`` is the negative ELBO (encoder
mean) of ``R⁻¹·x``, the input turned back to the model's frame by trilinear
resampling (:func:`orient3d.geometry.so3.resample`). Lower is better. The pose ``R``
claims ``x ≈ R·c`` for a shape ``c`` in the model's canonical frame.

Methods (one interface, :func:`estimate_pose`, dispatched through :data:`METHODS`):

- ``gradient``: Adam on a 6D parametrization ``R = R0 @ sixd_to_matrix(d)`` from
  the identity, ``steps`` steps; keeps each object's best-scoring iterate.
- ``cube-start``: scores the 24 cube rotations exactly (``groups.rotate``, no
  interpolation), then runs ``gradient`` from the best one.
- ``grid-refine``: scores the SO(3) grid of ``grid_level`` (:func:`so3.so3_grid`),
  keeps the ``top_k`` best, then ``levels`` times scores the 27 neighbours of each
  kept rotation on the next finer lattice and keeps the ``top_k`` best again
  (cryoDRGN's grid → top-K → subdivide); then ``gradient`` from the best. With
  ``cosets`` (default 4) it searches once more: the 24 cube-group turns ``R·M`` of
  the pose found are scored, the ``cosets`` best go through the same subdivision
  rounds and gradient, and the better of the two results is kept. Most failures
  of the first pass land on such a turn of the truth (a 90° or 180° error, the
  object nearly symmetric under it), a basin the coarse grid ranked too low;
  BENCHMARKS.md, "Continuous pose", measures the gain.

Cost counting, per object: one *forward* pass per scored grid (a candidate or a
gradient step's evaluation); a gradient step also counts one *backward* pass,
reported separately (``backward_passes``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from orient3d.geometry import groups, so3
from orient3d.geometry.transforms import Pose
from orient3d.model import VAE
from orient3d.search.options import PoseOptions, check_search_options
from orient3d.search.poses import PoseSearch, score_poses, search

__all__ = ["METHODS", "PoseOptions", "PoseResult", "estimate_pose", "frozen_eval", "pose_scores"]

log = logging.getLogger(__name__)


@dataclass
class PoseResult:
    R: Tensor  # (B, 3, 3) estimated rotations, x ≈ R·c
    score: Tensor  # (B,) negative ELBO of R⁻¹·x
    forward_passes: int  # per object
    backward_passes: int  # per object (one per gradient step)


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics) with parameter gradients off; restored on exit."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def _score(model: VAE, x: Tensor, R: Tensor) -> Tensor:
    """``x (B, D, D, D)``, ``R (B, 3, 3)`` -> ``(B,)`` neg ELBO of ``R⁻¹·x``."""
    back = so3.resample(x, R.transpose(-1, -2).to(torch.float32))  # (B, D, D, D)
    return model(back, sample=False).neg_elbo


def pose_scores(model: VAE, x: Tensor, R: Tensor, chunk: int = 256) -> Tensor:
    """Scores of ``K`` candidate rotations per object: ``x (B, D, D, D)``, ``R (B, K, 3, 3)``
    -> ``(B, K)``. Each candidate is one forward pass; no gradients
    (:func:`orient3d.search.poses.score_poses` with shift 0 and scale 1)."""
    b, k = R.shape[:2]
    cand = Pose(R, R.new_zeros(b, k, 3), R.new_ones(b, k))
    return score_poses(model, x, cand, PoseSearch(chunk=chunk))


def _refine(model: VAE, x: Tensor, R0: Tensor, opt: PoseOptions) -> PoseResult:
    """Adam on ``d`` (6D) with ``R = R0 @ sixd_to_matrix(d)``, ``d`` from the identity.

    Each object keeps its best iterate (the start included), so refinement never
    makes the score worse. ``steps`` forward+backward passes plus one forward.
    """
    R0 = R0.detach().to(torch.float32)
    eye = torch.eye(3, device=x.device)
    d = so3.matrix_to_sixd(eye).repeat(x.shape[0], 1).requires_grad_(True)  # (B, 6)
    adam = torch.optim.Adam([d], lr=opt.lr)
    best_R, best_s = R0.clone(), torch.full((x.shape[0],), math.inf, device=x.device)
    for step in range(opt.steps + 1):
        with torch.enable_grad():
            R = R0 @ so3.sixd_to_matrix(d)  # (B, 3, 3)
            s = _score(model, x, R)  # (B,)
        better = s.detach() < best_s
        best_s = torch.where(better, s.detach(), best_s)
        best_R = torch.where(better[:, None, None], R.detach(), best_R)
        if step == opt.steps:
            break
        adam.zero_grad()
        s.sum().backward()
        adam.step()
    return PoseResult(best_R, best_s, opt.steps + 1, opt.steps)


def _gradient(model: VAE, x: Tensor, opt: PoseOptions) -> PoseResult:
    return _refine(model, x, torch.eye(3, device=x.device).expand(x.shape[0], 3, 3), opt)


def _cube_start(model: VAE, x: Tensor, opt: PoseOptions) -> PoseResult:
    O = groups.cube_group()
    views = groups.orbit(x, O, O.inverse)  # (B, G, D, D, D): [b, g] = g⁻¹·x, exact
    b, g = views.shape[:2]
    with torch.no_grad():
        scores = torch.cat(
            [
                model(v, sample=False).neg_elbo
                for v in views.reshape(b * g, *x.shape[1:]).float().split(opt.chunk)
            ]
        ).reshape(b, g)
    start = O.matrices.to(x.device, torch.float32)[scores.argmin(dim=1)]  # (B, 3, 3)
    res = _refine(model, x, start, opt)
    return replace(res, forward_passes=res.forward_passes + g)


def _search_refine(model: VAE, x: Tensor, opt: PoseOptions, start: Pose | None) -> PoseResult:
    """:func:`orient3d.search.poses.search` (from the coarse grid, or from ``start``) with
    ``top_k`` kept per round, then ``gradient`` from its best rotation."""
    grid = PoseSearch(
        grid_level=opt.grid_level, top_k=opt.top_k, levels=opt.levels, chunk=opt.chunk
    )
    found = search(model, x, grid, start)
    best = found.pose.R.clone().to(x.device, torch.float32)  # (B, 3, 3); clone: a normal tensor
    res = _refine(model, x, best, opt)
    return replace(res, forward_passes=res.forward_passes + found.passes)


def _cube_turns(R: Tensor) -> Pose:
    """``R (B, 3, 3)`` -> the 24 poses ``R·M`` for ``M`` in the cube group, ``(B, 24)``."""
    M = groups.cube_group().matrices.to(R.device, torch.float32)  # (24, 3, 3)
    turned = R[:, None] @ M[None]  # (B, 24, 3, 3)
    b, g = turned.shape[:2]
    return Pose(turned, turned.new_zeros(b, g, 3), turned.new_ones(b, g))


def _grid_refine(model: VAE, x: Tensor, opt: PoseOptions) -> PoseResult:
    """Coarse grid, subdivision rounds and gradient; then, with ``cosets``, the same
    again from the best ``cosets`` of the 24 cube-group turns of the pose found, keeping
    each object's better result (module docstring)."""
    first = _search_refine(model, x, opt, None)
    if opt.cosets == 0:
        return first
    again = _search_refine(model, x, replace(opt, top_k=opt.cosets), _cube_turns(first.R))
    better = again.score < first.score  # (B,)
    return PoseResult(
        torch.where(better[:, None, None], again.R, first.R),
        torch.where(better, again.score, first.score),
        first.forward_passes + again.forward_passes,
        first.backward_passes + again.backward_passes,
    )


METHODS: dict[str, Callable[[VAE, Tensor, PoseOptions], PoseResult]] = {
    "gradient": _gradient,
    "cube-start": _cube_start,
    "grid-refine": _grid_refine,
}


def estimate_pose(
    model: VAE,
    x: Tensor,
    method: str = "grid-refine",
    *,
    steps: int = PoseOptions.steps,
    lr: float = PoseOptions.lr,
    top_k: int = PoseOptions.top_k,
    levels: int = PoseOptions.levels,
    grid_level: int = PoseOptions.grid_level,
    chunk: int = PoseOptions.chunk,
    cosets: int = PoseOptions.cosets,
    generator: torch.Generator | None = None,
) -> PoseResult:
    """Estimate each object's rotation ``R`` (``x ≈ R·c``) with one of :data:`METHODS`.

    Args:
        model: a trained VAE; put in eval mode for the call, its parameters untouched.
        x: ``(B, D, D, D)`` grids (binary or soft).
        method: ``"gradient"``, ``"cube-start"`` or ``"grid-refine"``.
        steps, lr, top_k, levels, grid_level, chunk, cosets: see :class:`PoseOptions`.
        generator: unused by the deterministic methods here (the score takes the
            encoder mean); accepted so that every method has one signature.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pose method {method!r}; known: {sorted(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, D, D, D), got {tuple(x.shape)}")
    del generator
    check_search_options(steps, top_k, levels, cosets, str)  # a ConfigError is a ValueError
    opt = PoseOptions(steps, lr, top_k, levels, grid_level, chunk, cosets)
    device = next(model.parameters()).device
    with frozen_eval(model):
        return METHODS[method](model, x.to(device, torch.float32), opt)
