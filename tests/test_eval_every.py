"""``train.eval_every``: which epochs are evaluated, and that only those are selected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orient3d import runs
from orient3d.data import VoxelSet
from orient3d.errors import ConfigError
from orient3d.train import fit
from orient3d.training import evaluation
from train_helpers import metric_values, tiny_config, tiny_data

SPLIT_KEYS = tuple(f"{s}_{k}" for s in ("val", "test") for k in evaluation.EPOCH_KEYS)


def _evaluated_epochs(run: Path) -> list[int]:
    """Epochs whose metrics.jsonl row has every val_/test_ field (and no row has a part)."""
    out = []
    for r in runs.read_jsonl(run / "metrics.jsonl"):
        present = [k in r for k in SPLIT_KEYS]
        assert all(present) or not any(present), r
        if all(present):
            out.append(int(r["epoch"]))
    return out


def _count_evaluations(
    monkeypatch: pytest.MonkeyPatch, val_scores: list[float] | None = None
) -> list[str]:
    """The split of each evaluation, in order; optionally fake the validation scores."""
    real = evaluation.evaluate
    calls: list[str] = []

    def counted(model: Any, vs: VoxelSet, cfg: Any, **kw: Any) -> dict[str, Any]:
        out = real(model, vs, cfg, **kw)
        split = "test" if vs.source == "test" else "val"  # (the val split is carved from train)
        calls.append(split)
        if val_scores is not None and split == "val":
            out["test_neg_elbo"] = val_scores[calls.count("val") - 1]
        return out

    monkeypatch.setattr(evaluation, "evaluate", counted)
    return calls


def test_every_second_epoch_and_the_last_are_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_evaluations(monkeypatch)
    cfg = tiny_config('train.mode="augmented"', "train.epochs=3", "train.eval_every=2")
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run")
    assert _evaluated_epochs(tmp_path / "run") == [2, 3]
    # two evaluated epochs × (val, test), then the final test evaluation
    assert calls == ["val", "test", "val", "test", "test"]
    for r in runs.read_jsonl(tmp_path / "run" / "metrics.jsonl"):
        assert r["train_seconds"] + r["eval_seconds"] == pytest.approx(r["seconds"])
        assert r["train_seconds"] > 0 and r["eval_seconds"] >= 0
    assert result["best_epoch"] in (2, 3)


def test_the_default_evaluates_every_epoch(tmp_path: Path) -> None:
    cfg = tiny_config('train.mode="augmented"', "train.epochs=3")
    assert cfg.train.eval_every == 1
    fit(cfg, *tiny_data(cfg), tmp_path / "run")
    assert _evaluated_epochs(tmp_path / "run") == [1, 2, 3]


def test_skipped_evaluations_do_not_change_training(tmp_path: Path) -> None:
    """The same training numbers and final weights with and without evaluation."""
    base = ('train.mode="search"', "train.epochs=3", "search.warmup_epochs=1")
    every = tiny_config(*base)
    sparse = tiny_config(*base, "train.eval_every=3")
    fit(every, *tiny_data(every), tmp_path / "every")
    fit(sparse, *tiny_data(sparse), tmp_path / "sparse")
    assert _evaluated_epochs(tmp_path / "sparse") == [3]

    def training_part(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in SPLIT_KEYS} for r in metric_values(run)]

    assert training_part(tmp_path / "every") == training_part(tmp_path / "sparse")
    a = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "every", "last"))["model"]
    b = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "sparse", "last"))["model"]
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_selection_never_picks_an_unevaluated_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation gets worse at every evaluation: the first evaluated epoch (2) is the best.

    Epoch 1 is not evaluated; had a missing score counted as a gain (or a stale one
    been reused), epoch 1 or a later epoch would be chosen."""
    _count_evaluations(monkeypatch, val_scores=[100.0, 101.0, 102.0])
    cfg = tiny_config('train.mode="augmented"', "train.epochs=5", "train.eval_every=2")
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run")
    assert _evaluated_epochs(tmp_path / "run") == [2, 4, 5]
    assert result["best_epoch"] == 2 and result["selected_on"] == "val"
    assert runs.load_checkpoint(runs.checkpoint_path(tmp_path / "run", "best"))["epoch"] == 2


def test_early_stopping_counts_epochs_and_checks_at_evaluations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _count_evaluations(monkeypatch, val_scores=[100.0 + i for i in range(10)])
    cfg = tiny_config(
        "train.epochs=10", "train.eval_every=2", "train.early_stopping=3", "data.n_train=12"
    )
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run")
    # best at 2; 2 epochs without gain at 4 (< 3), 4 at 6: stop there
    assert result["early_stopped"] and result["epochs_run"] == 6 and result["best_epoch"] == 2
    assert _evaluated_epochs(tmp_path / "run") == [2, 4, 6]


def test_eval_every_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="train.eval_every"):
        tiny_config("train.eval_every=0")
