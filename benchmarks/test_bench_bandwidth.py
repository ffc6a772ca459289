"""Achieved memory bandwidth of the fused elementwise kernels against the machine's stream
bandwidth, measured in the same run.

The tensors (``[32, 512, 32, 32]`` float32, 64 MiB each) are larger than the last-level cache, so
these kernels are memory-bound and their bytes moved / time is the figure of merit:

- ``stream triad``: ``a = b + s * c`` with torch (2 reads + 1 write) into a preallocated ``a``:
  the machine's bandwidth; and the same triad returning a new tensor (``allocating``), as every
  op here does: on this VM the first touch of a fresh 64 MiB buffer (page faults: glibc maps
  such blocks anew each time) costs as much again as the arithmetic, so that triad reaches only
  ~8 GB/s of the ~30 GB/s. Fused kernels report the fraction of both;
- ``bias_act`` forward: read x, write y (the bias is negligible); backward (no bias gradient):
  read dy and the saved y, write dx;
- ``modconv epilogue`` forward, split form ``clamp(lrelu(dcoef (y0 + t y1) + ns noise + bias))``:
  read y0, y1, write out (noise ``[B, 1, H, W]`` and the per-channel vectors are negligible), in
  NCHW and channels-last (the layout the generator runs in on the CPU); backward (gradients of y0
  and y1): read dout, y1 (for t's gradient, computed with y1's) and the packed 2-bit mask (a
  sixteenth of a float32 tensor; one byte per element until session 9), write dy0 and dy1;
- ``fir2d`` (the blur of the upsampling layers, 4x4 filter): read x, write the output.

Bytes are the kernel's minimal traffic, counted the same for the reference (which moves more:
that is the point of fusing). Each case reports GB/s in ``extra_info`` and, for the fused kernels,
the fraction of the triad's. (``svd_shift`` is not here: it sums ``r`` products per output
element, compute-bound, and ``modconv_demod`` touches per-channel vectors only.)
"""

from __future__ import annotations

import pytest
import torch
from timing import synced

from navcuda.ops.bias_act import bias_act
from navcuda.ops.shifted_modconv import epilogue
from navcuda.ops.upfirdn2d import upfirdn2d

SHAPE = (32, 512, 32, 32)
_BYTES = 4 * SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3]
TRIAD_GBS: dict[tuple[str, str], float] = {}


def _gbs(benchmark, n_tensors: float) -> float:
    if benchmark.stats is None:  # --benchmark-disable: the call ran once, untimed
        return float("nan")
    return n_tensors * _BYTES / benchmark.stats.stats.median / 1e9


def _record(benchmark, device, n_tensors: float) -> None:
    """GB/s of ``n_tensors`` 64 MiB tensors moved per call, and the fractions of the triads'."""
    gbs = _gbs(benchmark, n_tensors)
    benchmark.extra_info["GB/s"] = gbs
    for kind, key in (("out", "fraction_of_triad"), ("allocating", "fraction_of_allocating_triad")):
        if (device.type, kind) in TRIAD_GBS:
            benchmark.extra_info[key] = gbs / TRIAD_GBS[device.type, kind]


@pytest.mark.parametrize("kind", ["out", "allocating"])
def test_stream_triad(benchmark, device, kind):
    b = torch.randn(SHAPE, device=device)
    c = torch.randn(SHAPE, device=device)
    a = torch.empty_like(b)
    benchmark.group = f"bandwidth: stream triad{', allocating' if kind == 'allocating' else ''}"
    if kind == "out":
        benchmark(synced(lambda: torch.add(b, c, alpha=0.5, out=a), device))
    else:
        benchmark(synced(lambda: torch.add(b, c, alpha=0.5), device))
    TRIAD_GBS[device.type, kind] = _gbs(benchmark, 3)
    benchmark.extra_info["GB/s"] = TRIAD_GBS[device.type, kind]


@pytest.mark.parametrize("impl", ["ref", "native"])
def test_bias_act_bandwidth(benchmark, device, impl):
    x = torch.randn(SHAPE, device=device)
    bias = torch.randn(SHAPE[1], device=device)
    benchmark.group = "bandwidth: bias_act fwd (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(synced(lambda: bias_act(x, bias, act="lrelu", impl=impl), device))
    _record(benchmark, device, 2)


@pytest.mark.parametrize("impl", ["ref", "native"])
def test_bias_act_grad_bandwidth(benchmark, device, impl):
    x = torch.randn(SHAPE, device=device, requires_grad=True)
    y = bias_act(x, None, act="lrelu", clamp=256.0, impl=impl)
    dy = torch.randn(SHAPE, device=device)
    benchmark.group = "bandwidth: bias_act bwd (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(synced(lambda: torch.autograd.grad(y, x, dy, retain_graph=True), device))
    _record(benchmark, device, 3)


def _epilogue_inputs(device, layout: str, requires_grad: bool = False):
    b, c, h, w = SHAPE
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    y0, y1 = (
        torch.randn(SHAPE, device=device)
        .contiguous(memory_format=fmt)
        .requires_grad_(requires_grad)
        for _ in range(2)
    )
    t = torch.randn(b, device=device)
    dcoef = torch.rand(b, c, device=device) + 0.5
    noise = torch.randn(b, 1, h, w, device=device)
    ns = torch.tensor([0.1], device=device)
    bias = torch.randn(c, device=device)
    return y0, y1, t, dcoef, noise, ns, bias


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["ref", "native"])
def test_epilogue_bandwidth(benchmark, device, impl, layout):
    args = _epilogue_inputs(device, layout)
    benchmark.group = f"bandwidth: modconv epilogue fwd, {layout} (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(synced(lambda: epilogue(*args, clamp=256.0, impl=impl), device))
    _record(benchmark, device, 3)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["ref", "native"])
def test_epilogue_grad_bandwidth(benchmark, device, impl, layout):
    args = _epilogue_inputs(device, layout, requires_grad=True)
    out = epilogue(*args, clamp=256.0, impl=impl)
    dout = torch.randn_like(out)
    benchmark.group = f"bandwidth: modconv epilogue bwd, {layout} (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(synced(lambda: torch.autograd.grad(out, args[:2], dout, retain_graph=True), device))
    # dout, y1, dy0, dy1 and the 2-bit mask: with y1 differentiated the kernel also sums
    # dz * y1 per plane (t's gradient), reading y1, whether or not t needs a gradient.
    _record(benchmark, device, 4 + 1 / 16)


@pytest.mark.parametrize("impl", ["ref", "native"])
def test_fir2d_bandwidth(benchmark, device, impl):
    x = torch.randn(SHAPE, device=device)
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    f = torch.outer(f, f) / 16
    benchmark.group = "bandwidth: fir2d blur fwd, 4x4 (64 MiB tensors)"
    benchmark.extra_info["role"] = "reference" if impl == "ref" else "fast"
    benchmark(synced(lambda: upfirdn2d(x, f, pad=(2, 1), impl=impl), device))
    _record(benchmark, device, 2)
