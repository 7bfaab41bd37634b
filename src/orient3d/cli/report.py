"""Write a self-contained HTML report of run and/or experiment folders.

Reads the folders only (config.toml, meta.json, metrics.jsonl, results.json,
recover.json, figures/*.png; for experiments experiment.json and summary.json)
and writes one HTML file with every figure embedded, which opens in a browser
from disk with no server.

By default the report goes to RUN/report.html for a single folder, and to
./report.html for several.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="run or experiment folder"
    )
    parser.add_argument("--out", type=Path, default=None, help="the HTML file to write")


def main(args: argparse.Namespace) -> int:
    from orient3d.report import write_report

    runs: list[Path] = args.runs
    out: Path = args.out or (runs[0] / "report.html" if len(runs) == 1 else Path("report.html"))
    path = write_report(runs, out)
    print(path)
    return 0
