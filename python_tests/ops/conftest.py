"""Fixtures for the op tests."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

from navcuda.ops import _native


@pytest.fixture
def cuda_kernels() -> None:
    """For tests of the real CUDA kernels: skips without a CUDA device or on a CPU-only build
    (``NAVCUDA_WITH_CUDA=OFF``); FAILS where torch sees a GPU and navcuda._C was compiled with
    CUDA but cannot run its kernels (a broken build must not pass as skipped)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if _native.has_cuda():
        return
    mod = _native.native_module()
    if mod is None or not mod.build_info()["cuda_compiled"]:
        pytest.skip(f"navcuda._C was built without CUDA kernels ({_native.import_error()})")
    pytest.fail(f"torch sees a GPU but navcuda._C cannot run its CUDA kernels: {mod.build_info()}")


@pytest.fixture(params=[pytest.param("gpu", marks=pytest.mark.gpu), "emulated"])
def cuda_device(request: pytest.FixtureRequest) -> torch.device:
    """The device a test of the CUDA path puts its tensors on, once per way of running that path:

    - ``gpu``: a real CUDA device (marked ``gpu``; skips or fails as :func:`cuda_kernels`);
    - ``emulated``: CPU tensors, with every native kernel call routed through ``navcuda._C``'s
      own CUDA launchers and kernels on the CPU emulator (the ``emulated_cuda`` fixture), so the
      same assertions run on machines without a GPU.
    """
    if request.param == "gpu":
        request.getfixturevalue("cuda_kernels")
        return torch.device("cuda")
    request.getfixturevalue("emulated_cuda")
    return torch.device("cpu")


@pytest.fixture(params=["generic", "avx2"])
def cpu_isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test of the CPU kernels once per instruction set ``_C`` carries them for (see
    :func:`navcuda.ops._native.set_cpu_isa`); skips one this build or CPU lacks, and restores
    the previous choice afterwards."""
    if _native.native_module() is None:
        pytest.skip(f"navcuda._C is not importable: {_native.import_error()}")
    if request.param not in _native.cpu_isas():
        pytest.skip(f"no {request.param} CPU kernels here (have {_native.cpu_isas()})")
    before = _native.cpu_isa()
    _native.set_cpu_isa(request.param)
    try:
        yield request.param
    finally:
        _native.set_cpu_isa(before)


@pytest.fixture(params=["int32", "int64"])
def index_width(request: pytest.FixtureRequest, emu: ModuleType) -> Iterator[str]:
    """Runs an emulated CUDA kernel test once with the launchers' choice for its small sizes
    (32-bit ``int`` indices) and once with the 64-bit variants forced (``set_index32_max(-1)``),
    which real launches reach only past 2^30 elements."""
    before = emu.index32_max()
    if request.param == "int64":
        emu.set_index32_max(-1)
    try:
        yield request.param
    finally:
        emu.set_index32_max(before)
