"""Compatibility: moved to :mod:`orient3d.rundir.lock`; an alias of it."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("orient3d.rundir.lock")
