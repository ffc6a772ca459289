"""The public entry points: :func:`shifted_modconv` (validate, pick a strategy, run it, then the
fused epilogue), :func:`ref_shifted_modconv` (the readable oracle) and :func:`choose_strategy`
(what ``strategy="auto"`` runs)."""

from __future__ import annotations

import functools

import torch

from navcuda.ops import _native
from navcuda.ops.shifted_modconv.factorised import _strategy_factorised, _svd_matches_weight
from navcuda.ops.shifted_modconv.fused_epilogue import _ACTS, _epilogue, ref_epilogue
from navcuda.ops.shifted_modconv.grouped import _strategy_grouped
from navcuda.ops.shifted_modconv.shared import _strategy_shared
from navcuda.ops.shifted_modconv.shifts import (
    _FLOAT_DTYPES,
    _OP,
    _SUPPORTED,
    PerSampleShift,
    SharedShift,
    SplitShift,
    SVDShift,
    _check_shift,
)
from navcuda.ops.shifted_modconv.split import _strategy_split
from navcuda.ops.svd_shift import ref_svd_shift

STRATEGIES = ("grouped", "shared", "factorised", "split")

# Each strategy returns (y0, y1 or None, t or None, dcoef or None) for the epilogue
# out = act(dcoef (y0 + t y1) + ns noise + bias).
_STRATEGY_FNS = {
    "grouped": _strategy_grouped,
    "shared": _strategy_shared,
    "factorised": _strategy_factorised,
    "split": _strategy_split,
    # The factorised strategy with its demodulation route forced (tests, benchmarks).
    **{
        f"factorised-{r}": functools.partial(_strategy_factorised, demod_route=r)
        for r in ("gram", "directions", "materialise")
    },
}


# Device types where strategy="auto" runs a SplitShift split (elsewhere grouped; package docstring).
_SPLIT_AUTO_DEVICES = frozenset({"cpu"})


def choose_strategy(weight: torch.Tensor, shift: object) -> str:
    """The strategy ``strategy="auto"`` runs for this shift (see the package docstring)."""
    if shift is None or isinstance(shift, SharedShift):
        return "shared"
    if isinstance(shift, PerSampleShift):
        return "grouped"
    if isinstance(shift, SplitShift):
        return "split" if weight.device.type in _SPLIT_AUTO_DEVICES else "grouped"
    if isinstance(shift, SVDShift):
        return "factorised" if _svd_matches_weight(weight, shift) else "grouped"
    raise TypeError(f"{_OP}: unsupported shift type {type(shift).__name__}")


def _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise, noise_strength,
                bias, act, clamp, strategy):  # fmt: skip
    """Validate everything; return (noise [Bn,1,H',W'] or None, ns [1] or None, clamp value)."""
    ck = _native.check_tensor
    ck(_OP, "x", x, dtypes=_FLOAT_DTYPES, ndim=4)
    ck(_OP, "weight", weight, ndim=4, like=x)
    batch, in_c, h, w_ = x.shape
    if batch == 0:
        raise ValueError(f"{_OP}: x has an empty batch {list(x.shape)}; pass at least one sample")
    out_c, w_in, kh, kw = weight.shape
    if w_in != in_c:
        raise ValueError(
            f"{_OP}: weight has {w_in} input channels but x has {in_c} (x {list(x.shape)}, "
            f"weight {list(weight.shape)})"
        )
    if kh != kw or kh % 2 != 1:
        raise ValueError(f"{_OP}: the kernel must be square with an odd size, got {kh}x{kw}")
    ck(_OP, "styles", styles, shape=[batch, in_c], like=x)
    if up not in (1, 2):
        raise ValueError(f"{_OP}: up must be 1 or 2, got {up!r}")
    if up == 2:
        if blur_filter is None:
            raise ValueError(f"{_OP}: up=2 needs blur_filter (e.g. make_filter((1,3,3,1), 4))")
        ck(_OP, "blur_filter", blur_filter, ndim=2, like=x)
    if not isinstance(demodulate, bool):
        raise TypeError(f"{_OP}: demodulate must be a bool, got {type(demodulate).__name__}")
    if act not in _ACTS:
        raise ValueError(f"{_OP}: act must be one of {sorted(_ACTS)}, got {act!r}")
    clamp_value = _native.clamp_value(_OP, clamp)
    if strategy != "auto" and strategy not in _STRATEGY_FNS:
        raise ValueError(f"{_OP}: strategy must be 'auto' or one of {STRATEGIES}, got {strategy!r}")
    _check_shift(shift, x, weight)
    if strategy != "auto" and strategy not in _SUPPORTED[type(shift)]:
        raise ValueError(
            f"{_OP}: strategy {strategy!r} does not support {type(shift).__name__}; "
            f"supported: {_SUPPORTED[type(shift)]}"
        )
    ho, wo = h * up, w_ * up
    if bias is not None:
        ck(_OP, "bias", bias, shape=[out_c], like=x)
    ns = None
    if noise is None:
        if noise_strength is not None:
            raise ValueError(f"{_OP}: noise_strength was given without noise")
    else:
        ck(_OP, "noise", noise, ndim=4, like=x)
        if (
            noise.shape[0] not in (1, batch)
            or noise.shape[1] != 1
            or tuple(noise.shape[2:])
            != (
                ho,
                wo,
            )
        ):
            raise ValueError(
                f"{_OP}: noise must have shape [B or 1, 1, {ho}, {wo}] (B={batch}), got "
                f"{list(noise.shape)}"
            )
        if noise_strength is None:
            ns = torch.ones(1, dtype=x.dtype, device=x.device)
        elif isinstance(noise_strength, torch.Tensor):
            ck(_OP, "noise_strength", noise_strength, like=x)
            if noise_strength.numel() != 1:
                raise ValueError(
                    f"{_OP}: noise_strength must have one element, got shape "
                    f"{list(noise_strength.shape)}"
                )
            ns = noise_strength.reshape(1)
        else:
            ns = torch.full((1,), float(noise_strength), dtype=x.dtype, device=x.device)
    return ns, clamp_value


def shifted_modconv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    shift: SharedShift | PerSampleShift | SVDShift | SplitShift | None = None,
    *,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    act: str = "lrelu",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
    strategy: str = "auto",
    impl: str = "auto",
) -> torch.Tensor:
    """Shifted modulated conv + noise + bias + activation + clamp (a whole ``StyledConv``).

    Args:
        x: activations ``[B, in, H, W]`` (float; any strides).
        weight: raw kernel ``[out, in, k, k]`` (odd k), before the equalized-lr scale.
        styles: ``[B, in]``.
        shift: ``None`` or a :class:`SharedShift`, :class:`PerSampleShift`, :class:`SVDShift`,
            :class:`SplitShift`; sample ``b`` uses ``W + t_b Delta_b``.
        demodulate: normalise each output channel of each sample's kernel.
        up: 1, or 2 (transposed stride-2 conv then ``blur_filter``, as ``ref_modulated_conv2d``).
        blur_filter: ``[4, 4]`` filter for ``up=2`` (already times ``up**2``).
        noise: ``[B or 1, 1, H*up, W*up]`` or None; added as ``noise_strength * noise``.
        noise_strength: one-element tensor (differentiable) or float; default 1.
        bias: ``[out]`` or None.
        act: ``"lrelu"`` (slope ``alpha``, default gain sqrt(2)) or ``"linear"`` (gain 1).
        gain: output scale (default per ``act``).
        clamp: clamp the output to ``[-clamp, clamp]`` (None: no clamp).
        strategy: ``"auto"`` or one of :data:`STRATEGIES` (see the package docstring).
        impl: ``"auto"``, ``"ref"``, ``"native"`` for the fused pieces (:mod:`navcuda.ops._native`).

    All tensors share ``x``'s device and dtype (indices: int32/int64 on the same device).
    Returns ``[B, out, H*up, W*up]``, differentiable w.r.t. ``x, weight, styles, noise_strength,
    bias``, the shift's ``delta`` / ``t`` / ``coeffs`` (``u, s, vh`` are constants).
    """
    ns, clamp_value = _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise,
                                  noise_strength, bias, act, clamp, strategy)  # fmt: skip
    if strategy == "auto":
        strategy = choose_strategy(weight, shift)
    # The strategies run in any memory layout; the epilogue picks its kernel by layout itself.
    which = _native.resolve_impl(_OP, impl, x, by_layout=False)
    y0, y1, t, dcoef = _STRATEGY_FNS[strategy](
        x, weight, styles, shift, demodulate, up, blur_filter, which
    )
    gain = _ACTS[act][1] if gain is None else float(gain)
    return _epilogue(y0, y1, t, dcoef, noise, ns, bias, act=act, alpha=alpha, gain=gain,
                     clamp=None if clamp_value < 0 else clamp_value,
                    impl="ref" if which == "ref" else impl)  # fmt: skip


def ref_shifted_modconv(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    shift: SharedShift | PerSampleShift | SVDShift | SplitShift | None = None,
    *,
    demodulate: bool = True,
    up: int = 1,
    blur_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_strength: torch.Tensor | float | None = None,
    bias: torch.Tensor | None = None,
    act: str = "lrelu",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """The oracle: per-sample kernels, grouped conv (``ref_modulated_conv2d``), plain-torch
    epilogue. Same arguments as :func:`shifted_modconv` (no strategy / impl)."""
    from navcuda.ops.modulated_conv2d import ref_modulated_conv2d

    ns, clamp_value = _check_args(x, weight, styles, shift, demodulate, up, blur_filter, noise,
                                  noise_strength, bias, act, clamp, "auto")  # fmt: skip
    batch = x.shape[0]
    if shift is None:
        delta = None
    elif isinstance(shift, SharedShift):
        delta = shift.delta
    elif isinstance(shift, PerSampleShift):
        delta = shift.delta
    elif isinstance(shift, SplitShift):
        delta = shift.t.view(-1, 1, 1, 1, 1) * shift.delta[shift.index]
    else:  # t_b * unflatten(U diag(dhat_b) Vh)
        delta = ref_svd_shift(torch.zeros_like(weight), shift.u, shift.vh, shift.t, shift.coeffs,
                              shift.index)  # fmt: skip
    if delta is not None and delta.ndim == 4:
        delta = delta.unsqueeze(0).expand(batch, *delta.shape)
    y = ref_modulated_conv2d(x, weight, styles, delta, demodulate, up, blur_filter, grouped=True)
    gain = _ACTS[act][1] if gain is None else float(gain)
    return ref_epilogue(y, noise=noise, ns=ns, bias=bias, act=act, alpha=alpha, gain=gain,
                        clamp=None if clamp_value < 0 else clamp_value)  # fmt: skip
