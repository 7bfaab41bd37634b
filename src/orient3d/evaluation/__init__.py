"""Measuring a trained model.

- :mod:`.protocols`: reconstruction under the test protocols (as stored, rotated,
  rotated+search, so3, so3+search) and loading a trained model from a run folder;
- :mod:`.recovery`: recovery of known cube rotations by the discrete search;
- :mod:`.continuous`: recovery of continuous rotations by pose estimation.
"""
