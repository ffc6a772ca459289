"""How navcuda's StyleGAN2 layers run in eval mode: the strategy of each shifted modulated
convolution and the choice a ``with conv_route(...)`` block makes (thread/task local).

Read with :mod:`navcuda.models.stylegan2` (the generator) and :mod:`navcuda.models.stylegan2_layers`
(its modules, which consult the route).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from navcuda.models.interface import materialise_spec
from navcuda.ops.shifted_modconv import (
    STRATEGIES,
    PerSampleShift,
    SharedShift,
    SplitShift,
    SVDShift,
    choose_strategy,
)

__all__ = ["CONV_ROUTES", "LAYOUTS", "ShiftSpec", "conv_route", "eval_strategy"]

#: Structured shift specifications a :class:`~navcuda.models.interface.LayerShift` can carry.
ShiftSpec = SplitShift | SVDShift
_OpShift = SharedShift | PerSampleShift | SplitShift | SVDShift


#: Values of :func:`conv_route`'s ``strategy``: ``"auto"`` (:func:`eval_strategy`), ``"legacy"``
#: (the pre-fusion grouped route) or one :mod:`~navcuda.ops.shifted_modconv` strategy, forced.
CONV_ROUTES = ("auto", "legacy", *STRATEGIES)
_IMPLS = ("auto", "ref", "native")


#: Values of :func:`conv_route`'s ``layout``.
LAYOUTS = ("auto", "nchw", "channels_last")


@dataclass(frozen=True)
class _Route:
    strategy: str = "auto"
    impl: str = "auto"
    layout: str = "auto"


_DEFAULT_ROUTE = _Route()
_ROUTE: contextvars.ContextVar[_Route | None] = contextvars.ContextVar(
    "navcuda_conv_route", default=None
)


def _route() -> _Route:
    return _ROUTE.get() or _DEFAULT_ROUTE


@contextlib.contextmanager
def conv_route(
    strategy: str | None = None, impl: str | None = None, layout: str | None = None
) -> Iterator[None]:
    """Choose how eval-mode StyledConv layers run inside a ``with`` block (thread/task local).

    Args:
        strategy: ``"auto"`` (default: :func:`eval_strategy`); ``"legacy"``: the route of the
            pre-fusion code, kept as the reference -- materialise the per-sample kernels
            ``W + delta_b`` (structured shifts included), one grouped convolution
            (:func:`~navcuda.ops.modulated_conv2d.modulated_conv2d`), then noise and ``bias_act``;
            or a :mod:`~navcuda.ops.shifted_modconv` strategy (``"grouped"``, ``"shared"``,
            ``"factorised"``, ``"split"``) forced for the shifted layer (``ValueError`` if it
            does not support the shift; per-sample deltas run ``"split"`` as one direction per
            sample) and, when it can run them (``"grouped"``, ``"shared"``), for the unshifted
            layers too (the others run ``"shared"``). Forced strategies give up the bit-identity
            of zero shifts that ``"auto"`` guarantees. None: keep the enclosing block's choice.
        impl: implementation of the fused pieces (``"auto"``, ``"ref"``, ``"native"``, see
            :mod:`navcuda.ops._native`); ``"ref"`` is needed for double backward and forward-mode
            AD through the generator. None: keep the enclosing block's choice.
        layout: memory layout of an eval-mode generator's activations: ``"auto"`` (default:
            channels-last on the CPU, where oneDNN runs the generator's convolutions, transposed
            convolutions and blurs 2.7-7x faster in it than NCHW and the native epilogue reads
            it; NCHW elsewhere, and always with the ``"legacy"`` reference route),
            ``"nchw"`` or ``"channels_last"``. Rendered images are returned NCHW-contiguous
            either way. None: keep the enclosing block's choice.

    Training-mode modules are not affected (they always run the dense training path, NCHW).
    """
    cur = _route()
    if strategy is not None and strategy not in CONV_ROUTES:
        raise ValueError(f"conv_route: strategy must be one of {CONV_ROUTES}, got {strategy!r}")
    if impl is not None and impl not in _IMPLS:
        raise ValueError(f"conv_route: impl must be one of {_IMPLS}, got {impl!r}")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"conv_route: layout must be one of {LAYOUTS}, got {layout!r}")
    token = _ROUTE.set(
        _Route(
            cur.strategy if strategy is None else strategy,
            cur.impl if impl is None else impl,
            cur.layout if layout is None else layout,
        )
    )
    try:
        yield
    finally:
        _ROUTE.reset(token)


def _zero_shift_any(spec: _OpShift) -> bool:
    """Whether some sample's shift is exactly zero (``t_b == 0`` or an all-zero direction)."""
    if isinstance(spec, PerSampleShift):
        return bool(spec.delta.detach().flatten(1).eq(0).all(dim=1).any())
    if isinstance(spec, SplitShift):
        zero_dir = spec.delta.detach().flatten(1).eq(0).all(dim=1)
        return bool((spec.t.detach().eq(0) | zero_dir[spec.index]).any())
    if isinstance(spec, SVDShift):  # the coefficient rows are non-zero (checked by the op)
        return bool(spec.t.detach().eq(0).any())
    return False


def _per_sample_as_split(spec: PerSampleShift) -> SplitShift:
    """Per-sample deltas as a split shift: direction ``b`` for sample ``b``, ``t = 1``."""
    d = spec.delta
    batch = d.shape[0]
    ones = torch.ones(batch, dtype=d.dtype, device=d.device)
    return SplitShift(d, ones, torch.arange(batch, device=d.device))


def eval_strategy(
    weight: torch.Tensor, spec: _OpShift | None, shared_input: bool = False
) -> tuple[_OpShift | None, str]:
    """The (shift, strategy) an eval-mode StyledConv runs under ``conv_route("auto")``.

    ``weight`` is the raw kernel ``[out, in, k, k]``, ``spec`` the layer's shift as a
    :mod:`~navcuda.ops.shifted_modconv` specification (None: unshifted); ``shared_input``:
    every sample has the same input and styles (:func:`~navcuda.ops.shifted_modconv.shares_input`).

    Zero shifts must render bit-identically to the unshifted render (strips show ``t = 0`` next to
    ``t != 0`` and users compare them). The unshifted render is the ``"shared"`` strategy: one dense
    convolution ``y0 = conv(x * s, scale W)``, demodulation from ``sum_taps W^2``, then the fused
    epilogue. Two strategies reproduce it exactly at a zero shift: ``"shared"`` itself
    (``W + 0 == W``) and ``"split"``, whose base convolution IS ``y0`` and which adds
    ``t_b * y1`` (``+ 0`` exactly) and demodulates from ``Q0 + t (2 Q1 + t Q2)`` (``Q0 + 0``
    exactly). ``"grouped"`` (modulated kernels materialised per sample) and ``"factorised"``
    (``y0`` from the SVD factors) round differently, so they run only when no sample's shift is
    zero; otherwise the batch takes ``"split"`` (same function, same gradients, up to rounding).

    For the same reason the unshifted eval render itself runs ``"shared"`` (not the pre-fusion
    grouped route, from which it differs by float rounding only, ~1e-6 relative per layer).

    Choices (``benchmarks/test_bench_shifted_modconv.py``; forward + backward on one CPU core,
    speed-ups over ``"grouped"``: shared 3.0x at 512 channels 16x16 batch 8 and 1.5x at 64
    channels batch 32, split with 2 directions 2.5x / 1.0x, factorised 1.3x / 2.2x):

    - None, :class:`SharedShift` -> ``"shared"``;
    - :class:`SplitShift` -> ``"split"`` when the batch uses at most ``B / 2`` distinct directions
      (each convolved once over its samples), some shift is zero, or the input is shared (the one
      input convolved once with every direction stacked as output channels: the FLOPs of the
      grouped convolution in one dense one); ``"grouped"`` otherwise (one direction per sample: a
      loop of convolutions over 1-2 samples each was 1.05-1.3x slower than one grouped
      convolution at the shapes above);
    - :class:`PerSampleShift` -> ``"grouped"``, or ``"split"`` (one direction per sample, ``t=1``)
      when some sample's delta is all zeros or the input is shared;
    - :class:`SVDShift` -> ``"factorised"`` (``"grouped"`` when ``W`` is not ``U diag(s) Vh``),
      ``"split"`` when some ``t_b`` is zero.
    """
    if spec is None or isinstance(spec, SharedShift):
        return spec, "shared"
    batch = spec.t.shape[0] if isinstance(spec, (SplitShift, SVDShift)) else spec.delta.shape[0]
    zero = _zero_shift_any(spec)
    if isinstance(spec, PerSampleShift):
        split = zero or shared_input
        return (_per_sample_as_split(spec), "split") if split else (spec, "grouped")
    if isinstance(spec, SplitShift):
        n_used = int(torch.unique(spec.index).numel())
        return spec, ("split" if zero or shared_input or 2 * n_used <= batch else "grouped")
    return spec, ("split" if zero else choose_strategy(weight, spec))


def _as_spec(shift: torch.Tensor | _OpShift | None, batch: int) -> _OpShift | None:
    """A shift as a shifted_modconv specification (materialised deltas: Shared/PerSampleShift)."""
    if not isinstance(shift, torch.Tensor):
        return shift
    if shift.ndim == 4:
        return SharedShift(shift)
    if shift.shape[0] == 1 and batch != 1:
        return SharedShift(shift[0])
    return PerSampleShift(shift)


def _as_delta(shift: torch.Tensor | _OpShift | None, kshape) -> torch.Tensor | None:
    """A shift as a materialised delta for ``modulated_conv2d`` (training and legacy routes)."""
    if shift is None or isinstance(shift, torch.Tensor):
        return shift
    if isinstance(shift, (SharedShift, PerSampleShift)):
        return shift.delta
    return materialise_spec(shift, tuple(kshape))
