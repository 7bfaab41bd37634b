"""Compatibility: moved to :mod:`orient3d.report` (``html``, ``plots``, ``rundata``)."""
