"""StyleGAN3 generator (configs T and R, "Alias-Free Generative Adversarial Networks") in plain
torch modules.

Readable top to bottom, after the config and its layer schedule (sampling rates, cutoffs, sizes,
channels, filters and padding, NVlabs' formulas; :mod:`navcuda.models.stylegan3_config`):
``FullyConnectedLayer``, ``MappingNetwork``, ``SynthesisInput`` (Fourier features, rotated and
translated per sample by an affine of ``w``), ``SynthesisLayer`` (modulated convolution, then the
filtered leaky ReLU) and ``SynthesisNetwork``, composed in one ``Generator``. Parameter and
buffer names are NVlabs' (``mapping.fc0.weight``, ``synthesis.input.freqs``,
``synthesis.L3_52_512.up_filter``, ...), so the state dict of ``G_ema`` from a
``training.networks_stylegan3`` pickle loads with ``load_state_dict(strict=True)``.

Every synthesis layer, toRGB included, is shiftable: a :class:`LayerShift` adds ``delta`` (shared
or per sample) to the layer's raw ``weight`` before the pre-normalisation, modulation and
demodulation, for one call; the parameters are never modified. Layers always run NVlabs'
arrangement, per-sample modulated kernels in one grouped convolution (einsum for 1x1 kernels), so
a zero shift renders bit-identically to the unshifted render. Everything is pure torch (the
filtered leaky ReLU is :func:`navcuda.ops.filtered_lrelu.filtered_lrelu`): double backward and
forward-mode AD work everywhere.

Differences from NVlabs' forward, all below float32 rounding of the images: the styles are
normalised per sample, not over the whole batch (the demodulation cancels any scale of the
styles except through its ``1e-8``; per sample, a batch renders each sample as it renders alone);
no fp16 (``num_fp16_res`` is recorded, not used); the Fourier features' sampling grid is computed
in closed form rather than by ``affine_grid``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from navcuda.models.fingerprint import model_fingerprint
from navcuda.models.interface import (
    GeneratorError,
    Inputs,
    LayerInfo,
    ShiftArg,
    SplitState,
    shift_map,
)
from navcuda.models.stylegan3_config import (
    InputSpec,
    LayerSpec,
    StyleGAN3Config,
    design_lowpass_filter,
    stylegan3_layers,
    synthesis_schedule,
)
from navcuda.models.stylegan_family import StyleGANFamily
from navcuda.ops.bias_act import ref_bias_act
from navcuda.ops.filtered_lrelu import filtered_lrelu

__all__ = [
    "Generator",
    "LayerSpec",
    "StyleGAN3Config",
    "StyleGAN3Generator",
    "design_lowpass_filter",
    "stylegan3_layers",
    "synthesis_schedule",
]


# ----------------------------------------------------------------------------- modules


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class FullyConnectedLayer(nn.Module):
    """``y = act(x (W g_w)^T + b g_b)`` with the equalised-lr gains ``g_w = lr / sqrt(in)`` and
    ``g_b = lr``; ``"lrelu"`` is the leaky ReLU (slope 0.2) times ``sqrt(2)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        weight_init: float = 1.0,
        bias_init: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        w = torch.randn(out_features, in_features) * (weight_init / lr_multiplier)
        self.weight = nn.Parameter(w)
        b = torch.as_tensor(bias_init, dtype=torch.float32).expand(out_features)
        self.bias = nn.Parameter(b / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ (self.weight * self.weight_gain).t() + self.bias * self.bias_gain
        return ref_bias_act(y, None, act="lrelu") if self.activation == "lrelu" else y


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` (and for ``c_dim > 0`` the conditioning ``c [B, c_dim]``, embedded by
    ``embed``) normalised, through ``mapping_layers`` lrelu layers, truncated towards ``w_avg``:
    ``w [B, w_dim]`` (the one ``w`` of every W+ entry; NVlabs repeats it ``num_ws`` times)."""

    def __init__(self, cfg: StyleGAN3Config) -> None:
        super().__init__()
        self.num_layers = cfg.mapping_layers
        self.embed = FullyConnectedLayer(cfg.c_dim, cfg.w_dim) if cfg.c_dim > 0 else None
        features = [cfg.z_dim + (cfg.w_dim if cfg.c_dim > 0 else 0)]
        features += [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            fc = FullyConnectedLayer(
                features[i], features[i + 1], "lrelu", cfg.mapping_lr_multiplier
            )
            setattr(self, f"fc{i}", fc)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0
    ) -> torch.Tensor:
        x = _normalize_2nd_moment(z)
        if self.embed is not None:
            if c is None:
                raise GeneratorError("this mapping network is conditional: pass c [B, c_dim]")
            x = torch.cat([x, _normalize_2nd_moment(self.embed(c.to(x.dtype)))], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if truncation_psi != 1.0:
            x = self.w_avg + truncation_psi * (x - self.w_avg)
        return x


class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids of fixed frequencies ``freqs`` (drawn in the disc
    of radius ``bandwidth``) and ``phases``, sampled on a ``size x size`` grid at
    ``sampling_rate``, rotated and translated per sample by ``affine(w) = (cos, sin, tx, ty)``
    (normalised by the rotation's norm; then the user ``transform``), faded out above the
    bandwidth, mixed by ``weight / sqrt(channels)``: ``[B, channels, size, size]``."""

    def __init__(self, w_dim: int, spec: InputSpec) -> None:
        super().__init__()
        self.spec = spec
        c = spec.channels
        freqs = torch.randn(c, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * spec.bandwidth
        self.weight = nn.Parameter(torch.randn(c, c))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0.0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(c) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        sp = self.spec
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        # The inverse rotation and translation of the image, then the user transform.
        rot = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).view(-1, 3, 3)
        move = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1).view(-1, 3, 3)
        m = rot @ move @ self.transform
        phases = self.phases + (self.freqs @ m[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = self.freqs @ m[:, :2, :2]  # [B, C, 2]: (x, y) frequencies
        amp = 1 - (freqs.norm(dim=2) - sp.bandwidth) / (sp.sampling_rate / 2 - sp.bandwidth)
        # Sample centres (j + 1/2 - size/2) / rate: affine_grid's grid with align_corners=False.
        pos = torch.arange(sp.size, dtype=t.dtype, device=t.device) + 0.5 - sp.size / 2
        pos = pos / sp.sampling_rate
        arg = (
            pos.view(1, 1, -1, 1) * freqs[:, None, None, :, 0]
            + pos.view(1, -1, 1, 1) * freqs[:, None, None, :, 1]
            + phases[:, None, None, :]
        )  # [B, H, W, C]
        x = torch.sin(arg * (2 * math.pi)) * amp.clamp(0, 1)[:, None, None, :]
        x = x @ (self.weight / math.sqrt(sp.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution of ``x [B, I, H, W]`` with the raw ``weight``
    (``[O, I, k, k]``, or per sample ``[B or 1, O, I, k, k]``) and ``styles [B, I]``.

    With ``demodulate``: the weight is normalised per output channel and the styles per sample
    (NVlabs: over the batch; the demodulation cancels either up to its ``1e-8``), modulated,
    then demodulated. The kernels are scaled by ``input_gain`` and run per sample: one grouped
    convolution (``padding`` on every side), or for 1x1 kernels without padding a batched
    matrix product."""
    b = x.shape[0]
    w = weight if weight.ndim == 5 else weight.unsqueeze(0)
    if demodulate:
        w = w * w.square().mean(dim=[2, 3, 4], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    w = w * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    w = w * input_gain
    o, i, kh, kw = w.shape[1:]
    if kh == kw == 1 and padding == 0:
        return torch.einsum("boi,bihw->bohw", w[..., 0, 0], x)
    y = F.conv2d(x.reshape(1, b * i, *x.shape[2:]), w.reshape(b * o, i, kh, kw),
                 padding=padding, groups=b)  # fmt: skip
    return y.reshape(b, o, *y.shape[2:])


class SynthesisLayer(nn.Module):
    """One layer (:class:`LayerSpec`): styles ``affine(w)``, the modulated convolution (toRGB:
    1x1, styles scaled by ``1 / sqrt(in k^2)``, no demodulation) with input gain
    ``magnitude_ema^(-1/2)``, then the filtered leaky ReLU with the bias, the up/down filters
    ``up_filter`` / ``down_filter`` (None: one tap) and ``conv_clamp`` (toRGB: slope 1, gain 1)."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None) -> None:
        super().__init__()
        self.spec = spec
        self.conv_clamp = conv_clamp
        k = spec.conv_kernel
        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        up = design_lowpass_filter(spec.up_taps, spec.in_cutoff, spec.in_half_width * 2,
                                   spec.tmp_sampling_rate)  # fmt: skip
        down = design_lowpass_filter(spec.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                     spec.tmp_sampling_rate, spec.down_radial)  # fmt: skip
        self.register_buffer("up_filter", up)
        self.register_buffer("down_filter", down)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x [B, in, in_size, in_size]`` -> ``[B, out, out_size, out_size]``; ``delta`` is
        added to the raw weight (``[O, I, k, k]`` or ``[B or 1, O, I, k, k]``)."""
        sp = self.spec
        styles = self.affine(w)
        if sp.is_torgb:
            styles = styles / math.sqrt(sp.in_channels * sp.conv_kernel**2)
        weight = self.weight if delta is None else self.weight + delta
        x = modulated_conv2d(x, weight, styles, not sp.is_torgb, sp.conv_kernel - 1,
                             self.magnitude_ema.rsqrt())  # fmt: skip
        gain, slope = (1.0, 1.0) if sp.is_torgb else (math.sqrt(2.0), 0.2)
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, sp.up_factor,
                              sp.down_factor, sp.padding, gain, slope, self.conv_clamp)  # fmt: skip


class SynthesisNetwork(nn.Module):
    """The Fourier-feature ``input`` and the layers ``L{idx}_{size}_{channels}`` (attributes, in
    ``layer_names`` order); the last layer's output times ``output_scale`` is the image."""

    def __init__(self, cfg: StyleGAN3Config) -> None:
        super().__init__()
        first, specs = synthesis_schedule(cfg)
        self.input = SynthesisInput(cfg.w_dim, first)
        self.layer_names = [s.name for s in specs]
        for s in specs:
            setattr(self, s.name, SynthesisLayer(cfg.w_dim, s, cfg.conv_clamp))
        self.output_scale = cfg.output_scale

    def run(self, x, ws, start: int, stop: int, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layers ``start..stop-1`` on ``x`` (``ws [B, num_ws, w_dim]``, ``deltas`` by layer
        name); after the last layer, the image."""
        for i in range(start, stop):
            name = self.layer_names[i]
            x = getattr(self, name)(x, ws[:, i + 1], deltas.get(name))
        if stop == len(self.layer_names) and self.output_scale != 1:
            x = x * self.output_scale
        return x

    def forward(self, ws: torch.Tensor, deltas: dict[str, torch.Tensor] | None = None):
        """``ws [B, num_ws, w_dim]`` -> images ``[B, img_channels, R, R]``."""
        return self.run(self.input(ws[:, 0]), ws, 0, len(self.layer_names), deltas or {})


# ----------------------------------------------------------------------------- the generator


class Generator(nn.Module, StyleGANFamily):
    """StyleGAN3 generator: ``z [B, z_dim]`` (and a class label for ``c_dim > 0``) -> image
    ``[B, img_channels, R, R]`` in about [-1, 1].

    Layers (:func:`stylegan3_layers`): ``synthesis.L{idx}_{size}_{channels}``, index ``idx``
    (``0..num_layers``; the last is toRGB). Inputs: ``{"ws": [B, w_dim] or [B, num_ws, w_dim]}``
    (conditional models also carry the ``"label" [B]`` the ``ws`` were mapped with; rendering
    reads ``ws`` only). Inference only: no training-time updates of ``magnitude_ema`` or
    ``w_avg`` (:meth:`update_w_avg` recomputes ``w_avg`` from samples).
    """

    architecture = "stylegan3"

    def __init__(self, config: StyleGAN3Config | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else StyleGAN3Config()
        self.config = cfg
        self.num_classes = cfg.c_dim
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg)
        self._infos = stylegan3_layers(cfg)

    # ---- properties
    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def image_shape(self) -> tuple[int, int, int]:  # type: ignore[override]
        r = self.config.img_resolution
        return (self.config.img_channels, r, r)

    # ---- latents
    def from_z(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        batch_size: int = 256,
        label: int | Sequence[int] | torch.Tensor | None = None,
    ) -> Inputs:
        """Inputs of latents ``z [B, z_dim]`` (on the generator's device) and, for a conditional
        generator, class ``label`` (one or ``[B]``; required): ``{"ws": mapping(z, one_hot(label)),
        "label"}``, mapped in chunks of ``batch_size``, truncated by ``truncation_psi``
        (differentiable)."""
        self._check_z(z, truncation_psi)
        lab = self.check_label(label, z.shape[0])
        if self.num_classes and lab is None:
            raise GeneratorError(
                f"this StyleGAN3 is conditional ({self.num_classes} classes): pass label= (one "
                "class index, or one per latent)"
            )
        z = z.to(self.dtype)
        c = None if lab is None else F.one_hot(lab, self.num_classes).to(self.device, self.dtype)
        parts = [
            self.mapping(z[i : i + batch_size], None if c is None else c[i : i + batch_size],
                         truncation_psi)
            for i in range(0, z.shape[0], batch_size)
        ]  # fmt: skip
        ws = torch.cat(parts) if parts else z.new_zeros(0, self.config.w_dim)
        tensors = {"ws": ws} if lab is None else {"ws": ws, "label": lab.to(self.device)}
        return Inputs(tensors)

    def _check_z(self, z: object, truncation_psi: float) -> None:
        n = self.config.z_dim
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != n:
            got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise GeneratorError(f"z must be a tensor [B, {n}], got {got}")
        if not z.is_floating_point():
            raise GeneratorError(f"z must be a floating tensor, got {z.dtype}")
        if z.device != self.device:
            raise GeneratorError(
                f"z is on {z.device} but the generator is on {self.device}; move it there"
            )
        if not math.isfinite(float(truncation_psi)):
            raise GeneratorError(f"truncation_psi must be finite, got {truncation_psi!r}")
        if not bool(torch.isfinite(z).all()):
            raise GeneratorError("z contains NaN or inf")

    def sample(
        self,
        n: int,
        seed: int | torch.Generator = 0,
        *,
        truncation_psi: float = 1.0,
        label=None,
        batch_size: int = 256,
    ) -> Inputs:
        """``from_z(z, truncation_psi, label=label)`` for ``z ~ N(0, I) [n, z_dim]`` drawn on the
        CPU from ``seed`` (or a ``torch.Generator``); a conditional generator's labels, when not
        given, are drawn next from the same stream (uniform over the classes)."""
        lab = self.check_label(label, n)
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.z_dim, generator=gen)
        if self.num_classes and lab is None:
            lab = torch.randint(self.num_classes, (n,), generator=gen)
        with torch.no_grad():
            return self.from_z(z.to(self.device), truncation_psi, batch_size, label=lab)

    @torch.no_grad()
    def update_w_avg(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """Set ``w_avg`` to the mean of the untruncated ``w`` of ``n`` seeded samples."""
        self.w_avg.copy_(self.sample(n, seed)["ws"].mean(0))
        return self.w_avg

    # ---- layers and rendering
    def layers(self) -> list[LayerInfo]:
        """Every synthesis layer (:func:`stylegan3_layers`)."""
        return list(self._infos)

    def kernel(self, layer: int | str) -> torch.Tensor:
        """The raw ``weight [out, in, k, k]`` of a layer (the parameter itself)."""
        return self.get_submodule(self.layer(layer).name).weight

    def fingerprint(self) -> str:
        """:func:`~navcuda.models.fingerprint.model_fingerprint` of the weights, without
        ``mapping.w_avg`` (a statistic of the mapping, left out as for StyleGAN2)."""
        sd = {k: v for k, v in self.state_dict().items() if k != "mapping.w_avg"}
        return model_fingerprint(_StateView(sd))  # type: ignore[arg-type]

    def latent_readers(self, layers) -> list[torch.Tensor]:
        """The style affines ``[in, w_dim]`` (with their gain) of ``layers`` (names, indices, or
        ``"all"``: every synthesis layer; the Fourier input's affine is not a style)."""
        infos = self.layers() if layers == "all" else [self.layer(k) for k in layers]
        mats = []
        for info in infos:
            aff = self.get_submodule(info.name).affine
            mats.append(aff.weight * aff.weight_gain)
        return mats

    def _ws(self, inputs: Inputs) -> torch.Tensor:
        if not isinstance(inputs, Inputs):
            raise GeneratorError(
                f"render() takes navcuda Inputs (generator.sample(n, seed), from_z, "
                f"from_latents), got {type(inputs).__name__}"
            )
        ws, n, d = inputs["ws"], self.num_ws, self.config.w_dim
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, n, -1)
        if ws.ndim != 3 or ws.shape[1:] != (n, d):
            raise GeneratorError(f"ws must be [B, {d}] or [B, {n}, {d}], got {list(ws.shape)}")
        return ws.to(self.dtype)

    def _deltas(self, shift: ShiftArg, batch: int) -> dict[str, torch.Tensor]:
        """Checked shifts, materialised: ``{layer attribute name: delta}``."""
        out = {}
        for s in shift_map(shift).values():
            info = self.layer(s.layer)
            s.check(info, self.kernel(info.name), batch)
            out[info.name.removeprefix("synthesis.")] = s.materialise(info.weight_shape)
        return out

    def render(self, inputs: Inputs, shift: ShiftArg = None) -> torch.Tensor:
        """Images ``[B, C, R, R]`` of ``inputs["ws"]`` with the layers of ``shift`` shifted."""
        ws = self._ws(inputs)
        return self.synthesis(ws, self._deltas(shift, ws.shape[0]))

    def split(self, inputs: Inputs, layer: int | str) -> SplitState:
        """The activations entering ``layer`` (``cache["x"]``)."""
        info = self.layer(layer)
        ws = self._ws(inputs)
        x = self.synthesis.run(self.synthesis.input(ws[:, 0]), ws, 0, info.index, {})
        return SplitState(info.name, inputs, Inputs({"x": x}))

    def resume(self, state: SplitState, shift: ShiftArg = None) -> torch.Tensor:
        if state.cache is None:
            return super().resume(state, shift)
        start = self.layer(state.layer).index
        ws = self._ws(state.inputs)
        deltas = self._deltas(shift, ws.shape[0])
        names = self.synthesis.layer_names
        early = [n for n in deltas if names.index(n) < start]
        if early:
            raise GeneratorError(f"cannot shift {early[0]!r}: it runs before {state.layer!r}")
        return self.synthesis.run(state.cache["x"], ws, start, len(names), deltas)

    def forward(
        self,
        z: torch.Tensor,
        label: int | Sequence[int] | torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        shift: ShiftArg = None,
    ) -> torch.Tensor:
        """``z [B, z_dim]`` -> images: :meth:`from_z` then :meth:`render`."""
        return self.render(self.from_z(z, truncation_psi, label=label), shift)


#: The StyleGAN3 :class:`Generator` under a name distinct from StyleGAN2's.
StyleGAN3Generator = Generator


class _StateView:
    """A state dict behind the one method :func:`model_fingerprint` reads."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state
