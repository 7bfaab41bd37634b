"""Orientation recovery: turn test objects by random rotations and find them again.

Protocol. Object ``i`` of the test set (in its stored, ground-truth pose ``c``) is
shown as ``x = g·c`` for ``g`` drawn uniformly from O with the given generator;
the model scores every element (:func:`orient3d.search.score_orientations`,
encoder mean) and predicts ``r`` (``argmin`` of the scores). A model trained on
the stored pose (mode ``single``) should find ``r·c == g·c``: the prediction
counts right modulo the object's symmetry. A wrong one is off by the error
rotation ``r·s·g⁻¹`` of smallest angle over the object's stabilizer ``s``
(90°, 120° or 180° in O). The posterior ``q(r | x)`` of the chosen mode (one-hot
for ``hard``, ``softmax(-L/T)`` for ``soft``) gives the mass on the truth, summed
over every element with the same voxels as ``g·c``.

Proposals (``proposals = K``, a model trained with ``model.pose_head = true``): the
orientation head (:meth:`orient3d.model.VAE.pose_logits`, one encoder pass per
object) proposes its ``K`` most likely elements and only those are scored
(``score_orientations(..., candidates=...)``), the choice made among them (elements
not proposed get ``q = 0``); ``K = 1`` takes the head's argmax with no VAE scoring
(``q`` one-hot on it). ``K`` = 0 or 24 is the exhaustive search above. With ``views
= V`` the head reads V exact views of each object (the identity and turns about the
up axis) and averages its log-probabilities (:func:`head_log_probs`): V encoder
passes instead of one. The head's passes are timed with the scoring.

Head mass (``head_mass = m < 1`` with ``proposals = K`` in 2..23): each object keeps
only its head's most likely elements until their probabilities sum to at least
``m`` (at most ``K``), so a confident head proposes fewer. An object left with one
element takes it with no VAE scoring, as ``K = 1`` does; the others are scored on
their own sets. ``vae_rows_per_object`` says how many elements the VAE scored per
object on average. The head's probabilities are its own: choose ``m`` on validation
objects, not on the test set (``benchmarks/bench_pose_head.py`` does).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Literal

import torch
from torch import Tensor

from orient3d.data import VoxelSet
from orient3d.errors import ConfigError
from orient3d.geometry.groups import cube_group, rotate, view_elements
from orient3d.metrics.recovery import recovery_accuracy
from orient3d.metrics.stats import wilson_ci
from orient3d.model import VAE
from orient3d.search.discrete import Precision, choose, score_orientations, scoring_context

__all__ = [
    "check_head_mass",
    "check_proposals",
    "mass_sizes",
    "recover",
    "recovery_table",
]

log = logging.getLogger(__name__)


def recover(
    model: VAE,
    test: VoxelSet,
    n: int | None = None,
    *,
    generator: torch.Generator,
    choice: Literal["hard", "soft"] = "hard",
    temperature: float = 1.0,
    precision: Precision = "fp32",
    chunk: int = 256,
    batch_size: int = 128,
    proposals: int = 0,
    views: int = 1,
    head_mass: float = 1.0,
) -> dict[str, Any]:
    """Recovery accuracy of ``model`` on ``n`` rotated test objects (see the module docstring).

    Objects are taken in order, cycling when ``n > len(test)`` (default: all once);
    each gets a fresh random element of O from ``generator``.

    Returns a JSON-ready dict: ``accuracy`` (modulo symmetry) with ``accuracy_ci``
    (95% Wilson score interval: not empty at 0 or n correct), ``n``,
    ``n_correct``, ``errors_by_angle`` (``{"90": count, ...}`` over the wrong
    predictions), ``wrong_views`` (the indices ``i`` of the views recovered wrong;
    view ``i`` shows object ``i % len(test)``), ``posterior_mass_on_truth``, ``objects_per_s``
    (scoring and choice only, the head's pass included), ``seconds``, ``proposals``
    (elements considered per object: 24 for the exhaustive search) and ``protocol``.
    ``proposals`` K in 1..23 needs a model with an orientation head (module docstring);
    its log-probabilities are averaged over ``views`` views (:func:`head_log_probs`);
    ``head_mass`` < 1 keeps fewer of the K per object (module docstring), and
    ``vae_rows_per_object`` is the mean number of elements the VAE scored.
    """
    o = cube_group()
    n = len(test) if n is None else n
    if n < 1 or len(test) == 0:
        raise ValueError(f"need n >= 1 and a non-empty test set, got n={n}, {len(test)} objects")
    k = check_proposals(model, proposals)
    if views != 1 and k == len(o):
        raise ConfigError(f"views={views} needs proposals in 1..23 (the head's); got {proposals}")
    check_head_mass(head_mass, k)
    device = next(model.parameters()).device
    idx = torch.arange(n) % len(test)
    g = torch.randint(len(o), (n,), generator=generator, device=generator.device).cpu()
    pred = torch.empty(n, dtype=torch.long)
    post = torch.empty(n, len(o))
    seconds, rows = 0.0, 0
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        x = rotate(test.voxels[idx[sl]], o, g[sl]).to(device)  # (b, D, D, D) uint8 = g·c
        t0 = time.perf_counter()
        r, q, m = _predict(model, x, k, views, choice, temperature, precision, chunk, head_mass)
        pred[sl], post[sl] = r.cpu(), q.float().cpu()
        seconds += time.perf_counter() - t0
        rows += m
    stab = test.stabilizers[idx]
    res = recovery_accuracy(pred, g, stab, o, posterior=post)
    _, lo, hi = wilson_ci(int(res["n_correct"]), n)
    return {
        "accuracy": res["accuracy"],
        "accuracy_ci": [lo, hi],  # Wilson score, 95%
        "accuracy_ci_method": "wilson",
        "n": n,
        "n_correct": res["n_correct"],
        "errors_by_angle": {str(a): c for a, c in sorted(res["error_angle_counts"].items())},
        "wrong_views": [int(i) for i in (~res["correct"]).nonzero()[0]],
        "posterior_mass_on_truth": res["posterior_mass"],
        "objects_per_s": n / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "proposals": k,
        "head_views": views if k < len(o) else 0,
        "head_mass": head_mass if 1 < k < len(o) else 1.0,
        "vae_rows_per_object": rows / n,
        "protocol": {
            "rotations": "each object turned by a uniform random element of O (seeded)",
            "score": _scored(k, views, head_mass),
            "choice": choice,
            "temperature": temperature,
            "precision": precision,
            "correct": "modulo the object's symmetry (same voxels as the truth)",
            "device": str(device),
        },
    }


def _scored(k: int, views: int, mass: float = 1.0) -> str:
    """What the protocol scored with ``k`` elements per object."""
    head = "the orientation head" + (f" (averaged over {views} views)" if views > 1 else "")
    if k == 1:
        return f"{head}'s argmax, no VAE scoring"
    which = "all 24 elements" if k == len(cube_group()) else f"{head}'s top {k}"
    if 1 < k < len(cube_group()) and mass < 1:
        which += (
            f", cut to the fewest whose head probability sums to {mass:g} "
            "(one left: taken without scoring)"
        )
    return f"negative ELBO of r⁻¹·x with the encoder mean, {which}"


def check_head_mass(mass: float, k: int) -> None:
    """``head_mass`` in (0, 1]; below 1 only with ``k`` (proposals resolved) in 2..23."""
    if not 0 < mass <= 1:
        raise ConfigError(f"head_mass: {mass} is invalid, must be in (0, 1]")
    if mass < 1 and not 1 < k < len(cube_group()):
        raise ConfigError(f"head_mass={mass} needs proposals K in 2..23 (the head's); got {k}")


def check_proposals(model: VAE, proposals: int) -> int:
    """The elements to consider per object for ``proposals`` (0 or 24: all 24); one
    :class:`ConfigError` when it is out of range or the model has no orientation head."""
    order = len(cube_group())
    if not 0 <= proposals <= order:
        raise ConfigError(f"proposals: {proposals} is invalid, must be in 0..{order}")
    if 0 < proposals < order and model.pose_head is None:
        raise ConfigError(
            f"proposals={proposals} needs a model with an orientation head, and this one has "
            "none: train it with --model.pose_head=true (or use proposals=0, all 24)"
        )
    return proposals if 0 < proposals < order else order


@functools.cache
def head_log_probs(model: VAE, x: Tensor, views: int = 1, precision: Precision = "fp32") -> Tensor:
    """``(B, G)``: the orientation head's log-probabilities of every element ``r`` for
    grids ``x`` ``(B, D, D, D)`` as shown (eval mode, no gradients), averaged over
    ``views`` exact views ``q·x`` (:func:`view_elements`): the head's answer ``e`` for
    ``q·x`` says ``r = q⁻¹e`` for ``x``, so view ``q`` scores ``r`` at its column ``q∘r``."""
    o = cube_group()
    if not 1 <= views <= len(o):
        raise ConfigError(f"views: {views} is invalid, must be in 1..{len(o)}")
    total = torch.zeros(x.shape[0], len(o), device=x.device)
    with scoring_context(model, x.device.type, precision):
        for q in view_elements()[:views]:
            logp = torch.log_softmax(model.pose_logits(rotate(x, o, q)), dim=1)  # (B, G)
            total += logp[:, o.table[q].to(x.device)]  # column r: the view's q∘r
    return total / views


def mass_sizes(log_probs: Tensor, k: int, mass: float) -> Tensor:
    """``(B,)``: per row of ``log_probs`` ``(B, G)``, the fewest most likely elements
    whose probabilities sum to at least ``mass``, at most ``k`` (1 ≤ size ≤ k)."""
    top = log_probs.topk(k, dim=1).values.exp().cumsum(dim=1)  # (B, k), increasing
    below = (top < mass).sum(dim=1)  # elements before the sum reaches mass
    return (below + 1).clamp(max=k)


def _predict(
    model: VAE,
    x: Tensor,
    k: int,
    views: int,
    choice: Literal["hard", "soft"],
    temperature: float,
    precision: Precision,
    chunk: int,
    mass: float = 1.0,
) -> tuple[Tensor, Tensor, int]:
    """The chosen element ``(b,)``, posterior ``(b, G)`` and the number of elements the
    VAE scored, with at most ``k`` elements per object (``mass``: module docstring)."""
    o = cube_group()
    b = x.shape[0]
    if k == len(o):
        ch = choose(
            score_orientations(model, x, o, precision=precision, chunk=chunk), choice, temperature
        )
        return ch.r, ch.posterior, b * len(o)
    logp = head_log_probs(model, x, views, precision)
    cand = logp.topk(k, dim=1).indices  # (b, k), best first
    sizes = torch.full((b,), k, device=x.device) if mass >= 1 else mass_sizes(logp, k, mass)
    r = cand[:, 0].clone()
    post = torch.nn.functional.one_hot(r, len(o)).float()  # an object left with one element
    for size in sizes.unique().tolist():
        if size == 1:
            continue
        rows = (sizes == size).nonzero(as_tuple=True)[0]
        c = cand[rows, :size]
        scores = score_orientations(
            model, x[rows], o, precision=precision, chunk=chunk, candidates=c
        )
        ch = choose(scores, choice, temperature, candidates=c, order=len(o))
        r[rows], post[rows] = ch.r, ch.posterior.float()
    return r, post, int(sizes[sizes > 1].sum())


def recovery_table(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`recover` result."""
    lo, hi = result["accuracy_ci"]
    rows = [
        ("accuracy (mod symmetry)", f"{result['accuracy']:.3f}  [{lo:.3f}, {hi:.3f}]"),
        ("objects", f"{result['n']}"),
        *((f"errors at {a}°", f"{c}") for a, c in result["errors_by_angle"].items()),
        ("posterior mass on truth", f"{result['posterior_mass_on_truth']:.3f}"),
        ("throughput", f"{result['objects_per_s']:.1f} objects/s"),
        ("elements considered", f"{result.get('proposals', 24)} per object"),
        ("elements scored", f"{result.get('vae_rows_per_object', 24):.2f} per object"),
        ("choice", f"{result['protocol']['choice']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
