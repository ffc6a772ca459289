"""Fixtures for the op tests."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


@pytest.fixture
def emu() -> ModuleType:
    """The test-only module running the CUDA kernel bodies on the CPU (``navcuda._C_emu``);
    skips the test where it was not built."""
    try:
        return importlib.import_module("navcuda._C_emu")
    except ImportError as exc:
        pytest.skip(f"test-only module navcuda._C_emu not built (a dev install builds it): {exc}")
