"""The training and test sets a config names (``cfg.data``)."""

from __future__ import annotations

from orient3d.config import Config
from orient3d.data.sources import randomize_frames, train_test
from orient3d.data.voxelset import VoxelSet

__all__ = ["load_data"]


def load_data(cfg: Config) -> tuple[VoxelSet, VoxelSet]:
    """The training and test sets of ``cfg.data`` (``orient3d.data.train_test``).

    The training set still holds the validation objects; :func:`fit` carves them.
    With ``data.random_frames`` each training object is turned once by a fixed random
    rotation (:func:`orient3d.data.sources.randomize_frames`); the test set is not."""
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
    if d.random_frames:
        train_set = randomize_frames(train_set, cfg.seed)
    return train_set, test_set
