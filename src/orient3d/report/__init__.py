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

from typing import TYPE_CHECKING

from orient3d.lazy import homes, lazy_names

if TYPE_CHECKING:
    from orient3d.report.build import Report, build_report, run_labels, write_report

__all__ = ["Report", "build_report", "run_labels", "write_report"]

# Loaded on first use: .build imports matplotlib and torch; .rundata needs neither.
__getattr__, __dir__ = lazy_names(__name__, homes("orient3d.report.build", __all__))
