"""Coarse-to-fine search over general poses (rotation × integer shift × scale).

The score of a candidate pose ``P`` for a grid ``x`` is the negative ELBO (encoder
mean) of ``P⁻¹·x`` (:func:`orient3d.geometry.transforms.undo`); lower is better. The
candidate set is the product of rotations, shifts and scales, searched
coarse-to-fine (cryoDRGN's grid → top-K → subdivide, one factor at a time):

1. the SO(3) grid of ``grid_level`` (:func:`so3.so3_grid`) × every scale, at
   shift 0; keep the ``top_k`` best per sample;
2. ``translate`` rounds of the 27 shifts ``t + {-1, 0, 1}³`` (clamped to
   ``[-translate, translate]³``) around each kept pose; keep the ``top_k`` best;
3. ``levels`` rounds of the 27 rotation neighbours on the next finer lattice
   (:func:`so3.neighbours`); keep the ``top_k`` best.

:func:`refine` is step 3 (and one shift round) once around a given pose, for
poses carried over from a cache. Every function counts forward passes (scored
grids) per sample. Without shifts and scales it is the first stage of
``continuous.estimate_pose(method="grid-refine")``, which then refines by gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from orient3d.geometry import so3
from orient3d.geometry.transforms import Pose, apply, shift_offsets, undo
from orient3d.model import VAE
from orient3d.search.discrete import scoring_context

__all__ = ["Found", "PoseSearch", "refine", "score_poses", "search"]


@dataclass(frozen=True)
class PoseSearch:
    grid_level: int = 1  # coarse SO(3) grid (24, 96, 720 rotations for levels 0-2)
    top_k: int = 4  # poses kept per sample after each stage
    levels: int = 1  # rotation subdivision rounds after the coarse grid
    translate: int = 0  # max integer shift per axis (0: no shift search)
    scales: tuple[float, ...] = ()  # scales of the coarse stage (empty: 1 only)
    binarize: bool = False  # threshold P⁻¹·x at 0.5 before scoring
    precision: str = "fp32"  # scoring autocast: fp32 | bf16 | auto
    # "model": neg ELBO of P⁻¹·x; "shown": the reconstruction term measured in the frame of
    # x, BCE(x, P·decode(encode(P⁻¹·x))) + β KL, the same target for every candidate (scale
    # search: the model frame favours shrinking, fewer voxels to get wrong)
    frame: str = "model"
    chunk: int = 256  # grids per forward pass

    @property
    def fine_level(self) -> int:
        """The lattice level of :func:`refine`: one finer than the search's last round."""
        return self.grid_level + self.levels + 1


@dataclass
class Found:
    pose: Pose  # (B,) best pose per sample
    score: Tensor  # (B,) its score
    passes: int  # forward passes per sample


def turn_back(x: Tensor, p: Pose, binarize: bool) -> Tensor:
    """``P⁻¹·x`` (B, D, D, D) float, thresholded at 0.5 when ``binarize``."""
    y = undo(x, p)
    return (y > 0.5).to(y.dtype) if binarize else y


def _score_rows(model: VAE, x: Tensor, p: Pose, opt: PoseSearch) -> Tensor:
    """Scores ``(c,)`` of the poses ``p (c,)`` for the grids ``x (c, D, D, D)``."""
    out = model(turn_back(x, p, opt.binarize), sample=False)
    if opt.frame == "model":
        return out.neg_elbo.float()
    probs = apply(torch.sigmoid(out.logits.float()), p).clamp(1e-6, 1 - 1e-6)  # frame of x
    bce = -(x * probs.log() + (1 - x) * (1 - probs).log()).flatten(1).sum(dim=1)
    return bce + model.cfg.beta * out.kl.float()


def score_poses(model: VAE, x: Tensor, cand: Pose, opt: PoseSearch) -> Tensor:
    """``x (B, D, D, D)``, candidates of shape ``(B, K)`` -> scores ``(B, K)``, no gradients."""
    if opt.frame not in ("model", "shown"):
        raise ValueError(f"frame must be 'model' or 'shown', got {opt.frame!r}")
    b, k = cand.shape
    flat = cand.reshape(b * k)
    owner = torch.arange(b, device=x.device).repeat_interleave(k)  # (B*K,)
    out = torch.empty(b * k, device=x.device)
    with scoring_context(model, x.device.type, opt.precision):
        for s in range(0, b * k, opt.chunk):
            sl = slice(s, s + opt.chunk)
            out[sl] = _score_rows(model, x[owner[sl]], flat[sl].to(x.device), opt)
    return out.reshape(b, k)


def _keep(cand: Pose, scores: Tensor, k: int) -> tuple[Pose, Tensor]:
    """The ``k`` best of ``(B, M)`` candidates, best first: ``(B, k)`` poses and scores."""
    s, top = scores.topk(min(k, scores.shape[1]), dim=1, largest=False)  # (B, k)
    b = torch.arange(scores.shape[0], device=scores.device)[:, None]
    return cand[b.cpu(), top.cpu()], s


def _with_rotations(p: Pose, R: Tensor) -> Pose:
    """``(B, k)`` poses × ``R (B, k, M, 3, 3)`` replacing their rotations -> ``(B, k*M)``."""
    b, k, m = R.shape[:3]
    t, s = p.t[:, :, None].expand(b, k, m, 3), p.s[:, :, None].expand(b, k, m)
    return Pose(R.reshape(b, k * m, 3, 3), t.reshape(b, k * m, 3), s.reshape(b, k * m))


def _with_shifts(p: Pose, offsets: Tensor, limit: int) -> Pose:
    """``(B, k)`` poses × ``offsets (M, 3)`` added to their shifts (clamped) -> ``(B, k*M)``."""
    (b, k), m = p.shape, offsets.shape[0]
    R, s = p.R[:, :, None].expand(b, k, m, 3, 3), p.s[:, :, None].expand(b, k, m)
    t = (p.t[:, :, None] + offsets).clamp(-limit, limit)  # (B, k, M, 3)
    return Pose(R.reshape(b, k * m, 3, 3), t.reshape(b, k * m, 3), s.reshape(b, k * m))


def _with_scales(p: Pose, scales: Tensor) -> Pose:
    """``(B, k)`` poses × ``scales (M,)`` replacing their scales -> ``(B, k*M)``."""
    (b, k), m = p.shape, scales.shape[0]
    R, t = p.R[:, :, None].expand(b, k, m, 3, 3), p.t[:, :, None].expand(b, k, m, 3)
    s = scales.expand(b, k, m)
    return Pose(R.reshape(b, k * m, 3, 3), t.reshape(b, k * m, 3), s.reshape(b, k * m))


def _shift_round(model: VAE, x: Tensor, p: Pose, opt: PoseSearch) -> tuple[Pose, Tensor]:
    cand = _with_shifts(p, shift_offsets(1), opt.translate)  # (B, k*27)
    return cand, score_poses(model, x, cand, opt)


def _rotation_round(
    model: VAE, x: Tensor, p: Pose, level: int, opt: PoseSearch
) -> tuple[Pose, Tensor]:
    cand = _with_rotations(p, so3.neighbours(p.R, level))  # (B, k*27)
    return cand, score_poses(model, x, cand, opt)


def _coarse(x: Tensor, opt: PoseSearch) -> Pose:
    """``(B, N·S)``: the SO(3) grid × scales, at shift 0."""
    b = x.shape[0]
    grid = so3.so3_grid(opt.grid_level)  # (N, 3, 3)
    n = grid.shape[0]
    base = Pose(grid.expand(b, n, 3, 3), torch.zeros(b, n, 3), torch.ones(b, n))
    if not opt.scales:
        return base
    return _with_scales(base, torch.tensor(list(opt.scales), dtype=torch.float32))


def search(model: VAE, x: Tensor, opt: PoseSearch, start: Pose | None = None) -> Found:
    """The best pose of each grid ``x (B, D, D, D)``, coarse-to-fine (module docstring).

    ``start``: ``(B, K)`` candidate poses scored in place of the coarse grid (the
    subdivision rounds then begin at ``grid_level + 1`` as usual).
    """
    x = x.float()
    cand = _coarse(x, opt) if start is None else start
    scores = score_poses(model, x, cand, opt).cpu()  # (B, N·S)
    passes = cand.shape[1]
    kept, ks = _keep(cand, scores, opt.top_k)
    for _ in range(opt.translate):
        cand, scores = _shift_round(model, x, kept, opt)
        passes += cand.shape[1]
        kept, ks = _keep(cand, scores.cpu(), opt.top_k)
    for level in range(opt.grid_level + 1, opt.grid_level + 1 + opt.levels):
        cand, scores = _rotation_round(model, x, kept, level, opt)
        passes += cand.shape[1]
        kept, ks = _keep(cand, scores.cpu(), opt.top_k)
    return Found(kept[:, 0], ks[:, 0], passes)


def refine(model: VAE, x: Tensor, start: Pose, opt: PoseSearch) -> Found:
    """One neighbourhood around ``start (B,)``: 27 rotations at :attr:`PoseSearch.fine_level`
    then (with ``translate``) 27 shifts; ``start`` itself is a candidate of each."""
    x = x.float()
    kept = start.reshape(start.shape[0], 1)
    cand, scores = _rotation_round(model, x, kept, opt.fine_level, opt)
    passes = cand.shape[1]
    kept, ks = _keep(cand, scores.cpu(), 1)
    if opt.translate > 0:
        cand, scores = _shift_round(model, x, kept, opt)
        passes += cand.shape[1]
        kept, ks = _keep(cand, scores.cpu(), 1)
    return Found(kept[:, 0], ks[:, 0], passes)


def nearest_scale(s: Tensor, scales: Sequence[float]) -> Tensor:
    """Each scale of ``s (...)`` replaced by the nearest (in log) of ``scales`` (empty: 1)."""
    allowed = torch.tensor(list(scales) or [1.0], dtype=s.dtype, device=s.device)
    d = (s[..., None].log() - allowed.log()).abs()  # (..., S)
    return allowed[d.argmin(dim=-1)]
