"""Amortized proposals for continuous pose estimation: a head that ranks SO(3) grid cells.

A single-orientation VAE scores a rotation sharply around its own frame: at the 27°
spacing of the level-1 grid, the grid point nearest the truth is seldom among the
best-scoring ones, so a coarse grid ranks the truth's basin out and the subdivision
rounds never visit it (BENCHMARKS.md, "Continuous pose"). :class:`So3Head` answers
the coarse question directly: shown a grid ``x = R·c``, it gives logits over the
rotations of :func:`orient3d.geometry.so3.so3_grid` (``level``), logit ``j`` saying
"``R`` lies in the cell of grid point ``j``". ``estimate_pose(..., "head-refine",
head=head)`` (:mod:`orient3d.search.continuous`) scores the head's ``top_k`` cells
with the VAE instead of the whole coarse grid, then subdivides and refines by
gradient as ``grid-refine`` does.

What it learns from: :func:`fit_so3_head` shows it grids **in the model's frame**
(``c``), each turned by fresh uniform random rotations every epoch, and supervises
it with the rotations it applied. For a ``single`` (or ``augmented``) model the
model's frame is the dataset's stored frame, so the head is supervised by the stored
alignment of the *training* objects: the same information the model itself was
trained with, and nothing of the objects it is later asked about. For a model whose
frame is learned (``search``), turn the grids into its frame first
(:func:`orient3d.training.pose_head.model_frame`).

Symmetry: when ``M_s·c == c`` for cube rotations ``M_s`` (the object's stabilizer),
``R·c == (R M_s)·c`` and the cell of every ``R M_s`` is right; the loss
(:func:`orient3d.training.pose_head.symmetric_nll`) sums the probability over them.

Architecture: a copy of the VAE's encoder (its trained weights as the start, then
trained with the head) and an MLP (LayerNorm, one hidden layer) on its flattened
output. Only the copy trains; the VAE is untouched.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from orient3d.geometry import groups, so3
from orient3d.model import VAE
from orient3d.search.continuous import cell_log_probs
from orient3d.training.pose_head import symmetric_nll

__all__ = ["So3Head", "So3HeadFit", "cell_targets", "fit_so3_head", "head_top_k"]

log = logging.getLogger(__name__)

HIDDEN = 256
EVAL_OBJECTS = 1024  # training objects whose last views fit_so3_head reports its top-k on


class So3Head(nn.Module):
    """Logits over the cells of the SO(3) grid of ``level`` for grids ``(B, D, D, D)``."""

    grid: Tensor  # (N, 3, 3) so3_grid(level), a buffer

    def __init__(self, model: VAE, level: int = 1, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.level = level
        self.encoder = copy.deepcopy(model.encoder).float()
        self.encoder.requires_grad_(True)
        flat = model.top_channels * model.bottom**3
        cells = so3.so3_grid(level).shape[0]
        self.mlp = nn.Sequential(
            nn.LayerNorm(flat), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, cells)
        )
        self.register_buffer("grid", so3.so3_grid(level), persistent=False)  # (N, 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, D, D, D) -> (B, N)`` logits; ``N = len(so3_grid(level))``."""
        return self.mlp(self.encoder(x.float().unsqueeze(1)).flatten(1))


def cell_targets(R: Tensor, stabilizers: Tensor, grid: Tensor) -> Tensor:
    """``(B, N)`` bool: the grid cells that are right for the grids ``R·c``.

    Cell ``j`` is right when grid point ``j`` is the nearest one to ``R M_s`` for an
    element ``s`` of the object's stabilizer (``stabilizers (B, 24)``, identity set);
    ``R (B, 3, 3)``, ``grid (N, 3, 3)``. Nearness is the geodesic angle, through
    ``|<q, q'>|`` of unit quaternions (larger is nearer).
    """
    M = groups.cube_group().matrices.to(R.device, R.dtype)  # (24, 3, 3)
    alts = R[:, None] @ M[None]  # (B, 24, 3, 3)
    q = so3.matrix_to_quaternion(alts.reshape(-1, 3, 3))  # (B*24, 4)
    qg = so3.matrix_to_quaternion(grid.to(R.device, R.dtype))  # (N, 4)
    nearest = (q @ qg.T).abs().argmax(dim=1).view(R.shape[0], -1)  # (B, 24)
    right = torch.zeros(R.shape[0], grid.shape[0], dtype=torch.bool, device=R.device)
    stab = stabilizers.to(device=R.device, dtype=torch.bool)
    # a non-symmetry element points at cell 0 with False: scatter OR through amax
    return right.scatter_reduce(1, nearest, stab, reduce="amax")


def _views(c: Tensor, R: Tensor, binarize: bool) -> Tensor:
    """``R·c`` by trilinear resampling, thresholded at 0.5 when ``binarize``."""
    y = so3.resample(c.float(), R)
    return (y > 0.5).float() if binarize else y


def head_top_k(
    head: So3Head,
    x: Tensor,
    R: Tensor,
    stabilizers: Tensor,
    ks: tuple[int, ...] = (1, 4, 8, 16),
    views: int = 1,
    chunk: int = 256,
) -> dict[str, float]:
    """The fraction of grids ``x (B, D, D, D)`` shown at rotations ``R (B, 3, 3)`` whose
    right cell (:func:`cell_targets`) is among the head's ``k`` best, for each ``k``,
    its answers summed over ``views`` exact views (:func:`cell_log_probs`)."""
    device = next(head.parameters()).device
    logits = torch.cat([cell_log_probs(head, xb.to(device), views).cpu() for xb in x.split(chunk)])
    right = cell_targets(R, stabilizers, head.grid.cpu())
    return {
        str(k): float(
            right.gather(1, logits.topk(min(k, logits.shape[1]), 1).indices).any(1).float().mean()
        )
        for k in ks
    }


@dataclass
class So3HeadFit:
    head: So3Head
    train_loss: float  # mean symmetric NLL over the last epoch
    train_top_k: dict[str, float]  # head_top_k on the last epoch's views (eval mode), at
    # most EVAL_OBJECTS of them
    seconds: float


def fit_so3_head(
    model: VAE,
    x: Tensor,
    *,
    level: int = 1,
    epochs: int = 40,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    binarize: bool = True,
    stabilizers: Tensor | None = None,
) -> So3HeadFit:
    """Fit a :class:`So3Head` to grids ``x (N, D, D, D)`` in the model's frame (module
    docstring): every epoch shows each grid once, turned by a fresh uniform random
    rotation (trilinear, thresholded at 0.5 when ``binarize``, as
    :func:`orient3d.evaluation.continuous.rotated_test_set` makes its inputs); Adam with
    a cosine schedule. ``seed`` decides the head's initial MLP weights, the rotations
    and the batch order. The VAE is not changed."""
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be >= 1, got {epochs} and {batch}")
    if x.dim() != 4 or x.shape[1:] != (model.res,) * 3:
        raise ValueError(
            f"x must be (N, {model.res}, {model.res}, {model.res}), got {tuple(x.shape)}"
        )
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = So3Head(model, level).to(device)
    stab = groups.stabilizer_mask(x, groups.cube_group()) if stabilizers is None else stabilizers
    c = x  # as stored (uint8 grids stay small); each batch is resampled in float32
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * math.ceil(len(c) / batch)
    )
    head.train()
    loss_sum = 0.0
    for _ in range(epochs):
        R = so3.random_rotations(len(c), gen)  # (N, 3, 3)
        right = cell_targets(R, stab, head.grid.cpu())  # (N, cells)
        loss_sum = 0.0
        for idx in torch.randperm(len(c), generator=gen).split(batch):
            views = _views(c[idx], R[idx], binarize).to(device)
            per = symmetric_nll(head(views), right[idx].to(device))
            opt.zero_grad(set_to_none=True)
            per.mean().backward()
            opt.step()
            sched.step()
            loss_sum += float(per.detach().sum())
    head.eval()
    k = min(len(c), EVAL_OBJECTS)  # the last epoch's views of the first objects
    top = head_top_k(head, _views(c[:k], R[:k], binarize), R[:k], stab[:k])
    seconds = time.perf_counter() - t0
    log.info("SO(3) head fitted in %.1f s: loss %.3f, top-k %s", seconds, loss_sum / len(c), top)
    return So3HeadFit(head, loss_sum / len(c), top, seconds)
