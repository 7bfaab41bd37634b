"""load_data: the training and test sets a config names, with its controls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orient3d.config import Config, apply_overrides
from orient3d.data import load_data
from orient3d.errors import ConfigError


def _cfg(tmp_path: Path, *overrides: str) -> Config:
    base = ["data.res=8", "data.n_train=36", "data.n_test=18", f"data.cache_dir={tmp_path}"]
    return apply_overrides(Config(), [*base, *overrides])


def test_unseen_classes_leave_training_but_stay_in_the_test_set(tmp_path: Path) -> None:
    full_train, full_test = load_data(_cfg(tmp_path))
    train, test = load_data(_cfg(tmp_path, 'data.unseen_classes=["lamp", "sofa"]'))
    names = train.class_names
    gone = {names.index("lamp"), names.index("sofa")}
    assert not set(train.labels.tolist()) & gone
    assert gone <= set(test.labels.tolist())
    assert torch.equal(test.voxels, full_test.voxels)  # the test set is untouched
    # the training set is the full one without those classes, in the same order
    keep = [i for i, c in enumerate(full_train.labels.tolist()) if c not in gone]
    assert torch.equal(train.voxels, full_train.voxels[keep])
    assert train.class_names == full_train.class_names


def test_unseen_classes_must_exist_and_leave_something(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.unseen_classes: \['stool'\] not among"):
        load_data(_cfg(tmp_path, 'data.unseen_classes=["stool"]'))
    with pytest.raises(ConfigError, match="leaves no training object"):
        load_data(_cfg(tmp_path, 'data.classes=["lamp"]', 'data.unseen_classes=["lamp"]'))
    with pytest.raises(ConfigError, match="a subset of data.classes"):
        _cfg(tmp_path, 'data.classes=["lamp", "bed"]', 'data.unseen_classes=["sofa"]')
