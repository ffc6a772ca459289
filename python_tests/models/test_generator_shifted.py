"""The eval-mode generator runs every StyledConv through shifted_modconv with structured shifts.

For each route (no shift, shared delta, per-sample delta, SplitShift, SVDShift; plain conv,
upsampling conv and the 4x4 input conv): the render equals the pre-fusion grouped route
(``conv_route("legacy")``), gradients w.r.t. the shift's coefficients / delta / t match it, a zero
shift renders bit-identically to the unshifted render, and malformed shifts raise clear errors.
"""

from __future__ import annotations

import pytest
import torch

from navcuda.discover.optimize import DirectionOptimizer, OptimizeConfig
from navcuda.hessian import PerceptualHessian
from navcuda.metrics.perceptual import PixelMSE
from navcuda.models import stylegan2_layers
from navcuda.models.layers import layer_weight
from navcuda.models.stylegan2 import LayerShift, conv_route, eval_strategy
from navcuda.ops import _native
from navcuda.ops.shifted_modconv import PerSampleShift, SharedShift, SplitShift, SVDShift
from navcuda.shift import (
    Direction,
    LayerSpace,
    generate,
    layer_space,
    shift_deltas,
    synthesize_shifted,
)

LAYERS = ("conv1", "convs.2", "convs.3")  # input conv, upsampling conv, plain conv

# float32 renders, fused route vs legacy grouped route: the same function summed in a different
# order (dense conv of modulated activations vs grouped conv of modulated kernels, demodulation
# contracted before vs after). Each conv output then differs by ~sqrt(in*k*k) * 6e-8 relative
# (~1e-6 for <= 288 terms), compounded over <= 7 layers; observed <= 4e-6 on [-1, 1] images. 5e-5
# leaves margin while any real mistake (a wrong direction, t or demodulation) moves pixels by
# 1e-2 or more (the shifts below change the images by > 1e-2, checked in the tests).
F32_ATOL = 5e-5
# float64: the same differences are ~1e-15; 1e-10 catches any mistake.
F64_TOL = 1e-10


def _ws(g, n: int, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, g.config.z_dim, generator=torch.Generator().manual_seed(seed))
    return g.mapping(z.to(g.w_avg.dtype)).detach()


def _svd(g, layer: str):
    space = layer_space(g, layer)
    dt = layer_weight(g, layer).dtype
    return space.u.to(dt), space.s.to(dt), space.vh.to(dt)


def _shift(g, kind: str, layer: str, batch: int, seed: int = 0, t=None) -> LayerShift:
    """One LayerShift of each kind; magnitudes large enough to change the images visibly."""
    gen = torch.Generator().manual_seed(seed)
    w = layer_weight(g, layer)
    dt, shape = w.dtype, tuple(w.shape)
    scale = 0.5 * float(w.detach().norm())
    if t is None:
        t = scale * (torch.rand(batch, generator=gen, dtype=dt) + 0.5)
        t = t * torch.where(torch.arange(batch) % 2 == 0, 1.0, -1.0).to(dt)

    def unit(n):
        d = torch.randn(n, *shape, generator=gen, dtype=dt)
        return d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)

    if kind == "shared":
        return LayerShift(layer, scale * unit(1)[0])
    if kind == "per_sample":
        return LayerShift(layer, t.view(-1, 1, 1, 1, 1) * unit(batch))
    if kind == "split":  # 2 directions over the batch
        return LayerShift.split(layer, unit(2), t, torch.arange(batch) % 2)
    if kind == "split_many":  # one direction per sample
        return LayerShift.split(layer, unit(batch), t, torch.arange(batch))
    u, s, vh = _svd(g, layer)
    coeffs = torch.randn(3, s.shape[0], generator=gen, dtype=dt)
    if kind == "svd":
        return LayerShift.svd(layer, u, s, vh, t, coeffs, torch.arange(batch) % 3)
    if kind == "svd_mismatch":  # singular vectors of another kernel: W != U diag(s) Vh
        other = LayerSpace(torch.randn(shape, generator=gen, dtype=torch.float64))
        u, s, vh = other.u.to(dt), other.s.to(dt), other.vh.to(dt)
        return LayerShift.svd(layer, u, s, vh, t, coeffs, torch.arange(batch) % 3)
    raise AssertionError(kind)


@pytest.fixture
def strategies(monkeypatch):
    """The strategies StyledConv passes to shifted_modconv, in call order."""
    seen: list[str] = []
    real = stylegan2_layers.shifted_modconv

    def spy(*args, **kwargs):
        seen.append(kwargs["strategy"])
        return real(*args, **kwargs)

    monkeypatch.setattr(stylegan2_layers, "shifted_modconv", spy)
    return seen


def _render(g, ws, shift, layer, seen: list | None = None):
    """Synthesis with the layer shifted; ``seen`` (the spy's list) is cleared after the layers
    before it, so that ``seen[0]`` is the shifted layer's strategy."""
    state = g.synthesis_prefix(ws, layer)
    if seen is not None:
        seen.clear()
    return g.synthesis_suffix(state, ws, shift=shift)


# (kind, strategy the auto route must pick with non-zero shifts)
ROUTES = [
    ("none", "shared"),
    ("shared", "shared"),
    ("per_sample", "grouped"),
    ("split", "split"),
    ("split_many", "grouped"),
    ("svd", "factorised"),
    ("svd_mismatch", "grouped"),
]


@pytest.mark.parametrize(
    ("layer", "kind", "expected"),
    # the unshifted render does not depend on the layer: once
    [(layer, k, e) for layer in LAYERS for k, e in ROUTES if k != "none" or layer == "convs.3"],
)
def test_routes_match_legacy_float32(tiny_generator, strategies, layer, kind, expected):
    g, batch = tiny_generator, 4
    ws = _ws(g, batch)
    shift = None if kind == "none" else _shift(g, kind, layer, batch)
    with torch.no_grad():
        fast = _render(g, ws, shift, layer, strategies)
        assert strategies[0] == expected
        with conv_route("legacy"):
            ref = _render(g, ws, shift, layer)
        base = _render(g, ws, None, layer)
    torch.testing.assert_close(fast, ref, rtol=0, atol=F32_ATOL)
    if shift is not None:  # the shift matters far above the tolerance
        assert (fast - base).abs().max() > 1e-2


@pytest.mark.usefixtures("native_path")
@pytest.mark.parametrize("layer", ["convs.2", "convs.3"])
@pytest.mark.parametrize("kind", ["shared", "per_sample", "split", "split_many", "svd"])
def test_routes_match_legacy_float64(tiny_generator, layer, kind):
    g = tiny_generator.double()
    ws = _ws(g, 4)
    shift = _shift(g, kind, layer, 4)
    with torch.no_grad():
        fast = _render(g, ws, shift, layer)
        with conv_route("legacy"):
            ref = _render(g, ws, shift, layer)
    assert (fast - ref).abs().max() < F64_TOL


def test_emulated_cuda_path_renders_through_the_cuda_kernels(tiny_generator, emu):
    """The ``cuda-emulated`` runs above really go through the emulated CUDA kernels: a render
    launches them, and agrees with the C++ CPU kernels' render (float64: same per-element math,
    different reduction order in the demodulation sums)."""
    g = tiny_generator.double()
    ws = _ws(g, 4)
    shift = _shift(g, "svd", "convs.3", 4)
    with torch.no_grad():
        on_cpu = _render(g, ws, shift, "convs.3")
        before = emu.launch_count()
        with _native.emulated_cuda():
            emulated = _render(g, ws, shift, "convs.3")
        launched = emu.launch_count() - before
        _render(g, ws, shift, "convs.3")  # after the block: the C++ CPU kernels again
    assert launched >= 2 * len(g.convs)  # at least demodulation and epilogue per layer
    assert emu.launch_count() - before == launched
    assert (emulated - on_cpu).abs().max() < F64_TOL


# ----------------------------------------------------------------------------- t = 0


def _zero_shift(g, kind, layer, batch):
    w = layer_weight(g, layer)
    if kind == "shared":
        return LayerShift(layer, torch.zeros_like(w))
    if kind == "per_sample":
        return LayerShift(layer, torch.zeros(batch, *w.shape, dtype=w.dtype))
    return _shift(g, kind, layer, batch, t=torch.zeros(batch, dtype=w.dtype))


ZERO_KINDS = ["shared", "per_sample", "split", "split_many", "svd", "svd_mismatch"]


@pytest.mark.parametrize(
    ("layer", "noise_mode"), [("conv1", "const"), ("convs.2", "none"), ("convs.3", "const")]
)
@pytest.mark.parametrize("kind", ZERO_KINDS)
def test_zero_shift_is_bit_identical(tiny_generator, strategies, layer, kind, noise_mode):
    g, batch = tiny_generator, 5
    ws = _ws(g, batch, seed=1)
    with torch.no_grad():
        base = g.synthesis(ws, noise_mode=noise_mode)
        strategies.clear()
        shifted = g.synthesis(ws, noise_mode=noise_mode, shift=_zero_shift(g, kind, layer, batch))
    assert torch.equal(shifted, base)
    # Only the strategies that share the unshifted base convolution may run a zero shift.
    assert set(strategies) <= {"shared", "split"}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("kind", ["split", "split_many", "svd", "svd_mismatch"])
def test_zero_samples_of_a_mixed_batch_are_bit_identical(tiny_generator, layer, kind):
    """A strip: t = 0 next to t != 0 in one batch; the t = 0 images equal the unshifted ones."""
    g, batch = tiny_generator, 6
    ws = _ws(g, batch, seed=2)
    w = layer_weight(g, layer)
    t = torch.tensor([0.0, 1.0, -2.0, 0.0, 3.0, 0.0]) * float(w.detach().norm())
    with torch.no_grad():
        base = g.synthesis(ws)
        shifted = g.synthesis(ws, shift=_shift(g, kind, layer, batch, t=t))
    for b in range(batch):
        assert torch.equal(shifted[b], base[b]) == (t[b] == 0), b


def test_per_sample_delta_with_a_zero_row_is_bit_identical(tiny_generator, strategies):
    g, layer = tiny_generator, "convs.3"
    ws = _ws(g, 3, seed=3)
    delta = _shift(g, "per_sample", layer, 3).delta.clone()
    delta[1] = 0
    with torch.no_grad():
        base = _render(g, ws, None, layer)
        shifted = _render(g, ws, LayerShift(layer, delta), layer, strategies)
    assert strategies[0] == "split"
    assert torch.equal(shifted[1], base[1])
    assert not torch.equal(shifted[0], base[0])


def test_strips_and_generate_at_t_zero(tiny_generator):
    g = tiny_generator
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(4))
    rank = layer_space(g, "convs.3").rank
    d1 = Direction.singular("convs.3", 1, rank)
    d2 = Direction("convs.3", "svd", torch.linspace(-1, 1, rank))
    base = generate(g, z)
    assert torch.equal(generate(g, z, d1, t=0.0), base)
    assert torch.equal(generate(g, z, [d1, d2, d1, d2], t=[0.0, 0.0, 0.0, 0.0]), base)
    strip = generate(g, z, [d1, d2, d1, d2], t=[0.0, 5.0, -5.0, 0.0])
    assert torch.equal(strip[0], base[0]) and torch.equal(strip[3], base[3])
    assert not torch.allclose(strip[1], base[1], atol=1e-3)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.usefixtures("native_path")
@pytest.mark.parametrize("layer", ["convs.2", "convs.3"])
@pytest.mark.parametrize("kind", ["svd", "split", "split_many", "per_sample"])
def test_gradients_match_legacy(tiny_generator, layer, kind):
    """float64: gradients w.r.t. t and the coefficients / directions equal the grouped route's."""
    g = tiny_generator.double().requires_grad_(False)
    batch = 4
    ws = _ws(g, batch, seed=5)
    weights = torch.randn(batch, 3, 16, 16, dtype=torch.float64)

    def grads(route):
        shift = _shift(g, kind, layer, batch, seed=6)
        if shift.spec is not None:
            leaves = [shift.spec.t, shift.spec.coeffs if kind == "svd" else shift.spec.delta]
        else:
            leaves = [shift.delta]
        leaves = [v.detach().requires_grad_(True) for v in leaves]
        if kind == "svd":
            sp = shift.spec
            shift = LayerShift.svd(layer, sp.u, sp.s, sp.vh, leaves[0], leaves[1], sp.index)
        elif shift.spec is not None:
            shift = LayerShift.split(layer, leaves[1], leaves[0], shift.spec.index)
        else:
            shift = LayerShift(layer, leaves[0])
        with conv_route(route):
            out = (_render(g, ws, shift, layer) * weights).sum()
        return torch.autograd.grad(out, leaves)

    fast, ref = grads("auto"), grads("legacy")
    for a, b in zip(fast, ref, strict=True):
        assert b.abs().max() > 0
        assert (a - b).abs().max() <= F64_TOL * max(1.0, float(b.abs().max()))


def test_shared_shift_double_backward_with_ref_impl(tiny_generator):
    """Hessian-vector products through the fused route (impl="ref") equal the legacy route's."""
    g = tiny_generator.double().requires_grad_(False)
    layer = "convs.3"
    ws = _ws(g, 2, seed=7)
    w = layer_weight(g, layer)
    v = torch.randn(w.shape, dtype=torch.float64)
    weights = torch.randn(2, 3, 16, 16, dtype=torch.float64)

    def hvp(route, impl):
        delta = torch.zeros(w.shape, dtype=torch.float64, requires_grad=True)
        with conv_route(route, impl=impl):
            out = (_render(g, ws, LayerShift(layer, delta), layer) * weights).square().sum()
        (gr,) = torch.autograd.grad(out, delta, create_graph=True)
        (hv,) = torch.autograd.grad((gr * v).sum(), delta)
        return hv

    ref = hvp("legacy", None)
    assert ref.abs().max() > 0
    assert (hvp("auto", "ref") - ref).abs().max() <= F64_TOL * float(ref.abs().max())
    with pytest.raises(RuntimeError, match="autograd"):
        hvp("auto", "native")


@pytest.mark.usefixtures("native_path")
@pytest.mark.parametrize("basis", ["svd", "weight"])
def test_optimize_shift_gradients_match_legacy(tiny_generator, basis):
    """The shift train_step renders with (DirectionOptimizer.shift): the direction coefficients get
    the grouped route's gradient (float64 generator; the coefficients are float32, so their
    gradients carry float32 rounding: 1e-6 relative)."""
    g = tiny_generator.double()
    space = layer_space(g, 3)
    kw = {}
    if basis == "weight":
        gen = torch.Generator().manual_seed(0)
        kw["basis"] = torch.randn(5, *space.weight_shape, generator=gen)
    opt = DirectionOptimizer(g, 3, OptimizeConfig(k=3, batch_size=4, reconstructor_size=32), **kw)
    ws = _ws(g, 4, seed=10)
    with torch.no_grad():
        state = g.synthesis_prefix(ws, "convs.3")
    k = torch.tensor([0, 2, 1, 2])
    t = torch.tensor([1.0, -1.5, 2.0, 0.7]) * opt.t_max / 2
    weights = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    grads = {}
    for route in ("auto", "legacy"):
        opt.coeffs.grad = None
        with torch.enable_grad(), conv_route(route):
            (g.synthesis_suffix(state, ws, shift=opt.shift(k, t)) * weights).sum().backward()
        grads[route] = opt.coeffs.grad.clone()
    ref = grads["legacy"]
    assert ref.abs().max() > 0
    torch.testing.assert_close(grads["auto"], ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_optimize_uses_the_fast_strategies(tiny_generator, strategies):
    space = layer_space(tiny_generator, 3)
    cfg = OptimizeConfig(k=3, batch_size=4, reconstructor_size=32)
    weight_basis = torch.randn(5, *space.weight_shape)
    for basis, expected in [(None, {"factorised"}), (weight_basis, {"split", "grouped"})]:
        strategies.clear()
        opt = DirectionOptimizer(tiny_generator, 3, cfg, basis=basis)
        before = opt.coeffs.detach().clone()
        opt.train_step()
        # the gradient reached the coefficients: the step (inside the backward) moved them
        assert (opt.coeffs - before).abs().min() > 0
        assert set(strategies) & expected, strategies


def test_hessian_gradients_match_legacy(tiny_generator, strategies):
    """The batched perturbation gradients (split shifts, t = 1) equal the grouped route's."""
    g = tiny_generator.double()
    ws = _ws(g, 3, seed=8)
    hess = PerceptualHessian(g, "convs.3", ws, PixelMSE(), batch_size=6, resize=None)
    gen = torch.Generator().manual_seed(9)
    deltas = torch.randn(4, *hess.shape, generator=gen, dtype=torch.float64)
    strategies.clear()
    fast = hess.grad(deltas)
    assert "split" in strategies
    with conv_route("legacy"):
        ref = hess.grad(deltas)
    assert ref.abs().max() > 0
    assert (fast - ref).abs().max() <= F64_TOL * float(ref.abs().max())


def test_shift_deltas_is_split_and_differentiable_in_t(tiny_generator):
    g = tiny_generator
    rank = layer_space(g, "convs.1").rank
    d1, d2 = Direction.singular("convs.1", 0, rank), Direction.singular("convs.1", 3, rank)
    shift = shift_deltas(g, [d1, d2, d1, d1], [1.0, 2.0, 3.0, 4.0])
    assert isinstance(shift.spec, SplitShift) and shift.delta is None
    assert shift.spec.delta.shape[0] == 2  # each distinct direction formed once
    assert shift.spec.index.tolist() == [0, 1, 0, 0]
    one = shift_deltas(g, d1, 2.0)
    assert one.spec is None and one.delta.shape == (32, 32, 3, 3)
    t = torch.tensor([1.0, -1.0], requires_grad=True)
    ws = _ws(g, 2)
    synthesize_shifted(g, ws, d2, t).square().mean().backward()
    assert t.grad is not None and (t.grad.abs() > 0).all()


# ----------------------------------------------------------------------------- policy and errors


def test_eval_strategy_rule():
    w = torch.randn(4, 3, 3, 3)
    d = torch.randn(4, 4, 3, 3, 3)
    t = torch.ones(4)
    assert eval_strategy(w, None) == (None, "shared")
    assert eval_strategy(w, SharedShift(d[0]))[1] == "shared"
    assert eval_strategy(w, SplitShift(d[:2], t, torch.tensor([0, 1, 1, 0])))[1] == "split"
    assert eval_strategy(w, SplitShift(d, t, torch.arange(4)))[1] == "grouped"
    zero_t = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert eval_strategy(w, SplitShift(d, zero_t, torch.arange(4)))[1] == "split"
    d0 = d.clone()
    d0[2] = 0
    assert eval_strategy(w, SplitShift(d0, t, torch.arange(4)))[1] == "split"
    assert eval_strategy(w, PerSampleShift(d))[1] == "grouped"
    spec, strategy = eval_strategy(w, PerSampleShift(d0))
    assert strategy == "split" and isinstance(spec, SplitShift)
    assert spec.index.tolist() == [0, 1, 2, 3] and spec.t.tolist() == [1.0] * 4


def test_conv_route_nesting_and_validation(tiny_generator, strategies):
    g = tiny_generator
    ws = _ws(g, 2)
    with conv_route("grouped"):
        with conv_route(impl="ref"):  # inherits the strategy
            g.synthesis(ws)
        assert set(strategies) == {"grouped"}
        strategies.clear()
        with conv_route("legacy"):
            g.synthesis(ws)
        assert strategies == []
    g.synthesis(ws)
    assert set(strategies) == {"shared"}
    with pytest.raises(ValueError, match="strategy must be one of"):
        with conv_route("fastest"):
            pass
    with pytest.raises(ValueError, match="impl must be one of"):
        with conv_route(impl="cuda"):
            pass
    with pytest.raises(ValueError, match="does not support SplitShift"):
        with conv_route("factorised"):
            g.synthesis(ws, shift=_shift(g, "split", "convs.3", 2))


def test_training_mode_keeps_the_dense_path(tiny_generator, strategies):
    g = tiny_generator.train()
    ws = _ws(g, 2)
    for kind in ("shared", "split", "svd"):
        out = g.synthesis(ws, shift=_shift(g, kind, "convs.3", 2))
        assert torch.isfinite(out).all()
    assert strategies == []
    g.eval()


# ----------------------------------------------------------------------------- layout


def _layouts(g, layout: str, strategy: str = "auto"):
    """float64 render + gradient w.r.t. a shared delta of convs.3 under ``layout``; the layouts
    (channels-last or not) of every StyledConv's input and of its output's gradient."""
    ws = _ws(g, 3, seed=2)
    delta = _shift(g, "shared", "convs.3", 3, seed=1).delta.detach().requires_grad_(True)
    inputs, grads = [], []

    def pre(module, args):
        inputs.append(_native.is_channels_last(args[0]))

    def post(module, args, out):
        if out.requires_grad:  # the layers from the shifted one on
            out.register_hook(lambda gr: grads.append(_native.is_channels_last(gr)))

    mods = [m for m in g.modules() if isinstance(m, stylegan2_layers.StyledConv)]
    hooks = [m.register_forward_pre_hook(pre) for m in mods]
    hooks += [m.register_forward_hook(post) for m in mods]
    try:
        with conv_route(strategy, layout=layout):
            img = g.synthesis(ws, shift=LayerShift("convs.3", delta))
            (gd,) = torch.autograd.grad((img * img).sum(), delta)
    finally:
        for h in hooks:
            h.remove()
    return img, gd, inputs, grads


def test_layout_route_runs_channels_last_on_the_cpu(tiny_generator):
    """On the CPU an eval-mode synthesis runs channels-last by default, forward and backward,
    returns NCHW-contiguous images, and equals the NCHW route (float64: same math, another
    summation order in the convolutions); "nchw" and the legacy reference stay NCHW."""
    g = tiny_generator.double().requires_grad_(False)
    img_cl, g_cl, ins_cl, grads_cl = _layouts(g, "auto")
    img_n, g_n, ins_n, grads_n = _layouts(g, "nchw")
    assert ins_cl and all(ins_cl) and grads_cl and all(grads_cl)
    assert not any(ins_n) and not any(grads_n)
    assert img_cl.is_contiguous() and img_n.is_contiguous()
    torch.testing.assert_close(img_cl, img_n, rtol=F64_TOL, atol=F64_TOL)
    torch.testing.assert_close(g_cl, g_n, rtol=F64_TOL, atol=F64_TOL)
    _, _, ins_legacy, _ = _layouts(g, "auto", strategy="legacy")
    assert not any(ins_legacy)
    _, _, ins_forced, _ = _layouts(g, "channels_last", strategy="legacy")
    assert all(ins_forced)
    with pytest.raises(ValueError, match="layout must be one of"):
        with conv_route(layout="nhwc"):
            pass


def test_layout_is_restored_after_a_strategy_that_changes_it(tiny_generator, monkeypatch):
    """A shifted layer whose strategy returns NCHW (the factorised SVD route can) does not turn
    the rest of a channels-last synthesis NCHW: every later StyledConv still reads
    channels-last."""
    g = tiny_generator
    original = stylegan2_layers.shifted_modconv

    def nchw_output(*args, **kw):
        return original(*args, **kw).contiguous()

    monkeypatch.setattr(stylegan2_layers, "shifted_modconv", nchw_output)
    seen = []
    mods = [m for m in g.modules() if isinstance(m, stylegan2_layers.StyledConv)]
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for m in mods]
    try:
        g.synthesis(_ws(g, 2), shift=_shift(g, "svd", "convs.3", 2))
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == len(mods) and all(_native.is_channels_last(x) for x in seen)


def _bad(g, match, exc=ValueError, batch=2, **kw):
    ws = _ws(g, batch)
    with pytest.raises(exc, match=match):
        g.synthesis(ws, shift=LayerShift("convs.3", **kw))


def test_bad_shifts_raise_clear_errors(tiny_generator):
    g = tiny_generator
    d = torch.randn(2, 16, 16, 3, 3)  # convs.3 of the tiny generator: 16 -> 16 channels
    t, idx = torch.ones(2), torch.tensor([0, 1])
    u, s, vh = _svd(g, "convs.3")
    c = torch.randn(2, s.shape[0])
    with pytest.raises(ValueError, match="exactly one of delta"):
        LayerShift("convs.3")
    with pytest.raises(ValueError, match="exactly one of delta"):
        LayerShift("convs.3", d[0], SplitShift(d, t, idx))
    with pytest.raises(TypeError, match="SplitShift or an SVDShift"):
        LayerShift("convs.3", spec=SharedShift(d[0]))
    with pytest.raises(TypeError, match="delta must be a tensor"):
        LayerShift("convs.3", [1.0])
    with pytest.raises(ValueError, match="pass index"):
        LayerShift.split("convs.3", torch.randn(3, 16, 16, 3, 3), t)
    _bad(g, r"delta must have shape \[n, 16, 16, 3, 3\]", spec=SplitShift(d[:, :4], t, idx))
    _bad(g, r"t must have shape \[2\]", spec=SplitShift(d, torch.ones(3), idx))
    _bad(
        g,
        r"index values must lie in \[0, 2\).* got \[-3, 2\]",
        spec=SplitShift(d, t, torch.tensor([-3, 2])),
    )
    _bad(g, "index must be int64 or int32", TypeError, spec=SplitShift(d, t, idx.double()))
    _bad(g, r"index must have shape \[2\]", spec=SplitShift(d, t, idx[:1]))
    _bad(g, "generator's dtype", TypeError, spec=SplitShift(d.double(), t, idx))
    _bad(g, "t must be a tensor", TypeError, spec=SplitShift(d, 1.0, idx))
    _bad(g, r"u must have shape \[144, n\]", spec=SVDShift(u[:10], s, vh, t, c, idx))
    _bad(g, r"vh must have shape", spec=SVDShift(u, s, vh[:, :3], t, c, idx))
    _bad(g, r"coeffs must have shape \[n, 16\]", spec=SVDShift(u, s, vh, t, c[:, :3], idx))
    _bad(g, "coeffs has 3 rows for a batch of 2", spec=SVDShift(u, s, vh, t, c.repeat(2, 1)[:3]))
    _bad(g, "not all zero", spec=SVDShift(u, s, vh, t, torch.zeros_like(c), idx))
    with pytest.raises(ValueError, match="cannot be shifted"):
        g.synthesis(_ws(g, 2), shift=LayerShift("to_rgb1", spec=SplitShift(d, t, idx)))
    with pytest.raises(TypeError, match="LayerShift or None"):
        g.synthesis(_ws(g, 2), shift=SplitShift(d, t, idx))
