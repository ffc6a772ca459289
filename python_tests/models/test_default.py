"""The bundled toy-world generator."""

from __future__ import annotations

import warnings

import torch

from navcuda.models.checkpoints import read_metadata
from navcuda.models.default import BUNDLED_GENERATOR, TOY_CONFIG, RandomWeightsWarning, load_default


def test_bundled_generator_loads_and_renders():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)  # the trained file must be there
        g = load_default()
    assert g.config.channel_map == TOY_CONFIG.channel_map
    assert (g.config.resolution, g.config.w_dim) == (TOY_CONFIG.resolution, TOY_CONFIG.w_dim)
    z = torch.randn(4, g.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = g(z)
    assert img.shape == (4, 3, 64, 64)
    assert torch.isfinite(img).all()
    # A trained generator uses the output range: most pixels in [-1, 1], and not a flat image.
    assert (img.abs() <= 1.2).float().mean() > 0.99
    assert img.std() > 0.2


def test_bundled_generator_records_its_training():
    from importlib import resources

    with resources.as_file(resources.files("navcuda") / "data" / BUNDLED_GENERATOR) as p:
        meta = read_metadata(p)
    assert meta["training"]["trained_steps"] > 1000
    assert meta["training"]["train_config"]["batch_size"] >= 1


def test_bundled_named_directions_move_their_factor():
    """The bundled named set fits the bundled model, and a named direction really moves the
    factor it is named after, in the positive direction (re-scored on other latents)."""
    from navcuda.metrics.factor_scores import score_edit
    from navcuda.models.default import load_default_directions

    g = load_default()
    ds = load_default_directions()
    ds.check_compatible(g)
    assert {"nose length", "eye size", "mouth width", "hair length"} <= set(ds.names)
    assert ds.extra["named_by"] == "toy-world factor regressor"
    for name in ("nose length", "mouth width"):
        d = ds.by_name(name)
        ts = torch.linspace(-d.amplitude, d.amplitude, 3)
        s = score_edit(g, d, ts, n_samples=8, seed=123)
        assert s.top_factor == name.replace(" ", "_")
        assert float(s.effect[s.top_index]) > 0


def test_bundled_edits_render_the_same_through_the_emulated_cuda_path(emu):
    """A strip of named edits of the bundled model, rendered with the C++ CPU kernels and through
    navcuda._C's CUDA launchers and kernels on the CPU emulator: the same images up to float32
    reduction order (the demodulation sums; ~3e-6 observed), and the emulated run really ran
    emulated kernels."""
    from navcuda.models.default import load_default_directions
    from navcuda.ops import _native
    from navcuda.rendering import render_strips

    g = load_default()
    ds = load_default_directions()
    dirs = [ds.by_name("nose length"), ds.by_name("eye size")]
    z = torch.randn(2, g.config.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ws = g.mapping(z)
    ts = torch.stack([torch.linspace(-d.amplitude, d.amplitude, 3) for d in dirs])
    on_cpu = render_strips(g, dirs, ws, ts)
    before = emu.launch_count()
    with _native.emulated_cuda():
        emulated = render_strips(g, dirs, ws, ts)
    assert emu.launch_count() - before >= len(g.convs)
    assert emulated.shape == on_cpu.shape == (2, 2, 3, 3, 64, 64)
    assert (emulated - on_cpu).abs().max() < 1e-4
    assert (on_cpu[:, :, 0] - on_cpu[:, :, 2]).abs().max() > 0.1  # the edits do change the images
