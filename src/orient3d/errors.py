"""The project's exceptions. The CLI prints any of them as one clear line."""

from __future__ import annotations


class Orient3dError(Exception):
    """Base class: a user-facing problem whose message says what and where."""


class DataError(Orient3dError, ValueError):
    """A data file or value is unusable; the message names it and says what is wrong."""


class ConfigError(Orient3dError, ValueError):
    """A config file, key or value is invalid; the message names it."""


class RunError(Orient3dError):
    """A run folder is missing, incomplete or inconsistent with the request."""
