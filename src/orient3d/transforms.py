"""Compatibility: moved to :mod:`orient3d.geometry.transforms`; an alias of it."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("orient3d.geometry.transforms")
