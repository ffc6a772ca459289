"""Independent functional re-implementation of NVlabs' StyleGAN3 generator, used as a test oracle.

What it is
    A plain-torch, functional transcription of the forward pass of
    ``training.networks_stylegan3.Generator`` (StyleGAN3, "Alias-Free Generative Adversarial
    Networks") that works on a plain state dict with NVlabs' key names
    (``synthesis.L3_52_512.affine.weight``, ``mapping.w_avg``, ...) and on NVlabs' ``Generator``
    init kwargs. It never imports navcuda, so tests can compare navcuda's StyleGAN3 against it.

How it was derived
    Written line by line from NVlabs' published source (github.com/NVlabs/stylegan3):
    ``training/networks_stylegan3.py`` (read at commit 583f2bdd139e014716fc279f23d362959bcc0f39,
    cross-checked against a fork's copy whose synthesis code is identical), the reference ops
    ``_filtered_lrelu_ref`` (``torch_utils/ops/filtered_lrelu.py``), ``_upfirdn2d_ref``
    (``torch_utils/ops/upfirdn2d.py``) and ``_bias_act_ref`` (``torch_utils/ops/bias_act.py``),
    and ``train.py`` (the ``stylegan3-t`` / ``stylegan3-r`` configs). NVlabs' CUDA kernels are not
    modelled: this follows the reference ops, which NVlabs itself runs on the CPU, keeping NVlabs'
    order of operations, so a float32 state gives NVlabs' CPU numbers up to float32 rounding.
    fp16 is never used (NVlabs only uses it on CUDA). A float64 state runs everything in float64.

API
    ``published_kwargs``, ``layer_schedule``, ``input_spec``, ``design_lowpass_filter``,
    ``random_state_dict``, ``mapping_forward``, ``synthesis_forward``, ``generator_forward``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F

# Defaults of NVlabs' constructors (SynthesisNetwork, SynthesisLayer, MappingNetwork).
_SYNTHESIS_DEFAULTS = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "num_fp16_res": 4,
}
_LAYER_DEFAULTS = {
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
    "magnitude_ema_beta": 0.999,
}
_MAPPING_DEFAULTS = {"num_layers": 2, "lr_multiplier": 0.01, "w_avg_beta": 0.998}
_TOP_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")


# ----------------------------------------------------------------------------------------------
# Configuration and layer schedule.


def published_kwargs(cfg: str, img_resolution: int, **overrides) -> dict:
    """NVlabs ``Generator`` init kwargs of the published configs "t" (stylegan3-t), "r" (-r).

    As ``train.py`` sets them (z_dim = w_dim = 512, 2 mapping layers, cbase 32768, cmax 512,
    ``magnitude_ema_beta = 0.5 ** (batch / 20e3)`` with the published batch 32; R: 1x1 convs,
    doubled channel_base / channel_max, radial filters), plus ``c_dim=0``, ``img_channels=3``, and
    every remaining constructor default written out explicitly. ``overrides`` replace entries
    (final values: an R ``channel_base`` override is not doubled again); ``mapping_kwargs`` is
    merged.
    """
    if cfg not in ("t", "r"):
        raise ValueError(f"cfg must be 't' or 'r', not {cfg!r}")
    kw = {
        "z_dim": 512,
        "c_dim": 0,
        "w_dim": 512,
        "img_resolution": int(img_resolution),
        "img_channels": 3,
        "mapping_kwargs": dict(_MAPPING_DEFAULTS),
        **_SYNTHESIS_DEFAULTS,
        **_LAYER_DEFAULTS,
        "magnitude_ema_beta": 0.5 ** (32 / (20 * 1e3)),
    }
    if cfg == "r":
        kw.update(conv_kernel=1, use_radial_filters=True)
        kw["channel_base"] *= 2
        kw["channel_max"] *= 2
    for key, value in overrides.items():
        if key == "mapping_kwargs":
            kw["mapping_kwargs"] = {**kw["mapping_kwargs"], **value}
        else:
            kw[key] = value
    _resolve(kw)  # validate
    return kw


def _resolve(kwargs: dict) -> tuple[dict, dict]:
    """(synthesis + layer settings, mapping settings), NVlabs defaults filled in."""
    known = set(_TOP_KEYS) | set(_SYNTHESIS_DEFAULTS) | set(_LAYER_DEFAULTS)
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"unknown Generator kwargs: {sorted(unknown)}")
    syn = {**_SYNTHESIS_DEFAULTS, **_LAYER_DEFAULTS}
    syn.update({k: v for k, v in kwargs.items() if k != "mapping_kwargs"})
    mapping = {**_MAPPING_DEFAULTS, **dict(kwargs.get("mapping_kwargs", {}))}
    unknown = set(mapping) - set(_MAPPING_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown mapping_kwargs: {sorted(unknown)}")
    return syn, mapping


def _plan(kwargs: dict) -> tuple[dict, list[dict]]:
    """SynthesisNetwork.__init__ / SynthesisLayer.__init__ arithmetic: (input spec, layer specs)."""
    syn, _ = _resolve(kwargs)
    res, n = syn["img_resolution"], syn["num_layers"]
    # Geometric progression of cutoffs and minimum stopbands (numpy float64, as NVlabs).
    last_cutoff = res / 2
    last_stopband = last_cutoff * syn["last_stopband_rel"]
    exponents = np.minimum(np.arange(n + 1) / (n - syn["num_critical"]), 1)
    cutoffs = syn["first_cutoff"] * (last_cutoff / syn["first_cutoff"]) ** exponents
    stopbands = syn["first_stopband"] * (last_stopband / syn["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + syn["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((syn["channel_base"] / 2) / cutoffs, syn["channel_max"]))
    channels[-1] = syn["img_channels"]

    inp = {
        "channels": int(channels[0]),
        "size": int(sizes[0]),
        "sampling_rate": float(rates[0]),
        "bandwidth": float(cutoffs[0]),
    }
    layers = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        in_rate, out_rate = int(rates[prev]), int(rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else syn["lrelu_upsampling"])
        kernel = 1 if is_torgb else syn["conv_kernel"]
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        is_crit = idx >= n - syn["num_critical"]
        up = int(np.rint(tmp_rate / in_rate))
        down = int(np.rint(tmp_rate / out_rate))
        assert in_rate * up == tmp_rate and out_rate * down == tmp_rate
        up_taps = syn["filter_size"] * up if up > 1 and not is_torgb else 1
        down_taps = syn["filter_size"] * down if down > 1 and not is_torgb else 1
        # Padding (symmetric interpretation, NVlabs Appendix C.3); square images.
        pad_total = (out_size - 1) * down + 1
        pad_total -= (in_size + kernel - 1) * up
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_channels = int(channels[idx])
        layers.append(
            {
                "name": f"L{idx}_{out_size}_{out_channels}",
                "idx": idx,
                "in_channels": int(channels[prev]),
                "out_channels": out_channels,
                "in_sampling_rate": in_rate,
                "out_sampling_rate": out_rate,
                "tmp_sampling_rate": tmp_rate,
                "in_cutoff": float(cutoffs[prev]),
                "out_cutoff": float(cutoffs[idx]),
                "in_stopband": float(stopbands[prev]),
                "out_stopband": float(stopbands[idx]),
                "in_half_width": float(half_widths[prev]),
                "out_half_width": float(half_widths[idx]),
                "in_size": in_size,
                "out_size": out_size,
                "conv_kernel": kernel,
                "up_factor": up,
                "down_factor": down,
                "up_taps": up_taps,
                "down_taps": down_taps,
                "down_radial": bool(syn["use_radial_filters"] and not is_crit),
                "padding": [pad_lo, pad_hi, pad_lo, pad_hi],
                "is_torgb": is_torgb,
                "is_critically_sampled": is_crit,
                "use_fp16": bool(rates[idx] * (2 ** syn["num_fp16_res"]) > res),
            }
        )
    return inp, layers


def layer_schedule(kwargs: dict) -> list[dict]:
    """Per synthesis layer, in order: name, channels, rates, cutoffs, stopbands, sizes, etc."""
    return _plan(kwargs)[1]


def input_spec(kwargs: dict) -> dict:
    """``SynthesisInput`` settings: channels, size, sampling_rate, bandwidth."""
    return _plan(kwargs)[0]


def num_ws(kwargs: dict) -> int:
    """Number of per-layer latents (``num_layers + 2``)."""
    return _resolve(kwargs)[0]["num_layers"] + 2


def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False) -> torch.Tensor | None:
    """NVlabs' ``SynthesisLayer.design_lowpass_filter``: None, 1-D Kaiser FIR, or 2-D jinc."""
    assert numtaps >= 1
    if numtaps == 1:
        return None
    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(f, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f *= np.outer(w, w)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Random state dict.


def random_state_dict(
    kwargs: dict, seed: int = 0, dtype: torch.dtype = torch.float32, nvlabs_init: bool = False
) -> dict[str, torch.Tensor]:
    """State dict with exactly the keys, order and shapes of NVlabs ``Generator(**kwargs)``.

    The first draws replay NVlabs' constructor, in its order, from ``torch.Generator`` seeded with
    ``seed`` (synthesis first: input freqs/phases/weight/affine, then each layer's affine and
    weight; then mapping embed / fc*), so with ``nvlabs_init=True`` the result is meant to equal
    ``torch.manual_seed(seed); Generator(**kwargs).state_dict()`` (zero biases, ones
    magnitude_ema, zero w_avg, a zero input-affine weight). By default further draws from the same
    generator then make every term non-trivial: input affine weight N(0, 0.2^2) and bias
    [1,0,0,0] + N(0, 0.1^2), layer affine biases 1 + N(0, 0.1^2), layer biases N(0, 0.1^2),
    magnitude_ema exp(N(0, 0.3^2)), mapping biases N(0, 0.1^2) effective, w_avg N(0, 1).
    ``transform`` stays the identity; filters are the designed low-pass filters (float32-rounded).
    """
    syn, mapping = _resolve(kwargs)
    inp, layers = _plan(kwargs)
    g = torch.Generator().manual_seed(int(seed))
    w_dim, lr = syn["w_dim"], mapping["lr_multiplier"]
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()

    def fc_init(out_f, in_f, weight_init=1.0, bias_init=0.0, lr_mult=1.0):
        weight = torch.randn([out_f, in_f], generator=g) * (weight_init / lr_mult)
        bias = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_f])
        return weight, torch.from_numpy(bias / lr_mult)

    # synthesis.input (own params, buffers, then the affine child).
    c, bandwidth = inp["channels"], inp["bandwidth"]
    freqs = torch.randn([c, 2], generator=g)
    radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
    freqs /= radii * radii.square().exp().pow(0.25)
    freqs *= bandwidth
    phases = torch.rand([c], generator=g) - 0.5
    sd["synthesis.input.weight"] = torch.randn([c, c], generator=g)
    sd["synthesis.input.transform"] = torch.eye(3, 3)
    sd["synthesis.input.freqs"] = freqs
    sd["synthesis.input.phases"] = phases
    aw, ab = fc_init(4, w_dim, weight_init=0, bias_init=[1, 0, 0, 0])
    sd["synthesis.input.affine.weight"], sd["synthesis.input.affine.bias"] = aw, ab

    for spec in layers:
        p = f"synthesis.{spec['name']}."
        k = spec["conv_kernel"]
        # NVlabs draws the affine weight first, then the conv weight; the state_dict lists own
        # parameters and buffers before the affine child.
        aw, ab = fc_init(spec["in_channels"], w_dim, bias_init=1)
        sd[p + "weight"] = torch.randn(
            [spec["out_channels"], spec["in_channels"], k, k], generator=g
        )
        sd[p + "bias"] = torch.zeros([spec["out_channels"]])
        sd[p + "magnitude_ema"] = torch.ones([])
        fu = design_lowpass_filter(
            spec["up_taps"], spec["in_cutoff"], spec["in_half_width"] * 2, spec["tmp_sampling_rate"]
        )
        fd = design_lowpass_filter(
            spec["down_taps"],
            spec["out_cutoff"],
            spec["out_half_width"] * 2,
            spec["tmp_sampling_rate"],
            radial=spec["down_radial"],
        )
        if fu is not None:  # None buffers are absent from NVlabs' state_dict
            sd[p + "up_filter"] = fu
        if fd is not None:
            sd[p + "down_filter"] = fd
        sd[p + "affine.weight"], sd[p + "affine.bias"] = aw, ab

    # mapping (w_avg buffer, then children embed, fc0, fc1, ...).
    sd["mapping.w_avg"] = torch.zeros([w_dim])
    z_dim, c_dim = syn["z_dim"], syn["c_dim"]
    if c_dim > 0:
        sd["mapping.embed.weight"], sd["mapping.embed.bias"] = fc_init(w_dim, c_dim)
    features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * mapping["num_layers"]
    for i in range(mapping["num_layers"]):
        fw, fb = fc_init(features[i + 1], features[i], lr_mult=lr)
        sd[f"mapping.fc{i}.weight"], sd[f"mapping.fc{i}.bias"] = fw, fb

    if not nvlabs_init:
        sd["synthesis.input.affine.weight"] = 0.2 * torch.randn([4, w_dim], generator=g)
        sd["synthesis.input.affine.bias"] += 0.1 * torch.randn([4], generator=g)
        for spec in layers:
            p = f"synthesis.{spec['name']}."
            sd[p + "affine.bias"] += 0.1 * torch.randn([spec["in_channels"]], generator=g)
            sd[p + "bias"] = 0.1 * torch.randn([spec["out_channels"]], generator=g)
            sd[p + "magnitude_ema"] = torch.exp(0.3 * torch.randn([], generator=g))
        if c_dim > 0:
            sd["mapping.embed.bias"] = 0.1 * torch.randn([w_dim], generator=g)
        for i in range(mapping["num_layers"]):
            sd[f"mapping.fc{i}.bias"] = 0.1 * torch.randn([w_dim], generator=g) / lr
        sd["mapping.w_avg"] = torch.randn([w_dim], generator=g)
    return OrderedDict((key, value.to(dtype)) for key, value in sd.items())


# ----------------------------------------------------------------------------------------------
# NVlabs reference ops (bias_act, upfirdn2d, filtered_lrelu, modulated_conv2d, FC layer).


def _bias_act(x, b=None, act="linear", alpha=None, gain=None, clamp=None):
    """``_bias_act_ref`` for act in {linear, lrelu}, dim=1."""
    alpha = float(alpha if alpha is not None else (0.2 if act == "lrelu" else 0))
    gain = float(gain if gain is not None else (np.sqrt(2) if act == "lrelu" else 1))
    clamp = float(clamp if clamp is not None else -1)
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _upfirdn2d(x, f, up=1, down=1, padding=(0, 0, 0, 0), gain=1, flip_filter=False):
    """``_upfirdn2d_ref``: zero-insert upsample, pad/crop, FIR (separable if 1-D), subsample."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, height, width = x.shape
    px0, px1, py0, py1 = padding
    assert width * up + px0 + px1 >= f.shape[-1] and height * up + py0 + py1 >= f.shape[0]
    x = x.reshape([batch, channels, height, 1, width, 1])
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape([batch, channels, height * up, width * up])
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[np.newaxis, np.newaxis].repeat([channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=channels)
    else:  # separable: horizontal pass, then vertical
        x = F.conv2d(x, f.unsqueeze(2), groups=channels)
        x = F.conv2d(x, f.unsqueeze(3), groups=channels)
    return x[:, :, ::down, ::down]


def _filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    """``_filtered_lrelu_ref``: bias, upsample (gain up^2), lrelu*gain, clamp, downsample."""
    x = _bias_act(x, b)
    x = _upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    x = _bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    return _upfirdn2d(x, fd, down=down)


def _modulated_conv2d(x, w, s, demodulate=True, padding=0, input_gain=None):
    """NVlabs' StyleGAN3 ``modulated_conv2d`` as one grouped convolution."""
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = w.shape
    assert x.shape[1] == in_channels and s.shape == (batch, in_channels)
    if demodulate:  # pre-normalise (note: s over the whole batch, as NVlabs)
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()
    w = w.unsqueeze(0) * s.unsqueeze(1).unsqueeze(3).unsqueeze(4)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.unsqueeze(2).unsqueeze(3).unsqueeze(4)
    if input_gain is not None:
        input_gain = input_gain.expand(batch, in_channels)
        w = w * input_gain.unsqueeze(1).unsqueeze(3).unsqueeze(4)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=batch)
    return x.reshape(batch, -1, *x.shape[2:])


def _fully_connected(x, weight, bias, lr_multiplier=1.0, activation="linear"):
    """``FullyConnectedLayer.forward`` (weight gain lr/sqrt(in), bias gain lr)."""
    w = weight.to(x.dtype) * (lr_multiplier / np.sqrt(weight.shape[1]))
    b = bias.to(x.dtype)
    if lr_multiplier != 1:
        b = b * lr_multiplier
    if activation == "linear":
        return torch.addmm(b.unsqueeze(0), x, w.t())
    return _bias_act(x.matmul(w.t()), b, act=activation)


# ----------------------------------------------------------------------------------------------
# Forward passes.


def _compute_dtype(state: dict, key: str) -> torch.dtype:
    """float32 for an NVlabs-like state; float64 when the state is float64."""
    return torch.float64 if state[key].dtype == torch.float64 else torch.float32


def mapping_forward(
    state: dict,
    kwargs: dict,
    z: torch.Tensor,
    c: torch.Tensor | None = None,
    truncation_psi=1.0,
    truncation_cutoff=None,
    update_emas=False,
) -> torch.Tensor:
    """NVlabs ``MappingNetwork.forward``: z (and c) -> ws [batch, num_ws, w_dim].

    With ``update_emas`` the state's ``mapping.w_avg`` is updated in place (as NVlabs does, before
    truncation uses it).
    """
    syn, mapping = _resolve(kwargs)
    n_ws = syn["num_layers"] + 2
    dtype = _compute_dtype(state, "mapping.w_avg")
    lr = mapping["lr_multiplier"]
    assert z.ndim == 2 and z.shape[1] == syn["z_dim"]
    if truncation_cutoff is None:
        truncation_cutoff = n_ws
    x = z.to(dtype)
    x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    if syn["c_dim"] > 0:
        assert c is not None and c.shape == (z.shape[0], syn["c_dim"])
        y = _fully_connected(
            c.to(dtype), state["mapping.embed.weight"], state["mapping.embed.bias"]
        )
        y = y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        x = torch.cat([x, y], dim=1)
    for i in range(mapping["num_layers"]):
        p = f"mapping.fc{i}."
        x = _fully_connected(x, state[p + "weight"], state[p + "bias"], lr, activation="lrelu")
    w_avg = state["mapping.w_avg"]
    if update_emas:
        w_avg.copy_(x.detach().mean(dim=0).lerp(w_avg, mapping["w_avg_beta"]))
    x = x.unsqueeze(1).repeat([1, n_ws, 1])
    if truncation_psi != 1:
        x[:, :truncation_cutoff] = w_avg.to(dtype).lerp(x[:, :truncation_cutoff], truncation_psi)
    return x


def _synthesis_input(state: dict, spec: dict, w: torch.Tensor) -> torch.Tensor:
    """NVlabs ``SynthesisInput.forward``: transformed Fourier features [batch, C, size, size]."""
    p = "synthesis.input."
    dtype, device, batch = w.dtype, w.device, w.shape[0]
    transforms = state[p + "transform"].to(dtype).unsqueeze(0)
    freqs = state[p + "freqs"].to(dtype).unsqueeze(0)
    phases = state[p + "phases"].to(dtype).unsqueeze(0)
    t = _fully_connected(w, state[p + "affine.weight"], state[p + "affine.bias"])
    t = t / t[:, :2].norm(dim=1, keepdim=True)  # (r_c, r_s, t_x, t_y), rotation normalised
    m_r = torch.eye(3, device=device, dtype=dtype).unsqueeze(0).repeat([batch, 1, 1])
    m_r[:, 0, 0] = t[:, 0]
    m_r[:, 0, 1] = -t[:, 1]
    m_r[:, 1, 0] = t[:, 1]
    m_r[:, 1, 1] = t[:, 0]
    m_t = torch.eye(3, device=device, dtype=dtype).unsqueeze(0).repeat([batch, 1, 1])
    m_t[:, 0, 2] = -t[:, 2]
    m_t[:, 1, 2] = -t[:, 3]
    transforms = m_r @ m_t @ transforms
    phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
    freqs = freqs @ transforms[:, :2, :2]
    rate, bandwidth, size = spec["sampling_rate"], spec["bandwidth"], spec["size"]
    amplitudes = (1 - (freqs.norm(dim=2) - bandwidth) / (rate / 2 - bandwidth)).clamp(0, 1)
    theta = torch.eye(2, 3, device=device, dtype=dtype)
    theta[0, 0] = 0.5 * size / rate
    theta[1, 1] = 0.5 * size / rate
    grids = F.affine_grid(theta.unsqueeze(0), [1, 1, size, size], align_corners=False)
    x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
    x = x + phases.unsqueeze(1).unsqueeze(2)
    x = torch.sin(x * (np.pi * 2))
    x = x * amplitudes.unsqueeze(1).unsqueeze(2)
    weight = state[p + "weight"].to(dtype) / np.sqrt(spec["channels"])
    x = x @ weight.t()
    return x.permute(0, 3, 1, 2)


def _synthesis_layer(state, spec, syn, x, w, update_emas=False) -> torch.Tensor:
    """NVlabs ``SynthesisLayer.forward`` (always in the compute dtype, never fp16)."""
    p = f"synthesis.{spec['name']}."
    assert x.shape[1:] == (spec["in_channels"], spec["in_size"], spec["in_size"])
    ema = state[p + "magnitude_ema"]
    if update_emas:
        magnitude_cur = x.detach().to(ema.dtype).square().mean()
        ema.copy_(magnitude_cur.lerp(ema, syn["magnitude_ema_beta"]))
    input_gain = ema.to(x.dtype).rsqrt()
    styles = _fully_connected(w, state[p + "affine.weight"], state[p + "affine.bias"])
    if spec["is_torgb"]:
        styles = styles * (1 / np.sqrt(spec["in_channels"] * (spec["conv_kernel"] ** 2)))
    x = _modulated_conv2d(
        x,
        state[p + "weight"].to(x.dtype),
        styles,
        demodulate=not spec["is_torgb"],
        padding=spec["conv_kernel"] - 1,
        input_gain=input_gain,
    )
    x = _filtered_lrelu(
        x,
        fu=state.get(p + "up_filter"),
        fd=state.get(p + "down_filter"),
        b=state[p + "bias"].to(x.dtype),
        up=spec["up_factor"],
        down=spec["down_factor"],
        padding=spec["padding"],
        gain=1 if spec["is_torgb"] else np.sqrt(2),
        slope=1 if spec["is_torgb"] else 0.2,
        clamp=syn["conv_clamp"],
    )
    assert x.shape[1:] == (spec["out_channels"], spec["out_size"], spec["out_size"])
    return x


def synthesis_forward(
    state: dict, kwargs: dict, ws: torch.Tensor, update_emas=False, force_fp32=True
) -> torch.Tensor:
    """NVlabs ``SynthesisNetwork.forward``: ws [batch, num_ws, w_dim] -> image [batch, C, R, R].

    ``force_fp32`` is accepted for signature parity and ignored (never fp16). With ``update_emas``
    each layer's ``magnitude_ema`` in ``state`` is updated in place before use, as NVlabs does.
    """
    del force_fp32
    syn, _ = _resolve(kwargs)
    inp, layers = _plan(kwargs)
    assert ws.ndim == 3 and ws.shape[1:] == (syn["num_layers"] + 2, syn["w_dim"])
    ws = ws.to(_compute_dtype(state, "synthesis.input.weight")).unbind(dim=1)
    x = _synthesis_input(state, inp, ws[0])
    for spec, w in zip(layers, ws[1:], strict=True):
        x = _synthesis_layer(state, spec, syn, x, w, update_emas=update_emas)
    if syn["output_scale"] != 1:
        x = x * syn["output_scale"]
    res = syn["img_resolution"]
    assert x.shape[1:] == (syn["img_channels"], res, res)
    return x


def generator_forward(
    state: dict,
    kwargs: dict,
    z: torch.Tensor,
    c: torch.Tensor | None = None,
    truncation_psi=1.0,
    truncation_cutoff=None,
    update_emas=False,
    force_fp32=True,
) -> torch.Tensor:
    """NVlabs ``Generator.forward(z, c, truncation_psi, truncation_cutoff)``: mapping, synthesis."""
    ws = mapping_forward(
        state,
        kwargs,
        z,
        c,
        truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff,
        update_emas=update_emas,
    )
    return synthesis_forward(state, kwargs, ws, update_emas=update_emas, force_fp32=force_fp32)
