"""Hessian-vector products of L(delta) = mean_z d(G(z), G_{theta+delta}(z)) on a tiny generator.

float64 throughout, so that "exact" products agree to rounding and finite-difference errors are
visible above it. The layers are tiny (4x4x3x3 = 144 weights) so the explicit Hessian is cheap.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import PixelMSE, RandomFeatureLPIPS
from navcuda.models.stylegan2 import Generator, GeneratorConfig

LAYER = "convs.3"  # 16x16 plain conv, 4 -> 4 channels: 144 weights


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def gen64():
    # python_tests/conftest.py's tiny_config with fewer channels (a module-scoped fixture cannot
    # use the function-scoped tiny_config fixture)
    cfg = GeneratorConfig(
        resolution=16, z_dim=32, w_dim=32, n_mlp=2, channel_map={4: 8, 8: 6, 16: 4}
    )
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias") and "modulation" not in name:
                p.normal_(0, 0.1)
    g = g.double()
    ws = g.mapping(torch.randn(3, g.config.z_dim, dtype=torch.float64)).detach()
    return g, ws


def _metric(name):
    if name == "pixel":
        return PixelMSE()
    m = RandomFeatureLPIPS(seed=0, channels=(8, 16)).double()
    if name == "random-vgg, forward AD":
        m.linearize_fn = None  # no shared-primal linearisation: the metric's generic fallback
    return m


@pytest.fixture(scope="module", params=["pixel", "random-vgg", "random-vgg, forward AD"])
def hess(request, gen64):
    g, ws = gen64
    return PerceptualHessian(g, LAYER, ws, _metric(request.param), batch_size=64, resize=8)


def _unit_block(h, m, seed):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(m, *h.shape, generator=gen, dtype=torch.float64)
    return v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)


def test_gradient_vanishes_at_zero_shift(hess):
    g0 = hess.grad(torch.zeros(hess.shape, dtype=torch.float64))
    assert g0.shape == hess.shape and g0.abs().max() == 0
    assert hess.loss(torch.zeros(hess.shape, dtype=torch.float64)).item() == 0


@pytest.mark.parametrize("mode", ["linearized", "double-backward", "forward"])
def test_gn_equals_autograd_hessian_at_zero(hess, mode, monkeypatch):
    if mode == "forward":
        # forward-mode AD needs the pure-torch ops (the native bias_act has no jvp rule)
        monkeypatch.setenv("NAVCUDA_IMPL", "ref")
    V = _unit_block(hess, 3, seed=1)
    gn = hess.hvp_gn(V, mode=mode)
    zero = torch.zeros(hess.shape, dtype=torch.float64)
    ref = torch.stack([torch.autograd.functional.hvp(hess.loss, zero, v)[1] for v in V])
    # Both are exact at delta = 0 (the residual is exactly 0, so the non-GN term of the full
    # Hessian is exactly 0): they differ by float64 rounding only (~1e-15 relative).
    assert _rel(gn, ref) < 1e-10


def test_gn_auto_picks_a_working_mode(hess):
    hess.gn_mode_used = None
    V = _unit_block(hess, 2, seed=2)
    gn = hess.hvp_gn(V)
    assert hess.gn_mode_used == "linearized"
    assert _rel(gn, hess.hvp_gn(V, mode="double-backward")) < 1e-12


def test_gn_auto_rejects_a_mode_that_silently_drops_derivatives(gen64, monkeypatch):
    g, ws = gen64
    h = PerceptualHessian(g, LAYER, ws, PixelMSE(), batch_size=64, resize=None)
    real = h._gn

    def broken(v, mode):  # e.g. torch.func.jvp through a custom op: zero tangents, no error
        return torch.zeros_like(v) if mode in ("linearized", "forward") else real(v, mode)

    monkeypatch.setattr(h, "_gn", broken)
    V = _unit_block(h, 2, seed=7)
    hv = h.hvp_gn(V)
    assert h.gn_mode_used == "double-backward"
    assert _rel(hv, real(V, "double-backward")) < 1e-12


@pytest.mark.usefixtures("native_path")
def test_fd_converges_to_gn(hess):
    V = _unit_block(hess, 2, seed=3)
    gn = hess.hvp_gn(V)
    # Once no leaky-ReLU/ReLU unit flips sign between -eps v and +eps v the central difference
    # error is the smooth O(eps^2) truncation: a 3x smaller eps gives a ~9x smaller error.
    errs = [_rel(hess.hvp_fd(V, eps=e), gn) for e in (3e-4, 1e-4, 3.33e-5)]
    assert errs[0] < 1e-6
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5, errs
    # The paper's eps = 0.1 crosses activation kinks (the error then decays only ~linearly in
    # eps and is not small on this tiny 8x8 metric input: 3-30 %); a sanity bound only.
    assert _rel(hess.hvp_fd(V, eps=0.1), gn) < 0.5


@pytest.mark.usefixtures("native_path")
def test_batched_fd_equals_sequential_reference(hess):
    V = _unit_block(hess, 2, seed=4) * torch.tensor([1.0, 3.0], dtype=torch.float64).view(
        -1, 1, 1, 1, 1
    )
    for normalize in (False, True):
        fd = hess.hvp_fd(V, eps=0.1, normalize=normalize)
        ref = hess.hvp_reference(V, eps=0.1, normalize=normalize)
        assert _rel(fd, ref) < 1e-10
    # normalize=True is the paper's eq. (4): divided by ||v|| as well
    norms = V.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(hess.hvp_fd(V, normalize=True), hess.hvp_fd(V) / norms)
    # one vector in, one vector out
    assert hess.hvp_reference(V[0]).shape == hess.shape


@pytest.mark.usefixtures("native_path")
def test_chunking_does_not_change_results(gen64, monkeypatch):
    """Chunks of one latent under many shifts (more shifts than batch_size: 1 and 4 here, the
    shifted layer's input convolved once per chunk) or of a few shifts over many latents (64)
    give the same products and gradients."""
    g, ws = gen64
    V = torch.randn(3, 4, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    mod = sys.modules["navcuda.ops.shifted_modconv.split"]
    real, shared = mod._split_shared_input, []
    monkeypatch.setattr(mod, "_split_shared_input", lambda *a: shared.append(1) or real(*a))
    out = []
    for bs in (1, 4, 64):
        h = PerceptualHessian(g, LAYER, ws, _metric("random-vgg"), batch_size=bs, resize=8)
        shared.clear()
        out.append((h.hvp_fd(V), h.hvp_gn(V), h.grad(0.1 * V)))
        # FD: 3 vectors, both signs of each in one chunk -> 2 chunks (2 and 1 pairs) per latent
        # at batch 4; none shared at 1 (one sample per chunk: the signs one after the other,
        # so this also checks the paired path against the unpaired one) or 64 (every pair of
        # every latent in one chunk)
        assert len(shared) == (2 * ws.shape[0] if bs == 4 else 0), (bs, len(shared))
    for other in out[1:]:
        for a, b in zip(out[0], other, strict=True):
            assert _rel(a, b) < 1e-12


@pytest.mark.parametrize("bs", [4, 64])
def test_one_latent_is_checked_once_per_chunk(gen64, monkeypatch, bs):
    """Whether a chunk is one latent (a host synchronisation on a GPU) is evaluated once per chunk
    and shared by every tensor the chunk selects (the layer's inputs, the latents, each unshifted
    feature), with bit-identical results to checking each tensor on its own."""
    g, ws = gen64
    V = torch.randn(3, 4, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    h = PerceptualHessian(g, LAYER, ws, _metric("random-vgg"), batch_size=bs, resize=8)
    assert len(h._feats0) > 1  # several feature tensors selected per chunk
    real_chunks, real_one = h._chunks, PerceptualHessian._one_latent
    chunks, checks, flags = [], [], set()

    def counted_chunks(*args, **kwargs):
        for chunk in real_chunks(*args, **kwargs):
            chunks.append(chunk)
            yield chunk

    def counted_one(idx):
        checks.append(real_one(idx))
        return checks[-1]

    def products():
        out = []
        for run in (
            lambda: h.hvp_fd(V),
            lambda: h.grad(0.1 * V),
            lambda: h.hvp_gn(V, mode="double-backward"),
        ):
            chunks.clear()
            checks.clear()
            out.append(run())
            assert len(checks) == len(chunks) > 0, (bs, len(checks), len(chunks))
            flags.update(checks)
        checks.clear()
        out.append(h.loss(0.1 * V[0]))
        assert len(checks) == -(-ws.shape[0] // bs)  # loss: one check per chunk of latents
        return out

    monkeypatch.setattr(h, "_chunks", counted_chunks)
    monkeypatch.setattr(PerceptualHessian, "_one_latent", staticmethod(counted_one))
    fast = products()
    # FD at batch 4: chunks of one latent under 3 perturbations; the gradients of 3 shifts (9
    # samples): chunks of several latents. Batch 64: one chunk of every sample.
    assert flags == ({True, False} if bs == 4 else {False})

    def per_tensor_rows(t, idx, one_latent):  # the check repeated for each tensor, as before
        same = idx.numel() > 1 and bool((idx == idx[0]).all())
        assert one_latent == same
        return t[idx[:1]].expand(idx.numel(), *t.shape[1:]) if same else t[idx]

    monkeypatch.setattr(PerceptualHessian, "_rows", staticmethod(per_tensor_rows))
    for a, b in zip(fast, products(), strict=True):
        assert torch.equal(a, b)


def test_products_freeze_the_generator_and_restore_its_flags(gen64):
    """FD and GN products run with the generator's parameters frozen (a parameter requiring a
    gradient makes every later layer keep its input for the backward: measured 146 vs 80 MB for
    a block-FD chunk set of the bundled model) and give the caller's flags back, also mixed ones
    and after an error."""
    g, ws = gen64
    h = PerceptualHessian(g, LAYER, ws, _metric("pixel"), batch_size=64, resize=8)
    seen = []
    hook = g.get_submodule(LAYER).register_forward_pre_hook(
        lambda m, a: seen.append(any(p.requires_grad for p in g.parameters()))
    )
    params = list(g.parameters())
    flags = [i % 2 == 0 for i in range(len(params))]
    try:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        V = _unit_block(h, 2, 9)
        h.hvp_fd(V)
        h.hvp_gn(V, mode="linearized")
        assert seen and not any(seen)
        assert [p.requires_grad for p in params] == flags

        def boom(*args):
            raise RuntimeError("metric failed")

        failing = {"features": h.metric.features, "distance_from_features": staticmethod(boom)}
        h.metric = type("Failing", (), failing)()
        with pytest.raises(RuntimeError, match="metric failed"):
            h.hvp_fd(V)  # fails inside the frozen block
        assert [p.requires_grad for p in params] == flags
    finally:
        hook.remove()
        g.requires_grad_(True)


def test_explicit_hessian_is_symmetric_psd(gen64):
    g, ws = gen64
    h = PerceptualHessian(g, LAYER, ws, _metric("random-vgg"), batch_size=144, resize=8)
    H = h.explicit_hessian(block=48)
    assert H.shape == (144, 144)
    assert _rel(H, H.t()) < 1e-12
    ev = torch.linalg.eigvalsh((H + H.t()) / 2)
    assert ev[-1] > 0 and ev[0] > -1e-12 * ev[-1]
    # columns are H e_j
    e = torch.zeros(144, dtype=torch.float64)
    e[17] = 1
    torch.testing.assert_close(H[:, 17], h.hvp_gn(e.view(h.shape)).flatten())
    with pytest.raises(ValueError, match="max_params"):
        h.explicit_hessian(max_params=100)


def test_float32_generator(tiny_generator):
    ws = tiny_generator.mapping(torch.randn(2, 32)).detach()
    h = PerceptualHessian(
        tiny_generator, "convs.1", ws, RandomFeatureLPIPS(channels=(8,)), batch_size=8
    )
    V = torch.randn(2, *h.shape)
    V = V / V.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    gn = h.hvp_gn(V)
    assert gn.dtype == torch.float32 and torch.isfinite(gn).all()
    assert _rel(h.hvp_fd(V, eps=1e-2), gn) < 0.1
    d = h.describe()
    assert d["layer"] == "convs.1" and d["resize"] == 64 and d["metric"]["name"] == "random-vgg"


class _Wavy(torch.nn.Module):
    """One 3x3 convolution of a latent-filled 8x8 map under ``sin(300 x)``: along a top
    eigenvector the loss leaves its quadratic regime within a step of 1e-3 of the kernel's norm
    (there the second difference reads half of ``<v, Hv>``)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)

    def forward(self, z):
        return torch.sin(300.0 * self.conv(z.view(-1, 2, 1, 1).expand(-1, 2, 8, 8)))


def test_gn_auto_accepts_a_direction_of_large_curvature():
    from navcuda.models.wrapped import wrap

    def sample(n, seed):
        return {"z": torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))}

    torch.manual_seed(0)
    g = wrap(_Wavy().eval(), sample, name="wavy")
    h = PerceptualHessian(g, "conv", g.sample(4, 0), PixelMSE(), resize=None)
    top = torch.linalg.eigh(h.explicit_hessian().double())[1][:, -1]
    v = top.float().view(1, *h.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to finite differences
        hv = h.hvp_gn(v)
    assert h.gn_mode_used in ("forward", "double-backward")
    assert _rel(hv, h._gn(v, "double-backward")) < 1e-5


def test_non_quadratic_metric_falls_back_to_fd(gen64):
    g, ws = gen64

    class RootPixel(PixelMSE):
        is_quadratic = False

        def distance_from_features(self, fa, fb):
            return super().distance_from_features(fa, fb).add(1e-12).sqrt()

    h = PerceptualHessian(g, LAYER, ws[:1], RootPixel(), batch_size=64, resize=None)
    V = _unit_block(h, 1, seed=6)
    with pytest.warns(UserWarning, match="finite-difference"):
        hv = h.hvp_gn(V)
    assert h.gn_mode_used == "fd"
    torch.testing.assert_close(hv, h.hvp_fd(V))


def test_bad_inputs(gen64):
    g, ws = gen64
    h = PerceptualHessian(g, LAYER, ws[:1], PixelMSE(), batch_size=64, resize=None)
    with pytest.raises(ValueError, match=r"must be \[m, 4, 4, 3, 3\]"):
        h.hvp_fd(torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"must be \[m, 4, 4, 3, 3\]"):
        h.hvp_gn(torch.zeros(2, 4, 6, 3, 3, dtype=torch.float64))
    bad = torch.zeros(1, 4, 4, 3, 3, dtype=torch.float64)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        h.hvp_gn(bad)
    with pytest.raises(ValueError, match="NaN"):
        h.hvp_reference(bad)
    with pytest.raises(ValueError, match="non-zero"):
        h.hvp_fd(torch.zeros(1, 4, 4, 3, 3), normalize=True)
    with pytest.raises(ValueError, match="eps"):
        h.hvp_fd(torch.ones(1, 4, 4, 3, 3), eps=0)
    with pytest.raises(ValueError, match="mode"):
        h.hvp_gn(torch.ones(1, 4, 4, 3, 3), mode="jvp")
    with pytest.raises(ValueError, match="cannot be shifted"):
        PerceptualHessian(g, "to_rgbs.0", ws, PixelMSE())
    with pytest.raises(KeyError, match="no layer"):
        PerceptualHessian(g, "convs.99", ws, PixelMSE())
    with pytest.raises(ValueError, match="noise_mode"):
        PerceptualHessian(g, LAYER, ws, PixelMSE(), noise_mode="random")
    with pytest.raises(ValueError, match="NaN"):
        PerceptualHessian(g, LAYER, ws * float("nan"), PixelMSE())
    with pytest.raises(ValueError, match="ws must be"):
        PerceptualHessian(g, LAYER, ws[0], PixelMSE())
    with pytest.raises(TypeError, match="metric"):
        PerceptualHessian(g, LAYER, ws, lambda a, b: (a - b).square().mean())
    with pytest.raises(ValueError, match="batch_size"):
        PerceptualHessian(g, LAYER, ws, PixelMSE(), batch_size=0)
