"""shifted_modconv: every strategy x shift spec against the grouped oracle (values and gradients),
the native demodulation / epilogue kernels (CPU, and the CUDA bodies through navcuda._C_emu)
against their plain-torch references, gradcheck, strategy choice and argument errors."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch

from navcuda.ops import _native
from navcuda.ops.shifted_modconv import (
    STRATEGIES,
    PerSampleShift,
    SharedShift,
    SplitShift,
    SVDShift,
    choose_strategy,
    demod,
    epilogue,
    ref_demod,
    ref_epilogue,
    ref_shifted_modconv,
    shifted_modconv,
)
from navcuda.ops.upfirdn2d import make_filter
from navcuda.shift import flatten_kernel

needs_native = pytest.mark.skipif(
    _native.native_module() is None,
    reason=f"navcuda._C is not importable: {_native.import_error()}",
)

# float64: every strategy computes the same sums in a different order; the errors observed are
# ~1e-15 for values and ~1e-14 for gradients, so 1e-10 catches any real mistake.
F64_TOL = 1e-10
# float32: relative to the largest magnitude of the float64 oracle (DESIGN.md: <= 1e-4 on CPU).
# Observed: ~1e-6 (values) and ~1e-5 (gradients; the weight/t gradients are sums over B*H*W terms
# of products, and the factorised path goes through the float32-rounded SVD factors).
F32_REL_TOL = 1e-4

SHIFT_KINDS = ("none", "shared", "per_sample", "svd_index", "svd_rows", "split")
SUPPORTED = {
    "none": ("grouped", "shared"),
    "shared": ("grouped", "shared", "split"),
    "per_sample": ("grouped",),
    "svd_index": (
        "grouped",
        "factorised",
        "split",
        "factorised-directions",
        "factorised-materialise",
    ),
    "svd_rows": (
        "grouped",
        "factorised",
        "split",
        "factorised-directions",
        "factorised-materialise",
    ),
    "split": ("grouped", "split"),
}

# (B, in, out, H, W, k, up): batch 1, odd channel counts, non-square images, 1x1 and 3x3 kernels.
SHAPES = [
    (1, 3, 5, 5, 4, 3, 1),
    (3, 5, 4, 4, 4, 3, 2),
    (4, 6, 7, 3, 5, 3, 1),
    (2, 4, 3, 4, 3, 1, 1),
]


def _make(kind, shape, dtype, *, seed=0, noise="batch", bias=True, noncontig=False):
    """Random inputs (float64 master copies) for one case; returns (tensors dict, build fn)."""
    g = torch.Generator().manual_seed(seed)
    b, i, o, h, w, k, up = shape

    def rnd(*sz, scale=1.0):
        return torch.randn(*sz, generator=g, dtype=torch.float64) * scale

    t = {
        "x": rnd(b, i, h, w),
        "weight": rnd(o, i, k, k),
        "styles": rnd(b, i) + 1.0,
        "bias": rnd(o, scale=0.3) if bias else None,
        "ns": rnd(1, scale=0.5) if noise else None,
        "noise": None,
    }
    if noise == "batch":
        t["noise"] = rnd(b, 1, h * up, w * up)
    elif noise == "shared":
        t["noise"] = rnd(1, 1, h * up, w * up)
    u, s, vh = torch.linalg.svd(flatten_kernel(t["weight"]), full_matrices=False)
    r = s.numel()
    if kind == "shared":
        t["delta"] = rnd(o, i, k, k, scale=0.5)
    elif kind == "per_sample":
        t["delta"] = rnd(b, o, i, k, k, scale=0.5)
    elif kind in ("svd_index", "svd_rows"):
        t.update(u=u, s=s, vh=vh, t=rnd(b, scale=2.0))
        n_dir = 3 if kind == "svd_index" else b
        t["coeffs"] = rnd(n_dir, r)
        if kind == "svd_index":
            t["index"] = torch.randint(0, n_dir, (b,), generator=g)
    elif kind == "split":
        t.update(delta=rnd(2, o, i, k, k, scale=0.5), t=rnd(b, scale=2.0))
        t["index"] = torch.randint(0, 2, (b,), generator=g)
    grad_names = [n for n in ("x", "weight", "styles", "bias", "ns", "delta", "t", "coeffs")
                  if t.get(n) is not None]  # fmt: skip

    def leaves(dt):
        """Fresh leaf copies in dtype dt (optionally non-contiguous views)."""
        out = {}
        for n, v in t.items():
            if v is None or not v.is_floating_point():
                out[n] = v
                continue
            v = v.to(dt)
            if noncontig and v.ndim >= 2:
                v = v.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, new strides
                if v.shape[-1] > 1 and v.shape[-2] > 1:
                    assert not v.is_contiguous()
            if n in grad_names:
                v = v.detach().requires_grad_(True)
            out[n] = v
        return out

    return t, grad_names, leaves


def _shift(kind, L):
    if kind == "none":
        return None
    if kind == "shared":
        return SharedShift(L["delta"])
    if kind == "per_sample":
        return PerSampleShift(L["delta"])
    if kind in ("svd_index", "svd_rows"):
        return SVDShift(L["u"], L["s"], L["vh"], L["t"], L["coeffs"], L.get("index"))
    return SplitShift(L["delta"], L["t"], L["index"])


def _blur_filter(shape, dtype, device="cpu"):
    """The StyleGAN2 blur for an up=2 case of ``SHAPES``, None for up=1."""
    return make_filter((1, 3, 3, 1), 4).to(device, dtype) if shape[-1] == 2 else None


def _run(fn, kind, L, shape, demodulate, clamp, **kw):
    up = shape[-1]
    bf = _blur_filter(shape, L["x"].dtype, L["x"].device)
    return fn(L["x"], L["weight"], L["styles"], _shift(kind, L), demodulate=demodulate, up=up,
              blur_filter=bf, noise=L["noise"], noise_strength=L["ns"], bias=L["bias"],
              clamp=clamp, **kw)  # fmt: skip


def _values_and_grads(fn, kind, L, names, shape, demodulate, clamp, seed=5, **kw):
    y = _run(fn, kind, L, shape, demodulate, clamp, **kw)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    leaves = [L[n] for n in names]
    grads = torch.autograd.grad(y, leaves, dy.to(y.device, y.dtype), allow_unused=True)
    return y, dict(zip(names, grads, strict=True))


def _cases():
    cases = []
    for kind in SHIFT_KINDS:
        for si in range(len(SHAPES)):
            demodulate = (si % 2 == 0) or kind != "none"
            clamp = 0.8 if si % 2 else None
            noise = ("batch", "shared", None, "batch")[si]
            for strategy in SUPPORTED[kind]:
                cases.append((kind, si, strategy, demodulate, clamp, noise))
    return cases


@needs_native
@pytest.mark.parametrize("kind,si,strategy,demodulate,clamp,noise", _cases())
@pytest.mark.parametrize("impl", ["native", "ref"])
def test_strategy_matches_oracle_float64(kind, si, strategy, demodulate, clamp, noise, impl):
    shape = SHAPES[si]
    _, names, leaves = _make(kind, shape, torch.float64, seed=si, noise=noise, bias=si != 2,
                             noncontig=si == 2)  # fmt: skip
    La, Lb = leaves(torch.float64), leaves(torch.float64)
    y_ref, g_ref = _values_and_grads(ref_shifted_modconv, kind, La, names, shape, demodulate, clamp)
    y, g = _values_and_grads(shifted_modconv, kind, Lb, names, shape, demodulate, clamp,
                             strategy=strategy, impl=impl)  # fmt: skip
    torch.testing.assert_close(y, y_ref, rtol=F64_TOL, atol=F64_TOL)
    for n in names:
        assert g[n] is not None, f"no gradient reached {n}"
        torch.testing.assert_close(g[n], g_ref[n], rtol=F64_TOL, atol=F64_TOL, msg=n)


@needs_native
@pytest.mark.parametrize("si", [1, 2])  # up=2 and up=1 (batch > 1)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("index", ["distinct", "repeated"])
@pytest.mark.parametrize("impl", ["native", "ref"])
def test_split_shared_input_convolves_once(si, layout, index, impl, monkeypatch):
    """One input and one style row under many directions (x a broadcast view: one latent of a
    block of Hessian products): the split strategy convolves that input once, the distinct
    directions stacked as output channels, and gives the grouped oracle's values and gradients
    (float64) w.r.t. the directions, t, the styles and the weight."""
    shape = SHAPES[si]
    b, i, o, h, w, k, up = shape
    gen = torch.Generator().manual_seed(11)
    x1 = torch.randn(1, i, h, w, generator=gen, dtype=torch.float64)
    if layout == "channels_last":
        x1 = x1.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(o, i, k, k, generator=gen, dtype=torch.float64)
    s1 = torch.randn(1, i, generator=gen, dtype=torch.float64) + 1.0
    n_dir = b if index == "distinct" else 2
    deltas = 0.5 * torch.randn(n_dir, o, i, k, k, generator=gen, dtype=torch.float64)
    t = torch.randn(b, generator=gen, dtype=torch.float64)
    idx = torch.arange(b) if index == "distinct" else torch.tensor([1, 0, 1, 1, 0, 0][:b])
    bf = _blur_filter(shape, torch.float64)
    dy = torch.randn(b, o, h * up, w * up, generator=gen, dtype=torch.float64)
    calls = []
    mod = sys.modules["navcuda.ops.shifted_modconv.split"]
    real = mod._split_shared_input
    monkeypatch.setattr(mod, "_split_shared_input", lambda *a: calls.append(1) or real(*a))

    def run(fn, x, **kw):
        leaves = [v.detach().clone().requires_grad_(True) for v in (weight, s1, deltas, t)]
        wt, st, dl, tt = leaves
        styles = st.expand(b, i) if x.stride(0) == 0 else st.repeat(b, 1)
        y = fn(x, wt, styles, SplitShift(dl, tt, idx), up=up, blur_filter=bf, **kw)
        return y, torch.autograd.grad(y, leaves, dy)

    x_shared = x1.expand(b, i, h, w)
    assert x_shared.stride(0) == 0
    y, grads = run(shifted_modconv, x_shared, strategy="split", impl=impl)
    assert calls, "the shared-input path was not taken"
    y_ref, grads_ref = run(ref_shifted_modconv, x1.repeat(b, 1, 1, 1))
    torch.testing.assert_close(y, y_ref, rtol=F64_TOL, atol=F64_TOL)
    for name, a, r in zip(("weight", "styles", "deltas", "t"), grads, grads_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=F64_TOL, atol=F64_TOL, msg=name)
    # The same input as separate rows is not a broadcast view: the ordinary path runs.
    calls.clear()
    run(shifted_modconv, x1.repeat(b, 1, 1, 1), strategy="split", impl=impl)
    assert not calls


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("symmetric", [True, False])
def test_blur_adjoint_matches_autograd(k, symmetric):
    """The closed-form adjoint of the blur after a transposed conv (used by the backward of the
    fused dense conv) equals autograd's, for the StyleGAN2 filter and an asymmetric one."""
    from navcuda.ops.shifted_modconv.dense_conv import _blur, _blur_adjoint

    g = torch.Generator().manual_seed(k)
    f = make_filter((1, 3, 3, 1), 4).double() if symmetric else torch.rand(4, 4, generator=g)
    h, w = 5, 7
    z = torch.randn(2, 3, 2 * h + k - 2, 2 * w + k - 2, generator=g, dtype=torch.float64)
    z.requires_grad_(True)
    y = _blur(z, f.double(), k)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (gz,) = torch.autograd.grad(y, z, dy)
    torch.testing.assert_close(_blur_adjoint(dy, f.double(), k), gz, rtol=1e-12, atol=1e-12)


@needs_native
@pytest.mark.parametrize("si", [0, 1])  # up=1 and up=2
@pytest.mark.parametrize("frozen", ["weight+styles", "weight"])
def test_shared_native_frozen_layer_keeps_no_new_activation(si, frozen):
    """A frozen layer inside a shifted synthesis (only ``x``, maybe the styles, need a
    gradient): the native shared strategy keeps no activation-sized tensor of its own for the
    backward (not ``x * s``, not the blur's input, not its output), only ``x`` and the packed
    2-bit activation mask of its output (and, when the styles need a gradient, the conv output
    for the demodulation's), and its gradients match the oracle."""
    shape = SHAPES[si]
    _, _, leaves = _make("none", shape, torch.float64, seed=11, noise="batch")
    grads, saved, masks = {}, [], []
    for fn in (shifted_modconv, ref_shifted_modconv):
        L = leaves(torch.float64)
        for n in ("weight", "bias", "ns") + (("styles",) if frozen == "weight+styles" else ()):
            L[n] = L[n].detach()
        names = ["x"] + (["styles"] if frozen == "weight" else [])
        kw = dict(strategy="shared", impl="native") if fn is shifted_modconv else {}

        def pack(t, fn=fn):  # activations: [B, C > 1, H', W'] (the noise plane is [B, 1, ...])
            if fn is shifted_modconv and t.dtype == torch.uint8:
                masks.append(t)  # the packed codes: [rows, bytes per row]
            elif (
                fn is shifted_modconv and t.ndim == 4 and t.shape[0] == shape[0] and t.shape[1] > 1
            ):
                saved.append(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = _run(fn, "none", L, shape, True, None, **kw)
        if fn is shifted_modconv:
            own = set(saved) - {L["x"].untyped_storage().data_ptr()}
            assert y.untyped_storage().data_ptr() not in own  # its packed mask instead
            assert len(masks) == 1
            b, c, h, w = y.shape  # NCHW here: one row per plane, 8 one-bit codes per byte
            assert masks[0].shape == (b * c, (h * w + 7) // 8)  # (no clamp: the slope sign)
            assert len(own) == (1 if frozen == "weight" else 0), "kept an activation of its own"
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
        grads[fn.__name__] = torch.autograd.grad(y, [L[n] for n in names], dy)
    for a, b in zip(grads["shifted_modconv"], grads["ref_shifted_modconv"], strict=True):
        torch.testing.assert_close(a, b, rtol=F64_TOL, atol=F64_TOL)


@needs_native
@pytest.mark.parametrize("si", [0, 1])  # up=1 and up=2
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_shared_constant_linear_layer_keeps_no_activation(si, layout):
    """A tangent pass's layer (constant styles and kernel, linear epilogue, no noise or bias) is
    a fixed linear map of ``x``: its backward needs no activation, so none is kept (not ``x``,
    not the output); a channels-last ``x`` stays channels-last (the native epilogue reads it,
    torch's blur runs, no NCHW copy); the gradient matches the oracle's."""
    shape = SHAPES[si]
    _, _, leaves = _make("none", shape, torch.float64, seed=13, noise=None, bias=False)
    L = leaves(torch.float64)
    for n in ("weight", "styles"):
        L[n] = L[n].detach()
    if layout == "channels_last":
        L["x"] = L["x"].detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    saved = []

    def pack(t):
        if t.ndim == 4 and t.shape[0] == shape[0] and t.shape[1] > 1 and t[0, 0].numel() > 1:
            saved.append(tuple(t.shape))  # activations (not per-channel coefficients)
        return t

    kw = dict(act="linear", bias=None, noise=None)
    kw["blur_filter"] = _blur_filter(shape, torch.float64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = shifted_modconv(L["x"], L["weight"], L["styles"], None, up=shape[-1],
                            strategy="shared", **kw)  # fmt: skip
    assert saved == []
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    ref = ref_shifted_modconv(L["x"], L["weight"], L["styles"], None, up=shape[-1], **kw)
    torch.testing.assert_close(y, ref, rtol=F64_TOL, atol=F64_TOL)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
    (gx,) = torch.autograd.grad(y, L["x"], dy)
    (gx_ref,) = torch.autograd.grad(ref, L["x"], dy)
    torch.testing.assert_close(gx, gx_ref, rtol=F64_TOL, atol=F64_TOL)


@needs_native
@pytest.mark.parametrize("si", [2, 1])  # up=1 and up=2, batch > 1
@pytest.mark.parametrize("styles_grad", [False, True])
def test_shared_one_latent_folds_styles_into_the_kernel(si, styles_grad, monkeypatch):
    """Every sample with the same styles and only ``x`` differentiated (a tangent pass of one
    latent): the styles go into the kernel, ``x`` reaches the convolution unmodulated; with
    differing styles, or styles that need a gradient, they do not. Values and gradients match
    the oracle's either way."""
    import sys

    smc = sys.modules["navcuda.ops.shifted_modconv.dense_conv"]  # every strategy calls it there
    seen = []
    real = smc._dense_conv

    def spy(xs, *args):
        seen.append(xs)
        return real(xs, *args)

    monkeypatch.setattr(smc, "_dense_conv", spy)
    shape = SHAPES[si]
    _, _, leaves = _make("none", shape, torch.float64, seed=19, noise=None, bias=False)
    L = leaves(torch.float64)
    kw = dict(act="linear", bias=None, noise=None, up=shape[-1])
    kw["blur_filter"] = _blur_filter(shape, torch.float64)
    one = L["styles"].detach()[:1].expand_as(L["styles"]).clone()
    for styles, folds in ((one, not styles_grad), (L["styles"].detach(), False)):
        styles = styles.requires_grad_(styles_grad)
        seen.clear()
        y = shifted_modconv(L["x"], L["weight"].detach(), styles, None, strategy="shared", **kw)
        assert (seen[0] is L["x"]) == folds
        ref = ref_shifted_modconv(L["x"], L["weight"].detach(), styles, None, **kw)
        torch.testing.assert_close(y, ref, rtol=F64_TOL, atol=F64_TOL)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(6), dtype=y.dtype)
        wrt = [L["x"], styles] if styles_grad else [L["x"]]
        for g, g_ref in zip(
            torch.autograd.grad(y, wrt, dy), torch.autograd.grad(ref, wrt, dy), strict=True
        ):
            torch.testing.assert_close(g, g_ref, rtol=F64_TOL, atol=F64_TOL)


@needs_native
@pytest.mark.parametrize("si", [0, 1])  # up=1 and up=2
@pytest.mark.parametrize("demodulate", [True, False])
def test_shared_shift_of_a_frozen_input_keeps_no_kernel(si, demodulate):
    """Only the shift needs a gradient (a Hessian's or a direction's; the input and styles are
    frozen): the convolution's weight gradient needs the modulated input, not the kernel, so the
    scaled kernel ``(W + delta) c`` is not kept for the backward (the demodulation keeps
    ``W + delta``: its own gradient needs it); the gradient matches the oracle's."""
    shape = SHAPES[si]
    _, _, leaves = _make("none", shape, torch.float64, seed=17)
    L = leaves(torch.float64)
    for n in ("x", "weight", "styles"):
        L[n] = L[n].detach()
    delta = (0.1 * torch.randn(L["weight"].shape, dtype=torch.float64)).requires_grad_(True)
    kshape = tuple(L["weight"].shape)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    kw = dict(blur_filter=_blur_filter(shape, torch.float64), up=shape[-1], demodulate=demodulate)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = shifted_modconv(L["x"], L["weight"], L["styles"], SharedShift(delta),
                            strategy="shared", impl="native", **kw)  # fmt: skip
    assert saved.count(kshape) == (1 if demodulate else 0)
    ref = ref_shifted_modconv(L["x"], L["weight"], L["styles"], SharedShift(delta), **kw)
    torch.testing.assert_close(y, ref, rtol=F64_TOL, atol=F64_TOL)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    (gd,) = torch.autograd.grad(y, delta, dy)
    (gd_ref,) = torch.autograd.grad(ref, delta, dy)
    torch.testing.assert_close(gd, gd_ref, rtol=F64_TOL, atol=F64_TOL)


@needs_native
@pytest.mark.parametrize("si", [0, 1])  # up=1 and up=2
def test_shared_native_skips_gradients_the_engine_will_not_use(si, monkeypatch):
    """torch.autograd.grad w.r.t. x alone must not compute the weight gradient of a layer whose
    weight requires one (the Hessian's case: trainable but not differentiated), as autograd's
    own nodes would not; asking for the weight gradient does compute it."""
    import sys

    smc = sys.modules["navcuda.ops.shifted_modconv.dense_conv"]
    calls = []
    real = smc._dense_conv_weight_grad

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(smc, "_dense_conv_weight_grad", spy)
    shape = SHAPES[si]
    _, _, leaves = _make("none", shape, torch.float64, seed=12, noise="batch")
    L = leaves(torch.float64)
    y = _run(shifted_modconv, "none", L, shape, True, None, strategy="shared", impl="native")
    dy = torch.ones_like(y)
    torch.autograd.grad(y, [L["x"]], dy, retain_graph=True)
    assert calls == []
    torch.autograd.grad(y, [L["weight"]], dy)
    assert calls == [1]


@needs_native
@pytest.mark.parametrize("kind", ["svd_index", "svd_rows"])
@pytest.mark.parametrize("si", range(len(SHAPES)))
@pytest.mark.parametrize("strategy", ["factorised", "factorised-gram", "chunked-gram"])
def test_factorised_gram_route_frozen_weight(kind, si, strategy, monkeypatch):
    """With a frozen weight (the optimisation method) the factorised strategy takes its Gram
    demodulation route (r-space only); gradients to x, styles, t, coeffs, bias, noise strength.
    "chunked-gram": the Gram tensor too large to cache (a tiny limit here), recomputed in
    chunks of one or two input channels in forward and backward (the 512-channel route)."""
    if strategy == "chunked-gram":
        smc = sys.modules["navcuda.ops.shifted_modconv.gram"]
        rank = min(SHAPES[si][2], SHAPES[si][1] * SHAPES[si][5] ** 2)
        monkeypatch.setattr(smc, "GRAM_MAX_ELEMENTS", max(1, 2 * rank * rank - 1))
        strategy = "factorised"
    shape = SHAPES[si]
    _, names, leaves = _make(kind, shape, torch.float64, seed=20 + si)
    names = [n for n in names if n != "weight"]
    La, Lb = leaves(torch.float64), leaves(torch.float64)
    for L in (La, Lb):
        L["weight"] = L["weight"].detach()
    y_ref, g_ref = _values_and_grads(ref_shifted_modconv, kind, La, names, shape, True, 0.9)
    y, g = _values_and_grads(shifted_modconv, kind, Lb, names, shape, True, 0.9,
                             strategy=strategy, impl="native")  # fmt: skip
    torch.testing.assert_close(y, y_ref, rtol=F64_TOL, atol=F64_TOL)
    for n in names:
        torch.testing.assert_close(g[n], g_ref[n], rtol=F64_TOL, atol=F64_TOL, msg=n)


def test_caches_do_not_serve_a_new_tensor_at_a_dead_ones_address(monkeypatch):
    """The Gram and SVD-check caches key on the tensor objects, not on their addresses: a new
    tensor over the same memory (what the CUDA caching allocator does with a freed block of the
    same size; here two tensors over one numpy buffer) gets its own results."""
    gram = sys.modules["navcuda.ops.shifted_modconv.gram"]
    factorised = sys.modules["navcuda.ops.shifted_modconv.factorised"]
    gen = torch.Generator().manual_seed(3)
    buf = torch.randn(18, 4, generator=gen, dtype=torch.float64).numpy()
    u1 = torch.from_numpy(buf)
    p1 = gram._gram_tensor(u1, 2)
    buf[:] = 2.0 * buf  # the memory now holds another factor; u1 is dropped
    del u1
    u2 = torch.from_numpy(buf)
    assert u2._version == 0
    torch.testing.assert_close(gram._gram_tensor(u2, 2), 4.0 * p1)

    weight = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    flat = weight.permute(2, 3, 1, 0).reshape(18, 3)  # [kh*kw*in, out], navcuda.shift order
    u, sv, vh = (t.contiguous() for t in torch.linalg.svd(flat, full_matrices=False))
    wbuf = weight.clone().numpy()
    shift = SVDShift(u, sv, vh, torch.ones(1), torch.ones(1, 3))
    assert factorised._svd_matches_weight(torch.from_numpy(wbuf), shift)
    wbuf[:] = 1.5 * wbuf
    assert not factorised._svd_matches_weight(torch.from_numpy(wbuf), shift)
    # A fresh view of the same parameter at every call (StyledConv passes conv.weight[0]) hits.
    param = torch.nn.Parameter(weight.unsqueeze(0).clone())
    calls = []
    real = factorised.unflatten_kernel
    monkeypatch.setattr(factorised, "unflatten_kernel", lambda *a: calls.append(1) or real(*a))
    assert all(factorised._svd_matches_weight(param[0], shift) for _ in range(3))
    assert len(calls) == 1


def test_factorised_gram_route_refuses_weight_gradient():
    _, _, leaves = _make("svd_rows", SHAPES[0], torch.float64)
    L = leaves(torch.float64)
    with pytest.raises(ValueError, match="no gradient to weight"):
        _run(shifted_modconv, "svd_rows", L, SHAPES[0], True, None, strategy="factorised-gram")


@needs_native
@pytest.mark.parametrize("kind", SHIFT_KINDS)
@pytest.mark.parametrize("si", [1, 2])
@pytest.mark.usefixtures("cpu_isa")
def test_strategies_float32_within_tolerance(kind, si):
    shape = SHAPES[si]
    _, names, leaves = _make(kind, shape, torch.float32, seed=10 + si)
    L64 = leaves(torch.float64)
    y_ref, g_ref = _values_and_grads(ref_shifted_modconv, kind, L64, names, shape, True, 1.0)
    for strategy in SUPPORTED[kind]:
        L32 = leaves(torch.float32)
        y, g = _values_and_grads(shifted_modconv, kind, L32, names, shape, True, 1.0,
                                 strategy=strategy, impl="native")  # fmt: skip
        assert y.dtype == torch.float32
        err = float((y.detach().double() - y_ref.detach()).abs().max() / y_ref.detach().abs().max())
        assert err <= F32_REL_TOL, (strategy, "value", err)
        for n in names:
            ref = g_ref[n]
            err = float((g[n].double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
            assert err <= F32_REL_TOL, (strategy, n, err)


@needs_native
def test_auto_strategy_matches_documented_rule():
    _, _, leaves = _make("svd_index", SHAPES[1], torch.float64)
    L = leaves(torch.float64)
    w = L["weight"]
    assert choose_strategy(w, None) == "shared"
    assert choose_strategy(w, SharedShift(torch.zeros_like(w))) == "shared"
    assert choose_strategy(w, PerSampleShift(torch.zeros(3, *w.shape))) == "grouped"
    sp = SplitShift(torch.zeros(2, *w.shape), torch.ones(3), torch.zeros(3, dtype=torch.int64))
    assert choose_strategy(w, sp) == "split"
    # Off the CPU (measured on an H200) a SplitShift runs grouped; "meta" stands in for CUDA.
    assert choose_strategy(torch.zeros(w.shape, device="meta"), sp) == "grouped"
    svd = _shift("svd_index", L)
    assert choose_strategy(w, svd) == "factorised"
    # A weight that is not U diag(s) Vh: auto falls back to grouped, explicit factorised raises.
    w2 = (w * 1.01).detach()
    assert choose_strategy(w2, svd) == "grouped"
    y = shifted_modconv(L["x"], w2, L["styles"], svd)
    torch.testing.assert_close(y, ref_shifted_modconv(L["x"], w2, L["styles"], svd))
    with pytest.raises(ValueError, match="factorised"):
        shifted_modconv(L["x"], w2, L["styles"], svd, strategy="factorised")


# ------------------------------------------------------------------------- fused pieces


def _demod_inputs(batch, n_out, n_in, n0, n_dir, dtype, with_t, with_index, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, n_in, generator=g, dtype=dtype)
    q0 = torch.rand(n0, n_out, n_in, generator=g, dtype=dtype) + 0.1
    q1 = q2 = t = index = None
    if with_t:
        q1 = torch.randn(n_dir, n_out, n_in, generator=g, dtype=dtype) * 0.1
        q2 = torch.rand(n_dir, n_out, n_in, generator=g, dtype=dtype) * 0.1
        t = torch.randn(batch, generator=g, dtype=dtype)
        if with_index:
            index = torch.randint(0, n_dir, (batch,), generator=g)
    return s, q0, q1, q2, t, index


DEMOD_CASES = [
    # batch, out, in, n0, n_dir, with_t, with_index
    (3, 4, 5, 1, 0, False, False),
    (2, 3, 7, 2, 0, False, False),
    (4, 5, 130, 1, 3, True, True),  # more input channels than one tile (128)
    (3, 2, 6, 1, 3, True, False),
    (1, 1, 1, 1, 1, True, True),
]


@needs_native
@pytest.mark.parametrize("case", DEMOD_CASES)
@pytest.mark.usefixtures("cpu_isa")
def test_demod_native_gradcheck(case):
    batch, n_out, n_in, n0, n_dir, with_t, with_index = case
    n_dir = n_dir if not (with_t and not with_index) else batch
    args = _demod_inputs(batch, n_out, n_in, n0, n_dir, torch.float64, with_t, with_index)
    diff = [a.requires_grad_(True) if a is not None and a.is_floating_point() else a for a in args]

    def fn(*a):
        return demod(*a, scale2=0.3, impl="native")

    torch.testing.assert_close(fn(*diff), ref_demod(*diff, scale2=0.3), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, diff, eps=1e-6, atol=1e-8)


EPI_CASES = [
    # B, C, H, W, y1, dcoef, noise, bias, act, clamp
    (2, 3, 4, 5, True, True, "batch", True, "lrelu", 0.7),
    (1, 4, 3, 3, False, True, "shared", False, "lrelu", None),
    (3, 2, 5, 2, True, False, None, True, "linear", None),
    (2, 5, 1, 7, False, False, "batch", True, "linear", 0.5),
]


# An extra case wider than one channel tile of the channels-last CUDA gradient (32 channels).
EPI_CASES_CL = [*EPI_CASES, (2, 37, 3, 4, True, True, "batch", True, "lrelu", None)]
LAYOUTS = ["nchw", "channels_last"]


def _epi_inputs(case, dtype, seed=0, layout="nchw"):
    b, c, h, w, y1, dc, noise, bias, act, clamp = case
    g = torch.Generator().manual_seed(seed)

    def rnd(*sz):
        return torch.randn(*sz, generator=g, dtype=dtype)

    def image():
        x = rnd(b, c, h, w)
        return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x

    args = [image(), image() if y1 else None, rnd(b) if y1 else None,
            rnd(b, c).abs() + 0.5 if dc else None,
            rnd(b if noise == "batch" else 1, 1, h, w) if noise else None,
            rnd(1) if noise else None, rnd(c) if bias else None]  # fmt: skip
    if layout == "channels_last":
        assert _native.is_channels_last(args[0])
    return args, dict(act=act, clamp=clamp)


def _assert_layout(y: torch.Tensor, layout: str) -> None:
    if layout == "channels_last":
        assert _native.is_channels_last(y)
    else:
        assert y.is_contiguous()


@needs_native
@pytest.mark.parametrize("case", EPI_CASES_CL)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.usefixtures("cpu_isa")
def test_epilogue_native_gradcheck(case, layout):
    args, kw = _epi_inputs(case, torch.float64, layout=layout)
    diff = [a.requires_grad_(True) if a is not None else None for a in args]

    def fn(*a):
        return epilogue(*a, **kw, impl="native")

    y = fn(*diff)
    _assert_layout(y, layout)
    torch.testing.assert_close(y, ref_epilogue(*diff, **kw), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, diff, eps=1e-6, atol=1e-8)


@needs_native
@pytest.mark.parametrize("case", EPI_CASES_CL)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.usefixtures("cpu_isa")
def test_epilogue_native_float32_matches_ref(case, layout):
    # float32: per-element math in the same order as the reference; the per-channel sums
    # (bias, dcoef, t, noise strength gradients) are accumulated in a different order
    # (NCHW: one plane; channels-last: chunks of 256 pixels), so ~sqrt(HW) eps relative.
    args, kw = _epi_inputs(case, torch.float32, seed=3, layout=layout)
    a1 = [None if a is None else a.clone().requires_grad_(True) for a in args]
    a2 = [None if a is None else a.clone().requires_grad_(True) for a in args]
    y1 = epilogue(*a1, **kw, impl="native")
    y2 = ref_epilogue(*a2, **kw)
    _assert_layout(y1, layout)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    dy = torch.randn(y1.shape, generator=torch.Generator().manual_seed(1))
    y1.backward(dy)
    y2.backward(dy)
    _assert_layout(a1[0].grad, layout)
    for p, q in zip(a1, a2, strict=True):
        if p is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("case", [EPI_CASES[0], EPI_CASES[2]])  # lrelu + clamp; linear
@pytest.mark.parametrize("layout", LAYOUTS)
def test_epilogue_gradient_arriving_in_the_other_layout(case, layout):
    """The output gradient may come in another layout than the forward's (an NCHW image
    gradient into a channels-last synthesis, or the reverse): the native backward reads it in
    the forward's layout (also when it keeps no output: linear, no clamp) and the gradients
    keep the forward's layout and match the reference."""
    args, kw = _epi_inputs(case, torch.float64, seed=8, layout=layout)
    other = torch.contiguous_format if layout == "channels_last" else torch.channels_last
    grads = {}
    for impl in ("native", "ref"):
        leaves = [None if a is None else a.clone().requires_grad_(True) for a in args]
        y = epilogue(*leaves, **kw, impl=impl) if impl == "native" else ref_epilogue(*leaves, **kw)
        dy = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
        y.backward(dy.contiguous(memory_format=other))
        grads[impl] = [a.grad for a in leaves if a is not None]
    _assert_layout(grads["native"][0], layout)
    for got, want in zip(grads["native"], grads["ref"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["native", "ref", "auto"])
def test_identity_epilogue_is_no_pass(impl):
    """Linear, gain 1, nothing to add, scale or clamp (every layer of a tangent pass without
    demodulation): the input itself comes back, no copy in the forward or the backward; any
    other piece makes it run."""
    y0 = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert epilogue(y0, act="linear", impl=impl) is y0
    assert epilogue(y0, act="linear", gain=2.0, impl="ref") is not y0
    bias = torch.zeros(3)
    torch.testing.assert_close(epilogue(y0, bias=bias, act="linear", impl="ref"), y0)


def test_data_ptr_refuses_a_layout_the_kernel_does_not_read():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="not contiguous"):
        _native.data_ptr(x)  # an NCHW kernel
    assert _native.data_ptr(x, torch.channels_last) == x.data_ptr()
    with pytest.raises(ValueError, match="not contiguous"):
        _native.data_ptr(x.contiguous(), torch.channels_last)


@needs_native
def test_epilogue_auto_runs_channels_last_natively(monkeypatch):
    """The native epilogue reads channels-last too: ``impl="auto"`` keeps it native for such
    an input (no reference fallback, no warning) and the output keeps the layout."""
    monkeypatch.delenv("NAVCUDA_IMPL", raising=False)
    args, kw = _epi_inputs(EPI_CASES[0], torch.float32, layout="channels_last")
    assert _native.resolve_impl("modconv_epilogue", "auto", args[0], by_layout=False) == "native"
    # The profiler is entered outside the "no warning" block: some torch versions (2.11) warn
    # when it starts, which says nothing about the epilogue.
    with torch.profiler.profile() as prof:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = epilogue(*args, **kw)
    assert any(e.name == "navcuda::modconv_epilogue" for e in prof.events())
    _assert_layout(y, "channels_last")
    torch.testing.assert_close(y, ref_epilogue(*args, **kw), rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("case", EPI_CASES[:2])
def test_epilogue_native_frozen_dcoef_keeps_no_y0(case):
    """A dcoef that needs no gradient (every frozen layer of a shifted synthesis): the native
    epilogue keeps for the backward only the packed mask of its output (not y0, not the
    output), and the other gradients are unchanged."""
    args, kw = _epi_inputs(case, torch.float64, seed=5)
    grads = {}
    for impl in ("native", "ref"):
        leaves = [None if a is None else a.clone() for a in args]
        leaves[0].requires_grad_(True)
        saved = []

        def pack(t, saved=saved):
            saved.append((t.data_ptr(), t.dtype, tuple(t.shape)))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = (
                epilogue(*leaves, **kw, impl=impl)
                if impl == "native"
                else ref_epilogue(*leaves, **kw)
            )
        if impl == "native":
            ptrs = [ptr for ptr, _, _ in saved]
            assert out.data_ptr() not in ptrs and leaves[0].data_ptr() not in ptrs
            b, c, h, w = out.shape  # NCHW: one row of packed codes per plane, 2 bits with a clamp
            bits = 1 if kw["clamp"] is None else 2
            row = (h * w * bits + 7) // 8
            assert (torch.uint8, (b * c, row)) in [(dt, sh) for _, dt, sh in saved]
        out.backward(torch.ones_like(out))
        grads[impl] = leaves[0].grad
    torch.testing.assert_close(grads["native"], grads["ref"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- CUDA bodies on the CPU


def _ptr(t):
    """A tensor as the native entry points take a buffer, (address, bytes), in any layout."""
    return None if t is None else (t.data_ptr(), t.numel() * t.element_size())


@needs_native
@pytest.mark.parametrize("case", DEMOD_CASES)
@pytest.mark.parametrize("block", [1, 8, 32])
@pytest.mark.usefixtures("index_width")
def test_demod_cuda_bodies_emulated(case, block, emu):
    batch, n_out, n_in, n0, n_dir, with_t, with_index = case
    n_dir = n_dir if not (with_t and not with_index) else batch
    dtype = torch.float64
    s, q0, q1, q2, t, index = _demod_inputs(batch, n_out, n_in, n0, n_dir, dtype, with_t,
                                            with_index, seed=7)  # fmt: skip
    code = _native.dtype_code(dtype)
    dcoef = torch.empty(batch, n_out, dtype=dtype)
    emu.modconv_demod_emu(_ptr(s), _ptr(q0), _ptr(q1), _ptr(q2), _ptr(t), _ptr(index),
                          _ptr(dcoef), batch, n_out, n_in, n0, n_dir, code, 0.3, block)  # fmt: skip
    leaves = [None if a is None else a.clone().requires_grad_(True) for a in (s, q0, q1, q2, t)]
    ref = ref_demod(*leaves, index, scale2=0.3)
    torch.testing.assert_close(dcoef, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(batch, n_out, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ref.backward(g)
    parts = (n_in + block - 1) // block
    dn = torch.empty(batch, n_out, dtype=dtype)
    ds = torch.empty_like(s)
    dt = torch.zeros(batch, parts, dtype=dtype) if with_t else None
    dq0 = torch.empty_like(q0)
    dq1 = torch.empty_like(q1) if with_t else None
    dq2 = torch.empty_like(q2) if with_t else None
    emu.modconv_demod_grad_emu(_ptr(g), _ptr(dcoef), _ptr(s), _ptr(q0), _ptr(q1), _ptr(q2),
                               _ptr(t), _ptr(index), _ptr(dn), _ptr(ds), _ptr(dt), _ptr(dq0),
                               _ptr(dq1), _ptr(dq2), batch, n_out, n_in, n0, n_dir, code, 0.3,
                               3, block)  # fmt: skip
    outs = [ds, dq0, dq1, dq2, None if dt is None else dt.sum(1)]
    for got, leaf in zip(outs, leaves, strict=True):
        if leaf is not None:
            torch.testing.assert_close(got, leaf.grad, rtol=1e-11, atol=1e-12)


@needs_native
@pytest.mark.parametrize("case", EPI_CASES_CL)
@pytest.mark.parametrize(
    "layout,grid,block",
    # channels-last gradient blocks hold >= one channel tile (32 threads), a power of two.
    [("nchw", 1, 1), ("nchw", 2, 8), ("nchw", 5, 32), ("channels_last", 1, 32),
     ("channels_last", 3, 64), ("channels_last", 2, 256)],
)  # fmt: skip
@pytest.mark.usefixtures("index_width")
def test_epilogue_cuda_bodies_emulated(case, layout, grid, block, emu):
    dtype = torch.float64
    args, kw = _epi_inputs(case, dtype, seed=4, layout=layout)
    cl = int(layout == "channels_last")
    y0, y1, t, dcoef, noise, ns, bias = args
    b, c, h, w = y0.shape
    act_code = 0 if kw["act"] == "linear" else 1
    gain = 1.0 if kw["act"] == "linear" else math.sqrt(2)
    clamp = -1.0 if kw["clamp"] is None else kw["clamp"]
    bstride = 0 if noise is None or noise.shape[0] == 1 else h * w
    code = _native.dtype_code(dtype)
    out = torch.empty_like(y0)
    # packed codes: one row per NCHW plane or channels-last pixel, 1 bit per code (2 with a clamp)
    rows, inner = (b * h * w, c) if cl else (b * c, h * w)
    bits = 2 if clamp >= 0 else 1
    mask = torch.full((rows, (inner * bits + 7) // 8), 0xFF, dtype=torch.uint8)  # padding: cleared
    emu.modconv_epilogue_emu(*map(_ptr, (y0, y1, t, dcoef, noise)), bstride, _ptr(ns), _ptr(bias),
                             _ptr(out), _ptr(mask), b, c, h * w, cl, code, act_code, 0.2, gain,
                             clamp, grid, block)  # fmt: skip
    leaves = [None if a is None else a.clone().requires_grad_(True) for a in args]
    ref = ref_epilogue(*leaves, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # the mask: bit 0 = positive slope (always, linear), bit 1 = inside the clamp (or none)
    pos = (out * gain > 0) if act_code == 1 else torch.ones_like(out, dtype=torch.bool)
    inside = (out.abs() < clamp) if clamp >= 0 else torch.ones_like(out, dtype=torch.bool)
    want = pos.to(torch.uint8) + (2 * inside.to(torch.uint8) if bits == 2 else 0)
    want = want.permute(0, 2, 3, 1).reshape(rows, inner) if cl else want.reshape(rows, inner)
    shifts = torch.arange(8 // bits, dtype=torch.uint8) * bits
    codes = ((mask[:, :, None] >> shifts) & (2**bits - 1)).reshape(rows, -1)
    assert torch.equal(codes[:, :inner], want)
    assert not codes[:, inner:].any()  # the last byte of a row is padded with zeros
    dout = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(9))
    dout = dout.contiguous(memory_format=torch.channels_last) if cl else dout  # as out
    ref.backward(dout)
    dy0, dy1, dz = torch.empty_like(y0), torch.empty_like(y0), torch.empty_like(y0)
    ddcoef, p_dz, p_dzy1, p_dzn = (torch.empty(b, c, dtype=dtype) for _ in range(4))
    emu.modconv_epilogue_grad_emu(
        *map(_ptr, (dout, mask, y0, y1, t, dcoef, noise)), bstride, _ptr(dy0),
        _ptr(dy1) if y1 is not None else None, _ptr(dz),
        _ptr(ddcoef) if dcoef is not None else None, _ptr(p_dz),
        _ptr(p_dzy1) if y1 is not None else None, _ptr(p_dzn) if noise is not None else None,
        b, c, h * w, cl, code, act_code, 0.2, gain, clamp, grid, block,
    )  # fmt: skip
    tol = dict(rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(dy0, leaves[0].grad, **tol)
    d = dcoef if dcoef is not None else torch.ones(b, c, dtype=dtype)
    torch.testing.assert_close(dy0, dz * d[:, :, None, None], **tol)
    if y1 is not None:
        torch.testing.assert_close(dy1, leaves[1].grad, **tol)
        torch.testing.assert_close((p_dzy1 * d).sum(1), leaves[2].grad, **tol)
    if dcoef is not None:
        torch.testing.assert_close(ddcoef, leaves[3].grad, **tol)
    if noise is not None:
        torch.testing.assert_close(p_dzn.sum().reshape(1), leaves[5].grad, **tol)
    if bias is not None:
        torch.testing.assert_close(p_dz.sum(0), leaves[6].grad, **tol)
    # Without the dcoef gradient y0 is never read: a null y0 gives the same other gradients.
    dy0_b, dy1_b = torch.empty_like(y0), torch.empty_like(y0)
    p_dz_b = torch.empty(b, c, dtype=dtype)
    emu.modconv_epilogue_grad_emu(
        *map(_ptr, (dout, mask)), None, *map(_ptr, (y1, t, dcoef, noise)), bstride, _ptr(dy0_b),
        _ptr(dy1_b) if y1 is not None else None, None, None, _ptr(p_dz_b), None, None,
        b, c, h * w, cl, code, act_code, 0.2, gain, clamp, grid, block,
    )  # fmt: skip
    torch.testing.assert_close(dy0_b, dy0, rtol=0, atol=0)
    torch.testing.assert_close(p_dz_b, p_dz, rtol=0, atol=0)
    if y1 is not None:
        torch.testing.assert_close(dy1_b, dy1, rtol=0, atol=0)


# ------------------------------------------------------------------------- argument errors


def _good(dtype=torch.float32):
    _, _, leaves = _make("split", SHAPES[1], dtype)
    return leaves(dtype)


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda L: L.update(styles=L["styles"][:, :-1]), ValueError, "styles must have shape"),
        (lambda L: L.update(weight=L["weight"][:, :-1]), ValueError, "input channels"),
        (lambda L: L.update(index=L["index"] + 5), ValueError, r"index values must lie in"),
        (lambda L: L.update(index=L["index"].float()), TypeError, "index must have dtype"),
        (lambda L: L.update(t=L["t"][:-1]), ValueError, "shift.t must have shape"),
        (lambda L: L.update(bias=L["bias"].double()), TypeError, "bias has dtype"),
        (lambda L: L.update(styles=L["styles"].to("meta")), ValueError, "styles is on meta"),
        (lambda L: L.update(noise=L["noise"][:, :, :-1]), ValueError, "noise must have shape"),
        (lambda L: L.update(delta=L["delta"][:, :, :-1]), ValueError, "delta must have shape"),
    ],
)
def test_bad_inputs_raise_before_kernels(mutate, exc, match, monkeypatch):
    L = _good()
    mutate(L)
    calls = []
    monkeypatch.setattr(_native, "run_kernel", lambda *a, **k: calls.append(a))
    with pytest.raises(exc, match=match):
        _run(shifted_modconv, "split", L, SHAPES[1], True, None)
    assert not calls


def _set(args, i, value):
    args[i] = value


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: _set(a, 5, a[5] + 3), ValueError, r"demod: index values must lie in \[0, 3\)"),
        (lambda a: _set(a, 5, a[5].float()), TypeError, "demod: index must have dtype"),
        (lambda a: _set(a, 5, a[5].to("meta")), ValueError, "index is on meta but s is on cpu"),
        (lambda a: _set(a, 2, a[2].to("meta")), ValueError, "demod: q1 is on meta"),
        (lambda a: _set(a, 3, a[3].double()), TypeError, "demod: q2 has dtype"),
        (lambda a: _set(a, 1, a[1][:, :, :-1]), ValueError, "demod: q0 must be"),
        (lambda a: _set(a, 3, a[3][:, :-1]), ValueError, "demod: q2 must have shape"),
        (lambda a: _set(a, 4, None), ValueError, "q1, q2 and t go together"),
        (lambda a: _set(a, 4, a[4][:-1]), ValueError, "demod: t must have shape"),
    ],
)
def test_demod_bad_inputs_raise_before_kernels(mutate, exc, match, monkeypatch):
    """The public demod() checks every tensor (a wrong device, dtype or index would otherwise
    hand a kernel a foreign pointer or read past a buffer)."""
    args = list(_demod_inputs(4, 5, 6, 1, 3, torch.float32, True, True))
    mutate(args)
    calls = []
    monkeypatch.setattr(_native, "run_kernel", lambda *a, **k: calls.append(a))
    with pytest.raises(exc, match=match):
        demod(*args, scale2=1.0, impl="native")
    assert not calls


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda a: _set(a, 6, a[6].double()), TypeError, "epilogue: bias has dtype"),
        (lambda a: _set(a, 6, a[6][:-1]), ValueError, "epilogue: bias must have shape"),
        (lambda a: _set(a, 3, a[3].to("meta")), ValueError, "dcoef is on meta but y0 is on cpu"),
        (lambda a: _set(a, 3, a[3][:, :-1]), ValueError, "epilogue: dcoef must have shape"),
        (lambda a: _set(a, 4, a[4][..., :-1]), ValueError, "epilogue: noise must be"),
        (lambda a: _set(a, 5, None), ValueError, "noise and ns"),
        (lambda a: _set(a, 2, None), ValueError, "y1 and t go together"),
        (lambda a: _set(a, 1, a[1][:, :-1]), ValueError, "epilogue: y1 must have shape"),
        (lambda a: _set(a, 0, a[0][0]), ValueError, "epilogue: y0 must have 4 dimension"),
    ],
)
def test_epilogue_bad_inputs_raise_before_kernels(mutate, exc, match, monkeypatch):
    args, kw = _epi_inputs(EPI_CASES[0], torch.float32)
    mutate(args)
    calls = []
    monkeypatch.setattr(_native, "run_kernel", lambda *a, **k: calls.append(a))
    with pytest.raises(exc, match=match):
        epilogue(*args, **kw, impl="native")
    assert not calls
    good, _ = _epi_inputs(EPI_CASES[0], torch.float32)
    with pytest.raises(ValueError, match="act must be one of"):
        epilogue(*good, act="relu")
    with pytest.raises(ValueError, match="clamp must be None or a finite"):
        epilogue(*good, clamp=float("nan"))


def test_bad_strategy_and_up():
    L = _good()
    with pytest.raises(ValueError, match="does not support"):
        _run(shifted_modconv, "split", L, SHAPES[1], True, None, strategy="shared")
    with pytest.raises(ValueError, match="strategy must be"):
        _run(shifted_modconv, "split", L, SHAPES[1], True, None, strategy="fast")
    with pytest.raises(TypeError, match="shift must be"):
        shifted_modconv(L["x"], L["weight"], L["styles"], shift=L["delta"])
    with pytest.raises(ValueError, match="up=2 needs blur_filter"):
        shifted_modconv(L["x"], L["weight"], L["styles"], up=2)


def test_zero_svd_coefficients_rejected():
    _, _, leaves = _make("svd_rows", SHAPES[0], torch.float64)
    L = leaves(torch.float64)
    L["coeffs"] = torch.zeros_like(L["coeffs"])
    with pytest.raises(ValueError, match="not all zero"):
        _run(shifted_modconv, "svd_rows", L, SHAPES[0], True, None)


# ------------------------------------------------------------------------- GPU


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_cuda_strategies_match_oracle(kind, cuda_device):
    shape = SHAPES[1]
    _, names, leaves = _make(kind, shape, torch.float64, seed=3)

    def to_cuda(L):
        out = {}
        for n, v in L.items():
            if v is None:
                out[n] = None
            else:
                c = v.detach().to(cuda_device)
                out[n] = c.requires_grad_(True) if n in names else c
        return out

    L_ref = to_cuda(leaves(torch.float64))
    y_ref, g_ref = _values_and_grads(ref_shifted_modconv, kind, L_ref, names, shape, True, 1.0)
    for strategy in SUPPORTED[kind]:
        L = to_cuda(leaves(torch.float64))
        y, g = _values_and_grads(shifted_modconv, kind, L, names, shape, True, 1.0,
                                 strategy=strategy, impl="native")  # fmt: skip
        torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-9)
        for n in names:
            torch.testing.assert_close(g[n], g_ref[n], rtol=1e-9, atol=1e-9, msg=n)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.usefixtures("index_width")
def test_cuda_epilogue_matches_reference(layout, cuda_device):
    args, kw = _epi_inputs(EPI_CASES_CL[-1], torch.float64, seed=6, layout=layout)
    grads = {}
    for impl in ("native", "ref"):
        leaves = [None if a is None else a.to(cuda_device).requires_grad_(True) for a in args]
        y = epilogue(*leaves, **kw, impl=impl)
        _assert_layout(y, layout)
        y.backward(torch.ones_like(y))
        grads[impl] = [y.detach(), *(a.grad for a in leaves if a is not None)]
    for got, want in zip(grads["native"], grads["ref"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_strategies_constant_is_complete():
    assert set(STRATEGIES) == {"grouped", "shared", "factorised", "split"}
