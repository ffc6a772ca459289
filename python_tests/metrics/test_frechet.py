"""Fréchet distance: closed forms, symmetry, singular covariances, toy-FD, Inception path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from navcuda.metrics.frechet import (
    INCEPTION_WEIGHTS_FILE,
    feature_statistics,
    frechet_distance,
    inception_fd,
    sqrtm_psd,
    toy_fd,
)
from navcuda.toyworld import render, sample_factors

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def _random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return a @ a.T / (2 * d)


def test_closed_form_diagonal():
    g = torch.Generator().manual_seed(0)
    d = 7
    mu1 = torch.randn(d, generator=g, dtype=torch.float64)
    mu2 = torch.randn(d, generator=g, dtype=torch.float64)
    s1 = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    s2 = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert abs(got - expected) < 1e-8


def test_closed_form_commuting_rotated():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: FD = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    d = 12
    q = _random_orthogonal(d, 1)
    g = torch.Generator().manual_seed(2)
    a = torch.rand(d, generator=g, dtype=torch.float64) * 5
    b = torch.rand(d, generator=g, dtype=torch.float64) * 5
    a[:3] = 0.0  # singular: exercises the clamp of negative round-off eigenvalues
    mu1 = torch.randn(d, generator=g, dtype=torch.float64)
    mu2 = torch.randn(d, generator=g, dtype=torch.float64)
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-8


def test_general_case_matches_eigenvalues_of_product():
    # Independent check: tr sqrt(S1 S2) = sum sqrt(eig(S1 S2)) (real, non-negative eigenvalues).
    d = 20
    s1, s2 = _random_spd(d, 3), _random_spd(d, 4)
    mu1 = torch.zeros(d, dtype=torch.float64)
    mu2 = torch.full((d,), 0.1, dtype=torch.float64)
    ev = np.linalg.eigvals((s1 @ s2).numpy())
    assert np.abs(ev.imag).max() < 1e-10
    tr = np.sqrt(np.clip(ev.real, 0, None)).sum()
    expected = float(0.01 * d + torch.trace(s1) + torch.trace(s2) - 2 * tr)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert abs(got - expected) < 1e-8 * max(1.0, expected)
    # numpy inputs work the same
    assert frechet_distance(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy()) == pytest.approx(
        got, abs=1e-12
    )


def test_symmetric_and_zero_for_identical():
    d = 16
    s1, s2 = _random_spd(d, 5), _random_spd(d, 6)
    g = torch.Generator().manual_seed(7)
    mu1, mu2 = torch.randn(d, generator=g), torch.randn(d, generator=g)
    ab = frechet_distance(mu1, s1, mu2, s2)
    ba = frechet_distance(mu2, s2, mu1, s1)
    assert ab > 0.1
    assert abs(ab - ba) < 1e-8 * max(1.0, ab)
    assert frechet_distance(mu1, s1, mu1, s1) < 1e-10


def test_feature_statistics_and_rank_deficient():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(10, 32, generator=g)  # N < D: singular covariance
    mu, sigma = feature_statistics(x)
    assert mu.dtype == torch.float64 and sigma.shape == (32, 32)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), atol=1e-12)
    assert frechet_distance(mu, sigma, mu, sigma) < 1e-8
    y = torch.randn(10, 32, generator=g) + 1.0
    fd = frechet_distance(mu, sigma, *feature_statistics(y))
    assert np.isfinite(fd) and fd > 10.0  # the mean shift alone contributes ~32


def test_sqrtm_psd():
    s = _random_spd(9, 9)
    r = sqrtm_psd(s)
    torch.testing.assert_close(r @ r, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(r, r.T)


def test_input_validation():
    s = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="means"):
        frechet_distance(torch.zeros(3), s, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(torch.zeros(3), s, torch.zeros(3), torch.eye(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(torch.zeros(3), s, torch.zeros(3), -s)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((3,), float("nan")), s, torch.zeros(3), s)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(torch.zeros(1, 3))


def test_toy_fd_world_vs_world_small_vs_noise_large():
    from navcuda.metrics.factor_regressor import load_factor_regressor

    reg = load_factor_regressor()
    n = 500
    a = render(sample_factors(n, seed=101))
    b = render(sample_factors(n, seed=202))
    noise = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(303)) * 2 - 1
    same = toy_fd(a, b, reg)
    far = toy_fd(a, noise, reg)
    # Observed with the bundled regressor (N = 500): world vs world 0.106, world vs uniform noise
    # 7.96 (ratio ~75; the world's features have total variance tr(S) ~ 4.5, so noise costs about
    # that plus the squared mean shift ~5.3), a 5x5 box blur 0.77. Bounds are conservative.
    assert 0.0 <= same < 0.5
    assert far > 20.0 * same and far > 3.0
    # Identical sets: zero; symmetric; other resolutions go through the regressor's resize.
    assert toy_fd(a[:64], a[:64], reg) < 1e-6
    assert abs(toy_fd(b, a, reg) - same) < 1e-6 * max(1.0, same)
    a128 = render(sample_factors(n, seed=101), 128)
    assert toy_fd(a128, b, reg) < 0.5 * far


def test_inception_requires_weights_file(tmp_path):
    imgs = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=INCEPTION_WEIGHTS_FILE):
        inception_fd(imgs, imgs)
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE):
        inception_fd(imgs, imgs, weights_path=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision Inception-v3"):
        inception_fd(imgs, imgs, weights_path=bad)


def test_inception_fd_with_a_weights_file(tmp_path):
    # A randomly initialised Inception-v3 saved as a torchvision state dict stands in for the
    # real weights file: checks loading, the pool3 feature size and the distance plumbing.
    from torchvision.models import inception_v3

    from navcuda.metrics.frechet import InceptionFeatures

    torch.manual_seed(0)
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    model = InceptionFeatures(path)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        f = model(x)
    assert f.shape == (4, 2048) and torch.isfinite(f).all()
    fd = inception_fd(x[:2], x[2:], model=model)
    expected = frechet_distance(*feature_statistics(f[:2]), *feature_statistics(f[2:]))
    assert fd == pytest.approx(expected, rel=1e-4, abs=1e-6) and fd > 0
