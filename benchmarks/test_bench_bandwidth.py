"""Achieved memory bandwidth of the fused elementwise kernels against the machine's stream
bandwidth, measured in the same run.

The tensors (``[32, 512, 32, 32]`` float32, 64 MiB each) are larger than the last-level cache, so
these kernels are memory-bound and their bytes moved / time is the figure of merit:

- ``stream triad``: ``a = b + s * c`` with torch (2 reads + 1 write): the machine's bandwidth;
- ``bias_act`` forward: read x, write y (the bias is negligible);
- ``modconv epilogue`` forward, split form ``clamp(lrelu(dcoef (y0 + t y1) + ns noise + bias))``:
  read y0, y1, write out (noise ``[B, 1, H, W]`` and the per-channel vectors are negligible), in
  NCHW and channels-last (the layout the generator runs in on the CPU).

Each case reports GB/s in ``extra_info`` and, for the fused kernels, the fraction of the triad's.
"""

from __future__ import annotations

import pytest
import torch

from navcuda.ops.bias_act import bias_act
from navcuda.ops.shifted_modconv import epilogue

SHAPE = (32, 512, 32, 32)
_BYTES = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3]
TRIAD_GBS: dict[str, float] = {}


def _gbs(benchmark, n_tensors: int) -> float:
    return n_tensors * _BYTES / benchmark.stats.stats.median / 1e9


def test_stream_triad(benchmark, device):
    b = torch.randn(SHAPE, device=device)
    c = torch.randn(SHAPE, device=device)
    a = torch.empty_like(b)
    benchmark.group = "bandwidth: stream triad (64 MiB tensors)"
    benchmark(lambda: torch.add(b, c, alpha=0.5, out=a))
    TRIAD_GBS[device.type] = _gbs(benchmark, 3)
    benchmark.extra_info["GB/s"] = TRIAD_GBS[device.type]


@pytest.mark.parametrize("impl", ["ref", "native"])
def test_bias_act_bandwidth(benchmark, device, impl):
    x = torch.randn(SHAPE, device=device)
    bias = torch.randn(SHAPE[1], device=device)
    benchmark.group = "bandwidth: bias_act fwd (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(lambda: bias_act(x, bias, act="lrelu", impl=impl))
    gbs = _gbs(benchmark, 2)
    benchmark.extra_info["GB/s"] = gbs
    if device.type in TRIAD_GBS:
        benchmark.extra_info["fraction_of_triad"] = gbs / TRIAD_GBS[device.type]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["ref", "native"])
def test_epilogue_bandwidth(benchmark, device, impl, layout):
    b, c, h, w = SHAPE
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    y0 = torch.randn(SHAPE, device=device).contiguous(memory_format=fmt)
    y1 = torch.randn(SHAPE, device=device).contiguous(memory_format=fmt)
    t = torch.randn(b, device=device)
    dcoef = torch.rand(b, c, device=device) + 0.5
    noise = torch.randn(b, 1, h, w, device=device)
    ns = torch.tensor([0.1], device=device)
    bias = torch.randn(c, device=device)
    benchmark.group = f"bandwidth: modconv epilogue fwd, {layout} (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(lambda: epilogue(y0, y1, t, dcoef, noise, ns, bias, clamp=256.0, impl=impl))
    gbs = _gbs(benchmark, 3)
    benchmark.extra_info["GB/s"] = gbs
    if device.type in TRIAD_GBS:
        benchmark.extra_info["fraction_of_triad"] = gbs / TRIAD_GBS[device.type]
