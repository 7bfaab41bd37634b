"""Evaluation during training: which epochs are measured, what is kept, results.json.

Every ``train.eval_every``-th epoch and always the last (:func:`is_evaluated`), the
model is measured on the validation and test splits under the mode's protocol
(:func:`evaluate_splits`). The best checkpoint and early stopping read the
validation negative ELBO of those epochs alone (:func:`select`); an epoch that is
not evaluated can never be selected. At the end the selected checkpoint is
measured on the test split and results.json written (:func:`finish`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.evaluation.protocols import DEFAULT_PROTOCOL, evaluate
from orient3d.rundir import runs
from orient3d.training.state import TrainState

__all__ = ["EPOCH_KEYS", "evaluate_splits", "finish", "is_evaluated", "select"]

log = logging.getLogger(__name__)

EPOCH_KEYS = ("mse", "iou", "bce", "tpr", "tnr", "neg_elbo")  # val_* and test_* per epoch


def is_evaluated(cfg: Config, epoch: int) -> bool:
    """Whether ``epoch`` (from 1) is evaluated: every ``train.eval_every``-th, and the last."""
    return epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs


def evaluate_splits(
    st: TrainState, cfg: Config, val_set: VoxelSet, test_set: VoxelSet
) -> dict[str, Any]:
    """``val_*`` and ``test_*`` metrics of the model now, under the mode's protocol."""
    protocol = DEFAULT_PROTOCOL[cfg.train.mode]
    out: dict[str, Any] = {}
    for split, vs in (("val", val_set), ("test", test_set)):
        if len(vs) == 0:
            continue
        ev = evaluate(st.model, vs, cfg, protocol=protocol, canonicalize=st.mode.canonicalize)
        out.update({f"{split}_{k}": ev[f"test_{k}"] for k in EPOCH_KEYS})
    return out


def select(st: TrainState, cfg: Config, metrics: dict[str, Any], epoch: int) -> None:
    """The best epoch and early stopping after the evaluated ``epoch``'s ``metrics``.

    The best epoch reads ``val_neg_elbo`` alone (with no validation split,
    ``data.n_val=0``, the latest evaluated epoch is the best). ``st.stale`` counts
    the epochs since the best; early stopping checks it at evaluated epochs."""
    score = metrics.get("val_neg_elbo", -epoch)
    if score < st.best:
        st.best, st.best_epoch = score, epoch
    st.stale = epoch - st.best_epoch
    patience = cfg.train.early_stopping
    st.stopped = patience > 0 and st.stale >= patience


def finish(
    st: TrainState,
    cfg: Config,
    test_set: VoxelSet,
    out: Path,
    device: torch.device,
    selected_on: str,
) -> dict[str, Any]:
    """Evaluate the selected checkpoint on the test split and write results.json (rank 0;
    every rank returns it)."""
    return st.dist.on_main(lambda: _results(st, cfg, test_set, out, device, selected_on))


def _results(
    st: TrainState,
    cfg: Config,
    test_set: VoxelSet,
    out: Path,
    device: torch.device,
    selected_on: str,
) -> dict[str, Any]:
    best = runs.checkpoint_path(out, "best")
    if best.exists():
        st.model.load_state_dict(runs.load_checkpoint(best, device)["model"])
    result = evaluate(
        st.model,
        test_set,
        cfg,
        protocol=DEFAULT_PROTOCOL[cfg.train.mode],
        canonicalize=st.mode.canonicalize,
    )
    records = runs.read_jsonl(out / runs.METRICS)
    result.update(
        mode=cfg.train.mode,
        epochs_run=st.epoch,
        best_epoch=st.best_epoch,
        checkpoint="best" if best.exists() else "last",
        # what chose the checkpoint: "val" (the validation split), "last" (data.n_val=0)
        selected_on=selected_on,
        early_stopped=st.stopped,
        seconds_total=sum(float(r["seconds"]) for r in records),
    )
    runs.write_json(out / runs.RESULTS, result)
    log.info(
        "results (epoch %d, selected on %s): test mse %.5f  iou %.3f  (%s)",
        st.best_epoch,
        selected_on,
        result["test_mse"],
        result["test_iou"],
        out,
    )
    return result
