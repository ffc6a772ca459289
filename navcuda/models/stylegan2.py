"""StyleGAN2 generator (config F, skip architecture) in plain torch modules.

Readable top to bottom, in the shape of rosinality's ``model.py``: ``EqualLinear``,
``ModulatedConv2d``, ``StyledConv``, ``ToRGB`` composed in one ``Generator``. Parameter and buffer
names follow the rosinality layout (``style.1.weight``, ``convs.3.conv.weight``, ``noises.noise_0``,
...) so its checkpoints load without renaming; one buffer is added, ``w_avg`` (the mean of W, used
by truncation), which rosinality keeps outside the model as ``latent_avg``.

The synthesis network can run with the raw kernel of one conv layer shifted by an additive delta,
shared or per sample (:class:`LayerShift`); the model's parameters are never modified.

How a StyledConv runs
---------------------
In training mode (``module.training``) every StyledConv takes the dense path of NVlabs' training
code (modulate the activations, one ordinary convolution, scale by the demodulation
coefficients), or the grouped convolution for per-sample shifts, then noise and ``bias_act``.

In eval mode (rendering, discovery, Hessians) each StyledConv runs as ONE call of
:func:`navcuda.ops.shifted_modconv.shifted_modconv` (modulated conv + noise + bias + lrelu + clamp,
fused epilogue) with the strategy chosen for its shift (:func:`eval_strategy`): no shift or a shared
shift -> ``"shared"`` (one dense convolution); a :class:`~navcuda.ops.shifted_modconv.SplitShift`
-> ``"split"``; an :class:`~navcuda.ops.shifted_modconv.SVDShift` -> ``"factorised"``. A render of
a zero shift (``t = 0``) is bit-identical to the unshifted render of the same latents and noise
(``torch.equal``): see :func:`eval_strategy` for how. :func:`conv_route` overrides the choice for a
block of code (``"legacy"``: the pre-fusion grouped route, the reference of the benchmarks) and
picks the implementation of the fused pieces (``impl="ref"`` for double backward or forward-mode
AD; the native pieces support first-order reverse mode only).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LatentSpace,
    LayerInfo,
    LayerShift,
    ShiftableGenerator,
    ShiftArg,
    SplitState,
    frozen,
    materialise_spec,
    shift_map,
)
from navcuda.models.linearize import SuffixLinearization, linearize_suffix
from navcuda.ops.bias_act import bias_act
from navcuda.ops.modulated_conv2d import modulated_conv2d
from navcuda.ops.shifted_modconv import (
    STRATEGIES,
    PerSampleShift,
    SharedShift,
    SplitShift,
    SVDShift,
    choose_strategy,
    shares_input,
    shifted_modconv,
)
from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

__all__ = [
    "CONV_ROUTES",
    "LAYOUTS",
    "Generator",
    "GeneratorConfig",
    "LayerShift",
    "PRESETS",
    "SynthesisState",
    "conv_route",
    "frozen",
    "eval_strategy",
]

NoiseMode = Literal["const", "random", "none"]


@dataclass
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator.

    Channels at resolution ``r`` are ``min(channel_base // r, channel_max)`` unless ``channel_map``
    gives them explicitly (``{resolution: channels}`` for every resolution 4..``resolution``).
    rosinality's ``channel_multiplier=m`` equals ``channel_base=16384*m, channel_max=512``.
    ``c_dim > 0`` makes the generator conditional (NVlabs stylegan2-ada): the label ``c`` is
    embedded to ``embed_dim`` features (default ``w_dim``), normalised and concatenated with
    the normalised ``z`` before the mapping layers.
    """

    resolution: int = 1024
    z_dim: int = 512
    w_dim: int = 512
    n_mlp: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    channel_map: dict[int, int] | None = None
    lr_mlp: float = 0.01
    conv_clamp: float | None = None
    img_channels: int = 3
    blur_taps: tuple[int, ...] = field(default=(1, 3, 3, 1))
    c_dim: int = 0
    embed_dim: int | None = None

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if not (log2 == int(log2) and 3 <= log2 <= 11):
            raise ValueError(
                f"resolution must be a power of two in [8, 2048], got {self.resolution}"
            )
        if self.z_dim <= 0 or self.w_dim <= 0 or self.n_mlp <= 0:
            raise ValueError(
                f"z_dim, w_dim and n_mlp must be positive, got {self.z_dim}, {self.w_dim}, "
                f"{self.n_mlp}"
            )
        if self.channel_map is not None:
            self.channel_map = {int(k): int(v) for k, v in self.channel_map.items()}
            missing = [r for r in self.resolutions if r not in self.channel_map]
            if missing:
                raise ValueError(f"channel_map lacks resolutions {missing}")
        self.blur_taps = tuple(self.blur_taps)
        if self.c_dim < 0 or (self.embed_dim is not None and self.embed_dim <= 0):
            raise ValueError(
                f"c_dim must be >= 0 and embed_dim positive, got {self.c_dim}, {self.embed_dim}"
            )
        if self.c_dim == 0:
            self.embed_dim = None
        elif self.embed_dim is None:
            self.embed_dim = self.w_dim

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def resolutions(self) -> list[int]:
        """Block resolutions 4, 8, ..., resolution."""
        return [2**i for i in range(2, self.log2_resolution + 1)]

    @property
    def num_ws(self) -> int:
        """Number of W vectors consumed by synthesis (W+ length)."""
        return self.log2_resolution * 2 - 2

    def channels(self, res: int) -> int:
        if self.channel_map is not None:
            return self.channel_map[res]
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blur_taps"] = list(self.blur_taps)
        if self.channel_map is not None:
            d["channel_map"] = {str(k): v for k, v in self.channel_map.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def rosinality(
        cls, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
    ) -> GeneratorConfig:
        """The config of rosinality's ``Generator(size, style_dim, n_mlp, channel_multiplier)``."""
        return cls(
            resolution=size,
            z_dim=style_dim,
            w_dim=style_dim,
            n_mlp=n_mlp,
            channel_base=16384 * channel_multiplier,
            channel_max=512,
        )


PRESETS: dict[str, GeneratorConfig] = {
    # The official configs of the paper's models (rosinality conversions, channel multiplier 2).
    "ffhq-1024": GeneratorConfig.rosinality(1024),
    "cars-512": GeneratorConfig.rosinality(512),
    "horse-256": GeneratorConfig.rosinality(256),
    "church-256": GeneratorConfig.rosinality(256),
}


#: Structured shift specifications a :class:`LayerShift` can carry (``spec=``).
ShiftSpec = SplitShift | SVDShift
_OpShift = SharedShift | PerSampleShift | SplitShift | SVDShift


def stylegan2_layers(config: GeneratorConfig) -> list[LayerInfo]:
    """Every conv layer of a StyleGAN2 of ``config``, in synthesis order: ``conv1`` (the 4x4
    input conv, no official index), ``convs.{ix}`` (official index ``ix``: even = upsampling conv
    to ``2**(ix//2 + 3)``, odd = plain conv at that resolution) and the toRGB layers (listed,
    not shiftable: 1x1, no demodulation)."""
    c4 = config.channels(4)
    rgb = config.img_channels

    def info(name, index, role, res, in_c, out_c, k, w_index):
        return LayerInfo(name, "modulated", (out_c, in_c, k, k), res, index, role,
                         role != "torgb", w_index)  # fmt: skip

    out = [info("conv1", None, "input_conv", 4, c4, c4, 3, 0),
           info("to_rgb1", None, "torgb", 4, c4, rgb, 1, 1)]  # fmt: skip
    in_c = c4
    for j, res in enumerate(config.resolutions[1:]):
        out_c = config.channels(res)
        out.append(info(f"convs.{2 * j}", 2 * j, "upconv", res, in_c, out_c, 3, 2 * j + 1))
        out.append(info(f"convs.{2 * j + 1}", 2 * j + 1, "conv", res, out_c, out_c, 3, 2 * j + 2))
        out.append(info(f"to_rgbs.{j}", None, "torgb", res, out_c, rgb, 1, 2 * j + 3))
        in_c = out_c
    return out


# ----------------------------------------------------------------------------- eval-mode routes

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


@dataclass
class SynthesisState:
    """Synthesis stopped before ``layer``: its input activations ``x [B, C, r, r]`` and the RGB
    skip sum ``img`` so far (None before the first toRGB)."""

    layer: str
    x: torch.Tensor
    img: torch.Tensor | None


def _in_layout(x: torch.Tensor, layout: torch.memory_format, keep_broadcast: bool) -> torch.Tensor:
    """``x`` in ``layout``. With ``keep_broadcast`` (``x`` goes to a shifted layer) a broadcast
    view of one sample (batch stride 0: one latent under many shifts) stays one, that sample
    converted: the layer's split strategy convolves it once (``shares_input``)."""
    if keep_broadcast and x.shape[0] > 1 and x.stride(0) == 0:
        return x[:1].contiguous(memory_format=layout).expand_as(x)
    return x.contiguous(memory_format=layout)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (weights stored as N(0, 1/lr_mul^2))."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x, self.weight * self.scale)
        return bias_act(
            y,
            self.bias * self.lr_mul,
            act="lrelu" if self.activation else "linear",
            impl=_route().impl,
        )


class Blur(nn.Module):
    def __init__(self, taps: tuple[int, ...], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_filter(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    def __init__(self, taps: tuple[int, ...], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_filter(taps, factor**2))
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Modulated conv; raw kernel ``weight [1, out, in, k, k]`` (rosinality layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
        )
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            # Kept as a module so that the buffer name matches rosinality (`conv.blur.kernel`).
            p = (len(blur_taps) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(
            x,
            self.weight[0],
            styles,
            delta=delta,
            demodulate=self.demodulate,
            up=2 if self.upsample else 1,
            blur_filter=self.blur.kernel if self.upsample else None,
            # Training uses the dense form (fast forward and backward); evaluation materialises the
            # per-sample kernels (toRGB layers, and StyledConv under conv_route("legacy"): eval-mode
            # StyledConv layers otherwise run shifted_modconv, see StyledConv.forward).
            grouped=not self.training or (delta is not None and delta.ndim == 5),
        )


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Holds the bias of a StyledConv (rosinality name: ``activate.bias``)."""

    def __init__(self, channels: int, clamp: float | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, act="lrelu", clamp=self.clamp, impl=_route().impl)


class StyledConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, 3, style_dim, upsample=upsample, blur_taps=blur_taps
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels, clamp=conv_clamp)

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None,
        shift: torch.Tensor | _OpShift | None = None,
    ) -> torch.Tensor:
        """``x [B, in, H, W]``, ``w [B, w_dim]``, ``noise [B or 1, 1, H', W']`` or None.

        ``shift``: None, a materialised delta (``[out, in, k, k]`` or ``[B, out, in, k, k]``) or a
        :mod:`~navcuda.ops.shifted_modconv` specification (validated by the caller,
        :meth:`Generator._check_shift`). See the module docstring for the route taken.
        """
        route = _route()
        if self.training or route.strategy == "legacy":
            delta = _as_delta(shift, self.conv.weight.shape[1:])
            return self.activate(self.noise(self.conv(x, w, delta), noise))
        conv = self.conv
        weight = conv.weight[0]
        styles = conv.modulation(w)
        spec = _as_spec(shift, x.shape[0])
        if route.strategy == "auto":
            shared = spec is not None and shares_input(x, styles)
            spec, strategy = eval_strategy(weight, spec, shared)
        elif spec is None and route.strategy not in ("grouped", "shared"):
            strategy = "shared"  # a forced shift strategy concerns the shifted layer only
        else:
            strategy = route.strategy
            if strategy == "split" and isinstance(spec, PerSampleShift):
                spec = _per_sample_as_split(spec)
        return shifted_modconv(
            x,
            weight,
            styles,
            spec,
            demodulate=conv.demodulate,
            up=2 if conv.upsample else 1,
            blur_filter=conv.blur.kernel if conv.upsample else None,
            noise=noise,
            noise_strength=None if noise is None else self.noise.weight,
            bias=self.activate.bias,
            act="lrelu",
            clamp=self.activate.clamp,
            strategy=strategy,
            impl=route.impl,
        )


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


class ToRGB(nn.Module):
    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        img_channels: int = 3,
        upsample: bool = True,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))
        self.clamp = conv_clamp

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        route = _route()
        if self.training or route.strategy == "legacy":
            y = bias_act(
                self.conv(x, w),
                self.bias.flatten(),
                act="linear",
                clamp=self.clamp,
                impl=route.impl,
            )
        else:
            # Eval: one dense 1x1 convolution of the modulated activations plus the fused
            # epilogue (bias, clamp), instead of a grouped convolution with per-sample kernels.
            y = shifted_modconv(
                x,
                self.conv.weight[0],
                self.conv.modulation(w),
                None,
                demodulate=False,
                bias=self.bias.flatten(),
                act="linear",
                clamp=self.clamp,
                strategy="grouped" if route.strategy == "grouped" else "shared",
                impl=route.impl,
            )
        if skip is not None:
            y = y + self.upsample(skip)
        return y


class _ToNCHW(torch.autograd.Function):
    """``x.contiguous()`` whose gradient goes back in ``layout``: a backward pass through a
    channels-last synthesis then runs channels-last too (an NCHW image gradient would turn every
    gradient below it NCHW, where oneDNN is slower and layouts get converted back and forth)."""

    @staticmethod
    def forward(ctx, x, layout):
        ctx.layout = layout
        return x.contiguous()

    @staticmethod
    def backward(ctx, g):
        return g.contiguous(memory_format=ctx.layout), None

    @staticmethod
    def jvp(ctx, gx, _):  # forward-mode AD (PerceptualHessian's "forward" mode)
        return gx.contiguous()


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module, ShiftableGenerator):
    """StyleGAN2 generator: ``z [B, z_dim] -> image [B, img_channels, R, R]`` in about [-1, 1].

    Layer names (see :mod:`navcuda.models.layers`): ``conv1`` (4x4 input conv), ``convs.{ix}``
    (even ix: upsampling conv to ``2**(ix//2 + 3)``, odd ix: plain conv at that resolution),
    ``to_rgb1`` and ``to_rgbs.{j}``.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else GeneratorConfig()
        self.config = cfg
        taps = cfg.blur_taps
        if cfg.c_dim:  # NVlabs' label embedding (linear, lr 1), before the mapping layers
            self.embed = EqualLinear(cfg.c_dim, cfg.embed_dim)
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(
                    cfg.z_dim + (cfg.embed_dim or 0) if i == 0 else cfg.w_dim,
                    cfg.w_dim,
                    lr_mul=cfg.lr_mlp,
                    activation=True,
                )
                for i in range(cfg.n_mlp)
            ],
        )
        c4 = cfg.channels(4)
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, cfg.w_dim, blur_taps=taps, conv_clamp=cfg.conv_clamp)
        self.to_rgb1 = ToRGB(
            c4, cfg.w_dim, cfg.img_channels, upsample=False, conv_clamp=cfg.conv_clamp
        )
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        self.num_layers = (cfg.log2_resolution - 2) * 2 + 1
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))
        in_c = c4
        for res in cfg.resolutions[1:]:
            out_c = cfg.channels(res)
            self.convs.append(
                StyledConv(
                    in_c,
                    out_c,
                    cfg.w_dim,
                    upsample=True,
                    blur_taps=taps,
                    conv_clamp=cfg.conv_clamp,
                )
            )
            self.convs.append(
                StyledConv(out_c, out_c, cfg.w_dim, blur_taps=taps, conv_clamp=cfg.conv_clamp)
            )
            self.to_rgbs.append(
                ToRGB(out_c, cfg.w_dim, cfg.img_channels, blur_taps=taps, conv_clamp=cfg.conv_clamp)
            )
            in_c = out_c
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    # ------------------------------------------------------------------ mapping
    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def mapping(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z [B, z_dim] -> w [B, w_dim]``, truncated towards ``w_avg`` by ``truncation_psi``.

        ``z`` must be finite, on the generator's device; another floating dtype is cast to the
        generator's. ``c``: a conditional generator's labels, class indices ``[B]`` or (soft)
        one-hot vectors ``[B, c_dim]`` (required there, refused by unconditional ones)."""
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a tensor [B, {self.config.z_dim}], got {type(z).__name__}")
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"z must have shape [B, {self.config.z_dim}], got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"z must be a floating tensor, got {z.dtype}")
        if z.device != self.w_avg.device:
            raise ValueError(
                f"z is on {z.device} but the generator is on {self.w_avg.device}; move it there "
                f"(z.to({str(self.w_avg.device)!r}))"
            )
        if not math.isfinite(float(truncation_psi)):
            raise ValueError(f"truncation_psi must be a finite number, got {truncation_psi!r}")
        if not torch.isfinite(z).all():
            raise ValueError("z contains NaN or inf")
        x = z.to(self.w_avg.dtype)
        if self.config.c_dim:
            x = self.style[0](x)  # NVlabs normalises z and the embedded label apart
            y = self.style[0](self.embed(self.one_hot(c, z.shape[0])))
            w = self.style[1:](torch.cat([x, y], dim=1))
        else:
            if c is not None:
                raise GeneratorError("this generator is unconditional: it takes no label c")
            w = self.style(x)
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype) + truncation_psi * (w - self.w_avg.to(w.dtype))
        return w

    @torch.no_grad()
    def update_w_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``mapping(z)`` (untruncated) over ``n`` seeded samples
        (a conditional generator: with labels drawn uniformly); returns it."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.z_dim, generator=gen).to(self.w_avg.device)
        c = torch.randint(self.config.c_dim, (n,), generator=gen) if self.config.c_dim else None
        self.w_avg.copy_(self.mapping(z, 1.0, c).mean(0))
        return self.w_avg

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.config.c_dim

    def one_hot(self, c: object, batch: int) -> torch.Tensor:
        """A conditional generator's labels as ``[batch, c_dim]`` (one-hot for class indices;
        floating ``[batch, c_dim]`` vectors, NVlabs' soft labels, as given)."""
        if c is None:
            raise GeneratorError(
                f"this generator is conditional ({self.config.c_dim} classes): give labels c "
                "(class indices [B] or one-hot [B, c_dim])"
            )
        t = torch.as_tensor(c)
        if t.is_floating_point():
            if tuple(t.shape) != (batch, self.config.c_dim) or not torch.isfinite(t).all():
                raise GeneratorError(
                    f"floating labels must be finite [{batch}, {self.config.c_dim}], got "
                    f"{list(t.shape)}"
                )
            return t.to(self.w_avg.device, self.w_avg.dtype)
        labels = self.check_label(t.flatten() if t.ndim else t, batch).to(self.w_avg.device)
        return nn.functional.one_hot(labels, self.config.c_dim).to(self.w_avg.dtype)

    # ---------------------------------------------------------------- synthesis
    def _noise(self, mode: NoiseMode, idx: int, like: torch.Tensor, res: int):
        if mode == "const":
            return getattr(self.noises, f"noise_{idx}").to(like.dtype)
        if mode == "random":
            return torch.randn(like.shape[0], 1, res, res, device=like.device, dtype=like.dtype)
        if mode == "none":
            return None
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {mode!r}")

    def _broadcast_ws(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.config.w_dim:
            raise ValueError(
                f"ws must be [B, {self.config.w_dim}] or [B, {self.num_ws}, {self.config.w_dim}], "
                f"got {tuple(ws.shape)}"
            )
        return ws

    def synthesis(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        shift: LayerShift | None = None,
    ) -> torch.Tensor:
        """Render ``ws`` (``[B, w_dim]`` or W+ ``[B, num_ws, w_dim]``) to ``[B, C, R, R]``.

        ``noise_mode``: ``"const"`` uses the stored noise buffers (deterministic), ``"random"``
        draws fresh noise, ``"none"`` disables noise. ``shift`` adds a delta to the raw kernel of
        one StyledConv for this call only (the parameters are not modified).
        """
        ws = self._broadcast_ws(ws)
        deltas = self._check_shift(shift, ws.shape[0])
        x = self.input(ws.shape[0]).to(ws.dtype)
        _, img = self._run(ws, noise_mode, deltas, x, None, 0, len(self._plan()))
        return img

    def synthesis_prefix(
        self, ws: torch.Tensor, layer: int | str, noise_mode: NoiseMode = "const"
    ) -> SynthesisState:
        """Run synthesis up to (not including) ``layer``; the result does not depend on a shift
        of that layer or later ones, so it can be computed once and reused."""
        ws = self._broadcast_ws(ws)
        name = self.layer(layer).name
        stop = [info.name for info in self._plan()].index(name)
        x = self.input(ws.shape[0]).to(ws.dtype)
        x, img = self._run(ws, noise_mode, {}, x, None, 0, stop)
        return SynthesisState(name, x, img)

    def synthesis_suffix(
        self,
        state: SynthesisState,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        shift: LayerShift | None = None,
    ) -> torch.Tensor:
        """Finish a synthesis started by :meth:`synthesis_prefix` (``ws`` as given there); the
        shift may concern ``state.layer`` or any later layer. Returns ``[B, C, R, R]``."""
        ws = self._broadcast_ws(ws)
        if ws.shape[0] != state.x.shape[0]:
            raise ValueError(
                f"ws has batch {ws.shape[0]} but the saved state has batch {state.x.shape[0]}"
            )
        deltas = self._check_shift(shift, ws.shape[0])
        names = [info.name for info in self._plan()]
        start = names.index(state.layer)
        early = [n for n in deltas if names.index(n) < start]
        if early:
            raise ValueError(f"cannot shift {early[0]!r}: it runs before {state.layer!r}")
        _, img = self._run(ws, noise_mode, deltas, state.x, state.img, start, len(names))
        return img

    def _plan(self) -> list[LayerInfo]:
        if getattr(self, "_plan_cache", None) is None:
            self._plan_cache = stylegan2_layers(self.config)
        return self._plan_cache

    def _activation_layout(self, x: torch.Tensor) -> torch.memory_format | None:
        """The layout :func:`conv_route` asks for (None: leave ``x`` as it is)."""
        route = _route()
        if self.training or route.layout == "nchw":
            return None
        if route.layout == "channels_last" or (
            route.strategy != "legacy" and x.device.type == "cpu"
        ):
            return torch.channels_last
        return None

    def _run(self, ws, noise_mode, deltas, x, img, start: int, stop: int):
        """Apply the layers ``plan[start:stop]`` to ``(x, img)`` (``img`` is the RGB skip sum)."""
        layout = self._activation_layout(x)
        if layout is not None:
            x = _in_layout(x, layout, keep_broadcast=self._plan()[start].name in deltas)
        for info in self._plan()[start:stop]:
            module = self.get_submodule(info.name)
            w = ws[:, info.w_index]
            if info.role == "torgb":
                img = module(x, w, img)
                continue
            noise_idx = 0 if info.index is None else info.index + 1
            noise = self._noise(noise_mode, noise_idx, x, info.resolution)
            x = module(x, w, noise, deltas.get(info.name))
            if layout is not None:  # (a no-op unless a shifted layer's strategy changed it)
                x = x.contiguous(memory_format=layout)
        if layout is not None and img is not None:
            img = _ToNCHW.apply(img, layout)  # images leave NCHW (cheap: 3 channels)
        return x, img

    def _check_shift(self, shift: ShiftArg, batch: int) -> dict[str, torch.Tensor | ShiftSpec]:
        """Validate shifts against their layers and the batch: ``{layer name: delta or spec}``."""
        out: dict[str, torch.Tensor | ShiftSpec] = {}
        for s in shift_map(shift).values():
            info = self.layer(s.layer)
            s.check(info, self.kernel(info.name), batch)
            out[info.name] = s.spec if s.spec is not None else s.delta  # type: ignore[assignment]
        return out

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        noise_mode: NoiseMode = "const",
        shift: LayerShift | None = None,
        c: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``z [B, z_dim] -> image [B, C, R, R]``; see :meth:`mapping` and :meth:`synthesis`."""
        ws = self.mapping(z, truncation_psi, c)
        return self.synthesis(ws, noise_mode=noise_mode, shift=shift)

    # ------------------------------------------------------- the generator interface
    architecture = "stylegan2"

    @property
    def latent(self) -> LatentSpace:  # type: ignore[override]
        """W: ``inputs["ws"]`` (``[B, w_dim]`` or W+ ``[B, num_ws, w_dim]``)."""
        return LatentSpace("ws", self.config.w_dim, "w", standalone=True)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.w_avg.device

    @property
    def dtype(self) -> torch.dtype:  # type: ignore[override]
        return self.w_avg.dtype

    @property
    def image_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        r = self.config.resolution
        return (self.config.img_channels, r, r)

    def layers(self) -> list[LayerInfo]:
        """Every conv layer (:func:`stylegan2_layers`), toRGB layers listed as not shiftable."""
        return list(self._plan())

    def kernel(self, layer: int | str) -> torch.Tensor:
        """The raw kernel ``[out, in, kh, kw]`` of a layer (a view of the parameter)."""
        return self.get_submodule(self.layer(layer).name).conv.weight[0]

    def fingerprint(self) -> str:
        return model_fingerprint(self)

    def sample(
        self,
        n: int,
        seed: int | torch.Generator = 0,
        *,
        truncation_psi: float = 1.0,
        label=None,
        batch_size: int = 256,
    ) -> Inputs:
        """``{"ws": mapping(z) [n, w_dim]}`` for ``z ~ N(0, I) [n, z_dim]`` drawn on the CPU from
        ``seed`` (the same on every device; or from a ``torch.Generator``), mapped in chunks of
        ``batch_size``. Conditional: labels ``[n]`` given (one for all or one per sample), or
        drawn uniformly from the same stream after ``z``; they are kept as ``inputs["label"]``."""
        labels = self.check_label(label, n)
        if not isinstance(seed, torch.Generator):
            seed = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.config.z_dim, generator=seed)
        if self.config.c_dim and labels is None:
            labels = torch.randint(self.config.c_dim, (n,), generator=seed)
        with torch.no_grad():
            return self.from_z(z.to(self.device, self.dtype), truncation_psi, batch_size, labels)

    def sample_seeds(self, seeds, *, truncation_psi: float = 1.0, label=None) -> Inputs:
        """One input per seed (``z = randn(z_dim)`` from that seed), mapped together."""
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise GeneratorError("no seeds given")
        if self.config.c_dim:  # per seed: sample(1, s), labels drawn after z
            return super().sample_seeds(seeds, truncation_psi=truncation_psi, label=label)
        self.check_label(label, len(seeds))
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        z = torch.stack([torch.randn(self.config.z_dim, generator=g) for g in gens])
        with torch.no_grad():
            return self.from_z(z.to(self.device, self.dtype), truncation_psi)

    def from_z(
        self, z: torch.Tensor, truncation_psi: float = 1.0, batch_size: int = 256, label=None
    ) -> Inputs:
        """Inputs of latents ``z [B, z_dim]`` on the generator's device: ``{"ws": mapping(z)}``,
        mapped in chunks of ``batch_size`` (differentiable). A conditional generator needs its
        labels (class indices ``[B]`` or one for all, kept as ``"label"``; or soft one-hot
        ``[B, c_dim]``)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2:
            return Inputs({"ws": self.mapping(z, truncation_psi, label)})  # it says what's wrong
        if not self.config.c_dim:
            ws = torch.cat([self.mapping(zc, truncation_psi, label) for zc in z.split(batch_size)])
            return Inputs({"ws": ws})
        onehot = self.one_hot(label, z.shape[0])
        parts = zip(z.split(batch_size), onehot.split(batch_size), strict=True)
        ws = torch.cat([self.mapping(zc, truncation_psi, cc) for zc, cc in parts])
        soft = torch.as_tensor(label).is_floating_point()
        return Inputs({"ws": ws, "label": None if soft else onehot.argmax(1)})

    def render(self, inputs: Inputs, shift: ShiftArg = None) -> torch.Tensor:
        """``synthesis(inputs["ws"], noise_mode=inputs.options["noise_mode"] or "const")``."""
        return self.synthesis(inputs["ws"], noise_mode=_noise_mode(inputs), shift=shift)

    def split(self, inputs: Inputs, layer: int | str) -> SplitState:
        """The activations before ``layer`` and the RGB skip sum (:meth:`synthesis_prefix`)."""
        st = self.synthesis_prefix(inputs["ws"], layer, noise_mode=_noise_mode(inputs))
        return SplitState(st.layer, inputs, Inputs({"x": st.x, "img": st.img}))

    def resume(self, state: SplitState, shift: ShiftArg = None) -> torch.Tensor:
        cache = state.cache
        if cache is None:
            return super().resume(state, shift)
        st = SynthesisState(state.layer, cache["x"], cache.get("img"))
        ws = state.inputs["ws"]
        return self.synthesis_suffix(st, ws, noise_mode=_noise_mode(state.inputs), shift=shift)

    def latent_readers(self, layers) -> list[torch.Tensor]:
        """The style affines ``[in, w_dim]`` (with their equalised-lr scale) of ``layers``
        (names or indices, or ``"all"``: every modulated conv and toRGB)."""
        infos = self.layers() if layers == "all" else [self.layer(k) for k in layers]
        mats = []
        for info in infos:
            mod = self.get_submodule(info.name).conv.modulation
            mats.append(mod.weight * mod.scale)
        return mats

    def linearize(self, state: SplitState) -> SuffixLinearization:
        """The tangent map of the synthesis after ``state.layer`` at the unshifted render
        (:mod:`navcuda.models.linearize`): the Hessian's fast Gauss-Newton products."""
        if state.cache is None:
            state = self.split(state.inputs, state.layer)
        st = SynthesisState(state.layer, state.cache["x"], state.cache.get("img"))
        return linearize_suffix(self, st, state.inputs["ws"], _noise_mode(state.inputs))

    def reference_ops(self):
        """The pure-torch pieces (double backward, forward-mode AD): ``conv_route(impl="ref")``."""
        return conv_route(impl="ref")

    def official_route(self):
        """The official arrangement (per-sample kernels, grouped convolutions): ``"legacy"``."""
        return conv_route("legacy")


def _noise_mode(inputs: Inputs) -> NoiseMode:
    return inputs.options.get("noise_mode", "const")
