"""Entry points that differentiate internally work inside torch.no_grad() and refuse
torch.inference_mode() with a clear message."""

from __future__ import annotations

import pytest
import torch

from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
from navcuda.grad_mode import differentiates
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import PixelMSE
from navcuda.project import project


def test_decorator_enables_grad_and_refuses_inference_mode():
    @differentiates
    def grad_of_square(x):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((x * x).sum(), x)
        return g, torch.is_grad_enabled()

    x = torch.arange(3.0)
    with torch.no_grad():
        g, enabled = grad_of_square(x)
    assert enabled and torch.equal(g, 2 * x)
    with torch.no_grad():
        grad_of_square(x)
        assert not torch.is_grad_enabled()  # the caller's mode is back after the call
    with torch.inference_mode(), pytest.raises(RuntimeError, match="grad_of_square.*inference"):
        grad_of_square(x)


def test_hessian_products_inside_no_grad(tiny_generator):
    ws = tiny_generator.mapping(torch.randn(2, tiny_generator.config.z_dim)).detach()
    h = PerceptualHessian(tiny_generator, "convs.1", ws, PixelMSE(), resize=None)
    v = torch.randn(2, *h.shape, generator=torch.Generator().manual_seed(0))
    gn, fd = h.hvp_gn(v), h.hvp_fd(v)
    with torch.no_grad():
        torch.testing.assert_close(h.hvp_gn(v), gn, rtol=0, atol=0)
        torch.testing.assert_close(h.hvp_fd(v), fd, rtol=0, atol=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="hvp_gn.*inference_mode"):
        h.hvp_gn(v)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="PerceptualHessian.*inference"):
        PerceptualHessian(tiny_generator, "convs.1", ws, PixelMSE(), resize=None)


def test_optimizer_step_inside_no_grad(tiny_generator):
    opt = DirectionOptimizer(tiny_generator, "convs.1", OptimizeConfig(k=4, batch_size=4, seed=0))
    before = [p.detach().clone() for p in opt.optimizer.params]
    with torch.no_grad():
        stats = opt.train_step()
    assert stats["step"] == 1  # and every parameter was updated (inside the backward)
    assert not any(torch.equal(p, q) for p, q in zip(opt.optimizer.params, before, strict=True))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="train_step"):
        opt.train_step()


def test_projection_inside_no_grad(tiny_generator):
    target = torch.zeros(1, 3, 16, 16)
    kw = dict(steps=3, mode="w", w_std_samples=64, seed=0, progress=False)
    ref = project(tiny_generator, target, **kw)
    with torch.no_grad():
        proj = project(tiny_generator, target, **kw)
    torch.testing.assert_close(proj.ws, ref.ws, rtol=0, atol=0)  # same seed, same steps
    with torch.inference_mode(), pytest.raises(RuntimeError, match="project.*inference_mode"):
        project(tiny_generator, target, **kw)
