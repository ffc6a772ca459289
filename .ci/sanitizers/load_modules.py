"""Run pytest with navcuda's native modules replaced by sanitizer builds (used by .ci/sanitize):
navcuda._C by $NAVCUDA_C_SO and navcuda._C_emu by $NAVCUDA_EMU_SO, each where set."""

from __future__ import annotations

import importlib.util
import os
import sys

import navcuda


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(f"navcuda.{name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[f"navcuda.{name}"] = module
    setattr(navcuda, name, module)
    return module


modules = {
    name: _load(name, os.environ[var])
    for name, var in (("_C", "NAVCUDA_C_SO"), ("_C_emu", "NAVCUDA_EMU_SO"))
    if os.environ.get(var)
}

if sys.argv[1:2] == ["--canary"]:
    # One element past the end of a 10-element tensor (bias_act of 11 elements, the buffers'
    # sizes overstated so that the entry point's checks pass): the sanitizer must abort here.
    # argv[2]: which module's kernel, "_C" (C++ CPU) or "_C_emu" (CUDA).
    import torch

    from navcuda.ops import _native

    x, y = torch.randn(10), torch.empty(10)
    xb, yb = (x.data_ptr(), 11 * 4), (y.data_ptr(), 11 * 4)
    args = (xb, None, yb, 1, 1, 11, _native.dtype_code(x.dtype), 0, 0.2, 1.0, -1.0)
    if sys.argv[2] == "_C":
        modules["_C"].bias_act_cpu(*args)
    else:
        modules["_C_emu"].bias_act_cuda(*args, 0)
    raise SystemExit(f"canary: the out-of-bounds read in {sys.argv[2]} was NOT detected")

import pytest  # noqa: E402

sys.exit(pytest.main(sys.argv[1:]))
