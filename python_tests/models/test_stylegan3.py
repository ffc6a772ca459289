"""navcuda's StyleGAN3 (navcuda.models.stylegan3): the published configs' schedules, NVlabs
pickles, parity with an independent re-implementation of NVlabs' forward, shifts, and the
parameter-space methods on it.

Oracles: ``nvlabs_sg3_reference.py`` (beside this file, written separately from navcuda from
NVlabs' source; a plain module loaded by path), NVlabs' schedule formulas evaluated by hand in the
tests, and for shifts the model with its raw weight replaced by ``W + t Delta`` (float64).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch

import navcuda
from navcuda.cli import main
from navcuda.metrics.perceptual import PixelMSE
from navcuda.models import CheckpointError, load_generator, save_generator
from navcuda.models.interface import GeneratorError, LayerShift
from navcuda.models.stylegan3 import Generator, StyleGAN3Config, stylegan3_layers
from navcuda.models.stylegan3_config import design_lowpass_filter, synthesis_schedule
from navcuda.shift import layer_space

# Tiny convolutions: one intra-op thread (python_tests/conftest.py, one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

_REF_PATH = Path(__file__).with_name("nvlabs_sg3_reference.py")


@pytest.fixture(scope="module")
def ref():
    """The independent NVlabs re-implementation (skips where the file is absent)."""
    if not _REF_PATH.is_file():
        pytest.skip(f"{_REF_PATH.name} is not there")
    spec = importlib.util.spec_from_file_location("nvlabs_sg3_reference", _REF_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ published configs
# NVlabs' formulas (SynthesisNetwork.__init__, 14 layers, 2 critically sampled, margin 10) give,
# for layer i = 0..14 of a resolution-R model:
#   cutoff      f_c = 2 (R/4)^min(i/12, 1)           (2 up to R/2)
#   stopband    f_t = 2^2.1 (R/2 2^0.3 / 2^2.1)^min(i/12, 1)
#   rate        s   = 2^ceil(log2(min(2 f_t, R)))     (listed below: ceil lands on exact values)
#   size            = s + 20, the last two R;  channels = rint(min(cbase / 2 / f_c, cmax)), last 3
# T: cbase 32768, cmax 512, 3x3 convs; R: cbase 65536, cmax 1024, 1x1 convs, radial filters.
RATES = {
    1024: [16, 16, 32, 32, 64, 128, 128, 256, 256, 512, 1024, 1024, 1024, 1024, 1024],
    256: [16, 16, 16, 32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256],
}
NAMES = {  # NVlabs' module names L{i}_{size}_{channels} (those of the published 1024 pickles)
    ("t", 1024): "L0_36_512 L1_36_512 L2_52_512 L3_52_512 L4_84_512 L5_148_512 L6_148_512 "
    "L7_276_323 L8_276_203 L9_532_128 L10_1044_81 L11_1044_51 L12_1044_32 L13_1024_32 L14_1024_3",
    ("r", 1024): "L0_36_1024 L1_36_1024 L2_52_1024 L3_52_1024 L4_84_1024 L5_148_1024 "
    "L6_148_1024 L7_276_645 L8_276_406 L9_532_256 L10_1044_161 L11_1044_102 L12_1044_64 "
    "L13_1024_64 L14_1024_3",
    ("t", 256): "L0_36_512 L1_36_512 L2_36_512 L3_52_512 L4_52_512 L5_84_512 L6_84_512 "
    "L7_148_512 L8_148_512 L9_148_362 L10_276_256 L11_276_181 L12_276_128 L13_256_128 L14_256_3",
    ("r", 256): "L0_36_1024 L1_36_1024 L2_36_1024 L3_52_1024 L4_52_1024 L5_84_1024 L6_84_1024 "
    "L7_148_1024 L8_148_1024 L9_148_724 L10_276_512 L11_276_362 L12_276_256 L13_256_256 "
    "L14_256_3",
}


@pytest.mark.parametrize("kind,res", list(NAMES))
def test_published_schedule_from_the_config_alone(kind, res, ref):
    cfg = StyleGAN3Config.published(f"stylegan3-{kind}", res)
    cbase, cmax, k = (32768, 512, 3) if kind == "t" else (65536, 1024, 1)
    assert (cfg.channel_base, cfg.channel_max, cfg.conv_kernel) == (cbase, cmax, k)
    first, specs = synthesis_schedule(cfg)
    infos = stylegan3_layers(cfg)
    assert [s.name for s in specs] == NAMES[kind, res].split()
    assert [i.name for i in infos] == [f"synthesis.{n}" for n in NAMES[kind, res].split()]
    assert len(infos) == 15 and cfg.num_ws == 16
    assert [i.index for i in infos] == list(range(15)) and [i.w_index for i in infos] == list(
        range(1, 16)
    )
    assert [i.role for i in infos] == ["conv"] * 14 + ["torgb"]
    assert [s.out_sampling_rate for s in specs] == RATES[res]
    assert [i.resolution for i in infos] == RATES[res]
    cutoffs = [2 * (res / 4) ** min(i / 12, 1) for i in range(15)]
    channels = [round(min(cbase / 2 / fc, cmax)) for fc in cutoffs[:-1]] + [3]
    sizes = [r + 20 for r in RATES[res][:-2]] + [res, res]
    for i, (s, info) in enumerate(zip(specs, infos, strict=True)):
        assert s.out_cutoff == pytest.approx(cutoffs[i], rel=1e-12)
        assert s.out_channels == channels[i] and s.out_size == sizes[i]
        assert s.in_channels == channels[max(i - 1, 0)]
        kk = 1 if s.is_torgb else k
        assert info.weight_shape == (channels[i], channels[max(i - 1, 0)], kk, kk)
        if not s.is_torgb:  # the leaky ReLU runs at twice the higher rate; 6-tap filters/factor
            assert s.tmp_sampling_rate == 2 * max(s.in_sampling_rate, s.out_sampling_rate)
            assert (s.up_taps, s.down_taps) == (6 * s.up_factor, 6 * s.down_factor)
        assert s.down_radial == (kind == "r" and i < 12)
    assert (first.channels, first.size, first.sampling_rate, first.bandwidth) == (
        channels[0], 36, 16, 2,
    )  # fmt: skip
    # Every field agrees with the independent re-implementation's schedule.
    kwargs = ref.published_kwargs(kind, res)
    assert cfg.num_ws == ref.num_ws(kwargs)
    for mine, theirs in zip(specs, ref.layer_schedule(kwargs), strict=True):
        for key, value in theirs.items():
            if hasattr(mine, key):
                want = tuple(value) if key == "padding" else value
                assert getattr(mine, key) == want, (mine.name, key)


@pytest.mark.parametrize("kind,res", list(NAMES))
def test_published_model_on_meta_has_nvlabs_state_dict(kind, res, ref):
    with torch.device("meta"):  # no weights are allocated
        g = Generator(StyleGAN3Config.published(kind, res))
    assert g.device.type == "meta" and g.image_shape == (3, res, res)
    assert [i.name for i in g.layers()] == [f"synthesis.{n}" for n in NAMES[kind, res].split()]
    mine = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    theirs = ref.random_state_dict(ref.published_kwargs(kind, res))
    assert list(mine) == list(theirs)  # NVlabs' order too
    theirs = {k: tuple(v.shape) for k, v in theirs.items()}
    assert mine == theirs


def test_filter_design_matches_nvlabs(ref):
    for kind in ("t", "r"):
        _, specs = synthesis_schedule(StyleGAN3Config.published(kind, 256))
        for s in specs[:3] + specs[-3:]:
            for args in [
                (s.up_taps, s.in_cutoff, 2 * s.in_half_width, s.tmp_sampling_rate, False),
                (s.down_taps, s.out_cutoff, 2 * s.out_half_width, s.tmp_sampling_rate,
                 s.down_radial),
            ]:  # fmt: skip
                mine, theirs = design_lowpass_filter(*args), ref.design_lowpass_filter(*args)
                if theirs is None:
                    assert mine is None
                    continue
                torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7)
                assert float(mine.double().sum()) == pytest.approx(1.0, abs=1e-6)  # DC gain 1
                assert mine.ndim == (2 if args[-1] else 1)


# ------------------------------------------------------------------ NVlabs pickles


def tiny_kwargs(ref, kind: str, c_dim: int = 0, **overrides) -> dict:
    """NVlabs init kwargs of a 32 px StyleGAN3 with 6 layers and 8-32 channels: every kind of
    layer of the full model (up 2 and up 4, margins, critical sampling, radial filters for R)."""
    cb, cm = (256, 16) if kind == "t" else (512, 32)
    kw = dict(z_dim=16, w_dim=16, c_dim=c_dim, num_layers=6, channel_base=cb, channel_max=cm)
    kw.update(overrides)
    return ref.published_kwargs(kind, 32, **kw)


@pytest.fixture
def write_sg3(tmp_path, nv):
    """``write(state, kwargs, name) -> path`` of an NVlabs stylegan3 network pickle."""

    def write(state, kwargs, name="network-snapshot.pkl", module_src=""):
        path = tmp_path / name
        nv.write_network_pickle(path, nv.build_stylegan3_tree(state, kwargs, module_src))
        return path

    return write


def _z(n: int, dim: int = 16, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# float32 parity: both sides run the same arithmetic in a different arrangement (grouped conv vs
# einsum for 1x1 kernels, a 2-D outer-product filter vs two 1-D passes, per-sample vs batch
# style normalisation, which only the demodulation's 1e-8 sees); measured <= 1e-6 on images of
# magnitude ~0.3. 1e-4 (the bound) leaves margin; a wrong filter, pad, gain or style moves
# pixels by >= 1e-2 (checked below: a label or psi change moves them more than 1e-3).
PARITY_ATOL = 1e-4


@pytest.mark.parametrize("kind", ["t", "r"])
def test_pickle_loads_and_matches_nvlabs_forward(kind, ref, write_sg3, tmp_path):
    kwargs = tiny_kwargs(ref, kind, c_dim=5)
    state = ref.random_state_dict(kwargs, seed=1)
    marker = tmp_path / "module_src_ran"
    path = write_sg3(state, kwargs, module_src=f"open({str(marker)!r}, 'w').close()\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = load_generator(path)
    assert not marker.exists()  # the pickled source never runs
    assert isinstance(g, Generator) and g.architecture == "stylegan3" and g.num_classes == 5
    assert not g.training and g.config.conv_kernel == (3 if kind == "t" else 1)
    assert g.state_dict().keys() == state.keys()
    assert all(torch.equal(g.state_dict()[k], v) for k, v in state.items())
    z, labels = _z(4), torch.tensor([0, 3, 4, 1])
    c = torch.nn.functional.one_hot(labels, 5).float()
    with torch.no_grad():
        ours = g.render(g.from_z(z, 0.7, label=labels))
        theirs = ref.generator_forward(state, kwargs, z, c, truncation_psi=0.7)
        other_label = g.render(g.from_z(z, 0.7, label=2))
        untruncated = g.render(g.from_z(z, 1.0, label=labels))
    diff = (ours - theirs).abs().max().item()
    print(f"StyleGAN3-{kind.upper()} parity: max |navcuda - reference| = {diff:.3g}")
    assert ours.shape == (4, 3, 32, 32) and diff <= PARITY_ATOL
    assert (ours - other_label).abs().max() > 1e-3 and (ours - untruncated).abs().max() > 1e-3
    assert ours.std() > 1e-2


@pytest.mark.parametrize("kind", ["t", "r"])
def test_published_geometry_matches_nvlabs_forward(kind, ref):
    """The published 256 px configs with 8/16 channels: every size, rate, filter and padding of
    the published networks (14 layers, margins, up-by-4 layers, critical sampling), cheap."""
    narrow = dict(z_dim=32, w_dim=32, channel_max=8 if kind == "t" else 16)
    kwargs = ref.published_kwargs(kind, 256, **narrow)
    state = ref.random_state_dict(kwargs, seed=0)
    g = Generator(StyleGAN3Config(**_config_kwargs(kwargs)))
    g.load_state_dict(state)
    sizes = [s.name.rsplit("_", 1)[0] for s in synthesis_schedule(g.config)[1]]
    assert sizes == [n.rsplit("_", 1)[0] for n in NAMES[kind, 256].split()]  # published L{i}_{size}
    z = _z(2, 32)
    with torch.no_grad():
        ours = g.eval().render(g.from_z(z, 0.7))
        theirs = ref.generator_forward(state, kwargs, z, None, truncation_psi=0.7)
    diff = (ours - theirs).abs().max().item()
    print(f"StyleGAN3-{kind.upper()} 256 geometry parity: max abs diff {diff:.3g}")
    # 1e-4 of the images' range (their magnitude depends on the random weights: ~0.03 to ~1)
    assert diff <= PARITY_ATOL * theirs.abs().max().item()


def test_pickle_with_unknown_missing_or_misshapen_tensors_is_refused(ref, write_sg3):
    kwargs = tiny_kwargs(ref, "t")
    state = ref.random_state_dict(kwargs)
    extra = {**state, "synthesis.L2_52_16.noise_strength": torch.zeros([])}
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'synthesis\.L2_52_16\."
                       r"noise_strength'.*StyleGAN3-T-like, resolution 32"):  # fmt: skip
        load_generator(write_sg3(extra, kwargs, "extra.pkl"))
    missing = {k: v for k, v in state.items() if k != "synthesis.L3_52_13.down_filter"}
    with pytest.raises(CheckpointError, match=r"missing tensor 'synthesis\.L3_52_13\.down_filter'"
                       r" \(expected shape \[12\]"):  # fmt: skip
        load_generator(write_sg3(missing, kwargs, "missing.pkl"))
    bad = {**state, "synthesis.L1_36_16.weight": torch.zeros(16, 16, 1, 1)}
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'synthesis\.L1_36_16\.weight'"
                       r": expected \[16, 16, 3, 3\], found \[16, 16, 1, 1\]"):  # fmt: skip
        load_generator(write_sg3(bad, kwargs, "bad.pkl"))
    nan = {**state, "mapping.fc0.weight": state["mapping.fc0.weight"] * float("nan")}
    with pytest.raises(CheckpointError, match="'mapping.fc0.weight' contains NaN"):
        load_generator(write_sg3(nan, kwargs, "nan.pkl"))


def test_pickle_with_unsupported_kwargs_is_refused(ref, write_sg3, nv, tmp_path):
    kwargs = tiny_kwargs(ref, "t")
    state = ref.random_state_dict(kwargs)
    fork = {**kwargs, "freeze_layers": 2}  # a fork's kwarg changes what the code does
    with pytest.raises(CheckpointError, match=r"unsupported StyleGAN3 constructor kwargs "
                       r"\['G\.freeze_layers', 'synthesis\.freeze_layers'\]"):  # fmt: skip
        load_generator(write_sg3(state, fork, "fork.pkl"))
    tree = nv.build_stylegan3_tree(state, kwargs)
    tree.state["_modules"]["mapping"].state["_init_kwargs"]["num_layers"] = 3
    nv.write_network_pickle(tmp_path / "contra.pkl", tree)
    with pytest.raises(CheckpointError, match=r"contradictory StyleGAN3 kwargs: mapping\."
                       r"num_layers=3 but the generator records mapping_layers=2"):  # fmt: skip
        load_generator(tmp_path / "contra.pkl")
    bare = nv.build_tree(state)  # no recorded kwargs at all
    nv.write_network_pickle(tmp_path / "bare.pkl", bare)
    with pytest.raises(CheckpointError, match="records no constructor kwargs for its StyleGAN3"):
        load_generator(tmp_path / "bare.pkl")


def test_cli_info_lists_the_layers(ref, write_sg3, capsys):
    path = write_sg3(ref.random_state_dict(tiny_kwargs(ref, "r")), tiny_kwargs(ref, "r"))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(stylegan3)" in out and "images [3, 32, 32]" in out
    assert "synthesis.L2_52_32" in out and "[32, 32, 1, 1]" in out and "torgb" in out


def test_navcuda_file_round_trip(ref, write_sg3, tmp_path):
    kwargs = tiny_kwargs(ref, "t", c_dim=3)
    g = load_generator(write_sg3(ref.random_state_dict(kwargs, seed=2), kwargs))
    path = save_generator(g, tmp_path / "g.safetensors", metadata={"note": "sg3"})
    back = load_generator(path)
    assert isinstance(back, Generator) and back.config == g.config
    assert back.fingerprint() == g.fingerprint()
    x = g.sample(2, 0)
    with torch.no_grad():
        assert torch.equal(back.render(x), g.render(x))


# ------------------------------------------------------------------ the generator interface


@pytest.fixture(scope="module")
def g64(ref):
    """A float64 StyleGAN3-T (conditional, 3 classes) loaded from a state of the reference; a
    2-pixel margin keeps the feature maps small (18 and 34 px)."""
    kwargs = tiny_kwargs(ref, "t", c_dim=3, margin_size=2)
    g = Generator(StyleGAN3Config(**_config_kwargs(kwargs)))
    g.load_state_dict(ref.random_state_dict(kwargs, seed=4))
    return g.double().eval()


def _config_kwargs(kwargs: dict) -> dict:
    top = {k: v for k, v in kwargs.items() if k != "mapping_kwargs"}
    m = kwargs["mapping_kwargs"]
    return dict(top, mapping_layers=m["num_layers"], mapping_lr_multiplier=m["lr_multiplier"],
                w_avg_beta=m["w_avg_beta"])  # fmt: skip


def _replaced(g: Generator, layer: str, weight: torch.Tensor) -> Generator:
    """A copy of ``g`` whose ``layer`` has the raw weight ``weight``: the oracle of shifts."""
    copy = Generator(g.config).double().eval()
    copy.load_state_dict(g.state_dict())
    with torch.no_grad():
        copy.get_submodule(layer).weight.copy_(weight)
    return copy


F64 = dict(rtol=0, atol=1e-10)  # float64: rounding differences ~1e-15; any mistake >= 1e-3


@pytest.mark.parametrize("index", [2, 6])  # the upsampling-by-4 layer, toRGB
def test_shifts_equal_the_model_with_the_weight_replaced(g64, index):
    layer = g64.layer(index).name
    gen = torch.Generator().manual_seed(0)
    x = g64.sample(3, 5, truncation_psi=0.8)
    w = g64.kernel(layer).detach().clone()
    d = torch.randn(3, *w.shape, generator=gen, dtype=torch.float64)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    t = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64) * float(w.norm())
    with torch.no_grad():
        base = g64.render(x)
        per_sample = g64.render(x, LayerShift(layer, t.view(-1, 1, 1, 1, 1) * d))
        shared = g64.render(x, LayerShift(layer, t[0] * d[0]))
        split = g64.render(x, LayerShift.split(layer, d[:2], t, torch.tensor([1, 0, 1])))
        zero = g64.render(x, LayerShift.split(layer, d[:1], torch.zeros_like(t)))
        alone = [g64.render(x.take([b]), LayerShift(layer, t[b] * d[b])) for b in range(3)]
        for b in range(3):
            oracle = _replaced(g64, layer, w + t[b] * d[b]).render(x.take([b]))
            torch.testing.assert_close(per_sample[b : b + 1], oracle, **F64)
            torch.testing.assert_close(alone[b], oracle, **F64)
            assert (oracle - base[b : b + 1]).abs().max() > 1e-3  # the shift matters
        torch.testing.assert_close(shared, _replaced(g64, layer, w + t[0] * d[0]).render(x), **F64)
        for b, j in enumerate([1, 0, 1]):
            oracle = _replaced(g64, layer, w + t[b] * d[j]).render(x.take([b]))
            torch.testing.assert_close(split[b : b + 1], oracle, **F64)
    assert torch.equal(zero, base)  # a zero shift renders bit-identically
    assert torch.equal(g64.kernel(layer), w)  # parameters untouched


def test_svd_shift_split_resume_and_gradients(g64):
    layer = "synthesis.L3_36_13"
    space = layer_space(g64, layer)
    u, s, vh = space.u.double(), space.s.double(), space.vh.double()
    gen = torch.Generator().manual_seed(1)
    coeffs = torch.randn(2, s.shape[0], generator=gen, dtype=torch.float64)
    t = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    x = g64.sample(2, 3)
    shift = LayerShift.svd(layer, u, s, vh, t, coeffs)
    img = g64.render(x, shift)
    delta = LayerShift.svd(layer, u, s, vh, t.detach(), coeffs).materialise(g64.kernel(layer).shape)
    torch.testing.assert_close(img, g64.render(x, LayerShift(layer, delta)), **F64)
    state = g64.split(x, layer)
    assert state.cache is not None and g64.caches_prefix
    torch.testing.assert_close(g64.resume(state, shift), img, **F64)
    with pytest.raises(GeneratorError, match="runs before"):
        g64.resume(state, LayerShift("synthesis.L1_20_16", torch.zeros(16, 16, 3, 3).double()))
    (gt,) = torch.autograd.grad(img.square().sum(), t)
    with torch.no_grad():  # central difference of the same loss in t
        h = 1e-5
        e = torch.tensor([h, 0.0], dtype=torch.float64)
        up = g64.render(x, LayerShift.svd(layer, u, s, vh, t.detach() + e, coeffs)).square().sum()
        dn = g64.render(x, LayerShift.svd(layer, u, s, vh, t.detach() - e, coeffs)).square().sum()
    assert float(gt[0]) == pytest.approx(float((up - dn) / (2 * h)), rel=1e-6)


def test_sampling_labels_and_latents(g64):
    a, b = g64.sample(3, 11), g64.sample_seeds([11, 12])
    assert a["label"].dtype == torch.int64 and a["label"].shape == (3,)
    assert torch.equal(g64.sample(1, 11)["ws"], b["ws"][:1])  # sample s of sample_seeds
    assert torch.equal(g64.sample(1, 12)["label"], b["label"][1:])
    assert (g64.sample(4, 0, label=2)["label"] == 2).all()
    with pytest.raises(GeneratorError, match="out of range"):
        g64.sample(2, 0, label=3)
    with pytest.raises(GeneratorError, match="conditional"):
        g64.from_z(_z(2).double())
    ws = g64.sample(2, 0)["ws"]
    with torch.no_grad():  # W and W+ render alike; from_latents keeps the ws
        plus = ws[:, None].expand(-1, g64.num_ws, -1)
        torch.testing.assert_close(g64.render(g64.from_latents(plus)),
                                   g64.render(g64.from_latents(ws)), **F64)  # fmt: skip
    with pytest.raises(GeneratorError, match=r"ws must be \[B, 16\] or \[B, 8, 16\]"):
        g64.render(g64.from_latents(ws[:, None].expand(-1, 3, -1)))
    readers = g64.latent_readers("all")
    assert len(readers) == 7 and readers[0].shape == (16, 16) and readers[-1].shape == (8, 16)


def test_fingerprint_ignores_w_avg_only(g64):
    fp = g64.fingerprint()
    g = Generator(g64.config).double()
    g.load_state_dict(g64.state_dict())
    with torch.no_grad():
        g.w_avg.add_(1.0)
        assert g.fingerprint() == fp
        g.synthesis.L0_20_16.magnitude_ema.mul_(2.0)
        assert g.fingerprint() != fp


# ------------------------------------------------------------------ the methods


@pytest.fixture(scope="module")
def tiny():
    """A 16 px StyleGAN3-T built from its config (NVlabs' filter design), 8 channels."""
    torch.manual_seed(0)
    cfg = StyleGAN3Config(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=8,
                          num_layers=4, num_critical=1, margin_size=2)  # fmt: skip
    g = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g


def test_parameter_space_methods_run(tiny, tmp_path):
    layer = 2
    svd = navcuda.discover(tiny, layer, method="svd", k=3)
    assert len(svd) == 3 and svd.model == "stylegan3" and svd.layer == tiny.layer(layer).name
    assert torch.isfinite(svd.amplitudes).all() and (svd.amplitudes > 0).all()
    spec = navcuda.discover(tiny, layer, method="spectrum", k=2, metric=PixelMSE(), n_latents=2,
                            max_iters=3, resize=None, progress=False)  # fmt: skip
    assert spec.extra["gn_mode"] == "forward"  # no linearisation: forward-mode AD through it all
    opt = navcuda.discover(tiny, layer, method="optimize", k=2, steps=2, batch_size=4,
                           reconstructor_size=32, progress=False)  # fmt: skip
    assert len(opt) == 2 and torch.isfinite(opt.coefficients).all()
    for ds in (svd, spec, opt):
        ds.check_compatible(tiny)
    res = navcuda.render(tiny, svd, [0, 1], ts=[-1, 0, 1], output_dir=tmp_path, progress=False)
    assert res.images.shape == (3, 2, 3, 3, 16, 16) and len(res.files) == 3
    with torch.no_grad():
        base = tiny.render(tiny.sample_seeds([0, 1], truncation_psi=0.7))
    torch.testing.assert_close(res.images[:, :, 1], base.expand(3, -1, -1, -1, -1))
    assert (res.images[:, :, 0] - res.images[:, :, 1]).abs().max() > 1e-3
    assert math.isfinite(float(res.images.abs().max()))
