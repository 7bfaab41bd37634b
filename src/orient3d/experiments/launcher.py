"""Where an experiment's runs train: here (``local``) or as SLURM jobs (``slurm``).

The experiment TOML may carry a ``[launcher]`` table; the command line overrides
it key by key (``--launcher``, ``--slurm.partition`` ...)::

    [launcher]
    kind = "slurm"             # local (default): processes here; slurm: a job per run
    partition = "gpu"          # --slurm.partition (default: the cluster's)
    time = "4:00:00"           # --slurm.time: per job, minutes or [D-]HH:MM[:SS] (default 60)
    gpus_per_run = 1           # --slurm.gpus-per-run (default 1); > 1: the run uses torchrun
    cpus_per_run = 8           # --slurm.cpus-per-run (default: the cluster's)
    array_parallelism = 16     # --slurm.array-parallelism: jobs running at once (default 256)
    setup = ["module load cuda"]   # shell lines each job runs first (TOML only)
    [launcher.sbatch]          # any other sbatch option (TOML only)
    account = "myproject"

Keys may be written with ``-`` or ``_``. An unknown key or a bad value is a
:class:`~orient3d.errors.ConfigError` naming it. This module only reads settings;
:mod:`orient3d.experiments.slurm` submits the jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orient3d.errors import ConfigError

__all__ = ["KINDS", "Launcher", "add_args", "from_args", "launcher_from", "parse_time"]

KINDS = ("local", "slurm")


@dataclass(frozen=True)
class Launcher:
    """How an experiment's runs are launched (see the module docstring)."""

    kind: str = "local"  # local | slurm
    partition: str | None = None  # SLURM partition (None: the cluster's default)
    time_min: int = 60  # wall time of each job, minutes (a timed-out job requeues itself)
    gpus_per_run: int = 1  # GPUs of each run's job; > 1: torchrun, one process per GPU
    cpus_per_run: int | None = None  # CPUs of each run's job (None: the cluster's default)
    array_parallelism: int = 256  # jobs of the array running at once
    setup: tuple[str, ...] = ()  # shell lines run before each job (module load ...)
    sbatch: tuple[tuple[str, Any], ...] = ()  # other sbatch options, (name, value)


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(value: Any, where: str) -> int:
    """SLURM's wall time as whole minutes (seconds round up): ``90``, ``"90"``,
    ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``, ``"D-HH:MM:SS"``."""
    if type(value) is int:
        minutes = value
    else:
        m = _TIME.match(str(value).strip()) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(
                f"{where}: {value!r} is not a time; give minutes (90) or [D-]HH:MM:SS"
            )
        days, a, b, c = (int(g) if g is not None else None for g in m.groups())
        if days is not None:  # D-HH[:MM[:SS]]
            seconds = ((days * 24 + (a or 0)) * 60 + (b or 0)) * 60 + (c or 0)
        elif c is not None:  # HH:MM:SS
            seconds = ((a or 0) * 60 + (b or 0)) * 60 + c
        elif b is not None:  # MM:SS
            seconds = (a or 0) * 60 + b
        else:  # MM
            seconds = (a or 0) * 60
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise ConfigError(f"{where}: {value!r} is too short; a job needs at least a minute")
    return minutes


def _int(low: int) -> Callable[[Any, str], int]:
    def parse(value: Any, where: str) -> int:
        if type(value) is not int or value < low:
            raise ConfigError(f"{where}: {value!r} is invalid, must be an integer >= {low}")
        return value

    return parse


def _kind(value: Any, where: str) -> str:
    if value not in KINDS:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(KINDS)}")
    return str(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {value!r} is invalid, must be a non-empty string")
    return value.strip()


def _lines(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of shell lines, got {value!r}")
    return tuple(value)


def _options(value: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table of sbatch options, got {value!r}")
    bad = [k for k, v in value.items() if not isinstance(v, str | int | float | bool)]
    if bad:
        raise ConfigError(f"{where}.{bad[0]}: expected a string, number or boolean")
    return tuple((str(k), v) for k, v in value.items())


# TOML key -> (Launcher field, parser of a TOML value or command-line text)
_KEYS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "kind": ("kind", _kind),
    "partition": ("partition", _text),
    "time": ("time_min", parse_time),
    "gpus_per_run": ("gpus_per_run", _int(0)),
    "cpus_per_run": ("cpus_per_run", _int(1)),
    "array_parallelism": ("array_parallelism", _int(1)),
    "setup": ("setup", _lines),
    "sbatch": ("sbatch", _options),
}
# the keys the command line sets, as --slurm.<flag>; those whose text is read as an integer
CLI_KEYS = ("partition", "time", "gpus_per_run", "cpus_per_run", "array_parallelism")
_CLI_INTS = ("gpus_per_run", "cpus_per_run", "array_parallelism")


def _flag(key: str) -> str:
    return "--slurm." + key.replace("_", "-")


def launcher_from(
    table: Mapping[str, Any] | None = None,
    cli: Mapping[str, str | None] | None = None,
    kind: str | None = None,
) -> Launcher:
    """The [launcher] ``table`` (TOML values), then ``cli`` (key -> text from
    ``--slurm.<key>``, None: not given) and ``kind`` (``--launcher``) over it."""
    table = {} if table is None else table
    if not isinstance(table, Mapping):
        raise ConfigError(f"[launcher]: expected a table, got {table!r}")
    changes: dict[str, Any] = {}
    for raw, value in table.items():
        key = str(raw).replace("-", "_")
        if key not in _KEYS:
            raise ConfigError(
                f"[launcher]: unknown key {raw}; valid keys: {', '.join(sorted(_KEYS))}"
            )
        field, parse = _KEYS[key]
        changes[field] = parse(value, f"[launcher] {raw}")
    for key, text in (cli or {}).items():
        if text is not None:
            field, parse = _KEYS[key]
            given: Any = text.strip()
            if key in _CLI_INTS and given.lstrip("-").isdigit():
                given = int(given)
            changes[field] = parse(given, _flag(key))
    if kind is not None:
        changes["kind"] = _kind(kind, "--launcher")
    return dataclasses.replace(Launcher(), **changes)


def add_args(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and the ``--slurm.*`` options (values checked by :func:`from_args`)."""
    parser.add_argument("--launcher", choices=KINDS, help="local processes (default) or SLURM jobs")
    helps = {
        "partition": "SLURM partition (default: the cluster's)",
        "time": "wall time of each job: minutes or [D-]HH:MM:SS (default 60)",
        "gpus_per_run": "GPUs per run (default 1; more: torchrun inside the job)",
        "cpus_per_run": "CPUs per run (default: the cluster's)",
        "array_parallelism": "jobs of the array running at once (default 256)",
    }
    for key in CLI_KEYS:
        parser.add_argument(_flag(key), dest=f"slurm_{key}", metavar="V", help=helps[key])


def from_args(args: argparse.Namespace, table: Mapping[str, Any] | None) -> Launcher:
    """The launcher of ``args`` (from :func:`add_args`) over the TOML ``table``."""
    cli = {k: getattr(args, f"slurm_{k}", None) for k in CLI_KEYS}
    launcher = launcher_from(table, cli, getattr(args, "launcher", None))
    given = [_flag(k) for k, v in cli.items() if v is not None]
    if given and launcher.kind != "slurm":
        raise ConfigError(f"{given[0]}: applies to --launcher slurm, not {launcher.kind}")
    return launcher


def check_overrides(overrides: Sequence[str]) -> None:
    """An unknown ``--slurm.<key>`` reaches the overrides: name the ones there are."""
    for item in overrides:
        if item.startswith(("--slurm.", "--launcher")):
            valid = ", ".join(_flag(k) for k in CLI_KEYS)
            raise ConfigError(f"{item.split('=')[0]}: unknown option; valid: {valid}")
