"""Fixtures for the op tests."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch

from navcuda.ops import _native


@pytest.fixture
def emu() -> ModuleType:
    """The test-only module running the CUDA kernel bodies on the CPU (``navcuda._C_emu``);
    skips the test where it was not built."""
    try:
        return importlib.import_module("navcuda._C_emu")
    except ImportError as exc:
        pytest.skip(f"test-only module navcuda._C_emu not built (a dev install builds it): {exc}")


@pytest.fixture
def cuda_kernels() -> None:
    """Skips the test unless torch sees a CUDA device and navcuda._C can run its CUDA kernels."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not _native.has_cuda():
        pytest.skip(f"navcuda._C has no usable CUDA kernels: {_native.import_error()}")
