"""Evaluate a trained run on its test split under one or more protocols.

  orient3d evaluate RUN [--protocol as_stored|rotated|rotated+search|so3|so3+search ...]

Protocols: as_stored (objects as stored), rotated (each test object turned by
a fixed seeded element of O), rotated+search (as rotated, then canonicalized
by the run's search; search runs only), so3 and so3+search (a fixed seeded
uniform SO(3) rotation, resampled and thresholded; then the continuous search of
continuous runs). By default: as_stored and rotated, plus rotated+search for
search runs and so3, so3+search for continuous runs. Prints a table and writes
RUN/evaluate.json (protocol -> metrics with per-object values, and "source":
the checkpoint used, its epoch and sha256); results.json stays the training's
own. A run that has not finished (no results.json) is evaluated with a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orient3d.evaluation.names import DEFAULT_PROTOCOL, PROTOCOLS
from orient3d.rundir import runs

_COLUMNS = ("test_mse", "test_iou", "test_bce", "test_tpr", "test_tnr", "test_neg_elbo")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by orient3d train")
    parser.add_argument(
        "--protocol", action="append", choices=PROTOCOLS, help="protocol (repeatable)"
    )
    parser.add_argument("--device", help="device (default: the run's train.device)")


def table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per protocol."""
    head = f"{'protocol':<16}" + "".join(f"{c[5:]:>12}" for c in _COLUMNS)
    rows = [f"{p:<16}" + "".join(f"{r[c]:>12.5g}" for c in _COLUMNS) for p, r in results.items()]
    return "\n".join([head, *rows])


def main(args: argparse.Namespace) -> int:
    cfg0 = runs.read_run_config(args.run)  # (a wrong RUN is reported before torch loads)
    import torch

    from orient3d.data import load_data
    from orient3d.devices import resolve_device
    from orient3d.evaluation.protocols import evaluate, load_run
    from orient3d.training.modes import get_mode

    device = resolve_device(args.device or cfg0.train.device)
    cfg, model = load_run(args.run, str(device))
    train_set, test_set = load_data(cfg)
    mode = get_mode(cfg.train.mode)(cfg, train_set, torch.Generator().manual_seed(cfg.seed))
    last = runs.checkpoint_path(args.run, "last")
    if last.exists():
        mode.load_state_dict(runs.load_checkpoint(last, device).get("mode", {}))
    own = DEFAULT_PROTOCOL[cfg.train.mode]  # a search mode's +search protocol, so3 views
    wanted = {"as_stored", "rotated", own} | ({"so3"} if own.startswith("so3") else set())
    protocols = args.protocol or [p for p in PROTOCOLS if p in wanted]
    results = {
        p: evaluate(model, test_set, cfg, protocol=p, canonicalize=mode.canonicalize)
        for p in protocols
    }
    source = runs.checkpoint_source(args.run)  # (warns when the run has not finished)
    runs.write_json(Path(args.run) / "evaluate.json", {**results, "source": source})
    print(table(results))
    return 0
