"""StyleGAN3's architecture from its config: :class:`StyleGAN3Config` (NVlabs' init kwargs), the
layer schedule (:func:`synthesis_schedule`: sampling rates, cutoffs, sizes, channels, filter taps
and padding of every layer, NVlabs' formulas), the layer list (:func:`stylegan3_layers`) and
NVlabs' low-pass filter design (:func:`design_lowpass_filter`). No weights: everything here runs
without building a model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from navcuda.models.interface import LayerInfo

__all__ = [
    "InputSpec",
    "LayerSpec",
    "StyleGAN3Config",
    "design_lowpass_filter",
    "stylegan3_layers",
    "synthesis_schedule",
]


@dataclass
class StyleGAN3Config:
    """Architecture of a StyleGAN3 generator: NVlabs' ``Generator`` / ``MappingNetwork`` /
    ``SynthesisNetwork`` / ``SynthesisLayer`` init kwargs under their own names, except the
    mapping network's ``num_layers`` and ``lr_multiplier`` (``mapping_layers``,
    ``mapping_lr_multiplier``). ``num_fp16_res``, ``w_avg_beta`` and ``magnitude_ema_beta`` only
    matter to NVlabs' training or CUDA fp16 runs; they are kept for the record."""

    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.998
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    num_fp16_res: int = 4
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256.0
    magnitude_ema_beta: float = 0.999

    def __post_init__(self) -> None:
        ints = ("z_dim", "w_dim", "img_resolution", "img_channels", "mapping_layers",
                "channel_base", "channel_max", "num_layers", "conv_kernel", "filter_size",
                "lrelu_upsampling")  # fmt: skip
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not float(v).is_integer() or v < 1:
                raise ValueError(f"StyleGAN3Config.{name} must be an integer >= 1, got {v!r}")
            setattr(self, name, int(v))
        for name in ("c_dim", "num_critical", "margin_size", "num_fp16_res"):
            v = getattr(self, name)
            if isinstance(v, bool) or not float(v).is_integer() or v < 0:
                raise ValueError(f"StyleGAN3Config.{name} must be an integer >= 0, got {v!r}")
            setattr(self, name, int(v))
        if self.num_critical >= self.num_layers:
            raise ValueError(
                f"num_critical ({self.num_critical}) must be below num_layers ({self.num_layers})"
            )
        if self.conv_clamp is not None:
            self.conv_clamp = float(self.conv_clamp)
        self.use_radial_filters = bool(self.use_radial_filters)

    @property
    def num_ws(self) -> int:
        """W vectors consumed: one for the input, one per layer (toRGB included)."""
        return self.num_layers + 2

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line naming the architecture (for error messages)."""
        kind = "R" if self.conv_kernel == 1 and self.use_radial_filters else "T"
        return (
            f"(StyleGAN3-{kind}-like, resolution {self.img_resolution}, z_dim {self.z_dim}, "
            f"c_dim {self.c_dim}, w_dim {self.w_dim}, {self.num_layers} layers, conv_kernel "
            f"{self.conv_kernel}, channel_base {self.channel_base}, channel_max "
            f"{self.channel_max})"
        )

    @classmethod
    def from_dict(cls, d: dict) -> StyleGAN3Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown StyleGAN3 config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def published(cls, cfg: str, resolution: int = 1024, **overrides) -> StyleGAN3Config:
        """NVlabs ``train.py``'s ``--cfg=stylegan3-t`` / ``stylegan3-r`` at ``resolution``
        (default ``--cbase=32768 --cmax=512``, 2 mapping layers; R: 1x1 convolutions, channel
        base and max doubled, radial downsampling filters); ``overrides`` replace fields."""
        name = cfg.lower().removeprefix("stylegan3-")
        if name not in ("t", "r"):
            raise ValueError(f"cfg must be 'stylegan3-t' or 'stylegan3-r', got {cfg!r}")
        kw: dict = dict(img_resolution=resolution, magnitude_ema_beta=0.5 ** (32 / 20e3))
        if name == "r":
            kw.update(conv_kernel=1, channel_base=65536, channel_max=1024, use_radial_filters=True)
        kw.update(overrides)
        return cls(**kw)


# ----------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer as NVlabs' ``SynthesisNetwork`` lays it out (sizes and rates in pixels
    of its feature maps; ``padding`` is ``(x0, x1, y0, y1)`` of the filtered leaky ReLU)."""

    name: str
    index: int
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    tmp_sampling_rate: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    conv_kernel: int
    padding: tuple[int, int, int, int]


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: channels, size, sampling rate and bandwidth (its cutoff)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


def synthesis_schedule(cfg: StyleGAN3Config) -> tuple[InputSpec, list[LayerSpec]]:
    """The input and the ``num_layers + 1`` layers of a StyleGAN3 synthesis network.

    NVlabs' formulas (paper, section 3.2 and appendix F): cutoffs ``f_c`` and minimum stopbands
    ``f_t`` progress geometrically from the first layer (``first_cutoff``, ``first_stopband``) to
    layer ``num_layers - num_critical`` (``img_resolution / 2`` and ``last_stopband_rel`` times
    that) and stay there; sampling rates are ``2**ceil(log2(min(2 f_t, img_resolution)))``;
    half-widths ``max(f_t, s / 2) - f_c``; sizes ``s + 2 margin_size`` (the last two layers
    ``img_resolution``); channels ``rint(min(channel_base / 2 / f_c, channel_max))`` (the last:
    ``img_channels``). Computed in float64 numpy, as NVlabs does.
    """
    n = cfg.num_layers
    last_cutoff = cfg.img_resolution / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** exponents
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, cfg.img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = cfg.img_resolution
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    first = InputSpec(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
    layers = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        torgb = idx == n
        critical = idx >= n - cfg.num_critical
        in_rate, out_rate = int(rates[prev]), int(rates[idx])
        tmp = max(in_rate, out_rate) * (1 if torgb else cfg.lrelu_upsampling)
        if tmp % in_rate or tmp % out_rate:
            raise ValueError(
                f"layer {idx}: the leaky ReLU's sampling rate {tmp} is not a multiple of the "
                f"input and output rates {in_rate}, {out_rate} (lrelu_upsampling "
                f"{cfg.lrelu_upsampling})"
            )
        up, down = tmp // in_rate, tmp // out_rate
        up_taps = cfg.filter_size * up if up > 1 and not torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not torgb else 1
        k = 1 if torgb else cfg.conv_kernel
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Output size before downsampling, minus the upsampled input, plus the filters' shrink;
        # the extra `up` in pad_lo centres the samples (paper, appendix C.3).
        total = (out_size - 1) * down + 1 - (in_size + k - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        out_c = int(channels[idx])
        layers.append(LayerSpec(
            name=f"L{idx}_{out_size}_{out_c}", index=idx, is_torgb=torgb,
            is_critically_sampled=critical, in_channels=int(channels[prev]), out_channels=out_c,
            in_size=in_size, out_size=out_size, in_sampling_rate=in_rate,
            out_sampling_rate=out_rate, in_cutoff=float(cutoffs[prev]),
            out_cutoff=float(cutoffs[idx]), in_half_width=float(half_widths[prev]),
            out_half_width=float(half_widths[idx]), tmp_sampling_rate=tmp, up_factor=up,
            down_factor=down, up_taps=up_taps, down_taps=down_taps,
            down_radial=cfg.use_radial_filters and not critical, conv_kernel=k,
            padding=(lo, total - lo, lo, total - lo),
        ))  # fmt: skip
    return first, layers


def stylegan3_layers(cfg: StyleGAN3Config) -> list[LayerInfo]:
    """Every synthesis layer of a StyleGAN3 of ``cfg`` (no weights needed): name
    ``synthesis.L{idx}_{size}_{channels}`` (NVlabs' module path), kernel ``(out, in, k, k)``,
    resolution the output sampling rate (the feature map's size without its margin), index
    ``idx``, role ``"conv"`` or ``"torgb"`` (the last), W+ index ``idx + 1``; all shiftable."""
    return [
        LayerInfo(
            name=f"synthesis.{s.name}",
            kind="modulated",
            weight_shape=(s.out_channels, s.in_channels, s.conv_kernel, s.conv_kernel),
            resolution=s.out_sampling_rate,
            index=s.index,
            role="torgb" if s.is_torgb else "conv",
            w_index=s.index + 1,
        )
        for s in synthesis_schedule(cfg)[1]
    ]


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """NVlabs' low-pass filter design: None for one tap (the identity); else a separable Kaiser
    FIR ``[numtaps]`` (``scipy.signal.firwin``), or with ``radial`` a jinc ``J1(2 pi f_c r) /
    (pi r)`` windowed by the outer product of a Kaiser window ``[numtaps, numtaps]``, summing to
    1. float32. (At ``r = 0``, odd ``numtaps`` only, the jinc takes its limit ``f_c``, where
    NVlabs' code divides by zero.)"""
    import scipy.signal
    import scipy.special

    if numtaps == 1:
        return None
    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(f, dtype=torch.float32)
    pos = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(pos, pos))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(r > 0, scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)
