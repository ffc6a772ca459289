"""How a conv kernel is flattened into a matrix: the one convention of navcuda.

A kernel ``W [out, in, kh, kw]`` is flattened as in the official navigan code: permuted to
``(kh, kw, in, out)`` and reshaped to ``M [kh*kw*in, out]``. Rows are kernel taps x input
channels (the input channel varies fastest), columns are output channels. The thin SVD
``M = U diag(s) Vh`` of this matrix spans a layer's singular-value basis (``u [kh*kw*in, r]``,
``vh [r, out]``), so every op that takes ``u``/``vh`` or unflattens ``U diag(.) Vh`` relies on
this order. Leading batch dimensions pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["flatten_kernel", "unflatten_kernel"]


def flatten_kernel(w: torch.Tensor) -> torch.Tensor:
    """``[..., out, in, kh, kw] -> [..., kh*kw*in, out]``: permute to ``(kh, kw, in, out)``,
    then reshape (a copy unless the permuted tensor is already contiguous)."""
    *lead, o, i, kh, kw = w.shape
    n = len(lead)
    perm = (*range(n), n + 2, n + 3, n + 1, n)
    return w.permute(perm).reshape(*lead, kh * kw * i, o)


def unflatten_kernel(m: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`flatten_kernel`: ``[..., kh*kw*in, out] -> [..., out, in, kh, kw]`` for
    the kernel ``shape = (out, in, kh, kw)`` (a permuted view of ``m`` where a view is possible).

    Raises ValueError when the last two dimensions of ``m`` are not ``[kh*kw*in, out]``."""
    o, i, kh, kw = shape
    *lead, rows, cols = m.shape
    if rows != kh * kw * i or cols != o:
        raise ValueError(f"cannot unflatten {list(m.shape)} into kernel shape {list(shape)}")
    n = len(lead)
    x = m.reshape(*lead, kh, kw, i, o)
    return x.permute(*range(n), n + 3, n + 2, n, n + 1)
