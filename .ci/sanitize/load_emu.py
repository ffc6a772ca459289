"""Run pytest with navcuda._C_emu replaced by the sanitizer build given in $NAVCUDA_EMU_SO
(used by .ci/sanitize-emulator; the package's own navcuda._C stays in place)."""

from __future__ import annotations

import importlib.util
import os
import sys

import navcuda

path = os.environ["NAVCUDA_EMU_SO"]
spec = importlib.util.spec_from_file_location("navcuda._C_emu", path)
if spec is None or spec.loader is None:
    raise SystemExit(f"cannot load {path}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["navcuda._C_emu"] = module
navcuda._C_emu = module  # type: ignore[attr-defined]

if sys.argv[1:2] == ["--canary"]:
    # One element past the end of a 10-element tensor: the sanitizer must abort here.
    import torch

    from navcuda.ops import _native

    x, y = torch.randn(10), torch.empty(10)
    code = _native.dtype_code(x.dtype)
    module.bias_act_cuda(x.data_ptr(), 0, y.data_ptr(), 1, 1, 11, code, 0, 0.2, 1.0, -1.0, 0)
    raise SystemExit("canary: the out-of-bounds read was NOT detected")

import pytest  # noqa: E402

sys.exit(pytest.main(sys.argv[1:]))
