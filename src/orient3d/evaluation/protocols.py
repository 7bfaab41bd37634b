"""Test-set evaluation under the protocols below, and loading a trained run.

Protocols (two models are only compared under the same one):

- ``as_stored``: the test objects as stored (the default for mode ``single``);
- ``rotated``: each test object turned by a fixed random element of O drawn from
  the run's seed (the default for ``augmented``);
- ``rotated+search``: as ``rotated``, then each input ``x`` is canonicalized by the
  mode's search, ``r = canonicalize(model, x)``, and the reconstruction is
  ``x̂ = r·decode(encode(r⁻¹·x))``, measured against ``x`` as given (the default
  for ``search``);
- ``so3``: each test object turned by a fixed seeded uniform SO(3) rotation
  (trilinear resampling, thresholded at 0.5; :func:`so3_eval_rotations`);
- ``so3+search``: as ``so3``, then ``canonicalize`` returns each input's pose as
  a ``(B, 3, 4)`` matrix ``[s R | t]`` (:mod:`orient3d.geometry.transforms`) and the
  reconstruction is ``x̂ = P·decode(encode(P⁻¹·x))`` by resampling (the default
  for ``continuous``). ``rotated+search`` accepts such poses too.

Every protocol is deterministic: the encoder mean is decoded (no sampled ``z``),
so ``test_neg_elbo`` is the negative ELBO's one-point estimate at ``z = mu``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.devices import autocast
from orient3d.errors import ConfigError, RunError
from orient3d.evaluation.names import DEFAULT_PROTOCOL, PROTOCOLS
from orient3d.geometry import groups, so3, transforms
from orient3d.metrics.reconstruction import reconstruction_metrics
from orient3d.model import VAE
from orient3d.rundir import runs

__all__ = [
    "DEFAULT_PROTOCOL",
    "PROTOCOLS",
    "Canonicalize",
    "eval_rotations",
    "evaluate",
    "iou_per_class",
    "load_run",
    "so3_eval_rotations",
    "summary",
]

Canonicalize = Callable[[VAE, Tensor], "Tensor | None"]  # (model, x_shown (B,D,D,D)) -> r (B,)
METRIC_KEYS = ("mse", "bce", "iou", "tpr", "tnr", "neg_elbo")
_EVAL_SEED_OFFSET = 1_000_003  # keeps the test rotations apart from the training draws


def eval_rotations(n: int, seed: int) -> Tensor:
    """``(n,)`` the fixed element of O that turns each test object (``rotated`` protocols)."""
    gen = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    return torch.randint(len(groups.cube_group()), (n,), generator=gen)


def so3_eval_rotations(n: int, seed: int) -> Tensor:
    """``(n, 3, 3)`` the fixed uniform rotation that turns each test object (``so3`` protocols)."""
    gen = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    return so3.random_rotations(n, gen)


def _reconstruct(
    model: VAE, x: Tensor, precision: str, canonicalize: Canonicalize | None
) -> tuple[Tensor, Tensor]:
    """Bernoulli means ``(B, D, D, D)`` in the frame of ``x``, and neg ELBO ``(B,)``."""
    group = groups.cube_group()
    r = canonicalize(model, x) if canonicalize is not None else None
    x_in = x
    if canonicalize is not None:
        if r is None:
            raise RunError("a +search protocol needs a mode that searches (train.mode=search)")
        if r.dim() == 3:  # a continuous pose [s R | t] (B, 3, 4)
            return _reconstruct_pose(model, x, precision, transforms.Pose.from_matrix(r))
        x_in = groups.rotate(x, group, group.inverse.to(r.device)[r])
    with autocast(x.device, precision):
        out = model(x_in, sample=False)
    probs = torch.sigmoid(out.logits.float())
    if r is not None:
        probs = groups.rotate(probs, group, r)
    return probs, out.neg_elbo.float()


def _reconstruct_pose(
    model: VAE, x: Tensor, precision: str, pose: transforms.Pose
) -> tuple[Tensor, Tensor]:
    """As :func:`_reconstruct` for continuous poses: ``P·decode(encode(P⁻¹·x))``."""
    with autocast(x.device, precision):
        out = model(transforms.undo(x, pose), sample=False)
    probs = transforms.apply(torch.sigmoid(out.logits.float()), pose)
    return probs, out.neg_elbo.float()


def evaluate(
    model: VAE,
    test: VoxelSet,
    cfg: Config,
    *,
    protocol: str | None = None,
    canonicalize: Canonicalize | None = None,
) -> dict[str, Any]:
    """Reconstruction metrics of ``model`` on ``test`` under ``protocol``.

    Returns ``test_mse``, ``test_bce``, ``test_iou``, ``test_tpr``, ``test_tnr``,
    ``test_neg_elbo`` (means over objects), ``test_iou_per_class`` (class name
    -> mean IoU of its test objects), ``protocol``, ``n_test`` and
    ``per_object`` (lists of the per-object values, for confidence intervals).
    The model's train/eval state is restored afterwards.
    """
    protocol = protocol or DEFAULT_PROTOCOL[cfg.train.mode]
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol.endswith("+search") and canonicalize is None:
        raise RunError(f"protocol {protocol} needs a canonicalize function (a search mode)")
    device = next(model.parameters()).device
    n, bs = len(test), cfg.train.eval_batch_size
    g = eval_rotations(n, cfg.seed) if protocol.startswith("rotated") else None
    R = so3_eval_rotations(n, cfg.seed) if protocol.startswith("so3") else None
    search = canonicalize if protocol.endswith("+search") else None
    per: dict[str, list[Tensor]] = {k: [] for k in METRIC_KEYS}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, n, bs):
                x = test.voxels[s : s + bs].to(device).float()
                if g is not None:
                    x = groups.rotate(x, groups.cube_group(), g[s : s + bs])
                if R is not None:  # binary views, as real voxelizations
                    x = (so3.resample(x, R[s : s + bs].to(device)) > 0.5).float()
                probs, neg_elbo = _reconstruct(model, x, cfg.train.precision, search)
                for k, v in reconstruction_metrics(probs, x).items():
                    per[k].append(v.cpu())
                per["neg_elbo"].append(neg_elbo.cpu())
    finally:
        model.train(was_training)
    values = {k: torch.cat(v).double() for k, v in per.items()}
    out: dict[str, Any] = {f"test_{k}": float(v.mean()) for k, v in values.items()}
    out["test_iou_per_class"] = iou_per_class(values["iou"], test.labels, test.class_names)
    out.update(protocol=protocol, n_test=n)
    out["per_object"] = {k: v.tolist() for k, v in values.items()}
    return out


def iou_per_class(iou: Tensor, labels: Tensor, names: tuple[str, ...]) -> dict[str, float]:
    """``{class name: mean IoU}`` over the objects of each class present in ``labels``."""
    out = {}
    for c in torch.unique(labels).tolist():
        out[names[c] if c < len(names) else str(c)] = float(iou[labels == c].mean())
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without its per-object lists (for metrics.jsonl and tables)."""
    return {k: v for k, v in result.items() if k != "per_object"}


def load_run(run: str | Path, device: str = "cpu") -> tuple[Config, VAE]:
    """The config and model of a run (its best checkpoint, else its last), in eval mode."""
    cfg = runs.read_run_config(run)
    path = runs.checkpoint_path(run, "best")
    if not path.exists():
        path = runs.checkpoint_path(run, "last")
    if not path.exists():
        raise RunError(f"{run}: no checkpoint in {Path(run) / runs.CHECKPOINTS}")
    state = runs.load_checkpoint(path, device)
    model = VAE(cfg.model, cfg.data.res)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise RunError(f"{path}: does not match the run's config.toml: {err}") from err
    return cfg, model.to(device).eval()
