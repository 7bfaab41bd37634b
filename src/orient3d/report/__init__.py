"""Reports and figures: everything that turns numbers into pages and pictures.

- :mod:`.build`: self-contained HTML reports of run and experiment folders
  (``build_report``, ``write_report``); reads folders only;
- :mod:`.rundata`: reading run and experiment folders for a report;
- :mod:`.html`, :mod:`.plots`: HTML building blocks and the report's own plots;
- :mod:`.figures`: the experiments' figures from arrays;
- :mod:`.render`: images of voxel grids.

The package namespace keeps the names of the former ``orient3d.report`` module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orient3d.report.build import Report, build_report, run_labels, write_report

__all__ = ["Report", "build_report", "run_labels", "write_report"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: .build imports matplotlib and torch; .rundata needs neither.
    if name in __all__:
        return getattr(importlib.import_module("orient3d.report.build"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
