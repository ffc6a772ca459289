"""The generator of the distributed tests, importable by the processes they spawn
(``--model tiny_dist_model:make`` with this folder on ``PYTHONPATH``): a seeded 16 px StyleGAN2
with 4-8 channels, built in milliseconds and identical in every process."""

from __future__ import annotations

import torch

from navcuda.models.stylegan2 import Generator, GeneratorConfig


def make(checkpoint: str | None = None) -> Generator:
    """The tiny generator (``checkpoint`` is not used)."""
    cfg = GeneratorConfig(resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_base=256,
                          channel_max=32, channel_map={4: 8, 8: 6, 16: 4})  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = Generator(cfg).eval()
        g.update_w_avg(64)
    return g
