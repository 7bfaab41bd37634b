"""Compatibility: split into :mod:`orient3d.search.continuous` (pose estimation) and
:mod:`orient3d.evaluation.continuous` (recovery of random rotations)."""

from orient3d.evaluation.continuous import recover_continuous, rotated_test_set, symmetric_error
from orient3d.search.continuous import (
    METHODS,
    PoseOptions,
    PoseResult,
    estimate_pose,
    pose_scores,
)

__all__ = [
    "METHODS",
    "PoseOptions",
    "PoseResult",
    "estimate_pose",
    "pose_scores",
    "recover_continuous",
    "rotated_test_set",
    "symmetric_error",
]
