"""Shared fixtures: the real-data folder (skipped where absent) and a quiet, single-threaded torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from florence_lib.runs import data_root_or_none


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = data_root_or_none()
    if root is None:
        pytest.skip("real evaluation data not found (set FLORENCE_DATA_ROOT or provide ../shared/data)")
    return root
