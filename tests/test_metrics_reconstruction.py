"""Known answers of the reconstruction metrics on hand-made grids."""

from __future__ import annotations

import math

import pytest
import torch

from orient3d.metrics import RECONSTRUCTION_KEYS, reconstruction_means, reconstruction_metrics


def _x() -> torch.Tensor:
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, :, :] = 1  # 4 of 8 voxels occupied
    return x


def test_perfect_reconstruction() -> None:
    x = _x()
    m = reconstruction_metrics(x.clone(), x)
    assert set(m) == set(RECONSTRUCTION_KEYS)
    assert m["mse"].item() == 0 and m["iou"].item() == 1
    assert m["tpr"].item() == 1 and m["tnr"].item() == 1
    assert m["bce"].item() < 1e-5


def test_half_everywhere() -> None:
    x = _x()
    m = reconstruction_metrics(torch.full_like(x, 0.5), x)
    assert m["mse"].item() == pytest.approx(0.25)
    assert m["bce"].item() == pytest.approx(math.log(2), rel=1e-5)
    assert m["iou"].item() == pytest.approx(0.5)  # all predicted occupied: 4 / 8
    assert m["tpr"].item() == 1 and m["tnr"].item() == 0


def test_partial_reconstruction_per_object() -> None:
    x = torch.cat([_x(), torch.zeros(1, 2, 2, 2)])
    p = torch.zeros_like(x)
    p[0, 0, 0, :] = 1  # 2 of the 4 occupied voxels
    p[0, 1, 1, 1] = 1  # and one false positive
    m = reconstruction_metrics(p, x)
    assert m["iou"].tolist() == pytest.approx([2 / 5, 1.0])  # both empty: IoU 1
    assert m["tpr"].tolist() == pytest.approx([2 / 4, 1.0])
    assert m["tnr"].tolist() == pytest.approx([3 / 4, 1.0])
    assert m["mse"].tolist() == pytest.approx([3 / 8, 0.0])
    assert m["mse"].shape == (2,)
    assert reconstruction_means(p, x)["iou"] == pytest.approx(0.7)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        reconstruction_metrics(torch.zeros(2, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4))
