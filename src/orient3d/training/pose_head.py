"""Training the orientation head (``model.pose_head``) beside the VAE.

After each SGD step of the VAE the loop (:mod:`orient3d.training.loop`) hands
:meth:`HeadTrainer.step` the grids that step trained on (``Prepared.x``, in the
model's frame). Each grid ``x`` is turned by a fresh random element ``s`` of O and
the encoder reads ``y = s·x`` in eval mode without gradients, so BatchNorm's
running statistics and the VAE's gradients are untouched. The head
(:meth:`orient3d.model.VAE.head_logits`) is trained on those detached features
with a symmetry-aware cross-entropy,

    ``-log Σ_{e : e·x == s·x} softmax(logits(y))_e``,

in which every element that gives the same voxels as the truth counts (the
object's stabilizer, :func:`orient3d.geometry.groups.same_voxels`): the head's
logit ``r`` says "the grid shown is ``r·x``", the index
:func:`orient3d.search.score_orientations` scores. Optimizer: the run's own Adam,
on the head's parameters only: they are in it (with its learning-rate schedule and
its checkpointed state), and when it steps for the head no other parameter has a
gradient, so the VAE's weights move only in the VAE's step. The ``s`` come from a
generator of the head's own, seeded from the run's seed, the epoch and the rank;
the run's other draws (batch order, rotations, latent noise) are those of a run
without a head. So with ``model.pose_head = true`` the VAE's weights, metrics and
results are bitwise those of the same run without the head, and a resumed run
draws the same ``s`` as an uninterrupted one.

What "the model's frame" is, and so what the head learns, depends on the mode:

- ``single``: the dataset's stored frame. The head learns the stored frame: it is
  trained on the ground-truth pose (supervision by the dataset's alignment).
- ``search``: each sample's chosen canonical pose (``r⁻¹·x``; for the soft choice
  the row of largest weight). No ground truth: the head learns to predict the
  search's own choice, whatever it is.
- ``continuous``: the resampled grid of the chosen SO(3) pose, as trained on.
- ``augmented``: the grids as shown, turned by random ``g``: there is no frame to
  learn and the head can do no better than chance.

Under DDP every rank trains on its own rows and the head's gradients are averaged
over the ranks before the step, so the replicas' heads stay equal.

Logged per epoch: ``pose_head_acc``, the training accuracy modulo symmetry of the
head's argmax (before each step's update), and ``pose_head_loss``, the mean loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from orient3d.config import Config
from orient3d.devices import autocast
from orient3d.geometry.groups import CubeGroup, cube_group, rotate, stabilizer_mask
from orient3d.model import VAE
from orient3d.training.distributed import Dist
from orient3d.training.modes.base import Prepared

__all__ = [
    "HeadTrainer",
    "for_run",
    "model_frame_rows",
    "symmetric_nll",
    "symmetric_targets",
]

_SEED_TAG = 0x9E3D  # keeps the head's generator apart from the run's other seeded streams


def symmetric_targets(stab: Tensor, s: Tensor, group: CubeGroup) -> Tensor:
    """``(B, G)`` bool: element ``e`` is right for the grid ``s·x`` when ``e·x == s·x``.

    ``stab`` ``(B, G)`` is the stabilizer mask of ``x`` (:func:`stabilizer_mask`),
    ``s`` ``(B,)`` the elements applied. ``e·x == s·x`` exactly when ``s⁻¹e`` fixes
    ``x`` (:func:`orient3d.geometry.groups.same_voxels`).
    """
    table, inverse = group.table.to(stab.device), group.inverse.to(stab.device)
    every = torch.arange(len(group), device=stab.device)
    rel = table[inverse[s.to(stab.device)][:, None], every[None, :]]  # (B, G): s⁻¹e
    return stab.gather(1, rel)


def symmetric_nll(logits: Tensor, right: Tensor) -> Tensor:
    """``(B,)``: ``-log Σ_{e right} softmax(logits)_e``, from ``(B, G)`` logits and mask."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -logp.masked_fill(~right, float("-inf")).logsumexp(dim=1)


def model_frame_rows(prep: Prepared, b: int) -> Tensor:
    """``(b, D, D, D)``: one grid per sample from a step's ``Prepared`` rows, detached.

    ``K`` rows per sample (``b·K`` rows; the soft search) give the row of largest weight.
    """
    x = prep.x.detach()
    k = x.shape[0] // max(1, b)
    if k == 1:
        return x
    if prep.weight is None:
        raise ValueError(f"{x.shape[0]} rows for {b} samples, but no per-row weights")
    best = prep.weight.detach().view(b, k).argmax(dim=1)  # (b,)
    return x.view(b, k, *x.shape[1:])[torch.arange(b, device=x.device), best]


@contextlib.contextmanager
def _frozen(model: VAE) -> Iterator[None]:
    """Eval mode and no gradients; the training flag is restored afterwards."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


class HeadTrainer:
    """Trains ``model.pose_head`` after each VAE step (see the module docstring)."""

    def __init__(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        seed: int,
        precision: str = "fp32",
        dist: Dist | None = None,
    ) -> None:
        if model.pose_head is None:
            raise ValueError("the model has no orientation head (model.pose_head = false)")
        self.model, self.optimizer, self.seed = model, optimizer, seed
        self.precision, self.dist = precision, dist or Dist()
        self.group = cube_group()
        self.params = list(model.pose_head.parameters())
        self.gen = torch.Generator()
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> None:
        """Seed this epoch's draws from (seed, epoch, rank) and reset the epoch's counts."""
        seq = np.random.SeedSequence([self.seed, _SEED_TAG, epoch, self.dist.rank])
        self.gen.manual_seed(int(seq.generate_state(1, np.uint64)[0]))
        self.counts = torch.zeros(3, dtype=torch.float64)  # samples, right, loss sum

    def step(self, prep: Prepared, b: int) -> Tensor:
        """Train the head on the step's ``b`` samples of ``prep``; returns their ``(b,)`` loss."""
        x = model_frame_rows(prep, b)  # (b, D, D, D) in the model's frame
        s = torch.randint(len(self.group), (b,), generator=self.gen).to(x.device)
        y = rotate(x, self.group, s)  # (b, D, D, D) = s·x
        right = symmetric_targets(stabilizer_mask(x, self.group), s, self.group)  # (b, G)
        with _frozen(self.model), autocast(x.device, self.precision):
            feats = self.model.features(y)  # (b, F), no graph
        per, hit = self._update(feats.float(), right)
        self.counts += torch.tensor([b, float(hit.sum()), float(per.sum())], dtype=torch.float64)
        return per

    def _update(self, feats: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        """One Adam step of the head; the per-sample loss and hits before it."""
        for p in self.params:
            p.requires_grad_(True)
        try:
            logits = self.model.head_logits(feats)  # (b, G)
            per = symmetric_nll(logits, right)
            grads = torch.autograd.grad(per.mean(), self.params)
        finally:
            for p in self.params:
                p.requires_grad_(False)
        if self.dist.active:  # the mean over ranks, as DDP does for the VAE
            flat = self.dist.sum_(torch.cat([g.reshape(-1) for g in grads])) / self.dist.world
            grads = tuple(flat.split([g.numel() for g in grads]))
        self.optimizer.zero_grad(set_to_none=True)  # only the head's parameters step
        for p, g in zip(self.params, grads):
            p.grad = g.view_as(p)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        hit = right.gather(1, logits.detach().argmax(dim=1, keepdim=True)).squeeze(1)
        return per.detach(), hit

    def end_epoch(self) -> dict[str, float]:
        """``pose_head_acc`` and ``pose_head_loss`` of the epoch (over every rank)."""
        n, right, loss = self.dist.sum_(self.counts.clone()).tolist()
        if n == 0:
            return {}
        return {"pose_head_acc": right / n, "pose_head_loss": loss / n}


def for_run(
    cfg: Config, model: VAE, optimizer: torch.optim.Optimizer, dist: Dist
) -> HeadTrainer | None:
    """The run's head trainer, or None without ``model.pose_head``."""
    if not cfg.model.pose_head:
        return None
    return HeadTrainer(model, optimizer, cfg.seed, cfg.train.precision, dist)
