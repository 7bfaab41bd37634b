"""The ``orient3d`` command line: one module per subcommand.

Each subcommand module has a docstring (its help), ``add_args(parser)`` and
``main(args) -> int``. Logging handlers and progress bars live here only.

Start-up: a subcommand module imports at its top only what its arguments need
(no torch, numpy, scipy or matplotlib); ``main`` imports the heavy code. So
``orient3d --help``, ``orient3d COMMAND --help`` and argument errors answer
without importing torch (``tests/test_cli_startup.py``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from orient3d import __version__
from orient3d.allocator import tune_allocator
from orient3d.errors import Orient3dError

# name -> module; the order is the order of ``orient3d --help``. Every module must
# import without torch (see the module docstring).
COMMANDS: dict[str, str] = {
    "demo": "orient3d.cli.demo",
    "data": "orient3d.cli.data",
    "train": "orient3d.cli.train",
    "evaluate": "orient3d.cli.evaluate",
    "recover": "orient3d.cli.recover",
    "orient": "orient3d.cli.orient",
    "experiment": "orient3d.cli.experiment",
    "report": "orient3d.cli.report",
    "compare": "orient3d.cli.compare",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orient3d",
        description="Learn 3D shape representations with orientation disentangled from shape.",
    )
    parser.add_argument("--version", action="version", version=f"orient3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modname in COMMANDS.items():
        # Every listed subcommand must import: a missing or broken one is an error that
        # names it, never a command quietly absent from --help.
        mod = _command_module(name, modname)
        doc = (mod.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else name,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_args(p)
        p.set_defaults(_main=mod.main)
    return parser


def _command_module(name: str, modname: str) -> ModuleType:
    try:
        return importlib.import_module(modname)
    except ImportError as err:
        raise ImportError(f"orient3d {name}: cannot import {modname}: {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Subcommands that set ``_accepts_overrides`` take dotted ``--key=value`` overrides.
        if not getattr(args, "_accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*getattr(args, "overrides", []), *extra]
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    # Before any large tensor exists: keep freed memory in the heap (see devices).
    tune_allocator()
    try:
        return int(args._main(args) or 0)
    except Orient3dError as err:
        print(f"orient3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a file the system refused: name it, no traceback
        logging.getLogger(__name__).debug("details", exc_info=True)
        print(f"orient3d {args.command}: error: {_os_message(err)}", file=sys.stderr)
        return 2


def _os_message(err: OSError) -> str:
    """``PATH: what`` for an OSError (no space left, permission denied, is a folder, ...)."""
    why = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        why = "no space left on device"
    where = err.filename if err.filename is not None else "(a file)"
    return f"{where}: {why}"


if __name__ == "__main__":
    sys.exit(main())
