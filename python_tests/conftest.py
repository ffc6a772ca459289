"""Shared fixtures: tiny generator configs that build and run in milliseconds on the CPU."""

from __future__ import annotations

import pytest
import torch

from navcuda.models.stylegan2 import Generator, GeneratorConfig


def tiny_config(**overrides) -> GeneratorConfig:
    """A 16x16 generator with 16-32 channels: every code path of the full model, tiny."""
    kw = dict(resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_base=256, channel_max=32)
    kw.update(overrides)
    return GeneratorConfig(**kw)


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    """The :func:`tiny_config` factory, for tests that build their own variants."""
    return tiny_config


@pytest.fixture
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config()).eval()
    # Non-zero noise strengths and biases so that every term of the forward pass is exercised.
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g.update_w_avg(256)
    return g
