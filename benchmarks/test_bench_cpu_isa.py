"""The CPU kernels' two instruction sets, generic (SSE2, the portable build flags) against AVX2 +
FMA (picked at run time where the CPU has them), as paired A/B ratios ``time(generic) /
time(avx2)``: each fused kernel alone, on the official 16x16 layer (batch 8, in cache) and on a
64 MiB tensor (memory-bound), and one whole shifted layer's forward + backward. Beside them, the
arithmetic oneDNN offers the spectrum products' convolutions: float32 against bfloat16 (AMX where
the CPU has it), time and error (:func:`test_conv_arithmetic`).

CPU only: ``--device cuda`` skips this file. The kernels' cases skip where ``_C`` has no AVX2
kernels (not x86-64, or a CPU without AVX2 + FMA).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from paired import paired_ratio

from navcuda.ops import _native
from navcuda.ops.bias_act import bias_act
from navcuda.ops.shifted_modconv import SharedShift, demod, epilogue, shifted_modconv
from navcuda.ops.svd_shift import svd_shift
from navcuda.ops.upfirdn2d import make_filter, upfirdn2d
from navcuda.shift import LayerSpace

# Official 16x16 layer, batch 8 (fits in cache), and the bandwidth file's 64 MiB tensor.
SHAPES = {"official 8x512x16x16": (8, 512, 16, 16), "64 MiB 32x512x32x32": (32, 512, 32, 32)}


@pytest.fixture
def isa_pair(device) -> Callable[[Callable[[], object]], tuple]:
    """``pair(run)`` -> (run under generic, run under avx2); restores the ISA afterwards."""
    if device.type != "cpu":
        pytest.skip("instruction sets of the CPU kernels: CPU only")
    if "avx2" not in _native.cpu_isas():
        pytest.skip(f"no AVX2 kernels here ({_native.cpu_isas()})")
    before = _native.cpu_isa()

    def pair(run):
        def under(name):
            def call():
                _native.set_cpu_isa(name)
                run()

            return call

        return under("generic"), under("avx2")

    yield pair
    _native.set_cpu_isa(before)


def _record(benchmark, group: str, generic, avx2) -> None:
    benchmark.group = f"cpu isa: {group}"
    benchmark.extra_info["role"] = "paired"
    result: dict = {}
    benchmark.pedantic(lambda: result.update(paired_ratio(generic, avx2)), rounds=1)
    benchmark.extra_info["paired_ratio"] = result
    benchmark.extra_info["meaning"] = "time(generic) / time(avx2)"


def _epilogue_args(shape, channels_last: bool, requires_grad: bool):
    b, c, h, w = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y0, y1 = (
        torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(requires_grad)
        for _ in range(2)
    )
    return (y0, y1, torch.randn(b), torch.rand(b, c) + 0.5, torch.randn(b, 1, h, w),
            torch.tensor([0.1]), torch.randn(c))  # fmt: skip


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_epilogue_isa(benchmark, isa_pair, case, layout):
    args = _epilogue_args(SHAPES[case], layout == "channels_last", requires_grad=True)
    out = epilogue(*args, clamp=256.0, impl="native")
    dout = torch.randn_like(out)

    def run():
        y = epilogue(*args, clamp=256.0, impl="native")
        torch.autograd.grad(y, args[:2], dout)

    _record(benchmark, f"modconv epilogue fwd+bwd, {layout}, {case}", *isa_pair(run))


@pytest.mark.parametrize("case", list(SHAPES))
def test_bias_act_isa(benchmark, isa_pair, case):
    x = torch.randn(SHAPES[case], requires_grad=True)
    bias = torch.randn(SHAPES[case][1])
    dy = torch.randn(SHAPES[case])

    def run():
        torch.autograd.grad(bias_act(x, bias, act="lrelu", clamp=256.0, impl="native"), x, dy)

    _record(benchmark, f"bias_act fwd+bwd, {case}", *isa_pair(run))


@pytest.mark.parametrize("case", list(SHAPES))
def test_fir2d_isa(benchmark, isa_pair, case):
    b, c, h, w = SHAPES[case]
    x = torch.randn(b, c, 2 * h + 1, 2 * w + 1)  # the blur after an up-layer's transposed conv
    f = make_filter((1, 3, 3, 1), 4)
    _record(benchmark, f"fir2d blur fwd, {case}",
            *isa_pair(lambda: upfirdn2d(x, f, pad=(1, 1), impl="native")))  # fmt: skip


def test_demod_isa(benchmark, isa_pair):
    b, o, i, k = 8, 512, 512, 4  # official layer, 4 split directions
    s = torch.randn(b, i, requires_grad=True)
    t = torch.randn(b, requires_grad=True)
    q0 = torch.rand(1, o, i)
    q1, q2 = torch.randn(k, o, i), torch.rand(k, o, i)
    index = torch.arange(b) % k

    def run():
        d = demod(s, q0, q1, q2, t, index, scale2=1 / 9, impl="native")
        torch.autograd.grad(d.sum(), (s, t))

    _record(benchmark, "demod fwd+bwd (split, 4 directions), official 8x512x512", *isa_pair(run))


def test_svd_shift_isa(benchmark, isa_pair):
    w = torch.randn(512, 512, 3, 3)
    space = LayerSpace(w)
    u, vh = space.u.float(), space.vh.float()
    w.requires_grad_(True)
    t = torch.randn(8, requires_grad=True)
    d = torch.randn(8, space.rank, requires_grad=True)

    def run():
        y = svd_shift(w, u, vh, t, d, impl="native")
        y.backward(torch.ones_like(y))

    _record(benchmark, "svd_shift fwd+bwd, official 8x512x512x3x3", *isa_pair(run))


def test_shared_shift_layer_isa(benchmark, isa_pair):
    """One whole shifted layer (shared shift, the HVP case): convolutions through oneDNN, so the
    kernels' gain is diluted by what they do not touch."""
    gen = torch.Generator().manual_seed(0)
    b, c, r = 8, 512, 16
    x = torch.randn(b, c, r, r, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3, generator=gen)
    styles = torch.randn(b, c, generator=gen) * 0.3 + 1
    delta = (0.1 * torch.randn(c, c, 3, 3, generator=gen)).requires_grad_(True)
    noise = torch.randn(1, 1, r, r, generator=gen)
    bias = 0.1 * torch.randn(c, generator=gen)
    gy = torch.randn(b, c, r, r, generator=gen)

    def run():
        y = shifted_modconv(x, w, styles, SharedShift(delta), noise=noise, noise_strength=0.1,
                            bias=bias, strategy="shared")  # fmt: skip
        torch.autograd.grad(y, delta, gy)

    _record(benchmark, "shifted_modconv fwd+bwd, shared shift, official layer", *isa_pair(run))


@pytest.mark.parametrize("arithmetic", ["bfloat16 tensors", "float32 tensors, bf16 math"])
def test_conv_arithmetic(benchmark, device, arithmetic):
    """The spectrum products' hottest convolution (issue 26's 512-channel 32x32 3x3 layer,
    batch 8, channels-last; oneDNN, not our kernels) in float32 against bfloat16 arithmetic:
    ``time(float32) / time(bf16)`` and each one's relative error against float64. bf16 runs on
    AMX / AVX-512-BF16 where the CPU has them, so this bounds what cheaper arithmetic could give
    the products (``benchmarks/RESULTS.md``, issue 26) and what it would cost in accuracy."""
    if device.type != "cpu":
        pytest.skip("oneDNN's CPU arithmetic: CPU only")
    conv = torch.backends.mkldnn.conv
    if arithmetic != "bfloat16 tensors" and not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no torch.backends.mkldnn.conv.fp32_precision")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 512, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(512, 512, 3, 3, generator=gen) / 48  # unit-variance outputs
    exact = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)

    def f32():
        return torch.nn.functional.conv2d(x, w, padding=1)

    if arithmetic == "bfloat16 tensors":
        xb, wb = x.bfloat16(), w.bfloat16()

        def bf16():
            return torch.nn.functional.conv2d(xb, wb, padding=1)
    else:
        before = conv.fp32_precision

        def bf16():
            conv.fp32_precision = "bf16"
            try:
                return f32()
            finally:
                conv.fp32_precision = before

    def err(y):
        return float((y.double() - exact).norm() / exact.norm())

    benchmark.extra_info.update(cpu_capability=torch.backends.cpu.get_cpu_capability(),
                                err_float32=err(f32()), err_bf16=err(bf16()))  # fmt: skip
    _record(benchmark, f"conv 8x512x32x32 3x3, float32 vs {arithmetic}", f32, bf16)
    benchmark.extra_info["meaning"] = "time(float32) / time(bf16 arithmetic)"
