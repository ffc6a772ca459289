"""navcuda.build_info(): keys, types, and the truth about CUDA."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
import torch

from navcuda.build_info import build_info
from navcuda.ops import _native

NATIVE_KEYS = {
    "compiler": (str, type(None)),
    "cxx_standard": (int, type(None)),
    "openmp": bool,
    "cpu_isa": (str, type(None)),
    "libstdcxx": (str, type(None)),
    "cuda_compiled": bool,
    "cuda_version": (str, type(None)),
    "cuda_archs": list,
    "cuda_runtime_ok": bool,
    "cuda_device_count": int,
    "cuda_runtime_error": (str, type(None)),
}
PY_KEYS = {
    "native_available": bool,
    "native_import_error": (str, type(None)),
    "has_cuda": bool,
    "torch_version": str,
    "torch_cuda_available": bool,
}


def test_keys_and_types():
    info = build_info()
    for key, typ in {**NATIVE_KEYS, **PY_KEYS}.items():
        assert key in info, f"build_info() lacks {key!r}"
        assert isinstance(info[key], typ), f"{key}={info[key]!r} is not {typ}"
    assert info["torch_version"] == torch.__version__
    assert info["torch_cuda_available"] == torch.cuda.is_available()
    assert info["native_available"] == (info["native_import_error"] is None)


def test_native_module_reports_itself():
    mod = _native.native_module()
    if mod is None:
        pytest.skip(f"navcuda._C is not importable: {_native.import_error()}")
    raw = mod.build_info()
    assert set(NATIVE_KEYS) <= set(raw)
    assert raw["cxx_standard"] >= 17
    # Linux builds link the shared C++ runtime: dladdr finds std::terminate outside _C.
    assert raw["libstdcxx"] in ("shared", "private", "unknown")
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert raw["libstdcxx"] == "shared"
    assert all(isinstance(a, str) for a in raw["cuda_archs"])
    if raw["cuda_compiled"]:
        assert raw["cuda_archs"], "a CUDA build must list its architectures"
        assert raw["cuda_version"]
    else:
        assert raw["cuda_archs"] == [] and raw["cuda_version"] is None
    # has_cuda() tells the truth at run time.
    assert mod.has_cuda() == (raw["cuda_device_count"] > 0) == raw["cuda_runtime_ok"]
    if raw["cuda_runtime_error"] is not None:  # the runtime refused: say why, wherever it shows
        assert raw["cuda_compiled"] and raw["cuda_device_count"] == 0
        assert raw["cuda_runtime_error"].startswith("cudaError")
        cuda_tensor = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
        reason = _native.native_unavailable_reason("bias_act", cuda_tensor)
        assert raw["cuda_runtime_error"] in reason and raw["cuda_version"] in reason, reason
    if not torch.cuda.is_available():
        assert mod.has_cuda() is False
        assert build_info()["has_cuda"] is False


@pytest.mark.skipif(
    os.environ.get("NAVCUDA_BUILD_CHECK") != "1",
    reason="set NAVCUDA_BUILD_CHECK=1 to check the build against this machine's nvcc",
)
def test_cuda_compiled_iff_nvcc_present():
    info = build_info()
    assert info["native_available"], info["native_import_error"]
    assert info["cuda_compiled"] == (shutil.which("nvcc") is not None)
