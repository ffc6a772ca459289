"""StyleGAN2 generator (config F, skip architecture) in plain torch modules.

Readable top to bottom, in the shape of rosinality's ``model.py``: ``EqualLinear``,
``ModulatedConv2d``, ``StyledConv``, ``ToRGB`` (:mod:`navcuda.models.stylegan2_layers`) composed
in one ``Generator``, the implementation of navcuda's generator interface with a prefix cache
and the fused shifted convolutions; :mod:`navcuda.models.stylegan2_routes` decides how each
layer runs in eval mode. Parameter and buffer
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

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LayerInfo,
    LayerShift,
    ShiftArg,
    SplitState,
    frozen,
    shift_map,
)
from navcuda.models.linearize import SuffixLinearization, linearize_suffix
from navcuda.models.stylegan2_layers import (
    ConstantInput,
    EqualLinear,
    ModulatedConv2d,
    PixelNorm,
    StyledConv,
    ToRGB,
)
from navcuda.models.stylegan2_routes import (
    CONV_ROUTES,
    LAYOUTS,
    ShiftSpec,
    _route,
    conv_route,
    eval_strategy,
)
from navcuda.models.stylegan_family import StyleGANFamily

__all__ = [
    "CONV_ROUTES",
    "LAYOUTS",
    "Generator",
    "GeneratorConfig",
    "LayerShift",
    "ModulatedConv2d",
    "PRESETS",
    "StyledConv",
    "SynthesisState",
    "ToRGB",
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


class Generator(nn.Module, StyleGANFamily):
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
