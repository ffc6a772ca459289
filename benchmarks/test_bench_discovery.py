"""Discovery hot paths on the bundled model (layer convs.3: 64 -> 64 channels at 16x16).

- one step of the optimisation method (batch 32, K = 64, ResNet-18 reconstructor at 64 px), SVD
  basis and a weight basis of 64 vectors (the hybrid method): :meth:`DirectionOptimizer.train_step`
  (prefix computed once for both images of a pair, fused layer; also with the reconstructor's
  stem recomputed in the backward, ``OptimizeConfig(checkpoint_stem=True)``) against
  :meth:`DirectionOptimizer.reference_step`, the official arrangement (two full syntheses from w,
  per-sample kernels materialised, nothing reused; tested to compute the same step), and the
  step's ``floor``: the reconstructor's forward, backward and update alone, which every route
  shares, so ``reference / floor`` bounds the speed-up any generator route can give (Amdahl);
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
from navcuda.models.stylegan2 import conv_route

LAYER = "convs.3"
ROUTES = {"reference": "legacy", "fast": "auto"}
STEP_ROLES = ["reference", "fast", "fast, stem checkpointed", "floor"]


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
        "fast" if lean else role,
    )


@pytest.mark.parametrize("basis", ["svd", "weight"])
def test_optimize_train_step_paired(benchmark, generator, device, basis):
    """One optimisation step, the official arrangement and the fast step alternated (paired
    A/B; two optimisers, so each keeps its own state)."""
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

    def fast():
        fast_opt.train_step()
        sync(device)

    benchmark.group = f"paired: optimize train_step, {basis} basis, bundled {LAYER}, B=32 K=64"
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
