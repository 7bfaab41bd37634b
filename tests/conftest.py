"""Shared fixtures: seeded generators, the shared ModelNet10 data, and few threads.

Test files mirror the package: ``test_<subpackage>_<module>.py`` tests
``orient3d/<subpackage>/<module>.py`` (``test_training_modes_search.py`` tests
``orient3d/training/modes/search.py``), ``test_<subpackage>.py`` a subpackage as a
whole, and ``test_<module>.py`` a top-level module (``test_config.py``). Helpers
shared by several files live in ``train_helpers.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Tests that set torch's thread count leave it as they found it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def torch_gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared ModelNet10 data not found at {SHARED_DATA}")
    return SHARED_DATA
