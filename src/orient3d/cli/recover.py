"""Recover the orientation of rotated test objects with a trained run's model.

  orient3d recover RUN [--n N] [--data PATH] [--choice hard|soft] [--proposals K [--head-mass M]]
  orient3d recover RUN --rotations so3 [--method METHOD ...]

Each test object (the run's test split, or every object of --data PATH: a whole
file or folder, no split; --n caps how many) is turned by a random element of O
(seeded by --seed, default the run's seed); the model scores all 24 elements
(negative ELBO of r⁻¹·x, encoder mean) and picks one. Reports the accuracy counted
modulo the object's symmetry, the errors by angle (90°, 120°, 180°; smallest over
symmetric equivalents), the mean posterior mass on the truth and the throughput;
prints how many objects it used and from where, a table, and writes
RUN/recover.json, whose "source" names the checkpoint used (epoch, sha256; a run
without results.json warns).

--proposals K (a run trained with --model.pose_head=true): the model's orientation
head proposes its K most likely elements per object and only those are scored
(K = 1: the head's argmax alone, no scoring); 0 or 24 scores all 24 (the default).
--head-views V averages the head over V exact views of each object (V encoder passes).
--head-mass M (with --proposals K in 2..23) keeps, per object, only the head's most
likely elements whose probabilities sum to M (at most K); one left is taken without
scoring. Choose M on validation objects (BENCHMARKS.md, "Pose head").

With --rotations so3 each of N test objects (default: up to 50) is turned by a
uniform random rotation (trilinear resampling, thresholded at 0.5) and each
--method (gradient, cube-start, grid-refine, head-refine; repeatable, or "all")
estimates it (orient3d.evaluation.continuous.recover_continuous): success rate
(error < --threshold degrees modulo symmetry), median error and forward passes per
object (and per class) go under "so3" in RUN/recover.json, other keys kept.
"all" is gradient, cube-start and grid-refine. --method head-refine first fits an
SO(3) proposal head (orient3d.training.so3_head) for --so3-head-epochs epochs on the
run's training split (its validation objects included; never a test object) turned
into the model's frame (for single and augmented runs the dataset's stored frame),
then scores only its --top-k cells in place of the coarse grid, averaging it over
--head-views exact views; the fit's figures go beside the method's.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orient3d.errors import ConfigError, RunError
from orient3d.rundir import runs
from orient3d.search.options import HEAD_METHOD, METHOD_NAMES, PoseOptions, check_search_options

if TYPE_CHECKING:  # main imports the heavy code
    from orient3d.config import Config
    from orient3d.data import VoxelSet
    from orient3d.model import VAE


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by orient3d train")
    parser.add_argument(
        "--n", type=int, help="objects to recover (default: every object once; so3: up to 50)"
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="recover every object of this file or folder (default: the run's test split)",
    )
    parser.add_argument("--choice", choices=("hard", "soft"), default="hard")
    parser.add_argument("--temperature", type=float, default=1.0, help="soft posterior T")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--seed", type=int, help="seed of the rotations (default: the run's)")
    parser.add_argument(
        "--proposals",
        type=int,
        default=0,
        metavar="K",
        help="score only the orientation head's K best elements (1: its argmax alone; "
        "0 or 24: all, the default); needs a run trained with --model.pose_head=true",
    )
    parser.add_argument(
        "--head-views",
        type=int,
        metavar="V",
        help="with --proposals (default 1), or so3 head-refine (default 24): average the "
        "head over V exact views of each object (1..24; V encoder passes; BENCHMARKS.md)",
    )
    parser.add_argument(
        "--head-mass",
        type=float,
        default=1.0,
        metavar="M",
        help="with --proposals K in 2..23: score only the head's fewest best elements whose "
        "probabilities sum to M (one left: no scoring); 1 (default): all K",
    )
    parser.add_argument("--device", help="device (default: the run's train.device)")
    parser.add_argument("--rotations", choices=("cube", "so3"), default="cube")
    methods = (*METHOD_NAMES, HEAD_METHOD, "all")
    parser.add_argument("--method", action="append", choices=methods, help="so3 (repeatable)")
    parser.add_argument("--threshold", type=float, default=10.0, help="so3 success, degrees")
    parser.add_argument("--steps", type=int, default=PoseOptions.steps, help="so3 gradient")
    parser.add_argument("--top-k", type=int, default=PoseOptions.top_k, help="so3 grid")
    parser.add_argument("--levels", type=int, default=PoseOptions.levels, help="so3 grid")
    parser.add_argument(
        "--cosets",
        type=int,
        default=PoseOptions.cosets,
        help="so3 grid: search again from the K best cube-group turns of the pose found (0: off)",
    )
    parser.add_argument(
        "--so3-head-epochs",
        type=int,
        default=60,
        metavar="E",
        help="so3 head-refine: epochs of its proposal head's fit (each a fresh rotation of "
        "every training object)",
    )


def _so3(
    args: argparse.Namespace, run_cfg: Config, model: VAE, test: VoxelSet, seed: int
) -> dict[str, Any]:
    """Continuous recovery (``pose_eval.recover_continuous``) merged into RUN/recover.json."""
    import torch

    from orient3d.evaluation import continuous as pose_eval

    picked = args.method or ["all"]
    methods = list(dict.fromkeys([*(METHOD_NAMES if "all" in picked else ()), *picked]))
    methods = [m for m in methods if m != "all"]
    n = min(len(test), 50) if args.n is None else args.n
    head: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    if HEAD_METHOD in methods:
        fit = _fit_so3_head(args, run_cfg, model)
        head = {"head": fit.head, "head_views": args.head_views}
        fitted = {
            "epochs": args.so3_head_epochs,
            "seconds": fit.seconds,
            "train_top_k": fit.train_top_k,
            "head_views": args.head_views,
        }
    result = pose_eval.recover_continuous(
        model,
        test.voxels,
        test.stabilizers,
        n,
        methods,
        torch.Generator().manual_seed(seed),
        threshold_deg=args.threshold,
        steps=args.steps,
        top_k=args.top_k,
        levels=args.levels,
        cosets=args.cosets,
        labels=test.labels,
        class_names=test.class_names,
        **head,
    )["so3"]
    if fitted:
        result[HEAD_METHOD]["head"] = fitted
    path = Path(args.run) / "recover.json"
    merged: dict[str, Any] = runs.read_json(path) if path.exists() else {}
    merged["so3"] = {**merged.get("so3", {}), **result}
    merged["source"] = runs.checkpoint_source(args.run)
    runs.write_json(path, merged)
    return result


def _fit_so3_head(args: argparse.Namespace, cfg: Config, model: VAE) -> Any:
    """The SO(3) proposal head fitted on the training split of the run (config ``cfg``,
    as the run recorded it: not --data) in the model's frame."""
    import torch

    from orient3d.data import load_data
    from orient3d.training.modes import get_mode
    from orient3d.training.pose_head import model_frame
    from orient3d.training.so3_head import fit_so3_head

    train_set = load_data(cfg)[0]
    mode = get_mode(cfg.train.mode)(cfg, train_set, torch.Generator().manual_seed(cfg.seed))
    grids = model_frame(model, mode, train_set.voxels)
    print(f"fitting the SO(3) proposal head on {len(grids)} training objects ...")
    return fit_so3_head(model, grids, epochs=args.so3_head_epochs, seed=cfg.seed)


def so3_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``{method: summary}`` from :func:`pose_eval.recover_continuous`."""
    head = f"{'method':<12} {'success':>8} {'found<=truth':>12} {'median err':>11}"
    lines = [f"{head} {'fwd/obj':>8} {'seconds':>8}"]
    for m, r in result.items():
        lines.append(
            f"{m:<12} {r['success_rate']:>8.2f} {r['scored_at_most_truth']:>12.2f} "
            f"{r['median_error_deg']:>10.1f}° {r['forward_passes']:>8d} {r['seconds']:>8.1f}"
        )
    return "\n".join(lines)


def _load(args: argparse.Namespace, cfg0: Config) -> tuple[Config, VAE, VoxelSet, str]:
    """The run's config and model, the objects to recover and where they come from."""
    from orient3d.data import load_data
    from orient3d.data.sources import load_all
    from orient3d.devices import resolve_device
    from orient3d.evaluation.protocols import load_run

    device = resolve_device(args.device or cfg0.train.device)
    cfg, model = load_run(args.run, str(device))
    if not args.data:
        return cfg, model, load_data(cfg)[1], f"the test split of {cfg.data.source}"
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=args.data))
    classes = list(cfg.data.classes) or None
    test_set = load_all(args.data, cfg.data.res, classes=classes, max_side=cfg.data.max_res)
    return cfg, model, test_set, f"every object of {args.data}"


def _check_proposals(args: argparse.Namespace, cfg: Config) -> None:
    """--proposals in 0..24, and K in 1..23 only for a run with an orientation head."""
    k = args.proposals
    if not 0 <= k <= 24:
        raise ConfigError(f"--proposals: {k} is invalid, must be in 0..24 (0: all 24)")
    if args.rotations == "so3" and k:
        raise ConfigError("--proposals applies to --rotations cube only")
    so3_head = args.rotations == "so3" and HEAD_METHOD in (args.method or [])
    if args.head_views not in (None, 1) and not 0 < k < 24 and not so3_head:
        raise ConfigError(
            "--head-views needs --proposals K with K in 1..23 (the head's), or "
            "--rotations so3 --method head-refine"
        )
    if args.head_views is None:
        args.head_views = 24 if so3_head else 1
    if not 1 <= args.head_views <= 24:
        raise ConfigError(f"--head-views: {args.head_views} is invalid, must be in 1..24")
    if not 0 < args.head_mass <= 1:
        raise ConfigError(f"--head-mass: {args.head_mass} is invalid, must be in (0, 1]")
    if args.head_mass < 1 and not 1 < k < 24:
        raise ConfigError("--head-mass needs --proposals K with K in 2..23 (the head's)")
    if 0 < k < 24 and not cfg.model.pose_head:
        raise RunError(
            f"{args.run}: --proposals {k} needs a model with an orientation head, and this "
            "run has none (model.pose_head = false): train it with --model.pose_head=true, "
            "or recover with all 24 elements (--proposals 0)"
        )
    if 0 < k < 24 and not (Path(args.run) / "pose_head.json").exists():
        raise RunError(
            f"{args.run}: its orientation head was never fitted (no pose_head.json: the run "
            "stopped before the end of training); finish it with orient3d train --resume"
        )


def main(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n: {args.n} is invalid, must be >= 1")
    check_search_options(  # the continuous search's options, before any model loads
        args.steps, args.top_k, args.levels, args.cosets, lambda f: "--" + f.replace("_", "-")
    )
    if args.so3_head_epochs < 1:
        raise ConfigError(f"--so3-head-epochs: {args.so3_head_epochs} is invalid, must be >= 1")
    cfg0 = runs.read_run_config(args.run)  # (a wrong RUN is reported before torch loads)
    _check_proposals(args, cfg0)
    import torch

    from orient3d.evaluation.recovery import recover, recovery_table

    cfg, model, test_set, where = _load(args, cfg0)
    seed = cfg.seed if args.seed is None else args.seed
    used = len(test_set) if args.n is None else args.n
    if args.rotations == "so3" and args.n is None:
        used = min(len(test_set), 50)
    print(f"recovering {used} of {len(test_set)} objects: {where}")
    if args.rotations == "so3":
        print(so3_table(_so3(args, cfg0, model, test_set, seed)))
        return 0
    result = recover(
        model,
        test_set,
        args.n,
        generator=torch.Generator().manual_seed(seed),
        choice=args.choice,
        temperature=args.temperature,
        precision=args.precision,
        proposals=args.proposals,
        views=args.head_views,
        head_mass=args.head_mass,
    )
    result["protocol"].update(
        seed=seed,
        data=cfg.data.source,
        objects_from=where,
        objects_available=len(test_set),
        checkpoint_run=str(args.run),
    )
    path = Path(args.run) / "recover.json"
    old = runs.read_json(path) if path.exists() else {}
    if "so3" in old:  # keep the continuous results of --rotations so3
        result["so3"] = old["so3"]
    result["source"] = runs.checkpoint_source(args.run)  # (warns if the run is unfinished)
    runs.write_json(path, result)
    print(recovery_table(result))
    return 0
