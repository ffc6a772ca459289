"""Tangent passes of navcuda.models.linearize against autograd's jvp of the whole synthesis.

float64, so that the shared-primal tangents agree with torch.autograd.functional.jvp to rounding
(1e-10 relative is ~1e5 ulps of float64: sums over a few thousand terms per output pixel).
"""

from __future__ import annotations

import pytest
import torch

from navcuda.models.linearize import linearize_suffix
from navcuda.models.stylegan2 import Generator, LayerShift, conv_route


def _generator(tiny_config, conv_clamp=None) -> Generator:
    torch.manual_seed(0)
    g = Generator(tiny_config(conv_clamp=conv_clamp)).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    return g.double()


def _autograd_jvp(g, layer, ws, v):
    state = g.synthesis_prefix(ws, layer)

    def f(delta):
        return g.synthesis_suffix(state, ws, shift=LayerShift(layer, delta))

    zero = torch.zeros(v.shape[1:], dtype=v.dtype)
    with conv_route(impl="ref"):
        return torch.cat([torch.autograd.functional.jvp(f, zero, vec)[1] for vec in v])


@pytest.mark.parametrize("conv_clamp", [None, 0.3])
@pytest.mark.parametrize("layer", ["conv1", "convs.0", "convs.3"])
def test_jvp_equals_autograd(tiny_config, layer, conv_clamp):
    g = _generator(tiny_config, conv_clamp)
    ws = g.mapping(
        torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    ws = ws.detach()
    shape = g.get_submodule(layer).conv.weight.shape[1:]
    v = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    lin = linearize_suffix(g, g.synthesis_prefix(ws, layer), ws)
    with torch.no_grad():
        assert torch.allclose(lin.image, g.synthesis(ws), rtol=0, atol=1e-12)
    jv = lin.jvp(v)
    ref = _autograd_jvp(g, layer, ws, v)
    assert jv.shape == (2 * 3, 3, 16, 16)
    assert ((jv - ref).norm() / ref.norm()).item() < 1e-10
    if conv_clamp is not None:  # the clamp binds somewhere, so its masks are exercised
        masks = [*lin.slopes.values(), *lin.rgb_masks.values()]
        assert lin.rgb_masks and any((mask == 0).any() for mask in masks)


def test_jvp_is_differentiable_and_linear_in_v(tiny_config):
    g = _generator(tiny_config)
    ws = g.mapping(torch.randn(2, 32, dtype=torch.float64)).detach()
    lin = linearize_suffix(g, g.synthesis_prefix(ws, "convs.1"), ws)
    shape = g.get_submodule("convs.1").conv.weight.shape[1:]
    gen = torch.Generator().manual_seed(3)
    a, b = (torch.randn(1, *shape, dtype=torch.float64, generator=gen) for _ in range(2))
    torch.testing.assert_close(lin.jvp(2 * a - b), 2 * lin.jvp(a) - lin.jvp(b))
    # J^T c by one backward pass equals <c, J e_j> column by column (a few columns)
    v = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=gen)
    (jt_c,) = torch.autograd.grad(lin.jvp(v), v, c)
    for j in (0, 17, 500):
        e = torch.zeros(1, *shape, dtype=torch.float64)
        e.view(-1)[j] = 1
        torch.testing.assert_close(jt_c.reshape(-1)[j], (lin.jvp(e) * c).sum())


def test_tangent_pass_keeps_no_per_vector_activation(tiny_config):
    """The tangent map is linear with constant coefficients: the backward of ``J v`` for a block
    of vectors keeps per-latent constants (masks, styles, kernels) and none of the ``m * n``
    feature-map tangents, even with a generator whose parameters require grad. (The toRGB skip's
    upsampling, a reference conv, keeps its 3-channel padded input.)"""
    g = _generator(tiny_config)
    assert all(p.requires_grad for p in g.parameters())
    ws = g.mapping(torch.randn(2, 32, dtype=torch.float64)).detach()
    lin = linearize_suffix(g, g.synthesis_prefix(ws, "convs.1"), ws)
    shape = g.get_submodule("convs.1").conv.weight.shape[1:]
    v = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)
    saved = []

    def pack(t):
        if t.ndim == 4 and t[0, 0].numel() > 1:  # maps, not per-channel coefficients
            saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        jv = lin.jvp(v)
    assert jv.shape[0] == 6
    assert any(s[0] == 2 and s[1] > 3 for s in saved)  # the per-latent masks
    assert not [s for s in saved if s[0] == 6 and s[1] > 3], saved
    (gv,) = torch.autograd.grad(jv, v, torch.ones_like(jv))
    assert torch.isfinite(gv).all() and gv.abs().sum() > 0


def test_bad_inputs(tiny_config):
    g = _generator(tiny_config)
    ws = g.mapping(torch.randn(2, 32, dtype=torch.float64)).detach()
    state = g.synthesis_prefix(ws, "convs.1")
    with pytest.raises(ValueError, match="noise_mode"):
        linearize_suffix(g, state, ws, noise_mode="random")
    with pytest.raises(ValueError, match="batch"):
        linearize_suffix(g, state, ws[:1])
    lin = linearize_suffix(g, state, ws)
    shape = tuple(g.get_submodule("convs.1").conv.weight.shape[1:])
    with pytest.raises(ValueError, match=r"v must be \[m"):
        lin.jvp(torch.zeros(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match="float64"):
        lin.jvp(torch.zeros(1, *shape))
