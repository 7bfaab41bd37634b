"""Building blocks of :mod:`orient3d.report`: run-folder loading, HTML, plots.

Imports nothing of orient3d but ``errors`` and ``stats``: a report reads run
folders only, never the model or training code.
"""
