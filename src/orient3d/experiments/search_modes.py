"""Question 2: does training with orientation search learn a canonical subset of poses?

Runs: named variants at one latent size × seeds, by default ``oracle`` (mode
single: the objects in their canonical pose), ``augmented``, ``search-hard`` and
``search-soft``. Measured per run (:func:`orient3d.experiments.analysis.canonical`):
the first ``n_objects`` test objects in all 24 poses, canonicalized by exhaustive
search; the consistency and usage of the canonical poses, and every model's test
MSE under one common protocol (``rotated+search``) next to the curve of its own
protocol (single: as stored; augmented: rotated; search: rotated+search).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.experiments.analysis import canonical
from orient3d.experiments.common import Kind, RunRecord, ci_cell, compare, fmt, jsonable, section
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.figures import Curve, plot_curves, plot_pose_histograms
from orient3d.stats import mean_ci

__all__ = ["KIND", "Options", "answer", "curves", "summarize", "variant_of"]

QUESTION = (
    "Can a VAE trained on randomly oriented objects learn only a subset of orientations "
    "(a canonical pose) if every SGD step first optimizes each sample's orientation?"
)
G = 24


@dataclass(frozen=True)
class Options:
    n_objects: int = 32  # test objects shown in all 24 poses for consistency and usage
    picture_objects: int = 6  # objects in each model's picture (first seed; 0: none)
    usage_min_frac: float = 0.01  # a pose is used when it takes this fraction of the views


def variant_of(r: RunRecord) -> str:
    """The run's variant name, or one made from its mode."""
    if r.params.get("variant"):
        return str(r.params["variant"])
    mode = r.config.train.mode
    return f"search-{r.config.search.choice}" if mode == "search" else mode


def _by_variant(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(variant_of(r), []).append(r)
    return out


def curves(records: Sequence[RunRecord], key: str = "test_mse") -> list[Curve]:
    """Per variant: ``key`` per epoch, mean and 95% interval over seeds."""
    out = []
    for name, runs in _by_variant(records).items():
        per_epoch: dict[int, list[float]] = {}
        for r in runs:
            for m in r.metrics:
                if key in m and m[key] is not None:
                    per_epoch.setdefault(int(m["epoch"]), []).append(float(m[key]))
        epochs = sorted(per_epoch)
        stats = [mean_ci(per_epoch[e]) for e in epochs]
        proto = runs[0].results.get("protocol", "?")
        out.append(Curve(f"{name} ({proto})", epochs, *map(list, zip(*stats))))
    return out


def _values(runs: Sequence[RunRecord], key: str) -> list[float]:
    return [float(r.extra["canonical"][key]) for r in runs if "canonical" in r.extra]


def random_max(n_objects: int, order: int = G, trials: int = 4000) -> float:
    """Expected global consistency if each object took one uniformly random pose.

    With few objects the modal pose's share lies well above ``1 / order`` by chance
    alone (16 objects: about 0.16), so this, not ``1 / order``, is the baseline.
    """
    if n_objects < 1:
        return float("nan")
    rng = np.random.default_rng(0)
    draws = rng.integers(order, size=(trials, n_objects))
    counts = np.zeros((trials, order), dtype=np.int64)
    np.add.at(counts, (np.arange(trials)[:, None], draws), 1)
    return float(counts.max(axis=1).mean() / n_objects)


def _answer_part(name: str, runs: Sequence[RunRecord]) -> str:
    used, glob = _values(runs, "n_used"), _values(runs, "global_consistency")
    ent, inst = _values(runs, "entropy_normalized"), _values(runs, "instance_consistency")
    cls = _values(runs, "class_consistency")
    m, lo, hi = mean_ci(glob)
    return (
        f"{name} used {fmt(float(np.mean(used)), 3)} of {G} canonical poses (normalized "
        f"entropy {fmt(float(np.mean(ent)), 2)}), with global consistency {fmt(m)} "
        f"[{fmt(lo)}, {fmt(hi)}], class consistency {fmt(float(np.mean(cls)))} and instance "
        f"consistency {fmt(float(np.mean(inst)))}"
    )


def _verdict(runs: Sequence[RunRecord], base: Sequence[RunRecord] | None, chance: float) -> str:
    glob = _values(runs, "global_consistency")
    _, lo, _ = mean_ci(glob)
    above_chance = lo == lo and lo > chance  # nan (one seed) is not above
    if base is None:
        return "partly" if above_chance else "no"
    cmp = compare(_values(base, "global_consistency"), glob)
    if cmp.separated and cmp.difference > 0:
        return "yes"
    return "partly" if cmp.difference > 0 and above_chance else "no"


def answer(records: Sequence[RunRecord]) -> str:
    """One sentence answering question 2, from the canonical-pose measurements.

    Yes: a search-trained model's global consistency lies above the augmented
    model's beyond both 95% intervals. Partly: its mean lies above the augmented
    model's and its interval above chance (the expected share of the modal pose
    among randomly posed objects), but the two intervals overlap. Not shown:
    otherwise. The oracle (mode single) is quoted as the reference.
    """
    groups = _by_variant([r for r in records if "canonical" in r.extra])
    search = {k: v for k, v in groups.items() if v[0].config.train.mode == "search"}
    if not search:
        return "No search-trained run has canonical-pose measurements yet."
    base = next((v for v in groups.values() if v[0].config.train.mode == "augmented"), None)
    n_obj = int(min(_values(next(iter(search.values())), "n_objects")))
    chance = random_max(n_obj)
    verdicts = [_verdict(runs, base, chance) for runs in search.values()]
    head = {"yes": "Yes", "partly": "Partly", "no": "Not shown"}[
        "yes" if "yes" in verdicts else "partly" if "partly" in verdicts else "no"
    ]
    parts = [_answer_part(f"the {k} VAE", v) for k, v in search.items()]
    text = f"{head}: " + "; ".join(parts)
    if base is not None:
        text += "; for comparison " + _answer_part("the augmented VAE", base)
    oracle = next((v for v in groups.values() if v[0].config.train.mode == "single"), None)
    if oracle is not None:
        m = float(np.mean(_values(oracle, "global_consistency")))
        text += f", and the oracle trained on the canonical pose reached {fmt(m)}"
    return f"{text} (chance: {fmt(chance, 2)} for {n_obj} randomly posed objects)."


def _pose_table(groups: dict[str, list[RunRecord]]) -> list[list[Any]]:
    rows = []
    for name, runs in groups.items():
        if not any("canonical" in r.extra for r in runs):
            continue
        rows.append(
            [
                name,
                ci_cell(_values(runs, "instance_consistency")),
                ci_cell(_values(runs, "global_consistency")),
                random_max(int(min(_values(runs, "n_objects")))),
                ci_cell(_values(runs, "class_consistency")),
                ci_cell(_values(runs, "n_used")),
                ci_cell(_values(runs, "entropy_normalized")),
            ]
        )
    return rows


def _mse_table(groups: dict[str, list[RunRecord]]) -> list[list[Any]]:
    return [
        [
            name,
            str(runs[0].results.get("protocol", "?")),
            ci_cell([r.results["test_mse"] for r in runs]),
            ci_cell([r.results["test_iou"] for r in runs]),
            ci_cell(_values(runs, "common_test_mse")),
        ]
        for name, runs in groups.items()
    ]


def _figures(
    groups: dict[str, list[RunRecord]], records: Sequence[RunRecord], out: Path
) -> dict[str, list[str]]:
    figs: dict[str, list[str]] = {"curves": ["figures/search_modes_mse.png"], "poses": []}
    plot_curves(
        out / figs["curves"][0],
        curves(records),
        xlabel="epoch",
        ylabel="test MSE (mean, 95% CI over seeds)",
        title="Test MSE per epoch, each under its own protocol",
    )
    hists = []
    for name, runs in groups.items():
        first = min(runs, key=lambda r: r.config.seed)
        if "canonical" in first.extra:
            hists.append(
                (f"{name} (seed {first.config.seed})", first.extra["canonical"]["pose_counts"])
            )
        pic = first.path / "figures" / "poses.png"
        if pic.is_file():
            dest = f"figures/poses_{name}.png"
            (out / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pic, out / dest)
            figs["poses"].append(dest)
    if hists:
        plot_pose_histograms(
            out / "figures" / "pose_usage.png", hists, title="Canonical poses used"
        )
        figs["usage"] = ["figures/pose_usage.png"]
    return figs


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    groups = _by_variant(records)
    figs = _figures(groups, records, out)
    n_obj = max(
        (r.extra["canonical"]["n_objects"] for r in records if "canonical" in r.extra), default=0
    )
    sections = [
        section(
            "Test MSE per mode",
            "Each curve is measured under its mode's own protocol (single: as stored; "
            "augmented: rotated; search: rotated+search). The last column measures every "
            "model under one common protocol, rotated+search, so those numbers compare.",
            ["variant", "protocol", "test MSE", "test IoU", "test MSE, rotated+search"],
            _mse_table(groups),
            figs["curves"],
        ),
        section(
            "Canonical poses: consistency and usage",
            f"The first {n_obj} test objects shown in all 24 poses; each view turned by "
            "exhaustive search (hard argmin over O, encoder mean); canonical pose h = r⁻¹g. "
            "Consistency counts symmetric objects' equivalent poses as one; chance is the "
            "expected share of the modal pose if each object took a random pose (above "
            "1/24 for few objects). With exhaustive search over O the instance consistency is 1 by "
            "construction (every view is scored against the same orbit). Poses used: those "
            f"taking at least {fmt(100 * options.usage_min_frac, 2)}% of the views.",
            [
                "variant",
                "instance",
                "global",
                "chance (random)",
                "class",
                "poses used",
                "entropy / log 24",
            ],
            _pose_table(groups),
            figs.get("usage", []),
        ),
        section(
            "What the models turned the inputs to",
            "Per model (first seed): randomly oriented test inputs (left), the pose the search "
            "turned each one to (middle), and the reconstruction of that pose (right: its "
            "most probable voxels, as many as the input has).",
            figures=figs["poses"],
        ),
    ]
    sentence = answer(records)
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": (spec.questions or (QUESTION,))[0], "answer": sentence}],
            "sections": sections,
        }
    )


def _wants(run: RunSpec, options: Options) -> bool:
    return True


KIND = Kind(
    questions=(QUESTION,),
    options=Options,
    summarize=summarize,
    analyze=canonical,
    wants_analysis=_wants,
    extra_files=("canonical.json",),
    analysis_output="canonical.json",
)
