"""Finding the rotation that takes each grid to the model's canonical pose.

Both modes return an :class:`Orientation` per grid: the rotation ``A`` to apply
(``out = A·in``, the model's frame), its score, and how sure the model is.

- ``cube``: every element ``r`` of O scores ``L_r = -ELBO(r⁻¹·x)`` (encoder mean,
  :func:`orient3d.search.score_orientations`, as recovery scores them); the choice is
  ``r = argmin L`` and ``A = r⁻¹``. Exact: no interpolation anywhere.
- ``so3``: the coarse-to-fine continuous search
  (:func:`orient3d.search.continuous.estimate_pose`, ``grid-refine``: the SO(3) grid of
  96 rotations → top 16 → two rounds of 27 neighbours → 60 gradient steps) gives ``R``
  with ``x ≈ R·c``, and ``A = Rᵀ``.

Confidence, over the 24 candidates ``A' = h⁻¹A`` (``h`` in O: for ``cube`` these are
the 24 elements themselves; for ``so3`` the chosen rotation composed with each
element), from their scores ``L`` and the grids ``A'·x`` they give (for ``so3`` the
resampled grid ``A·x`` is thresholded at 0.5 to compare voxels):

- ``confidence``: the posterior mass of the choice, ``Σ softmax(-L / T)`` over the
  candidates that give the same voxels as the choice. ``T = 1`` is the model's own
  posterior over orientations under a uniform prior (DESIGN.md); a larger ``T``
  (fitted on held-out shapes for the default model) spreads it;
- ``margin``: ``min L`` over the candidates that give different voxels, less the
  choice's ``L``, in nats (``inf`` when every candidate gives the same voxels);
- ``symmetric``: another candidate gives the same voxels as the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from orient3d.geometry import so3
from orient3d.geometry.groups import cube_group, orbit
from orient3d.model import VAE
from orient3d.search.continuous import estimate_pose
from orient3d.search.discrete import Precision, score_orientations

__all__ = ["MODES", "Orientation", "find_orientations", "summarize"]

MODES = ("cube", "so3")


@dataclass(frozen=True)
class Orientation:
    """What was found for ``B`` grids."""

    A: np.ndarray  # (B, 3, 3) float64: the rotation to apply, out = A·in (model frame)
    score: np.ndarray  # (B,) negative ELBO of the turned grid, nats
    confidence: np.ndarray  # (B,) posterior mass of the choice
    margin: np.ndarray  # (B,) nats to the best candidate with different voxels (inf: none)
    symmetric: np.ndarray  # (B,) bool: another candidate gives the same voxels
    turned: Tensor  # (B, D, D, D) uint8: the grid turned by A (for pictures)


def summarize(
    views: Tensor, scores: Tensor, r: Tensor, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Confidence, margin and symmetry of choosing candidate ``r`` (module docstring).

    Args:
        views: ``(B, K, D, D, D)`` the grid each candidate gives.
        scores: ``(B, K)`` the candidates' scores ``L`` (lower is better).
        r: ``(B,)`` the chosen candidate.
        temperature: ``T`` of ``softmax(-L / T)``.

    Returns:
        ``confidence (B,)``, ``margin (B,)`` and ``symmetric (B,)`` (bool).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rows = torch.arange(len(r))
    same = (views == views[rows, r][:, None]).flatten(2).all(dim=2)  # (B, K)
    post = torch.softmax(-scores.double() / temperature, dim=1)
    confidence = (post * same).sum(dim=1)
    best_other = scores.double().masked_fill(same, float("inf")).min(dim=1).values
    margin = best_other - scores.double()[rows, r]
    return confidence, margin, same.sum(dim=1) > 1


def _cube(
    model: VAE, x: Tensor, temperature: float, precision: Precision, chunk: int
) -> Orientation:
    o = cube_group()
    device = next(model.parameters()).device
    scores = score_orientations(model, x.to(device), o, precision=precision, chunk=chunk).cpu()
    r = scores.argmin(dim=1)  # (B,): x ≈ r·c
    views = orbit(x, o)[:, o.inverse]  # (B, G, D, D, D): row g is g⁻¹·x
    conf, margin, sym = summarize(views, scores, r, temperature)
    A = o.matrices[o.inverse[r]].double()  # r⁻¹
    rows = torch.arange(len(r))
    return Orientation(
        A.numpy(),
        scores[rows, r].double().numpy(),
        conf.numpy(),
        margin.numpy(),
        sym.numpy(),
        views[rows, r],
    )


def _so3(
    model: VAE, x: Tensor, temperature: float, precision: Precision, chunk: int
) -> Orientation:
    o = cube_group()
    device = next(model.parameters()).device
    found = estimate_pose(model, x.to(device), "grid-refine", chunk=chunk)  # x ≈ R·c
    A = found.R.detach().double().cpu().transpose(-1, -2)  # (B, 3, 3)
    y = so3.resample(x.double(), A).float()  # (B, D, D, D) A·x, trilinear
    scores = score_orientations(model, y.to(device), o, precision=precision, chunk=chunk).cpu()
    views = orbit((y > 0.5).to(torch.uint8), o)[:, o.inverse]  # row h: h⁻¹A·x
    r = torch.zeros(len(x), dtype=torch.long)  # the search's own choice is h = identity
    conf, margin, sym = summarize(views, scores, r, temperature)
    return Orientation(
        A.numpy(), scores[:, 0].double().numpy(), conf.numpy(), margin.numpy(), sym.numpy(),
        views[:, 0],
    )  # fmt: skip


_FIND = {"cube": _cube, "so3": _so3}


def find_orientations(
    model: VAE,
    x: Tensor,
    rotations: str = "cube",
    *,
    temperature: float = 1.0,
    precision: Precision = "fp32",
    chunk: int = 256,
    block: int = 64,
) -> Orientation:
    """The rotation to the model's canonical pose of each grid ``x (B, D, D, D)`` (0/1).

    ``rotations``: ``"cube"`` (the 24 of O, exact) or ``"so3"`` (continuous search);
    see the module docstring. The model is put in eval mode; no gradients reach it.
    Grids go ``block`` at a time (each holds its 24 turned copies); ``chunk``: grids
    per forward pass.
    """
    if rotations not in _FIND:
        raise ValueError(f"rotations must be one of {MODES}, got {rotations!r}")
    if x.dim() != 4 or not x.shape[1] == x.shape[2] == x.shape[3]:
        raise ValueError(f"x must be (B, D, D, D), got {tuple(x.shape)}")
    x = x.to(torch.uint8)
    parts = [
        _FIND[rotations](model, x[s : s + block], temperature, precision, chunk)
        for s in range(0, len(x), block)
    ]
    if len(parts) == 1:
        return parts[0]
    return Orientation(
        **{k: np.concatenate([getattr(p, k) for p in parts]) for k in _ARRAYS},
        turned=torch.cat([p.turned for p in parts]),
    )


_ARRAYS = ("A", "score", "confidence", "margin", "symmetric")
