"""A shared occupancy template for joint alignment (congealing) of the training set.

Congealing (Learned-Miller, 2006) aligns a set of images by turning each one so that
the stack of aligned images has low entropy: every image is scored against the
per-pixel marginals of all the others. Here the marginals are a template ``T``, the
per-voxel occupancy of the training grids in the poses the search chose for them
over the previous epoch; a candidate ``r`` of a grid ``x`` pays the negative log
likelihood of ``r⁻¹·x`` under independent Bernoulli voxels of ``T``,

    ``N_r(x) = -Σ_v [(r⁻¹x)_v log T_v + (1 - (r⁻¹x)_v) log(1 - T_v)]``   (nats),

so objects are pushed towards the pose of the common mean shape. It uses neither the
dataset's stored frame nor labels. Before any search the template is the mean of the
grids as shown (random poses, nearly invariant under the group): it then scores
every pose alike, and the first search epoch's choices, made by the model, break the
symmetry.

All ``|G|`` candidates of a batch cost one matrix product: ``Σ_v (r⁻¹x)_v W_v =
Σ_u x_u (r·W)_u``, so the template's logit grid ``W`` is turned once per element
instead of every grid ``|G|`` times.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from orient3d.geometry.groups import CubeGroup, orbit

__all__ = ["OccupancyTemplate", "template_nll"]


def template_nll(x: Tensor, occupancy: Tensor, group: CubeGroup) -> Tensor:
    """``(B, G)``: ``N_r(x)`` for every element ``r`` (the module docstring's formula).

    Args:
        x: ``(B, D, D, D)`` 0/1 grids as shown.
        occupancy: ``(D, D, D)`` template probabilities, strictly inside (0, 1).
        group: the candidate elements; column ``r`` scores ``r⁻¹·x``.
    """
    _check_shapes(x, occupancy)
    return _nll(x, *_turned_logits(occupancy.to(x.device, torch.float32), group))


def _check_shapes(x: Tensor, occupancy: Tensor) -> None:
    if x.dim() != 4 or occupancy.shape != x.shape[1:]:
        raise ValueError(
            f"expected grids (B, D, D, D) and a (D, D, D) template of the same side; "
            f"got {tuple(x.shape)} and {tuple(occupancy.shape)}"
        )


def _nll(x: Tensor, turned: Tensor, empty: Tensor) -> Tensor:
    return empty - x.flatten(1).to(torch.float32) @ turned.T


def _turned_logits(t: Tensor, group: CubeGroup) -> tuple[Tensor, Tensor]:
    """``(G, D³)`` rows ``r·W`` of the template's log-odds ``W``, and the NLL of the
    empty grid (the same for every ``r``)."""
    logit = torch.log(t) - torch.log1p(-t)  # W: a voxel's log-odds of being filled
    return orbit(logit, group).flatten(1), -torch.log1p(-t).sum()


class OccupancyTemplate:
    """The running template: grids accumulate over an epoch, :meth:`update` averages them.

    ``T = (Σ weights·grids + 1) / (Σ weights + 2)`` (a Beta(1, 1) prior per voxel),
    so no voxel has probability 0 or 1. The sums are plain attributes (``sum``,
    ``count``) so that processes of one distributed run can add theirs up before
    :meth:`update`.
    """

    def __init__(self, side: int) -> None:
        self.sum = torch.zeros(side, side, side, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.occupancy = torch.full((side, side, side), 0.5, dtype=torch.float32)
        self.ready = False  # True once an update had grids to average

    @property
    def occupancy(self) -> Tensor:
        return self._occupancy

    @occupancy.setter
    def occupancy(self, value: Tensor) -> None:
        # the turned log-odds are derived once per template, not at every scoring pass
        self._occupancy = value
        self._turned: dict[tuple[CubeGroup, torch.device], tuple[Tensor, Tensor]] = {}

    def add(self, grids: Tensor, weight: Tensor | None = None) -> None:
        """Accumulate ``grids (N, D, D, D)``, each with ``weight (N,)`` (default 1)."""
        g = grids.detach().to("cpu", torch.float64)
        if weight is None:
            self.sum += g.sum(dim=0)
            self.count += g.shape[0]
        else:
            w = weight.detach().to("cpu", torch.float64)
            self.sum += torch.einsum("n,n...->...", w, g)
            self.count += w.sum()

    def update(self) -> None:
        """The new template from the accumulated grids (kept when none came); resets the sums."""
        if float(self.count) > 0:
            self.occupancy = ((self.sum + 1.0) / (self.count + 2.0)).float()
            self.ready = True
        self.sum.zero_()
        self.count.zero_()

    def nll(self, x: Tensor, group: CubeGroup) -> Tensor:
        """:func:`template_nll` of ``x`` under the current template."""
        _check_shapes(x, self.occupancy)
        key = (group, x.device)
        if key not in self._turned:
            self._turned[key] = _turned_logits(self.occupancy.to(x.device, torch.float32), group)
        return _nll(x, *self._turned[key])

    def state_dict(self) -> dict[str, Any]:
        return {
            "sum": self.sum.clone(),
            "count": self.count.clone(),
            "occupancy": self.occupancy.clone(),
            "ready": self.ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum = state["sum"].clone()
        self.count = state["count"].clone()
        self.occupancy = state["occupancy"].clone()
        self.ready = bool(state["ready"])
