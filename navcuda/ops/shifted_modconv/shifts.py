"""The shift specifications of :func:`~navcuda.ops.shifted_modconv.shifted_modconv`, which
strategies take each, and their validation.

Sample ``b`` of a batch uses the raw kernel ``W + t_b Delta_b``; the four classes say how the
``Delta_b`` are given (the package docstring describes each). Also the op's name and float dtypes
for the argument checks of every piece of the package, and the index check they share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from navcuda.ops import _native

_OP = "shifted_modconv"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class SharedShift:
    """Every sample uses ``W + delta``; ``delta [out, in, k, k]``."""

    delta: torch.Tensor


@dataclass(frozen=True)
class PerSampleShift:
    """Sample ``b`` uses ``W + delta[b]``; ``delta [B, out, in, k, k]`` (already times ``t``)."""

    delta: torch.Tensor


@dataclass(frozen=True)
class SVDShift:
    """``W_b = W + t_b unflatten(U diag(c_b / |c_b|) Vh)``, ``c_b = coeffs[index[b]]``.

    ``u [k*k*in, r]``, ``s [r]``, ``vh [r, out]``: the thin SVD of the flattened kernel
    (constants, no gradient); ``t [B]``; ``coeffs [n_dir, r]`` (``[B, r]`` when ``index`` is
    None); ``index [B]`` integer or None.
    """

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    t: torch.Tensor
    coeffs: torch.Tensor
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class SplitShift:
    """``W_b = W + t_b delta[index[b]]``; ``delta [n_dir, out, in, k, k]``, ``t [B]``,
    ``index [B]`` integer."""

    delta: torch.Tensor
    t: torch.Tensor
    index: torch.Tensor


_SUPPORTED = {
    type(None): ("grouped", "shared"),
    SharedShift: ("grouped", "shared", "split"),
    PerSampleShift: ("grouped",),
    SVDShift: (
        "grouped",
        "factorised",
        "split",
        "factorised-gram",
        "factorised-directions",
        "factorised-materialise",
    ),
    SplitShift: ("grouped", "split"),
}


def _dhat(coeffs: torch.Tensor) -> torch.Tensor:
    """The unit directions ``c / |c|`` of coefficient rows ``[n, r]`` (an :class:`SVDShift`'s)."""
    return coeffs / coeffs.norm(dim=1, keepdim=True)


def _check_index(
    name: str,
    index: object,
    batch: int,
    n_rows: int,
    device: torch.device,
    op: str = _OP,
    like_name: str = "x",
):
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: {name} must have dtype int64 or int32, got {index.dtype}")
    if tuple(index.shape) != (batch,):
        raise ValueError(
            f"{op}: {name} must have shape [{batch}] (one row per sample), got {list(index.shape)}"
        )
    if index.device != device:
        raise ValueError(f"{op}: {name} is on {index.device} but {like_name} is on {device}")
    if batch > 0:
        lo, hi = _native.index_range(index)
        if lo < 0 or hi >= n_rows:
            raise ValueError(
                f"{op}: {name} values must lie in [0, {n_rows}), got range [{lo}, {hi}]"
            )


def _check_shift(shift: object, x: torch.Tensor, weight: torch.Tensor) -> None:
    batch = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    kshape = [out_c, in_c, kh, kw]
    ck = _native.check_tensor
    if shift is None:
        return
    if isinstance(shift, SharedShift):
        ck(_OP, "shift.delta", shift.delta, shape=kshape, like=x)
    elif isinstance(shift, PerSampleShift):
        ck(_OP, "shift.delta", shift.delta, shape=[batch, *kshape], like=x)
    elif isinstance(shift, SplitShift):
        ck(_OP, "shift.delta", shift.delta, shape=[None, *kshape], like=x)
        ck(_OP, "shift.t", shift.t, shape=[batch], like=x)
        _check_index("shift.index", shift.index, batch, shift.delta.shape[0], x.device)
    elif isinstance(shift, SVDShift):
        k_rows = kh * kw * in_c
        ck(_OP, "shift.u", shift.u, ndim=2, like=x)
        if shift.u.shape[0] != k_rows:
            raise ValueError(
                f"{_OP}: shift.u must have shape [kh*kw*in, r] = [{k_rows}, r] for a kernel "
                f"{kshape}, got {list(shift.u.shape)}"
            )
        rank = shift.u.shape[1]
        ck(_OP, "shift.s", shift.s, shape=[rank], like=x)
        ck(_OP, "shift.vh", shift.vh, shape=[rank, out_c], like=x)
        ck(_OP, "shift.t", shift.t, shape=[batch], like=x)
        ck(_OP, "shift.coeffs", shift.coeffs, shape=[None, rank], like=x)
        if shift.index is None:
            if shift.coeffs.shape[0] != batch:
                raise ValueError(
                    f"{_OP}: shift.coeffs has {shift.coeffs.shape[0]} rows but the batch has "
                    f"{batch} samples; pass coeffs [B, r] or coeffs [n_dir, r] with index [B]"
                )
        else:
            _check_index("shift.index", shift.index, batch, shift.coeffs.shape[0], x.device)
        if batch > 0:
            rows = shift.coeffs if shift.index is None else shift.coeffs[shift.index]
            norms = rows.detach().norm(dim=1)
            if not bool(((norms > 0) & torch.isfinite(norms)).all()):
                raise ValueError(
                    f"{_OP}: every coefficient vector used must be finite and not all zero "
                    f"(it is normalised to unit length)"
                )
    else:
        raise TypeError(
            f"{_OP}: shift must be None, SharedShift, PerSampleShift, SVDShift or SplitShift, "
            f"got {type(shift).__name__}"
        )
