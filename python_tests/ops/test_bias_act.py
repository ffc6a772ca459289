"""bias_act: native kernels (CPU, CUDA) against the pure-torch reference, autograd, dispatch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.bias_act import bias_act, ref_bias_act

needs_native = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)

# float32 tolerances: both paths evaluate the same expression in the same order
# ((x + b) -> slope -> gain -> clamp, and dy * gain * slope for the gradient), so results agree
# to the last bit on this machine; rtol 1e-5 / atol 1e-6 leaves room for a compiler that contracts
# a multiply-add into an FMA, while still catching any wrong index, slope or mask (errors ~1e-1).
F32_TOL = dict(rtol=1e-5, atol=1e-6)

# (shape, dim): rank 1-4, odd sizes, batch 1, bias along the first, middle and last dimension.
CASES = [
    ((7,), 0),
    ((1, 3), 1),
    ((5, 13), 1),
    ((6, 4), 0),
    ((2, 3, 11), -1),
    ((1, 5, 3, 3), 1),
    ((3, 7, 5, 9), 1),
    ((2, 4, 5, 3), 2),
    ((4, 3, 2, 17), 3),
]


def _make(shape, dim, dtype, device="cpu", noncontig=False, seed=0):
    """Random x (optionally a non-contiguous view) and b; values spread to hit the clamp."""
    g = torch.Generator().manual_seed(seed)
    if noncontig:
        # A view with the requested shape whose last dims are transposed: strides not contiguous.
        big = torch.randn(*shape[:-1], shape[-1] * 2, generator=g, dtype=dtype) * 2
        x = big[..., ::2]
        assert not x.is_contiguous() or x.numel() <= 1
    else:
        x = torch.randn(*shape, generator=g, dtype=dtype) * 2
    b = torch.randn(shape[dim], generator=g, dtype=dtype)
    return x.to(device), b.to(device)


def _compare(shape, dim, act, use_bias, clamp, noncontig, device):
    x, b = _make(shape, dim, torch.float32, device, noncontig)
    b = b if use_bias else None
    xs = [x.detach().clone().requires_grad_(True) for _ in range(2)]
    bs = [None if b is None else b.detach().clone().requires_grad_(True) for _ in range(2)]
    if noncontig:  # keep the non-contiguous layout for the op under test
        xs[0] = x.detach().requires_grad_(True)
    y_nat = bias_act(xs[0], bs[0], dim=dim, act=act, clamp=clamp, impl="native")
    y_ref = ref_bias_act(xs[1], bs[1], dim=dim, act=act, clamp=clamp)
    assert y_nat.shape == x.shape and y_nat.dtype == x.dtype and y_nat.device == x.device
    torch.testing.assert_close(y_nat, y_ref, **F32_TOL)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device)
    y_nat.backward(dy)
    y_ref.backward(dy)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **F32_TOL)
    if use_bias:
        torch.testing.assert_close(bs[0].grad, bs[1].grad, **F32_TOL)


@needs_native
@pytest.mark.parametrize("shape,dim", CASES)
@pytest.mark.parametrize("act", ["linear", "lrelu"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("clamp", [None, 1.5])
@pytest.mark.usefixtures("cpu_isa")
def test_native_cpu_matches_ref(shape, dim, act, use_bias, clamp):
    _compare(shape, dim, act, use_bias, clamp, noncontig=False, device="cpu")


@needs_native
@pytest.mark.parametrize("shape,dim", [((5, 13), 1), ((3, 7, 5, 9), 1), ((4, 3, 2, 17), 3)])
@pytest.mark.parametrize("act", ["linear", "lrelu"])
@pytest.mark.usefixtures("cpu_isa")
def test_native_cpu_noncontiguous(shape, dim, act):
    _compare(shape, dim, act, use_bias=True, clamp=1.5, noncontig=True, device="cpu")


@needs_native
@pytest.mark.usefixtures("cpu_isa")
def test_native_cpu_large_parallel():
    """Above the OpenMP threshold (both the inner==1 and the row layouts)."""
    for shape, dim in [((300, 257), 1), ((2, 64, 33, 31), 1)]:
        _compare(shape, dim, "lrelu", use_bias=True, clamp=0.7, noncontig=False, device="cpu")


@needs_native
def test_native_path_really_runs(monkeypatch, fresh_dispatch):
    """impl="auto" on float32 CPU runs the native kernels (forward and backward)."""
    calls = []
    real = _native.run_kernel
    monkeypatch.setattr(
        _native, "run_kernel", lambda name, *a: (calls.append(name), real(name, *a))
    )
    x = torch.randn(2, 3, 4, requires_grad=True)
    bias_act(x, torch.randn(3), act="lrelu").sum().backward()
    assert calls == ["bias_act", "bias_act_grad"]


def test_default_gain_alpha_and_clamp_semantics():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    torch.testing.assert_close(ref_bias_act(x, act="linear"), x)
    want = torch.tensor([[-0.4, -0.1, 0.0, 0.5, 3.0]]) * math.sqrt(2)
    torch.testing.assert_close(ref_bias_act(x, dim=0, act="lrelu"), want)
    torch.testing.assert_close(
        ref_bias_act(x, act="lrelu", gain=1.0, alpha=0.1, clamp=1.0),
        torch.tensor([[-0.2, -0.05, 0.0, 0.5, 1.0]]),
    )
    if _native.native_module() is not None:
        for kw in [dict(act="linear"), dict(act="lrelu", clamp=2.0), dict(act="lrelu", gain=-1.0)]:
            torch.testing.assert_close(
                bias_act(x, impl="native", **kw), ref_bias_act(x, **kw), rtol=0, atol=0
            )


@needs_native
@pytest.mark.parametrize("act", ["linear", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 0.8])
@pytest.mark.parametrize("shape,dim", [((2, 3, 4), 1), ((5, 3), 1), ((4,), 0), ((3, 2, 5), 2)])
@pytest.mark.usefixtures("cpu_isa")
def test_gradcheck_and_gradgradcheck_float64(act, clamp, shape, dim):
    x, b = _make(shape, dim, torch.float64)
    x = (x * 0.5).requires_grad_(True)  # keep most values away from the clamp and the kink
    b = b.requires_grad_(True)

    def f(x, b):
        return bias_act(x, b, dim=dim, act=act, alpha=0.3, gain=1.7, clamp=clamp, impl="native")

    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))


@needs_native
def test_double_backward_r1_style():
    """R1 penalty: gradient of ||d out / d x||^2 w.r.t. x and b, native against reference."""
    x0, b0 = _make((3, 4, 5, 5), 1, torch.float64)
    grads = []
    native = lambda x, b: bias_act(x, b, act="lrelu", clamp=1.0, impl="native")  # noqa: E731
    ref = lambda x, b: ref_bias_act(x, b, act="lrelu", clamp=1.0)  # noqa: E731
    for fn in (native, ref):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = fn(x, b)
        out = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        penalty = (gx**2).sum() + (gx * x).sum()
        # d penalty / d b is zero a.e. (the slope is piecewise constant); the native graph does
        # not even reach b, so let unused inputs count as zero gradients.
        grads.append(
            torch.autograd.grad(penalty, (x, b), allow_unused=True, materialize_grads=True)
        )
    torch.testing.assert_close(grads[0], grads[1])


@needs_native
def test_custom_op_registrations():
    x = torch.randn(2, 3, 5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    torch.library.opcheck(
        torch.ops.navcuda.bias_act.default, (x, b, 1, "lrelu", 0.2, 1.4, 0.5),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )  # fmt: skip
    y = torch.randn(2, 3, 5)
    torch.library.opcheck(
        torch.ops.navcuda.bias_act_grad.default, (torch.randn(2, 3, 5), y, "lrelu", 0.2, 1.4, 0.5),
        test_utils=("test_schema", "test_faketensor"),
    )  # fmt: skip
    meta = torch.ops.navcuda.bias_act(torch.empty(4, 3, 7, device="meta"), None, 1, "linear",
                                      0.2, 1.0, -1.0)  # fmt: skip
    assert meta.shape == (4, 3, 7) and meta.device.type == "meta"


@needs_native
def test_empty_tensor():
    x = torch.empty(0, 3, requires_grad=True)
    y = bias_act(x, torch.zeros(3), act="lrelu", impl="native")
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 3)


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn", [bias_act, ref_bias_act])
def test_bad_inputs_raise_clear_errors(fn):
    x = torch.randn(2, 3, 4)
    with pytest.raises(
        TypeError, match=r"x must have dtype float16, bfloat16, float32 or float64, got torch.int64"
    ):
        fn(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"b must have shape \[3\], got \[4\]"):
        fn(x, torch.zeros(4))
    with pytest.raises(ValueError, match=r"b must have shape \[3\], got \[1, 3\]"):
        fn(x, torch.zeros(1, 3))
    with pytest.raises(TypeError, match="b has dtype torch.float64 but x has torch.float32"):
        fn(x, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="b is on meta but x is on cpu"):
        fn(x, torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match=r"dim=3 is out of range.*-3 <= dim < 3"):
        fn(x, dim=3)
    with pytest.raises(ValueError, match="dim=-4 is out of range"):
        fn(x, dim=-4)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        fn(torch.tensor(1.0))
    with pytest.raises(ValueError, match="act must be one of"):
        fn(x, act="relu6")
    with pytest.raises(ValueError, match="clamp must be None or >= 0"):
        fn(x, clamp=-1.0)


def test_bad_impl_argument():
    with pytest.raises(ValueError, match="impl must be one of"):
        bias_act(torch.randn(2, 3), impl="cuda")


# ------------------------------------------------------------------------- dispatch


@pytest.fixture
def fresh_dispatch(monkeypatch):
    """No NAVCUDA_IMPL from the caller's environment, no remembered warnings or failures."""
    monkeypatch.delenv("NAVCUDA_IMPL", raising=False)
    _native._reset_fallback_warnings()
    yield
    _native._reset_fallback_warnings()
    _native.clear_failed("bias_act")


def test_env_forces_ref(monkeypatch, fresh_dispatch):
    def boom(*args):
        raise AssertionError("native kernel called although NAVCUDA_IMPL=ref")

    monkeypatch.setenv("NAVCUDA_IMPL", "ref")
    monkeypatch.setattr(_native, "run_kernel", boom)
    x = torch.randn(2, 3)
    assert _native.resolve_impl("bias_act", "auto", x) == "ref"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forcing ref is deliberate: no warning
        torch.testing.assert_close(bias_act(x, act="lrelu"), ref_bias_act(x, act="lrelu"))


def test_env_invalid_value(monkeypatch):
    monkeypatch.setenv("NAVCUDA_IMPL", "fast")
    with pytest.raises(ValueError, match="NAVCUDA_IMPL must be one of"):
        bias_act(torch.randn(2, 3))


@needs_native
def test_env_native_and_explicit_arguments(monkeypatch, fresh_dispatch):
    x = torch.randn(2, 3)
    monkeypatch.setenv("NAVCUDA_IMPL", "native")
    assert _native.resolve_impl("bias_act", "auto", x) == "native"
    with pytest.raises(RuntimeError, match="impl='native' was requested.*float16"):
        bias_act(x.half())
    monkeypatch.setenv("NAVCUDA_IMPL", "ref")
    assert _native.resolve_impl("bias_act", "native", x) == "native"  # the argument wins


@needs_native
def test_auto_runs_channels_last_images_on_torch(fresh_dispatch):
    """The native image kernels read NCHW: ``auto`` runs a channels-last 4-D tensor on torch's
    layout-preserving reference, silently (a choice, not a fallback); ``by_layout=False`` and
    an explicit ``native`` still pick the kernel; a tensor that is both layouts stays native."""
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.resolve_impl("bias_act", "auto", x) == "ref"
        y = bias_act(x, torch.randn(3), act="lrelu", dim=1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert _native.resolve_impl("bias_act", "auto", x, by_layout=False) == "native"
    assert _native.resolve_impl("bias_act", "native", x) == "native"
    assert _native.resolve_impl("bias_act", "auto", x.contiguous()) == "native"
    both = torch.randn(2, 3, 1, 1)  # NCHW- and channels-last-contiguous at once
    assert _native.resolve_impl("bias_act", "auto", both) == "native"


def test_fallback_warns_once_for_unsupported_dtype(fresh_dispatch):
    x = torch.randn(2, 3, dtype=torch.float16)
    with pytest.warns(_native.NativeFallbackWarning, match="bias_act.*float16"):
        y = bias_act(x, torch.randn(3, dtype=torch.float16), act="lrelu")
    assert y.dtype == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bias_act(x)  # same (op, reason): no second warning
    with pytest.raises(RuntimeError, match="impl='native' was requested"):
        bias_act(x, impl="native")


@needs_native
def test_auto_prefers_the_reference_where_measured_faster(fresh_dispatch, monkeypatch):
    """An (op, device type) in AUTO_REFERENCE: auto runs the reference there, by choice (no
    warning); impl="native" and NAVCUDA_IMPL=native still run the kernel."""
    monkeypatch.delenv(_native.ENV_IMPL, raising=False)
    x = torch.randn(2, 3)
    assert _native.resolve_impl("bias_act", "auto", x) == "native"
    monkeypatch.setattr(_native, "AUTO_REFERENCE", frozenset({("bias_act", "cpu")}))
    assert _native.auto_prefers_reference("bias_act", "cpu")
    assert not _native.auto_prefers_reference("bias_act", "cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.resolve_impl("bias_act", "auto", x) == "ref"
    assert _native.resolve_impl("bias_act", "native", x) == "native"
    monkeypatch.setenv(_native.ENV_IMPL, "native")
    assert _native.resolve_impl("bias_act", "auto", x) == "native"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("op", ["svd_shift", "upfirdn2d", "bias_act"])
def test_auto_runs_torch_on_cuda_where_it_was_faster(op, fresh_dispatch, monkeypatch):
    monkeypatch.delenv(_native.ENV_IMPL, raising=False)
    assert _native.resolve_impl(op, "auto", torch.zeros(2, 3, device="cuda")) == "ref"


@needs_native
def test_mark_failed_falls_back_with_warning(fresh_dispatch):
    x = torch.randn(2, 3)
    _native.mark_failed("bias_act", "cpu", "selftest mismatch")
    with pytest.warns(_native.NativeFallbackWarning, match="marked failed on cpu: selftest"):
        assert _native.resolve_impl("bias_act", "auto", x) == "ref"
    with pytest.raises(RuntimeError, match="selftest mismatch"):
        bias_act(x, impl="native")
    _native.clear_failed("bias_act", "cpu")
    assert _native.resolve_impl("bias_act", "auto", x) == "native"


def test_cuda_tensor_without_native_cuda_raises_or_falls_back(fresh_dispatch):
    if _native.has_cuda() or not torch.cuda.is_available():
        pytest.skip("only meaningful when torch sees a GPU but navcuda._C cannot use it")
    with pytest.raises(RuntimeError, match="impl='native'"):
        bias_act(torch.randn(2, 3, device="cuda"), impl="native")


# ------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("shape,dim", CASES)
@pytest.mark.parametrize("act", ["linear", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 1.5])
def test_native_cuda_matches_ref(shape, dim, act, clamp, cuda_device):
    _compare(shape, dim, act, True, clamp, noncontig=False, device=cuda_device)
    _compare(shape, dim, act, False, clamp, noncontig=True, device=cuda_device)


def test_native_cuda_gradgradcheck(cuda_device):
    x, b = _make((2, 5, 3, 3), 1, torch.float64, device=cuda_device)
    x, b = x.requires_grad_(True), b.requires_grad_(True)

    def f(x, b):
        return bias_act(x, b, act="lrelu", clamp=2.0, impl="native")

    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))


@pytest.mark.gpu
def test_native_cuda_runs_on_the_current_stream(cuda_kernels):
    # On a side stream: the kernel must be ordered with torch's work on that stream.
    s = torch.cuda.Stream()
    big = torch.randn(64, 256, 32, 32, device="cuda")
    s.wait_stream(torch.cuda.current_stream())  # big is written on the default stream
    with torch.cuda.stream(s):
        xs = big * 3.0
        y = bias_act(xs, torch.ones(256, device="cuda"), act="lrelu", impl="native")
    s.synchronize()
    torch.testing.assert_close(y, ref_bias_act(big * 3.0, torch.ones(256, device="cuda"),
                                               act="lrelu"), **F32_TOL)  # fmt: skip


# ------------------------------------------------------------------------- CUDA kernels on the CPU


@needs_native
@pytest.mark.parametrize("shape,dim", [((5, 13), 1), ((2, 3, 11), 2), ((3, 7, 5, 9), 1), ((7,), 0)])
@pytest.mark.parametrize("act,clamp", [("linear", None), ("lrelu", None), ("lrelu", 1.5)])
@pytest.mark.parametrize("grid,block", [(1, 1), (3, 32), (8, 128)])
@pytest.mark.usefixtures("index_width")
def test_cuda_kernel_bodies_emulated_match_ref(shape, dim, act, clamp, grid, block, emu):
    """The __global__ bodies of csrc/bias_act_kernels.cuh, compiled as host C++ (csrc/cuda_emu.h),
    against the reference: grid-stride loops with fewer, equal and more threads than elements."""
    x, b = _make(shape, dim, torch.float32)
    dim %= x.ndim
    outer, channels, inner = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])
    code = _native.dtype_code(x.dtype)
    act_code = 0 if act == "linear" else 1
    gain = 1.0 if act == "linear" else math.sqrt(2)
    c = -1.0 if clamp is None else clamp
    y = torch.empty_like(x)
    emu.bias_act_emu(*map(_native.buffer, (x, b, y)), outer, channels, inner, code,
                     act_code, 0.2, gain, c, grid, block)  # fmt: skip
    xr = x.clone().requires_grad_(True)
    y_ref = ref_bias_act(xr, b, dim=dim, act=act, clamp=clamp)
    torch.testing.assert_close(y, y_ref, **F32_TOL)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    y_ref.backward(dy)
    dx = torch.empty_like(x)
    emu.bias_act_grad_emu(*map(_native.buffer, (dy, y, dx)), x.numel(), code, act_code,
                          0.2, gain, c, grid, block)  # fmt: skip
    torch.testing.assert_close(dx, xr.grad, **F32_TOL)
