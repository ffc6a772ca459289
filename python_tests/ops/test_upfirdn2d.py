"""upfirdn2d: the native blur (fir2d: CPU, CUDA, the CUDA body emulated) against the reference."""

from __future__ import annotations

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.upfirdn2d import make_filter, ref_upfirdn2d, upfirdn2d

needs_native = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)

# (B, C, H, W, filter, pad): batch 1, odd channels, non-square images and filters, the generator's
# blurs (4x4, pads (2, 1) after a 3x3 transposed conv and (1, 1) in the discriminator), the
# adjoint's pads, a 1x1 filter, negative (cropping) and asymmetric pads. The CPU kernel's paths:
# separable filters (the blur, "sep3x5": two passes), others (one 2-D pass; "rand4x4" unrolled),
# and planes wider than its scratch strip (the 300-wide case: several strips per plane).
CASES = [
    (1, 3, 9, 9, "blur", (2, 1)),
    (2, 5, 7, 11, "blur", (1, 1)),
    (3, 2, 8, 6, "blur", (2, 2)),
    (2, 3, 6, 5, "rand3x3", (1, 1)),
    (1, 4, 5, 7, "rand2x5", (0, 3)),
    (2, 1, 6, 6, "one", (0, 0)),
    (2, 3, 9, 8, "rand3x3", (-1, 2)),
    (1, 2, 10, 10, "blur", (-2, -1)),
    (2, 3, 9, 8, "sep3x5", (1, 2)),
    (1, 3, 7, 9, "rand4x4", (2, 1)),
    (1, 2, 40, 300, "blur", (2, 1)),
]


def _filter(kind: str, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    if kind == "blur":
        return make_filter((1, 3, 3, 1), 4).to(dtype)
    if kind == "one":
        return torch.ones(1, 1, dtype=dtype)
    if kind == "sep3x5":
        u, v = torch.rand(3, generator=g, dtype=dtype), torch.randn(5, generator=g, dtype=dtype)
        return torch.outer(u, v)
    kh, kw = {"rand3x3": (3, 3), "rand2x5": (2, 5), "rand4x4": (4, 4)}[kind]
    return torch.randn(kh, kw, generator=g, dtype=dtype)


def _make(case, dtype, seed=0, noncontig=False):
    b, c, h, w, fk, pad = case
    g = torch.Generator().manual_seed(seed)
    if noncontig:
        x = torch.randn(b, c, w, h, generator=g, dtype=dtype).transpose(2, 3)
        assert not x.is_contiguous()
    else:
        x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    return x, _filter(fk, dtype, g), pad


@needs_native
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("noncontig", [False, True])
@pytest.mark.usefixtures("cpu_isa")
def test_native_matches_reference_float64(case, noncontig):
    x, f, pad = _make(case, torch.float64, noncontig=noncontig)
    y = upfirdn2d(x, f, pad=pad, impl="native")
    ref = ref_upfirdn2d(x, f, pad=pad)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@needs_native
@pytest.mark.parametrize("case", CASES[:5])
@pytest.mark.usefixtures("cpu_isa")
def test_native_gradcheck_and_double_backward(case):
    """First and second derivatives w.r.t. x (the discriminator's R1 penalty differentiates its
    blurs twice): the adjoint is the same op, itself differentiable."""
    x, f, pad = _make(case, torch.float64, seed=1)
    x.requires_grad_(True)

    def fn(v):
        return upfirdn2d(v, f, pad=pad, impl="native")

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@needs_native
@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("cpu_isa")
def test_native_float32_gradients_match_reference(case):
    # float32: the same products summed in a different order (per output pixel, row by row here;
    # oneDNN's depthwise conv elsewhere); 16 taps of O(1) values -> rounding ~1e-6 relative.
    x, f, pad = _make(case, torch.float32, seed=2)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [upfirdn2d(xs[0], f, pad=pad, impl="native"), ref_upfirdn2d(xs[1], f, pad=pad)]
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    dy = torch.randn(ys[0].shape, generator=torch.Generator().manual_seed(3))
    for y in ys:
        y.backward(dy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-5)


def test_filter_requiring_grad_runs_the_reference():
    x = torch.randn(2, 3, 6, 6)
    f = make_filter((1, 3, 3, 1)).requires_grad_(True)
    y = upfirdn2d(x, f, pad=(2, 1), impl="native")  # falls to the reference: f needs a gradient
    (gf,) = torch.autograd.grad(y.sum(), f)
    assert gf.shape == f.shape and torch.isfinite(gf).all()


@needs_native
def test_custom_op_registrations():
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.navcuda.fir2d.default, (x, w, 2, 2, 6, 5),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )  # fmt: skip
    meta = torch.ops.navcuda.fir2d(torch.empty(2, 3, 8, 8, device="meta"), w.float(), 1, 1, 7, 7)
    assert meta.shape == (2, 3, 7, 7) and meta.device.type == "meta"


@needs_native
def test_empty_batch():
    x = torch.empty(0, 3, 6, 6, requires_grad=True)
    y = upfirdn2d(x, make_filter((1, 3, 3, 1)), pad=(2, 1), impl="native")
    assert y.shape == (0, 3, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize(
    "x,f,pad,exc,match",
    [
        (torch.randn(3, 6, 6), torch.ones(4, 4), (1, 1), ValueError, "must have 4 dimension"),
        (torch.randn(1, 2, 6, 6), torch.ones(4), (1, 1), ValueError, "must have 2 dimension"),
        (torch.randn(1, 2, 6, 6), torch.ones(17, 17), (8, 8), ValueError, "up to 16x16"),
        (torch.randn(1, 2, 4, 4), torch.ones(4, 4), (-2, -2), ValueError, "crops more"),
        (
            torch.ones(1, 2, 4, 4, dtype=torch.int64),
            torch.ones(2, 2),
            (0, 0),
            TypeError,
            "floating",
        ),
    ],
)
def test_bad_inputs_raise_before_the_kernel(x, f, pad, exc, match):
    with pytest.raises(exc, match=match):
        upfirdn2d(x, f, pad=pad, impl="native")


# ------------------------------------------------------------------------- CUDA body on the CPU


@needs_native
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("grid,block", [(1, 1), (2, 8), (5, 32)])
@pytest.mark.usefixtures("index_width")
def test_cuda_body_emulated(case, grid, block, emu):
    x, f, pad = _make(case, torch.float64, seed=4)
    ref = ref_upfirdn2d(x, f, pad=pad)
    b, c, h, w = x.shape
    kh, kw = f.shape
    wflip = torch.flip(f, [0, 1]).contiguous()
    out = torch.full_like(ref, float("nan"))
    emu.fir2d_emu(*map(_native.buffer, (x, wflip, out)), b * c, h, w, kh, kw, pad[0],
                  pad[0], ref.shape[2], ref.shape[3], _native.dtype_code(x.dtype), grid,
                  block)  # fmt: skip
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- GPU


@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("index_width")
def test_cuda_matches_reference(case, cuda_device):
    x, f, pad = _make(case, torch.float64, seed=5)
    x, f = x.to(cuda_device).requires_grad_(True), f.to(cuda_device)
    y = upfirdn2d(x, f, pad=pad, impl="native")
    ref = ref_upfirdn2d(x, f, pad=pad)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y)
    (g1,) = torch.autograd.grad(y, x, dy)
    (g2,) = torch.autograd.grad(ref, x, dy)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------- non-finite filter taps
# (issue 22, item 3) The reference pads with zeros and convolves, so a NaN tap makes every output
# NaN (NaN * 0 is NaN) and an infinite tap gives +-inf where it meets the image, NaN (inf * 0)
# where it meets the padding. The native blur did neither: the CPU kernel's separable path lost a
# NaN tap lying off the largest tap's row and column (0 NaN outputs where the reference had 64 of
# 64) and turned an infinite tap into inf / inf = NaN factors; the CUDA kernel skipped the taps
# that fall on the padding. Pads here: none, cropping and unequal ones, which the reference pads
# explicitly. (Equal pads it hands to conv2d, whose float32 CPU kernel skips padded taps, unlike
# its float64 one: there the native blur follows the explicitly padded definition, see
# test_nonfinite_taps_with_equal_pads_follow_the_padded_definition.)
NONFINITE_PADS = [(0, 0), (2, 1), (1, 2), (-1, -1), (-1, 2)]
NONFINITE_TAPS = [float("nan"), float("inf"), float("-inf")]


def _nonfinite_filter(base: str, tap: tuple[int, int], value: float, dtype: torch.dtype):
    f = make_filter((1, 3, 3, 1) if base == "blur4" else (1, 1, 1), 4).to(dtype)  # separable
    f[tap] = value
    return f


def _check_nonfinite(x, f, pad):
    y = upfirdn2d(x, f, pad=pad, impl="native")
    ref = ref_upfirdn2d(x, f, pad=pad)
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5, equal_nan=True)


@needs_native
def test_nan_tap_of_the_issue_gives_nan_everywhere(native_path):
    x = torch.rand(1, 1, 8, 8) + 0.5
    f = make_filter((1, 3, 3, 1), 4)
    f[1, 2] = float("nan")
    y = upfirdn2d(x, f, pad=(2, 1), impl="native")
    assert ref_upfirdn2d(x, f, pad=(2, 1)).isnan().all()
    assert y.shape == (1, 1, 8, 8) and y.isnan().all()  # was: no NaN at all on the CPU


@needs_native
@pytest.mark.parametrize("value", NONFINITE_TAPS, ids=str)
@pytest.mark.parametrize("pad", NONFINITE_PADS, ids=str)
@pytest.mark.parametrize("base,tap", [("blur4", (0, 0)), ("blur4", (1, 2)), ("box3", (2, 1))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.usefixtures("cpu_isa")
def test_nonfinite_taps_match_reference_cpu(value, pad, base, tap, dtype):
    x = torch.rand(2, 3, 8, 9, dtype=dtype, generator=torch.Generator().manual_seed(0)) + 0.5
    _check_nonfinite(x, _nonfinite_filter(base, tap, value, dtype), pad)


@pytest.mark.parametrize("value", NONFINITE_TAPS, ids=str)
@pytest.mark.parametrize("pad", NONFINITE_PADS, ids=str)
@pytest.mark.parametrize("base,tap", [("blur4", (0, 0)), ("box3", (2, 1))])
def test_nonfinite_taps_match_reference_cuda(value, pad, base, tap, cuda_device):
    dtype = torch.float64
    x = torch.rand(1, 2, 8, 9, dtype=dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    f = _nonfinite_filter(base, tap, value, dtype)
    _check_nonfinite(x.to(cuda_device), f.to(cuda_device), pad)


@needs_native
@pytest.mark.parametrize("value", NONFINITE_TAPS, ids=str)
@pytest.mark.parametrize("pad", [(1, 1), (2, 2)], ids=str)
def test_nonfinite_taps_with_equal_pads_follow_the_padded_definition(value, pad, native_path):
    """Every output of the padded image filtered: the reference with the padding made explicit."""
    x = torch.rand(1, 2, 8, 9, dtype=torch.float64) + 0.5
    f = _nonfinite_filter("blur4", (0, 0), value, torch.float64)
    y = upfirdn2d(x, f, pad=pad, impl="native")
    ref = ref_upfirdn2d(torch.nn.functional.pad(x, [pad[0]] * 4), f)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert y.isnan().any()  # the corner tap meets the padding (inf * 0), or is NaN itself


# ------------------------------------------------------------------------- up / down factors


@pytest.mark.parametrize("fn", [upfirdn2d, ref_upfirdn2d])
@pytest.mark.parametrize("name", ["up", "down"])
@pytest.mark.parametrize("value", [0, -1, -3])
def test_up_and_down_below_one_are_refused(fn, name, value):
    """(issue 22, item 3) They used to run as 1."""
    x, f = torch.randn(1, 2, 6, 6), make_filter((1, 3, 3, 1))
    with pytest.raises(ValueError, match=f"upfirdn2d: {name} must be an integer >= 1, got {value}"):
        fn(x, f, pad=(1, 1), **{name: value})


@pytest.mark.parametrize("name", ["up", "down"])
@pytest.mark.parametrize("value", [2.0, True, "2"])
def test_up_and_down_must_be_integers(name, value):
    with pytest.raises(TypeError, match=f"upfirdn2d: {name} must be an integer >= 1"):
        upfirdn2d(torch.randn(1, 2, 6, 6), make_filter((1, 3, 3, 1)), pad=(1, 1), **{name: value})
