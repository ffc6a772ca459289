"""Hybrid method: optimisation confined to the span of Hessian eigenvectors; basis sources and
resuming in the same span."""

from __future__ import annotations

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.hybrid import HYBRID_DEFAULTS
from navcuda.metrics.perceptual import PixelMSE

_OPT = dict(k=2, steps=3, reconstructor_size=32, batch_size=2, progress=False, calibrate=False)
_SPEC = dict(metric=PixelMSE(), n_latents=3, resize=None, max_iters=30, tol=1e-3)


def _in_span(ds, basis):
    """Relative distance of every direction from the span of the basis rows."""
    b = basis.flatten(1).double()
    q = torch.linalg.qr(b.t())[0]
    x = ds.coefficients.flatten(1).double()
    x = x / x.norm(dim=1, keepdim=True)
    return (x - (x @ q) @ q.t()).norm(dim=1)


def test_hybrid_directions_lie_in_the_eigenvector_span(tiny_generator):
    spec = discover(tiny_generator, "convs.3", method="spectrum", k=3, calibrate=False,
                    progress=False, **_SPEC)  # fmt: skip
    ds = discover(tiny_generator, "convs.3", method="hybrid", basis_size=3, eigenvectors=spec,
                  **_OPT)  # fmt: skip
    assert ds.method == "hybrid" and ds.basis == "weight" and len(ds) == 2
    basis = torch.stack([d.delta(tiny_generator) for d in spec])
    assert float(_in_span(ds, basis).max()) < 1e-5
    assert ds.extra["basis"] == {"size": 3, "source": "spectrum", "metric": "pixel"}
    assert ds.hparams["batch_size"] == 2  # given
    assert ds.hparams["t_max_rel"] == pytest.approx(80 / 1536)  # the paper's hybrid T, scaled
    # the paper's hybrid defaults apply where nothing is given
    kw = {**_OPT, "steps": 0}
    del kw["batch_size"]
    d0 = discover(tiny_generator, "convs.3", method="hybrid", basis_size=3, eigenvectors=spec, **kw)
    assert d0.hparams["batch_size"] == HYBRID_DEFAULTS["batch_size"] == 16
    assert d0.hparams["t_weight"] == pytest.approx(0.25 * 80)


def test_hybrid_computes_its_basis_and_resumes_in_the_same_span(tiny_generator, tmp_path):
    ckpt = tmp_path / "hybrid.pt"
    first = discover(tiny_generator, "convs.3", method="hybrid", basis_size=2,
                     spectrum_params=_SPEC, checkpoint=ckpt, **_OPT)  # fmt: skip
    assert (tmp_path / "hybrid.pt.basis.nav").is_file() and ckpt.is_file()
    # Resuming must reuse the saved basis: a spectrum run with these params would fail.
    bad = {**_SPEC, "solver": "no-such-solver"}
    again = discover(tiny_generator, "convs.3", method="hybrid", basis_size=2,
                     spectrum_params=bad, checkpoint=ckpt, **{**_OPT, "steps": 4})  # fmt: skip
    assert again.extra["steps"] == 4 and first.extra["steps"] == 3


def test_hybrid_from_official_eigenvector_file(tiny_generator, tmp_path):
    shape = tuple(tiny_generator.convs[3].conv.weight.shape[1:])
    vecs = torch.randn(4, 1, *shape)
    path = tmp_path / "eigenvectors_layer3_tiny.pt"
    torch.save(vecs, path)
    ds = discover(tiny_generator, "convs.3", method="hybrid", basis_size=4, eigenvectors=path,
                  **_OPT)  # fmt: skip
    assert float(_in_span(ds, vecs[:, 0]).max()) < 1e-5
    # renamed: taken to be of the layer being optimised (its shape is still checked)
    renamed = tmp_path / "my_eigs.pt"
    torch.save(vecs, renamed)
    ds = discover(tiny_generator, "convs.3", method="hybrid", basis_size=4, eigenvectors=renamed,
                  **_OPT)  # fmt: skip
    assert float(_in_span(ds, vecs[:, 0]).max()) < 1e-5
    with pytest.raises(ValueError, match=r"weight shape \[16, 32, 3, 3\] in this model"):
        discover(tiny_generator, "convs.2", method="hybrid", eigenvectors=renamed, **_OPT)
    with pytest.raises(TypeError, match="eigenvectors must be"):
        discover(tiny_generator, "convs.3", method="hybrid", eigenvectors=[1, 2], **_OPT)


def test_hybrid_refuses_a_latent_set_as_eigenvectors(tiny_generator):
    sefa = discover(tiny_generator, "convs.3", method="sefa", k=2, calibrate=False)
    with pytest.raises(ValueError, match="got a latent-space 'sefa' set"):
        discover(tiny_generator, "convs.3", method="hybrid", eigenvectors=sefa, **_OPT)
