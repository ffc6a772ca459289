"""The modulated-convolution reference: grouped and dense forms agree, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from navcuda.ops.modulated_conv2d import ref_modulated_conv2d, ref_modulated_weight
from navcuda.ops.upfirdn2d import make_filter


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demod", [True, False])
@pytest.mark.parametrize("shared_delta", [False, True])
def test_dense_equals_grouped(up, demod, shared_delta):
    g = torch.Generator().manual_seed(up * 10 + demod * 2 + shared_delta)
    x = torch.randn(3, 5, 7, 7, generator=g, dtype=torch.float64)
    w = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64)
    d = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64) if shared_delta else None
    f = make_filter((1, 3, 3, 1), 4.0).double()
    a = ref_modulated_conv2d(x, w, s, d, demod, up, f, grouped=True)
    b = ref_modulated_conv2d(x, w, s, d, demod, up, f, grouped=False)
    assert a.shape == (3, 6, 7 * up, 7 * up)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_demodulated_weights_have_unit_norm():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    s = torch.rand(2, 3, dtype=torch.float64) + 0.5
    wb = ref_modulated_weight(w, s, demodulate=True)
    norms = wb.square().sum(dim=(2, 3, 4)).sqrt()
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-7, atol=0)


def test_per_sample_delta_needs_grouped():
    x, w, s = torch.randn(2, 3, 4, 4), torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="per-sample"):
        ref_modulated_conv2d(x, w, s, torch.randn(2, 4, 3, 3, 3), grouped=False)
    with pytest.raises(ValueError, match="up must be 1 or 2"):
        ref_modulated_conv2d(x, w, s, up=3)
    with pytest.raises(ValueError, match="blur"):
        ref_modulated_conv2d(x, w, s, up=2)
