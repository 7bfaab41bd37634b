"""Per-object reconstruction metrics of Bernoulli voxel probabilities.

Measured on the input as given: pass the probabilities already
rotated back into the input's frame when the model searched over rotations.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RECONSTRUCTION_KEYS", "reconstruction_means", "reconstruction_metrics"]

RECONSTRUCTION_KEYS = ("mse", "bce", "iou", "tpr", "tnr")
_EPS = 1e-7


def reconstruction_metrics(probs: Tensor, x: Tensor, threshold: float = 0.5) -> dict[str, Tensor]:
    """Per-object MSE, BCE, IoU, true-positive and true-negative rates.

    Args:
        probs: ``(N, ...)`` Bernoulli means in [0, 1], e.g. ``(N, D, D, D)``.
        x: binary voxels of the same shape (any dtype; nonzero is occupied).
        threshold: a voxel is predicted occupied when ``probs >= threshold``.

    Returns:
        ``(N,)`` float tensors on ``probs``' device, under the keys
        ``mse`` (mean over voxels of ``(p - x)²``), ``bce`` (mean over voxels of
        ``-x log p - (1 - x) log(1 - p)``, ``p`` clamped to ``[1e-7, 1 - 1e-7]``),
        ``iou`` (|pred ∩ x| / |pred ∪ x|, 1 when both are empty), ``tpr``
        (recall of occupied voxels, 1 when ``x`` is empty) and ``tnr`` (of empty
        voxels, 1 when ``x`` is full). No gradients flow.
    """
    if probs.shape != x.shape or probs.dim() < 2:
        raise ValueError(
            f"probs and x must share a shape (N, ...), got {tuple(probs.shape)}, {tuple(x.shape)}"
        )
    with torch.no_grad():
        p = probs.detach().flatten(1).to(torch.float32)
        t = (x.detach().flatten(1) != 0).to(p.device)
        tf = t.to(torch.float32)
        pc = p.clamp(_EPS, 1.0 - _EPS)
        pred = p >= threshold
        inter = (pred & t).sum(1).to(torch.float32)
        union = (pred | t).sum(1).to(torch.float32)
        pos = t.sum(1).to(torch.float32)
        neg = (~t).sum(1).to(torch.float32)
        true_neg = (~pred & ~t).sum(1).to(torch.float32)
        one = torch.ones_like(inter)
        return {
            "mse": ((p - tf) ** 2).mean(1),
            "bce": -(tf * pc.log() + (1.0 - tf) * (1.0 - pc).log()).mean(1),
            "iou": torch.where(union > 0, inter / union.clamp_min(1.0), one),
            "tpr": torch.where(pos > 0, inter / pos.clamp_min(1.0), one),
            "tnr": torch.where(neg > 0, true_neg / neg.clamp_min(1.0), one),
        }


def reconstruction_means(probs: Tensor, x: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """The means over objects of :func:`reconstruction_metrics`, as floats."""
    per = reconstruction_metrics(probs, x, threshold=threshold)
    return {k: float(v.mean()) for k, v in per.items()}
