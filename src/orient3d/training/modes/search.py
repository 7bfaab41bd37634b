"""The ``search`` training mode: each sample is turned to its best orientation first.

As ``augmented`` (the loop shows object ``c`` as ``x = g·c`` for a fresh random
``g``), but before each backward pass:

- ``hard``: the sample becomes ``r⁻¹·x`` for ``r = argmin_r L_r(x)``;
- ``soft``: the loss is the posterior-weighted negative ELBO over ``K`` candidates,
  ``Σ_k softmax(-L/T)_k · L_k`` with the weights detached, renormalized over the
  kept candidates (``search.top_k``; 0 keeps all). Its gradient is that of the
  free energy ``F_T = -T·logsumexp(-L/T)``; at ``T = 1`` that is the negative
  of the orientation-marginal ELBO ``logsumexp(-L) - log|G|`` up to a constant,
  and as ``T → 0`` it becomes the hard loss. ``T`` is annealed geometrically per
  epoch from ``temperature_start`` to ``temperature`` over the search epochs.

With ``top_k`` the weights (and ``F_T``) are restricted to the kept candidates. The
weights come from the no-grad scoring pass (encoder mean, BatchNorm in eval mode);
the weighted rows are then trained as any other (sampled ``z``, train mode).

The first ``warmup_epochs`` epochs are plain augmented training.

Orientation prior (``search.prior``, :mod:`orient3d.training.prior`). ``uniform`` is the
seed's model. ``stored_frame`` (formerly ``learned``) puts a categorical prior
``p(h)`` on the canonical pose ``h = r⁻¹g`` relative to the stored frame (known here
because the loop drew ``g``: weak supervision by the dataset's alignment; a prior on
``r`` itself stays uniform under uniform ``g``, see :mod:`orient3d.training.prior`): the hard
choice minimizes ``L_r(x) - λ log p(h)`` (the MAP pose) and the soft weights are the
posterior ``∝ p(h)^λ·exp(-L/T)``, the prior not damped by the temperature; the loss
is the ELBO with the pose as a discrete latent (its ``log p`` term does not depend
on the model's weights, so the gradient is still the weighted negative ELBO). ``p``
is updated after each search epoch from that epoch's posteriors (one-hot for
``hard``), floored at ``prior_floor``. ``class`` keeps one prior per class (an
oracle upper bound: the labels are not a model input). At evaluation the search uses
the scores alone (``g`` is unknown; uniform test rotations make a uniform prior over
``r`` exact). With the cache and ``proposals = 1`` a cached pose is reused without
re-scoring, so a changed prior acts only at refreshes: use ``cache = false`` or
``refresh_every = 1`` with a learned prior.

Speed. The applied ``g`` of every sample is known, so each object's canonical pose
``h = r⁻¹g`` is cached (``search.cache``): view-independent under exhaustive search,
hence exact until the model changes. On the next presentation ``r = g·h⁻¹`` costs
nothing (``proposals = 1``), or only the ``proposals`` best poses of the last full
search are re-scored (the soft choice keeps at least its ``top_k`` candidates,
all 24 when ``top_k = 0``). The whole cache goes stale every ``refresh_every`` search
epochs, and a random ``refresh_frac`` of every step's samples is searched in full
anyway. With ``refresh_every = 0`` only that fraction is ever searched (a
rate-limited search, costing about ``refresh_frac`` of a full search per step):
objects not searched yet are trained as shown, as in the warm-up, until drawn.

Staleness. The ``refresh_frac`` samples searched in full although their cache entry
was current show how often a fresh search would change a cached choice (modulo the
object's symmetry): logged per epoch as ``cache_stale_frac`` (over
``cache_stale_checked`` samples). Once at least 20 are checked and the share is above
``search.max_stale``, the rest of the epoch re-searches every object it presents
(``cache_refresh_triggered``) and the next epoch re-searches those presented before
the trigger; an epoch that ends above it with fewer checks makes the next epoch
re-search every object. ``cache_refreshed``: the epoch re-searched objects so.

Staleness probe (``search.stale_probe``, default 64). Those checks come during the
epoch, after some of its steps trained on cached poses. So at the start of every
search epoch that would train on the cache, a fixed-size random sample of cached
objects is searched afresh in its stored pose (the same score: the model, with any
template and prior) before any step: ``cache_stale_probe`` is the share of those
whose choice would change (over ``cache_stale_probe_n`` objects). With ``proposals``
above 1 the cached choice compared is the one a cache hit trains on: the best of
the object's cached poses re-scored by the current model (so is ``cache_stale_frac``). Above
``max_stale`` the whole epoch re-searches every object, so an epoch trains on a
cache only when its measured staleness is at most ``max_stale``. The sample is drawn
from the run's seed and the epoch alone, so all processes of a distributed run
probe the same objects and agree.

Adaptive proposals (``search.adaptive_proposals``, hard choice, ``proposals = P > 1``).
The cache keeps the ``P`` best poses of each object's last full search, best first,
and the probe measures, from the same fresh scores at no extra cost, the staleness of
the best of the first ``k`` cached poses re-scored, for ``k = 1 … P``. The epoch takes
the smallest ``k`` within ``max_stale``: ``k = 1`` reuses the first pose as is on every
hit (no scoring, as with ``P = 1``), ``k > 1`` re-scores the first ``k`` poses of each
hit; when even ``k = P`` is above it, the epoch re-searches every object. During the
epoch the samples searched in full (``refresh_frac``) are checked the same way, for
every ``k``: when the running share of stale choices at the epoch's ``k`` passes
``max_stale`` (after at least 20 checks), the epoch moves to the smallest larger ``k``
within it (``cache_rescore_escalated``), and re-searches every object from then on
only when none is. Each epoch thus trains on a cache whose measured staleness is at
most ``max_stale``, at the least scoring the measurements allow. Logged:
``cache_poses_rescored`` (poses re-scored per hit at the end of the epoch: 0, or
``k``) and ``cache_stale_probe_first`` (``k = 1``); ``cache_stale_probe`` and
``cache_stale_frac`` are the staleness of the choice the epoch trains on.

Logged per epoch (:meth:`SearchMode.end_epoch`): ``pose_hist`` (counts of ``h``
over the samples of the epoch, relative to the known ground-truth pose),
``pose_entropy`` (nats), ``poses_used`` (poses with at least 1% of the samples),
``changed_frac`` (objects whose canonical grid changed since their previous
epoch, modulo symmetry; null in the first search epoch), ``temperature``,
``rows_scored_per_sample``, ``cache_hit_frac`` and ``score_gap_median`` (median
over the samples searched in full of the second-best minus the best score, in
nats: how far the likelihood alone separates the poses); with a learned prior also
``prior_changed_frac`` (of the samples searched in full, those whose chosen pose
scores worse than the best: the prior overruled the likelihood), ``prior_nll``, ``prior_entropy``
(nats, mean over classes), ``prior_top_pose`` and ``prior_top_prob``
(:meth:`orient3d.training.prior.OrientationPrior.update`). ``search.prior_weight`` ``λ``
scales the prior in the score, ``L - λ log p(h)`` (1: the ELBO).

Shared template (``search.template = "voxels"``, :mod:`orient3d.search.template`): a
congealing term that uses neither the stored frame nor labels. Every candidate of a
sample searched in full (and every re-scored proposal) also pays ``λ_T·N_T(r⁻¹x)``
(``λ_T = search.template_weight``), the negative log likelihood of its grid under the
per-voxel occupancy of the grids trained on in the previous epoch (the warm-up's
grids as shown, then the search's choices; soft rows by their weights). Hard
scores become ``L + λ_T N_T``; soft weights ``softmax(-(L + λ_T N_T) / T)``. Objects are
thus pulled towards the pose of the common mean shape. Evaluation and the pose
metrics search with the model's scores alone, so they measure what the model
learned. Logged: ``template_overruled_frac`` (of the samples searched in full,
those whose choice scores worse under the model alone than its best: the template,
with any prior, overruled the likelihood) and ``template_entropy`` (mean per-voxel
entropy of the template, nats: low when the chosen grids agree).

``search.template = "latent"`` (:class:`orient3d.search.template.LatentTemplate`) puts
the template in the latent space instead: a candidate pays ``λ_T·½‖μ(r⁻¹x) - c‖²``,
``μ`` its encoder mean from the scoring pass and ``c`` the mean ``μ`` of the grids the
search chose over the previous epoch (the best candidate of each sample scored in
full or re-scored; a cache hit scored by nobody adds nothing). It is ready after the
first search epoch (the warm-up shows no codes). Logged: ``template_overruled_frac``
and ``template_centre_norm`` (``‖c‖``).
"""

from __future__ import annotations

import logging
import typing
from typing import Any

import torch
from torch import Tensor

from orient3d.config import Config, SearchConfig
from orient3d.data import VoxelSet
from orient3d.geometry.groups import cube_group, rotate, same_voxels, stabilizer_mask
from orient3d.metrics.usage import entropy
from orient3d.model import VAE
from orient3d.search.discrete import (
    canonical_pose,
    canonicalize,
    choice_from_pose,
    choose,
    score_and_encode,
    score_orientations,
)
from orient3d.search.template import LatentTemplate, OccupancyTemplate
from orient3d.training.modes.base import ModeSync, Prepared
from orient3d.training.prior import OrientationPrior

MIN_STALE_CHECKS = 20  # staleness checks before a share above max_stale triggers a refresh

__all__ = ["SearchMode", "make_prior", "temperature_at"]

log = logging.getLogger(__name__)


def temperature_at(k: int, n: int, start: float, end: float) -> float:
    """Geometric schedule: ``start`` at search epoch 0, ``end`` from epoch ``n - 1`` on."""
    frac = min(1.0, k / max(1, n - 1))
    return float(start * (end / start) ** frac)


def make_prior(cfg: SearchConfig, order: int, n_classes: int) -> OrientationPrior | None:
    """The orientation prior of ``search.prior`` (None for ``uniform``)."""
    if cfg.prior == "uniform":
        return None  # "stored_frame" (alias "learned") and "class" keep a table
    return OrientationPrior(
        order,
        n_classes if cfg.prior == "class" else 1,
        floor=cfg.prior_floor,
        update=cfg.prior_update,
        step=cfg.prior_step,
        temperature=cfg.prior_temperature,
    )


class SearchMode:
    """Implements the training-mode protocol of ``train`` (see the module docstring)."""

    rotate_inputs = True
    # Under DDP (orient3d.training.distributed): per-object rows exchanged after each step,
    # per-epoch counters summed and score lists joined before end_epoch.
    dist_sync = ModeSync(
        rows=("poses", "searched_at", "epoch_h"),
        sums=(
            *("hist", "rows", "samples", "hits", "prior_changed"),
            *("prior.sums", "prior.nll", "prior.n_obs"),
            *("template.sum", "template.count"),
        ),
        cats=("gaps",),
    )

    def __init__(self, cfg: Config, train: VoxelSet, generator: torch.Generator) -> None:
        self.cfg, self.epochs = cfg.search, cfg.train.epochs
        self.group = cube_group(reflections=cfg.search.group == "Oh")
        self.gen = generator
        o = cube_group()
        # Index in self.group of each element of O (the loop's applied rotations).
        self.from_o = torch.tensor([self.group.index_of(m) for m in o.matrices.numpy()])
        n, g = len(train), len(self.group)
        self.stab = train.stabilizers if g == len(o) else stabilizer_mask(train.voxels, self.group)
        # Poses kept per object: the soft choice keeps at least its K candidates.
        keep = max(self.cfg.proposals, self.cfg.top_k or g) if cfg.search.choice == "soft" else 1
        self.n_prop = min(max(keep, self.cfg.proposals), g) if self.cfg.cache else g
        self.poses = torch.full((n, self.n_prop), -1, dtype=torch.long)  # (N, P) cached h
        self.searched_at = torch.full((n,), -1, dtype=torch.long)  # search epoch of the cache
        self.last_h = torch.full((n,), -1, dtype=torch.long)  # h of the previous epoch
        self.epoch_h = torch.full((n,), -1, dtype=torch.long)
        self.hist = torch.zeros(g, dtype=torch.long)
        self.k, self.refresh_from, self.temperature = -1, 0, self.cfg.temperature_start
        self.rows = self.samples = self.hits = 0
        self.gaps: list[Tensor] = []  # per full search: second-best minus best score
        self.prior_changed = 0
        self.stale_checked = self.stale_found = 0
        self.stale_by_k = torch.zeros(self.n_prop, dtype=torch.long)  # adaptive: per k
        # next search epoch: re-search the objects last searched before this search epoch
        self.due_before: int | None = None
        self.refreshed = self.triggered = False
        self.labels = train.labels.long()
        self.voxels = train.voxels  # the stored grids, for the staleness probe
        self.seed = cfg.seed
        self.probe: float | None = None  # this epoch's probed staleness
        self.probe_first: float | None = None  # adaptive: that of the first cached pose
        self.probe_n = self.probe_rows = 0
        # cached poses a hit re-scores this epoch (adaptive_proposals: the k the probe and
        # the in-epoch checks find fresh; escalated: k was raised during the epoch)
        self.rescore, self.escalated = self.n_prop, False
        n_classes = max(len(train.class_names), int(self.labels.max()) + 1 if n else 1)
        self.prior = make_prior(cfg.search, g, n_classes)
        self.template: OccupancyTemplate | LatentTemplate | None = None
        if cfg.search.template == "voxels":
            self.template = OccupancyTemplate(train.voxels.shape[-1])
        elif cfg.search.template == "latent":
            self.template = LatentTemplate(cfg.model.latent)
        self.codes = isinstance(self.template, LatentTemplate)  # scoring keeps encoder means

    @property
    def active(self) -> bool:
        return self.k >= 0

    def start_epoch(self, model: VAE, epoch: int) -> None:
        """``epoch`` counts from 1; search epoch ``k`` counts from 0 after the warm-up."""
        self.k = epoch - 1 - self.cfg.warmup_epochs
        n_search = self.epochs - self.cfg.warmup_epochs
        c = self.cfg
        self.temperature = temperature_at(
            max(self.k, 0), n_search, c.temperature_start, c.temperature
        )
        self.refresh_from = self.k - self.k % c.refresh_every if c.refresh_every else 0
        scheduled = c.refresh_every > 0 and self.refresh_from == self.k
        carried = self.due_before is not None
        if carried and self.active:
            self.refresh_from = max(self.refresh_from, typing.cast(int, self.due_before))
        self.refreshed = self.active and (scheduled or carried)
        self.due_before, self.triggered = None, False
        self.rows = self.samples = self.hits = 0
        self.gaps, self.prior_changed = [], 0
        self.stale_checked = self.stale_found = 0
        self.stale_by_k.zero_()
        self.escalated = False
        self.probe, self.probe_first, self.probe_n, self.probe_rows = None, None, 0, 0
        self.rescore = self.n_prop
        if self.active and c.cache and c.stale_probe > 0:
            self._probe_staleness(model)

    def _probe_staleness(self, model: VAE) -> None:
        """Search a sample of the objects whose cache entry this epoch would reuse, in
        their stored pose; above ``max_stale`` changed, re-search every object."""
        current = (self.searched_at >= 0) & (self.searched_at >= self.refresh_from)
        objs = current.nonzero(as_tuple=True)[0]
        if objs.numel() == 0:
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.k)
        pick = torch.randperm(objs.numel(), generator=gen)[: self.cfg.stale_probe]
        o = objs[pick]
        x = self.voxels[o].to(next(model.parameters()).device)
        ident = torch.zeros(o.numel(), dtype=torch.long)  # shown as stored: g = identity
        # every process of a distributed run probes the same objects: their rows are
        # counted once, apart from the per-step rows summed over ranks
        self.probe_rows = o.numel() * len(self.group)
        scores = self._with_template(*self._score(model, x, count=False), x, None)
        scores = self._with_prior(scores, None, self.from_o[ident], o)
        h = canonical_pose(scores.argmin(dim=1), self.from_o[ident], self.group)

        def stale(n_poses: int) -> float:
            used = self._cached_choice(o, self.from_o[ident], scores, n_poses)
            return float((~same_voxels(self.stab[o], self.group, h, used)).float().mean())

        self.probe_n = int(o.numel())
        if self.cfg.adaptive_proposals:  # the fewest cached poses that are fresh enough
            rates = [stale(k) for k in range(1, self.n_prop + 1)]
            fresh = [k for k, rate in enumerate(rates, 1) if rate <= self.cfg.max_stale]
            self.rescore = fresh[0] if fresh else self.n_prop
            self.probe, self.probe_first = rates[self.rescore - 1], rates[0]
        else:
            self.probe = stale(self.n_prop)
        if self.probe > self.cfg.max_stale:
            self.refresh_from, self.refreshed = self.k, True

    def _score(
        self, model: VAE, x: Tensor, cand: Tensor | None = None, count: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Scores ``(B, K)`` on the CPU and, with a latent template, the encoder means
        ``(B, K, Z)`` of the scored grids (else None)."""
        c = self.cfg
        if count:
            self.rows += x.shape[0] * (len(self.group) if cand is None else cand.shape[1])
        score = score_and_encode if self.codes else score_orientations
        out = score(
            model,
            x.to(torch.uint8),  # 0/1 grids: rotating bytes is ~4x cheaper than floats
            self.group,
            sample=c.sample,
            generator=self.gen if c.sample else None,
            precision=c.precision,
            chunk=c.chunk,
            candidates=cand,
        )
        if isinstance(out, tuple):
            return out[0].cpu(), out[1].cpu()
        return out.cpu(), None

    def _with_template(
        self, scores: Tensor, mu: Tensor | None, x: Tensor, r: Tensor | None
    ) -> Tensor:
        """``scores + λ_T N_T`` for candidates ``r (B, K)`` (None: every element); a latent
        template reads the candidates' encoder means ``mu (B, K, Z)``."""
        if self.template is None or not self.template.ready:
            return scores
        if isinstance(self.template, LatentTemplate):
            return scores + self.cfg.template_weight * self.template.nll(typing.cast(Tensor, mu))
        nll = self.template.nll(x, self.group).cpu()  # (B, G)
        if r is not None:
            nll = nll.gather(1, r)
        return scores + self.cfg.template_weight * nll

    def _add_codes(self, mu: Tensor | None, col: Tensor) -> None:
        """Add to a latent template the codes ``mu[b, col[b]]`` of the chosen candidates."""
        if isinstance(self.template, LatentTemplate) and mu is not None and col.numel():
            self.template.add(mu[torch.arange(col.shape[0]), col])

    def _add_grids(self, x: Tensor, weight: Tensor | None = None) -> None:
        if isinstance(self.template, OccupancyTemplate):
            self.template.add(x, weight)

    def _with_prior(self, scores: Tensor, r: Tensor | None, g: Tensor, idx: Tensor) -> Tensor:
        """``scores - s λ log p(h)`` for candidates ``r (B, K)`` (None: every element).

        ``s`` is the temperature for the soft choice, so ``softmax(-(L - T λ log p) / T)
        = softmax(-L / T + λ log p)``: the prior is not damped by annealing; 1 for hard.
        """
        if self.prior is None:
            return scores
        if r is None:
            r = torch.arange(len(self.group)).expand(g.shape[0], -1)
        h = canonical_pose(r, g[:, None], self.group)  # (B, K)
        scale = self.temperature if self.cfg.choice == "soft" else 1.0
        return scores - scale * self.cfg.prior_weight * self.prior.log_prob(h, self.labels[idx])

    def _cached_choice(
        self, objs: Tensor, g: Tensor, scores: Tensor, n_poses: int | None = None
    ) -> Tensor:
        """``(b,)`` the canonical pose a cache hit of ``objs`` would train on, given the
        current model's ``scores (b, G)`` of the objects shown turned by ``g (b,)``.

        With one cached pose that is the pose itself; with ``P > 1`` a hit re-scores the
        ``P`` cached poses and takes the best, so staleness compares that choice (the one
        trained on), not the first cached pose, with a fresh search. ``n_poses``: the
        first so many cached poses (default: those a hit re-scores this epoch).
        """
        cached = self.poses[objs][:, : n_poses or self.rescore]  # (b, P)
        if cached.shape[1] == 1:
            return cached[:, 0]
        r = choice_from_pose(cached, g[:, None], self.group)  # (b, P) elements as shown
        best = scores.gather(1, r).argmin(dim=1, keepdim=True)  # (b, 1)
        return cached.gather(1, best)[:, 0]

    def _count_stale(self, objs: Tensor, fresh_h: Tensor, g: Tensor, scores: Tensor) -> None:
        """Compare fresh choices ``h (b,)`` of ``objs`` (shown turned by ``g``, scored
        ``scores (b, G)``) with what their current cache entries would train on."""
        current = (self.searched_at[objs] >= 0) & (self.searched_at[objs] >= self.refresh_from)
        if not bool(current.any()):
            return
        o, h, gc, sc = objs[current], fresh_h[current], g[current], scores[current]

        def stale(n_poses: int | None = None) -> int:
            used = self._cached_choice(o, gc, sc, n_poses)
            return int((~same_voxels(self.stab[o], self.group, h, used)).sum())

        self.stale_checked += int(o.numel())
        if self.cfg.adaptive_proposals:  # every k, the epoch's among them
            by_k = torch.tensor([stale(k) for k in range(1, self.n_prop + 1)])
            self.stale_by_k += by_k
            self.stale_found += int(by_k[self.rescore - 1])
        else:
            self.stale_found += stale()
        limit = self.cfg.max_stale * self.stale_checked
        if self.triggered or self.stale_checked < MIN_STALE_CHECKS or self.stale_found <= limit:
            return
        if self.cfg.adaptive_proposals:  # re-score more cached poses, if enough are fresh
            within = (self.stale_by_k <= limit).nonzero(as_tuple=True)[0] + 1
            more = within[within > self.rescore]
            if more.numel():
                self.rescore, self.escalated = int(more[0]), True
                self.stale_found = int(self.stale_by_k[self.rescore - 1])
                return
        # the rest of this epoch re-searches every object it presents
        self.refresh_from, self.refreshed, self.triggered = self.k, True, True

    def _need_search(self, idx: Tensor) -> Tensor:
        """``(B,)`` bool: the samples whose cached pose is missing or stale."""
        if not self.cfg.cache:
            return torch.ones(idx.shape[0], dtype=torch.bool)
        if self.cfg.refresh_every > 0 or self.refreshed:
            need = self.searched_at[idx] < self.refresh_from
        else:  # rate-limited: only the drawn fraction is searched
            need = torch.zeros(idx.shape[0], dtype=torch.bool)
        if self.cfg.refresh_frac > 0:
            draw = torch.rand(idx.shape[0], generator=self.gen, device=self.gen.device).cpu()
            need |= draw < self.cfg.refresh_frac
        return need

    def _candidates(self, model: VAE, x: Tensor, g: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Candidate elements ``(B, P)`` and their scores ``(B, P)``, best first.

        Samples with a fresh cache entry score only their ``P`` cached poses (or
        none when ``P = 1``: the score is then 0); the others are searched in full
        and refresh the cache. With ``refresh_every = 0`` a sample never searched
        and not drawn this step stays as shown (``r`` = identity, score 0).
        """
        b, p = idx.shape[0], self.n_prop
        need = self._need_search(idx)
        elems = torch.empty(b, p, dtype=torch.long)
        scores = torch.zeros(b, p)
        if need.any():
            x_need = x[need.to(x.device)]
            raw, mu = self._score(model, x_need)  # (b', G), (b', G, Z) or None
            full = self._with_template(raw, mu, x_need, None)
            full = self._with_prior(full, None, g[need], idx[need])
            s, r = full.sort(dim=1)
            self._add_codes(mu, r[:, 0])
            two = raw.topk(2, dim=1, largest=False).values  # (b', 2)
            self.gaps.append(two[:, 1] - two[:, 0])
            # the prior or the template beat the likelihood
            worse = raw.gather(1, r[:, :1]).squeeze(1) > two[:, 0]
            self.prior_changed += int(worse.sum())
            elems[need], scores[need] = r[:, :p], s[:, :p]
            fresh = canonical_pose(r[:, :p], g[need][:, None], self.group)  # (b', P)
            if self.cfg.cache:
                self._count_stale(idx[need], fresh[:, 0], g[need], full)
            self.poses[idx[need]] = fresh
            self.searched_at[idx[need]] = self.k
        missing = self.searched_at[idx] < 0
        # Never searched and not drawn (refresh_every = 0): trained as shown (r = identity).
        elems[~need & missing], scores[~need & missing] = 0, 0.0
        hit = ~need & ~missing
        self.hits += int(hit.sum())
        if hit.any():
            r = choice_from_pose(self.poses[idx[hit]], g[hit][:, None], self.group)  # (b'', P)
            q = self.rescore  # the first q cached poses are re-scored (all P but adaptive)
            if q > 1:
                x_hit, rq = x[hit.to(x.device)], r[:, :q]
                s, mu = self._score(model, x_hit, rq.to(x.device))
                s = self._with_template(s, mu, x_hit, rq)
                s = self._with_prior(s, rq, g[hit], idx[hit])
                s, order = s.sort(dim=1)
                self._add_codes(mu, order[:, 0])
                r = torch.cat([rq.gather(1, order), r[:, q:]], dim=1)
                scores[hit] = torch.cat([s, torch.zeros(s.shape[0], p - q)], dim=1)
            elems[hit] = r
        return elems, scores

    def prepare(self, model: VAE, x_shown: Tensor, g: Tensor, idx: Tensor, epoch: int) -> Prepared:
        """The grids the loss is computed on, in the model's frame.

        ``x_shown (B, D, D, D)`` is the batch as shown, ``g (B,)`` the elements of O
        that turned it, ``idx (B,)`` the objects' indices in the training set.
        """

        if not self.active:
            self._add_grids(x_shown)
            return Prepared(x=x_shown, weight=None, choice=None)
        b = x_shown.shape[0]
        g, idx = self.from_o[g.cpu()], idx.cpu().long()
        elems, scores = self._candidates(model, x_shown, g, idx)  # (B, P) each
        self.samples += b
        r = elems[:, 0]
        h = canonical_pose(r, g, self.group)
        self._record(h, idx)
        inv = self.group.inverse
        if self.cfg.choice == "hard":
            if self.prior is not None:
                self.prior.observe(h[:, None], torch.ones(b, 1), self.labels[idx])
            x = rotate(x_shown, self.group, inv[r].to(x_shown.device))  # (B, D, D, D)
            self._add_grids(x)
            return Prepared(x=x, weight=None, choice=r.to(x_shown.device))
        k = min(self.cfg.top_k or elems.shape[1], elems.shape[1])
        ch = choose(
            scores[:, :k], "soft", self.temperature, candidates=elems[:, :k], order=len(self.group)
        )
        if self.prior is not None:
            cand_h = canonical_pose(elems[:, :k], g[:, None], self.group)  # (B, K)
            self.prior.observe(cand_h, ch.weight, self.labels[idx])
        rows = inv[elems[:, :k]].reshape(-1).to(x_shown.device)
        x = rotate(x_shown.repeat_interleave(k, 0), self.group, rows)  # (B K, D, D, D)
        weight = ch.weight.reshape(-1).to(x_shown.device, x_shown.dtype)  # (B K,)
        self._add_grids(x, weight)
        return Prepared(x=x, weight=weight.detach(), choice=r.to(x_shown.device))

    def _record(self, h: Tensor, idx: Tensor) -> None:
        self.epoch_h[idx] = h
        self.hist += torch.bincount(h, minlength=len(self.group))

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        tmpl: dict[str, Any] = {}
        if isinstance(self.template, OccupancyTemplate):
            self.template.update()
            t = self.template.occupancy.double().clamp(1e-12, 1 - 1e-12)
            ent = -(t * t.log() + (1 - t) * (1 - t).log())
            tmpl["template_entropy"] = float(ent.mean())
        elif self.template is not None:
            self.template.update()
            ready = self.template.ready  # (not before the first search epoch's codes)
            tmpl["template_centre_norm"] = float(self.template.centre.norm()) if ready else None
        if not self.active:
            return {"search_active": False, **tmpl}
        seen = self.epoch_h >= 0
        both = seen & (self.last_h >= 0)
        same = same_voxels(self.stab[both], self.group, self.epoch_h[both], self.last_h[both])
        total = int(self.hist.sum())
        out = {
            "search_active": True,
            "pose_hist": self.hist.tolist(),
            "pose_entropy": entropy(self.hist.numpy()) if total else None,
            "poses_used": int((self.hist >= max(1.0, 0.01 * total)).sum()),
            "changed_frac": float((~same).float().mean()) if both.any() else None,
            "temperature": self.temperature,
            "rows_scored_per_sample": (self.rows + self.probe_rows) / max(1, self.samples),
            "cache_hit_frac": self.hits / max(1, self.samples),
            "cache_stale_frac": self.stale_found / self.stale_checked
            if self.stale_checked
            else None,
            "cache_stale_checked": self.stale_checked,
            "cache_stale_probe": self.probe,
            "cache_stale_probe_n": self.probe_n,
            "cache_poses_rescored": self.rescore if self.rescore > 1 else 0,
            "cache_rescore_escalated": self.escalated,
            "cache_refreshed": self.refreshed,
            "cache_refresh_triggered": self.triggered,
            "score_gap_median": None,
            **tmpl,
        }
        if self.cfg.adaptive_proposals:
            out["cache_stale_probe_first"] = self.probe_first
        if self.triggered:  # those presented before the trigger are due next epoch
            self.due_before = self.k
        elif self.stale_found > self.cfg.max_stale * self.stale_checked:  # (few checks)
            self.due_before = self.k + 1  # every object
        if self.gaps:
            gaps = torch.cat(self.gaps)
            out["score_gap_median"] = float(gaps.median())
            if self.prior is not None:
                out["prior_changed_frac"] = self.prior_changed / gaps.numel()
            if self.template is not None:
                out["template_overruled_frac"] = self.prior_changed / gaps.numel()
        if self.prior is not None:
            out.update(self.prior.update())
        self.last_h = torch.where(seen, self.epoch_h, self.last_h)
        self.epoch_h.fill_(-1)
        self.hist.zero_()
        return out

    def canonicalize(self, model: VAE, x_shown: Tensor) -> Tensor | None:
        """Eval-time hard choice ``r (B,)`` in O: exhaustive search, encoder mean."""
        c = self.cfg
        if len(self.group) == len(self.from_o):
            return canonicalize(model, x_shown, self.group, precision=c.precision, chunk=c.chunk)
        # Evaluation reconstructs with elements of O: search those (as Oh indices).
        cand = self.from_o.to(x_shown.device).expand(x_shown.shape[0], -1)  # (B, 24)
        s = score_orientations(
            model, x_shown, self.group, precision=c.precision, chunk=c.chunk, candidates=cand
        )
        return s.argmin(dim=1)  # index in O

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "poses": self.poses.clone(),
            "searched_at": self.searched_at.clone(),
            "last_h": self.last_h.clone(),
            "due_before": self.due_before,
        }
        if self.prior is not None:
            state["prior"] = self.prior.state_dict()
        if self.template is not None:
            state["template"] = self.template.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.prior is not None and "prior" in state:
            self.prior.load_state_dict(state["prior"])
        if self.template is not None and "template" in state:
            self.template.load_state_dict(state["template"])
        if state["poses"].shape != self.poses.shape:
            log.warning("search cache shape changed; starting with an empty cache")
            return
        self.poses = state["poses"].clone()
        self.searched_at = state["searched_at"].clone()
        self.last_h = state["last_h"].clone()
        self.due_before = state.get("due_before")
