"""The orientation head's proposals: recovery speed and accuracy against exhaustive search,
and what the head costs in training. Writes "## Pose head" in BENCHMARKS.md.

    python benchmarks/bench_pose_head.py [--epochs 24] [--views 2] [--threads 1 2]
        [--proposals 4 2 1] [--head-views 2 4] [--masses 0.9 0.95 0.99] [--mass-k 4]
        [--precisions fp32 bf16] [--no-write]
    python benchmarks/bench_pose_head.py --run RUN [...]

One single-mode model with the head (``model.pose_head=true``) trains through the
training loop (``orient3d.training.loop.train``) on the ModelNet10 test grids
``../shared/data/modelnet10_vox32/voxnet32_test.npz`` at 32³, split by the seed into
training, validation and test objects (RESULTS.md, "Recipe"), with
``configs/single.toml``'s recipe (width 32, latent 32, batch 32, Adam 1e-3 cosine) and
``--epochs``; the head is fitted after the last epoch on the selected checkpoint
(:mod:`orient3d.training.pose_head`). In single mode the model's frame is the stored
frame: the head learns the ground-truth pose.

Recovery: the held-out test objects, each shown in ``--views`` random poses of O (the
same seeded views for every variant), recovered by
:func:`orient3d.evaluation.recovery.recover` (what ``orient3d recover`` runs) with all 24
elements scored, with the head's top K proposals, and with the head's argmax averaged
over V views (``--head-views``), with the head's top ``--mass-k`` cut to the fewest
whose probability sums to M (``--masses``: ``recover(..., head_mass=M)``), each in every
``--precisions`` (fp32; bf16 autocast for
the head's and the VAE's passes, fast only on CPUs with native bf16: the machine line
says), at each thread count; variants interleaved, a different order per thread count.
Exhaustive fp32 search is the reference every row is compared with. The mass is
chosen on the validation objects (shown in ``--views`` seeded poses each): the one that
scores the fewest rows while staying within the goal's loss of exhaustive search there;
only that mass, and the variants without one, can meet the goal on the test views.
Accuracy modulo symmetry with a 95% Wilson interval, the difference from exhaustive
search in points and pair by pair (views exhaustive search got right and the variant
got wrong, and back), objects/s as recover times it (the head's passes included).

Training cost: the head adds nothing to a training step (the loop's step is the same
code with or without it); its fit after training is timed against the epochs.

``--run RUN`` measures a finished run instead of training one (a model that
reconstructs, e.g. a run of ``configs/reference/single_vs_all_mn32.toml``): a copy of
it gets a head fitted on its selected checkpoint
(:func:`orient3d.training.pose_head.fit_run`, which accepts a checkpoint saved without
a head), on the run's own data, split and seed; the run itself is not touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _machine import machine_line
from _sections import EACH_PART, VOXNET, show_machine_part
from orient3d.config import Config, dumps, load_config
from orient3d.data import VoxelSet, load_data, split_validation
from orient3d.devices import tune_allocator
from orient3d.evaluation.protocols import load_run
from orient3d.evaluation.recovery import recover
from orient3d.metrics.stats import wilson_ci
from orient3d.model import VAE
from orient3d.rundir import runs
from orient3d.training.loop import train
from orient3d.training.modes import get_mode
from orient3d.training.pose_head import REPORT, fit_run

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Pose head"
INTRO = (
    "Recovery with the orientation head's proposals against exhaustive search "
    "(`benchmarks/bench_pose_head.py`). " + EACH_PART
)
GOAL_SPEED, GOAL_LOSS = 100.0, 1.0  # objects/s (judged at each thread count); points lost
Variant = tuple[int, int, str, float]  # (proposals K, head views V, precision, head mass)
EXHAUSTIVE: Variant = (24, 1, "fp32", 1.0)


def _label(v: Variant) -> str:
    k, views, precision, mass = v
    name = "exhaustive (24)" if k == 24 else f"top {k}" + (f", {views} views" if views > 1 else "")
    name += f", mass {mass:g}" if mass < 1 else ""
    return name + ("" if precision == "fp32" else f", {precision}")


def variants(args: argparse.Namespace) -> list[Variant]:
    """Exhaustive fp32 search first (the reference), then every variant per precision."""
    out = [EXHAUSTIVE]
    for p in args.precisions:
        out += [] if p == "fp32" else [(24, 1, p, 1.0)]
        out += [(k, 1, p, 1.0) for k in args.proposals]
        out += [(1, v, p, 1.0) for v in args.head_views]
        out += [(args.mass_k, 1, p, m) for m in args.masses]
    return out


def choose_mass(
    model: VAE, val: VoxelSet, args: argparse.Namespace
) -> tuple[float | None, list[dict[str, Any]]]:
    """The head mass chosen on the validation objects (module docstring), and per mass
    (exhaustive search first, as mass None) its accuracy and VAE rows per object there."""
    if not args.masses:
        return None, []
    torch.set_num_threads(args.threads[0])
    rows = []
    for mass in (None, *args.masses):
        gen = torch.Generator().manual_seed(args.seed)
        k, m = (24, 1.0) if mass is None else (args.mass_k, mass)
        res = recover(model, val, args.views * len(val), generator=gen, proposals=k, head_mass=m)
        rows.append({"mass": mass, "accuracy": res["accuracy"], "rows": res["vae_rows_per_object"]})
    base = rows[0]["accuracy"]
    ok = [r for r in rows[1:] if 100 * (r["accuracy"] - base) >= -GOAL_LOSS]
    return (min(ok, key=lambda r: r["rows"])["mass"] if ok else None), rows


def train_model(args: argparse.Namespace, tmp: Path) -> tuple[Config, Path, float]:
    """Train the single-mode model with the head; its config, run folder and seconds."""
    cfg = load_config(
        ROOT / "configs" / "single.toml",
        [
            f"seed={args.seed}",
            f"data.source={args.data}",
            f"data.res={args.res}",
            f"data.n_train={args.n_train}",
            f"data.n_test={args.n_test}",
            f"data.cache_dir={tmp / 'cache'}",
            f"model.width={args.width}",
            "model.pose_head=true",
            f"train.epochs={args.epochs}",
            f"train.threads={args.train_threads}",
            "train.device=cpu",
            "train.progress=false",
        ],
    )
    t0 = time.perf_counter()
    train(cfg, tmp / "run")
    return cfg, tmp / "run", time.perf_counter() - t0


def head_config(src: Path) -> Config:
    """The config of the finished run ``src``, with the head (``model.pose_head=true``)."""
    cfg = runs.read_run_config(src)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pose_head=True))


def adopt_run(src: Path, cfg: Config, fit_set: VoxelSet, val_set: VoxelSet, tmp: Path) -> Path:
    """A copy of the finished run ``src`` with a head fitted (module docstring), on its
    own split ``fit_set`` / ``val_set``; ``cfg`` is :func:`head_config`'s."""
    run = tmp / "run"
    shutil.copytree(src / runs.CHECKPOINTS, run / runs.CHECKPOINTS)
    for name in ("meta.json", "results.json", "metrics.jsonl"):
        shutil.copy(src / name, run / name)
    (run / runs.CONFIG).write_text(dumps(cfg))
    mode = get_mode(cfg.train.mode)(cfg, fit_set, torch.Generator().manual_seed(cfg.seed))
    fit_run(VAE(cfg.model, cfg.data.res), mode, cfg, fit_set, val_set, run)
    return run


def recovery(
    args: argparse.Namespace, model: VAE, test: VoxelSet
) -> tuple[dict[Variant, dict[str, Any]], dict[tuple[Variant, int], float]]:
    """Per variant: the first result; per (variant, threads): objects/s."""
    n = args.views * len(test)
    order = variants(args)
    first: dict[Variant, dict[str, Any]] = {}
    speed: dict[tuple[Variant, int], float] = {}
    for i, threads in enumerate(args.threads):
        torch.set_num_threads(threads)
        shift = i % len(order)
        for v in order[shift:] + order[:shift]:
            gen = torch.Generator().manual_seed(args.seed)
            res = recover(
                model,
                test,
                n,
                generator=gen,
                proposals=v[0],
                views=v[1],
                precision=v[2],
                head_mass=v[3],
            )
            speed[v, threads] = res["objects_per_s"]
            first.setdefault(v, res)
            if res["wrong_views"] != first[v]["wrong_views"]:
                print(f"note: {_label(v)} at {threads} threads judged other views wrong")
            print(
                f"{_label(v)}, {threads} thread(s): accuracy {res['accuracy']:.4f}, "
                f"{res['objects_per_s']:.1f} objects/s",
                flush=True,
            )
    return {v: first[v] for v in order}, speed


def paired_delta(lost: int, gained: int, n: int) -> tuple[float, float, float]:
    """Accuracy minus exhaustive search's on the same ``n`` views, in points, with a 95%
    normal interval of the paired difference (per view -1, 0 or +1)."""
    mean = (gained - lost) / n
    var = (gained + lost) / n - mean**2
    half = 1.96 * math.sqrt(max(var, 0.0) / n)
    return 100 * mean, 100 * (mean - half), 100 * (mean + half)


def _recovery_rows(
    first: dict[Variant, dict[str, Any]],
    speed: dict[tuple[Variant, int], float],
    threads: list[int],
) -> list[str]:
    base = first[EXHAUSTIVE]
    wrong24 = set(base["wrong_views"])
    rows = []
    for v, res in first.items():
        _, lo, hi = wilson_ci(res["n_correct"], res["n"])
        wrong = set(res["wrong_views"])
        cells = [
            _label(v),
            f"{res['vae_rows_per_object']:.2f}".rstrip("0").rstrip("."),
            str(0 if v[0] == 24 else v[1]),
            f"{res['accuracy']:.3f}",
            f"{lo:.3f}–{hi:.3f}",
            "{:+.1f} [{:+.1f}, {:+.1f}]".format(
                *paired_delta(len(wrong - wrong24), len(wrong24 - wrong), res["n"])
            ),
            f"{len(wrong - wrong24)} / {len(wrong24 - wrong)}",
            *(f"{speed[v, t]:.1f}" for t in threads),
            f"{speed[v, threads[0]] / speed[EXHAUSTIVE, threads[0]]:.1f}×",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def verdict(
    first: dict[Variant, dict[str, Any]],
    speed: dict[tuple[Variant, int], float],
    t: int,
    chosen: float | None = None,
) -> str:
    """Which variants meet both goals at ``t`` threads, with the figures; of the head
    masses below 1 only ``chosen`` (on validation) may."""
    base = first[EXHAUSTIVE]["accuracy"]
    parts, met = [], []
    for v in first:
        if v == EXHAUSTIVE:
            continue
        delta = 100 * (first[v]["accuracy"] - base)
        eligible = v[3] >= 1 or v[3] == chosen
        if speed[v, t] >= GOAL_SPEED and delta >= -GOAL_LOSS and eligible:
            met.append(_label(v))
        note = "" if eligible else " (not the mass chosen on validation)"
        parts.append(f"{_label(v)}: {speed[v, t]:.1f} objects/s, {delta:+.1f} points{note}")
    answer = f"**met** by {', '.join(met)}" if met else "**not met** by any variant measured"
    n, wrong24 = first[EXHAUSTIVE]["n"], set(first[EXHAUSTIVE]["wrong_views"])
    halves = []
    for v, res in first.items():
        wrong = set(res["wrong_views"])
        _, lo, hi = paired_delta(len(wrong - wrong24), len(wrong24 - wrong), n)
        halves += [(hi - lo) / 2] if v[0] != 24 else []  # exhaustive search in any precision
    return (
        f"Goals (≥ {GOAL_SPEED:.0f} objects/s at {t} thread(s), ≤ {GOAL_LOSS:.0f} point of "
        f"accuracy lost against exhaustive search on the same views, point estimate): {answer} "
        f"(exhaustive: {speed[EXHAUSTIVE, t]:.1f} objects/s, accuracy {base:.3f}; "
        + "; ".join(parts)
        + f"). The 95% intervals of the paired differences are ±{min(halves):.1f} to "
        f"±{max(halves):.1f} points at {n} views: these views cannot tell a 1-point loss "
        "from none."
    )


def _model_line(args: argparse.Namespace, facts: dict[str, Any]) -> str:
    res, head, n = facts["results"], facts["head"], facts["first"][EXHAUSTIVE]["n"]
    top, views = head["val_top_k"], head["val_views"]
    cfg: Config = facts["config"]
    split = (
        f"({facts['n_train']} training / {facts['n_val']} validation / {facts['n_test']} "
        "test objects)"
    )
    if args.run is not None:
        model = (
            f"Model: the finished run `{args.run}` (trained by `{facts['command']}`; "
            f"{cfg.train.mode} mode, `{Path(cfg.data.source).name}` at {cfg.data.res}³ "
            f"{split}, width "
            f"{cfg.model.width}, latent {cfg.model.latent}, {len(facts['metrics'])} epochs of "
            f"batch {cfg.train.batch_size}, {facts['precision']}), a copy of it with the head "
            f"(`model.pose_head=true`) fitted here for {head['epochs']} epochs on its selected "
            "checkpoint"
        )
    else:
        model = (
            f"Model: single mode with the head (`model.pose_head=true`, fitted for "
            f"{head['epochs']} epochs after training), `configs/single.toml`'s recipe at "
            f"{args.res}³ on `voxnet32_test.npz` {split}, width {args.width}, {args.epochs} "
            f"epochs ({facts['precision']}) on {args.train_threads} thread(s)"
        )
    return (
        f"{model}; best epoch "
        f"{res.get('best_epoch')}, test IoU {res['test_iou']:.3f}. The head on all 24 poses of "
        f"the validation objects: truth in its top 1 / 2 / 4: {top['1']:.3f} / {top['2']:.3f} "
        f"/ {top['4']:.3f}; argmax over 1 / 2 / 4 views: {views['1']:.3f} / {views['2']:.3f} / "
        f"{views['4']:.3f}. Recovery: the {facts['n_test']} test objects × {args.views} seeded "
        f"random views of O = {n} views, the same for every row; `recover(..., proposals=K, "
        "views=V, precision=P, head_mass=M)` (what `orient3d recover --proposals K "
        "--head-views V --precision P --head-mass M` runs), fp32 unless the row says bf16, "
        "encoder mean, hard choice; every row is compared with exhaustive fp32 search. VAE "
        "rows / object: the elements the VAE scored, on average (a mass below 1 cuts the top "
        "K per object, and an object left with one is not scored). Lost / gained: views "
        "exhaustive search got right and this row wrong / the reverse."
    )


def _mass_lines(args: argparse.Namespace, facts: dict[str, Any]) -> list[str]:
    """The choice of the head mass on the validation objects: a table and the choice."""
    if not args.masses:
        return []
    val = facts["mass_rows"]
    base = val[0]["accuracy"]
    lines = [
        f"The head mass, chosen on the {facts['n_val']} validation objects × {args.views} "
        f"views (top {args.mass_k}, fp32, {args.threads[0]} thread(s)): the fewest VAE rows "
        f"within {GOAL_LOSS:g} point of exhaustive search there.",
        "",
        "| mass | validation accuracy | Δ vs exhaustive, points | VAE rows / object |",
        "| --- | --- | --- | --- |",
    ]
    for r in val:
        name = "exhaustive (24)" if r["mass"] is None else f"{r['mass']:g}"
        delta = 100 * (r["accuracy"] - base)
        lines.append(f"| {name} | {r['accuracy']:.3f} | {delta:+.1f} | {r['rows']:.2f} |")
    chosen = facts["chosen"]
    lines += ["", f"Chosen: mass {chosen:g}." if chosen is not None else "Chosen: none.", ""]
    return lines


def section(args: argparse.Namespace, machine: str, facts: dict[str, Any]) -> str:
    first, speed = facts["first"], facts["speed"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python benchmarks/bench_pose_head.py " + " ".join(
        w for w in sys.argv[1:] if w != "--no-write"
    )
    thread_cols = " | ".join(f"objects/s, {t} thread{'s' if t > 1 else ''}" for t in args.threads)
    epochs_s, fit_s = facts["epochs_s"], facts["head"]["seconds"]
    return "\n".join(
        [
            HEADING,
            "",
            f"`{cmd.strip()}`, {when}, {machine} at the start (a shared machine), torch "
            f"{torch.__version__}; {facts['seconds']:.0f} s in all.",
            "",
            _model_line(args, facts),
            "",
            "| variant | VAE rows / object | head views | accuracy | 95% Wilson | "
            f"Δ vs exhaustive, points [95%] | lost / gained | {thread_cols} | "
            f"speed-up, {args.threads[0]} thread{'s' if args.threads[0] > 1 else ''} |",
            "| --- | --- | --- | --- | --- | --- | --- | " + "--- | " * len(args.threads) + "--- |",
            *_recovery_rows(first, speed, args.threads),
            "",
            *_mass_lines(args, facts),
            *(verdict(first, speed, t, facts["chosen"]) + "\n" for t in args.threads),
            "",
            "Training cost of the head: none per step (the loop's step is the same code with "
            "or without it; the VAE's weights and metrics are bitwise the same); the fit after "
            "training (encoder features of all 24 poses of every training object, the head's "
            "epochs, the validation report):",
            "",
            "| part | seconds | / epochs |",
            "| --- | --- | --- |",
            f"| {len(facts['metrics'])} training epochs (evaluation included) | {epochs_s:.0f} | "
            "1.00 |",
            f"| head fit | {fit_s:.0f} | {fit_s / epochs_s:.2f} |",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=VOXNET, help="grids to split and train on")
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--width", type=int, default=32, help="model.width")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--n-train", type=int, default=0, help="data.n_train (0: all)")
    p.add_argument("--n-test", type=int, default=0, help="data.n_test (0: all)")
    p.add_argument("--views", type=int, default=2, help="random views per test object")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="for recovery")
    p.add_argument("--proposals", type=int, nargs="+", default=[4, 2, 1])
    p.add_argument("--head-views", type=int, nargs="*", default=[2, 4], help="with top 1")
    p.add_argument("--masses", type=float, nargs="*", default=[0.9, 0.95, 0.99], help="head mass")
    p.add_argument("--mass-k", type=int, default=4, help="proposals K cut by --masses")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", type=Path, help="fit the head on this finished run instead")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    tune_allocator()
    machine = machine_line()
    print(f"CPU: {machine}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is not None:
            cfg = head_config(args.run)
        else:
            cfg, run, _ = train_model(args, Path(tmp))
        train_all, test = load_data(cfg)  # the run's data and split, read once
        fit_set, val_set = split_validation(train_all, cfg.data.n_val, cfg.seed)
        if len(val_set) == 0:  # the head's report and the mass are measured on them
            where = args.run if args.run is not None else "the model"
            raise SystemExit(
                f"{where}: data.n_val is {cfg.data.n_val}: no validation objects, and this "
                "benchmark measures the head and chooses its mass on them"
            )
        if args.run is not None:
            run = adopt_run(args.run, cfg, fit_set, val_set, Path(tmp))
        metrics = runs.read_jsonl(run / "metrics.jsonl")
        results = runs.read_json(run / "results.json")
        head = runs.read_json(run / REPORT)
        meta = runs.read_json(run / "meta.json")
        precision, command = meta.get("precision", "?"), meta.get("command", "?")
        epochs_s = sum(float(r["seconds"]) for r in metrics)
        print(f"trained: test IoU {results['test_iou']:.3f}, head {head}", flush=True)
        model = load_run(run)[1]  # the VAE with its fitted head, loaded once
        chosen, mass_rows = choose_mass(model, val_set, args)
        print(f"head mass chosen on validation: {chosen} ({mass_rows})", flush=True)
        first, speed = recovery(args, model, test)
    facts = {
        "first": first,
        "speed": speed,
        "chosen": chosen,
        "mass_rows": mass_rows,
        "results": results,
        "metrics": metrics,
        "config": cfg,
        "head": head,
        "precision": precision,
        "command": command,
        "epochs_s": epochs_s,
        "n_test": len(test),
        "n_train": len(fit_set),
        "n_val": len(val_set),
        "seconds": time.perf_counter() - t0,
    }
    text = section(args, machine, facts)
    body = text.split("\n", 1)[1]  # without the heading: this machine's part
    show_machine_part(HEADING, INTRO, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
