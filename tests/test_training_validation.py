"""The validation split: how it is carved, and that no decision reads the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orient3d import runs
from orient3d.data import VoxelSet, split_validation
from orient3d.data.sources import validation_size
from orient3d.errors import ConfigError, DataError
from orient3d.train import fit
from orient3d.training import evaluation
from train_helpers import random_polycubes, tiny_config, tiny_data


def _labelled(counts: list[int]) -> VoxelSet:
    vs = random_polycubes(sum(counts), 8, seed=3)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    names = tuple(f"c{c}" for c in range(len(counts)))
    return VoxelSet(vs.voxels, labels, names, vs.ids, vs.stabilizers, "labelled")


def test_split_is_disjoint_complete_seeded_and_stratified() -> None:
    vs = _labelled([60, 30, 10])
    train_part, val = split_validation(vs, 10, seed=0)
    assert len(val) == 10 and len(train_part) == 90
    assert sorted(train_part.ids + val.ids) == sorted(vs.ids)  # a partition
    assert not set(train_part.ids) & set(val.ids)
    # stratified: each class gives its share (6, 3, 1), not a random draw's
    assert np.bincount(val.labels.numpy(), minlength=3).tolist() == [6, 3, 1]
    # seeded: the same seed the same split, another seed another split
    assert split_validation(vs, 10, seed=0)[1].ids == val.ids
    assert split_validation(vs, 10, seed=1)[1].ids != val.ids
    # the stored order is kept
    order = {i: k for k, i in enumerate(vs.ids)}
    assert [order[i] for i in val.ids] == sorted(order[i] for i in val.ids)


def test_default_size_and_bounds() -> None:
    assert validation_size(2048) == 205 and validation_size(5) == 1 and validation_size(2) == 1
    assert validation_size(100, 0) == 0
    vs = _labelled([4])
    assert len(split_validation(vs, 0)[1]) == 0 and len(split_validation(vs, 0)[0]) == 4
    with pytest.raises(DataError, match="cannot hold out 4 validation"):
        split_validation(vs, 4)


def test_metrics_and_results_record_the_validation_split(tmp_path: Path) -> None:
    cfg = tiny_config('train.mode="augmented"', "data.n_train=20", "data.n_val=4")
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run")
    records = runs.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    for key in ("val_neg_elbo", "val_mse", "val_iou", "test_neg_elbo", "test_iou"):
        assert all(key in r for r in records), key
    assert result["selected_on"] == "val"
    best = min(records, key=lambda r: r["val_neg_elbo"])
    assert result["best_epoch"] == best["epoch"]


def _test_sets_apart(cfg: Any) -> tuple[VoxelSet, VoxelSet, VoxelSet]:
    train_set, test_set = tiny_data(cfg)
    other = random_polycubes(len(test_set), cfg.data.res, seed=99, source="other")
    return train_set, test_set, other


def test_no_decision_reads_the_test_split(tmp_path: Path, monkeypatch: Any) -> None:
    """Two runs that differ only in their test set make the same decisions.

    The test set's neg ELBO is made to fall each epoch in one run and to rise in the
    other: if the best checkpoint or early stopping read it, the runs would part."""
    real = evaluation.evaluate
    calls: dict[str, int] = {}

    def test_split_lies(model: Any, vs: VoxelSet, cfg: Any, **kw: Any) -> dict[str, Any]:
        out = real(model, vs, cfg, **kw)
        if vs.source in ("test", "other"):
            calls[vs.source] = calls.get(vs.source, 0) + 1
            step = calls[vs.source]
            out["test_neg_elbo"] = 1e4 - step if vs.source == "test" else 1e4 + step
        return out

    monkeypatch.setattr(evaluation, "evaluate", test_split_lies)
    cfg = tiny_config("train.epochs=5", "train.early_stopping=2", "train.lr=0.02")
    train_set, test_a, test_b = _test_sets_apart(cfg)
    a = fit(cfg, train_set, test_a, tmp_path / "a")
    b = fit(cfg, train_set, test_b, tmp_path / "b")
    for key in ("best_epoch", "epochs_run", "early_stopped", "selected_on"):
        assert a[key] == b[key], key
    val = [
        [r[k] for k in r if k.startswith("val_")]
        for r in runs.read_jsonl(tmp_path / "a" / "metrics.jsonl")
    ]
    assert val == [
        [r[k] for k in r if k.startswith("val_")]
        for r in runs.read_jsonl(tmp_path / "b" / "metrics.jsonl")
    ]
    for name in ("best", "last"):
        pa = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "a", name))["model"]
        pb = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "b", name))["model"]
        assert all(torch.equal(pa[k], pb[k]) for k in pa), name


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path: Path) -> None:
    cfg = tiny_config("data.n_val=0", "train.epochs=2")
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run")
    assert result["selected_on"] == "last" and result["best_epoch"] == 2
    assert "val_iou" not in runs.read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]
    stopping = tiny_config("data.n_val=0", "train.early_stopping=2")
    with pytest.raises(ConfigError, match="early_stopping=2 needs a validation split"):
        fit(stopping, *tiny_data(stopping), tmp_path / "stop")
