"""GAN training: the discriminator, a short run that learns, and bit-exact resume."""

from __future__ import annotations

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
