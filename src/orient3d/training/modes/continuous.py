"""The ``continuous`` training mode: continuous pose search inside the loop.

Each sample (object ``c`` as stored; the loop does not turn it) is shown as
``x = G·c`` for a fresh random pose ``G`` drawn from the loop's generator: a
uniform SO(3) rotation, plus an integer shift in ``[-translate, translate]³`` and a
scale from ``scale`` when set (:func:`orient3d.geometry.transforms.random_pose`). ``x`` is
resampled trilinearly and **thresholded at 0.5**, so the model sees binary views
as real voxelizations are. Before each backward pass the sample is turned back,
``R⁻¹·x``, by the best pose ``R`` of the coarse-to-fine search
(:func:`orient3d.search.poses.search`: SO(3) grid × scales → top-K → shifts →
rotation neighbours). The turned-back grid is **kept soft** (trilinear values in
[0, 1]) unless ``binarize``; the pose scores are computed on the same grids.

Speed (as the ``search`` mode's cache). ``G`` is known, so each object's canonical
pose ``H = R⁻¹G`` is cached; on the next presentation ``R = G·H⁻¹`` (shift rounded,
scale snapped to the set) is reused as is, or refined by one small neighbourhood
(27 rotations on the lattice one level finer than the search's last, then 27
shifts) every ``refine_every`` search epochs, instead of the full grid. Every
``refresh_every`` search epochs the whole cache goes stale and is re-searched in
full; a random ``refresh_frac`` of each step's samples is searched in full anyway.
The first ``warmup_epochs`` epochs are plain SO(3)-augmented training (the views,
no search).

Evaluation (protocol ``so3+search``, :mod:`orient3d.evaluation.protocols`): :meth:`canonicalize`
runs the full search and returns the pose as a ``(B, 3, 4)`` matrix ``[s R | t]``;
the reconstruction is ``x̂ = P·decode(encode(P⁻¹·x))``.

Logged per epoch: ``pose_change_median_deg`` (median over objects of the angle
between this epoch's and the previous epoch's canonical rotation ``H``; not
reduced modulo symmetry), ``refreshed_frac`` (samples searched in full),
``refined_frac``, ``cache_hit_frac`` (reused without scoring),
``forward_passes_per_sample`` (scored grids) and ``score_median``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from orient3d.config import Config, ContinuousConfig
from orient3d.data import VoxelSet
from orient3d.geometry import so3
from orient3d.geometry.transforms import Pose, apply, compose, identity, inverse, random_pose
from orient3d.model import VAE
from orient3d.search.poses import PoseSearch, nearest_scale, refine, search, turn_back
from orient3d.training.modes.base import ModeSync, Prepared

__all__ = ["ContinuousMode", "canonical_consistency", "pose_consistency", "search_options"]

log = logging.getLogger(__name__)


def search_options(c: ContinuousConfig) -> PoseSearch:
    return PoseSearch(
        grid_level=c.grid_level,
        top_k=c.top_k,
        levels=c.levels,
        translate=c.translate,
        scales=tuple(c.scale),
        binarize=c.binarize,
        frame=("shown" if c.scale else "model") if c.score_frame == "auto" else c.score_frame,
        precision=c.precision,
        chunk=c.chunk,
    )


class ContinuousMode:
    """Implements the training-mode protocol of ``train`` (see the module docstring)."""

    rotate_inputs = False  # the mode draws its own SO(3) poses
    # Under DDP (orient3d.training.distributed): per-object rows exchanged after each step,
    # per-epoch counters summed and score lists joined before end_epoch. Every rank draws
    # the poses G (and refresh_frac) of the whole global batch from the shared generator
    # and keeps its rows, so N processes show what one process shows.
    dist_sync = ModeSync(
        rows=("H.R", "H.t", "H.s", "searched_at", "refined_at", "epoch_R"),
        sums=("samples", "full", "refined", "hits", "passes"),
        cats=("scores",),
        shared_draws=True,
    )
    rank, world = 0, 1  # this process's place under DDP (set by training.state.build_state)

    def __init__(self, cfg: Config, train: VoxelSet, generator: torch.Generator) -> None:
        self.cfg, self.opt, self.gen = cfg.continuous, search_options(cfg.continuous), generator
        n = len(train)
        H = identity(n)  # cached canonical poses H = R⁻¹G: (N, 3, 3), (N, 3), (N,)
        self.H_R, self.H_t, self.H_s = H.R, H.t, H.s
        self.searched_at = torch.full((n,), -1, dtype=torch.long)  # search epoch of last full
        self.refined_at = torch.full((n,), -1, dtype=torch.long)  # ... of last refinement
        self.last_R = torch.full((n, 3, 3), math.nan)  # canonical rotation, previous epoch
        self.epoch_R = torch.full((n, 3, 3), math.nan)
        self.k, self.refresh_from = -1, 0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.samples = self.full = self.refined = self.hits = self.passes = 0
        self.scores: list[Tensor] = []

    @property
    def H(self) -> Pose:
        """The cached canonical poses ``(N,)`` (a view of ``H_R``, ``H_t``, ``H_s``)."""
        return Pose(self.H_R, self.H_t, self.H_s)

    @property
    def active(self) -> bool:
        return self.k >= 0

    def start_epoch(self, model: VAE, epoch: int) -> None:
        """``epoch`` counts from 1; search epoch ``k`` counts from 0 after the warm-up."""
        self.k = epoch - 1 - self.cfg.warmup_epochs
        every = self.cfg.refresh_every
        self.refresh_from = self.k - self.k % every if every and self.k >= 0 else 0
        self._reset_counts()

    def _plan(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``(B,)`` bool masks: search in full, refine the cached pose (else reuse)."""
        c = self.cfg
        full = self.searched_at[idx] < 0
        if not c.cache:
            return torch.ones_like(full), torch.zeros_like(full)
        if c.refresh_every > 0:
            full |= self.searched_at[idx] < self.refresh_from
        if c.refresh_frac > 0:
            b = idx.shape[0]
            full |= torch.rand(b * self.world, generator=self.gen)[self._mine(b)] < c.refresh_frac
        last = torch.maximum(self.searched_at[idx], self.refined_at[idx])
        due = (self.k - last >= c.refine_every) if c.refine_every > 0 else torch.zeros_like(full)
        return full, ~full & due

    def _reuse(self, G: Pose, idx: Tensor) -> Pose:
        """``R = G·H⁻¹ (B,)`` from the cache: rotation re-orthonormalized, shift rounded,
        scale snapped to the nearest of ``scale``."""
        R = compose(G, inverse(self.H[idx]))
        rot = so3.sixd_to_matrix(so3.matrix_to_sixd(R.R))
        return Pose(rot, R.t.round(), nearest_scale(R.s, self.opt.scales))

    def _find(self, model: VAE, x: Tensor, G: Pose, idx: Tensor) -> Pose:
        """The pose ``R (B,)`` that turns each shown grid back to the model's frame."""
        full, ref = self._plan(idx)
        R = self._reuse(G, idx)  # (B,) the cached answer; replaced where searched/refined
        for mask, is_full in ((full, True), (ref, False)):
            if not bool(mask.any()):
                continue
            xm = x[mask.to(x.device)]  # (b', D, D, D)
            found = search(model, xm, self.opt) if is_full else refine(model, xm, R[mask], self.opt)
            R.R[mask], R.t[mask], R.s[mask] = found.pose.R, found.pose.t, found.pose.s
            self.passes += found.passes * int(mask.sum())
            self.scores.append(found.score)
        self.full += int(full.sum())
        self.refined += int(ref.sum())
        self.hits += int((~full & ~ref).sum())
        H = compose(inverse(R), G)  # (B,) canonical poses
        self.H_R[idx], self.H_t[idx], self.H_s[idx] = H.R, H.t, H.s
        self.searched_at[idx[full]] = self.k
        self.refined_at[idx[ref]] = self.k
        return R

    def _mine(self, b: int) -> slice:
        """This process's ``b`` rows of a draw made for the whole global batch (``b`` each)."""
        return slice(self.rank * b, (self.rank + 1) * b)

    def prepare(self, model: VAE, x_shown: Tensor, g: Tensor, idx: Tensor, epoch: int) -> Prepared:
        """Show ``x_shown (B, D, D, D)`` (as stored) in a random pose, then turn it back."""
        b = x_shown.shape[0]
        G = random_pose(
            b * self.world, self.gen, translate=self.cfg.translate, scales=tuple(self.cfg.scale)
        )[self._mine(b)]  # (B,) on the CPU
        x = (apply(x_shown, G) > 0.5).to(x_shown.dtype)  # (B, D, D, D) binary view
        if not self.active:
            return Prepared(x=x, weight=None, choice=None)
        idx = idx.cpu().long()
        R = self._find(model, x, G, idx)
        self.samples += b
        self.epoch_R[idx] = self.H_R[idx]
        return Prepared(x=turn_back(x, R, self.cfg.binarize), weight=None, choice=None)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        if not self.active:
            return {"search_active": False}
        seen = ~self.epoch_R[:, 0, 0].isnan()
        both = seen & ~self.last_R[:, 0, 0].isnan()
        change = None
        if bool(both.any()):
            ang = so3.geodesic_angle(self.last_R[both], self.epoch_R[both])
            change = math.degrees(float(ang.median()))
        n = max(1, self.samples)
        out = {
            "search_active": True,
            "pose_change_median_deg": change,
            "refreshed_frac": self.full / n,
            "refined_frac": self.refined / n,
            "cache_hit_frac": self.hits / n,
            "forward_passes_per_sample": self.passes / n,
            "score_median": float(torch.cat(self.scores).median()) if self.scores else None,
        }
        self.last_R = torch.where(seen[:, None, None], self.epoch_R, self.last_R)
        self.epoch_R.fill_(math.nan)
        return out

    def canonicalize(self, model: VAE, x_shown: Tensor) -> Tensor | None:
        """Eval-time pose of each grid ``(B, D, D, D)``, full search: ``(B, 3, 4)`` ``[sR|t]``."""
        return search(model, x_shown, self.opt).pose.matrix().to(x_shown.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "H_R": self.H_R.clone(),
            "H_t": self.H_t.clone(),
            "H_s": self.H_s.clone(),
            "searched_at": self.searched_at.clone(),
            "refined_at": self.refined_at.clone(),
            "last_R": self.last_R.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["H_s"].shape != self.searched_at.shape:
            log.warning("continuous cache size changed; starting with an empty cache")
            return
        self.H_R, self.H_t, self.H_s = (state[k].clone() for k in ("H_R", "H_t", "H_s"))
        self.searched_at = state["searched_at"].clone()
        self.refined_at = state["refined_at"].clone()
        self.last_R = state["last_R"].clone()


def pose_consistency(H: Tensor, radius_deg: float = 15.0) -> float:
    """How much of ``H (N, 3, 3)`` shares one canonical rotation: the largest fraction of
    rotations within ``radius_deg`` of any one of them (1: one pose; uniform: ~0)."""
    ang = so3.geodesic_angle(H[:, None], H[None])  # (N, N)
    return float((ang < math.radians(radius_deg)).float().mean(dim=1).max())


@torch.no_grad()
def canonical_consistency(
    model: VAE, voxels: Tensor, R_true: Tensor, opt: PoseSearch, radius_deg: float = 15.0
) -> dict[str, float]:
    """Turn ``voxels (N, D, D, D)`` by ``R_true (N, 3, 3)`` (resampled, thresholded), search
    each pose ``R`` and measure the canonical rotations ``H = Rᵀ R_true``: the
    :func:`pose_consistency` and the median angle of ``H`` from the identity."""
    device = next(model.parameters()).device
    x = (so3.resample(voxels.float(), R_true) > 0.5).float().to(device)  # (N, D, D, D)
    R = torch.cat([search(model, xb, opt).pose.R for xb in x.split(64)])  # (N, 3, 3)
    H = R.transpose(-1, -2) @ R_true
    eye = torch.eye(3).expand_as(H)
    return {
        "consistency": pose_consistency(H, radius_deg),
        "median_deg_from_stored": math.degrees(float(so3.geodesic_angle(H, eye).median())),
    }
