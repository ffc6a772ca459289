"""The cost of generality: navcuda.wrap against the StyleGAN2 fast path, and per-sample kernels
of plain convolutions as one grouped convolution against ``torch.func.vmap``.

Generality: the bundled StyleGAN2 wrapped as a plain module (``wrap(G, sample, forward=
synthesis)``) runs the same fused shifted convolutions, but without what only navcuda's StyleGAN2
offers the methods: the prefix cache (``split``/``resume``: the layers before the shifted one
run once per latent) and the shared-primal linearisation of the Hessian's Gauss-Newton products
(the wrapped path takes forward-mode AD through the whole render, on the pure-torch ops).
``reference`` is the wrapped path, ``fast`` navcuda's StyleGAN2: the ratio is what generality
costs, per operation of the methods (paired A/B, alternated call by call).

Per-sample kernels: a plain conv generator (64 channels, 32 px) renders a batch of 16 with one
SVD direction per sample (kernels materialised per sample); ``reference`` is vmap, ``fast`` the
grouped convolution (navcuda.wrap's ``per_sample="auto"`` takes the faster of the two here).
"""

from __future__ import annotations

import pytest
import torch
from paired import paired_ratio
from timing import sync
from torch import nn

from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import make_metric
from navcuda.models.default import load_default
from navcuda.models.interface import LayerShift
from navcuda.models.wrapped import wrap
from navcuda.shift import layer_space

LAYER = "convs.3"


@pytest.fixture(scope="module")
def pair(device):
    """(navcuda's StyleGAN2, the same model wrapped as a plain module)."""
    g = load_default(device=device)
    wrapped = wrap(g, lambda n, seed: g.sample(n, seed), forward=lambda m, x: m.synthesis(x["ws"]),
                   name="bundled StyleGAN2")  # fmt: skip
    return g, wrapped


def _strip_render(g, device):
    inputs = g.sample(8, 0)
    info = g.layer(LAYER)
    gen = torch.Generator().manual_seed(1)
    deltas = torch.randn(4, *info.weight_shape, generator=gen).to(device)
    t = torch.linspace(-2, 2, 32, device=device)
    idx = torch.arange(32, device=device) % 8
    index = torch.arange(32, device=device) // 8
    rows = inputs.take(idx)

    def run():
        with torch.no_grad():
            g.render(rows, LayerShift.split(LAYER, deltas, t, index))
        sync(device)

    return run


def _hvp_block(g, device):
    metric = make_metric("toy-regressor").to(device)
    h = PerceptualHessian(g, LAYER, g.sample(4, 0), metric, batch_size=8)
    v = torch.randn(16, *h.shape, generator=torch.Generator().manual_seed(2)).to(device)
    h.hvp_gn(v[:1])  # pick the mode once (the wrapped path: forward-mode AD)

    def run():
        h.hvp_gn(v)
        sync(device)

    return run, h


def _optimize_step(g, device):
    cfg = OptimizeConfig(k=16, batch_size=8, reconstructor_size=64)
    opt = DirectionOptimizer(g, LAYER, cfg)

    def run():
        opt.train_step()
        sync(device)

    return run


CASES = {
    "strip render (32 images, 4 directions)": lambda g, d: _strip_render(g, d),
    "16 exact Hessian-vector products, 4 latents": lambda g, d: _hvp_block(g, d)[0],
    "one optimisation step (k=16, batch 8)": lambda g, d: _optimize_step(g, d),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cost_of_generality(benchmark, pair, device, case):
    g, wrapped = pair
    reference, fast = CASES[case](wrapped, device), CASES[case](g, device)
    benchmark.group = f"paired: wrapped / StyleGAN2 fast path, {case}"
    benchmark.extra_info["role"] = "paired"
    result = {}
    benchmark.pedantic(lambda: result.update(paired_ratio(reference, fast, rounds=6)), rounds=1)
    benchmark.extra_info["paired_ratio"] = result


def test_hessian_modes(pair, device):
    """Which Gauss-Newton product each path uses (not timed): the reason for the HVP ratio."""
    g, wrapped = pair
    assert _hvp_block(wrapped, device)[1].gn_mode_used == "forward"
    assert _hvp_block(g, device)[1].gn_mode_used == "linearized"
    assert g.caches_prefix and not wrapped.caches_prefix


class _PlainGenerator(nn.Module):
    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.fc = nn.Linear(32, c * 8 * 8)
        self.up = nn.ConvTranspose2d(c, c, 4, 2, 1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Conv2d(c, 3, 1)
        self.c = c

    def forward(self, z):
        x = torch.relu(self.fc(z).view(-1, self.c, 8, 8))
        return torch.tanh(self.out(torch.relu(self.conv(torch.relu(self.up(x))))))


@pytest.mark.parametrize("layer", ["conv", "up"])
def test_per_sample_grouped_vs_vmap(benchmark, device, layer):
    torch.manual_seed(0)
    module = _PlainGenerator().to(device)

    def sample(n, seed):
        return {"z": torch.randn(n, 32, generator=torch.Generator().manual_seed(seed))}

    g = wrap(module, sample)
    inputs = g.sample(16, 0)
    space = layer_space(g, layer)
    u, s, vh = (m.float().to(device) for m in (space.u, space.s, space.vh))
    coeffs = torch.randn(16, space.rank, generator=torch.Generator().manual_seed(3)).to(device)
    t = torch.full((16,), 0.5, device=device)
    shift = LayerShift.svd(layer, u, s, vh, t, coeffs)

    def runner(how):
        def run():
            g.per_sample = how
            with torch.no_grad():
                g.render(inputs, shift)
            sync(device)

        return run

    benchmark.group = f"paired: vmap / grouped per-sample kernels, plain {layer} 64ch 16px B=16"
    benchmark.extra_info["role"] = "paired"
    result = {}
    benchmark.pedantic(
        lambda: result.update(paired_ratio(runner("vmap"), runner("grouped"), rounds=10)),
        rounds=1,
    )
    benchmark.extra_info["paired_ratio"] = result
