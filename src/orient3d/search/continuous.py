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
  (cryoDRGN's grid → top-K → subdivide); finally ``gradient`` from the best.

Cost counting, per object: one *forward* pass per scored grid (a candidate or a
gradient step's evaluation); a gradient step also counts one *backward* pass,
reported separately (``backward_passes``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from orient3d.geometry import groups, so3
from orient3d.model import VAE

__all__ = [
    "METHODS",
    "PoseOptions",
    "PoseResult",
    "estimate_pose",
    "pose_scores",
    "recover_continuous",
    "rotated_test_set",
    "symmetric_error",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoseOptions:
    steps: int = 60  # gradient steps (Adam) of the final refinement
    lr: float = 0.03  # Adam learning rate on the 6D parameters
    top_k: int = 16  # grid-refine: rotations kept per object after each level
    levels: int = 2  # grid-refine: subdivision rounds after the coarse grid
    grid_level: int = 1  # grid-refine: level of the coarse SO(3) grid (96 rotations)
    chunk: int = 256  # grids per forward pass when scoring candidates


@dataclass
class PoseResult:
    R: Tensor  # (B, 3, 3) estimated rotations, x ≈ R·c
    score: Tensor  # (B,) negative ELBO of R⁻¹·x
    forward_passes: int  # per object
    backward_passes: int  # per object (one per gradient step)


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
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


@torch.no_grad()
def pose_scores(model: VAE, x: Tensor, R: Tensor, chunk: int = 256) -> Tensor:
    """Scores of ``K`` candidate rotations per object: ``x (B, D, D, D)``, ``R (B, K, 3, 3)``
    -> ``(B, K)``. Each candidate is one forward pass; no gradients."""
    b, k = R.shape[:2]
    flat_R = R.reshape(b * k, 3, 3)
    owner = torch.arange(b, device=x.device).repeat_interleave(k)  # (B*K,)
    out = torch.empty(b * k, device=x.device)  # (B*K,)
    for s in range(0, b * k, chunk):
        out[s : s + chunk] = _score(model, x[owner[s : s + chunk]], flat_R[s : s + chunk])
    return out.reshape(b, k)


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
    views = groups.orbit(x, O)[:, O.inverse]  # (B, G, D, D, D): [b, g] = g⁻¹·x, exact
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


def _grid_refine(model: VAE, x: Tensor, opt: PoseOptions) -> PoseResult:
    grid = so3.so3_grid(opt.grid_level).to(x.device)  # (N, 3, 3)
    cand = grid.expand(x.shape[0], *grid.shape)  # (B, N, 3, 3)
    scores = pose_scores(model, x, cand, opt.chunk)  # (B, N)
    passes = grid.shape[0]
    for level in range(opt.grid_level + 1, opt.grid_level + 1 + opt.levels):
        k = min(opt.top_k, cand.shape[1])
        top = scores.topk(k, dim=1, largest=False).indices  # (B, k)
        kept = cand.gather(1, top[..., None, None].expand(-1, -1, 3, 3))  # (B, k, 3, 3)
        cand = so3.neighbours(kept, level).flatten(1, 2)  # (B, k * 27, 3, 3)
        scores = pose_scores(model, x, cand, opt.chunk)
        passes += cand.shape[1]
    best = cand[torch.arange(x.shape[0], device=x.device), scores.argmin(dim=1)]  # (B, 3, 3)
    res = _refine(model, x, best, opt)
    return replace(res, forward_passes=res.forward_passes + passes)


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
    generator: torch.Generator | None = None,
) -> PoseResult:
    """Estimate each object's rotation ``R`` (``x ≈ R·c``) with one of :data:`METHODS`.

    Args:
        model: a trained VAE; put in eval mode for the call, its parameters untouched.
        x: ``(B, D, D, D)`` grids (binary or soft).
        method: ``"gradient"``, ``"cube-start"`` or ``"grid-refine"``.
        steps, lr, top_k, levels, grid_level, chunk: see :class:`PoseOptions`.
        generator: unused by the deterministic methods here (the score takes the
            encoder mean); accepted so that every method has one signature.
    """
    if method not in METHODS:
        raise ValueError(f"unknown pose method {method!r}; known: {sorted(METHODS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, D, D, D), got {tuple(x.shape)}")
    del generator
    opt = PoseOptions(steps, lr, top_k, levels, grid_level, chunk)
    device = next(model.parameters()).device
    with _frozen_eval(model):
        return METHODS[method](model, x.to(device, torch.float32), opt)


def symmetric_error(R_pred: Tensor, R_true: Tensor, stabilizers: Tensor) -> Tensor:
    """Angle in radians between predicted and true poses, modulo each object's symmetry.

    If ``M_s·c == c`` then ``x = R_true·c = (R_true M_s)·c``, so every ``R_true M_s``
    with ``s`` in the stabilizer is an equally right answer:
    ``error = min_s angle(R_pred, R_true @ M_s)``.

    Args:
        R_pred, R_true: ``(B, 3, 3)``.
        stabilizers: ``(B, 24)`` bool, element ``s`` of ``groups.cube_group()`` fixes
            the object (the identity must be set).
    """
    M = groups.cube_group().matrices.to(R_true.device, R_true.dtype)  # (G, 3, 3)
    alts = R_true[:, None] @ M[None]  # (B, G, 3, 3)
    ang = so3.geodesic_angle(R_pred[:, None].to(R_true.dtype), alts)  # (B, G)
    ang = torch.where(stabilizers.to(torch.bool), ang, torch.full_like(ang, math.inf))
    return ang.min(dim=1).values


def rotated_test_set(
    test_voxels: Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` objects drawn without replacement, turned by uniform random rotations.

    Returns ``idx (n,)``, ``R_true (n, 3, 3)`` and the binary inputs ``x (n, D, D, D)``:
    ``resample(c, R_true)`` thresholded at 0.5.
    """
    idx = torch.randperm(test_voxels.shape[0], generator=generator)[:n]
    c = test_voxels[idx].to(torch.float32)  # (n, D, D, D)
    R_true = so3.random_rotations(len(idx), generator)  # (n, 3, 3)
    x = (so3.resample(c, R_true) > 0.5).to(torch.float32)  # (n, D, D, D)
    return idx, R_true, x


def _summary(err: Tensor, found: Tensor, truth: Tensor, threshold_deg: float) -> dict[str, Any]:
    """Success, errors, and which failures are the score's fault rather than the search's."""
    fail = err >= threshold_deg  # (n,)
    model_fault = (found[fail] <= truth[fail] + 1e-3).float().mean() if bool(fail.any()) else None
    return {
        "success_rate": float((~fail).float().mean()),
        "median_error_deg": float(err.quantile(0.5)),
        "mean_error_deg": float(err.mean()),
        "failures_scored_below_truth": None if model_fault is None else float(model_fault),
    }


def recover_continuous(
    model: VAE,
    test_voxels: Tensor,
    stabilizers: Tensor,
    n: int,
    methods: Sequence[str] = tuple(METHODS),
    generator: torch.Generator | None = None,
    *,
    threshold_deg: float = 10.0,
    batch: int = 16,
    **options: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Recover random SO(3) rotations of test objects with each method.

    ``n`` objects (drawn without replacement) are each turned by a uniform random
    rotation ``R_true`` (trilinear resampling, then thresholded at 0.5: a binary
    voxelization, as real data would be; :func:`rotated_test_set`) and each method
    estimates ``R``. Success:
    :func:`symmetric_error` below ``threshold_deg``.

    Returns:
        ``{"so3": {method: {"success_rate", "median_error_deg", "mean_error_deg",
        "failures_scored_below_truth", "forward_passes", "backward_passes",
        "seconds", "n", "threshold_deg"}}}``, JSON-ready; ``forward_passes`` per
        object, ``seconds`` for all ``n``. ``failures_scored_below_truth``: among the
        failures, the fraction whose found rotation scores at least as well as the
        true one (the score's fault, not the search's); None without failures.
    """
    idx, R_true, x = rotated_test_set(test_voxels, n, generator)
    device = next(model.parameters()).device
    with _frozen_eval(model):
        truth = pose_scores(model, x.to(device), R_true[:, None].to(device))[:, 0].cpu()  # (n,)
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        t0 = time.perf_counter()
        parts = [estimate_pose(model, xb, m, **options) for xb in x.split(batch)]
        seconds = time.perf_counter() - t0
        R_pred = torch.cat([p.R.cpu() for p in parts])  # (n, 3, 3)
        found = torch.cat([p.score.cpu() for p in parts])  # (n,)
        err = torch.rad2deg(symmetric_error(R_pred, R_true, stabilizers[idx]))
        out[m] = _summary(err, found, truth, threshold_deg) | {
            "forward_passes": parts[0].forward_passes,
            "backward_passes": parts[0].backward_passes,
            "seconds": seconds,
            "n": len(idx),
            "threshold_deg": threshold_deg,
        }
        log.info("so3 %s: %s", m, out[m])
    return {"so3": out}
