"""The StyleGAN2 generator: config, shapes, truncation, noise modes, layer registry."""

from __future__ import annotations

import pytest
import torch

from navcuda.models.layers import get_layer, layer_weight, list_layers
from navcuda.models.stylegan2 import Generator, GeneratorConfig, stylegan2_layers


def test_output_shape_and_determinism(tiny_generator):
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    a = tiny_generator(z)
    b = tiny_generator(z)
    assert a.shape == (3, 3, 16, 16)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)  # const noise: deterministic


def test_batch_independence(tiny_generator):
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    full = tiny_generator(z)
    for i in range(4):
        torch.testing.assert_close(tiny_generator(z[i : i + 1])[0], full[i], rtol=1e-5, atol=1e-5)


def test_noise_modes(tiny_generator):
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    const = tiny_generator(z, noise_mode="const")
    none = tiny_generator(z, noise_mode="none")
    torch.manual_seed(0)
    r1 = tiny_generator(z, noise_mode="random")
    torch.manual_seed(1)
    r2 = tiny_generator(z, noise_mode="random")
    assert not torch.equal(const, none)
    assert not torch.equal(r1, r2)
    with pytest.raises(ValueError, match="noise_mode"):
        tiny_generator(z, noise_mode="bogus")


def test_truncation_moves_towards_w_avg(tiny_generator):
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(4))
    w1 = tiny_generator.mapping(z)
    w0 = tiny_generator.mapping(z, truncation_psi=0.0)
    wh = tiny_generator.mapping(z, truncation_psi=0.5)
    torch.testing.assert_close(w0, tiny_generator.w_avg.expand_as(w0))
    torch.testing.assert_close(wh, 0.5 * (w1 + w0))


def test_w_plus_equals_broadcast_w(tiny_generator):
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    w = tiny_generator.mapping(z)
    wp = w.unsqueeze(1).repeat(1, tiny_generator.num_ws, 1)
    assert torch.equal(tiny_generator.synthesis(w), tiny_generator.synthesis(wp))


def test_bad_inputs(tiny_generator):
    with pytest.raises(ValueError, match=r"z must have shape \[B, 32\]"):
        tiny_generator(torch.randn(2, 31))
    with pytest.raises(TypeError, match="floating"):
        tiny_generator(torch.ones(2, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="ws must be"):
        tiny_generator.synthesis(torch.randn(2, 5, 32))


@pytest.mark.parametrize("res", [7, 4, 4096])
def test_config_rejects_bad_resolution(res):
    with pytest.raises(ValueError, match="resolution"):
        GeneratorConfig(resolution=res)


def test_config_round_trip_and_channel_map(tiny_config):
    cfg = tiny_config(channel_map={4: 8, 8: 8, 16: 4})
    again = GeneratorConfig.from_dict(cfg.to_dict())
    assert again == cfg
    g = Generator(again)
    assert g(torch.randn(1, 32)).shape == (1, 3, 16, 16)
    assert layer_weight(g, "convs.2").shape == (4, 8, 3, 3)
    with pytest.raises(ValueError, match="lacks resolutions"):
        tiny_config(channel_map={4: 8})
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"resolution": 16, "bogus": 1})


def test_rosinality_channels():
    cfg = GeneratorConfig.rosinality(1024, channel_multiplier=2)
    assert [cfg.channels(r) for r in cfg.resolutions] == [512] * 4 + [512, 256, 128, 64, 32]
    cfg1 = GeneratorConfig.rosinality(256, channel_multiplier=1)
    assert [cfg1.channels(r) for r in cfg1.resolutions] == [512] * 4 + [256, 128, 64]


def test_layer_registry_official_indices():
    cfg = GeneratorConfig.rosinality(1024)
    with torch.device("meta"):  # the 1024-px architecture without allocating its weights
        g = Generator(cfg)
    layers = list_layers(g)
    assert layers == stylegan2_layers(cfg)
    official = [li for li in layers if li.index is not None]
    assert [li.index for li in official] == list(range(16))
    assert {li.kind for li in layers} == {"modulated"}
    # The paper's default: convs[3] is the plain conv at 16x16, 512 -> 512.
    l3 = get_layer(g, 3)
    assert (l3.name, l3.role, l3.resolution, l3.weight_shape) == (
        "convs.3",
        "conv",
        16,
        (512, 512, 3, 3),
    )
    l2 = get_layer(g, "convs.2")
    assert (l2.role, l2.resolution) == ("upconv", 16)
    assert get_layer(g, "3") == l3
    assert not get_layer(g, "to_rgb1").shiftable
    assert get_layer(g, "conv1").shiftable and get_layer(g, "conv1").index is None
    with pytest.raises(KeyError, match="an index 0..15"):
        get_layer(g, 16)


def test_registry_matches_modules(tiny_generator):
    for info in list_layers(tiny_generator):
        w = tiny_generator.get_submodule(info.name).conv.weight
        assert tuple(w.shape[1:]) == info.weight_shape


def test_train_mode_dense_path_matches_eval(tiny_generator):
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(6))
    ev = tiny_generator.eval()(z)
    tr = tiny_generator.train()(z)
    tiny_generator.eval()
    torch.testing.assert_close(tr, ev, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", ["conv1", "convs.0", "convs.3", "to_rgbs.1"])
def test_prefix_suffix_equals_full_synthesis(tiny_generator, layer):
    ws = tiny_generator.mapping(torch.randn(2, 32, generator=torch.Generator().manual_seed(7)))
    state = tiny_generator.synthesis_prefix(ws, layer)
    assert state.layer == layer
    assert torch.equal(tiny_generator.synthesis_suffix(state, ws), tiny_generator.synthesis(ws))


def test_suffix_refuses_shift_before_state(tiny_generator):
    from navcuda.models.stylegan2 import LayerShift

    ws = tiny_generator.mapping(torch.randn(1, 32))
    state = tiny_generator.synthesis_prefix(ws, "convs.2")
    with pytest.raises(ValueError, match="runs before"):
        tiny_generator.synthesis_suffix(
            state, ws, shift=LayerShift("convs.1", torch.zeros(32, 32, 3, 3))
        )
    with pytest.raises(ValueError, match="batch"):
        tiny_generator.synthesis_suffix(state, ws.repeat(2, 1))
