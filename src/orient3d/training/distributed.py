"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc-per-node N -m orient3d train CONFIG --out RUN`` starts N
processes; each finds its place from the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, see :func:`from_env`), joins the process group
(NCCL on ``cuda:LOCAL_RANK``, gloo on the CPU) and trains one replica.

How a run stays the same run whatever the number of processes:

- Every rank draws the same seeded epoch permutation and the same rotations
  ``g`` of the whole global batch (``train.batch_size`` objects) from the shared
  generator, then takes its contiguous slice (:meth:`Dist.shard`).
- The latent noise is drawn for the whole global batch from the shared noise
  generator and sliced (:class:`ShardForward`), so row ``i`` of the batch sees the
  same ``eps`` as in one process.
- Each rank's loss is ``sum(rows) / B_global · world`` (:func:`shard_loss`); DDP
  averages gradients over ranks, so the gradient is that of the mean over the
  global batch, as in one process.
- A mode's per-object state (the search cache) is exchanged after every step
  (:func:`sync_mode_step`) and its per-epoch counters summed before
  ``end_epoch`` (:func:`sync_mode_epoch`), as listed in its ``dist_sync``. The
  ``continuous`` mode draws its poses and ``refresh_frac`` for the whole global
  batch from the shared generator and keeps its rows (``ModeSync.shared_draws``),
  as one process does; other modes' own draws (the search's ``refresh_frac``) come
  from a per-rank generator, so those differ from one process's (same distribution).
- Only rank 0 writes the run folder, logs, evaluates and checkpoints; the others
  wait for its result (:meth:`Dist.on_main`). Every rank loads the checkpoint on
  resume.

So with ``model.norm`` ``group`` or ``none`` and no random draws inside the mode,
N processes reach one process's parameters up to float rounding (the order of
the gradient sums differs). BatchNorm normalizes with each rank's own batch
statistics unless synchronized: on CUDA the model is converted to
``nn.SyncBatchNorm`` (exact up to rounding); on the CPU (gloo) PyTorch has no
SyncBatchNorm, so each rank normalizes over ``B / world`` samples, a small
statistical difference from one process.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import math
import os
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from orient3d import model as vae_model
from orient3d.devices import resolve_device
from orient3d.errors import ConfigError
from orient3d.model import VAE, VAEOutput
from orient3d.training.modes.base import ModeSync

__all__ = [
    "MODE_SYNC",
    "Dist",
    "ModeSync",
    "ShardForward",
    "check_batches",
    "from_env",
    "mode_generator",
    "setup",
    "shard_loss",
    "shutdown",
    "sweep_device",
    "sync_mode_epoch",
    "sync_mode_step",
    "wrap_model",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# A rank waits this long for rank 0 (evaluation with search on a big test set).
TIMEOUT = datetime.timedelta(hours=2)


# Modes are found by their own ``dist_sync: ModeSync`` attribute; this registry (by class
# name) is only for mode classes that cannot carry one. None of the built-in modes is here.
MODE_SYNC: dict[str, ModeSync] = {}
_GEN_OFFSET = 7_919  # keeps the per-rank mode generators apart from the shared ones


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank ``rank`` of ``world`` (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    comm: str = "cpu"  # the device collectives run on (cuda for NCCL)

    @property
    def active(self) -> bool:
        """Several processes (a process group is initialized)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run folder and logs."""
        return self.rank == 0

    def shard(self, b: int, rank: int | None = None) -> slice:
        """Rows of a global batch of ``b`` that ``rank`` (default: this one) trains:
        contiguous, in rank order, sizes differing by at most one."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(b, self.world)
        lo = rank * base + min(rank, extra)
        return slice(lo, lo + base + (1 if rank < extra else 0))

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return typing.cast(T, box[0])

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        box: list[Any] = [None] * self.world
        tdist.all_gather_object(box, obj)
        return box

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank returns its result."""
        value: Any = fn() if self.main else None
        return typing.cast(T, self.broadcast(value))

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` (a scalar) over ranks."""
        if not self.active:
            return value
        v = value.detach().to(self.comm, torch.float64).reshape(1)
        tdist.all_reduce(v)
        return (v / self.world).reshape(()).to(value.device)

    def sum_(self, t: Tensor) -> Tensor:
        """``t`` summed over ranks, in place."""
        if self.active:
            buf = t.to(self.comm)
            tdist.all_reduce(buf)
            t.copy_(buf)
        return t


def from_env(environ: Mapping[str, str] | None = None) -> Dist:
    """This process's place from torchrun's variables (``Dist()`` when they are unset)."""
    env = os.environ if environ is None else environ
    if not all(k in env for k in ENV_KEYS):
        return Dist()
    try:
        rank, world, local = (int(env[k]) for k in ENV_KEYS)
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers: "
            + ", ".join(f"{k}={env[k]!r}" for k in ENV_KEYS)
        ) from None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return Dist(rank, world, local)


_OWNED = False  # whether setup() started the process group (and shutdown() may end it)


def setup(device_name: str) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun; this rank's place and device.

    One process (no torchrun, or ``--nproc-per-node 1``): ``(Dist(), device)``.
    Several: CUDA ranks use ``cuda:LOCAL_RANK`` and NCCL, CPU ranks gloo. Calling
    it again (the group is already up) returns the same answer.
    """
    global _OWNED
    env = from_env()
    device = resolve_device(device_name)
    if not env.active:
        return env, device
    if device.type == "cuda":
        if device.index not in (None, env.local_rank):
            log.warning("train.device=%s: rank %d uses cuda:%d", device, env.rank, env.local_rank)
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(
            f"train.device={device_name!r}: distributed training runs on cuda (NCCL) "
            f"or cpu (gloo), not {device.type}"
        )
    if not tdist.is_initialized():
        tdist.init_process_group(backend, timeout=TIMEOUT)
        _OWNED = True
        log.info("rank %d of %d on %s (%s)", env.rank, env.world, device, backend)
    elif tdist.get_world_size() != env.world:
        raise ConfigError(f"the process group has {tdist.get_world_size()} ranks, not {env.world}")
    comm = str(device) if backend == "nccl" else "cpu"
    return Dist(env.rank, env.world, env.local_rank, comm), device


def shutdown(clean: bool = True) -> None:
    """End the process group started by :func:`setup` (a no-op otherwise).

    After a clean run every rank first frees what still refers to the group
    (DDP wrappers sit in reference cycles) and waits for the others, so that no
    rank tears its connections down while another still uses them; a gloo group
    destroyed under live references aborts the process at exit. After an error
    the rank leaves at once instead of waiting for ranks that may never come.
    """
    global _OWNED
    if _OWNED and tdist.is_initialized():
        if clean:
            gc.collect()
            tdist.barrier()
        tdist.destroy_process_group()
    _OWNED = False


@contextlib.contextmanager
def main_first(dist: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. filling a data cache), then the others."""
    if not dist.main:
        dist.barrier()
    yield
    if dist.main:
        dist.barrier()


def check_batches(n_train: int, batch_size: int, dist: Dist) -> None:
    """The global batch must split evenly over the ranks, and every rank must get a
    share of the epoch's last (smaller) batch."""
    if not dist.active:
        return
    if batch_size % dist.world:
        raise ConfigError(
            f"train.batch_size={batch_size} (the global batch) does not split evenly over "
            f"{dist.world} processes; use a multiple of {dist.world}"
        )
    last = n_train % batch_size
    if 0 < last < dist.world:
        raise ConfigError(
            f"the last batch of each epoch has {last} of the {n_train} training objects, "
            f"fewer than the {dist.world} processes; change data.n_train or train.batch_size"
        )


def mode_generator(
    seed: int, dist: Dist, shared: torch.Generator, sync: ModeSync | None = None
) -> torch.Generator:
    """The generator a mode draws from: the shared one in one process, or when the mode
    draws for the whole global batch (``sync.shared_draws``); else a per-rank one under
    DDP (the shared generator must advance alike on every rank)."""
    if not dist.active or (sync is not None and sync.shared_draws):
        return shared
    return torch.Generator().manual_seed(seed + _GEN_OFFSET * (dist.rank + 1))


class ShardForward(nn.Module):
    """``VAE.forward`` on a shard: ``eps`` is drawn for all ``total`` rows of the
    global batch and rows ``rows`` are used, so each row gets one process's noise.

    With ``rows = slice(0, total)`` it equals ``VAE.forward(x, generator=...)``
    exactly (tested). It is the module DDP wraps.
    """

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(
        self, x: Tensor, generator: torch.Generator | None, rows: slice, total: int
    ) -> VAEOutput:
        vae = self.vae
        mu, logvar = vae.encode(x)  # (b, Z) each
        shape = (total, mu.shape[1])
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)[rows]
        z = mu + eps * (0.5 * logvar).exp()
        logits = vae.decode(z)
        # looked up on the module each call, as VAE.forward does
        recon = vae_model.recon_loss(logits, x, vae.cfg.recon, vae.cfg.gamma)
        kl = vae_model.kl_standard_normal(mu, logvar)
        return VAEOutput(logits, mu, logvar, z, recon, kl, recon + vae.cfg.beta * kl)


def wrap_model(model: VAE, dist: Dist, device: torch.device) -> nn.Module:
    """The module the training step calls: :class:`ShardForward`, inside DDP when
    several processes train (BatchNorm synchronized on CUDA)."""
    fwd = ShardForward(model)
    if not dist.active:
        return fwd
    if device.type == "cuda":
        # Replaces the BatchNorm children in place; the Parameters (and the
        # optimizer's references to them) are kept.
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(fwd, device_ids=[device.index])
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.info("BatchNorm on CPU/gloo is not synchronized: per-rank batch statistics")
    return nn.parallel.DistributedDataParallel(fwd)


def shard_loss(neg_elbo: Tensor, weight: Tensor | None, b_global: int, dist: Dist) -> Tensor:
    """This rank's loss: ``sum(weight · neg_elbo) / B_global · world``; DDP's gradient
    average over ranks then gives the gradient of the global batch mean. In one
    process it is the protocol's ``mean`` (or ``sum(w · L) / B``)."""
    if not dist.active:
        return neg_elbo.mean() if weight is None else (weight * neg_elbo).sum() / b_global
    terms = neg_elbo if weight is None else weight * neg_elbo
    return terms.sum() * (dist.world / b_global)


def sync_mode_step(mode: Any, idx: Tensor, dist: Dist) -> None:
    """After a step: every rank gets the per-object rows the other ranks wrote for
    their slices of the global batch ``idx`` (B,)."""
    if not dist.active:
        return
    for name in _sync_of(mode).rows:
        owner, attr = _owner(mode, name)
        t = getattr(owner, attr, None)
        if isinstance(t, Tensor):
            _exchange_rows(t, idx.cpu(), dist)


def _exchange_rows(t: Tensor, idx: Tensor, dist: Dist) -> None:
    b = idx.shape[0]
    m = math.ceil(b / dist.world)
    mine = t[idx[dist.shard(b)]]  # (b_r, ...)
    pad = torch.zeros((m, *t.shape[1:]), dtype=t.dtype)
    pad[: mine.shape[0]] = mine
    parts = [torch.empty_like(pad, device=dist.comm) for _ in range(dist.world)]
    tdist.all_gather(parts, pad.to(dist.comm))
    for r, part in enumerate(parts):
        rows = idx[dist.shard(b, r)]
        t[rows] = part[: rows.shape[0]].to(t.device)


def _sync_of(mode: Any) -> ModeSync:
    own = getattr(mode, "dist_sync", None)
    return own if isinstance(own, ModeSync) else MODE_SYNC.get(type(mode).__name__, ModeSync())


def _owner(mode: Any, name: str) -> tuple[Any, str]:
    """The object holding the (dotted) attribute ``name`` of ``mode``, and its last part."""
    *path, attr = name.split(".")
    for part in path:
        mode = getattr(mode, part, None)
    return mode, attr


def sync_mode_epoch(mode: Any, dist: Dist) -> None:
    """Before ``end_epoch``: sum the mode's per-epoch counters over ranks and join
    its per-epoch lists of tensors (in rank order)."""
    if not dist.active:
        return
    sync = _sync_of(mode)
    for name in sync.sums:
        owner, attr = _owner(mode, name)
        v = getattr(owner, attr, None)
        if isinstance(v, Tensor):
            dist.sum_(v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            total = dist.sum_(torch.tensor([v], dtype=torch.float64))
            setattr(owner, attr, type(v)(total.item()))
    for name in sync.cats:
        owner, attr = _owner(mode, name)
        v = getattr(owner, attr, None)
        if isinstance(v, list):
            parts = dist.gather([t.cpu() for t in v])
            setattr(owner, attr, [t for part in parts for t in part])


def sweep_device(i: int, device: str) -> str:
    """Run ``i`` of a parallel sweep: ``cuda:(i mod #GPUs)`` when ``device`` is
    ``auto`` or ``cuda`` and several GPUs exist, else ``device`` unchanged."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if n > 1:
            return f"cuda:{i % n}"
    return device
