"""The demodulation coefficients of shifted modulated kernels, for every strategy::

    dcoef[b,o] = rsqrt(scale2 sum_i s[b,i]^2 (Q0 + 2 t_b Q1[k_b] + t_b^2 Q2[k_b])[o,i] + 1e-8)

:func:`ref_demod` (plain torch), :func:`demod` (checked, dispatching) and the native custom ops
``navcuda::modconv_demod`` / ``navcuda::modconv_demod_grad`` (``csrc/modconv.h``) with their fake
and autograd registrations.
"""

from __future__ import annotations

import torch

from navcuda.ops import _native
from navcuda.ops.shifted_modconv.shifts import _FLOAT_DTYPES, _OP, _check_index

DEMOD_EPS = 1e-8


def ref_demod(s, q0, q1=None, q2=None, t=None, index=None, scale2=1.0):
    """Plain-torch demodulation coefficients ``[B, out]`` (see ``csrc/modconv.h``)."""
    s2 = s.square()
    if q0.shape[0] == 1:
        n = s2 @ q0[0].t()
    else:
        n = torch.einsum("bi,boi->bo", s2, q0)
    if q1 is not None:
        idx = index if index is not None else torch.arange(s.shape[0], device=s.device)
        n = n + torch.einsum("bi,boi->bo", s2, 2 * t[:, None, None] * q1[idx]
                             + t.square()[:, None, None] * q2[idx])  # fmt: skip
    return torch.rsqrt(scale2 * n + DEMOD_EPS)


def demod(s, q0, q1=None, q2=None, t=None, index=None, *, scale2: float, impl: str = "auto"):
    """Demodulation coefficients ``[B, out]`` of shifted modulated kernels::

        dcoef[b,o] = rsqrt(scale2 sum_i s[b,i]^2 (Q0 + 2 t_b Q1[k_b] + t_b^2 Q2[k_b])[o,i] + 1e-8)

    ``s [B, in]``, ``q0 [1 or B, out, in]``, ``q1, q2 [n_dir, out, in]`` with ``t [B]`` and
    ``index [B]`` (None: ``k_b = b``). Differentiable w.r.t. ``s, q0, q1, q2, t``. Every
    argument is checked (shapes, one device and dtype, index range) before any kernel runs.
    """
    _check_demod_args(s, q0, q1, q2, t, index)
    return _demod(s, q0, q1, q2, t, index, scale2=scale2, impl=impl)


def _check_demod_args(s, q0, q1, q2, t, index) -> None:
    op = "demod"
    s = _native.check_tensor(op, "s", s, dtypes=_FLOAT_DTYPES, ndim=2)
    batch, n_in = s.shape
    q0 = _native.check_tensor(op, "q0", q0, ndim=3, like=s, like_name="s")
    if q0.shape[0] not in (1, batch) or q0.shape[2] != n_in:
        raise ValueError(f"{op}: q0 must be [1 or {batch}, out, {n_in}], got {list(q0.shape)}")
    n_out = q0.shape[1]
    if not (q1 is None) == (q2 is None) == (t is None):
        raise ValueError(f"{op}: q1, q2 and t go together (all or none)")
    if q1 is None:
        if index is not None:
            raise ValueError(f"{op}: index selects rows of q1/q2; pass q1, q2 and t as well")
        return
    q1 = _native.check_tensor(op, "q1", q1, shape=[None, n_out, n_in], like=s, like_name="s")
    n_dir = q1.shape[0]
    _native.check_tensor(op, "q2", q2, shape=[n_dir, n_out, n_in], like=s, like_name="s")
    _native.check_tensor(op, "t", t, shape=[batch], like=s, like_name="s")
    if index is not None:
        _check_index("index", index, batch, n_dir, s.device, op=op, like_name="s")
    elif n_dir != batch:
        raise ValueError(
            f"{op}: without index, q1/q2 need one row per sample ({batch}), got {n_dir}"
        )


def _demod(s, q0, q1=None, q2=None, t=None, index=None, *, scale2: float, impl: str = "auto"):
    """:func:`demod` without the argument checks (callers that validated them already)."""
    if _native.resolve_impl(_OP, impl, s) == "ref":
        return ref_demod(s, q0, q1, q2, t, index, scale2)
    if q1 is not None and index is None:
        index = torch.arange(s.shape[0], device=s.device)
    if index is not None:
        index = index.to(torch.int64).contiguous()
    cont = [None if v is None else v.contiguous() for v in (s, q0, q1, q2, t)]
    return torch.ops.navcuda.modconv_demod(*cont, index, float(scale2))


# ------------------------------------------------------------------------- native custom ops
# Internal: arguments are validated by the callers above. Called directly
# (torch.ops.navcuda.modconv_demod), the ops check devices, dtypes and ranks here (_check_op);
# the C++ entry points check every size against the buffers and, on the CPU, the index values
# (the CUDA kernels give NaN for a sample whose index is out of range instead of reading past
# q1/q2).

_p = _native.buffer  # the kernel calls' buffer lists
_T = _native.OpTensor


def _check_op(op, s, q0, q1, q2, t, index, *more: _native.OpTensor) -> None:
    _native.check_op_tensors(
        op, _T("s", s, 2), _T("q0", q0, 3), _T("q1", q1, 3), _T("q2", q2, 3), _T("t", t, 1),
        _T("index", index, 1, torch.int64), *more,
    )  # fmt: skip


@torch.library.custom_op("navcuda::modconv_demod", mutates_args=())
def _demod_op(
    s: torch.Tensor,
    q0: torch.Tensor,
    q1: torch.Tensor | None,
    q2: torch.Tensor | None,
    t: torch.Tensor | None,
    index: torch.Tensor | None,
    scale2: float,
) -> torch.Tensor:
    _check_op("navcuda::modconv_demod", s, q0, q1, q2, t, index)
    batch, n_in = s.shape
    n0, n_out, _ = q0.shape
    n_dir = 0 if q1 is None else q1.shape[0]
    dcoef = s.new_empty((batch, n_out))
    if dcoef.numel() > 0:
        _native.run_kernel(
            "modconv_demod", s.device,
            _p(s), _p(q0), _p(q1), _p(q2), _p(t), _p(index), _p(dcoef),
            batch, n_out, n_in, n0, n_dir, _native.dtype_code(s.dtype), scale2,
        )  # fmt: skip
    return dcoef


@_demod_op.register_fake
def _(s, q0, q1, q2, t, index, scale2):
    return s.new_empty((s.shape[0], q0.shape[1]))


@torch.library.custom_op("navcuda::modconv_demod_grad", mutates_args=())
def _demod_grad_op(
    g: torch.Tensor,
    dcoef: torch.Tensor,
    s: torch.Tensor,
    q0: torch.Tensor,
    q1: torch.Tensor | None,
    q2: torch.Tensor | None,
    t: torch.Tensor | None,
    index: torch.Tensor | None,
    scale2: float,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ds, dt, dq0, dq1, dq2); entries not in ``needs`` are empty tensors."""
    op = "navcuda::modconv_demod_grad"
    _check_op(op, s, q0, q1, q2, t, index, _T("g", g, 2), _T("dcoef", dcoef, 2))
    if len(needs) != 5:
        raise ValueError(f"{op}: needs must have 5 entries (s, t, q0, q1, q2), got {needs}")
    g = g.contiguous()
    batch, n_in = s.shape
    n0, n_out, _ = q0.shape
    n_dir = 0 if q1 is None else q1.shape[0]
    has_t = q1 is not None
    need_s, need_t, need_q0, need_q1, need_q2 = needs

    def empty_():
        return s.new_empty(0)

    dn = s.new_empty((batch, n_out))
    ds = s.new_empty((batch, n_in)) if need_s else empty_()
    parts = _native.native_module().modconv_demod_dt_parts(n_in)
    dt_part = s.new_zeros((batch, parts)) if need_t and has_t else empty_()
    dq0 = torch.empty_like(q0) if need_q0 else empty_()
    dq1 = torch.empty_like(q1) if need_q1 and has_t else empty_()
    dq2 = torch.empty_like(q2) if need_q2 and has_t else empty_()
    if batch * n_out > 0:
        _native.run_kernel(
            "modconv_demod_grad", s.device,
            _p(g), _p(dcoef), _p(s), _p(q0), _p(q1), _p(q2), _p(t), _p(index), _p(dn),
            *(_p(v) if v.numel() else None for v in (ds, dt_part, dq0, dq1, dq2)),
            batch, n_out, n_in, n0, n_dir, _native.dtype_code(s.dtype), scale2,
        )  # fmt: skip
    else:
        for v in (ds, dt_part, dq0, dq1, dq2):
            v.zero_()
    dt = dt_part.sum(dim=1) if dt_part.numel() else (s.new_zeros(batch) if need_t and has_t
                                                      else empty_())  # fmt: skip
    return ds, dt, dq0, dq1, dq2


@_demod_grad_op.register_fake
def _(g, dcoef, s, q0, q1, q2, t, index, scale2, needs):
    has_t = q1 is not None
    return (
        s.new_empty(s.shape if needs[0] else 0),
        s.new_empty(s.shape[0] if needs[1] and has_t else 0),
        q0.new_empty(q0.shape if needs[2] else 0),
        q1.new_empty(q1.shape) if needs[3] and has_t else s.new_empty(0),
        q2.new_empty(q2.shape) if needs[4] and has_t else s.new_empty(0),
    )


def _demod_setup(ctx, inputs, output):
    s, q0, q1, q2, t, index, scale2 = inputs
    ctx.save_for_backward(s, q0, q1, q2, t, index, output)
    ctx.scale2 = scale2


def _demod_backward(ctx, g):
    s, q0, q1, q2, t, index, dcoef = ctx.saved_tensors
    n = ctx.needs_input_grad
    needs = [n[0], n[4], n[1], n[2], n[3]]
    if not any(needs):
        return None, None, None, None, None, None, None
    ds, dt, dq0, dq1, dq2 = torch.ops.navcuda.modconv_demod_grad(
        g, dcoef, s, q0, q1, q2, t, index, ctx.scale2, needs
    )
    pick = lambda v, need: v if need and v.numel() else None  # noqa: E731
    return (
        pick(ds, n[0]),
        pick(dq0, n[1]),
        pick(dq1, n[2]),
        pick(dq2, n[3]),
        pick(dt, n[4]),
        None,
        None,
    )


_demod_op.register_autograd(_demod_backward, setup_context=_demod_setup)
