"""Run folders on disk: writing, reading, locking and checking them.

- :mod:`.runs`: config, metrics, checkpoints and metadata of one run folder;
- :mod:`.lock`: one writer per run folder;
- :mod:`.runcheck`: warnings about a finished run (stale files, bad epochs).

Imports only the config and errors: training, evaluation, experiments and the
report all read and write run folders through here.
"""
