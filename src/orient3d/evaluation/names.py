"""The evaluation protocols' names (no torch: the command line's choices read them).

Each protocol is described in :mod:`orient3d.evaluation.protocols`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS"]

PROTOCOLS = ("as_stored", "rotated", "rotated+search", "so3", "so3+search")
DEFAULT_PROTOCOL = {  # training mode -> the protocol its runs are measured under
    "single": "as_stored",
    "augmented": "rotated",
    "search": "rotated+search",
    "continuous": "so3+search",
}
