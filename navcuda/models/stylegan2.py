"""StyleGAN2 generator (config F, skip architecture) in plain torch modules.

Readable top to bottom, in the shape of rosinality's ``model.py``: ``EqualLinear``,
``ModulatedConv2d``, ``StyledConv``, ``ToRGB`` composed in one ``Generator``. Parameter and buffer
names follow the rosinality layout (``style.1.weight``, ``convs.3.conv.weight``, ``noises.noise_0``,
...) so its checkpoints load without renaming; one buffer is added, ``w_avg`` (the mean of W, used
by truncation), which rosinality keeps outside the model as ``latent_avg``.

The synthesis network can run with the raw kernel of one conv layer shifted by an additive delta,
shared or per sample (:class:`LayerShift`); the model's parameters are never modified.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from navcuda.ops.bias_act import bias_act
from navcuda.ops.modulated_conv2d import modulated_conv2d
from navcuda.ops.upfirdn2d import make_filter, upfirdn2d

__all__ = [
    "Generator",
    "GeneratorConfig",
    "LayerShift",
    "PRESETS",
    "SynthesisState",
]

NoiseMode = Literal["const", "random", "none"]


@dataclass
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator.

    Channels at resolution ``r`` are ``min(channel_base // r, channel_max)`` unless ``channel_map``
    gives them explicitly (``{resolution: channels}`` for every resolution 4..``resolution``).
    rosinality's ``channel_multiplier=m`` equals ``channel_base=16384*m, channel_max=512``.
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


@dataclass
class LayerShift:
    """An additive shift of the raw kernel of one conv layer.

    ``delta`` is ``[out, in, kh, kw]`` (every sample) or ``[B, out, in, kh, kw]`` (one per sample),
    already multiplied by the shift magnitude ``t``.
    """

    layer: str
    delta: torch.Tensor


@dataclass
class SynthesisState:
    """Synthesis stopped before ``layer``: its input activations ``x [B, C, r, r]`` and the RGB
    skip sum ``img`` so far (None before the first toRGB)."""

    layer: str
    x: torch.Tensor
    img: torch.Tensor | None


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
        return bias_act(y, self.bias * self.lr_mul, act="lrelu" if self.activation else "linear")


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
            # per-sample kernels, so that shifted and unshifted renders share one code path.
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
        return bias_act(x, self.bias, act="lrelu", clamp=self.clamp)


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
        delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w, delta), noise))


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
        y = bias_act(self.conv(x, w), self.bias.flatten(), act="linear", clamp=self.clamp)
        if skip is not None:
            y = y + self.upsample(skip)
        return y


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class Generator(nn.Module):
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
        self.style = nn.Sequential(
            PixelNorm(),
            *[
                EqualLinear(
                    cfg.z_dim if i == 0 else cfg.w_dim,
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
    ) -> torch.Tensor:
        """``z [B, z_dim] -> w [B, w_dim]``, truncated towards ``w_avg`` by ``truncation_psi``."""
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"z must have shape [B, {self.config.z_dim}], got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"z must be a floating tensor, got {z.dtype}")
        w = self.style(z)
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype) + truncation_psi * (w - self.w_avg.to(w.dtype))
        return w

    @torch.no_grad()
    def update_w_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Set ``w_avg`` to the mean of ``mapping(z)`` over ``n`` seeded samples; returns it."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.z_dim, generator=gen).to(self.w_avg.device)
        self.w_avg.copy_(self.style(z).mean(0))
        return self.w_avg

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
        from navcuda.models.layers import get_layer

        ws = self._broadcast_ws(ws)
        name = get_layer(self.config, layer).name
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

    def _plan(self):
        from navcuda.models.layers import list_layers

        if getattr(self, "_plan_cache", None) is None:
            self._plan_cache = list_layers(self.config)
        return self._plan_cache

    def _run(self, ws, noise_mode, deltas, x, img, start: int, stop: int):
        """Apply the layers ``plan[start:stop]`` to ``(x, img)`` (``img`` is the RGB skip sum)."""
        for info in self._plan()[start:stop]:
            module = self.get_submodule(info.name)
            w = ws[:, info.w_index]
            if info.kind == "torgb":
                img = module(x, w, img)
                continue
            noise_idx = 0 if info.index is None else info.index + 1
            noise = self._noise(noise_mode, noise_idx, x, info.resolution)
            x = module(x, w, noise, deltas.get(info.name))
        return x, img

    def _check_shift(self, shift: LayerShift | None, batch: int) -> dict[str, torch.Tensor]:
        if shift is None:
            return {}
        from navcuda.models.layers import get_layer

        info = get_layer(self.config, shift.layer)
        if not info.shiftable:
            raise ValueError(f"layer {info.name!r} ({info.kind}) cannot be shifted")
        d = shift.delta
        shape = info.weight_shape
        if d.ndim == 4 and tuple(d.shape) == shape:
            return {info.name: d}
        if d.ndim == 5 and tuple(d.shape[1:]) == shape and d.shape[0] in (1, batch):
            return {info.name: d}
        raise ValueError(
            f"shift for layer {info.name!r} must be {list(shape)} or [B={batch}, *{list(shape)}], "
            f"got {list(d.shape)}"
        )

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        noise_mode: NoiseMode = "const",
        shift: LayerShift | None = None,
    ) -> torch.Tensor:
        """``z [B, z_dim] -> image [B, C, R, R]``; see :meth:`mapping` and :meth:`synthesis`."""
        return self.synthesis(self.mapping(z, truncation_psi), noise_mode=noise_mode, shift=shift)
