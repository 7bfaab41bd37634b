"""Search training's cost per step against augmented training, and that speed-ups keep
the answer. Writes "## Search per-step overhead" in BENCHMARKS.md.

    python benchmarks/bench_search_overhead.py [--n-train 512] [--epochs 12]
        [--widths 16 32] [--threads 1 2] [--seeds 3] [--no-write]

Variants, side by side in one process (same init, data order and rotations;
``benchmarks/_side_by_side.py``): search with the default SearchConfig (cache on,
one cached pose per object, the staleness probe every epoch), and with adaptive
proposals (``search.proposals=8``, ``search.adaptive_proposals=true``: an epoch whose
probe finds the first cached pose stale re-scores the 8 cached poses of each hit
instead of re-searching every object), each against augmented training. 16³
procedural data, latent 16, batch 64, fp32 training.

Steady steps: interleaved steps on the same batches with the cache already full
and no triggered re-search, as in a steady epoch: step time / its augmented
step, wall and CPU, and the CPU time of the scoring and the rest of ``prepare``.

Whole runs: for each model width and thread count, epochs interleaved (a
different order each epoch): the run's time / its augmented's, the epochs that
re-searched (>= 2 rows scored per sample: first search, scheduled or triggered)
and their share of the time, the median ratio over the other (steady) epochs.

Answer: full search (``search.cache=false``), the default and adaptive proposals
train search-hard runs through the real training loop
(``orient3d.training.loop.fit``, 3 seeds, 512 objects, width 16, 12 epochs); final
test MSE (protocol rotated+search, exhaustive fp32 search for all) and
global/class consistency of the test objects' canonical poses, with 95% intervals
over seeds, and the rows scored per sample of each run (its search epochs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from _machine import machine_line
from _sections import EACH_PART, show_machine_part
from _side_by_side import Run, make_run, train_epoch
from orient3d.config import Config, apply_overrides
from orient3d.data import VoxelSet, train_test
from orient3d.devices import tune_allocator
from orient3d.evaluation.protocols import eval_rotations, evaluate, load_run
from orient3d.geometry.groups import cube_group, rotate
from orient3d.metrics.consistency import class_consistency, global_consistency
from orient3d.metrics.stats import format_ci, mean_ci
from orient3d.model import VAE
from orient3d.search import canonical_pose, canonicalize
from orient3d.search.discrete import scoring_precision
from orient3d.training.loop import fit

HEADING = "## Search per-step overhead"
INTRO = (
    "Search training's cost per step and per run against augmented training, and the "
    "answer of the speed-ups against full search (`benchmarks/bench_search_overhead.py`). "
    + EACH_PART
)
O = cube_group()
BASE = [
    "data.res=16",
    "model.latent=16",
    "train.batch_size=64",
    "train.lr=2e-3",
    "train.precision=fp32",
    "train.mode=search",
]
AUG, DEFAULT, ADAPTIVE = "augmented", "search, default", "search, adaptive proposals 8"
FULL = "full search (no cache)"
VARIANTS: dict[str, list[str]] = {  # name -> overrides of BASE
    AUG: ["train.mode=augmented"],
    DEFAULT: [],
    ADAPTIVE: ["search.proposals=8", "search.adaptive_proposals=true"],
}
REFERENCE = {DEFAULT: AUG, ADAPTIVE: AUG}  # each search variant against augmented
ANSWER = {FULL: ["search.cache=false"], DEFAULT: [], ADAPTIVE: VARIANTS[ADAPTIVE]}


NOTES = [
    "- A steady step is its augmented step plus the scoring of the ~5% of samples "
    "searched in full (about 3 samples × 24 rotations = 71 rows per 64-sample step) plus a "
    "few ms of bookkeeping; the scoring pass runs at the efficiency of a training "
    "forward per row (at 1 thread), so the steady ratio is near 1 + rows / (3 × batch): "
    "what remains is the rows the default refresh fraction asks for, not overhead.",
    "- Whole runs are dominated by epochs that re-search every object: the first search "
    "epoch and then the max_stale trigger (the share of cached poses a fresh search "
    "would change stays above 0.05 while the model still moves), each about as costly "
    "as full search. The per-step work above cannot bring such runs near the "
    "steady ratio; the cache policy (search.max_stale, refresh_frac) decides it, and "
    "changing it changes the answer.",
    "- Adaptive proposals: an epoch whose probe finds more than max_stale of the first "
    "cached poses stale re-scores the fewest cached poses (k of 8) whose best is within "
    "it, k rows per hit, instead of re-searching 24 per object; the in-epoch checks raise "
    "k before they re-search. Epochs whose first pose is fresh cost what the default's "
    "do, so its steady steps match the default's above.",
    "- A floor under any whole run: one full search scores 24 rows per sample, at a "
    "forward per row about 24 / 3 = 8 training epochs of work, so a 12-epoch run with a "
    "single full search costs at least (12 + 8) / 12 ≈ 1.67× augmented, before any "
    "re-search. A whole-run ratio of 1.5× at 12 epochs needs a first search cheaper than "
    "exhaustive (candidates proposed by an amortized head, a cheaper scoring pass), not "
    "less per-step overhead.",
    "- On 2 threads on a busy machine every small op may wait for a descheduled "
    "thread: wall and CPU times there swing several-fold; compare within a row.",
]


def _timed_scoring(run: Run) -> list[float]:
    """Wrap the mode's scoring call; returns ``[wall, CPU]`` seconds, accumulating."""
    spent = [0.0, 0.0]
    score: Callable[..., Any] = run.mode._score

    def timed(*args: Any, **kw: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = score(*args, **kw)
        spent[0] += time.perf_counter() - t0
        spent[1] += time.process_time() - c0
        return out

    run.mode._score = timed
    return spent


def speed(width: int, threads: int, train: VoxelSet, epochs: int) -> dict[str, dict[str, Any]]:
    """Per variant: per-epoch wall and CPU seconds, scoring seconds, rows per sample."""
    torch.set_num_threads(threads)
    base = [*BASE, f"model.width={width}"]
    runs = {name: make_run(name, base, ov, epochs, train) for name, ov in VARIANTS.items()}
    scoring = {name: _timed_scoring(runs[name]) for name in REFERENCE}
    score_s: dict[str, list[float]] = {name: [] for name in scoring}
    names = list(runs)
    for epoch in range(1, epochs + 1):
        shift = epoch % len(names)
        for name in names[shift:] + names[:shift]:
            before = scoring[name][0] if name in scoring else 0.0  # (wall)
            runs[name].seconds.append(train_epoch(runs[name], train.voxels, epoch))
            if name in scoring:
                score_s[name].append(scoring[name][0] - before)
        line = "  ".join(f"{n[:12]} {r.seconds[-1]:.1f}s" for n, r in runs.items())
        print(f"width {width} threads {threads} epoch {epoch}: {line}", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        rows = [float(e.get("rows_scored_per_sample") or 0.0) for e in run.extras]
        active = [bool(e.get("search_active")) for e in run.extras]
        full = [a and bool(e.get("cache_refreshed")) for a, e in zip(active, run.extras)]
        rescored = [bool(e.get("cache_poses_rescored")) for e in run.extras]
        out[name] = {
            "wall": run.seconds,
            "cpu": run.cpu_seconds,
            "score": score_s.get(name, [0.0] * epochs),
            "rows": rows,
            "full": full,  # the first search, scheduled or max_stale-triggered re-searches
            "rescored": [r and not f for r, f in zip(rescored, full)],  # adaptive, k > 1
            "steady": [a and not f for a, f in zip(active, full)],
        }
    return out


def steady_steps(
    width: int, threads: int, train: VoxelSet, steps: int
) -> dict[str, dict[str, list[float]]]:
    """Per variant and steady cached step (cache full, no re-search): wall and CPU
    seconds of the step, CPU seconds of its scoring and of the rest of ``prepare``.

    The search variants start from a filled cache and ``search.max_stale=1`` (no
    triggered re-search): each step scores only its ``refresh_frac`` samples in
    full, as in a steady epoch. Steps interleave, a different order each time."""
    torch.set_num_threads(threads)
    base = [*BASE, f"model.width={width}", "search.max_stale=1"]
    runs = {name: make_run(name, base, ov, 3, train) for name, ov in VARIANTS.items()}
    scoring = {}
    for name, run in runs.items():
        run.mode.start_epoch(run.model, 3)  # a search epoch after the warm-up
        if run.cfg.train.mode == "search":
            shape = run.mode.poses.shape
            run.mode.poses[:] = torch.randint(len(O), shape, generator=run.data_gen)
            run.mode.searched_at.fill_(run.mode.k)
            run.mode.start_epoch(run.model, 3)  # the probe reads the filled cache
            scoring[name] = _timed_scoring(run)
        run.model.train()
    gen = torch.Generator().manual_seed(0)
    keys = ("wall", "cpu", "score_cpu", "prepare_cpu", "rows")
    out: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in runs}
    names = list(runs)
    for i in range(steps + 2):  # the first two warm up
        idx = torch.randperm(len(train), generator=gen)[:64]
        for name in names[i % len(names) :] + names[: i % len(names)]:
            run, spent = runs[name], scoring.get(name, [0.0, 0.0])
            s0, r0 = spent[1], getattr(run.mode, "rows", 0)
            t0, c0 = time.perf_counter(), time.process_time()
            prepare = _step(run, train.voxels, idx)
            if i >= 2:
                rec = out[name]
                rec["wall"].append(time.perf_counter() - t0)
                rec["cpu"].append(time.process_time() - c0)
                rec["score_cpu"].append(spent[1] - s0)
                rec["prepare_cpu"].append(prepare - (spent[1] - s0))
                rec["rows"].append(getattr(run.mode, "rows", 0) - r0)
    return out


def _step(run: Run, voxels: torch.Tensor, idx: torch.Tensor) -> float:
    """One training step as in ``_side_by_side.train_epoch``; returns prepare's CPU seconds."""
    g = torch.randint(len(O), (idx.shape[0],), generator=run.data_gen)
    x_shown = rotate(voxels[idx], O, g).float()
    c0 = time.process_time()
    prep = run.mode.prepare(run.model, x_shown, g, idx, 3)
    prepare = time.process_time() - c0
    loss = run.model(prep.x, generator=run.noise_gen).neg_elbo.mean()
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return prepare


def steady_rows(width: int, threads: int, res: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = []
    for name, ref in REFERENCE.items():
        r, aug = res[name], res[ref]
        wall = statistics.median(a / b for a, b in zip(r["wall"], aug["wall"]))
        cpu = statistics.median(a / b for a, b in zip(r["cpu"], aug["cpu"]))
        ms = {k: 1e3 * statistics.mean(r[k]) for k in ("score_cpu", "prepare_cpu")}
        lines.append(
            f"| {width} | {threads} | {name} | {1e3 * statistics.median(r['wall']):.0f} ms | "
            f"{wall:.2f}× | {cpu:.2f}× | {1e3 * statistics.median(aug['wall']):.0f} ms | "
            f"{1e3 * statistics.mean(aug['cpu']):.0f} ms | {ms['score_cpu']:.1f} ms | "
            f"{ms['prepare_cpu']:.1f} ms | {statistics.mean(r['rows']):.0f} |"
        )
    return lines


def speed_rows(width: int, threads: int, res: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, ref in REFERENCE.items():
        r, aug = res[name], res[ref]
        steady = [i for i, s in enumerate(r["steady"]) if s]
        busy = [i for i, f in enumerate(r["full"]) if f]
        whole = sum(r["wall"]) / sum(aug["wall"])
        whole_cpu = sum(r["cpu"]) / sum(aug["cpu"])
        rows = statistics.mean(r["rows"][1:])  # the search epochs
        busy_share = sum(r["wall"][i] for i in busy) / sum(r["wall"])
        med = (
            f"{statistics.median(r['wall'][i] / aug['wall'][i] for i in steady):.2f}× "
            f"({len(steady)})"
            if steady
            else "— (0)"
        )
        lines.append(
            f"| {width} | {threads} | {name} | {sum(r['wall']):.0f} s | {whole:.2f}× | "
            f"{whole_cpu:.2f}× | {rows:.1f} | "
            f"{len(busy)} | {busy_share:.0%} | {sum(r['rescored'])} | {med} |"
        )
    return lines


def _fp32_canonicalize(model: VAE, x: torch.Tensor) -> torch.Tensor:
    return canonicalize(model, x.to(torch.uint8), O, precision="fp32")


def answer(seeds: int, n: int, epochs: int, tmp: Path) -> dict[str, dict[str, list[float]]]:
    """Per variant: final test MSE, consistencies (fp32 protocol) and rows scored per
    sample over the search epochs, per seed."""
    torch.set_num_threads(1)
    out: dict[str, dict[str, list[float]]] = {}
    for name, ov in ANSWER.items():
        vals: dict[str, list[float]] = {"mse": [], "global": [], "class": [], "rows": []}
        for seed in range(seeds):
            cfg = apply_overrides(
                Config(),
                [
                    *BASE,
                    *ov,
                    "model.width=16",
                    f"data.n_train={n}",
                    f"data.n_test={n // 4}",
                    f"train.epochs={epochs}",
                    f"train.eval_every={epochs}",
                    "train.progress=false",
                    f"seed={seed}",
                ],
            )
            train, test = train_test("procedural", 16, n, n // 4, seed)
            run = tmp / f"{name[:20]}-{seed}".replace(" ", "_").replace(",", "")
            fit(cfg, train, test, run)
            _, model = load_run(run)
            ev = evaluate(
                model, test, cfg, protocol="rotated+search", canonicalize=_fp32_canonicalize
            )
            g = eval_rotations(len(test), cfg.seed)
            h = canonical_pose(_fp32_canonicalize(model, rotate(test.voxels, O, g)), g, O)
            vals["mse"].append(float(ev["test_mse"]))
            vals["global"].append(float(global_consistency(h, test.stabilizers, O)["consistency"]))
            cc = class_consistency(h, test.stabilizers, test.labels, O)
            vals["class"].append(float(cc["consistency"]))
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            searched = [r["rows_scored_per_sample"] for r in rows if r.get("search_active")]
            vals["rows"].append(statistics.mean(searched) if searched else 0.0)
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in vals.items()))
        out[name] = vals
    return out


def _ci(values: list[float], digits: int = 4, bounds: tuple[float, float] | None = None) -> str:
    m, lo, hi = mean_ci(values)
    if bounds is not None and len(values) > 1:  # a fraction's interval stays in [0, 1]
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return format_ci(m, lo, hi, digits=digits)


def section(
    args: argparse.Namespace, machine: str, steady: list[str], speeds: list[str], ans: dict
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cmd = "python benchmarks/bench_search_overhead.py " + " ".join(
        w for w in sys.argv[1:] if w != "--no-write"
    )
    lines = [
        HEADING,
        "",
        f"`{cmd.strip()}`, {when}, {machine} at the start (the machine is shared: wall "
        f"ratios swing; CPU-time ratios at 1 thread are the steadier), torch "
        f"{torch.__version__}. Each search variant against augmented training. "
        f"16³ procedural data, {args.n_train} training objects, latent 16, batch 64, fp32 "
        f"training, search scoring in {scoring_precision(torch.device('cpu'), 'auto')} "
        f"(`search.precision=auto` on this machine), {args.epochs} epochs (1 warm-up). "
        "Default: the default SearchConfig "
        "(cache on, one cached pose, refresh every 16 search epochs, 5% of each step "
        "searched in full, the staleness probe every epoch, max_stale 0.05); adaptive: the "
        "same with `search.proposals=8`, `search.adaptive_proposals=true`.",
        "",
        f"Steady cached steps ({args.steps} interleaved steps per variant; the cache "
        "filled, no triggered re-search: each step searches its 5% in full): step time / "
        "its augmented step on the same batch, median.",
        "",
        "| width | threads | variant | step, wall | / augmented, wall | / augmented, CPU | "
        "augmented step, wall | augmented step, CPU | scoring, CPU / step | "
        "rest of prepare, CPU / step | rows scored / step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *steady,
        "",
        f"Whole runs of {args.epochs} epochs, interleaved: the run's training time / its "
        "augmented's; rows scored per sample over the search epochs (the staleness probe "
        "included); the epochs that re-searched every object (`cache_refreshed`: the first "
        "search, scheduled or max_stale-triggered re-searches) and their share of the "
        "run's time; the other search epochs in which cache hits re-scored k > 1 cached "
        "poses (adaptive proposals); the median ratio to the augmented epoch of the same "
        "index over the search epochs that re-searched nothing at large, with their count.",
        "",
        "| width | threads | variant | run, wall | / augmented, wall | / augmented, CPU | "
        "rows / sample | re-search epochs | their share of the time | re-scoring epochs | "
        "steady epochs / augmented, wall (n) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *speeds,
        "",
        f"Same answer: search-hard through the training loop, {args.seeds} seeds, "
        f"{args.check_n} objects ({args.check_n // 4} test), width 16, {args.check_epochs} "
        "epochs (1 warm-up), 1 thread; final test MSE under rotated+search and global/class "
        "consistency of the test objects, both measured with exhaustive fp32 search; rows "
        "scored per sample over the search epochs (the training's own count, probe "
        "included); mean [95% interval] over seeds.",
        "",
        "| variant | final test MSE | global consistency | class consistency | "
        "rows scored / sample |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, v in ans.items():
        lines.append(
            f"| {name} | {_ci(v['mse'])} | {_ci(v['global'], 3, (0, 1))} | "
            f"{_ci(v['class'], 3, (0, 1))} | {_ci(v['rows'], 3)} |"
        )
    return "\n".join([*lines, "", *NOTES])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=40, help="steady steps per variant")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--check-n", type=int, default=512)
    p.add_argument("--check-epochs", type=int, default=12)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    tune_allocator()
    machine = machine_line()
    print(f"CPU: {machine}", flush=True)
    train, _ = train_test("procedural", 16, args.n_train, 1, 0)
    steady, speeds = [], []
    for width in args.widths:
        for threads in args.threads:
            res = steady_steps(width, threads, train, args.steps)
            steady += steady_rows(width, threads, res)
            print("\n".join(steady[-2:]), flush=True)
    for width in args.widths:
        for threads in args.threads:
            speeds += speed_rows(width, threads, speed(width, threads, train, args.epochs))
    with tempfile.TemporaryDirectory() as d:
        ans = answer(args.seeds, args.check_n, args.check_epochs, Path(d))
    text = section(args, machine, steady, speeds, ans)
    body = text.split("\n", 1)[1]  # without the heading: this machine's part
    show_machine_part(HEADING, INTRO, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
