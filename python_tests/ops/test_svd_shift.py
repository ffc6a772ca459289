"""svd_shift: native CPU kernels, emulated CUDA kernels and real CUDA against the reference."""

from __future__ import annotations

import warnings

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.svd_shift import ref_svd_shift, svd_shift
from navcuda.shift import LayerSpace, flatten_kernel

needs_native = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)

try:
    import navcuda._C_emu as _emu
except ImportError:  # a wheel build without the test-only module
    _emu = None
needs_emu = pytest.mark.skipif(_emu is None, reason="navcuda._C_emu was not built")

# float32 tolerance. The native kernels sum the same products in another order than torch's
# einsum/MKL (blocked over r or K, fused multiply-adds): forward values are W + sums of r terms,
# gradients sums of up to K*out ~ 1e4 terms, so the rounding differences are ~ sqrt(n) * 6e-8
# relative to the terms' magnitude (measured <= 2e-6 here). rtol 1e-4 / atol 1e-5 (DESIGN.md
# section 4: relative error <= 1e-4 on the CPU) keeps a wide margin, while a wrong index, a missing
# tap or an unnormalised direction gives errors of order 1e-1.
F32_TOL = dict(rtol=1e-4, atol=1e-5)
F64_TOL = dict(rtol=1e-10, atol=1e-12)


def _tol(dtype):
    return F32_TOL if dtype == torch.float32 else F64_TOL


# (B, out, in, kh, kw): batch 1, odd channel counts, 1x1 and non-square kernels, rank limited by
# out or by K, and one case above the parallel threshold with several KC slices / row / column
# blocks in the CPU kernels (r = 288 > 256, out = 300 > 96, r > 128).
SHAPES = [
    (1, 5, 3, 3, 3),
    (3, 5, 3, 1, 1),
    (2, 4, 2, 1, 3),
    (4, 7, 6, 3, 3),
    (1, 64, 8, 3, 3),
    (3, 33, 17, 3, 3),
    (2, 300, 32, 3, 3),
]


def _make(b, out_c, in_c, kh, kw, dtype, device="cpu", n_dir=None, seed=0):
    """W, orthonormal factors u [K, r], vh [r, out] (r = min(K, out); QR of random matrices, much
    cheaper than an SVD and all the op needs), t, d and optionally index."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_c, in_c, kh, kw, generator=g, dtype=torch.float64)
    k_rows = kh * kw * in_c
    r = min(k_rows, out_c)
    u = torch.linalg.qr(torch.randn(k_rows, r, generator=g, dtype=torch.float64))[0]
    vh = torch.linalg.qr(torch.randn(out_c, r, generator=g, dtype=torch.float64))[0].T
    t = torch.randn(b, generator=g, dtype=torch.float64) * 3
    index = None
    if n_dir is None:
        d = torch.randn(b, r, generator=g, dtype=torch.float64)
    else:
        d = torch.randn(n_dir, r, generator=g, dtype=torch.float64)
        index = torch.randint(0, n_dir, (b,), generator=g)
        index[0] = n_dir - 1  # cover the last row
    cast = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
    return cast(w), cast(u), cast(vh), cast(t), cast(d), None if index is None else index.to(device)


def _values_and_grads(fn, w, u, vh, t, d, index, grad_seed=1):
    w, t, d = (x.detach().clone().requires_grad_(True) for x in (w, t, d))
    y = fn(w, u, vh, t, d, index)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=y.dtype)
    y.backward(g.to(y.device))
    return y.detach(), w.grad, t.grad, d.grad


def _compare(shape, dtype, n_dir, noncontig=False, device="cpu", tol=None):
    w, u, vh, t, d, index = _make(*shape, dtype=dtype, device=device, n_dir=n_dir)
    if noncontig:  # same values, non-contiguous layouts (the wrapper copies them)
        w = w.permute(1, 0, 3, 2).contiguous().permute(1, 0, 3, 2)
        u = u.t().contiguous().t()
        vh = torch.stack([vh, vh], dim=-1)[..., 1]
        d = torch.stack([d, d], dim=-1)[..., 0]
        t = torch.stack([t, t], dim=-1)[:, 1]
        assert not w.is_contiguous() or w.numel() <= 1
        assert not (d.is_contiguous() or vh.is_contiguous() or u.is_contiguous())
    native = _values_and_grads(lambda *a: svd_shift(*a, impl="native"), w, u, vh, t, d, index)
    ref = _values_and_grads(ref_svd_shift, w, u, vh, t, d, index)
    assert native[0].shape == (shape[0], *shape[1:3], *shape[3:])
    for got, want, name in zip(native, ref, ("value", "grad w", "grad t", "grad d"), strict=True):
        assert got.dtype == dtype and got.device == want.device, name
        torch.testing.assert_close(got, want, **(tol or _tol(dtype)), msg=lambda m, n=name: n + m)


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n_dir", [None, 3], ids=["per-sample", "indexed"])
@pytest.mark.usefixtures("cpu_isa")
def test_native_cpu_matches_ref(shape, dtype, n_dir):
    _compare(shape, dtype, n_dir)


@needs_native
@pytest.mark.parametrize("shape", [(3, 5, 3, 3, 3), (2, 33, 17, 3, 3)], ids=str)
@pytest.mark.usefixtures("cpu_isa")
def test_native_cpu_noncontiguous(shape):
    _compare(shape, torch.float32, n_dir=None, noncontig=True)
    _compare(shape, torch.float64, n_dir=4, noncontig=True)


@needs_native
def test_native_path_really_runs(monkeypatch, fresh_dispatch):
    """impl="auto" on CPU float32 runs the native forward and the native gradient kernel."""
    calls = []
    real = _native.run_kernel
    monkeypatch.setattr(
        _native, "run_kernel", lambda name, *a: (calls.append(name), real(name, *a))
    )
    w, u, vh, t, d, index = _make(2, 5, 3, 3, 3, torch.float32, n_dir=4)
    d.requires_grad_(True)
    svd_shift(w, u, vh, t, d, index).square().sum().backward()
    assert calls == ["svd_shift", "svd_shift_grad"]
    assert d.grad is not None and d.grad.abs().sum() > 0


@needs_native
@pytest.mark.parametrize("n_dir", [None, 3], ids=["per-sample", "indexed"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 3, 3), (3, 4, 6, 1, 1)], ids=str)
@pytest.mark.usefixtures("cpu_isa")
def test_gradcheck_float64(shape, n_dir):
    w, u, vh, t, d, index = _make(*shape, dtype=torch.float64, n_dir=n_dir)
    w, t, d = (x.requires_grad_(True) for x in (w, t, d))

    def f(w, t, d):
        return svd_shift(w, u, vh, t, d, index, impl="native")

    assert torch.autograd.gradcheck(f, (w, t, d))


def test_delta_matches_layer_space():
    """W_b - W = t_b * LayerSpace(W).delta(d_b), and each shift has Frobenius norm |t_b|."""
    w, _, _, t, d, index = _make(3, 7, 5, 3, 3, torch.float64, n_dir=4)
    space = LayerSpace(w)
    for impl in ["ref"] + (["native"] if _native.native_module() is not None else []):
        out = svd_shift(w, space.u, space.vh, t, d, index, impl=impl)
        want = t.view(-1, 1, 1, 1, 1) * space.delta(d[index], dtype=torch.float64)
        torch.testing.assert_close(out - w, want, **F64_TOL)
        norms = (out - w).flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, t.abs(), **F64_TOL)


def test_scale_invariance_in_d():
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.float64)
    torch.testing.assert_close(ref_svd_shift(w, u, vh, t, d), ref_svd_shift(w, u, vh, t, 7.5 * d))


@needs_native
def test_custom_op_registrations():
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.float32)
    dhat = d / d.norm(dim=1, keepdim=True)
    torch.library.opcheck(
        torch.ops.navcuda.svd_shift.default,
        (w.requires_grad_(True), u, vh, t.requires_grad_(True), dhat.requires_grad_(True)),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    torch.library.opcheck(
        torch.ops.navcuda.svd_shift_grad.default,
        (torch.randn(2, 5, 3, 3, 3), u, vh, [5, 3, 3, 3]),
        test_utils=("test_schema", "test_faketensor"),
    )
    meta = torch.ops.navcuda.svd_shift(
        *(x.to("meta") for x in (w.detach(), u, vh, t.detach(), dhat.detach()))
    )
    assert meta.shape == (2, 5, 3, 3, 3) and meta.device.type == "meta"


# ------------------------------------------------------------------------- emulated CUDA kernels


def _emu_forward(w, u, vh, t, d, index, config):
    rows = d if index is None else d[index]
    s = (t.unsqueeze(1) * rows / rows.norm(dim=1, keepdim=True)).contiguous()
    w, u, vh = w.contiguous(), u.contiguous(), vh.contiguous()
    out_c, in_c, kh, kw = w.shape
    out = torch.full((t.shape[0], *w.shape), float("nan"), dtype=w.dtype)
    _emu.svd_shift_emu(
        *map(_native.buffer, (w, u, vh, s, out)),
        t.shape[0], out_c, in_c, kh * kw, u.shape[1], _native.dtype_code(w.dtype), config,
    )  # fmt: skip
    return out


def _emu_grad(g, u, vh, config, max_chunks=65535):
    g, u, vh = g.contiguous(), u.contiguous(), vh.contiguous()
    b, out_c, in_c, kh, kw = g.shape
    e = torch.full((b, u.shape[1]), float("nan"), dtype=g.dtype)
    _emu.svd_shift_grad_emu(
        *map(_native.buffer, (g, u, vh, e)),
        b, out_c, in_c, kh * kw, u.shape[1], _native.dtype_code(g.dtype), config, max_chunks,
    )  # fmt: skip
    return e


# (shape, config, max_chunks). Config 1 has 16-row tiles: 19 rows are two tiles (two chunks, or
# one chunk looping over both with max_chunks=1); 40 rows are three tiles in two chunks of 32 and 8
# rows with max_chunks=2.
EMU_CASES = [
    ((2, 5, 3, 3, 3), 0, 65535),
    ((1, 5, 3, 1, 1), 1, 65535),
    ((2, 4, 2, 1, 3), 1, 65535),
    ((3, 19, 7, 3, 3), 1, 65535),
    ((3, 19, 7, 3, 3), 1, 1),
    ((2, 40, 5, 3, 3), 1, 2),
]


@needs_emu
@pytest.mark.parametrize("shape,config,max_chunks", EMU_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_emulated_cuda_matches_ref(shape, config, max_chunks, dtype):
    """The CUDA kernel bodies (run on the CPU) against the reference: values, and the gradient
    reduction e[b, j] = u_j^T G_b v_j (row chunks, then their in-order sum) together with the
    dt / dd it yields."""
    w, u, vh, t, d, index = _make(*shape, dtype=dtype, n_dir=2 if shape[0] > 1 else None)
    out = _emu_forward(w, u, vh, t, d, index, config)
    torch.testing.assert_close(out, ref_svd_shift(w, u, vh, t, d, index), **_tol(dtype))

    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    e = _emu_grad(g, u, vh, config, max_chunks)
    e_ref = torch.einsum("kj,bko,jo->bj", u, flatten_kernel(g), vh)
    torch.testing.assert_close(e, e_ref, **_tol(dtype))
    # dt and dd assembled from e as the native backward does, against the reference's autograd.
    t_, d_ = t.clone().requires_grad_(True), d.clone().requires_grad_(True)
    ref_svd_shift(w, u, vh, t_, d_, index).backward(g)
    rows = d_.detach() if index is None else d_.detach()[index]
    dhat = rows / rows.norm(dim=1, keepdim=True)
    torch.testing.assert_close((e * dhat).sum(1), t_.grad, **_tol(dtype))
    g_hat = t.unsqueeze(1) * e
    g_rows = (g_hat - dhat * (dhat * g_hat).sum(1, keepdim=True)) / rows.norm(dim=1, keepdim=True)
    dd = g_rows if index is None else torch.zeros_like(d).index_add_(0, index, g_rows)
    torch.testing.assert_close(dd, d_.grad, **_tol(dtype))


GRAD_SHAPES = [(3, 130, 70, 3, 3), (630, 70), (70, 130)]  # g, u, vh: 3 chunks of 64 rows


@needs_emu
def test_cuda_gradient_scratch_is_sized_and_checked():
    """svd_shift_grad_workspace gives batch * ceil(out / 64) * rank elements (one partial sum per
    64-row chunk), and the CUDA launcher refuses a smaller scratch before launching anything."""
    mod = _native.native_module()
    assert mod.svd_shift_grad_workspace(8, 512, 512) == 8 * 8 * 512
    assert mod.svd_shift_grad_workspace(3, 130, 70) == 3 * 3 * 70
    assert mod.svd_shift_grad_workspace(2, 1, 4) == 2 * 1 * 4
    gen = torch.Generator().manual_seed(0)
    g, u, vh = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in GRAD_SHAPES)
    e = torch.full((3, 70), float("nan"), dtype=torch.float64)
    work = torch.empty(3 * 3 * 70 - 1, dtype=torch.float64)
    args = tuple(map(_native.buffer, (g, u, vh, e, work)))
    sizes = (3, 130, 70, 9, 70, _native.dtype_code(torch.float64), 0)
    with pytest.raises(ValueError, match="scratch of 629 elements, needs 630"):
        _emu.svd_shift_grad_cuda(*args, *sizes)
    assert e.isnan().all()
    work = torch.empty(3 * 3 * 70, dtype=torch.float64)
    _emu.svd_shift_grad_cuda(*args[:4], _native.buffer(work), *sizes)
    e_ref = torch.einsum("kj,bko,jo->bj", u, flatten_kernel(g), vh)
    torch.testing.assert_close(e, e_ref, **F64_TOL)


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn", [svd_shift, ref_svd_shift])
def test_bad_inputs_raise_clear_errors(fn):
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.float32)
    with pytest.raises(ValueError, match=r"u must have shape \[kh\*kw\*in, r\] = \[27, r\]"):
        fn(w, u[:-1], vh, t, d)
    with pytest.raises(ValueError, match=r"vh must have shape \[5, 5\], got \[4, 5\]"):
        fn(w, u, vh[:-1], t, d)
    with pytest.raises(ValueError, match=r"d must have r = 5 coefficients"):
        fn(w, u, vh, t, d[:, :-1])
    with pytest.raises(ValueError, match=r"d has 3 rows but t has 2 entries"):
        fn(w, u, vh, t, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"t must have 1 dimension"):
        fn(w, u, vh, t.view(2, 1), d)
    with pytest.raises(ValueError, match=r"w must have 4 dimension"):
        fn(w[0], u, vh, t, d)
    with pytest.raises(TypeError, match="d has dtype torch.float64 but w has torch.float32"):
        fn(w, u, vh, t, d.double())
    with pytest.raises(ValueError, match="vh is on meta but w is on cpu"):
        fn(w, u, vh.to("meta"), t, d)
    with pytest.raises(ValueError, match="must be finite and not all zero"):
        fn(w, u, vh, t, torch.cat([d[:1], torch.zeros(1, 5)]))
    with pytest.raises(ValueError, match="must be finite and not all zero"):
        fn(w, u, vh, t, torch.full_like(d, float("nan")))
    # indexed form
    dirs = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"index values must lie in \[0, 4\).*got range \[0, 4\]"):
        fn(w, u, vh, t, dirs, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"index values must lie in \[0, 4\).*range \[-1, 0\]"):
        fn(w, u, vh, t, dirs, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"index must have shape \[2\]"):
        fn(w, u, vh, t, dirs, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="index must have dtype int64 or int32"):
        fn(w, u, vh, t, dirs, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="must be finite and not all zero"):
        fn(w, u, vh, t, torch.cat([dirs[:3], torch.zeros(1, 5)]), torch.tensor([0, 3]))
    # a zero row that no sample selects is fine
    fn(w, u, vh, t, torch.cat([dirs[:3], torch.zeros(1, 5)]), torch.tensor([0, 2]))


def test_bad_impl_argument():
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.float32)
    with pytest.raises(ValueError, match="impl must be one of"):
        svd_shift(w, u, vh, t, d, impl="cuda")


# ------------------------------------------------------------------------- dispatch


@pytest.fixture
def fresh_dispatch(monkeypatch):
    monkeypatch.delenv("NAVCUDA_IMPL", raising=False)
    _native._reset_fallback_warnings()
    yield
    _native._reset_fallback_warnings()
    _native.clear_failed("svd_shift")


def test_env_forces_ref(monkeypatch, fresh_dispatch):
    def boom(*args):
        raise AssertionError("native kernel called although NAVCUDA_IMPL=ref")

    monkeypatch.setenv("NAVCUDA_IMPL", "ref")
    monkeypatch.setattr(_native, "run_kernel", boom)
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(svd_shift(w, u, vh, t, d), ref_svd_shift(w, u, vh, t, d))


def test_unsupported_dtype_falls_back_with_warning(fresh_dispatch):
    w, u, vh, t, d, _ = _make(2, 5, 3, 3, 3, torch.bfloat16)
    with pytest.warns(_native.NativeFallbackWarning, match="svd_shift"):
        out = svd_shift(w, u, vh, t, d)
    torch.testing.assert_close(out, ref_svd_shift(w, u, vh, t, d))
    if _native.native_module() is not None:
        with pytest.raises(RuntimeError, match="impl='native' was requested"):
            svd_shift(w, u, vh, t, d, impl="native")


# ------------------------------------------------------------------------- real CUDA


@pytest.mark.parametrize("shape", [(1, 5, 3, 3, 3), (3, 33, 17, 3, 3), (4, 130, 70, 3, 3)], ids=str)
@pytest.mark.parametrize("n_dir", [None, 3], ids=["per-sample", "indexed"])
def test_cuda_matches_ref(shape, n_dir, cuda_device):
    """float32 on the GPU (TF32 off for the reference): rtol 1e-3 per DESIGN.md section 4."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32 (not monkeypatch: torch's cuBLAS
    try:  # settings object has no real attribute for pytest >= 9.2 to restore)
        _compare(shape, torch.float32, n_dir, device=cuda_device, tol=dict(rtol=1e-3, atol=1e-4))
    finally:
        torch.set_float32_matmul_precision(precision)
    _compare(shape, torch.float64, n_dir, device=cuda_device)


def test_cuda_gradcheck_float64(cuda_device):
    w, u, vh, t, d, index = _make(2, 5, 3, 3, 3, torch.float64, device=cuda_device, n_dir=3)
    w, t, d = (x.requires_grad_(True) for x in (w, t, d))
    f = lambda w, t, d: svd_shift(w, u, vh, t, d, index, impl="native")  # noqa: E731
    assert torch.autograd.gradcheck(f, (w, t, d))
