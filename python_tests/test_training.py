"""GAN training: the discriminator, a short run that learns, and bit-exact resume."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from navcuda.models.discriminator import Discriminator
from navcuda.toyworld import ToyWorld
from navcuda.training import TrainConfig, Trainer


def _sampler(res: int):
    world = ToyWorld(resolution=res)
    return lambda n, gen: world.sample(n, gen)[0]


def _trainer(tiny_config, **kw) -> Trainer:
    cfg = tiny_config(z_dim=16, w_dim=16, channel_base=128, channel_max=16)
    tc = TrainConfig(batch_size=8, r1_interval=4, seed=3, **kw)
    return Trainer(cfg, _sampler(16), tc)


def _assert_demodulated_kernels_scaled(new, old, factor: float) -> None:
    """``new``'s parameters are ``old``'s, its demodulated conv kernels times ``factor`` (the
    toRGB convs, not demodulated, keep their scale)."""
    from navcuda.models.stylegan2_layers import ModulatedConv2d

    names = {n for n, m in old.named_modules() if isinstance(m, ModulatedConv2d)}
    demod = {n for n in names if old.get_submodule(n).demodulate}
    assert demod and demod != names
    new_params = dict(new.named_parameters())
    for name, p in old.named_parameters():
        want = p * factor if name.removesuffix(".weight") in demod else p
        torch.testing.assert_close(new_params[name], want, rtol=1e-6, atol=0)


def test_kernel_decay_shrinks_the_demodulated_kernels_after_adam(tiny_config):
    plain, decayed = _trainer(tiny_config), _trainer(tiny_config, kernel_decay=10.0)
    plain.train_step()
    decayed.train_step()
    _assert_demodulated_kernels_scaled(decayed.G, plain.G, 1.0 - decayed.config.lr * 10.0)


def test_kernel_init_scales_the_demodulated_kernels_and_keeps_the_function(tiny_config):
    plain, small = _trainer(tiny_config), _trainer(tiny_config, kernel_init=0.1)
    _assert_demodulated_kernels_scaled(small.G, plain.G, 0.1)
    # the EMA generator starts from the scaled G; demodulation makes the images the same
    torch.testing.assert_close(
        dict(small.G_ema.named_parameters()), dict(small.G.named_parameters())
    )
    z = torch.randn(4, plain.g_config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(small.G(z), plain.G(z), rtol=1e-4, atol=1e-5)


def test_discriminator_shapes_and_errors(tiny_config):
    d = Discriminator(tiny_config())
    assert d(torch.randn(6, 3, 16, 16)).shape == (6, 1)
    assert d(torch.randn(3, 3, 16, 16)).shape == (3, 1)  # batch not divisible by the group
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 16, 16\]"):
        d(torch.randn(2, 3, 8, 8))


@torch.no_grad()
def _logit_gap(d: Discriminator, trainer: Trainer) -> float:
    gen = torch.Generator().manual_seed(999)
    real = trainer.sampler(64, gen)
    fake = trainer.G_ema(torch.randn(64, trainer.g_config.z_dim, generator=gen))
    return float(d(real).mean() - d(fake).mean())


def test_generator_learns_to_fool_a_frozen_discriminator(tiny_config):
    import copy

    tr = _trainer(tiny_config, ema_half_life_images=50.0)
    tr.run(steps=20, progress=False)
    judge = copy.deepcopy(tr.D).eval()
    gap_before = _logit_gap(judge, tr)
    tr.run(steps=30, progress=False)
    gap_after = _logit_gap(judge, tr)
    # The frozen judge separated real from the generator's images; after more G training the
    # generator's images score closer to the real ones under that same judge.
    assert gap_before > 0
    assert gap_after < gap_before
    assert all(torch.isfinite(torch.tensor([h["d_loss"], h["g_loss"]])).all() for h in tr.history)


def test_resume_is_bit_exact(tiny_config, tmp_path):
    straight = _trainer(tiny_config)
    straight.run(steps=6, progress=False)

    first = _trainer(tiny_config)
    first.run(steps=3, progress=False, checkpoint_path=tmp_path / "ckpt.pt")
    resumed = Trainer.resume(tmp_path / "ckpt.pt", _sampler(16))
    assert resumed.step == 3
    resumed.run(steps=3, progress=False)
    for (k, a), (_, b) in zip(
        straight.G_ema.state_dict().items(), resumed.G_ema.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(
        straight.D.state_dict().items(), resumed.D.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    assert [h["g_loss"] for h in straight.history] == [h["g_loss"] for h in resumed.history]
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training checkpoint not found"):
        Trainer.resume(tmp_path / "missing.pt", _sampler(16))
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ValueError, match="not a navcuda training checkpoint"):
        Trainer.resume(bad, _sampler(16))
    with pytest.raises(ValueError, match="give steps"):
        Trainer.__new__(Trainer).run()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, r"TrainConfig\.batch_size must be an integer >= 1, got 0$"),
        ("batch_size", 2.5, r"TrainConfig\.batch_size must be an integer >= 1, got float 2\.5$"),
        ("r1_interval", 0, r"TrainConfig\.r1_interval must be an integer >= 1, got 0$"),
        ("lr", 0.0, r"TrainConfig\.lr must be a finite number > 0, got 0\.0$"),
        ("lr", float("nan"), r"TrainConfig\.lr must be a finite number > 0, got nan$"),
        ("beta2", 1.0, r"TrainConfig\.beta2 must be a number in \[0, 1\), got 1\.0$"),
        ("r1_gamma", -1.0, r"TrainConfig\.r1_gamma must be a finite number >= 0, got -1\.0$"),
        ("ema_half_life_images", float("inf"), r"TrainConfig\.ema_half_life_images must be"),
        ("seed", "3", r"TrainConfig\.seed must be an integer, got '3'$"),
        ("amp", "yes", r"TrainConfig\.amp must be True or False, got 'yes'$"),
        ("kernel_decay", -0.1, r"TrainConfig\.kernel_decay must be a number >= 0 with lr x it"),
        ("kernel_decay", 500.0, r"TrainConfig\.kernel_decay must be a number >= 0 with lr x it"),
        ("kernel_init", 0.0, r"TrainConfig\.kernel_init must be a finite number > 0, got 0\.0$"),
    ],
)
def test_train_config_names_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message) as info:
        TrainConfig(**{field: value})
    assert "TrainConfig(" not in str(info.value)  # the field, not a dump of the dataclass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": -1}, r"steps must be an integer >= 0 \(or None\), got -1"),
        ({"steps": 2.0}, r"steps must be an integer >= 0"),
        ({"max_seconds": float("nan")}, r"max_seconds must be a finite number >= 0.*got nan"),
        ({"max_seconds": -5}, r"max_seconds must be a finite number >= 0.*got -5"),
        ({"max_seconds": float("inf")}, r"max_seconds must be a finite number >= 0"),
        ({"steps": 1, "sample_every": 0}, r"sample_every must be an integer >= 1.*got 0"),
        ({"steps": 1, "checkpoint_every": 0}, r"checkpoint_every must be an integer >= 1"),
    ],
)
def test_run_refuses_bad_arguments(tmp_path, kwargs, message):
    tr = Trainer.__new__(Trainer)  # refused before any training or writing
    with pytest.raises(ValueError, match=message):
        tr.run(progress=False, sample_dir=tmp_path, checkpoint_path=tmp_path / "c.pt", **kwargs)
    assert not list(tmp_path.iterdir())


def test_run_without_samples_or_periodic_checkpoints(tiny_config, tmp_path):
    tr = _trainer(tiny_config)
    tr.run(
        steps=1,
        progress=False,
        sample_dir=tmp_path / "samples",
        sample_every=None,
        checkpoint_path=tmp_path / "c.pt",
        checkpoint_every=None,
    )
    assert tr.step == 1 and not (tmp_path / "samples").exists()
    assert Trainer.resume(tmp_path / "c.pt", _sampler(16)).step == 1  # the final checkpoint


def _damaged_copies(good, folder):
    """Damaged versions of the checkpoint file ``good``, each named as the CLI names it."""
    data = good.read_bytes()
    out = {}
    for kind in ("truncated", "png", "empty", "flipped"):
        p = folder / kind / "checkpoint.pt"
        p.parent.mkdir(parents=True)
        if kind == "truncated":
            p.write_bytes(data[: len(data) // 2])
        elif kind == "png":
            p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
        elif kind == "empty":
            p.write_bytes(b"")
        else:
            with zipfile.ZipFile(good) as zf:
                tensors = [i for i in zf.infolist() if "/data/" in i.filename]
                info = max(tensors, key=lambda i: i.file_size)  # inside a stored tensor
            raw = bytearray(data)
            name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
            raw[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x40
            p.write_bytes(bytes(raw))
        out[kind] = p
    return out


def test_resume_and_export_refuse_damaged_checkpoints(tiny_config, tmp_path):
    from navcuda.training import export_generator

    good = _trainer(tiny_config).save(tmp_path / "good.pt")
    why = {
        "truncated": r"RuntimeError: PytorchStreamReader failed",
        "png": r"UnpicklingError",
        "empty": r"the file is empty",
        "flipped": r"zip member '.*/data/\d+': Bad CRC-32",
    }
    for kind, path in _damaged_copies(good, tmp_path).items():
        message = (
            rf"'.*{kind}/checkpoint\.pt' is not a readable training checkpoint \(truncated or "
            rf"corrupt: {why[kind]}.*\); "
        )
        with pytest.raises(ValueError, match=message + "delete it or pass --restart to start over"):
            Trainer.resume(path, _sampler(16))
        with pytest.raises(ValueError, match=message + "train again to write a new one"):
            export_generator(path, tmp_path / "g.safetensors", w_avg_samples=8)
    assert not (tmp_path / "g.safetensors").exists()


def test_resume_refuses_checkpoint_with_missing_entries(tiny_config, tmp_path):
    state = _trainer(tiny_config).state_dict()
    del state["D"]
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(
        ValueError,
        match=r"checkpoint\.pt' is not a usable navcuda training checkpoint \(missing entry 'D'\)"
        r"; delete it or pass --restart",
    ):
        Trainer.resume(tmp_path / "checkpoint.pt", _sampler(16))


def test_export_generator(tiny_config, tmp_path):
    from navcuda.models.checkpoints import load_generator, read_metadata
    from navcuda.training import export_generator

    tr = _trainer(tiny_config)
    tr.run(steps=2, progress=False, checkpoint_path=tmp_path / "ckpt.pt")
    out = export_generator(tmp_path / "ckpt.pt", tmp_path / "g.safetensors", w_avg_samples=64)
    g = load_generator(out)
    for (k, a), (_, b) in zip(tr.G_ema.state_dict().items(), g.state_dict().items(), strict=True):
        if k != "w_avg":
            assert torch.equal(a, b), k
    meta = read_metadata(out)
    assert meta["training"]["trained_steps"] == 2


def test_checkpoints_record_a_checksum_that_resume_verifies(tiny_config, tmp_path, monkeypatch):
    from navcuda.io import checksum

    monkeypatch.setattr(checksum, "_NOTED", set())
    path = _trainer(tiny_config).save(tmp_path / "ckpt.pt")
    state = torch.load(path, weights_only=True)
    assert state["checksum"] == checksum.state_checksum(state)
    assert Trainer.resume(path, _sampler(16)).step == 0
    # A weight changed under the recorded checksum (the zip's own CRCs are rewritten by
    # torch.save, as a copy tool or a file system rewriting the file would leave them intact).
    state["G_ema"]["conv1.conv.weight"][0, 0, 0, 0, 0] += 1e-4
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"ckpt\.pt' is damaged: its tensor data does not match the checksum .*; delete it "
        r"or pass --restart to start over",
    ):
        Trainer.resume(path, _sampler(16))
    del state["checksum"]  # written before checksums: resumes, with a note
    torch.save(state, path)
    with pytest.warns(checksum.NoChecksumWarning, match=r"ckpt\.pt' records no checksum"):
        Trainer.resume(path, _sampler(16))


def test_a_checkpoint_is_read_by_content_whatever_its_name(tiny_config, tmp_path):
    """torch.load reads a path ending in .safetensors as safetensors: navcuda reads the bytes."""
    path = _trainer(tiny_config).save(tmp_path / "ckpt.safetensors")
    assert Trainer.resume(path, _sampler(16)).step == 0


def test_run_writes_a_sample_grid_at_the_end(tiny_config, tmp_path):
    """``train --minutes 1`` stops long before the first periodic grid: the run's end writes
    one (not twice when the end falls on a periodic step)."""
    tr = _trainer(tiny_config)
    tr.run(max_seconds=0.2, progress=False, sample_dir=tmp_path / "a", sample_every=500)
    assert [p.name for p in (tmp_path / "a").iterdir()] == [f"step{tr.step:07d}.png"]
    tr.run(steps=3, progress=False, sample_dir=tmp_path / "b", sample_every=2)
    step = tr.step
    expected = {f"step{s:07d}.png" for s in range(step - 2, step + 1) if s % 2 == 0} | {
        f"step{step:07d}.png"
    }
    assert {p.name for p in (tmp_path / "b").iterdir()} == expected
    tr.run(steps=0, progress=False, sample_dir=tmp_path / "c", sample_every=2)
    assert not (tmp_path / "c").exists()  # nothing trained, nothing new to show


def test_optimisation_checkpoint_records_and_verifies_its_checksum(
    tiny_generator, tmp_path, monkeypatch
):
    from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
    from navcuda.io import checksum

    monkeypatch.setattr(checksum, "_NOTED", set())
    cfg = OptimizeConfig(k=2, batch_size=2, reconstructor_size=32, seed=1)
    opt = DirectionOptimizer(tiny_generator, "convs.3", cfg)
    opt.run(1, progress=False)
    path = opt.save(tmp_path / "opt.pt")
    state = torch.load(path, weights_only=True)
    assert state["checksum"] == checksum.state_checksum(state)
    DirectionOptimizer(tiny_generator, "convs.3", cfg).load_state(path)
    state["coeffs"][0, 0] += 1e-3  # a changed value under the old checksum
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"opt\.pt' is damaged: .*delete it to start over"):
        DirectionOptimizer(tiny_generator, "convs.3", cfg).load_state(path)
    del state["checksum"]  # written before checksums: loads, with a note
    torch.save(state, path)
    with pytest.warns(checksum.NoChecksumWarning, match="optimisation checkpoint again"):
        DirectionOptimizer(tiny_generator, "convs.3", cfg).load_state(path)
