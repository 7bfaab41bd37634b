"""Train a VAE on voxel grids and write a run folder.

  orient3d train CONFIG --out RUN [--key=value ...]   e.g. --train.epochs=3
  orient3d train --out RUN                             the built-in defaults
  orient3d train --resume RUN                          continue a killed run

CONFIG is a TOML file (configs/single.toml, configs/augmented.toml); dotted
overrides apply on top of it. RUN receives config.toml, meta.json,
metrics.jsonl (one line per epoch), results.json, checkpoints/ and tb/. A
non-empty RUN is refused unless --force. One process at a time
writes RUN (a lock; a second is refused naming the first). A resume refuses data
that differ from the run's (a fingerprint in meta.json) unless
--allow-data-change, and rewrites metrics.jsonl to the epochs of its checkpoint.
A resumed run reaches exactly the
metrics of an uninterrupted one (on the same machine and threads); overrides on
resume may only change train.threads, train.progress, train.eval_batch_size and
train.device. Progress bars show on a terminal unless --train.progress=false.

Several processes (DistributedDataParallel; train.batch_size is the global batch,
split over the processes; rank 0 writes RUN):
  torchrun --standalone --nproc-per-node 4 -m orient3d train CONFIG --out RUN
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from orient3d.cli.checks import check_config_path
from orient3d.config import Config, apply_overrides, load_config
from orient3d.errors import ConfigError
from orient3d.rundir import runs

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--out", metavar="RUN", help="run folder to create")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    parser.add_argument(
        "--force", action="store_true", help="overwrite the run files of a non-empty --out"
    )
    parser.add_argument(
        "--allow-data-change",
        action="store_true",
        help="resume even though the training/test data differ from the run's",
    )
    # Unknown ``--key=value`` arguments are collected as overrides by orient3d.cli.main.
    parser.set_defaults(overrides=[], _accepts_overrides=True)


class TqdmProgress:
    """A progress bar per epoch with the loss and samples/s (the CLI's only)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, epoch: int, step: int, steps: int, loss: float, speed: float) -> None:
        from tqdm import tqdm

        if step == 1:
            self.close()
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", leave=False)
        self.bar.set_postfix(loss=f"{loss:.1f}", samples_s=f"{speed:.0f}", refresh=False)
        self.bar.update(1)
        if step == steps:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed (rebuilt from ``args``: ``main`` may be called with any argv)."""
    words = ["orient3d", "train"]
    words += [args.config] if args.config else []
    words += ["--out", args.out] if args.out else []
    words += ["--resume", args.resume] if args.resume else []
    words += ["--force"] if args.force else []
    words += ["--allow-data-change"] if getattr(args, "allow_data_change", False) else []
    return " ".join(map(shlex.quote, [*words, *args.overrides]))


def _config(args: argparse.Namespace) -> tuple[Config, Path]:
    """The run's config and folder, checked before torch loads (no tensors needed)."""
    check_config_path(args.config, args.overrides)
    if args.resume:
        if args.config or args.out not in (None, args.resume):
            raise ConfigError("--resume RUN takes no CONFIG and no other --out")
        out = Path(args.resume)
        return apply_overrides(runs.read_run_config(out), args.overrides), out
    if not args.out:
        raise ConfigError("--out RUN is required (or --resume RUN)")
    return load_config(args.config, args.overrides), Path(args.out)


def main(args: argparse.Namespace) -> int:
    cfg, out = _config(args)
    from orient3d.training import distributed
    from orient3d.training.loop import train

    main_rank = distributed.from_env().main
    if not main_rank:  # under torchrun, rank 0 alone reports
        logging.getLogger("orient3d").setLevel(logging.WARNING)
    command = _command_line(args)
    if main_rank:  # one writer per run folder, before the data load
        if not args.resume:
            runs.check_new_run(out, args.force)
        runs.lock_run(out, command, create=not args.resume)
    bar = TqdmProgress() if cfg.train.progress and sys.stderr.isatty() else None
    clean = False
    try:
        result = train(
            cfg,
            out,
            resume=bool(args.resume),
            command=command,
            force=args.force,
            progress=bar,
            allow_data_change=getattr(args, "allow_data_change", False),
        )
        clean = True
    except KeyboardInterrupt:
        log.warning("stopped; continue with: orient3d train --resume %s", shlex.quote(str(out)))
        raise
    finally:
        if bar is not None:
            bar.close()
        distributed.shutdown(clean)
    if not distributed.from_env().main:
        return 0
    keys = ("test_mse", "test_iou", "test_bce", "test_neg_elbo")
    print(f"{out}: {result['protocol']}, best epoch {result['best_epoch']}/{result['epochs_run']}")
    print("  ".join(f"{k} {result[k]:.5g}" for k in keys))
    return 0
