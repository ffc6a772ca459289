"""Checkpoints: navcuda .safetensors and rosinality .pt round trips, format detection, errors."""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import struct
import zipfile

import pytest
import safetensors.torch
import torch

import navcuda.io.atomic
from navcuda.models import (
    PRESETS,
    CheckpointError,
    Generator,
    GeneratorConfig,
    detect_format,
    load_generator,
    read_metadata,
    save_generator,
)
from navcuda.models.checkpoints import infer_config


def _tiny(tiny_config, **kw) -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config(**kw)).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g


CONFIGS = [{}, {"channel_map": {4: 16, 8: 32, 16: 24}}]


def _same_images(a: Generator, b: Generator) -> None:
    z = torch.randn(3, a.config.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(a(z, noise_mode="const"), b(z, noise_mode="const"))
        assert torch.equal(a(z, truncation_psi=0.5), b(z, truncation_psi=0.5))


def _same_architecture(a: GeneratorConfig, b: GeneratorConfig) -> None:
    """Equal but for channel_base/channel_max, which do not matter under a channel_map."""
    if a.channel_map is None:
        assert a == b
        return
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        del d["channel_base"], d["channel_max"]
    assert da == db


def _rosinality_state(g: Generator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in g.state_dict().items() if k != "w_avg"}


# ------------------------------------------------------------------ navcuda format


@pytest.mark.parametrize("overrides", CONFIGS)
def test_navcuda_round_trip(tmp_path, tiny_config, overrides):
    g = _tiny(tiny_config, **overrides)
    path = save_generator(g, tmp_path / "g.safetensors", metadata={"trained_steps": 6000})
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors"]  # one file, no temporaries
    assert detect_format(path) == "navcuda"
    loaded = load_generator(path)
    assert loaded.config == g.config
    assert not loaded.training
    _same_images(g, loaded)
    assert read_metadata(path) == {"trained_steps": 6000}
    header = json.loads(safetensors.safe_open(str(path), "pt").metadata()["navcuda"])
    assert header["format"] == "navcuda-generator" and header["version"] == 1
    assert GeneratorConfig.from_dict(header["config"]) == g.config


def test_save_is_atomic(tmp_path, tiny_config, monkeypatch):
    g = _tiny(tiny_config)
    target = tmp_path / "g.safetensors"
    save_generator(g, target, metadata={"v": 1})
    before = target.read_bytes()

    def full_disk(path, data):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(navcuda.io.atomic, "_write_file", full_disk)
    with pytest.raises(
        OSError,
        match=r"cannot write .*g\.safetensors: No space left on device: the disk \(or your "
        r"quota\) is full; free some space or write elsewhere",
    ):
        save_generator(g, target, metadata={"v": 2})
    assert os.listdir(tmp_path) == ["g.safetensors"]
    assert target.read_bytes() == before
    monkeypatch.undo()
    with pytest.raises(TypeError, match="JSON"):
        save_generator(g, tmp_path / "h.safetensors", metadata={"bad": object()})
    assert os.listdir(tmp_path) == ["g.safetensors"]


def test_navcuda_file_errors(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    sd = {k: v.contiguous() for k, v in g.state_dict().items()}
    header = {"format": "navcuda-generator", "version": 1, "config": g.config.to_dict(), "user": {}}

    def write(name, tensors, hdr):
        p = tmp_path / name
        safetensors.torch.save_file(tensors, str(p), metadata={"navcuda": json.dumps(hdr)})
        return p

    with pytest.raises(CheckpointError, match="version 2.*upgrade navcuda"):
        load_generator(write("v2.safetensors", sd, {**header, "version": 2}))
    with pytest.raises(CheckpointError, match="format 'other'"):
        load_generator(write("fmt.safetensors", sd, {**header, "format": "other"}))
    bad = dict(sd)
    bad["convs.1.conv.weight"] = torch.zeros(1, 32, 32, 3, 2)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch for 'convs\.1\.conv\.weight': expected \[1, 32, 32, 3, 3\], "
        r"found \[1, 32, 32, 3, 2\]",
    ):
        load_generator(write("shape.safetensors", bad, header))
    missing = {k: v for k, v in sd.items() if k != "w_avg"}
    with pytest.raises(CheckpointError, match="missing tensor 'w_avg'"):
        load_generator(write("missing.safetensors", missing, header))
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(sd, str(plain))
    with pytest.raises(CheckpointError, match="without navcuda metadata"):
        load_generator(plain)


# ------------------------------------------------------------------ rosinality format


@pytest.mark.parametrize("overrides", CONFIGS)
def test_rosinality_round_trip(tmp_path, tiny_config, overrides):
    g = _tiny(tiny_config, **overrides)
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": _rosinality_state(g), "latent_avg": g.w_avg.clone()}, path)
    assert detect_format(path) == "rosinality"
    loaded = load_generator(path)
    _same_architecture(loaded.config, g.config)
    _same_images(g, loaded)


def test_rosinality_legacy_torch_save_format(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = tmp_path / "old.pt"
    state = {"g_ema": _rosinality_state(g), "latent_avg": g.w_avg.clone()}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert detect_format(path) == "rosinality"
    _same_images(g, load_generator(path))


def test_rosinality_training_checkpoint_with_namespace_args(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    opt = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    g(torch.randn(2, 32)).square().mean().backward()
    opt.step()
    g.zero_grad(set_to_none=True)
    d = torch.nn.Linear(4, 1)
    args = argparse.Namespace(
        path="lmdb", iter=800000, batch=16, size=16, r1=10.0, ckpt=None, lr=0.002, wandb=False
    )
    path = tmp_path / "010000.pt"
    torch.save(
        {
            "g": g.state_dict(),
            "d": d.state_dict(),
            "g_ema": _rosinality_state(g),
            "g_optim": opt.state_dict(),
            "d_optim": torch.optim.Adam(d.parameters()).state_dict(),
            "args": args,
            "latent_avg": g.w_avg.clone(),
        },
        path,
    )
    _same_images(g, load_generator(path))


class _Custom:  # an arbitrary class: weights_only must refuse it
    pass


def test_rosinality_with_unknown_object_refused(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = tmp_path / "custom.pt"
    torch.save({"g_ema": _rosinality_state(g), "extra": _Custom()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_generator(path)


def test_rosinality_without_latent_avg_warns_and_computes(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = tmp_path / "noavg.pt"
    torch.save({"g_ema": _rosinality_state(g)}, path)
    with pytest.warns(UserWarning, match="no 'latent_avg'"):
        loaded = load_generator(path)
    expected = g.update_w_avg()  # default n/seed, as the loader uses
    torch.testing.assert_close(loaded.w_avg, expected)


def test_rosinality_without_noise_buffers(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    sd = {k: v for k, v in _rosinality_state(g).items() if not k.startswith("noises.")}
    path = tmp_path / "old_rosinality.pt"
    torch.save({"g_ema": sd, "latent_avg": g.w_avg.clone()}, path)
    with pytest.warns(UserWarning, match="no constant noise"):
        loaded = load_generator(path)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(z, noise_mode="none"), g(z, noise_mode="none"))


def test_rosinality_shape_and_key_errors(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    sd = _rosinality_state(g)
    bad = dict(sd)
    bad["to_rgbs.0.conv.modulation.weight"] = torch.zeros(32, 31)
    path = tmp_path / "shape.pt"
    torch.save({"g_ema": bad}, path)
    with pytest.raises(
        CheckpointError,
        match=r"'to_rgbs\.0\.conv\.modulation\.weight': expected \[32, 32\], found \[32, 31\]",
    ):
        load_generator(path)
    missing = {k: v for k, v in sd.items() if k != "convs.2.noise.weight"}
    torch.save({"g_ema": missing}, path)
    with pytest.raises(CheckpointError, match=r"missing tensor 'convs\.2\.noise\.weight'"):
        load_generator(path)
    extra = {**sd, "convs.9.conv.weight": torch.zeros(1)}
    torch.save({"g_ema": extra}, path)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'convs\.9\.conv\.weight'"):
        load_generator(path)
    torch.save({"g_ema": {k: v for k, v in sd.items() if k != "style.1.weight"}}, path)
    with pytest.raises(CheckpointError, match=r"missing tensor 'style\.1\.weight'"):
        load_generator(path)


def test_infer_channels_prefers_rosinality_form():
    def state_for(cfg: GeneratorConfig) -> dict:
        with torch.device("meta"):
            return Generator(cfg).state_dict()

    for m in (1, 2):
        cfg = GeneratorConfig.rosinality(256, style_dim=16, n_mlp=2, channel_multiplier=m)
        inferred = infer_config(state_for(cfg))
        assert (inferred.channel_base, inferred.channel_max) == (16384 * m, 512)
        assert inferred.channel_map is None
    cfg = GeneratorConfig(
        resolution=64, z_dim=8, w_dim=8, n_mlp=1, channel_map={4: 8, 8: 16, 16: 8, 32: 8, 64: 4}
    )
    assert infer_config(state_for(cfg)).channel_map == cfg.channel_map


# ------------------------------------------------------------------ detection and bad files


def test_missing_file_and_directory(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=r"nope\.pt.*does not exist.*rosinality"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="not a file"):
        load_generator(tmp_path)


def test_text_file_and_non_generator_torch_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a recognised checkpoint"):
        load_generator(text)
    other = tmp_path / "classifier.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, other)
    with pytest.raises(CheckpointError, match=r"no 'g_ema' entry \(found: \['epoch', 'model'\]\)"):
        load_generator(other)
    tensor_only = tmp_path / "t.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="no 'g_ema' entry .*Tensor"):
        load_generator(tensor_only)


# ------------------------------------------------------------------ corrupt weights


def test_non_finite_tensors_refused_in_every_format(tmp_path, tiny_config, nv):
    g = _tiny(tiny_config)
    nan_g = _tiny(tiny_config)
    with torch.no_grad():
        nan_g.conv1.activate.bias[3] = float("nan")
    path = save_generator(nan_g, tmp_path / "x.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"'.*x\.safetensors': tensor 'conv1\.activate\.bias' contains NaN/Inf values: "
        "the file is corrupt",
    ):
        load_generator(path)

    sd = _rosinality_state(g)
    sd["convs.2.conv.weight"] = sd["convs.2.conv.weight"].clone()
    sd["convs.2.conv.weight"][0, 1, 2, 0, 0] = float("inf")
    pt = tmp_path / "inf.pt"
    torch.save({"g_ema": sd, "latent_avg": g.w_avg.clone()}, pt)
    with pytest.raises(CheckpointError, match=r"inf\.pt.*'convs\.2\.conv\.weight' contains NaN"):
        load_generator(pt)
    bad_avg = tmp_path / "avg.pt"  # a buffer (latent_avg -> w_avg) counts as well
    torch.save(
        {"g_ema": _rosinality_state(g), "latent_avg": torch.full_like(g.w_avg, -math.inf)}, bad_avg
    )
    with pytest.raises(CheckpointError, match=r"avg\.pt.*tensor 'w_avg' contains NaN/Inf"):
        load_generator(bad_avg)

    flat = nv.rosinality_to_nvlabs(g)
    flat["synthesis.b16.conv1.bias"] = flat["synthesis.b16.conv1.bias"].clone()
    flat["synthesis.b16.conv1.bias"][0] = float("nan")
    pkl = tmp_path / "network-snapshot.pkl"
    nv.write_network_pickle(pkl, nv.build_tree(flat, nv.nvlabs_kwargs(g)))
    with pytest.raises(CheckpointError, match=r"network-snapshot\.pkl.*contains NaN/Inf values"):
        load_generator(pkl)


def _flip_byte_in_member(path, member_suffix: str) -> str:
    """Flip one byte in the middle of the stored zip member whose name ends with the suffix."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    raw = bytearray(path.read_bytes())
    # Local file header: 30 fixed bytes, then the name and the extra field (lengths at 26 and 28).
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    return info.filename


def test_rosinality_zip_with_flipped_bytes_refused(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = tmp_path / "flipped.pt"
    sd = _rosinality_state(g)
    torch.save({"g_ema": sd, "latent_avg": g.w_avg.clone()}, path)
    # A byte inside the largest stored tensor (storages are numbered in the order torch.save
    # meets them): without the CRC check the file loads, with one weight silently changed.
    biggest = max(sd, key=lambda k: sd[k].numel())
    storage = list(sd).index(biggest)
    member = _flip_byte_in_member(path, f"data/{storage}")
    with pytest.raises(
        CheckpointError, match=rf"flipped\.pt' is a damaged torch zip file \(zip member '{member}'"
    ):
        load_generator(path)


def test_rosinality_zip_without_crc_still_loads(tmp_path, tiny_config):
    """torch.save can skip the CRCs (its members then store 0): such files are not refused."""
    from torch.utils.serialization import config

    g = _tiny(tiny_config)
    path = tmp_path / "nocrc.pt"
    # (set and restored by hand: pytest's monkeypatch cannot undo an attribute of torch's config
    # modules, which then breaks every later torch.save)
    before = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        torch.save({"g_ema": _rosinality_state(g), "latent_avg": g.w_avg.clone()}, path)
    finally:
        config.save.compute_crc32 = before
    _same_images(g, load_generator(path))


# ------------------------------------------------------------------ official presets


def _expected_params(cfg: GeneratorConfig) -> int:
    """Parameter count of a rosinality generator, counted independently of the module."""
    w = cfg.w_dim
    n = cfg.z_dim * w + w + (cfg.n_mlp - 1) * (w * w + w)
    mod = lambda c: w * c + c  # noqa: E731 - modulation of a conv with c inputs
    c4 = cfg.channels(4)
    n += c4 * 16 + (c4 * c4 * 9 + mod(c4) + 1 + c4) + (3 * c4 + mod(c4) + 3)
    cin = c4
    for r in cfg.resolutions[1:]:
        c = cfg.channels(r)
        n += (c * cin * 9 + mod(cin) + 1 + c) + (c * c * 9 + mod(c) + 1 + c) + (3 * c + mod(c) + 3)
        cin = c
    return n


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_on_meta_device(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        g = Generator(cfg)
    n = sum(p.numel() for p in g.parameters())
    assert n == _expected_params(cfg)
    assert g.style[1].weight.device.type == "meta"
    if name == "ffhq-1024":
        assert math.isclose(n, 30.0e6, rel_tol=0.02), n
    else:
        assert 20e6 < n < 31e6, n


# ------------------------------------------------------------------ integrity (issue 22)


@pytest.fixture
def fresh_notes(monkeypatch):
    """The once-per-process note about files without a checksum, afresh."""
    from navcuda.io import checksum

    monkeypatch.setattr(checksum, "_NOTED", set())


def test_a_flipped_bit_in_a_weight_is_refused_as_damage(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = save_generator(g, tmp_path / "g.safetensors")
    header = json.loads(safetensors.safe_open(str(path), "pt").metadata()["navcuda"])
    assert header["checksum"].startswith("sha256:")
    raw, data = bytearray(path.read_bytes()), g.convs[1].conv.weight.detach().numpy().tobytes()
    at = raw.find(data)
    raw[at + len(data) // 2] ^= 0x01  # a low mantissa bit: still a finite, plausible weight
    path.write_bytes(bytes(raw))
    with pytest.raises(
        CheckpointError,
        match=r"g\.safetensors' is damaged: its tensor data does not match the checksum recorded "
        r"when it was written .*; re-download or re-copy the file, or save the generator again",
    ):
        load_generator(path)


def test_a_generator_without_a_checksum_loads_with_a_note(tmp_path, tiny_config, fresh_notes):
    from navcuda.io.checksum import NoChecksumWarning

    g = _tiny(tiny_config)
    header = {"format": "navcuda-generator", "version": 1, "config": g.config.to_dict(), "user": {}}
    path = tmp_path / "old.safetensors"
    sd = {k: v.contiguous() for k, v in g.state_dict().items()}
    safetensors.torch.save_file(sd, str(path), metadata={"navcuda": json.dumps(header)})
    with pytest.warns(NoChecksumWarning, match=r"old\.safetensors' records no checksum"):
        _same_images(g, load_generator(path))


class _BuiltOnlyOnMeta(Generator):
    """A Generator that fails when built with real storage for a large config."""

    def __init__(self, config):
        if config.w_dim > 64 and torch.get_default_device().type != "meta":
            raise AssertionError(f"allocated a generator of w_dim {config.w_dim} unchecked")
        super().__init__(config)


@pytest.mark.parametrize("w_dim", [16384, 2**30])
def test_a_config_claiming_a_huge_network_is_refused_before_allocating(
    tmp_path, tiny_config, monkeypatch, nv, w_dim
):
    """A small file whose recorded config claims a huge w_dim: the implied shapes are compared
    with the stored ones on the meta device, and nothing of that size is allocated."""
    import navcuda.models.checkpoints as ckpt

    g = _tiny(tiny_config)
    sd = {k: v.contiguous() for k, v in g.state_dict().items()}
    config = {**g.config.to_dict(), "w_dim": w_dim}
    header = {"format": "navcuda-generator", "version": 1, "config": config, "user": {}}
    path = tmp_path / "claims.safetensors"
    safetensors.torch.save_file(sd, str(path), metadata={"navcuda": json.dumps(header)})
    pkl = tmp_path / "claims.pkl"
    kwargs = nv.nvlabs_kwargs(g, w_dim=w_dim)  # the generator's kwargs claim it
    nv.write_network_pickle(pkl, nv.build_tree(nv.rosinality_to_nvlabs(g), kwargs))
    monkeypatch.setattr(ckpt, "Generator", _BuiltOnlyOnMeta)
    for p in (path, pkl):
        with pytest.raises(
            CheckpointError, match=rf"{p.name}': shape mismatch for '.*': expected \[.*{w_dim}"
        ):
            load_generator(p)


def test_a_one_dimensional_style_weight_is_a_named_error(tmp_path, tiny_config):
    sd = _rosinality_state(_tiny(tiny_config))
    sd["style.1.weight"] = torch.zeros(32)
    path = tmp_path / "flat.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(
        CheckpointError,
        match=r"flat\.pt': tensor 'style\.1\.weight' should have 2 dimensions \[w_dim, z_dim\], "
        r"found shape \[32\]: the checkpoint is damaged or not a StyleGAN2 generator",
    ):
        load_generator(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_truncated_pt_is_called_damaged(tmp_path, tiny_config, legacy):
    g = _tiny(tiny_config)
    path = tmp_path / "cut.pt"
    state = {"g_ema": _rosinality_state(g), "latent_avg": g.w_avg.clone()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    what = "torch file" if legacy else r"torch zip file: it starts like one but has no zip"
    with pytest.raises(CheckpointError, match=rf"cut\.pt' is a damaged \(truncated\??\) {what}"):
        load_generator(path)


def test_a_truncated_safetensors_is_called_damaged(tmp_path, tiny_config):
    path = save_generator(_tiny(tiny_config), tmp_path / "g.safetensors")
    data = path.read_bytes()
    cases = ((len(data) // 2, f"its tensors need {len(data)}"), (40, r"its header needs \d+"))
    for keep, why in cases:
        path.write_bytes(data[:keep])
        with pytest.raises(
            CheckpointError,
            match=rf"g\.safetensors' is a damaged \(truncated\) safetensors file: {why} bytes, "
            rf"the file has {keep}; re-download",
        ):
            load_generator(path)


def test_a_pt_named_safetensors_loads_by_its_content(tmp_path, tiny_config):
    g = _tiny(tiny_config)
    path = tmp_path / "misnamed.safetensors"
    torch.save({"g_ema": _rosinality_state(g), "latent_avg": g.w_avg.clone()}, path)
    assert detect_format(path) == "rosinality"
    _same_images(g, load_generator(path))
