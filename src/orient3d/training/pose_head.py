"""Fitting the orientation head (``model.pose_head``) to a trained VAE's encoder.

When training ends (:func:`orient3d.training.loop.fit`), :func:`fit_run` takes the
selected checkpoint (``best``, else ``last``: what :func:`orient3d.evaluation.load_run`
loads), shows every training object in all 24 poses of O, reads the encoder's
features of each view once (eval mode, no gradients, float32) and fits the head on
those cached features for ``model.pose_head_epochs`` epochs with a symmetry-aware
cross-entropy,

    ``-log Σ_{e : e·x == s·x} softmax(logits(s·x))_e``

(``x`` the object in the model's frame, ``s`` the pose shown): every element that gives
the same voxels as the truth counts (the object's stabilizer,
:func:`orient3d.geometry.groups.same_voxels`). Logit ``r`` says "the grid shown is
``r·x``", the index :func:`orient3d.search.score_orientations` scores. The fitted head
is written into the selected checkpoint (and into the other one when it holds the
same epoch); ``RUN/pose_head.json`` reports its accuracy on the training objects and
on all 24 poses of the validation objects (top 1, 2, 4; and averaged over 1, 2, 4
views, :func:`orient3d.evaluation.recovery.head_log_probs`).

Only the head's parameters change, after the last epoch, from an initialization and
batch order of their own (seeded from the run's seed): the VAE's weights,
``metrics.jsonl`` and ``results.json`` are bitwise those of the same run without a
head. A resumed run that had finished fits the same head again.

Why after training and on all 24 poses rather than beside each step: a head trained
on one fresh random pose per object per step sees each object in about as many poses
as there are epochs, on features that drift, and with the VAE's learning rate decayed
to zero when the features settle. In a trial at 32³ (the ModelNet10 grids, a 12-epoch
single-mode model, the test objects in all 24 poses) that head was right for 20% of
the views, against 65–68% for this fit on the same encoder (72% for exhaustive search on
one view per object); "## Pose head" in BENCHMARKS.md measures the fit as shipped.

The model's frame, and so what the head learns, depends on the mode
(``Mode.canonicalize`` on each stored grid):

- ``single`` and ``augmented``: the dataset's stored frame. The head learns the stored
  frame: it is supervised by the ground-truth pose (the dataset's alignment).
- ``search``: the canonical grid the model's exhaustive search picks for each object
  (``r⁻¹·x``). No ground truth: the head learns to predict the search's own choice.
- ``continuous``: its pose is not an element of O, so the exhaustive search over O
  (what ``orient3d recover`` does) gives the frame, as for ``search``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.errors import RunError
from orient3d.evaluation.recovery import view_elements
from orient3d.geometry.groups import CubeGroup, cube_group, orbit, rotate, stabilizer_mask
from orient3d.model import VAE
from orient3d.rundir import runs
from orient3d.search.discrete import canonicalize, scoring_context
from orient3d.training.modes import Mode

__all__ = [
    "MAX_OBJECTS",
    "fit_head",
    "fit_run",
    "head_accuracy",
    "model_frame",
    "pose_features",
    "symmetric_nll",
    "symmetric_targets",
]

log = logging.getLogger(__name__)

MAX_OBJECTS = 2048  # training objects the head is fitted on (a seeded subset beyond)
LR, BATCH = 2e-3, 256  # the head's Adam (cosine schedule over its epochs) and batch size
_SEED_TAG = 0x9E3D  # keeps the head's draws apart from the run's other seeded streams
REPORT = "pose_head.json"


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


def model_frame(model: VAE, mode: Mode, x: Tensor, chunk: int = 64) -> Tensor:
    """``(N, D, D, D)``: the grids ``x`` (as stored) turned into the model's frame."""
    o = cube_group()
    out = []
    for s in range(0, x.shape[0], chunk):
        xb = x[s : s + chunk]
        r = mode.canonicalize(model, xb.float())
        if r is not None and r.dim() != 1:  # not an element of O: the search over O
            r = canonicalize(model, xb, o)
        out.append(xb if r is None else rotate(xb, o, o.inverse[r.cpu()]))
    return torch.cat(out)


def pose_features(model: VAE, x: Tensor, chunk: int = 8) -> Tensor:
    """``(N, G, F)``: encoder features of every pose ``e·x`` of grids ``x`` ``(N, D, D, D)``
    (eval mode, no gradients, float32)."""
    o = cube_group()
    device = next(model.parameters()).device
    out = []
    with scoring_context(model, device.type, "fp32"):
        for s in range(0, x.shape[0], chunk):
            views = orbit(x[s : s + chunk].to(device), o)  # (b, G, D, D, D): e·x
            feats = model.features(views.flatten(0, 1).float())  # (b G, F)
            out.append(feats.float().view(-1, len(o), feats.shape[1]).cpu())
    return torch.cat(out)  # (outside inference mode: a tensor autograd may save)


def _reset(head: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in head.modules():
            if isinstance(m, nn.Linear | nn.LayerNorm):
                m.reset_parameters()


def fit_head(
    model: VAE, x: Tensor, *, epochs: int, seed: int, stab: Tensor | None = None
) -> dict[str, float]:
    """Fit ``model.pose_head`` (re-initialized from ``seed``) to all poses of the grids
    ``x`` ``(N, D, D, D)`` in the model's frame; returns the final training accuracy
    (modulo symmetry) and loss. Adam, cosine schedule, batch 256; the VAE is untouched."""
    head = model.pose_head
    if head is None:
        raise ValueError("the model has no orientation head (model.pose_head = false)")
    o = cube_group()
    feats = pose_features(model, x).flatten(0, 1)  # (N G, F)
    stab = stabilizer_mask(x, o) if stab is None else stab
    right = symmetric_targets(
        stab.repeat_interleave(len(o), 0), torch.arange(len(o)).repeat(x.shape[0]), o
    )  # (N G, G)
    _reset(head, seed)
    device = next(head.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    params = list(head.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    head.requires_grad_(True)
    try:
        for _ in range(epochs):
            loss_sum, hits = 0.0, 0.0
            for idx in torch.randperm(feats.shape[0], generator=gen).split(BATCH):
                logits = model.head_logits(feats[idx].to(device))  # (b, G)
                ok = right[idx].to(device)
                per = symmetric_nll(logits, ok)
                opt.zero_grad(set_to_none=True)
                per.mean().backward()
                opt.step()
                loss_sum += float(per.detach().sum())
                hits += float(ok.gather(1, logits.detach().argmax(1, keepdim=True)).sum())
            sched.step()
    finally:
        head.requires_grad_(False)
    return {"train_acc": hits / feats.shape[0], "train_loss": loss_sum / feats.shape[0]}


def head_accuracy(model: VAE, x: Tensor) -> dict[str, dict[str, float]]:
    """The head on every pose ``e·x`` of grids ``x`` (model frame): the fraction whose truth
    is among its ``k`` best elements (``top_k``, k = 1, 2, 4) and whose argmax over ``v``
    averaged views is right (``views``, v = 1, 2, 4), modulo symmetry. The views of
    :func:`orient3d.evaluation.recovery.head_log_probs` are poses of the same object, so
    each pose's features are read once."""
    o = cube_group()
    n, g = x.shape[0], len(o)
    feats = pose_features(model, x)  # (N, G, F)
    with torch.no_grad():
        logp = F.log_softmax(model.head_logits(feats.flatten(0, 1)), dim=1).view(n, g, g).cpu()
    every = torch.arange(g)
    right = symmetric_targets(stabilizer_mask(x, o).repeat_interleave(g, 0), every.repeat(n), o)
    right = right.view(n, g, g)  # [object, pose shown, element]
    views: dict[str, float] = {}
    for v in (1, 2, 4):
        total = torch.zeros(n, g, g)
        for q in view_elements()[:v]:
            qe = o.table[q]  # view q of pose p is pose q∘p; its column q∘r scores r
            total += logp[:, qe][:, :, qe]
        views[str(v)] = right.gather(2, total.argmax(2, keepdim=True)).float().mean().item()
    top_k = {
        str(k): right.gather(2, logp.topk(k, dim=2).indices).any(2).float().mean().item()
        for k in (1, 2, 4)
    }
    return {"top_k": top_k, "views": views}


def _subset(vs: VoxelSet, seed: int) -> Tensor:
    if len(vs) <= MAX_OBJECTS:
        return vs.voxels
    keep = torch.randperm(len(vs), generator=torch.Generator().manual_seed(seed))
    return vs.voxels[keep[:MAX_OBJECTS].sort().values]


def fit_run(
    model: VAE, mode: Mode, cfg: Config, train_set: VoxelSet, val_set: VoxelSet, out: Path
) -> dict[str, Any]:
    """Fit the head of run ``out``'s selected checkpoint (module docstring), write it into
    the checkpoint(s) of that epoch and ``RUN/pose_head.json``; returns the report.

    ``model`` is the run's model with a head (its weights are replaced by the selected
    checkpoint's). A checkpoint saved without a head (a run trained with
    ``model.pose_head = false``) gets one: only the head's weights may be missing."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    which = "best" if runs.checkpoint_path(out, "best").exists() else "last"
    path = runs.checkpoint_path(out, which)
    state = runs.load_checkpoint(path, device)
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise RunError(f"{path}: does not match the model: {err}") from err
    other = [k for k in missing if not k.startswith("pose_head.")] + list(unexpected)
    if other:
        raise RunError(f"{path}: does not match the model: {', '.join(other[:5])}")
    seed = cfg.seed * 1_000_003 + _SEED_TAG
    grids = model_frame(model, mode, _subset(train_set, seed))
    fitted = fit_head(model, grids, epochs=cfg.model.pose_head_epochs, seed=seed)
    head = {k: v for k, v in model.state_dict().items() if k.startswith("pose_head.")}
    for name in ("best", "last"):  # the selected one, and the other if it is the same epoch
        path = runs.checkpoint_path(out, name)
        saved = runs.load_checkpoint(path, device) if path.exists() else None
        if saved is not None and (name == which or saved["epoch"] == state["epoch"]):
            saved["model"].update(head)
            runs.save_checkpoint(path, saved)
    report: dict[str, Any] = {
        "checkpoint": which,
        "epoch": state["epoch"],
        "objects": int(grids.shape[0]),
        "epochs": cfg.model.pose_head_epochs,
        **fitted,
    }
    if len(val_set):
        val = head_accuracy(model, model_frame(model, mode, _subset(val_set, seed)))
        report.update(val_top_k=val["top_k"], val_views=val["views"])
    report["seconds"] = time.perf_counter() - t0
    runs.write_json(Path(out) / REPORT, report)
    log.info("%s: orientation head fitted: %s", out, report)
    return report
