"""SVD baseline, latent baselines (GANSpace, SeFa) and amplitude calibration."""

from __future__ import annotations

import pytest
import torch

from navcuda.discover import discover
from navcuda.discover.calibrate import calibrate_amplitudes
from navcuda.shift import generate, layer_space


def _rms(a, b):
    return float((a - b).detach().square().mean(dim=(1, 2, 3)).sqrt().mean())


def test_svd_directions_are_the_singular_vectors(tiny_generator):
    ds = discover(tiny_generator, 3, method="svd", k=5, calibrate=False)
    space = layer_space(tiny_generator, 3)
    assert len(ds) == 5 and torch.equal(ds.values, space.s[:5].float())
    for i, d in enumerate(ds):
        assert int(d.coefficients.argmax()) == i
    assert (
        discover(tiny_generator, 3, method="svd", k=999, calibrate=False).coefficients.shape[0]
        == space.rank
    )


def test_calibration_hits_target(tiny_generator):
    ds = discover(tiny_generator, 3, method="svd", k=3, calibrate=True, target_rms=0.05)
    z = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    base = generate(tiny_generator, z, truncation_psi=0.7)
    for d in ds:
        assert d.amplitude is not None and d.amplitude > 0
        plus = generate(tiny_generator, z, d, d.amplitude, truncation_psi=0.7)
        minus = generate(tiny_generator, z, d, -d.amplitude, truncation_psi=0.7)
        change = (_rms(plus, base) + _rms(minus, base)) / 2
        assert change == pytest.approx(0.05, rel=0.05)


def test_ganspace_components_are_orthonormal_and_sorted(tiny_generator):
    ds = discover(tiny_generator, method="ganspace", k=6, n_samples=500, calibrate=False)
    v = ds.coefficients.double()
    torch.testing.assert_close(v @ v.t(), torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0)
    assert (ds.values[:-1] >= ds.values[1:]).all()
    assert ds.basis == "latent" and ds.layer == "w"


def test_sefa_and_latent_rendering(tiny_generator):
    ds = discover(tiny_generator, 3, method="sefa", k=4, calibrate=True, target_rms=0.05)
    assert ds.hparams["layers"] == ["convs.3"]
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    base = generate(tiny_generator, z)
    moved = generate(tiny_generator, z, ds[0], float(ds.amplitudes[0]))
    assert _rms(moved, base) > 0.01
    with pytest.raises(ValueError, match="mix latent"):
        generate(
            tiny_generator,
            z,
            [ds[0], discover(tiny_generator, 3, k=1, calibrate=False)[0]],
            [1.0, 1.0],
        )


def test_discover_errors(tiny_generator):
    with pytest.raises(ValueError, match="unknown method"):
        discover(tiny_generator, 3, method="magic")
    with pytest.raises(ValueError, match="no directions"):
        calibrate_amplitudes(tiny_generator, [])
