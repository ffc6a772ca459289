"""Third-party generators behind ``navcuda.wrap``, as the paper's supplementary uses them: BigGAN
(``pytorch-pretrained-biggan``) and pix2pixHD (``pix2pixhd``).

The models are tiny and random (no weights can be downloaded here) but built from the packages'
own classes, so every layer, parametrisation and forward is the package's code: a 32x32 BigGAN-deep
(spectral-normed convolutions, conditional batch norms with per-truncation statistics,
self-attention) and a 32x32 pix2pixHD ``GlobalGenerator`` (reflection padding, instance norm,
residual blocks, transposed convolutions) fed one-hot segmentation masks.

Oracles are the packages' modules called directly: at ``t = 0`` with the same inputs, and for a
shift a copy whose layer convolves with ``W_eff + t Delta`` (spectral norm removed, the weight
replaced; float64). The packages are skipped when not installed (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import navcuda
from navcuda.discover.calibrate import calibrate_amplitudes
from navcuda.metrics.perceptual import PixelMSE
from navcuda.models.interface import Inputs, LayerShift

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = dict(rtol=0, atol=1e-10)

BIGGAN_CLASSES = 10
#: A spectral-normed 3x3 conv, 8 -> 8 channels at 16x16 (the second block's middle conv).
BIGGAN_LAYER = "generator.layers.1.conv_1"
P2P_CLASSES = 6
#: The first transposed conv of the decoder, 32 -> 16 channels, 8x8 -> 16x16.
P2P_LAYER = "model.11"


def _import(module: str, package: str):
    return pytest.importorskip(
        module,
        reason=f"{package} is not installed (it is in the test extra: pip install -e '.[test]')",
    )


# ----------------------------------------------------------------------------- BigGAN
def _biggan_config():
    pb = _import("pytorch_pretrained_biggan", "pytorch-pretrained-biggan")
    # 4x4 -> 32x32: three upsampling blocks and one plain block, 64 -> 4 channels, self-attention
    # before the third block (16 channels at 16x16). Each entry: (upsample, in, out) x width.
    return pb.BigGANConfig(
        output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4, num_classes=BIGGAN_CLASSES,
        layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)],
        attention_layer_position=2,
    )  # fmt: skip


def _biggan(dtype: torch.dtype = torch.float32) -> nn.Module:
    """The tiny BigGAN, seeded: random weights, non-trivial batch-norm statistics (the package
    never computes them: they are loaded with the weights) and spectral-norm ``u``/``v`` after a
    few power iterations, in eval mode."""
    pb = _import("pytorch_pretrained_biggan", "pytorch-pretrained-biggan")
    from pytorch_pretrained_biggan.model import BigGANBatchNorm, SelfAttn

    cfg = _biggan_config()
    torch.manual_seed(0)
    m = pb.BigGAN(cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, BigGANBatchNorm):
                # variances below 1 so that the blocks add more than the residual path: a
                # shifted layer then changes the images by RMS 0.15 at about the kernel's norm
                mod.running_means.normal_(0.0, 0.3)
                mod.running_vars.uniform_(0.3, 0.8)
                if not mod.conditional:  # allocated uninitialised by the package
                    mod.weight.normal_(1.0, 0.1)
                    mod.bias.normal_(0.0, 0.1)
            if isinstance(mod, SelfAttn):
                mod.gamma.fill_(0.5)  # zero-initialised: the attention would add nothing
        m.train()  # power iterations of every spectral norm
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            z = torch.randn(4, cfg.z_dim, generator=gen)
            c = F.one_hot(torch.randint(cfg.num_classes, (4,), generator=gen), cfg.num_classes)
            m(z, c.float(), 1.0)
    return m.eval().to(dtype)


def _biggan_sampler(cfg):
    """``sample(n, seed, label=None, truncation_psi=1.0)``: z as the package draws it
    (``truncated_noise_sample``, numpy seeded: the same on every device), one-hot classes (drawn
    from the seed when not given), the truncation as the forward's option."""
    from pytorch_pretrained_biggan import truncated_noise_sample

    def sample(n: int, seed: int, label=None, truncation_psi: float = 1.0) -> Inputs:
        z = truncated_noise_sample(batch_size=n, dim_z=cfg.z_dim, truncation=truncation_psi,
                                   seed=seed)  # fmt: skip
        if label is None:
            label = np.random.default_rng(seed).integers(cfg.num_classes, size=n)
        one_hot = F.one_hot(torch.as_tensor(label, dtype=torch.int64), cfg.num_classes)
        return Inputs(
            {"z": torch.from_numpy(z), "class_label": one_hot.float()},
            {"truncation": float(truncation_psi)},
        )

    return sample


def _wrapped_biggan(dtype=torch.float32):
    m = _biggan(dtype)
    g = navcuda.wrap(m, _biggan_sampler(m.config), num_classes=BIGGAN_CLASSES, latent="z",
                     name="BigGAN")  # fmt: skip
    return g, m


def _call_biggan(module: nn.Module, x: Inputs) -> torch.Tensor:
    """The package's own call: ``BigGAN.forward(z, class_label, truncation)``."""
    return module(x["z"], x["class_label"], x.options["truncation"])


# ----------------------------------------------------------------------------- pix2pixHD
def _pix2pixhd(dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny ``GlobalGenerator`` (ngf 8, two downsamplings, one residual block, instance norm)
    with the package's initialisation (``weights_init``, as ``define_G`` applies it)."""
    nets = _import("pix2pixhd.models.networks", "pix2pixhd")
    torch.manual_seed(0)
    m = nets.GlobalGenerator(P2P_CLASSES, 3, ngf=8, n_downsampling=2, n_blocks=1,
                             norm_layer=nets.get_norm_layer("instance"))  # fmt: skip
    m.apply(nets.weights_init)
    return m.eval().to(dtype)


def _mask_sampler(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Random segmentation masks: smooth blobs (per-class noise at 4x4, upsampled, argmax) as
    one-hot label maps ``[n, classes, 32, 32]``, pix2pixHD's input (its ``--no_instance`` form)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, P2P_CLASSES, 4, 4, generator=gen, dtype=torch.float64)
    labels = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False).argmax(1)
    return {"input": F.one_hot(labels, P2P_CLASSES).permute(0, 3, 1, 2).float()}


def _wrapped_pix2pixhd(dtype=torch.float32):
    m = _pix2pixhd(dtype)
    return navcuda.wrap(m, _mask_sampler, name="pix2pixHD"), m


def _call_pix2pixhd(module: nn.Module, x: Inputs) -> torch.Tensor:
    return module(x["input"])


MODELS = {
    "biggan": (_wrapped_biggan, _call_biggan, BIGGAN_LAYER, "class_label"),
    "pix2pixhd": (_wrapped_pix2pixhd, _call_pix2pixhd, P2P_LAYER, "input"),
}


def _sample(name: str, g, n: int, seed: int) -> Inputs:
    if name == "biggan":
        return g.sample(n, seed, truncation_psi=0.7)
    return g.sample(n, seed)


def _effective_kernel(mod: nn.Module) -> torch.Tensor:
    """What the package's layer convolves with, in navcuda's ``[out, in, kh, kw]`` layout,
    computed here: ``W / sigma`` with ``sigma = u^T W v`` (the stored power-iteration vectors, as
    an eval-mode forward uses them) for a spectral-normed layer."""
    if hasattr(mod, "weight_orig"):
        w = mod.weight_orig
        w = w / (mod.weight_u @ (w.flatten(1) @ mod.weight_v))
    else:
        w = mod.weight
    return w.transpose(0, 1) if isinstance(mod, nn.ConvTranspose2d) else w


def _replaced(module: nn.Module, layer: str, weight: torch.Tensor) -> nn.Module:
    """A copy of the package's module whose ``layer`` convolves with ``weight`` (navcuda layout),
    its spectral norm removed: the oracle of a shift."""
    copy_ = copy.deepcopy(module)
    mod = copy_.get_submodule(layer)
    if hasattr(mod, "weight_orig"):
        nn.utils.remove_spectral_norm(mod)
    with torch.no_grad():
        mod.weight.copy_(weight.transpose(0, 1) if isinstance(mod, nn.ConvTranspose2d) else weight)
    return copy_.eval()


# ----------------------------------------------------------------------------- t = 0
def test_biggan_renders_as_the_package_at_t0():
    """Inputs as the package makes them, and ``render`` is ``BigGAN.forward(z, class_label,
    truncation)`` bit for bit (the same call on the same tensors: nothing is added at t = 0)."""
    g, m = _wrapped_biggan()  # (skips when the package is missing)
    from pytorch_pretrained_biggan import truncated_noise_sample

    labels = [3, 7, 0]
    for psi in (0.4, 1.0):  # interpolated / exact batch-norm statistics
        x = g.sample(3, 11, label=labels, truncation_psi=psi)
        z = torch.from_numpy(
            truncated_noise_sample(batch_size=3, dim_z=16, truncation=psi, seed=11)
        )
        c = torch.from_numpy(np.eye(BIGGAN_CLASSES, dtype=np.float32)[labels])
        assert torch.equal(x["z"], z) and torch.equal(x["class_label"], c)
        assert x.options == {"truncation": psi}
        with torch.no_grad():
            got, want = g.render(x), m(z, c, psi)
        assert got.shape == (3, 3, 32, 32) and float(want.std()) > 0.05
        assert torch.equal(got, want)
    # labels drawn from the seed: reproducible, one-hot, not all the same class
    x = g.sample(8, 5)
    assert torch.equal(x["class_label"], g.sample(8, 5)["class_label"])
    assert torch.equal(x["class_label"].sum(1), torch.ones(8))
    assert len(set(x["class_label"].argmax(1).tolist())) > 1
    assert g.image_shape == (3, 32, 32) and g.num_classes == BIGGAN_CLASSES
    assert g.latent.key == "z" and g.latent.dim == 16 and not g.latent.standalone


def test_pix2pixhd_renders_masks_as_the_package_at_t0():
    g, m = _wrapped_pix2pixhd()
    x = g.sample(3, 2)
    masks = x["input"]
    assert masks.shape == (3, P2P_CLASSES, 32, 32)
    assert torch.equal(masks.sum(1), torch.ones(3, 32, 32))  # one class per pixel
    assert all(int((masks[b].sum((1, 2)) > 0).sum()) >= 3 for b in range(3))  # several classes
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(g.sample(3, 2)["input"], masks)
    with torch.no_grad():
        got, want = g.render(x), m(masks)
    assert got.shape == (3, 3, 32, 32) and float(want.std()) > 0.05
    assert torch.equal(got, want)
    assert g.num_classes == 0 and g.latent is None


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("name", list(MODELS))
def test_every_conv_listed_with_its_effective_kernel_and_resolution(name):
    make, call, _, _ = MODELS[name]
    g, m = make(torch.float64)
    convs = {
        n: mod for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d))
    }
    # the package's module called directly: execution order and output resolutions
    seen: dict[str, int] = {}

    def record(n, _mod, _args, out):
        seen.setdefault(n, int(out.shape[2]))

    hooks = [mod.register_forward_hook(functools.partial(record, n)) for n, mod in convs.items()]
    try:
        with torch.no_grad():
            call(m, _sample(name, g, 1, 0))
    finally:
        for h in hooks:
            h.remove()

    infos = g.layers()
    assert [i.name for i in infos] == list(seen)  # every conv, in the order the forward runs them
    assert set(seen) == set(convs)
    for i in infos:
        mod = convs[i.name]
        transposed = isinstance(mod, nn.ConvTranspose2d)
        assert i.kind == ("conv_transpose2d" if transposed else "conv2d")
        assert i.weight_shape == (mod.out_channels, mod.in_channels, *mod.kernel_size)
        assert i.resolution == seen[i.name] and i.shiftable
        torch.testing.assert_close(g.kernel(i.name), _effective_kernel(mod), rtol=1e-12, atol=0)
        if hasattr(mod, "weight_orig"):  # the weight the eval-mode forward just convolved with
            w = mod.weight.transpose(0, 1) if transposed else mod.weight
            assert torch.equal(g.kernel(i.name), w)
    if name == "biggan":
        assert len(infos) == 21 and all(hasattr(convs[i.name], "weight_orig") for i in infos)
        res = {i.name: i.resolution for i in infos}
        assert res["generator.layers.0.conv_0"] == 4 and res[BIGGAN_LAYER] == 16
        assert res["generator.layers.2.snconv1x1_theta"] == 16
        assert res["generator.conv_to_rgb"] == 32
        assert g.layer(BIGGAN_LAYER).weight_shape == (8, 8, 3, 3)
    else:
        kinds = [(i.name, i.kind, i.resolution) for i in infos if i.kind == "conv_transpose2d"]
        assert kinds == [("model.11", "conv_transpose2d", 16), ("model.14", "conv_transpose2d", 32)]
        assert g.layer(P2P_LAYER).weight_shape == (16, 32, 3, 3)  # torch's weight: [32, 16, 3, 3]


# ----------------------------------------------------------------------------- shifts
@pytest.mark.parametrize("name", list(MODELS))
def test_shifted_render_is_the_package_with_the_weight_replaced(name):
    """A spectral-normed BigGAN conv and a pix2pixHD transposed conv (output padding 1): the
    render with ``t Delta`` is the package's module convolving with ``W_eff + t Delta``; one
    shift for the batch and one per sample. float64: 1e-10 is float64 rounding of a ~1e-1 image
    through ~20 layers, far below a wrong shift (>= 1e-3)."""
    make, call, layer, _ = MODELS[name]
    g, m = make(torch.float64)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    w_eff = _effective_kernel(m.get_submodule(layer)).detach()
    x = _sample(name, g, 3, 4)
    gen = torch.Generator().manual_seed(5)
    deltas = torch.randn(3, *w_eff.shape, generator=gen, dtype=torch.float64)
    deltas /= deltas.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    ts = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64) * float(w_eff.norm())
    with torch.no_grad():
        base = g.render(x)
        shared = g.render(x, LayerShift(layer, ts[0] * deltas[0]))
        want = call(_replaced(m, layer, w_eff + ts[0] * deltas[0]), x)
        torch.testing.assert_close(shared, want, **F64)
        assert float((shared - base).abs().max()) > 1e-2

        per_sample = g.render(x, LayerShift(layer, ts.view(-1, 1, 1, 1, 1) * deltas))
        split = g.render(x, LayerShift.split(layer, deltas[:2], ts, torch.tensor([1, 0, 1])))
        for b, j in enumerate([1, 0, 1]):
            xb = x.take([b])
            want_b = call(_replaced(m, layer, w_eff + ts[b] * deltas[b]), xb)
            torch.testing.assert_close(per_sample[b : b + 1], want_b, **F64)
            want_split = call(_replaced(m, layer, w_eff + ts[b] * deltas[j]), xb)
            torch.testing.assert_close(split[b : b + 1], want_split, **F64)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # never modified


# ----------------------------------------------------------------------------- the methods
def _calibrated_change(g, name, layer, direction, target):
    """Mean RMS image change at +-amplitude over the calibration's images (``sample(8, 0)``),
    measured here with one shared shift per sign."""
    x = _sample(name, g, 8, 0)
    delta = direction.delta(g, g.dtype)
    with torch.no_grad():
        base = g.render(x)
        rms = [
            (g.render(x, LayerShift(layer, s * direction.amplitude * delta)) - base)
            .double().square().mean(dim=(1, 2, 3)).sqrt().mean()
            for s in (1.0, -1.0)
        ]  # fmt: skip
    return float(sum(rms) / 2)


@pytest.mark.parametrize("name", list(MODELS))
def test_paper_methods_render_and_gallery(name, tmp_path):
    """SVD with calibrated amplitudes, the spectrum with exact (forward-mode) Gauss-Newton
    products, a few optimisation steps; then strips and a gallery of each set."""
    make, _, layer, _ = MODELS[name]
    g, m = make()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert g.architecture == {"biggan": "wrapped:BigGAN", "pix2pixhd": "wrapped:pix2pixHD"}[name]
    target = 0.15

    svd = navcuda.discover(g, layer, method="svd", k=3, target_rms=target)
    w_norm = float(g.kernel(layer).detach().double().norm())
    amps = svd.amplitudes.double()
    # inside the bracket (1e-5 .. 10 x the kernel norm), not clamped to its end
    assert bool(((amps > 1e-4 * w_norm) & (amps < 10 * w_norm * (1 - 1e-6))).all()), amps
    for d in svd:
        # 14 geometric bisection steps leave a bracket 1e6 ** (1 / 2**14) = 1.0008 wide: the
        # change at the amplitude is the target to ~0.1 % (the change is smooth in t)
        assert _calibrated_change(g, name, layer, d, target) == pytest.approx(target, rel=5e-3)

    spec = navcuda.discover(g, layer, method="spectrum", k=3, metric=PixelMSE(), n_latents=4,
                            max_iters=30, resize=None, progress=False)  # fmt: skip
    assert spec.extra["gn_mode"] == "forward"  # no shared-primal linearisation for a wrapped model
    assert spec.extra["converged"] and max(spec.extra["residuals"]) <= spec.hparams["tol"]
    vals = spec.values.tolist()
    assert vals == sorted(vals, reverse=True) and vals[-1] > 0
    assert bool(torch.isfinite(spec.amplitudes).all())

    opt = navcuda.discover(g, layer, method="optimize", k=3, steps=3, batch_size=4,
                           progress=False)  # fmt: skip
    assert opt.extra["steps"] == 3 and bool(torch.isfinite(opt.amplitudes).all())
    norms = torch.stack([d.delta(g).flatten().norm() for d in opt])
    torch.testing.assert_close(norms, torch.ones(3), rtol=1e-5, atol=0)

    with torch.no_grad():
        base = g.render(g.sample_seeds([0, 1], truncation_psi=0.7))
    for ds in (svd, spec, opt):
        assert (ds.model, ds.layer, ds.fingerprint) == (g.architecture, layer, g.fingerprint())
        out = tmp_path / ds.method
        res = navcuda.render(g, ds, [0, 1], ts=[-1, 0, 1], output_dir=out, progress=False)
        assert res.images.shape == (3, 2, 3, 3, 32, 32)
        assert [p.name for p in res.files] == [f"{i:02d}_{n}.png" for i, n in enumerate(ds.names)]
        assert all(p.stat().st_size > 0 for p in res.files)
        # t = 0 is the unshifted render (float32 rounding: the strips batch other samples)
        for i in range(3):
            torch.testing.assert_close(res.images[i, :, 1], base, rtol=0, atol=1e-5)
        assert float((res.images[:, :, 2] - base).abs().amax(dim=(1, 2, 3, 4)).min()) > 1e-2
        index = navcuda.build_gallery(g, ds, tmp_path / f"site-{ds.method}", seeds=2, ts=[-1, 0, 1])
        page = index.read_text(encoding="utf-8")
        assert f"3 {ds.method} directions of layer {layer}" in page and g.fingerprint() in page
        assert sorted(p.name for p in (index.parent / "img").iterdir()) == [
            f"{i:03d}.{ext}" for i in range(3) for ext in ("gif", "png")
        ]
    for k, v in m.state_dict().items():  # nothing trained or modified the generator
        assert torch.equal(v, state[k]), k


# ----------------------------------------------------------------------------- conditioning
def _recorder(module: nn.Module, key: str):
    """Every call of the package's module: the latent and conditioning it received, its images."""
    calls: list[dict[str, torch.Tensor]] = []

    def hook(_mod, args, kwargs, out):
        assert not args  # navcuda's default forward: module(**inputs.tensors, **inputs.options)
        row = {"cond": kwargs[key].detach().clone(), "out": out.detach().clone()}
        if "z" in kwargs:
            row["z"] = kwargs["z"].detach().clone()
        calls.append(row)

    return calls, module.register_forward_hook(hook, with_kwargs=True)


def _rows(call: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per sample: its latent (if any) and conditioning, flattened."""
    parts = [call["cond"].flatten(1)] + ([call["z"]] if "z" in call else [])
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("name", list(MODELS))
def test_conditioning_is_held_fixed_in_every_pair(name):
    """The original and the shifted render of a pair get the same class label (BigGAN) or mask
    (pix2pixHD), as the supplementary trains them; the samples of a batch get different ones, so
    resampling the conditioning for the shifted render would fail here."""
    make, _, layer, key = MODELS[name]
    g, m = make()
    svd = navcuda.discover(g, layer, method="svd", k=2, calibrate=False)
    assert g.image_shape == (3, 32, 32)  # (its one render, cached, is not part of a pair)
    calls, handle = _recorder(m, key)
    try:
        # one optimisation run: each step renders the original, then the shifted batch
        navcuda.discover(g, layer, method="optimize", k=3, steps=2, batch_size=6,
                         calibrate=False, progress=False)  # fmt: skip
        steps, calls[:] = list(calls), []
        calibrate_amplitudes(g, list(svd), n_z=4, iters=2)
        calibration, calls[:] = list(calls), []
        navcuda.discover(g, layer, method="spectrum", k=2, metric=PixelMSE(), n_latents=4,
                         max_iters=3, resize=None, calibrate=False, progress=False)  # fmt: skip
        spectrum = list(calls)
    finally:
        handle.remove()

    assert len(steps) == 4
    for original, shifted in (steps[0:2], steps[2:4]):
        assert torch.equal(_rows(original), _rows(shifted))
        assert len({tuple(r.tolist()) for r in original["cond"].flatten(1)}) > 1
        assert float((shifted["out"] - original["out"]).abs().amax(dim=(1, 2, 3)).min()) > 0
    assert not torch.equal(_rows(steps[0]), _rows(steps[2]))  # a fresh batch each step

    # calibration: the unshifted images first, then every shifted image is one of them
    base, shifted = calibration[0], calibration[1:]
    base_rows = _rows(base)
    assert len(base_rows) == 4 and len({tuple(r.tolist()) for r in base["cond"].flatten(1)}) > 1
    assert shifted and sum(len(c["cond"]) for c in shifted) == 2 * 2 * 4 * 3  # k, sign, z, steps
    for c in shifted:
        for row, img in zip(_rows(c), c["out"], strict=True):
            match = (base_rows == row).all(dim=1).nonzero().flatten()
            assert len(match) == 1  # the same latent and conditioning as one unshifted image
            assert float((img - base["out"][match[0]]).abs().max()) > 0

    # the spectrum's products: every render is of the 4 inputs it sampled once (under its memory
    # budget the setup renders them in chunks, so they are collected over every call): a
    # resampled label would add rows
    latents = torch.unique(torch.cat([_rows(c) for c in spectrum]), dim=0)
    assert len(latents) == 4 and len(spectrum) > 2

    if name == "biggan":  # a class asked for reaches every render
        fixed, handle = _recorder(m, key)
        try:
            calibrate_amplitudes(g, list(svd), n_z=2, iters=1, label=3)
        finally:
            handle.remove()
        assert fixed and all(bool((c["cond"].argmax(1) == 3).all()) for c in fixed)
