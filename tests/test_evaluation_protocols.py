"""Per-class IoU in the evaluation summary (and so in results.json)."""

from __future__ import annotations

import pytest
import torch

from orient3d.evaluate import evaluate, iou_per_class
from orient3d.model import VAE
from train_helpers import tiny_config, tiny_data


def test_iou_per_class_known_answer() -> None:
    iou = torch.tensor([0.2, 0.4, 0.9, 1.0, 0.5], dtype=torch.float64)
    labels = torch.tensor([0, 0, 2, 2, 2])
    out = iou_per_class(iou, labels, ("chair", "table", "lamp"))
    assert out == pytest.approx({"chair": 0.3, "lamp": 0.8})  # table has no test object


def test_evaluate_reports_iou_per_class() -> None:
    torch.manual_seed(0)
    cfg = tiny_config("data.n_test=12")
    _, test = tiny_data(cfg)
    result = evaluate(VAE(cfg.model, cfg.data.res), test, cfg)
    per_class = result["test_iou_per_class"]
    names = {test.class_names[c] for c in test.labels.tolist()}
    assert set(per_class) == names
    counts = {n: sum(test.class_names[c] == n for c in test.labels.tolist()) for n in names}
    weighted = sum(per_class[n] * counts[n] for n in names) / len(test)
    assert weighted == pytest.approx(result["test_iou"])  # objects weighted: the overall mean
