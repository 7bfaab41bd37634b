"""Measured answers about a learned canonical pose: one module per metric.

Every metric is a pure function over arrays (numpy arrays or torch tensors) and
returns a dict. Notation (as in the package docstring): an object with ground-truth pose ``c`` is
shown as ``x = g·c``; the model picks ``r``; its canonical frame is
``h = r⁻¹g`` (:func:`canonical_pose`). ``stab_mask`` ``(N, G)`` is the
stabilizer mask of ``c`` (``groups.stabilizer_mask``); predictions count right
when they give the same voxels as the truth, never by index alone.

- :mod:`.recovery`: ``recovery_accuracy(pred, true, stab_mask, group)``
- :mod:`.consistency`: ``instance_consistency``, ``class_consistency``,
  ``global_consistency``, ``pose_use_counts``
- :mod:`.usage`: ``orientation_usage``, ``usage_from_hist``, ``entropy``
- :mod:`.invariance`: ``latent_invariance``
- :mod:`.probe`: ``linear_probe``
- :mod:`.reconstruction`: ``reconstruction_metrics(probs, x) -> dict[str, Tensor]``
"""

from orient3d.metrics._common import canonical_pose, coset_mask, coset_representative
from orient3d.metrics.consistency import (
    class_consistency,
    global_consistency,
    instance_consistency,
    pose_use_counts,
    random_max,
)
from orient3d.metrics.invariance import latent_invariance
from orient3d.metrics.probe import linear_probe
from orient3d.metrics.reconstruction import (
    RECONSTRUCTION_KEYS,
    reconstruction_means,
    reconstruction_metrics,
)
from orient3d.metrics.recovery import error_angles, recovery_accuracy
from orient3d.metrics.usage import entropy, orientation_usage, usage_from_hist

__all__ = [
    "RECONSTRUCTION_KEYS",
    "canonical_pose",
    "class_consistency",
    "coset_mask",
    "coset_representative",
    "entropy",
    "error_angles",
    "global_consistency",
    "instance_consistency",
    "latent_invariance",
    "linear_probe",
    "orientation_usage",
    "pose_use_counts",
    "random_max",
    "reconstruction_means",
    "reconstruction_metrics",
    "recovery_accuracy",
    "usage_from_hist",
]
