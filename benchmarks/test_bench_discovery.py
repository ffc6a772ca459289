"""Discovery hot paths on the bundled model (layer convs.3: 64 -> 64 channels at 16x16).

- one step of the optimisation method (batch 32, K = 64, ResNet-18 reconstructor at 64 px), SVD
  basis and a weight basis of 64 vectors (the hybrid method): :meth:`DirectionOptimizer.train_step`
  (prefix computed once for both images of a pair, fused layer; also with the reconstructor's
  stem recomputed in the backward, ``OptimizeConfig(checkpoint_stem=True)``) against
  :meth:`DirectionOptimizer.reference_step`, the official arrangement (two full syntheses from w,
  per-sample kernels materialised, nothing reused; tested to compute the same step), and the
  step's ``floor``: the reconstructor's forward, backward and update alone, which every route
  shares, so ``reference / floor`` bounds the speed-up any generator route can give (Amdahl),
  and that floor plus the generator work every exact step must do (the synthesis up to the
  shifted layer once, the layers after it rendered twice and differentiated once), which bounds
  the speed-up of any exact step built on these convolutions;
- one block of 64 Hessian-vector products (``PerceptualHessian.hvp_fd``, metric
  ``toy-regressor``, 4 latents, batch 32: 512 perturbed renders with backward), the fast route
  (structured shifts, ``conv_route("auto")``) against the pre-fusion grouped route
  (``conv_route("legacy")``) in the same run. The official sequential method is timed in
  ``test_bench_spectrum.py``.

The reference includes the parts no route changes (the reconstructor, the metric), so the ratios
are what a user of these methods sees. Peak memory of each call is reported beside the ratio.
"""

from __future__ import annotations

import pytest
import torch
from memory import benchmark_with_memory
from paired import paired_ratio
from timing import sync

from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import make_metric
from navcuda.models.default import load_default
from navcuda.models.layers import list_layers
from navcuda.models.stylegan2 import conv_route, frozen

LAYER = "convs.3"
ROUTES = {"reference": "legacy", "fast": "auto"}
STEP_ROLES = [
    "reference",
    "fast",
    "fast, stem checkpointed",
    "floor",
    "floor + exact generator work",
]


@pytest.fixture(scope="module")
def generator(device):
    return load_default(device=device)


def _reconstructor_only(opt: DirectionOptimizer, device: torch.device):
    """The part of a step that no generator route changes: the reconstructor's forward, backward
    and the optimiser update (inside the backward, as the fast step does it), on a fixed
    pre-rendered image pair batch (the Amdahl floor)."""
    cfg = opt.config
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(cfg.k, (cfg.batch_size,), generator=gen).to(device)
    t = (2 * torch.rand(cfg.batch_size, generator=gen) - 1).to(device)
    with torch.no_grad():
        z = torch.randn(2 * cfg.batch_size, opt.generator.config.z_dim, generator=gen)
        images = opt.generator(z.to(device))
    original, shifted = images.chunk(2)

    def step():
        logits, t_hat = opt.reconstructor(original, shifted)
        loss = torch.nn.functional.cross_entropy(logits, k) + (t_hat - t).abs().mean()
        opt.optimizer.zero_grad()
        with opt.optimizer.updating():  # as train_step updates
            loss.backward()

    return step


def _exact_generator_work(opt: DirectionOptimizer, device: torch.device):
    """Generator work that every exact arrangement of a step must do, whatever its strategy:
    the synthesis up to and including the shifted layer once (without gradients), and the rest
    rendered twice (the original image without gradients, the shifted one with them) and
    differentiated once back to the shifted layer's output. A real step also runs the shifted
    layer a second time and differentiates it, so this is a lower bound on its generator part;
    with the reconstructor's part (:func:`_reconstructor_only`), ``reference / (floor + this)``
    bounds the speed-up of any exact step built on these convolutions (oneDNN's on the CPU)."""
    cfg, g = opt.config, opt.generator
    names = [info.name for info in list_layers(g)]
    after = names[names.index(opt.info.name) + 1]  # the first layer after the shifted one
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(cfg.batch_size, g.config.z_dim, generator=gen).to(device)
    res, rgb = g.config.resolution, g.config.img_channels
    gy = torch.randn(cfg.batch_size, rgb, res, res, generator=gen).to(device)

    def step():
        with frozen(g):
            with torch.no_grad():
                ws = g.mapping(z, cfg.truncation_psi)
                state = g.synthesis_prefix(ws, after)
                g.synthesis_suffix(state, ws)
            state.x.requires_grad_(True)
            torch.autograd.grad(g.synthesis_suffix(state, ws), state.x, gy)

    return step


def _exact_step_floor(opt: DirectionOptimizer, device: torch.device):
    """The reconstructor's part and the exact generator work, one after the other."""
    parts = (_reconstructor_only(opt, device), _exact_generator_work(opt, device))

    def step():
        for part in parts:
            part()

    return step


@pytest.mark.parametrize("role", STEP_ROLES)
@pytest.mark.parametrize("basis", ["svd", "weight"])
def test_optimize_train_step(benchmark, generator, device, basis, role):
    kw = {}
    if basis == "weight":
        shape = generator.get_submodule(LAYER).conv.weight.shape[1:]
        gen = torch.Generator().manual_seed(0)
        kw["basis"] = torch.randn(64, *shape, generator=gen).to(device)
    lean = role == "fast, stem checkpointed"  # the reconstructor recomputes its stem
    cfg = OptimizeConfig(k=64, batch_size=32, seed=0, checkpoint_stem=lean)
    opt = DirectionOptimizer(generator, LAYER, cfg, **kw)

    if role == "floor":
        step = _reconstructor_only(opt, device)
    elif role == "floor + exact generator work":
        step = _exact_step_floor(opt, device)
    else:
        step = opt.reference_step if role == "reference" else opt.train_step

    def run():
        step()
        sync(device)

    benchmark_with_memory(
        benchmark,
        run,
        device,
        f"optimize train_step, {basis} basis, bundled {LAYER}, B=32 K=64",
        "fast" if lean else "floor" if role.startswith("floor") else role,
        **({"floor_label": role} if role.startswith("floor") else {}),
    )


@pytest.mark.parametrize("against", ["fast", "floor + exact generator work"])
@pytest.mark.parametrize("basis", ["svd", "weight"])
def test_optimize_train_step_paired(benchmark, generator, device, basis, against):
    """One optimisation step, the official arrangement and the fast step alternated (paired
    A/B; two optimisers, so each keeps its own state); against the floor plus the exact
    generator work (:func:`_exact_generator_work`), the same pairing gives the bound on any
    faster shifted layer without the drift of separately timed cases."""
    kw = {}
    if basis == "weight":
        shape = generator.get_submodule(LAYER).conv.weight.shape[1:]
        gen = torch.Generator().manual_seed(0)
        kw["basis"] = torch.randn(64, *shape, generator=gen).to(device)
    cfg = OptimizeConfig(k=64, batch_size=32, seed=0)
    ref_opt = DirectionOptimizer(generator, LAYER, cfg, **kw)
    fast_opt = DirectionOptimizer(generator, LAYER, cfg, **kw)

    def reference():
        ref_opt.reference_step()
        sync(device)

    step = fast_opt.train_step if against == "fast" else _exact_step_floor(fast_opt, device)

    def fast():
        step()
        sync(device)

    benchmark.group = f"paired: optimize train_step, {basis} basis, bundled {LAYER}, B=32 K=64"
    if against != "fast":
        benchmark.group += f", bound: reference / {against}"
    benchmark.extra_info["role"] = "paired"
    result = {}
    benchmark.pedantic(lambda: result.update(paired_ratio(reference, fast, rounds=10)), rounds=1)
    benchmark.extra_info["paired_ratio"] = result


@pytest.mark.parametrize("role", list(ROUTES))
def test_hvp_block(benchmark, generator, device, role):
    z = torch.randn(4, generator.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = generator.mapping(z.to(device))
    metric = make_metric("toy-regressor").to(device)
    with conv_route(ROUTES[role]):
        hess = PerceptualHessian(generator, LAYER, ws, metric, batch_size=32)
    v = torch.randn(64, *hess.shape, generator=torch.Generator().manual_seed(1)).to(device)
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)

    def run():
        with conv_route(ROUTES[role]):
            hess.hvp_fd(v)
        sync(device)

    benchmark_with_memory(
        benchmark,
        run,
        device,
        f"hvp_fd block of 64, toy-regressor, 4 latents, bundled {LAYER}",
        role,
    )
