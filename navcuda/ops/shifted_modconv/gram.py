"""The Gram route of the factorised strategy's demodulation (the weight needs no gradient):
exact per-sample norms from r-space only, ``n_b = colsum(M_b * (G_b M_b))`` with
``M_b = diag(e_b) Vh`` and ``G_b = sum_i s_bi^2 P[i]``, ``P[i] = sum_taps U_(tap,i)^T U_(tap,i)``.
``P`` is cached up to :data:`GRAM_MAX_ELEMENTS` and recomputed in chunks beyond."""

from __future__ import annotations

import torch

from navcuda.ops.shifted_modconv.demodulation import DEMOD_EPS
from navcuda.ops.shifted_modconv.shifts import SVDShift
from navcuda.ops.shifted_modconv.tensor_cache import _TensorCache

#: Largest ``in * r * r`` for which the factorised strategy caches the tap-contracted Gram tensor
#: ``P[i] = sum_taps U_(tap,i)^T U_(tap,i)`` (64 MiB in float32): 64- to 256-channel layers.
GRAM_MAX_ELEMENTS = 1 << 24

_GRAM_CACHE = _TensorCache(8)


def _gram_tensor(u: torch.Tensor, in_c: int) -> torch.Tensor:
    """``P [in, r*r]``, ``P[i] = sum_taps U[(tap, i), :]^T U[(tap, i), :]`` (cached per ``u``)."""
    p = _GRAM_CACHE.get((u,), (in_c,))
    if p is None:
        rank = u.shape[1]
        u3 = u.detach().reshape(-1, in_c, rank)  # rows are (kh, kw, in)
        p = torch.einsum("kij,kil->ijl", u3, u3).reshape(in_c, rank * rank).contiguous()
        _GRAM_CACHE.put((u,), p, (in_c,))
    return p


def _gram_demod(shift: SVDShift, styles: torch.Tensor, e: torch.Tensor, c: float):
    """Exact per-sample demodulation from r-space only (W = U diag(s) Vh):
    ``n_b = colsum(M_b * (G_b M_b))`` with ``M_b = diag(e_b) Vh``, ``G_b = sum_i s_bi^2 P[i]``."""
    batch, in_c = styles.shape
    rank = e.shape[1]
    if in_c * rank * rank <= GRAM_MAX_ELEMENTS:
        g = (styles.square() @ _gram_tensor(shift.u, in_c)).reshape(batch, rank, rank)
    else:
        g = _ChunkedGram.apply(styles.square(), shift.u.detach(), in_c)
    m = e[:, :, None] * shift.vh.detach().unsqueeze(0)  # [B, r, out]
    n = (m * torch.bmm(g, m)).sum(dim=1)
    return torch.rsqrt((c * c) * n + DEMOD_EPS)


def _gram_chunks(u: torch.Tensor, in_c: int):
    """Yield ``(lo, hi, P[lo:hi])`` of the Gram tensor (:func:`_gram_tensor`) in chunks of at
    most ``GRAM_MAX_ELEMENTS`` elements, computed on the fly (for layers too wide to cache it).
    The chunks share one buffer (a fresh 64 MiB tensor per chunk costs more in page faults than
    the product itself on the CPU): use each before asking for the next."""
    rank = u.shape[1]
    u3 = u.reshape(-1, in_c, rank)
    step = max(1, min(in_c, GRAM_MAX_ELEMENTS // (rank * rank)))
    buf = u.new_empty(step, rank, rank)
    for lo in range(0, in_c, step):
        hi = min(lo + step, in_c)
        blk = u3[:, lo:hi].transpose(0, 1).contiguous()  # [c, taps, r]
        p = buf[: hi - lo]
        torch.bmm(blk.transpose(1, 2), blk, out=p)
        yield lo, hi, p.view(hi - lo, rank * rank)


class _ChunkedGram(torch.autograd.Function):
    """``G [B, r, r] = sum_i s2[b, i] P[i]`` with ``P`` recomputed chunk by chunk in forward and in
    backward (``d s2[b, i] = <P[i], dG_b>``) instead of cached: for 512-channel layers ``P`` would
    take 512 MiB. Costs ``taps * in * r^2`` multiply-adds for ``P`` plus ``B * in * r^2`` for the
    contraction, each way -- against ``taps * in * r * out`` per distinct direction to materialise
    the shifts (8x more at 512 channels, batch 8)."""

    @staticmethod
    def forward(ctx, s2, u, in_c):
        ctx.save_for_backward(u)
        ctx.in_c = in_c
        rank = u.shape[1]
        g = s2.new_zeros(s2.shape[0], rank * rank)
        for lo, hi, p in _gram_chunks(u, in_c):
            g.addmm_(s2[:, lo:hi], p)
        return g.view(s2.shape[0], rank, rank)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dg):
        (u,) = ctx.saved_tensors
        dg = dg.reshape(dg.shape[0], -1)
        ds2 = dg.new_empty(dg.shape[0], ctx.in_c)
        for lo, hi, p in _gram_chunks(u, ctx.in_c):
            ds2[:, lo:hi] = dg @ p.t()
        return ds2, None, None
