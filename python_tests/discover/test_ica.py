"""The ``ica`` method: independent components of a layer's image Jacobian."""

from __future__ import annotations

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.ica import _mirror, image_jacobian, independent_components
from navcuda.shift import layer_space

pytestmark = pytest.mark.usefixtures("one_thread")


def _kurtosis(x: torch.Tensor) -> torch.Tensor:
    c = x - x.mean(-1, keepdim=True)
    return c.pow(4).mean(-1) / c.var(-1).square() - 3


def test_independent_components_unmix_planted_sparse_sources():
    """Four sparse sources of different kurtosis, mixed by a random matrix: each unmixing vector
    reads one source alone (a scaled permutation of the mixing), most non-Gaussian first."""
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    lap = torch.distributions.Laplace(0.0, 1.0).sample((n, 3))
    rare = torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) < 0.05)  # kurtosis ~57
    sources = torch.cat([lap, rare[:, None]], 1) * torch.tensor([1.0, 2.0, 0.5, 3.0])
    mixing = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    x = sources.double() @ mixing.T
    w, kurt = independent_components(x, 4, seed=0)
    assert torch.allclose(w.norm(dim=1), torch.ones(4, dtype=torch.float64))
    reads = (w @ mixing).abs()  # row j: how much of each source component j reads
    assert (reads.max(1).values / reads.norm(dim=1)).min() > 0.99
    assert sorted(reads.argmax(1).tolist()) == [0, 1, 2, 3]
    assert int(reads[0].argmax()) == 3  # the rarest source is the most non-Gaussian
    assert (kurt[:-1] >= kurt[1:]).all()
    torch.testing.assert_close(kurt, _kurtosis(w @ x.T), rtol=0.05, atol=0.05)


def test_mirror_reads_pixel_pairs_as_sum_and_difference():
    change = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    out = _mirror(change)
    assert out.shape == (2, 3, 4, 6)
    torch.testing.assert_close(out[..., :3], (change + change.flip(-1))[..., :3])
    torch.testing.assert_close(out[..., 3:], (change - change.flip(-1))[..., :3])
    symmetric = change + change.flip(-1)  # both sides alike: the differences vanish
    assert _mirror(symmetric)[..., 3:].abs().max() < 1e-6
    assert _mirror(torch.zeros(1, 1, 2, 5)).shape[-1] == 4  # the odd middle column is dropped


def test_ica_directions_are_sparser_than_singular_ones(tiny_generator):
    """The method's own objective, checked from outside: the image changes of its first direction
    are more non-Gaussian than those of any single singular direction (recomputed by rendering,
    at the amplitudes of the calibrated set, on the method's latents)."""
    g = tiny_generator
    kw = dict(components=8, n_latents=6, resize=None, target_rms=0.05, progress=False)
    ds = discover(g, 3, method="ica", k=3, **kw)
    rank = layer_space(g, 3).rank
    assert ds.basis == "svd" and ds.method == "ica" and len(ds) == 3
    assert ds.coefficients.shape == (3, rank)
    torch.testing.assert_close(ds.coefficients.norm(dim=1), torch.ones(3))
    assert (ds.values[:-1] >= ds.values[1:]).all() and torch.isfinite(ds.amplitudes).all()
    assert ds.hparams["components"] == 8 and ds.hparams["mirror"] is True
    again = discover(g, 3, method="ica", k=3, **kw)
    torch.testing.assert_close(again.coefficients, ds.coefficients, rtol=0, atol=0)

    inputs = g.sample(6, 0)
    svd = discover(g, 3, method="svd", k=rank, target_rms=0.05)
    ica_kurt = _kurtosis(image_jacobian(g, [ds[0]], inputs, None, True, progress=False))
    svd_kurt = _kurtosis(image_jacobian(g, list(svd), inputs, None, True, progress=False))
    assert float(ica_kurt[0]) > float(svd_kurt.max())


def test_ica_refuses_more_directions_than_components(tiny_generator):
    with pytest.raises(ValueError, match="k <= components"):
        discover(tiny_generator, 3, method="ica", k=5, components=4, n_latents=2, progress=False)
