"""Fused bias + activation + gain + clamp, as in NVlabs stylegan2-ada ``bias_act``.

For ``x`` of shape ``[d0, ..., d_{n-1}]`` and bias ``b`` of shape ``[x.shape[dim]]``::

    y = act(x + b broadcast along dim) * gain
    y = y.clamp(-clamp, clamp)                        (if clamp is not None)

with ``act`` one of ``"linear"`` (identity) and ``"lrelu"`` (leaky ReLU with slope ``alpha``
for negative inputs). The default gain is 1 for ``"linear"`` and ``sqrt(2)`` for ``"lrelu"``.

``ref_bias_act`` is the pure-torch reference (test oracle and CPU fallback). ``bias_act`` runs
the native kernels of ``navcuda._C`` when possible (see :mod:`navcuda.ops._native` for the
choice), registered as the custom ops ``navcuda::bias_act`` and ``navcuda::bias_act_grad`` with
fake (meta) and autograd registrations; double backward is supported (R1 regularisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from navcuda.ops import _native

__all__ = ["ACTIVATIONS", "bias_act", "ref_bias_act"]

_OP = "bias_act"

# name -> (code in csrc/bias_act.h, default gain)
ACTIVATIONS: dict[str, tuple[int, float]] = {
    "linear": (0, 1.0),
    "lrelu": (1, math.sqrt(2.0)),
}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_args(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float | None,
    clamp: float | None,
) -> tuple[int, float, float, float]:
    """Validate the arguments; return (dim normalised to >= 0, alpha, gain, clamp or -1)."""
    _native.check_tensor(_OP, "x", x, dtypes=_FLOAT_DTYPES, min_ndim=1)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{_OP}: dim must be an int, got {type(dim).__name__}")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"{_OP}: dim={dim} is out of range for x of shape {list(x.shape)} "
            f"(expected {-x.ndim} <= dim < {x.ndim})"
        )
    dim %= x.ndim
    if b is not None:
        _native.check_tensor(_OP, "b", b, shape=[x.shape[dim]], like=x)
    if act not in ACTIVATIONS:
        raise ValueError(f"{_OP}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    alpha = float(alpha)
    gain = ACTIVATIONS[act][1] if gain is None else float(gain)
    return dim, alpha, gain, _native.clamp_value(_OP, clamp)


def ref_bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Pure-torch reference of :func:`bias_act` (same arguments, no ``impl``)."""
    dim, alpha, gain, clamp_value = _check_args(x, b, dim, act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp_value >= 0:
        x = x.clamp(-clamp_value, clamp_value)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add a bias along one dimension, apply an activation, scale and optionally clamp.

    Args:
        x: input ``[d0, ..., d_{n-1}]``, n >= 1, floating dtype. A non-contiguous ``x`` is copied
            to a contiguous one first; the result is always contiguous.
        b: bias ``[x.shape[dim]]`` on the same device with the same dtype as ``x``, or ``None``.
        dim: the dimension of ``x`` that ``b`` runs along (negative values count from the end).
        act: ``"linear"`` or ``"lrelu"``.
        alpha: negative slope of ``"lrelu"``.
        gain: output scale; ``None`` means 1 for ``"linear"`` and ``sqrt(2)`` for ``"lrelu"``.
        clamp: clamp the output to ``[-clamp, clamp]``; ``None`` means no clamping.
        impl: ``"auto"``, ``"ref"`` or ``"native"`` (see :mod:`navcuda.ops._native`).

    Returns:
        ``y`` with the shape and dtype of ``x``. Differentiable twice w.r.t. ``x`` and ``b``.
    """
    dim, alpha, gain, clamp_value = _check_args(x, b, dim, act, alpha, gain, clamp)
    if _native.resolve_impl(_OP, impl, x) == "ref":
        return ref_bias_act(x, b, dim, act, alpha, gain, clamp)
    return torch.ops.navcuda.bias_act(
        x.contiguous(), None if b is None else b.contiguous(), dim, act, alpha, gain, clamp_value
    )


# ------------------------------------------------------------------------- native custom ops
# Internal: arguments are already validated by bias_act(); clamp < 0 means no clamp. Called
# directly (torch.ops.navcuda.bias_act), the ops check what the C++ side cannot see (devices,
# dtypes, dim, act; _check_op_args), and the C++ entry points every size (a bias of the wrong
# length, ...), so that no call reaches memory outside its tensors.

_T = _native.OpTensor


def _check_op_args(op: str, act: str, *tensors: _native.OpTensor) -> None:
    _native.check_op_tensors(op, *tensors)
    if act not in ACTIVATIONS:
        raise ValueError(f"{op}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")


def _split_dims(shape: torch.Size, dim: int) -> tuple[int, int, int]:
    """View a contiguous ``shape`` as ``[outer, channels, inner]`` around ``dim``."""
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])


@torch.library.custom_op("navcuda::bias_act", mutates_args=())
def _bias_act_op(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float,
) -> torch.Tensor:
    _check_op_args("navcuda::bias_act", act, _T("x", x), _T("b", b, 1))
    if not 0 <= dim < x.ndim:
        raise ValueError(f"navcuda::bias_act: dim={dim} is not a dimension of x {list(x.shape)}")
    x = x.contiguous()
    b = None if b is None else b.contiguous()
    y = torch.empty_like(x)
    if x.numel() > 0:
        outer, channels, inner = _split_dims(x.shape, dim)
        _native.run_kernel(
            "bias_act", x.device,
            _native.buffer(x), _native.buffer(b), _native.buffer(y),
            outer, channels, inner, _native.dtype_code(x.dtype),
            ACTIVATIONS[act][0], alpha, gain, clamp,
        )  # fmt: skip
    return y


@_bias_act_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("navcuda::bias_act_grad", mutates_args=())
def _bias_act_grad_op(
    dy: torch.Tensor, y: torch.Tensor, act: str, alpha: float, gain: float, clamp: float
) -> torch.Tensor:
    """dx = dy * gain * act'(pre-activation) * clamp mask, from the saved output ``y``."""
    _check_op_args("navcuda::bias_act_grad", act, _T("dy", dy), _T("y", y))
    dy = dy.contiguous()  # autograd may hand in expanded (stride-0) gradients
    y = y.contiguous()
    if dy.shape != y.shape:
        raise ValueError(
            f"navcuda::bias_act_grad: dy {list(dy.shape)} does not match y {list(y.shape)}"
        )
    dx = torch.empty_like(dy)
    if dy.numel() > 0:
        _native.run_kernel(
            "bias_act_grad", dy.device,
            _native.buffer(dy), _native.buffer(y), _native.buffer(dx),
            dy.numel(), _native.dtype_code(dy.dtype),
            ACTIVATIONS[act][0], alpha, gain, clamp,
        )  # fmt: skip
    return dx


@_bias_act_grad_op.register_fake
def _(dy, y, act, alpha, gain, clamp):
    return torch.empty_like(dy, memory_format=torch.contiguous_format)


def _bias_act_setup_context(ctx, inputs, output):
    x, b, dim, act, alpha, gain, clamp = inputs
    ctx.save_for_backward(output)
    ctx.has_bias = b is not None
    ctx.dim = dim
    ctx.args = (act, alpha, gain, clamp)


def _bias_act_backward(ctx, dy):
    (y,) = ctx.saved_tensors
    dx = torch.ops.navcuda.bias_act_grad(dy, y, *ctx.args)
    db = None
    if ctx.has_bias and ctx.needs_input_grad[1]:
        other_dims = [i for i in range(dx.ndim) if i != ctx.dim]
        db = dx.sum(dim=other_dims) if other_dims else dx  # sum(dim=[]) would reduce everything
    return dx, db, None, None, None, None, None


_bias_act_op.register_autograd(_bias_act_backward, setup_context=_bias_act_setup_context)


def _bias_act_grad_setup_context(ctx, inputs, output):
    dy, y, act, alpha, gain, clamp = inputs
    ctx.save_for_backward(y)
    ctx.args = (act, alpha, gain, clamp)


def _bias_act_grad_backward(ctx, ddx):
    # The op is linear in dy with the same coefficients, and piecewise constant in y (zero
    # derivative almost everywhere): d/d(dy) is the op itself, d/dy is zero.
    (y,) = ctx.saved_tensors
    return torch.ops.navcuda.bias_act_grad(ddx, y, *ctx.args), None, None, None, None, None


_bias_act_grad_op.register_autograd(
    _bias_act_grad_backward, setup_context=_bias_act_grad_setup_context
)
