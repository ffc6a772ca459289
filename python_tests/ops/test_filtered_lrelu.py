"""filtered_lrelu against a naive formulation: explicit zero insertion, padding, and every filter
tap summed as a shifted slice (no convolution op), in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from navcuda.ops.filtered_lrelu import filtered_lrelu, parse_padding

# Tiny convolutions: one intra-op thread (python_tests/conftest.py, one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

# float64 throughout: the op and the oracle sum the same products in a different order
# (convolutions, or a transposed convolution for the upsampling, vs slice sums); differences are
# a few ulps of the ~1e0 values (~1e-15). 1e-12 leaves margin; a wrong tap, pad or gain moves
# values by 1e-2 or more.
TOL = dict(rtol=0, atol=1e-12)


def _convolve_valid(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """True 2-D convolution of every channel with ``f [kh, kw]``, valid outputs only:
    ``out[o] = sum_k f[k] x[o + K - 1 - k]``, as a sum of shifted slices."""
    kh, kw = f.shape
    ho, wo = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = x.new_zeros(x.shape[0], x.shape[1], ho, wo)
    for a in range(kh):
        for c in range(kw):
            i, j = kh - 1 - a, kw - 1 - c
            out = out + f[a, c] * x[:, :, i : i + ho, j : j + wo]
    return out


def _apply_filter(x: torch.Tensor, f: torch.Tensor | None, flip: bool) -> torch.Tensor:
    """A 1-D filter as two 1-D passes (NVlabs' separable route), a 2-D one directly."""
    if f is None:
        return x
    if flip:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        x = _convolve_valid(x, f[None, :])
        return _convolve_valid(x, f[:, None])
    return _convolve_valid(x, f)


def naive(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip=False):
    x0, x1, y0, y1 = padding
    if b is not None:
        x = x + b[None, :, None, None]
    bsz, c, h, w = x.shape
    z = x.new_zeros(bsz, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    # Pad with zeros, or crop (negative pads), per side.
    z = F.pad(z, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    z = z[:, :, max(-y0, 0) : z.shape[2] - max(-y1, 0), max(-x0, 0) : z.shape[3] - max(-x1, 0)]
    z = _apply_filter(z, fu, flip) * up**2
    z = torch.where(z >= 0, z, z * slope) * gain
    if clamp is not None:
        z = z.clamp(-clamp, clamp)
    z = _apply_filter(z, fd, flip)
    return z[:, :, ::down, ::down]


def _lowpass(taps: int, g: torch.Generator) -> torch.Tensor:
    f = torch.rand(taps, generator=g, dtype=torch.float64) + 0.5
    return f / f.sum()


# (C, H, W, fu taps or (h, w), fd, up, down, padding, gain, slope, clamp, flip): odd sizes,
# batch 1, a StyleGAN3-T layer (up 2, 12-tap filters, pads (9, 8)), a StyleGAN3-R layer (2-D
# radial-like down filter), a critically sampled one, the toRGB layer (no filters, slope 1),
# up 4, asymmetric and per-axis pads, cropping pads, flipped non-symmetric filters.
CASES = [
    (3, 9, 9, 12, 12, 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, None, False),
    (2, 7, 7, 12, (12, 12), 2, 2, [9, 8, 9, 8], math.sqrt(2), 0.2, 0.7, False),
    (3, 7, 9, 8, 4, 4, 2, [5, 4, 3, 6], math.sqrt(2), 0.2, None, True),
    (1, 5, 5, None, None, 1, 1, 0, 1.0, 1.0, 0.5, False),
    (2, 11, 7, 6, 6, 2, 2, [-1, 2], 1.3, 0.1, 1.0, True),
    (3, 9, 9, (5, 3), 5, 2, 1, [1, -2, 0, 3], math.sqrt(2), 0.2, None, True),
    (2, 8, 6, 4, None, 2, 1, 3, 2.0, 0.0, None, False),
]


def _case(case, seed=0):
    c, h, w, fu, fd, up, down, pad, gain, slope, clamp, flip = case
    g = torch.Generator().manual_seed(seed)

    def filt(spec):
        if spec is None:
            return None
        if isinstance(spec, tuple):  # a non-separable 2-D filter
            return torch.randn(*spec, generator=g, dtype=torch.float64) / math.prod(spec) + 0.05
        return _lowpass(spec, g)

    x = torch.randn(1, c, h, w, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64) * 0.3
    kw = dict(up=up, down=down, padding=pad, gain=gain, slope=slope, clamp=clamp, flip_filter=flip)
    return x, filt(fu), filt(fd), b, kw


@pytest.mark.parametrize("case", CASES)
def test_matches_naive_formulation(case):
    x, fu, fd, b, kw = _case(case)
    got = filtered_lrelu(x, fu, fd, b, **kw)
    ref = naive(
        x, fu, fd, b, kw["up"], kw["down"], parse_padding(kw["padding"]), kw["gain"],
        kw["slope"], kw["clamp"], kw["flip_filter"],
    )  # fmt: skip
    assert got.shape == ref.shape
    fu_w = 1 if fu is None else fu.shape[-1]
    fd_w = 1 if fd is None else fd.shape[-1]
    x0, x1, _, _ = parse_padding(kw["padding"])
    up, down = kw["up"], kw["down"]
    assert got.shape[3] == (x.shape[3] * up + x0 + x1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down
    torch.testing.assert_close(got, ref, **TOL)
    if kw["clamp"] is not None:
        assert ref.abs().max() > 0.5 * kw["clamp"]  # values near the clamp: it matters


def test_stylegan3_layer_shape_and_float32():
    # StyleGAN3-T's L0 at 1024: conv output 38x38, up 2, pads (9, 8), 12-tap filters, down 2 ->
    # 36x36 (the layer's out_size).
    x, fu, fd, b, kw = _case(CASES[0])
    x = torch.randn(1, 3, 38, 38, dtype=torch.float64)
    got = filtered_lrelu(x, fu, fd, b, **kw)
    assert got.shape == (1, 3, 36, 36)
    f32 = filtered_lrelu(x.float(), fu.float(), fd.float(), b.float(), **kw)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), got, rtol=0, atol=1e-5)


def test_gradients_double_backward_and_forward_ad():
    c, h = 1, 4
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, c, h, h, generator=g, dtype=torch.float64, requires_grad=True)
    b = (0.1 * torch.randn(c, generator=g, dtype=torch.float64)).requires_grad_()
    fu, fd = _lowpass(4, g), torch.randn(3, 3, generator=g, dtype=torch.float64) / 9 + 0.1

    def fn(x, b):
        return filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[2, 1, 1, 2], clamp=0.8)

    assert torch.autograd.gradcheck(fn, (x, b), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bad_arguments_are_named():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match=r"x must be a floating tensor \[B, C, H, W\]"):
        filtered_lrelu(x[0])
    with pytest.raises(ValueError, match="up must be an integer >= 1"):
        filtered_lrelu(x, up=0)
    with pytest.raises(ValueError, match=r"fu must be None, a 1-D \[taps\]"):
        filtered_lrelu(x, fu=torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match=r"padding must be an int, \[x, y\]"):
        filtered_lrelu(x, padding=[1, 2, 3])
