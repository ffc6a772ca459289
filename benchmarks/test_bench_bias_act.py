"""bias_act: native fused kernel vs the pure-torch reference (forward + backward)."""

from __future__ import annotations

import pytest
import torch
from memory import benchmark_with_memory
from timing import sync

from navcuda.ops.bias_act import bias_act

SHAPES = {"official 16x16 layer": (8, 512, 16, 16), "toy 64x64 layer": (32, 32, 64, 64)}


@pytest.mark.parametrize("impl", ["ref", "native"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_bias_act_fwd_bwd(benchmark, device, case, impl):
    x = torch.randn(SHAPES[case], device=device, requires_grad=True)
    b = torch.randn(SHAPES[case][1], device=device, requires_grad=True)

    def run():
        y = bias_act(x, b, act="lrelu", clamp=256.0, impl=impl)
        y.backward(torch.ones_like(y))
        sync(device)

    benchmark_with_memory(
        benchmark,
        run,
        device,
        f"bias_act fwd+bwd, {case}",
        "reference" if impl == "ref" else "fast",
    )
