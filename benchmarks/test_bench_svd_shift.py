"""svd_shift: per-sample shifted kernels W + t_b U diag(d_b) Vh, native vs reference."""

from __future__ import annotations

import pytest
import torch
from memory import benchmark_with_memory
from timing import sync

from navcuda.ops.svd_shift import svd_shift
from navcuda.shift import LayerSpace

# (B, out, in, k): the official 16x16 layer (batch 8) and the toy layer (batch 32).
SHAPES = {"official 512ch, B=8": (8, 512, 512, 3), "toy 64ch, B=32": (32, 64, 64, 3)}


@pytest.mark.parametrize("impl", ["ref", "native"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_svd_shift_fwd_bwd(benchmark, device, case, impl):
    b, o, i, k = SHAPES[case]
    w = torch.randn(o, i, k, k)
    space = LayerSpace(w)
    u, vh = space.u.float().to(device), space.vh.float().to(device)
    w = w.to(device).requires_grad_(True)
    t = torch.randn(b, device=device, requires_grad=True)
    d = torch.randn(b, space.rank, device=device, requires_grad=True)

    def run():
        y = svd_shift(w, u, vh, t, d, impl=impl)
        y.backward(torch.ones_like(y))
        sync(device)

    benchmark_with_memory(
        benchmark,
        run,
        device,
        f"svd_shift fwd+bwd, {case}",
        "reference" if impl == "ref" else "fast",
    )
