"""Exact and continuous geometry of voxel grids: no model, no data.

- :mod:`.groups`: the cube's rotation groups O (24) and Oh (48) acting exactly on grids;
- :mod:`.so3`: continuous rotations (trilinear resampling, SO(3) grids, 6D parameters);
- :mod:`.transforms`: general poses (rotation × shift × scale).
"""
