"""What navcuda was built with and what it can use now: ``navcuda.build_info()``."""

from __future__ import annotations

from typing import Any

import torch

from navcuda.ops import _native

__all__ = ["build_info"]


def build_info() -> dict[str, Any]:
    """Build and run-time facts, for bug reports and ``navcuda info``.

    Keys: ``native_available`` (bool: ``navcuda._C`` imported), ``native_import_error`` (str or
    None), ``torch_version``, ``torch_cuda_available``, ``torch_cuda_version``, ``has_cuda`` (the
    native kernels can run on a CUDA device now), ``failed_native_ops`` (``"op/device"`` ->
    why the dispatcher stopped using that native kernel, e.g. a failed self-test), and, when
    ``_C`` imported, its own ``build_info()``: ``compiler``, ``cxx_standard``, ``openmp``,
    ``cpu_isa`` (the instruction set whose CPU kernels run: ``"avx2"`` or ``"generic"``),
    ``libstdcxx`` (``"shared"``: the process's C++ runtime; ``"private"``: the toolchain linked a
    copy into ``_C``, which works but says the build machine lacks libstdc++'s link file),
    ``cuda_compiled``, ``cuda_version``, ``cuda_compiler``, ``cuda_archs``, ``cuda_runtime_ok``,
    ``cuda_device_count``, ``cuda_runtime_error`` (why the CUDA runtime saw no device, e.g. a
    driver older than the runtime ``_C`` was built with; None when it answered). Those native
    keys are present with empty values (None / False / 0 / []) when ``_C`` did not import.
    """
    mod = _native.native_module()
    info: dict[str, Any] = {
        "compiler": None,
        "cxx_standard": None,
        "openmp": False,
        "cpu_isa": None,
        "libstdcxx": None,
        "cuda_compiled": False,
        "cuda_version": None,
        "cuda_compiler": None,
        "cuda_archs": [],
        "cuda_runtime_ok": False,
        "cuda_device_count": 0,
        "cuda_runtime_error": None,
    }
    if mod is not None:
        info.update(mod.build_info())
    info.update(
        native_available=mod is not None,
        native_import_error=_native.import_error(),
        has_cuda=_native.has_cuda(),
        torch_version=torch.__version__,
        torch_cuda_available=torch.cuda.is_available(),
        torch_cuda_version=torch.version.cuda,
        failed_native_ops={f"{op}/{dev}": r for (op, dev), r in _native.failed_ops().items()},
    )
    return info
