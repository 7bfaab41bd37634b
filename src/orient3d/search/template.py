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

A template in the model's latent space (:class:`LatentTemplate`) is the other form of
joint alignment: aligned objects should share a code. Its template is a point ``c``,
the mean encoder mean ``μ`` of the grids chosen over the previous epoch, and a
candidate pays

    ``N_r(x) = ½ ‖μ(r⁻¹x) - c‖²``   (nats: the negative log density of ``μ`` under a
    unit Gaussian at ``c``, less its constant),

with ``μ`` read from the scoring pass itself (:func:`orient3d.search.score_and_encode`).
Unlike the voxel template it moves with the encoder: ``c`` is a mean of last epoch's
codes, compared with this step's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from orient3d.geometry.groups import CubeGroup, orbit

__all__ = ["LatentTemplate", "OccupancyTemplate", "latent_nll", "template_nll"]


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


class _EpochMean:
    """What both templates share: items accumulate over an epoch (``add``, weighted),
    :meth:`update` turns their sums into the template (``_take``) and resets them.

    The sums are plain attributes (``sum``, ``count``) so that processes of one
    distributed run can add theirs up before :meth:`update`; until an update had
    items to average the template is not ``ready`` (and scores nothing). The state
    holds the sums, ``ready`` and the template itself under ``_key``.
    """

    _key: str  # the attribute that holds the template

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.sum = torch.zeros(shape, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.ready = False  # True once an update had items to average

    def add(self, items: Tensor, weight: Tensor | None = None) -> None:
        """Accumulate ``items (N, ...)``, each with ``weight (N,)`` (default 1)."""
        v = items.detach().to("cpu", torch.float64)
        if weight is None:
            self.sum += v.sum(dim=0)
            self.count += v.shape[0]
        else:
            w = weight.detach().to("cpu", torch.float64)
            self.sum += torch.einsum("n,n...->...", w, v)
            self.count += w.sum()

    def update(self) -> None:
        """The new template from the accumulated items (kept when none came); resets the sums."""
        if float(self.count) > 0:
            self._take(self.sum, self.count)
            self.ready = True
        self.sum.zero_()
        self.count.zero_()

    def _take(self, total: Tensor, count: Tensor) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {
            "sum": self.sum.clone(),
            "count": self.count.clone(),
            self._key: getattr(self, self._key).clone(),
            "ready": self.ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum = state["sum"].clone()
        self.count = state["count"].clone()
        setattr(self, self._key, state[self._key].clone())
        self.ready = bool(state["ready"])


class OccupancyTemplate(_EpochMean):
    """The running template: grids accumulate over an epoch, :meth:`update` averages them.

    ``T = (Σ weights·grids + 1) / (Σ weights + 2)`` (a Beta(1, 1) prior per voxel),
    so no voxel has probability 0 or 1 (:class:`_EpochMean` keeps the sums).
    """

    _key = "occupancy"

    def __init__(self, side: int) -> None:
        super().__init__((side, side, side))
        self.occupancy = torch.full((side, side, side), 0.5, dtype=torch.float32)

    @property
    def occupancy(self) -> Tensor:
        return self._occupancy

    @occupancy.setter
    def occupancy(self, value: Tensor) -> None:
        # the turned log-odds are derived once per template, not at every scoring pass
        self._occupancy = value
        self._turned: dict[tuple[CubeGroup, torch.device], tuple[Tensor, Tensor]] = {}

    def _take(self, total: Tensor, count: Tensor) -> None:
        self.occupancy = ((total + 1.0) / (count + 2.0)).float()

    def nll(self, x: Tensor, group: CubeGroup) -> Tensor:
        """:func:`template_nll` of ``x`` under the current template."""
        _check_shapes(x, self.occupancy)
        key = (group, x.device)
        if key not in self._turned:
            self._turned[key] = _turned_logits(self.occupancy.to(x.device, torch.float32), group)
        return _nll(x, *self._turned[key])


def latent_nll(mu: Tensor, centre: Tensor) -> Tensor:
    """``(B, K)``: ``½ ‖μ - c‖²`` for encoder means ``mu (B, K, Z)`` and ``centre (Z,)``."""
    if mu.dim() != 3 or centre.shape != mu.shape[-1:]:
        raise ValueError(
            f"expected means (B, K, Z) and a (Z,) centre of the same Z; got "
            f"{tuple(mu.shape)} and {tuple(centre.shape)}"
        )
    return 0.5 * (mu.float() - centre.to(mu.device, torch.float32)).pow(2).sum(dim=-1)


class LatentTemplate(_EpochMean):
    """The running latent template: codes ``(N, Z)`` accumulate over an epoch,
    :meth:`update` averages them into the centre ``c`` (:class:`_EpochMean` keeps the
    sums)."""

    _key = "centre"

    def __init__(self, latent: int) -> None:
        super().__init__((latent,))
        self.centre = torch.zeros(latent, dtype=torch.float32)

    def _take(self, total: Tensor, count: Tensor) -> None:
        self.centre = (total / count).float()

    def nll(self, mu: Tensor) -> Tensor:
        """:func:`latent_nll` of ``mu (B, K, Z)`` under the current centre."""
        return latent_nll(mu, self.centre)
