"""upfirdn2d against the pure-torch reference (forward + backward).

Blur (up = down = 1): native fir2d. The blur after the transposed convolution of an upsampling
layer: the conv output ``[B, C, 2H + 1, 2H + 1]`` filtered by StyleGAN2's 4x4 ``[1, 3, 3, 1]``
filter with pads (1, 1).

Upsampling (up = 2): the transposed depthwise convolution (pure torch; channels-last on the CPU).
The generator's RGB skip branch: ``[B, 3, H, W]`` images upsampled with the ``[1, 3, 3, 1]``
filter (gain 4) and pads (2, 1).
"""

from __future__ import annotations

import pytest
import torch
from memory import benchmark_with_memory
from timing import sync

from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

SHAPES = {"official 32x32 up-layer": (8, 512, 33, 33), "toy 64x64 up-layer": (32, 32, 65, 65)}


def _fwd_bwd(shape, device, **kwargs):
    """A forward + backward of ``upfirdn2d(x, [1, 3, 3, 1] filter, **kwargs)`` on a random x."""
    x = torch.randn(shape, device=device, requires_grad=True)
    f = make_filter((1, 3, 3, 1), 4).to(device)

    def run():
        y = upfirdn2d(x, f, **kwargs)
        y.backward(torch.ones_like(y))
        sync(device)

    return run


@pytest.mark.parametrize("impl", ["ref", "native"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_blur_fwd_bwd(benchmark, device, case, impl):
    run = _fwd_bwd(SHAPES[case], device, pad=(1, 1), impl=impl)
    role = "reference" if impl == "ref" else "fast"
    benchmark_with_memory(benchmark, run, device, f"upfirdn2d blur fwd+bwd, {case}", role)


UP_SHAPES = {
    "1024-px model, last skip": (8, 3, 512, 512),
    "128-px skip": (8, 3, 128, 128),
    "toy 64-px model, last skip": (32, 3, 32, 32),
}


@pytest.mark.parametrize("impl", ["ref", "auto"])
@pytest.mark.parametrize("case", list(UP_SHAPES))
def test_up2_fwd_bwd(benchmark, device, case, impl):
    run = _fwd_bwd(UP_SHAPES[case], device, up=2, pad=(2, 1), impl=impl)
    role = "reference" if impl == "ref" else "fast"
    benchmark_with_memory(benchmark, run, device, f"upfirdn2d up=2 fwd+bwd, {case}", role)
