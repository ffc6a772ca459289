"""Per-sample shifted conv kernels in the singular-value basis.

For a raw kernel ``W [out, in, kh, kw]`` whose flattened form
(:func:`navcuda.ops.kernel_layout.flatten_kernel`: permute to ``(kh, kw, in, out)``, reshape to
``[K, out]`` with ``K = kh*kw*in``) has the thin SVD ``U diag(sigma) Vh``, magnitudes ``t [B]``
and coefficients ``d_b [r]``::

    W_b = W + t_b * unflatten(U diag(d_b / ||d_b||) Vh)          -> [B, out, in, kh, kw]

``d`` is either ``[B, r]`` (one coefficient vector per sample) or ``[n_dir, r]`` together with
``index [B]`` (sample ``b`` uses row ``index[b]``; the optimisation method's ``K = 64`` direction
matrix). Each ``Delta_b`` has unit Frobenius norm when ``U``, ``Vh`` have orthonormal columns/rows,
so ``t_b`` is the Frobenius norm of the shift.

Gradients flow to ``W`` (``sum_b G_b``), ``t`` (``<G_b, Delta_b>``) and ``d`` (through the
normalisation; ``dL/d(dhat_b)_j = t_b * u_j^T G_b^flat v_j``, the diagonal of ``U^T G_b V``, which
the native kernels extract with one GEMM per sample without forming the ``r x r`` product). ``u``
and ``vh`` are treated as constants: they are detached and receive no gradient. The native path
supports first-order gradients (``navcuda::svd_shift_grad`` has no autograd formula of its own);
use ``impl="ref"`` for double backward.

Native kernels: CPU ``csrc/svd_shift.cpp`` (blocked GEMM per sample, AVX2+FMA or generic code
chosen at run time, OpenMP over samples x row / column blocks), CUDA ``csrc/svd_shift_kernels.cuh``
(shared-memory tiled GEMM, 64 x 64 tiles, fused ``+ W`` epilogue). The forward writes the output in
its final ``[B, out, in, kh, kw]`` layout (the unflatten is folded into the indexing of ``u``).

``ref_svd_shift`` is the readable pure-torch reference (test oracle and fallback). ``svd_shift``
dispatches (see :mod:`navcuda.ops._native`) to the native kernels of ``navcuda._C``, registered as
the custom ops ``navcuda::svd_shift`` / ``navcuda::svd_shift_grad`` with fake and autograd
registrations.

Performance (CPU, measured on the 2-core AMD EPYC dev machine, AVX2+FMA path, one thread because
a background job made two-thread timings noisy; GFLOP/s = 2*B*K*r*out / time):

===============================  ===========  ================  ==============
shape B, K, r, out                native       torch einsum ref   torch bmm only
===============================  ===========  ================  ==============
8, 4608, 512, 512  float32 fwd    124          59                 89
8, 4608, 512, 512  float64 fwd    41           29                 43
16, 576, 64, 64    float32 fwd    121          65                 105
8, 4608, 512, 512  float32 bwd    110          70 ((G V) * U)
16, 576, 64, 64    float32 bwd    103          79 ((G V) * U)
===============================  ===========  ================  ==============

The native kernel wins (or ties the bare bmm in float64) at both sizes, so there is no size-based
crossover: ``impl="auto"`` runs the native kernel whenever it can.
"""

from __future__ import annotations

import torch

from navcuda.ops import _native
from navcuda.ops.kernel_layout import unflatten_kernel

__all__ = ["ref_svd_shift", "svd_shift"]

_OP = "svd_shift"

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_args(w, u, vh, t, d, index) -> None:
    """Validate shapes, dtypes and devices; raise a clear error before any pointer crosses."""
    _native.check_tensor(_OP, "w", w, dtypes=_FLOAT_DTYPES, ndim=4)
    out_c, in_c, kh, kw = w.shape
    k_rows = kh * kw * in_c
    _native.check_tensor(_OP, "u", u, ndim=2, like=w, like_name="w")
    if u.shape[0] != k_rows:
        raise ValueError(
            f"{_OP}: u must have shape [kh*kw*in, r] = [{k_rows}, r] for w of shape "
            f"{list(w.shape)}, got {list(u.shape)}"
        )
    rank = u.shape[1]
    _native.check_tensor(_OP, "vh", vh, shape=[rank, out_c], like=w, like_name="w")
    _native.check_tensor(_OP, "t", t, ndim=1, like=w, like_name="w")
    batch = t.shape[0]
    _native.check_tensor(_OP, "d", d, ndim=2, like=w, like_name="w")
    if d.shape[1] != rank:
        raise ValueError(
            f"{_OP}: d must have r = {rank} coefficients per row (u has {rank} columns), "
            f"got shape {list(d.shape)}"
        )
    if index is None:
        if d.shape[0] != batch:
            raise ValueError(
                f"{_OP}: d has {d.shape[0]} rows but t has {batch} entries; pass d [B, r] or "
                f"d [n_dir, r] with index [B]"
            )
        rows = d
    else:
        if not isinstance(index, torch.Tensor):
            raise TypeError(f"{_OP}: index must be a torch.Tensor, got {type(index).__name__}")
        if index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{_OP}: index must have dtype int64 or int32, got {index.dtype}")
        if index.shape != (batch,):
            raise ValueError(
                f"{_OP}: index must have shape [{batch}] (one direction per sample), "
                f"got {list(index.shape)}"
            )
        if index.device != w.device:
            raise ValueError(f"{_OP}: index is on {index.device} but w is on {w.device}")
        lo, hi = _native.index_range(index) if batch > 0 else (0, -1)  # empty: nothing to check
        if lo < 0 or hi >= d.shape[0]:
            raise ValueError(
                f"{_OP}: index values must lie in [0, {d.shape[0]}) (rows of d), got range "
                f"[{lo}, {hi}]"
            )
        rows = d[index]
    if batch > 0:
        norms = rows.detach().norm(dim=1)
        if not bool((norms > 0).all()) or not bool(torch.isfinite(norms).all()):
            raise ValueError(
                f"{_OP}: every coefficient vector d_b must be finite and not all zero "
                f"(it is normalised to unit length)"
            )


def _normalized(d: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(rows d_b, dhat_b = d_b / ||d_b||)``, differentiable."""
    rows = d if index is None else d[index]
    return rows, rows / rows.norm(dim=1, keepdim=True)


def ref_svd_shift(
    w: torch.Tensor,
    u: torch.Tensor,
    vh: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch reference of :func:`svd_shift` (same arguments, no ``impl``)."""
    _check_args(w, u, vh, t, d, index)
    u, vh = u.detach(), vh.detach()
    _, dhat = _normalized(d, index)
    # Delta_b^flat[k, o] = sum_j u[k, j] dhat[b, j] vh[j, o]
    m = torch.einsum("kj,bj,jo->bko", u, dhat, vh)
    delta = unflatten_kernel(m, w.shape)
    return w.unsqueeze(0) + t.view(-1, 1, 1, 1, 1) * delta


def svd_shift(
    w: torch.Tensor,
    u: torch.Tensor,
    vh: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    index: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Shifted kernels ``W + t_b * unflatten(U diag(d_b / ||d_b||) Vh)`` for a batch.

    Args:
        w: raw conv kernel ``[out, in, kh, kw]``.
        u: left singular vectors of the flattened kernel ``[kh*kw*in, r]`` (a constant).
        vh: right singular vectors ``[r, out]`` (a constant).
        t: shift magnitudes ``[B]``.
        d: coefficients ``[B, r]``, or ``[n_dir, r]`` with ``index``; rows must be non-zero.
        index: optional ``[B]`` integer tensor selecting a row of ``d`` per sample.
        impl: ``"auto"``, ``"ref"`` or ``"native"`` (see :mod:`navcuda.ops._native`).

    All tensors share device and dtype (``index`` only the device). Non-contiguous inputs are
    copied to contiguous ones. Returns ``[B, out, in, kh, kw]``, differentiable w.r.t. ``w``, ``t``
    and ``d`` (``u``, ``vh`` are detached).
    """
    _check_args(w, u, vh, t, d, index)
    if _native.resolve_impl(_OP, impl, w) == "ref":
        return ref_svd_shift(w, u, vh, t, d, index)
    _, dhat = _normalized(d, index)
    return torch.ops.navcuda.svd_shift(
        w.contiguous(), u.detach().contiguous(), vh.detach().contiguous(), t.contiguous(),
        dhat.contiguous(),
    )  # fmt: skip


# ------------------------------------------------------------------------- native custom ops
# Internal: arguments are validated by svd_shift(). The op takes the normalised rows dhat [B, r];
# the normalisation (and the gather by index) is plain differentiable torch around it, O(B*r).
# Called directly (torch.ops.navcuda.svd_shift), the ops check devices, dtypes and ranks here,
# and the C++ entry points every size against the buffers (u with the wrong number of rows, ...).

_T = _native.OpTensor


def _sizes(w: torch.Tensor, u: torch.Tensor, t: torch.Tensor) -> tuple[int, ...]:
    out_c, in_c, kh, kw = w.shape
    return t.shape[0], out_c, in_c, kh * kw, u.shape[1]


@torch.library.custom_op("navcuda::svd_shift", mutates_args=())
def _svd_shift_op(
    w: torch.Tensor, u: torch.Tensor, vh: torch.Tensor, t: torch.Tensor, dhat: torch.Tensor
) -> torch.Tensor:
    _native.check_op_tensors(
        "navcuda::svd_shift", _T("w", w, 4), _T("u", u, 2), _T("vh", vh, 2), _T("t", t, 1),
        _T("dhat", dhat, 2),
    )  # fmt: skip
    w, u, vh = w.contiguous(), u.contiguous(), vh.contiguous()
    s = (t.unsqueeze(1) * dhat).contiguous()  # s[b, j] = t_b * dhat[b, j]
    batch, out_c, in_c, taps, rank = _sizes(w, u, t)
    out = torch.empty((batch, *w.shape), dtype=w.dtype, device=w.device)
    if out.numel() > 0:
        _native.run_kernel(
            "svd_shift", w.device,
            _native.buffer(w), _native.buffer(u), _native.buffer(vh), _native.buffer(s),
            _native.buffer(out), batch, out_c, in_c, taps, rank, _native.dtype_code(w.dtype),
        )  # fmt: skip
    return out


@_svd_shift_op.register_fake
def _(w, u, vh, t, dhat):
    return w.new_empty((t.shape[0], *w.shape))


@torch.library.custom_op("navcuda::svd_shift_grad", mutates_args=())
def _svd_shift_grad_op(
    g: torch.Tensor, u: torch.Tensor, vh: torch.Tensor, w_shape: list[int]
) -> torch.Tensor:
    """``e[b, j] = u_j^T G_b^flat v_j`` for ``g [B, out, in, kh, kw]``."""
    op = "navcuda::svd_shift_grad"
    _native.check_op_tensors(op, _T("g", g, 5), _T("u", u, 2), _T("vh", vh, 2))
    if len(w_shape) != 4:
        raise ValueError(f"{op}: w_shape must have 4 sizes [out, in, kh, kw], got {w_shape}")
    g = g.contiguous()  # autograd may hand in expanded (stride-0) gradients
    u, vh = u.contiguous(), vh.contiguous()
    out_c, in_c, kh, kw = w_shape
    batch, rank = g.shape[0], u.shape[1]
    e = torch.empty((batch, rank), dtype=g.dtype, device=g.device)
    if e.numel() > 0:
        # Scratch for the CUDA kernels' per-chunk partial sums (batch * ceil(out / 64) * rank
        # elements, from torch's allocator; the CPU kernels ignore it).
        work = g.new_empty(_native.native_module().svd_shift_grad_workspace(batch, out_c, rank))
        _native.run_kernel(
            "svd_shift_grad", g.device,
            _native.buffer(g), _native.buffer(u), _native.buffer(vh), _native.buffer(e),
            _native.buffer(work), batch, out_c, in_c, kh * kw, rank,
            _native.dtype_code(g.dtype),
        )  # fmt: skip
    return e


@_svd_shift_grad_op.register_fake
def _(g, u, vh, w_shape):
    return g.new_empty((g.shape[0], u.shape[1]))


def _svd_shift_setup_context(ctx, inputs, output):
    w, u, vh, t, dhat = inputs
    ctx.save_for_backward(u, vh, t, dhat)
    ctx.w_shape = list(w.shape)


def _svd_shift_backward(ctx, grad):
    u, vh, t, dhat = ctx.saved_tensors
    dw = dt = ddhat = None
    if ctx.needs_input_grad[0]:
        dw = grad.sum(dim=0)
    if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
        e = torch.ops.navcuda.svd_shift_grad(grad, u, vh, ctx.w_shape)
        if ctx.needs_input_grad[3]:
            dt = (e * dhat).sum(dim=1)  # <G_b, Delta_b>
        if ctx.needs_input_grad[4]:
            ddhat = t.unsqueeze(1) * e
    return dw, None, None, dt, ddhat


_svd_shift_op.register_autograd(_svd_shift_backward, setup_context=_svd_shift_setup_context)
