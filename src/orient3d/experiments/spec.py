"""Experiment specs: a TOML file that names a grid of training runs.

An experiment TOML::

    name = "single_vs_all"
    kind = "single_vs_all"            # single_vs_all | recover | search_modes
    questions = ["..."]               # optional (each kind has a default)
    seeds = [0, 1, 2]                 # every run is repeated per seed (Config.seed)
    reuse = ["../single_vs_all"]      # optional: experiment folders whose finished
                                      # runs are used when name and config match
    [base]                            # a partial run Config (as for `orient3d train`)
    data = { res = 16 }
    [grid]                            # dotted key -> values; runs = their product
    "model.latent" = [2, 8, 32]
    "train.mode" = ["single", "augmented"]
    [variants]                        # optional named override sets, crossed with grid
    oracle = ["train.mode=single"]    # "key=value" strings ...
    search-hard = { "train.mode" = "search", "search.choice" = "hard" }  # ... or a table
    [options]                         # kind-specific (see each kind's Options)
    [launcher]                        # optional: local processes or SLURM jobs
                                      # (orient3d.experiments.launcher)

Unknown keys anywhere are a :class:`~orient3d.errors.ConfigError` naming them.
Overrides given on the command line (``--data.source=PATH``) apply to ``[base]``,
so grid and variant values still vary.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orient3d.config import Config, apply_overrides, from_dict, parse_value, read_toml, to_dict
from orient3d.errors import ConfigError
from orient3d.experiments.launcher import launcher_from

__all__ = ["ExperimentSpec", "RunSpec", "expand_runs", "key_labels", "load_spec", "spec_from_dict"]

SPEC_KEYS = (
    "name",
    "kind",
    "questions",
    "seeds",
    "reuse",
    "base",
    "grid",
    "variants",
    "options",
    "launcher",
)


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed experiment (see the module docstring)."""

    name: str
    kind: str
    seeds: tuple[int, ...] = (0, 1, 2)
    base: Mapping[str, Any] = field(default_factory=dict)  # partial Config as nested dict
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (dotted key, values)
    variants: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()  # (name, (key, value))
    questions: tuple[str, ...] = ()  # empty: the kind's default questions
    options: Mapping[str, Any] = field(default_factory=dict)  # kind-specific
    reuse: tuple[str, ...] = ()  # experiment folders to take finished runs from
    overrides: tuple[str, ...] = ()  # dotted overrides applied to base (command line)
    # where the runs train ([launcher], see orient3d.experiments.launcher); not a run's config
    launcher: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: its folder name, its varied parameters, its Config."""

    name: str
    params: dict[str, Any]
    config: Config


def _dotted_items(table: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    return tuple((str(k), v) for k, v in table.items())


def _variant_items(name: str, value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        return _dotted_items(value, f"variants.{name}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = []
        for text in value:
            t = text[2:] if text.startswith("--") else text
            if "=" not in t:
                raise ConfigError(f"variants.{name}: {text!r} is not of the form key=value")
            key, raw = t.split("=", 1)
            items.append((key, parse_value(raw)))
        return tuple(items)
    raise ConfigError(f"variants.{name}: expected a table or a list of 'key=value' strings")


def _str_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    v = data.get(key, [])
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ConfigError(f"{key}: expected a list of strings, got {v!r}")
    return tuple(v)


def spec_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Build and check an :class:`ExperimentSpec` from a parsed TOML mapping."""
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown experiment key {', '.join(unknown)}; valid keys: {', '.join(SPEC_KEYS)}"
        )
    for key in ("name", "kind"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{key}: required, a non-empty string")
    seeds = data.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    grid = []
    for key, values in _dotted_items(data.get("grid", {}), "grid"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values, got {values!r}")
        grid.append((key, tuple(values)))
    variants = tuple(
        (str(n), _variant_items(str(n), v))
        for n, v in _dotted_items(data.get("variants", {}), "variants")
    )
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"options: expected a table, got {options!r}")
    launcher = data.get("launcher", {})
    launcher_from(launcher)  # checked now; the command line may still override it
    spec = ExperimentSpec(
        name=data["name"],
        kind=data["kind"],
        seeds=tuple(seeds),
        base=dict(data.get("base", {})),
        grid=tuple(grid),
        variants=variants,
        questions=_str_list(data, "questions"),
        options=dict(options),
        reuse=_str_list(data, "reuse"),
        overrides=tuple(overrides),
        launcher=dict(launcher),
    )
    expand_runs(spec)  # every run's config must build: fail now, not half-way
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentSpec:
    """Read an experiment TOML; ``overrides`` (``--data.source=PATH``) apply to ``[base]``."""
    p = Path(path)
    data = read_toml(p, "experiment file")
    try:
        return spec_from_dict(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def _set(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(f"{where}: unknown config key {key}")
        node = node[p]
    if parts[-1] not in node or isinstance(node[parts[-1]], dict):
        raise ConfigError(f"{where}: unknown config key {key}")
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def key_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels for dotted keys: the last part, or the whole key where that clashes."""
    leaves = [k.split(".")[-1] for k in keys]
    return {
        k: (leaf if leaves.count(leaf) == 1 else k.replace(".", "-"))
        for k, leaf in zip(keys, leaves)
    }


def base_config(spec: ExperimentSpec) -> Config:
    """The ``[base]`` table with the command-line overrides applied."""
    try:
        cfg = from_dict(Config, spec.base, "base.")
    except ConfigError as err:
        raise ConfigError(f"[base]: {err}") from None
    return apply_overrides(cfg, spec.overrides)


def expand_runs(spec: ExperimentSpec) -> list[RunSpec]:
    """Every run: variants × grid product × seeds, each with a readable, unique name."""
    base = to_dict(base_config(spec))
    keys = [k for k, _ in spec.grid]
    labels = key_labels(keys)
    variants = spec.variants or (("", ()),)
    runs: list[RunSpec] = []
    for (vname, vitems), combo, seed in itertools.product(
        variants, itertools.product(*(vals for _, vals in spec.grid)), spec.seeds
    ):
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
        for key, value in vitems:
            _set(data, key, value, f"variants.{vname}")
        for key, value in zip(keys, combo):
            _set(data, key, value, f"grid.{key}")
        data["seed"] = seed
        cfg = from_dict(Config, data)
        parts = [_slug(vname)] if vname else []
        parts += [f"{labels[k]}-{_slug(v)}" for k, v in zip(keys, combo)]
        parts.append(f"seed-{seed}")
        params: dict[str, Any] = {"variant": vname} if vname else {}
        params.update(zip(keys, combo))
        params["seed"] = seed
        runs.append(RunSpec("_".join(parts), params, cfg))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError("two runs got the same name: grid values or variants repeat")
    return runs
