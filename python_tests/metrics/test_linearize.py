"""Metric linearisations: the shared-primal form equals forward-mode AD, keeps nothing per
sample for its backward, and refuses what it cannot do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from navcuda.metrics.linearize import (
    ForwardADLinearization,
    Linearizer,
    SharedPrimalLinearization,
    norm_plus_eps_normalize,
)
from navcuda.metrics.perceptual import (
    FeatureLPIPS,
    PixelMSE,
    RandomFeatureLPIPS,
    make_metric,
)

N_IMAGES, N_VECTORS = 3, 4


def _images(n=N_IMAGES, size=32, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=gen, dtype=dtype) * 2 - 1).clamp(-1, 1)


def _tangents(n, size=32, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N_VECTORS * n, 3, size, size, generator=gen, dtype=dtype)


class _TanhNet(nn.Module):
    """A feature network with a layer the Linearizer has no method for (tanh): its
    linearize_fn records it with ``pointwise``; overlapping max-pool windows (AlexNet's 3x3,
    stride 2) send one input's gradient to several outputs."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight.copy_(torch.randn(c.weight.shape, generator=gen) * 0.4)

    def forward(self, x):
        h1 = torch.tanh(self.c1(x))
        h2 = torch.relu(self.c2(h1))
        return [h1, nn.functional.max_pool2d(h2, 3, 2).flatten(1)]  # overlapping windows

    def linearize(self, lin: Linearizer):
        lin.conv2d(self.c1)
        lin.pointwise(torch.tanh, 1 - torch.tanh(lin.x).square())
        lin.tap()
        lin.conv2d(self.c2)
        lin.relu()
        lin.max_pool2d(nn.MaxPool2d(3, 2))
        lin.linear(lambda t: t.flatten(1))
        lin.tap()


@pytest.fixture(scope="module")
def metrics(lpips_vgg, lpips_alex):
    net = _TanhNet()
    ms = {
        "toy-regressor": make_metric("toy-regressor"),
        "random-vgg": RandomFeatureLPIPS(seed=0, channels=(8, 16, 16)),
        "pixel": PixelMSE(resize=16),
        "lpips-vgg": lpips_vgg,
        "lpips-alex": lpips_alex,  # 11x11 stride-4 conv, overlapping 3x3 max-pools
        "custom": FeatureLPIPS(net, name="custom", linearize_fn=net.linearize),
    }
    # float64 throughout: the two forms then agree to rounding (~1e-15), so the tolerance below
    # checks the algebra, not float32 noise.
    return {k: m.double() for k, m in ms.items()}


@pytest.mark.parametrize(
    "name", ["toy-regressor", "random-vgg", "pixel", "lpips-vgg", "lpips-alex", "custom"]
)
def test_shared_primal_equals_forward_ad(metrics, name):
    m = metrics[name]
    size = {"toy-regressor": 64, "lpips-alex": 64}.get(name, 32)
    x0, u = _images(size=size), _tangents(N_IMAGES, size=size)
    shared, fwd = m.linearize(x0), m.linearize(x0, mode="forward")
    assert isinstance(shared, SharedPrimalLinearization)
    assert isinstance(fwd, ForwardADLinearization)
    for a, b in zip(shared.features, m.features(x0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(shared.jvp(u), fwd.jvp(u), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    gn = fwd.gauss_newton(u, group=5)  # groups straddling vectors: the primal is per sample
    for group in (None, 1, 7):  # rounded to whole vectors (3 images each)
        torch.testing.assert_close(shared.gauss_newton(u, group), gn, rtol=1e-10, atol=1e-14)


def test_gauss_newton_is_the_metric_hessian(metrics):
    """``u . J^T grad q(J u) = u^T H u`` with ``H`` the Hessian of ``d(x0, .)`` at ``x0``, its
    minimum: ``d(x0, x0 + h u) = h^2/2 u^T H u + O(h^3)``."""
    m = metrics["random-vgg"]
    x0, u = _images(n=1), _tangents(1)[:1]
    gn = m.linearize(x0).gauss_newton(u)
    h = 1e-4
    second = 2 * m(x0, x0 + h * u) / h**2
    torch.testing.assert_close((u * gn).sum(), second[0], rtol=1e-3, atol=0)


def test_backward_keeps_nothing_per_sample(metrics):
    """The shared form's graph saves per-image coefficients and kernels only: no saved tensor
    has the sample batch (forward-mode AD keeps per-sample activations)."""
    batch = N_VECTORS * N_IMAGES
    for name in ("toy-regressor", "lpips-vgg"):
        m = metrics[name]
        size = 64 if name == "toy-regressor" else 32
        x0, u = _images(size=size), _tangents(N_IMAGES, size=size).requires_grad_(True)
        for mode, per_sample in (("auto", False), ("forward", True)):
            lin = m.linearize(x0, mode=mode)
            shapes = []

            def pack(t, shapes=shapes):
                shapes.append(tuple(t.shape))
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                lin.jvp(u)
            assert any(s and s[0] == batch for s in shapes) == per_sample, (name, mode)


def test_normalisation_tangent_is_finite_where_features_vanish():
    f = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    f[0, :, 0, 0] = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    nf, tangent = norm_plus_eps_normalize(1e-10)(f)
    t = tangent(torch.ones(2, 4, 2, 2, dtype=torch.float64))
    assert torch.isfinite(t).all()
    # where f = 0 the map is f / eps: tangent = t / eps
    torch.testing.assert_close(t[:, :, 1, 1], torch.full((2, 4), 1e10, dtype=torch.float64))
    # elsewhere it matches autograd's jvp of f / (|f| + eps)
    col = f[:, :, 0, 0].clone()
    _, jv = torch.func.jvp(
        lambda x: x / (x.norm(dim=1, keepdim=True) + 1e-10), (col,), (torch.ones_like(col),)
    )
    torch.testing.assert_close(t[0, :, 0, 0], jv[0])
    torch.testing.assert_close(nf[0, :, 0, 0], col[0] / (col[0].norm() + 1e-10))


def test_unsupported_layers_fall_back_to_forward_ad():
    plain = FeatureLPIPS(_TanhNet(), name="no-linearize-fn")
    x0 = _images(dtype=torch.float32)
    assert isinstance(plain.linearize(x0), ForwardADLinearization)
    with pytest.raises(NotImplementedError, match="linearize_fn"):
        plain.linearize(x0, mode="shared")
    lin = Linearizer(x0)
    with pytest.raises(NotImplementedError, match="Tanh"):
        lin.module(nn.Tanh())
    with pytest.raises(NotImplementedError, match="return_indices"):
        lin.max_pool2d(nn.MaxPool2d(2, return_indices=True))


def test_bad_inputs(metrics):
    m = metrics["random-vgg"]
    x0 = _images()
    with pytest.raises(ValueError, match="mode"):
        m.linearize(x0, mode="reverse")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        m.linearize(x0[0])
    lin = m.linearize(x0)
    with pytest.raises(ValueError, match=r"u must be \[m \* 3"):
        lin.gauss_newton(_tangents(N_IMAGES)[:5])
    with pytest.raises(ValueError, match="whole vectors"):
        lin.jvp(_tangents(N_IMAGES)[:3], offset=1)
    with pytest.raises(TypeError, match="linearize_fn"):
        FeatureLPIPS(_TanhNet(), linearize_fn=3)


def test_toy_metric_moves_its_regressor():
    """The toy metric's features are a method of the regressor: the regressor is registered,
    so ``.to()`` converts it (and it is frozen)."""
    m = make_metric("toy-regressor").double()
    assert m.feature_module.fc.weight.dtype == torch.float64
    assert not any(p.requires_grad for p in m.parameters())
    assert m.features(_images(size=64))[0].dtype == torch.float64
