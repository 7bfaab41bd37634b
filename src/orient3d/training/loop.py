"""One training loop for every mode; checkpoints, resume and the run folder.

The loop (:func:`fit`) reads top to bottom: each epoch draws a seeded permutation
of the training objects, cuts it into batches of the whole uint8 tensor, turns
each sample by a fresh random element ``g`` of O when the mode asks for it, lets
the mode prepare the grids the loss is computed on, takes an Adam step, then
evaluates on the validation and test splits (every ``train.eval_every`` epochs
and the last: :mod:`orient3d.training.evaluation`), logs one line of
``metrics.jsonl`` and checkpoints. The validation split (``data.n_val`` objects carved from the
training objects, :func:`orient3d.data.split_validation`) makes every decision:
the best checkpoint, early stopping. The test split is evaluated for reporting
only; nothing the loop does depends on it.
Every draw comes from two generators seeded from ``cfg.seed`` (one for batch
order and rotations, one on the device for ``z``), saved in each checkpoint, so
``--resume`` reaches exactly the metrics of an uninterrupted run.

Modes follow the :class:`Mode` protocol and are looked up in :data:`MODES`.
"""

from __future__ import annotations

import logging
import math
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from orient3d.config import Config
from orient3d.data import VoxelSet, split_validation
from orient3d.data.load import load_data  # re-exported: orient3d.train.load_data
from orient3d.devices import autocast, check_precision, resolve_precision, set_threads
from orient3d.errors import ConfigError, DataError, RunError
from orient3d.evaluation.protocols import evaluate, load_run
from orient3d.geometry import groups, so3
from orient3d.geometry.transforms import shift
from orient3d.rundir import lock, runs
from orient3d.training import distributed, pose_head
from orient3d.training.evaluation import evaluate_splits, finish, is_evaluated, select
from orient3d.training.modes import MODES, AugmentedMode, Mode, Prepared, SingleMode, get_mode
from orient3d.training.state import TrainState, build_state, save_state

__all__ = [
    "MODES",
    "AugmentedMode",
    "Mode",
    "Prepared",
    "SingleMode",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "get_mode",
    "load_data",
    "load_run",
    "split_validation",
    "train",
    "turned_back",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int, float, float], None]  # epoch, step, steps, loss, samples/s


class TrainingDiverged(RunError):
    """The loss or the gradient became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------
# The loop


def _diverged(what: str, epoch: int, step: int, out: Path, st: TrainState) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (epoch {st.epoch}) is kept in {out / runs.CHECKPOINTS}"
        if st.epoch > 0
        else "no checkpoint was written (it diverged in the first epoch)"
    )
    return TrainingDiverged(
        f"{what} is not finite at epoch {epoch}, step {step}; {kept}. "
        "Try a lower train.lr, train.grad_clip > 0 or train.precision=fp32"
    )


def turned_back(x: Tensor, pick: Tensor, R: Tensor) -> Tensor:
    """``x (b, D, D, D)`` float with the rows ``pick (b,)`` replaced by
    ``R⁻¹·[R·x > 0.5]`` (trilinear resampling both ways, ``R (b, 3, 3)``; zeros outside
    the grid): a stored-pose grid as a continuous pose search sees it at the true pose
    of a turned, voxelized object (``train.resample_frac``)."""
    if not bool(pick.any()):
        return x
    Rp = R[pick].to(x.device)
    shown = (so3.resample(x[pick.to(x.device)], Rp) > 0.5).to(x.dtype)
    out = x.clone()
    back = so3.resample(shown, Rp.transpose(-1, -2))
    out[pick.to(x.device)] = back.clamp(0, 1)  # (trilinear weights can sum to 1 + 1 ulp)
    return out


def _step(
    st: TrainState, cfg: Config, voxels: Tensor, idx: Tensor, epoch: int
) -> tuple[Tensor, Tensor]:
    """One SGD step on the objects ``idx`` (B,) of the global batch; returns (loss, grad norm).

    Under DDP every rank draws the whole batch's rotations and noise and trains
    its slice (``orient3d.training.distributed``)."""
    group, t = groups.cube_group(), cfg.train
    b = idx.shape[0]
    g = torch.zeros(b, dtype=torch.long)
    if st.mode.rotate_inputs:
        g = torch.randint(len(group), (b,), generator=st.data_gen)
    offsets = None
    if t.shift > 0:  # drawn only then: runs without it keep their random stream
        offsets = torch.randint(-t.shift, t.shift + 1, (b, 3), generator=st.data_gen)
    turned = None
    if t.resample_frac > 0:  # drawn only then, after the offsets: as for the shift
        pick = torch.rand(b, generator=st.data_gen) < t.resample_frac
        turned = (pick, so3.random_rotations(b, st.data_gen))
    idx_all, part = idx, st.dist.shard(b)
    idx, g = idx[part], g[part]
    x = voxels[idx.to(voxels.device)]  # (b, D, D, D) uint8, b = B / world
    if st.mode.rotate_inputs:
        x = groups.rotate(x, group, g)
    if offsets is not None:
        x = shift(x, offsets[part])
    x_shown = x.float()  # (b, D, D, D)
    if turned is not None:
        x_shown = turned_back(x_shown, turned[0][part], turned[1][part])
    prep = st.mode.prepare(st.model, x_shown, g.to(x.device), idx, epoch)
    k = prep.x.shape[0] // max(1, idx.shape[0])  # rows per sample
    rows = slice(k * part.start, k * part.stop)
    with autocast(x.device, t.precision):
        out = st.forward(prep.x, st.noise_gen, rows, k * b)
    loss = distributed.shard_loss(out.neg_elbo, prep.weight, b, st.dist)
    st.optimizer.zero_grad(set_to_none=True)
    st.scaler.scale(loss).backward()
    st.scaler.unscale_(st.optimizer)
    params = [p for p in st.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([typing.cast(Tensor, p.grad) for p in params])
    if t.grad_clip > 0 and bool(norm > t.grad_clip):  # (clip_grad_norm_ always rescales)
        torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip, norm)
    st.scaler.step(st.optimizer)
    st.scaler.update()
    distributed.sync_mode_step(st.mode, idx_all, st.dist)
    return st.dist.mean(loss.detach()), norm.detach()


def _train_epoch(
    st: TrainState, cfg: Config, voxels: Tensor, epoch: int, out: Path, progress: Progress | None
) -> tuple[float, float, float]:
    """One pass over the training set; returns (mean loss, samples/s, mean gradient norm)."""
    st.model.train()
    st.mode.start_epoch(st.model, epoch)
    n, bs = voxels.shape[0], cfg.train.batch_size
    steps = math.ceil(n / bs)
    perm = torch.randperm(n, generator=st.data_gen)
    total, norms, t0 = 0.0, 0.0, time.perf_counter()
    for step in range(1, steps + 1):
        idx = perm[(step - 1) * bs : step * bs]
        loss, norm = _step(st, cfg, voxels, idx, epoch)
        value = float(loss)
        if not math.isfinite(value):
            raise _diverged("the loss", epoch, step, out, st)
        norm_value = float(norm)
        if not math.isfinite(norm_value):
            if cfg.train.precision != "fp16":  # fp16: the GradScaler skips such steps
                raise _diverged("the gradient norm", epoch, step, out, st)
            norm_value = 0.0
        total += value * len(idx)
        norms += norm_value
        if progress is not None:
            progress(epoch, step, steps, value, step * bs / (time.perf_counter() - t0))
    return total / n, n / (time.perf_counter() - t0), norms / steps


def _end_epoch(
    st: TrainState,
    cfg: Config,
    splits: tuple[VoxelSet, VoxelSet],
    epoch: int,
    loss: float,
    speed: float,
) -> dict[str, Any]:
    """The mode's epoch end, evaluation when due, the schedule; the metrics record.

    Epochs that are not evaluated (``train.eval_every``) have no ``val_*`` or
    ``test_*`` fields and leave the best epoch and early stopping as they were."""
    distributed.sync_mode_epoch(st.mode, st.dist)
    extras = st.mode.end_epoch(epoch)
    val_set, test_set = splits
    ev: dict[str, Any] = {}
    t0 = time.perf_counter()
    if is_evaluated(cfg, epoch):
        # rank 0 evaluates, the others wait for its numbers
        ev = st.dist.on_main(lambda: evaluate_splits(st, cfg, val_set, test_set))
        select(st, cfg, ev, epoch)
    eval_seconds = time.perf_counter() - t0
    lr = st.optimizer.param_groups[0]["lr"]
    st.scheduler.step()
    st.epoch = epoch
    record: dict[str, Any] = {"epoch": epoch, "train_loss": loss, **ev}
    record.update(lr=lr, samples_per_s=speed, eval_seconds=eval_seconds, **extras)
    return record


def _open_run(
    st: TrainState,
    cfg: Config,
    out: Path,
    device: torch.device,
    resume: bool,
    force: bool,
    command: str | None,
    fingerprint: str = "",
    allow_data_change: bool = False,
) -> None:
    """Start the run folder (rank 0), or restore ``st`` from its last checkpoint (every rank).

    Rank 0 holds the folder's writer lock until the process ends; a resume
    refuses other data than the run's (``fingerprint``) unless ``allow_data_change``."""
    if st.dist.main:
        runs.lock_run(out, command, create=not resume)
    if not resume:
        if st.dist.main:
            meta = runs.make_meta(command, str(device))
            meta["precision"] = resolve_precision(device, cfg.train.precision)
            meta["world_size"] = st.dist.world
            meta["data_fingerprint"] = fingerprint
            runs.prepare_new_run(out, cfg, meta, force)
        st.dist.barrier()
        return
    runs.check_same_config(runs.read_run_config(out), cfg)
    runs.check_data_fingerprint(out, fingerprint, allow_data_change)
    last = runs.checkpoint_path(out, "last")
    saved = None
    if last.exists():
        state = runs.load_checkpoint(last, device)
        st.load_state_dict(state)
        saved = state.get("metrics")  # the log's records up to its epoch
    if not st.dist.main:
        return
    st.extra["metrics"] = runs.restore_metrics(out / runs.METRICS, st.epoch, saved)
    runs.note_resume(out, st.epoch, command, fingerprint, world=st.dist.world)
    log.info("resuming %s after epoch %d", out, st.epoch)


def _describe(
    cfg: Config, device: torch.device, train_set: VoxelSet, val_set: VoxelSet, test_set: VoxelSet
) -> str:
    precision = resolve_precision(device, cfg.train.precision)
    return (
        f"mode {cfg.train.mode} on {device} ({precision}), {len(train_set)} training / "
        f"{len(val_set)} validation / {len(test_set)} test objects at {cfg.data.res}³"
    )


def _check_data(cfg: Config, train_set: VoxelSet, val_set: VoxelSet, test_set: VoxelSet) -> None:
    for name, vs in (("training", train_set), ("test", test_set), ("validation", val_set)):
        if len(vs) == 0 and name != "validation":
            raise DataError(f"{vs.source}: the {name} set is empty")
        if len(vs) and vs.res != cfg.data.res:
            raise DataError(f"{vs.source}: {name} grids are {vs.res}³, data.res is {cfg.data.res}")
    if len(val_set) == 0 and cfg.train.early_stopping > 0:
        raise ConfigError(
            f"train.early_stopping={cfg.train.early_stopping} needs a validation split, "
            "but data.n_val=0; early stopping never reads the test split"
        )
    if cfg.train.resample_frac > 0 and cfg.train.mode == "continuous":
        raise ConfigError(
            f"train.resample_frac={cfg.train.resample_frac} cannot be used with mode "
            "continuous, which resamples every view already; set it to 0"
        )
    if 2 * cfg.train.shift >= cfg.data.res:
        raise ConfigError(
            f"train.shift={cfg.train.shift} would move objects out of a {cfg.data.res}³ grid; "
            f"use less than {(cfg.data.res + 1) // 2}"
        )


def fit(
    cfg: Config,
    train_set: VoxelSet,
    test_set: VoxelSet,
    out: str | Path,
    *,
    val_set: VoxelSet | None = None,
    resume: bool = False,
    force: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Train on ``train_set``, select on ``val_set``, report ``test_set``; write the run ``out``.

    ``val_set`` None carves ``cfg.data.n_val`` objects out of ``train_set``
    (:func:`orient3d.data.split_validation`, seeded by ``cfg.seed``). The best
    checkpoint and early stopping read the validation split only, at the epochs
    evaluated (every ``train.eval_every``-th and the last); the test split is
    evaluated then and at the end, for reporting. ``resume`` continues
    from ``out``'s last checkpoint (same config, up to the runtime keys in
    ``runs.RUNTIME_KEYS``); ``force`` overwrites a non-empty ``out``.
    ``progress(epoch, step, steps, loss, samples_per_s)`` is called after every
    step. Returns results.json's dict. Raises
    :class:`TrainingDiverged` on a NaN/inf loss or gradient. The run folder's lock
    (:mod:`orient3d.rundir.lock`) is held for the call and released when it ends,
    unless the caller took it before.
    """
    with lock.scope():
        return _fit(
            cfg,
            train_set,
            test_set,
            Path(out),
            val_set,
            resume,
            force,
            command,
            progress,
            allow_data_change,
        )


def _fit(
    cfg: Config,
    train_set: VoxelSet,
    test_set: VoxelSet,
    out: Path,
    val_set: VoxelSet | None,
    resume: bool,
    force: bool,
    command: str | None,
    progress: Progress | None,
    allow_data_change: bool,
) -> dict[str, Any]:
    dist, device = distributed.setup(cfg.train.device)  # under torchrun: joins the group
    check_precision(device, cfg.train.precision)
    set_threads(cfg.train.threads)
    if val_set is None:
        train_set, val_set = split_validation(train_set, cfg.data.n_val, cfg.seed)
    _check_data(cfg, train_set, val_set, test_set)
    distributed.check_batches(len(train_set), cfg.train.batch_size, dist)
    st = build_state(cfg, train_set, device, dist)
    fingerprint = runs.data_fingerprint(train_set, val_set, test_set)
    _open_run(st, cfg, out, device, resume, force, command, fingerprint, allow_data_change)
    log.info("%s: %s", out, _describe(cfg, device, train_set, val_set, test_set))
    voxels = train_set.voxels.to(device)  # (N, D, D, D) uint8, indexed per batch
    writer = runs.Scalars(out, st.epoch, enabled=dist.main)  # rank 0 alone writes
    progress = progress if dist.main else None
    try:
        while st.epoch < cfg.train.epochs and not st.stopped:
            epoch, t0 = st.epoch + 1, time.perf_counter()
            loss, speed, norm = _train_epoch(st, cfg, voxels, epoch, out, progress)
            record = _end_epoch(st, cfg, (val_set, test_set), epoch, loss, speed)
            record["grad_norm"] = norm  # mean before clipping
            record["seconds"] = time.perf_counter() - t0
            # the training steps and the mode's epoch end; the rest is eval_seconds
            record["train_seconds"] = record["seconds"] - record["eval_seconds"]
            st.extra.setdefault("metrics", []).append(record)  # (in the checkpoint)
            if dist.main:
                runs.append_jsonl(out / runs.METRICS, record)
            save_state(st, cfg, out, epoch)
            if dist.main:
                _log_epoch(cfg, record, writer)
    finally:
        writer.close()
    if cfg.model.pose_head:  # after training, on the selected checkpoint; the VAE is unchanged
        st.dist.on_main(lambda: pose_head.fit_run(st.model, st.mode, cfg, train_set, val_set, out))
    return finish(st, cfg, test_set, out, device, "val" if len(val_set) else "last")


def _log_epoch(cfg: Config, record: dict[str, Any], writer: runs.Scalars) -> None:
    val = "  val neg ELBO %(val_neg_elbo).2f iou %(val_iou).3f" if "val_iou" in record else ""
    test = (
        "  test neg ELBO %(test_neg_elbo).2f mse %(test_mse).5f iou %(test_iou).3f"
        if "test_iou" in record
        else ""
    )
    log.info(
        "epoch %(epoch)d/%(epochs)d  train %(train_loss).2f" + val + test + "  (%(seconds).1f s, "
        "%(samples_per_s).0f samples/s)",
        {**record, "epochs": cfg.train.epochs},
    )
    writer.add(record)


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    command: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    allow_data_change: bool = False,
) -> dict[str, Any]:
    """Load ``cfg.data`` and run (or resume) :func:`fit`; returns results.json's dict.

    Under ``torchrun`` every rank trains a replica (``orient3d.training.distributed``)."""
    dist, _ = distributed.setup(cfg.train.device)
    with distributed.main_first(dist):  # rank 0 fills the data cache, then the others read it
        train_set, test_set = load_data(cfg)
    return fit(
        cfg,
        train_set,
        test_set,
        out,
        resume=resume,
        force=force,
        command=command,
        progress=progress,
        allow_data_change=allow_data_change,
    )
