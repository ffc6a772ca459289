"""upfirdn2d upsampling (up > 1, down = 1): the transposed depthwise convolution against the
reference (zero insertion, padding, depthwise convolution)."""

from __future__ import annotations

import importlib
import itertools

import pytest
import torch
import torch.autograd.forward_ad as fwAD

from navcuda.models.stylegan2_layers import Upsample
from navcuda.ops import _native
from navcuda.ops.upfirdn2d import make_filter, ref_upfirdn2d, upfirdn2d

# The module itself (navcuda.ops re-exports the function under the module's name).
U = importlib.import_module("navcuda.ops.upfirdn2d")

# (B, C, H, W, up, filter, pad). Direct (one conv_transpose2d, nothing after): the generator's
# skip upsampling (up 2, [1,3,3,1] with gain 4, pads (2, 1)) and its up = 4 variant (gain 16,
# pads (3, 0)), batch 1 with odd H != W, odd and even, separable and non-separable, non-square
# filters, equal and zero pads, a 1x1 filter (pure zero insertion) and negative pads (padding
# beyond kh - 1). Post-processed (conv_transpose2d, then F.pad crops or zero-pads): p0 > kh - 1,
# p1 > p0, p1 < p0 - up + 1, and a crop so deep that the full transposed conv is taken.
DIRECT = [
    (2, 3, 9, 9, 2, "blur", (2, 1)),
    (1, 3, 7, 10, 2, "blur", (2, 1)),
    (2, 3, 5, 6, 4, "blur4", (3, 0)),
    (2, 2, 5, 6, 2, "rand3x3", (1, 1)),
    (2, 3, 6, 5, 2, "rand3x3", (0, 0)),
    (1, 4, 5, 7, 4, "rand2x5", (1, 1)),
    (2, 3, 9, 8, 2, "sep3x5", (2, 1)),
    (1, 2, 5, 6, 4, "rand4x4", (3, 1)),
    (2, 1, 6, 6, 2, "one", (0, 0)),
    (2, 3, 6, 6, 2, "blur", (-1, -2)),
]
POST = [
    (1, 2, 5, 6, 2, "blur", (5, 2)),
    (2, 3, 5, 5, 2, "rand3x3", (0, 3)),
    (1, 3, 6, 7, 2, "blur", (2, -1)),
    (1, 2, 4, 4, 2, "blur", (-3, 3)),
    (1, 2, 3, 5, 4, "rand2x5", (4, 7)),
]
CASES = DIRECT + POST

# Tiny convolutions are many times slower with 2 OpenMP threads on a small, busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _filter(kind: str, dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:
    if kind == "blur":
        return make_filter((1, 3, 3, 1), 4).to(dtype)
    if kind == "blur4":
        return make_filter((1, 3, 3, 1), 16).to(dtype)
    if kind == "one":
        return torch.full((1, 1), 4.0, dtype=dtype)
    if kind == "sep3x5":
        u, v = torch.rand(3, generator=g, dtype=dtype), torch.randn(5, generator=g, dtype=dtype)
        return torch.outer(u, v)
    kh, kw = {"rand3x3": (3, 3), "rand2x5": (2, 5), "rand4x4": (4, 4)}[kind]
    return torch.randn(kh, kw, generator=g, dtype=dtype)


def _make(case, dtype, seed=0, layout="contiguous"):
    b, c, h, w, up, fk, pad = case
    g = torch.Generator().manual_seed(seed)
    if layout == "noncontig":  # a transposed view: neither NCHW- nor NHWC-contiguous
        x = torch.randn(b, c, w, h, generator=g, dtype=dtype).transpose(2, 3)
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            assert c == 1 or not x.is_contiguous()
    return x, _filter(fk, dtype, g), up, pad


def _run_fast(x, f, up, pad):
    """The transposed path, called directly (the dispatcher could pick the reference)."""
    plan = U._transposed_plan(x.shape[2], x.shape[3], f.shape[0], f.shape[1], up, pad)
    assert plan is not None
    return U._transposed_upfirdn2d(x, f, up, plan)


# ------------------------------------------------------------------------- geometry


def test_generator_geometry_is_one_transposed_conv():
    # The skip branch: P = kh - 1 - p0 = 1, output_padding = up - 1 + p1 - p0 = 0, nothing after.
    assert U._transposed_plan(32, 32, 4, 4, 2, (2, 1)) == ((1, 1), (0, 0), (0, 0, 0, 0))
    # Its up = 4 variant: pads (3, 0) -> P = 0, output_padding = 3 + 0 - 3 = 0.
    up4 = Upsample((1, 3, 3, 1), factor=4)
    assert up4.pad == (3, 0)
    assert U._transposed_plan(8, 8, 4, 4, 4, up4.pad) == ((0, 0), (0, 0), (0, 0, 0, 0))
    # Unequal pads one apart with up = 4: output_padding 3 - 1 = 2, still one conv.
    assert U._transposed_plan(8, 8, 4, 4, 4, (2, 1)) == ((1, 1), (2, 2), (0, 0, 0, 0))


@pytest.mark.parametrize("case", DIRECT)
def test_direct_cases_need_no_post_processing(case):
    _, _, h, w, up, fk, pad = case
    kh, kw = _filter(fk, torch.float64, torch.Generator().manual_seed(0)).shape
    plan = U._transposed_plan(h, w, kh, kw, up, pad)
    assert plan is not None and plan[2] == (0, 0, 0, 0)


@pytest.mark.parametrize("case", POST)
def test_post_cases_crop_or_pad(case):
    _, _, h, w, up, fk, pad = case
    kh, kw = _filter(fk, torch.float64, torch.Generator().manual_seed(0)).shape
    plan = U._transposed_plan(h, w, kh, kw, up, pad)
    assert plan is not None and plan[2] != (0, 0, 0, 0)


@pytest.mark.parametrize("up", [2, 3, 4])
def test_every_small_geometry_matches_the_reference(up):
    """Exhaustive over small geometries, pads from deep crops to wide zero margins: the plan is
    exact wherever it does not defer to the reference, defers only where it must (an empty
    output, or a window outside the filtered image), and is a single transposed conv exactly
    when ``p0 <= k - 1`` and ``p0 - up + 1 <= p1 <= p0`` on both axes."""
    g = torch.Generator().manual_seed(up)
    n_fast = 0
    for (kh, kw), p0, p1 in itertools.product(
        [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 3)], range(-5, 8), range(-5, 8)
    ):
        x = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
        f = torch.randn(kh, kw, generator=g, dtype=torch.float64)
        plan = U._transposed_plan(3, 4, kh, kw, up, (p0, p1))
        try:
            ref = ref_upfirdn2d(x, f, up=up, pad=(p0, p1))
        except RuntimeError:  # output too small for the reference's conv2d
            ref = None
        where = f"up={up} f={kh}x{kw} pad=({p0}, {p1})"
        if plan is None:
            # Deferred: an empty output, or a window that misses [0, (n - 1) * up + k) on an axis.
            empty = ref is None or ref.numel() == 0
            misses = any(
                k - 1 - p0 >= (n - 1) * up + k or n * up + p1 <= 0 for n, k in ((3, kh), (4, kw))
            )
            assert empty or misses, where
            if ref is not None:
                assert torch.count_nonzero(ref) == 0, where
            continue
        assert ref is not None, where
        direct = p0 <= min(kh, kw) - 1 and p0 - up + 1 <= p1 <= p0
        assert (plan[2] == (0, 0, 0, 0)) == direct, where
        y = U._transposed_upfirdn2d(x, f, up, plan)
        assert y.shape == ref.shape, where
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12, msg=where)
        n_fast += 1
    assert n_fast > 600  # the loop really exercised the fast path (~60-70% of the geometries)


# ------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["contiguous", "noncontig", "channels_last"])
def test_matches_reference_float64(case, layout):
    x, f, up, pad = _make(case, torch.float64, layout=layout)
    x.requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    y = upfirdn2d(x, f, up=up, pad=pad)
    ref = ref_upfirdn2d(xr, f, up=up, pad=pad)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, dy)
    (gr,) = torch.autograd.grad(ref, xr, dy)
    torch.testing.assert_close(gx, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float32(case):
    # float32: every output sums at most ceil(kh / up) * ceil(kw / up) <= 9 products of O(1)
    # values (taps up to gain 16 / 64 * 9), in another order than the reference's conv2d over
    # the zero-inserted image (which also adds the zeros): rounding is a few ulp of the largest
    # partial sum, ~1e-6 absolute. 1e-5 leaves room for that and still fails on any wrong tap,
    # shift or crop (errors of the order of the values themselves).
    x, f, up, pad = _make(case, torch.float32, seed=2)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [upfirdn2d(xs[0], f, up=up, pad=pad), ref_upfirdn2d(xs[1], f, up=up, pad=pad)]
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-5, atol=1e-5)
    dy = torch.randn(ys[0].shape, generator=torch.Generator().manual_seed(3))
    for y in ys:
        y.backward(dy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [DIRECT[0], DIRECT[2], DIRECT[3], POST[1], POST[3]])
def test_gradcheck_and_double_backward(case):
    b, c, h, w, up, fk, pad = case
    x, f, up, pad = _make((1, 2, min(h, 4), min(w, 5), up, fk, pad), torch.float64, seed=4)
    x.requires_grad_(True)

    def fn(v):
        return upfirdn2d(v, f, up=up, pad=pad)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", [DIRECT[0], POST[1], POST[3]])
def test_forward_mode_ad(case):
    # The Hessian's "forward" mode pushes tangents through the generator (torch.autograd.
    # forward_ad), the skip upsampling included: the JVP must be the reference's.
    x, f, up, pad = _make(case, torch.float64, seed=7)
    t = torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    tangents = []
    for fn in (upfirdn2d, ref_upfirdn2d):
        with fwAD.dual_level():
            out = fn(fwAD.make_dual(x, t), f, up=up, pad=pad)
            tangents.append(fwAD.unpack_dual(out).tangent)
    assert tangents[0] is not None
    torch.testing.assert_close(tangents[0], tangents[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_dtypes(dtype):
    # Both paths round the products and sums to 8 (bf16) or 11 (fp16) bits: compare each with the
    # float64 reference, within a few units of the dtype's epsilon times the output's scale.
    x, f, up, pad = _make(DIRECT[0], torch.float64, seed=5)
    exact = ref_upfirdn2d(x, f, up=up, pad=pad)
    y = upfirdn2d(x.to(dtype), f, up=up, pad=pad)
    ref = ref_upfirdn2d(x.to(dtype), f, up=up, pad=pad)
    assert y.dtype == dtype and y.shape == exact.shape
    tol = 8 * torch.finfo(dtype).eps * exact.abs().max().item()
    torch.testing.assert_close(y.double(), exact, rtol=0, atol=tol)
    torch.testing.assert_close(ref.double(), exact, rtol=0, atol=tol)


def test_generator_upsample_module_takes_the_transposed_path(monkeypatch):
    calls = []
    fast = U._transposed_upfirdn2d

    def spy(*args):
        calls.append(args[2])
        return fast(*args)

    monkeypatch.setattr(U, "_transposed_upfirdn2d", spy)
    m = Upsample((1, 3, 3, 1))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    y = m(x)
    assert calls == [2]
    torch.testing.assert_close(y, ref_upfirdn2d(x, m.kernel, up=2, pad=m.pad), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- which path runs


@pytest.fixture
def fast_raises(monkeypatch):
    """The transposed path raises: whatever still works ran the reference."""

    def boom(*args, **kwargs):
        raise AssertionError("the transposed path ran")

    monkeypatch.setattr(U, "_transposed_upfirdn2d", boom)


def test_auto_and_native_take_the_transposed_path(fast_raises, monkeypatch):
    monkeypatch.delenv(_native.ENV_IMPL, raising=False)
    x, f = torch.randn(1, 3, 4, 4), make_filter((1, 3, 3, 1), 4)
    for impl in ("auto", "native"):
        with pytest.raises(AssertionError, match="transposed path ran"):
            upfirdn2d(x, f, up=2, pad=(2, 1), impl=impl)


def test_auto_runs_the_reference_where_measured_faster(fast_raises, monkeypatch):
    """Where AUTO_REFERENCE names upfirdn2d for the device (CUDA as shipped; the CPU here),
    auto runs the reference and impl="native" still the transposed path."""
    monkeypatch.delenv(_native.ENV_IMPL, raising=False)
    monkeypatch.setattr(_native, "AUTO_REFERENCE", frozenset({("upfirdn2d", "cpu")}))
    x, f = torch.randn(2, 3, 5, 4, dtype=torch.float64), make_filter((1, 3, 3, 1), 4)
    y = upfirdn2d(x, f, up=2, pad=(2, 1))
    torch.testing.assert_close(y, ref_upfirdn2d(x, f, up=2, pad=(2, 1)), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="transposed path ran"):
        upfirdn2d(x, f, up=2, pad=(2, 1), impl="native")


def test_native_needs_no_compiled_module(monkeypatch):
    # Pure torch: impl="native" must not consult navcuda._C (resolve_impl would raise without it).
    def no_native(*args, **kwargs):
        raise AssertionError("resolve_impl was called")

    monkeypatch.setattr(_native, "resolve_impl", no_native)
    x, f = torch.randn(1, 3, 4, 4, dtype=torch.float64), make_filter((1, 3, 3, 1), 4)
    y = upfirdn2d(x, f, up=2, pad=(2, 1), impl="native")
    torch.testing.assert_close(y, ref_upfirdn2d(x, f, up=2, pad=(2, 1)), rtol=0, atol=1e-12)


def test_impl_ref_runs_the_reference(fast_raises, monkeypatch):
    monkeypatch.delenv(_native.ENV_IMPL, raising=False)
    x, f = torch.randn(2, 3, 5, 4, dtype=torch.float64), make_filter((1, 3, 3, 1), 4)
    y = upfirdn2d(x, f, up=2, pad=(2, 1), impl="ref")
    torch.testing.assert_close(y, ref_upfirdn2d(x, f, up=2, pad=(2, 1)), rtol=0, atol=0)


def test_env_ref_overrides_auto_only(fast_raises, monkeypatch):
    monkeypatch.setenv(_native.ENV_IMPL, "ref")
    x, f = torch.randn(2, 3, 5, 4), make_filter((1, 3, 3, 1), 4)
    upfirdn2d(x, f, up=2, pad=(2, 1))  # auto -> $NAVCUDA_IMPL=ref -> the reference
    with pytest.raises(AssertionError, match="transposed path ran"):
        upfirdn2d(x, f, up=2, pad=(2, 1), impl="native")  # an explicit argument wins


def test_bad_impl_raises(monkeypatch):
    x, f = torch.randn(1, 3, 4, 4), make_filter((1, 3, 3, 1), 4)
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(x, f, up=2, pad=(2, 1), impl="fast")
    monkeypatch.setenv(_native.ENV_IMPL, "bogus")
    with pytest.raises(ValueError, match=_native.ENV_IMPL):
        upfirdn2d(x, f, up=2, pad=(2, 1))


def test_filter_requiring_grad_runs_the_reference(fast_raises):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    f = make_filter((1, 3, 3, 1), 4).double().requires_grad_(True)
    y = upfirdn2d(x, f, up=2, pad=(2, 1))
    (gf,) = torch.autograd.grad(y.square().sum(), f)
    (gr,) = torch.autograd.grad(ref_upfirdn2d(x, f, up=2, pad=(2, 1)).square().sum(), f)
    torch.testing.assert_close(gf, gr, rtol=0, atol=0)


def test_down_with_up_runs_the_reference(fast_raises):
    x, f = torch.randn(2, 3, 5, 5), make_filter((1, 3, 3, 1), 4)
    y = upfirdn2d(x, f, up=2, down=2, pad=(2, 1))
    torch.testing.assert_close(y, ref_upfirdn2d(x, f, up=2, down=2, pad=(2, 1)), rtol=0, atol=0)


@pytest.mark.parametrize("pad", [(-9, 9), (0, -11), (-7, -7)])
def test_degenerate_windows_run_the_reference(fast_raises, pad):
    # (-9, 9): the window starts past the filtered image (all zeros); (0, -11), (-7, -7): the
    # output is empty or negative in size, and the reference's error is the one raised.
    x, f = torch.randn(1, 2, 4, 4, dtype=torch.float64), make_filter((1, 3, 3, 1), 4).double()
    assert U._transposed_plan(4, 4, 4, 4, 2, pad) is None
    try:
        ref = ref_upfirdn2d(x, f, up=2, pad=pad)
    except RuntimeError as exc:
        with pytest.raises(RuntimeError, match=str(exc).split("\n")[0][:40]):
            upfirdn2d(x, f, up=2, pad=pad)
    else:
        torch.testing.assert_close(upfirdn2d(x, f, up=2, pad=pad), ref, rtol=0, atol=0)


def test_empty_batch_and_integer_input_run_the_reference(fast_raises):
    f = make_filter((1, 3, 3, 1), 4)
    x = torch.empty(0, 3, 6, 6, requires_grad=True)
    y = upfirdn2d(x, f, up=2, pad=(2, 1))
    assert y.shape == (0, 3, 12, 12)
    y.sum().backward()
    assert x.grad.shape == x.shape
    xi = torch.arange(48, dtype=torch.int64).reshape(1, 3, 4, 4)
    fi = torch.ones(4, 4)
    torch.testing.assert_close(
        upfirdn2d(xi, fi, up=2, pad=(2, 1)), ref_upfirdn2d(xi, fi, up=2, pad=(2, 1)), rtol=0, atol=0
    )


def test_bad_shapes_raise_as_the_reference():
    with pytest.raises(ValueError, match="B, C, H, W"):
        upfirdn2d(torch.randn(3, 6, 6), torch.ones(4, 4), up=2, pad=(2, 1))
    with pytest.raises(ValueError, match="2-D filter"):
        upfirdn2d(torch.randn(1, 3, 6, 6), torch.ones(4), up=2, pad=(2, 1))


# ------------------------------------------------------------------------- memory format


@pytest.mark.parametrize("case", [DIRECT[0], POST[1]])
@pytest.mark.parametrize("layout", ["contiguous", "noncontig", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_output_memory_format_on_the_cpu(case, layout, dtype):
    """float32/bfloat16 on the CPU: the convolution runs channels-last and its result stays so
    (converting it back would cost about as much as the convolution); float64 keeps x's layout
    (NCHW for a non-contiguous x, as conv_transpose2d leaves it). The values are the
    reference's either way."""
    x, f, up, pad = _make(case, torch.float64, layout=layout)
    x = x.to(dtype)  # (.to keeps the layout)
    y = upfirdn2d(x, f, up=up, pad=pad)
    if dtype == torch.float64:
        want = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    else:
        want = torch.channels_last
    assert y.is_contiguous(memory_format=want)
    assert not y.is_contiguous(
        memory_format=torch.contiguous_format
        if want == torch.channels_last
        else torch.channels_last
    )
    ref = ref_upfirdn2d(x.double(), f.double(), up=up, pad=pad)
    tol = 8 * torch.finfo(dtype).eps * ref.abs().max().item()
    torch.testing.assert_close(y.double(), ref, rtol=0, atol=tol)


def test_generator_add_keeps_the_torgb_layout():
    """``y + upsample(skip)`` takes ``y``'s layout: an NCHW ToRGB output stays NCHW, a
    channels-last one (the CPU eval route) stays channels-last."""
    m = Upsample((1, 3, 3, 1))
    skip = torch.randn(2, 3, 8, 8)
    for fmt in (torch.contiguous_format, torch.channels_last):
        y = torch.randn(2, 3, 16, 16).contiguous(memory_format=fmt)
        assert (y + m(skip)).is_contiguous(memory_format=fmt)
        assert (y + m(skip.contiguous(memory_format=fmt))).is_contiguous(memory_format=fmt)


# ------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("case", [DIRECT[0], DIRECT[2], POST[1], POST[4]])
def test_cuda_matches_reference(case):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x, f, up, pad = _make(case, torch.float64, seed=6)
    x, f = x.cuda().requires_grad_(True), f.cuda()
    y = upfirdn2d(x, f, up=up, pad=pad, impl="native")  # auto runs the reference on CUDA
    ref = ref_upfirdn2d(x, f, up=up, pad=pad)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y)
    (g1,) = torch.autograd.grad(y, x, dy)
    (g2,) = torch.autograd.grad(ref, x, dy)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)
