"""upfirdn2d blur (up = down = 1): native fir2d vs the pure-torch reference (forward + backward).

The blur after the transposed convolution of an upsampling layer: the conv output
``[B, C, 2H + 1, 2H + 1]`` filtered by StyleGAN2's 4x4 ``[1, 3, 3, 1]`` filter with pads (1, 1).
"""

from __future__ import annotations

import pytest
import torch
from memory import peak_memory_mb

from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

SHAPES = {"official 32x32 up-layer": (8, 512, 33, 33), "toy 64x64 up-layer": (32, 32, 65, 65)}


@pytest.mark.parametrize("impl", ["ref", "native"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_blur_fwd_bwd(benchmark, device, case, impl):
    x = torch.randn(SHAPES[case], device=device, requires_grad=True)
    f = make_filter((1, 3, 3, 1), 4).to(device)

    def run():
        y = upfirdn2d(x, f, pad=(1, 1), impl=impl)
        y.backward(torch.ones_like(y))
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    benchmark.group = f"upfirdn2d blur fwd+bwd, {case}"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark.extra_info["peak_mem_mb"] = peak_memory_mb(run, device)
    benchmark(run)
