"""The training and test sets a config names (``cfg.data``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from orient3d.config import Config
from orient3d.data.sources import randomize_frames, train_test
from orient3d.data.voxelset import VoxelSet
from orient3d.errors import ConfigError

__all__ = ["load_data", "without_classes"]


def load_data(cfg: Config) -> tuple[VoxelSet, VoxelSet]:
    """The training and test sets of ``cfg.data`` (``orient3d.data.train_test``).

    The training set still holds the validation objects; :func:`fit` carves them.
    With ``data.random_frames`` each training object is turned once by a fixed random
    rotation (:func:`orient3d.data.sources.randomize_frames`); the test set is not.
    ``data.unseen_classes`` are removed from the training set (and so from validation),
    not from the test set."""
    d = cfg.data
    train_set, test_set = train_test(
        d.source,
        d.res,
        n_train=d.n_train or None,  # 0: all available
        n_test=d.n_test or None,
        seed=cfg.seed,
        cache_dir=d.cache_dir or None,
        classes=list(d.classes) or None,
        max_side=d.max_res,
    )
    if d.unseen_classes:
        train_set = without_classes(train_set, d.unseen_classes)
    if d.random_frames:
        train_set = randomize_frames(train_set, cfg.seed)
    return train_set, test_set


def without_classes(vs: VoxelSet, names: Sequence[str]) -> VoxelSet:
    """``vs`` without the objects of the named classes (``data.unseen_classes``); the
    class list is kept, so labels still index it."""
    unknown = [c for c in names if c not in vs.class_names]
    if unknown:
        raise ConfigError(
            f"data.unseen_classes: {unknown} not among the classes of {vs.source}: "
            f"{list(vs.class_names)}"
        )
    drop = torch.tensor([vs.class_names.index(c) for c in names])
    keep = (~torch.isin(vs.labels.long(), drop)).nonzero(as_tuple=True)[0]
    if keep.numel() == 0:
        raise ConfigError(f"data.unseen_classes: {list(names)} leaves no training object")
    return vs.subset(keep)
