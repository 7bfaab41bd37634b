"""Checks the commands make before any slow work, each failing with one clear line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orient3d.errors import ConfigError

__all__ = ["check_config_path"]


def _bare_key(overrides: Sequence[str]) -> str | None:
    """The first ``--key`` override given without ``=value``, if any."""
    return next((o for o in overrides if o.startswith("--") and "=" not in o), None)


def check_config_path(path: str | None, overrides: Sequence[str], what: str = "config") -> None:
    """A CONFIG argument names a TOML file; say what went wrong when it does not.

    ``--train.epochs 3`` (a space, not ``=``) makes ``3`` the CONFIG argument:
    the message then suggests ``--train.epochs=3``.
    """
    bare = _bare_key(overrides)
    if path is None:
        if bare is not None:
            raise ConfigError(f"{bare}: give the value after '=', e.g. {bare}=VALUE")
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder, not a TOML {what} file")
    if not p.exists() and bare is not None:
        raise ConfigError(
            f"{p}: {what} file not found; overrides take the form --key=value: "
            f"did you mean {bare}={path}?"
        )
    if bare is not None:
        raise ConfigError(f"{bare}: give the value after '=', e.g. {bare}=VALUE")
