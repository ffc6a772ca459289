"""The paper's setting at real size, on the CPU: a 1024-px config-f StyleGAN2 (random weights),
exact Hessian-vector products at ``convs.3`` (512 x 512 x 3 x 3) with LPIPS-VGG at 256 px,
within a memory budget. Slow: about two minutes on 2 cores, ~3 GB of memory."""

from __future__ import annotations

import pytest
import torch

from navcuda.hessian import PerceptualHessian
from navcuda.memory_budget import measure_peak, parse_size
from navcuda.models.stylegan2 import Generator, GeneratorConfig

BUDGET = "3GB"


@pytest.mark.slow
def test_1024px_exact_products_within_budget(lpips_vgg):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.rosinality(1024)).eval()
    assert g.layer("convs.3").weight_shape == (512, 512, 3, 3)
    h = PerceptualHessian(g, "convs.3", g.sample(2, 0), lpips_vgg, batch_size=2, resize=256,
                          memory_budget=BUDGET)  # fmt: skip
    m = h.memory
    assert m.per_chunk is not None and m.peak(2) <= parse_size(BUDGET)
    v = torch.randn(2, *h.shape, generator=torch.Generator().manual_seed(0))
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)
    hv, peak, _ = measure_peak(lambda: h.hvp_gn(v), h.device)
    assert h.gn_mode_used == "linearized"
    assert peak <= parse_size(BUDGET) and peak <= 1.25 * m.peak(2), (peak, m.peak(2))
    assert torch.isfinite(hv).all()
    gram = v.flatten(1) @ hv.flatten(1).t()  # <v_i, H v_j>: positive diagonal, symmetric
    assert (gram.diagonal() > 0).all()
    assert abs(gram[0, 1] - gram[1, 0]) <= 1e-3 * gram.diagonal().max()
