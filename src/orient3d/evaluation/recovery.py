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
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import torch

from orient3d.data import VoxelSet
from orient3d.geometry.groups import cube_group, rotate
from orient3d.metrics.recovery import recovery_accuracy
from orient3d.metrics.stats import wilson_ci
from orient3d.model import VAE
from orient3d.search.discrete import Precision, choose, score_orientations

__all__ = ["recover", "recovery_table"]

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
) -> dict[str, Any]:
    """Recovery accuracy of ``model`` on ``n`` rotated test objects (see the module docstring).

    Objects are taken in order, cycling when ``n > len(test)`` (default: all once);
    each gets a fresh random element of O from ``generator``.

    Returns a JSON-ready dict: ``accuracy`` (modulo symmetry) with ``accuracy_ci``
    (95% Wilson score interval: not empty at 0 or n correct), ``n``,
    ``n_correct``, ``errors_by_angle`` (``{"90": count, ...}`` over the wrong
    predictions), ``posterior_mass_on_truth``, ``objects_per_s``
    (scoring and choice only), ``seconds`` and ``protocol``.
    """
    o = cube_group()
    n = len(test) if n is None else n
    if n < 1 or len(test) == 0:
        raise ValueError(f"need n >= 1 and a non-empty test set, got n={n}, {len(test)} objects")
    device = next(model.parameters()).device
    idx = torch.arange(n) % len(test)
    g = torch.randint(len(o), (n,), generator=generator, device=generator.device).cpu()
    pred = torch.empty(n, dtype=torch.long)
    post = torch.empty(n, len(o))
    seconds = 0.0
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        x = rotate(test.voxels[idx[sl]], o, g[sl]).to(device)  # (b, D, D, D) uint8 = g·c
        t0 = time.perf_counter()
        scores = score_orientations(model, x, o, precision=precision, chunk=chunk)  # (b, G)
        ch = choose(scores, choice, temperature)
        pred[sl], post[sl] = ch.r.cpu(), ch.posterior.float().cpu()
        seconds += time.perf_counter() - t0
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
        "posterior_mass_on_truth": res["posterior_mass"],
        "objects_per_s": n / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "protocol": {
            "rotations": "each object turned by a uniform random element of O (seeded)",
            "score": "negative ELBO of r⁻¹·x with the encoder mean, all 24 elements",
            "choice": choice,
            "temperature": temperature,
            "precision": precision,
            "correct": "modulo the object's symmetry (same voxels as the truth)",
            "device": str(device),
        },
    }


def recovery_table(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`recover` result."""
    lo, hi = result["accuracy_ci"]
    rows = [
        ("accuracy (mod symmetry)", f"{result['accuracy']:.3f}  [{lo:.3f}, {hi:.3f}]"),
        ("objects", f"{result['n']}"),
        *((f"errors at {a}°", f"{c}") for a, c in result["errors_by_angle"].items()),
        ("posterior mass on truth", f"{result['posterior_mass_on_truth']:.3f}"),
        ("throughput", f"{result['objects_per_s']:.1f} objects/s"),
        ("choice", f"{result['protocol']['choice']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
