"""A categorical prior over the canonical pose: what rewards objects for sharing one.

What it reads. The prior (``search.prior = "stored_frame"``; ``"learned"`` is its
former name) is over the canonical frame ``h = r⁻¹g`` *relative to the dataset's
stored pose*: ``g`` is the rotation the training loop applied to the stored object.
It is therefore weakly supervised by the stored frame, the same frame the
consistency metrics measure in, and can only help where that frame is itself
consistent. Its control is ``data.random_frames = true`` (every training object
turned once by a fixed random rotation before training): there the stored frame
carries no alignment and a stored-frame prior must not help. ``"class"`` reads the
labels as well (an oracle).

With a uniform prior over orientations (the seed's model) the ELBO of an object
does not depend on which pose the other objects take, so nothing pushes the
objects towards one canonical pose. A categorical prior
``p(h)`` over the ``G`` poses adds ``log p(h)`` to each object's ELBO; maximized
jointly over ``p`` it is the log-likelihood of the chosen poses, which is highest
when they agree. The search then minimizes ``L_r(x) - log p(h)`` instead of
``L_r(x)``.

Which pose the prior is over. Training shows object ``c`` as ``x = g·c`` with a
fresh uniform ``g``; the model picks ``r`` and its canonical frame is ``h = r⁻¹g``
(relative to the stored pose). A prior over ``r`` itself (the shown frame) cannot
reward agreement: ``r = g·h⁻¹`` is uniform whenever ``g`` is, whatever the ``h``,
so its EM fixed point is the uniform prior (:func:`em_update` of uniformly drawn
``r`` is uniform; ``tests/test_training_prior.py``). The prior is therefore over ``h``,
which the training loop knows because it drew ``g``: it is the prior of the
generative model of the *stored* dataset, ``c = h⁻¹·y`` with ``y`` from the VAE
and ``h ~ p(h)``, trained with augmentation. At test time ``g`` is unknown and the
search uses the scores alone (a uniform prior over ``r``, which is exact for
uniformly rotated test views).

Updates, once per epoch from the epoch's posteriors ``q(h | x)`` (one-hot for the
hard choice: then the counts of the chosen poses), averaged to ``m`` ``(G,)``:

- ``em``: ``p ← (1 - η) p + η m``, then floored (:func:`em_update`; ``η = 1`` is
  the EM M-step, the maximizer of ``Σ_i E_q log p(h_i)``);
- ``gradient``: one step on the logits ``ℓ`` of ``p = softmax(ℓ / τ)`` along
  the gradient of the same objective, ``ℓ ← ℓ + η (m - p) / τ``
  (:func:`gradient_update`; ``τ`` is the prior's temperature: higher is smoother).

In the soft choice the prior enters the posterior unscaled by the temperature,
``q(h | x) ∝ p(h)^λ · exp(-L_h / T)`` (``λ = search.prior_weight``), so annealing
``T`` sharpens the likelihood without damping the prior; the hard choice is the MAP
pose ``argmin_h L_h - λ log p(h)``.

The floor keeps every probability at least ``floor`` (then renormalized), so no
pose becomes impossible and a pose can come back. With class labels (an oracle:
the labels are not part of the model's input) there is one prior per class.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "OrientationPrior",
    "em_update",
    "floor_probs",
    "gradient_update",
    "prior_entropy",
]

Update = Literal["em", "gradient"]


def floor_probs(p: Tensor, floor: float) -> Tensor:
    """``p`` clamped below at ``floor`` and renormalized over the last axis.

    The result sums to 1; an entry at the floor ends a little below it after
    renormalization (by the factor ``1 / Σ max(p, floor)``).
    """
    if not 0 <= floor * p.shape[-1] < 1:
        raise ValueError(f"floor must lie in [0, 1/G), got {floor} for G = {p.shape[-1]}")
    q = p.clamp_min(floor)
    return q / q.sum(dim=-1, keepdim=True)


def em_update(p: Tensor, mean_posterior: Tensor, floor: float, step: float = 1.0) -> Tensor:
    """The EM update of a categorical prior: ``floor((1 - step)·p + step·m)``.

    Args:
        p: ``(..., G)`` current probabilities.
        mean_posterior: ``(..., G)`` the mean posterior ``m`` of the epoch (rows
            summing to 1; a row of zeros, e.g. a class not seen, keeps ``p``).
        floor: minimum probability before renormalization.
        step: ``η`` in (0, 1]; 1 is the M-step.

    Returns:
        ``(..., G)`` new probabilities.
    """
    seen = mean_posterior.sum(dim=-1, keepdim=True) > 0
    new = torch.where(seen, (1 - step) * p + step * mean_posterior, p)
    return floor_probs(new, floor)


def gradient_update(
    logits: Tensor, mean_posterior: Tensor, lr: float, temperature: float = 1.0
) -> Tensor:
    """One ascent step on ``Σ m log softmax(ℓ / τ)``: ``ℓ + lr (m - p) / τ``.

    ``logits`` ``ℓ`` and ``mean_posterior`` ``m`` are ``(..., G)``; ``p =
    softmax(ℓ / τ)``. Rows of ``m`` that are all zero keep their logits.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = torch.softmax(logits / temperature, dim=-1)
    seen = mean_posterior.sum(dim=-1, keepdim=True) > 0
    return torch.where(seen, logits + lr * (mean_posterior - p) / temperature, logits)


def prior_entropy(log_p: Tensor) -> Tensor:
    """Entropy in nats of each row of ``log_p`` ``(..., G)``."""
    return -(log_p.exp() * log_p).sum(dim=-1)


class OrientationPrior:
    """A categorical prior ``p(h)`` over ``G`` poses, one row per class (or one row).

    Use: :meth:`log_prob` to add ``log p`` to the negated scores, :meth:`observe`
    with each step's posterior over the candidates, :meth:`update` at the end of
    each epoch (returns what to log).
    """

    def __init__(
        self,
        order: int,
        n_classes: int = 1,
        *,
        floor: float = 1e-3,
        update: Update = "em",
        step: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        if update not in ("em", "gradient"):
            raise ValueError(f"update must be 'em' or 'gradient', got {update!r}")
        floor_probs(torch.full((order,), 1.0 / order), floor)  # validates floor
        self.order, self.n_classes = order, n_classes
        self.floor, self.kind, self.step, self.temperature = floor, update, step, temperature
        # (C, G) logits: log p for "em"; p = softmax(logits / τ) for "gradient".
        self.logits = torch.zeros(n_classes, order, dtype=torch.float64)
        self.sums = torch.zeros(n_classes, order, dtype=torch.float64)
        self.nll, self.n_obs = 0.0, 0  # Σ -E_q log p(h) and the samples, this epoch

    def log_p(self) -> Tensor:
        """``(C, G)`` log-probabilities."""
        t = self.temperature if self.kind == "gradient" else 1.0
        return torch.log_softmax(self.logits / t, dim=-1)

    def log_prob(self, poses: Tensor, labels: Tensor | None = None) -> Tensor:
        """``log p(h)`` for pose indices ``poses (B, K)`` (class ``labels (B,)``), float32."""
        table = self.log_p().float()
        row = torch.zeros(poses.shape[0], dtype=torch.long) if labels is None else labels.long()
        if self.n_classes == 1:
            row = torch.zeros_like(row)
        return table[row.cpu()[:, None], poses.cpu().long()]

    def observe(self, poses: Tensor, weight: Tensor, labels: Tensor | None = None) -> None:
        """Add the posterior ``weight (B, K)`` of pose candidates ``poses (B, K)``."""
        row = torch.zeros(poses.shape[0], dtype=torch.long) if labels is None else labels.long()
        if self.n_classes == 1:
            row = torch.zeros_like(row)
        w = weight.detach().cpu().double()
        flat = row.cpu()[:, None] * self.order + poses.cpu().long()  # (B, K)
        self.sums.view(-1).index_add_(0, flat.reshape(-1), w.reshape(-1))
        self.nll -= float((w * self.log_p().view(-1)[flat]).sum())
        self.n_obs += poses.shape[0]

    def update(self) -> dict[str, Any]:
        """Fold the epoch's posteriors into ``p``; returns what to log.

        ``prior_nll``: the epoch's mean ``-E_q log p(h)`` under the prior it was
        scored with (the prior's share of the negative ELBO), then :meth:`summary`
        of the new prior.
        """
        totals = self.sums.sum(dim=1, keepdim=True)
        m = torch.where(totals > 0, self.sums / totals.clamp_min(1e-300), torch.zeros_like(totals))
        if self.kind == "em":
            p = em_update(self.log_p().exp(), m, self.floor, self.step)
            self.logits = p.log()
        else:
            logits = gradient_update(self.logits, m, self.step, self.temperature)
            p = floor_probs(torch.softmax(logits / self.temperature, dim=-1), self.floor)
            self.logits = p.log() * self.temperature
        self.sums.zero_()
        out = {"prior_nll": self.nll / self.n_obs if self.n_obs else None, **self.summary()}
        self.nll, self.n_obs = 0.0, 0
        return out

    def summary(self) -> dict[str, Any]:
        """``prior_entropy`` (nats; mean over classes), ``prior_top_pose``, ``prior_top_prob``.

        For per-class priors the top pose and probability are those of the
        prior averaged over classes, and ``prior_top_pose_per_class`` lists each.
        """
        log_p = self.log_p()
        mean_p = log_p.exp().mean(dim=0)
        out: dict[str, Any] = {
            "prior_entropy": float(prior_entropy(log_p).mean()),
            "prior_entropy_max": math.log(self.order),
            "prior_top_pose": int(mean_p.argmax()),
            "prior_top_prob": float(mean_p.max()),
        }
        if self.n_classes > 1:
            out["prior_top_pose_per_class"] = log_p.argmax(dim=1).tolist()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.clone(), "sums": self.sums.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["logits"].shape) != tuple(self.logits.shape):
            raise ValueError(
                f"prior shape {tuple(state['logits'].shape)} does not match "
                f"{tuple(self.logits.shape)}"
            )
        self.logits = state["logits"].clone().double()
        self.sums = state["sums"].clone().double()
