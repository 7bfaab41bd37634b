"""Continuous pose estimation for a trained VAE: gradient, cube starts, grid search.

The score of a rotation ``R`` for an input ``x`` is the negative ELBO (encoder
mean) of ``R⁻¹·x``, the input turned back to the model's frame by trilinear
resampling (:func:`orient3d.geometry.so3.resample`). Lower is better. The pose ``R``
claims ``x ≈ R·c`` for a shape ``c`` in the model's canonical frame.

At the true pose of a turned, voxelized object the grid scored is ``R⁻¹·[R·c > 0.5]``:
the stored shape with the artifacts of two resamplings, which a model trained on
stored grids alone has never seen, so wrong rotations can outscore the truth. A
model trained with ``train.resample_frac`` (:func:`orient3d.training.loop.turned_back`)
sees such grids in training: BENCHMARKS.md, "Continuous pose", compares it with the
control trained without, and RESULTS.md, "Continuous rotations", over seeds (the search
loses to the score less often; success is no higher).

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
- ``head-refine`` (not in :data:`METHODS`: it needs a fitted
  :class:`orient3d.training.so3_head.So3Head`, passed as ``head``): the head's ``top_k``
  cells of its grid stand in for the scored coarse grid, then the same subdivision
  rounds, gradient and ``cosets`` as ``grid-refine``. With ``head_views`` the head's
  log-probabilities are averaged over that many exact cube-turned views of the grid;
  each view costs one encoder pass, counted as one forward pass.

Cost counting, per object: one *forward* pass per scored grid (a candidate or a
gradient step's evaluation); a gradient step also counts one *backward* pass,
reported separately (``backward_passes``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from orient3d.geometry import groups, so3
from orient3d.geometry.transforms import Pose
from orient3d.model import VAE
from orient3d.search.options import HEAD_METHOD, PoseOptions, check_search_options
from orient3d.search.poses import PoseSearch, score_poses, search

__all__ = [
    "HEAD_METHOD",
    "METHODS",
    "PoseOptions",
    "PoseResult",
    "cell_log_probs",
    "estimate_pose",
    "frozen_eval",
    "pose_scores",
]

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
    return _with_cosets(model, x, opt, _search_refine(model, x, opt, None))


def _level(head: nn.Module) -> int:
    return int(typing.cast(int, head.level))


def cell_log_probs(head: nn.Module, x: Tensor, views: int = 1) -> Tensor:
    """``(B, N)``: a head's log-probabilities of the cells of its grid (``head.grid``,
    level ``head.level``) for grids ``x (B, D, D, D)`` as shown, summed over ``views``
    exact views ``M_q·x`` (:func:`orient3d.geometry.groups.view_elements`): the view of
    ``x = R·c`` is ``(M_q R)·c``, so its cell ``[q, i]`` of
    :func:`orient3d.geometry.so3.left_cube_permutation` scores cell ``i`` of ``R``.
    Eval mode, no gradients; the head's mode is restored."""
    o = groups.cube_group()
    perm = so3.left_cube_permutation(_level(head)).to(x.device)  # (24, N)
    was = head.training
    head.eval()
    total = torch.zeros(x.shape[0], perm.shape[1], device=x.device)
    try:
        with torch.no_grad():
            for q in groups.view_elements()[:views]:
                logp = torch.log_softmax(head(groups.rotate(x, o, q)).float(), dim=1)
                total += logp[:, perm[q]]
    finally:
        head.train(was)
    return total


def _head_refine(model: VAE, x: Tensor, opt: PoseOptions, head: nn.Module) -> PoseResult:
    """``grid-refine`` from the head's ``top_k`` cells instead of the scored coarse grid."""
    total = cell_log_probs(head, x, opt.head_views)  # (B, N)
    grid = typing.cast(Tensor, head.grid).to(x.device, torch.float32)  # (N, 3, 3)
    top = total.topk(min(opt.top_k, grid.shape[0]), dim=1).indices  # (B, k)
    R = grid[top]  # (B, k, 3, 3)
    b, k = top.shape
    start = Pose(R.cpu(), torch.zeros(b, k, 3), torch.ones(b, k))
    sub = replace(opt, grid_level=_level(head))  # the rounds continue below its grid
    first = _search_refine(model, x, sub, start)
    passes = first.forward_passes + opt.head_views
    return _with_cosets(model, x, sub, replace(first, forward_passes=passes))


def _with_cosets(model: VAE, x: Tensor, opt: PoseOptions, first: PoseResult) -> PoseResult:
    """With ``cosets``: the search again from the best ``cosets`` cube-group turns of
    ``first``'s pose; each object keeps the better of the two results."""
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
    head_views: int = PoseOptions.head_views,
    generator: torch.Generator | None = None,
    head: nn.Module | None = None,
) -> PoseResult:
    """Estimate each object's rotation ``R`` (``x ≈ R·c``) with one of :data:`METHODS`,
    or with ``"head-refine"`` and a fitted ``head``.

    Args:
        model: a trained VAE; put in eval mode for the call, its parameters untouched.
        x: ``(B, D, D, D)`` grids (binary or soft).
        method: ``"gradient"``, ``"cube-start"``, ``"grid-refine"`` or ``"head-refine"``.
        steps, lr, top_k, levels, grid_level, chunk, cosets, head_views: see
            :class:`PoseOptions` (``head-refine`` takes its grid level from the head).
        generator: unused by the deterministic methods here (the score takes the
            encoder mean); accepted so that every method has one signature.
        head: for ``"head-refine"``: an :class:`orient3d.training.so3_head.So3Head`
            fitted to this model (:func:`orient3d.training.so3_head.fit_so3_head`).
    """
    if method == HEAD_METHOD:
        if head is None:
            raise ValueError(f"pose method {HEAD_METHOD!r} needs a fitted head (head=...)")
    elif method not in METHODS:
        known = sorted([*METHODS, HEAD_METHOD])
        raise ValueError(f"unknown pose method {method!r}; known: {known}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, D, D, D), got {tuple(x.shape)}")
    del generator
    # a ConfigError is a ValueError
    check_search_options(steps, top_k, levels, cosets, str, head_views)
    opt = PoseOptions(steps, lr, top_k, levels, grid_level, chunk, cosets, head_views)
    device = next(model.parameters()).device
    with frozen_eval(model):
        if method == HEAD_METHOD:
            assert head is not None
            return _head_refine(model, x.to(device, torch.float32), opt, head)
        return METHODS[method](model, x.to(device, torch.float32), opt)
