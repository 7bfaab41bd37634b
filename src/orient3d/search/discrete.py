"""Orientation search: score every rotation of a batch in one pass, then choose.

Notation (as in the package docstring): an object in its ground-truth pose ``c`` is shown as
``x = g·c``. The model brings ``x`` back to its own frame with ``r⁻¹·x``; the score
of element ``r`` is the negative ELBO of that grid,

    ``L_r(x) = -E_q[log p(r⁻¹x | z)] + β·KL(q(z | r⁻¹x) || p(z))``,

computed with the encoder mean (deterministic) unless sampling is asked for. The
model's canonical frame is then ``h = r⁻¹g`` (``group.table[group.inverse[r], g]``).

Choices (:func:`choose`), with ``L`` the scores of one sample and ``|G|`` the group
order (a uniform prior over orientations):

- ``hard``: ``r = argmin L``; ``q(r | x)`` is the point mass at ``r``.
- ``soft``: ``q(r | x) = softmax(-L / T)``; ``r = argmax q`` (the same element).

``Choice.bound`` is the ELBO of the joint model (orientation and shape) under that
``q``: ``Σ_r q(r)(-L_r) + H(q) - log|G|``, a lower bound on ``log p(x)`` for every
``T``. At ``T = 1`` it equals ``logsumexp(-L) - log|G|``, the best bound; for the
hard choice it is ``-min L - log|G|``. Training with the soft choice minimizes the
free energy ``F_T = -T·logsumexp(-L / T)`` (``= -bound - log|G|`` at ``T = 1``;
``min L`` as ``T → 0``), whose gradient is ``Σ_r softmax(-L/T)_r ∇L_r``: the
posterior-weighted negative ELBO with the weights detached
(:class:`orient3d.training.modes.search.SearchMode`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from orient3d.devices import resolve_precision
from orient3d.geometry.groups import CubeGroup, cube_group, orbit, relative, rotate

__all__ = [
    "Choice",
    "canonical_pose",
    "canonicalize",
    "choose",
    "score_and_encode",
    "score_orientations",
    "scoring_precision",
]

Precision = Literal["auto", "fp32", "bf16"]


def scoring_precision(device: torch.device, precision: str) -> str:
    """The autocast of a scoring pass: ``"fp32"`` or ``"bf16"`` (``"auto"`` resolved).

    ``auto`` is training's choice (:func:`orient3d.devices.bf16_pays`): bf16 on CUDA
    with bf16 and on CPUs whose bf16 matmul runs at least twice fp32's. On an AMD EPYC
    with AVX512-BF16 bf16 scored 1.4–1.7× fp32's rows/s and picked fp32's rotation for
    152 of 152 objects (BENCHMARKS.md, "## Precision by machine kind"); on an Intel
    Xeon with AVX512-BF16 and no AMX it was no faster ("## Search per-step overhead");
    CPUs without native bf16 emulate it, several times slower.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return resolve_precision(device, precision)


@contextlib.contextmanager
def scoring_context(model: nn.Module, device_type: str, precision: str) -> Iterator[None]:
    """Eval mode (BatchNorm running stats), inference mode and optional bf16 autocast
    (``precision`` as :func:`scoring_precision` resolves it).

    The model's training flag is restored afterwards, also on error.
    """
    precision = scoring_precision(torch.device(device_type), precision)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"),
        ):
            yield
    finally:
        model.train(was_training)


def score_orientations(
    model: nn.Module,
    x: Tensor,
    group: CubeGroup | None = None,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    precision: Precision = "fp32",
    chunk: int = 256,
    candidates: Tensor | None = None,
) -> Tensor:
    """Scores ``L_r(x)``, the negative ELBO of ``r⁻¹·x``, for every element ``r``.

    Args:
        model: a :class:`~orient3d.model.VAE` (``forward(x, sample, generator)``
            returning per-sample ``neg_elbo``). Put in eval mode while scoring, then
            restored; no gradients are recorded (inference mode).
        x: ``(B, D, D, D)`` grids as shown (any dtype; 0/1 occupancy).
        group: the candidate elements (default: O, 24 rotations).
        sample: score with a sampled ``z`` (drawn from ``generator``) instead of
            the encoder mean.
        precision: ``"bf16"`` runs the passes under bf16 autocast (the losses are
            summed in float32); ``"auto"``: :func:`scoring_precision`.
        chunk: rows per forward pass; each pass holds whole samples, so at least
            one sample's ``G`` (or ``K``) rows.
        candidates: optional ``(B, K)`` element indices: score only those.

    Returns:
        ``(B, G)`` float32 scores, or ``(B, K)`` for ``candidates``;
        ``out[b, k]`` scores element ``k`` (or ``candidates[b, k]``).
    """
    return _score_rows(model, x, group, sample, generator, precision, chunk, candidates, False)[0]


def score_and_encode(
    model: nn.Module,
    x: Tensor,
    group: CubeGroup | None = None,
    *,
    sample: bool = False,
    generator: torch.Generator | None = None,
    precision: Precision = "fp32",
    chunk: int = 256,
    candidates: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`score_orientations` and, from the same passes, the encoder means.

    Returns:
        ``(scores, mu)``: scores as :func:`score_orientations`, and ``mu (B, G, Z)``
        (``(B, K, Z)`` for ``candidates``) float32, the encoder mean of each scored
        grid ``r⁻¹·x``.
    """
    scores, mu = _score_rows(model, x, group, sample, generator, precision, chunk, candidates, True)
    return scores, (mu if mu is not None else scores.new_empty(*scores.shape, 0))  # (no rows)


def _score_rows(
    model: nn.Module,
    x: Tensor,
    group: CubeGroup | None,
    sample: bool,
    generator: torch.Generator | None,
    precision: Precision,
    chunk: int,
    candidates: Tensor | None,
    keep_mu: bool,
) -> tuple[Tensor, Tensor | None]:
    group = group or cube_group()
    if x.dim() != 4 or not (x.shape[1] == x.shape[2] == x.shape[3]):
        raise ValueError(f"x must be (B, D, D, D), got {tuple(x.shape)}")
    b, d = x.shape[0], x.shape[-1]
    inverse = group.inverse.to(x.device)
    inv_all = group.inverse.tolist()
    if candidates is not None:
        if candidates.dim() != 2 or candidates.shape[0] != b:
            raise ValueError(f"candidates must be (B, K) = ({b}, K), got {tuple(candidates.shape)}")
        inv_c = inverse[candidates.to(x.device, torch.long)]  # (B, K) elements to apply
    k = len(group) if candidates is None else candidates.shape[1]
    per = max(1, chunk // k)  # samples per pass
    out = torch.empty(b, k, dtype=torch.float32, device=x.device)
    mu: Tensor | None = None
    with scoring_context(model, x.device.type, precision):
        for s in range(0, b, per):
            xb = x[s : s + per]  # (b', D, D, D)
            if candidates is None:
                rows = orbit(xb, group, inv_all)  # (b', G, D, D, D): row r is r⁻¹·x
            else:
                rows = rotate(xb.repeat_interleave(k, 0), group, inv_c[s : s + per].reshape(-1))
            rows = rows.reshape(-1, d, d, d)  # (b' K, D, D, D)
            res = model(rows, sample=sample, generator=generator)
            out[s : s + per] = res.neg_elbo.float().view(-1, k)
            if keep_mu:
                if mu is None:
                    mu = torch.empty(b, k, res.mu.shape[-1], dtype=torch.float32, device=x.device)
                mu[s : s + per] = res.mu.float().view(-1, k, res.mu.shape[-1])
    return out, mu


@dataclass(frozen=True)
class Choice:
    """The result of :func:`choose` for a batch of ``B`` samples."""

    r: Tensor  # (B,) chosen element: argmin of the scores (a group index)
    scores: Tensor  # (B, G) or (B, K): the scores L the choice was made from
    posterior: Tensor  # (B, G) q(r | x): one-hot (hard) or softmax(-L/T) (soft); 0 off candidates
    bound: Tensor  # (B,) Σ q(-L) + H(q) - log|G|, the ELBO under q (a lower bound on log p(x))
    weight: Tensor  # (B, G) or (B, K): q on the scored columns (the training weights)
    temperature: float


def _hard(scores: Tensor, temperature: float) -> Tensor:
    """One-hot ``(B, K)`` at the argmin."""
    q = torch.zeros_like(scores)
    return q.scatter_(1, scores.argmin(dim=1, keepdim=True), 1.0)


def _soft(scores: Tensor, temperature: float) -> Tensor:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(-scores.double() / temperature, dim=1).to(scores.dtype)


_CHOICES: dict[str, Callable[[Tensor, float], Tensor]] = {"hard": _hard, "soft": _soft}


def choose(
    scores: Tensor,
    choice: Literal["hard", "soft"] = "hard",
    temperature: float = 1.0,
    *,
    candidates: Tensor | None = None,
    order: int | None = None,
) -> Choice:
    """Hard (argmin) or soft (posterior ``softmax(-L/T)``) choice of orientation.

    Args:
        scores: ``(B, G)`` from :func:`score_orientations`, or ``(B, K)`` with the
            ``candidates`` they score.
        choice: ``"hard"`` or ``"soft"`` (see the module docstring).
        temperature: ``T`` of the soft posterior (ignored by ``hard``).
        candidates: ``(B, K)`` element indices of the columns of ``scores``.
        order: the group order ``|G|`` (default: ``scores.shape[1]``; required
            with ``candidates``). Elements that were not scored get ``q = 0``.

    Returns:
        A :class:`Choice`; ``r`` is always ``argmin L`` (ties: the lowest column).
    """
    if choice not in _CHOICES:
        raise ValueError(f"choice must be one of {sorted(_CHOICES)}, got {choice!r}")
    if candidates is not None and order is None:
        raise ValueError("order (the group order) is required with candidates")
    n = int(order if order is not None else scores.shape[1])
    q = _CHOICES[choice](scores, temperature)  # (B, K)
    qd = q.double()
    entropy = -(qd * torch.log(qd.clamp_min(1e-300))).sum(dim=1)
    bound = (qd * -scores.double()).sum(dim=1) + entropy - math.log(n)
    col = scores.argmin(dim=1)
    if candidates is None:
        r, posterior = col, q
    else:
        cand = candidates.to(scores.device, torch.long)
        r = cand.gather(1, col[:, None]).squeeze(1)
        posterior = torch.zeros(scores.shape[0], n, dtype=q.dtype, device=q.device)
        posterior.scatter_add_(1, cand, q)
    return Choice(r, scores, posterior, bound.to(scores.dtype), q, temperature)


def canonicalize(
    model: nn.Module, x: Tensor, group: CubeGroup | None = None, **score_kw: Any
) -> Tensor:
    """The hard choice ``r (B,)`` for grids ``x (B, D, D, D)``: ``argmin_r L_r(x)``.

    The reconstruction under the "rotated+search" protocol is
    ``r·decode(encode(r⁻¹·x))``. ``score_kw`` go to :func:`score_orientations`.
    """
    return score_orientations(model, x, group, **score_kw).argmin(dim=1)


def canonical_pose(r: Tensor, g: Tensor, group: CubeGroup) -> Tensor:
    """``h = r⁻¹g``, the canonical frame; ``r = g·h⁻¹`` recovers the choice from ``h``."""
    return relative(r, g, group)


def choice_from_pose(h: Tensor, g: Tensor, group: CubeGroup) -> Tensor:
    """``r = g·h⁻¹``: the element that turns ``x = g·c`` into the canonical grid ``h·c``.

    Shapes broadcast (``h (B, P)`` with ``g (B, 1)`` gives ``(B, P)``).
    """
    table, inverse = group.table.to(h.device), group.inverse.to(h.device)
    return table[g.to(h.device), inverse[h]]
