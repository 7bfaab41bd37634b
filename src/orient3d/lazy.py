"""Package namespaces whose names load with their modules on first use (PEP 562).

A package that re-exports names from a module importing torch, matplotlib or SciPy
would import them with the package. :func:`lazy_names` gives it the module-level
``__getattr__`` and ``__dir__`` that import each name's home module only when the
name is first read, so the command line's argument parsing stays light.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["homes", "lazy_names"]


def homes(module: str, names: Iterable[str]) -> dict[str, str]:
    """``{name: module}`` for each of ``names``: a piece of a :func:`lazy_names` mapping."""
    return dict.fromkeys(names, module)


def lazy_names(
    package: str, home: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, loading ``name`` from ``home[name]``.

    Use as ``__getattr__, __dir__ = lazy_names(__name__, {...})`` in the package's
    ``__init__``; an unknown name raises the usual :class:`AttributeError`.
    """

    def __getattr__(name: str) -> Any:
        if name in home:
            return getattr(importlib.import_module(home[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *home})

    return __getattr__, __dir__
