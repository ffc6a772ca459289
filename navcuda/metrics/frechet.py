"""Fréchet distance between Gaussian fits of feature sets: toy-FD and (user-supplied) Inception FID.

``FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``

computed in float64. ``tr((S1 S2)^1/2)`` equals the trace of the square root of the *symmetric*
positive semi-definite matrix ``S1^1/2 S2 S1^1/2`` (same eigenvalues as ``S1 S2``), so both square
roots are taken by symmetric eigen-decompositions (``torch.linalg.eigh``) with tiny negative
eigenvalues (round-off of singular covariances) clamped to zero -- no scipy, no complex parts to
discard, and well defined for rank-deficient covariances (fewer samples than dimensions).

Embeddings:

- :func:`toy_fd`: the penultimate features of the toy world's factor regressor
  (:mod:`navcuda.metrics.factor_regressor`), the offline stand-in for FID on toy-world models;
- :func:`inception_fd`: pool3 (2048-d) features of torchvision's Inception-v3, only from a weights
  file the user supplies (nothing is downloaded). These are torchvision's ImageNet weights, not the
  TF-Inception graph of the reference FID implementation, so the numbers are an FID-like measure
  that is *not* comparable with published FID values.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from navcuda._checks import positive_int

__all__ = [
    "INCEPTION_URL",
    "INCEPTION_WEIGHTS_FILE",
    "InceptionFeatures",
    "batched_features",
    "feature_statistics",
    "frechet_distance",
    "inception_fd",
    "sqrtm_psd",
    "toy_fd",
    "world_statistics",
]

#: torchvision's Inception-v3 checkpoint (ImageNet) accepted by :func:`inception_fd`.
INCEPTION_WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_URL = f"https://download.pytorch.org/models/{INCEPTION_WEIGHTS_FILE}"

ArrayLike = torch.Tensor | np.ndarray


def _f64(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return t


def _psd_eigvals(vals: torch.Tensor) -> torch.Tensor:
    """Clamp the eigenvalues of a PSD matrix: those within round-off of zero (below
    ``D * eps * max|lambda|``, negative ones included) become exactly zero. Their square roots
    would otherwise add ``O(sqrt(eps))`` noise per null direction."""
    tol = vals.shape[-1] * torch.finfo(vals.dtype).eps * vals.abs().max().clamp_min(1e-300)
    return torch.where(vals > tol, vals, torch.zeros_like(vals))


def sqrtm_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (float64).

    The input is symmetrised first; eigenvalues within round-off of zero (or negative) are set
    to zero.
    """
    s = 0.5 * (sigma + sigma.transpose(-1, -2))
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * _psd_eigvals(vals).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (a float, ``>= 0``).

    ``mu [D]``, ``sigma [D, D]`` (torch or numpy; computed in float64 on the CPU). Covariances
    must be symmetric positive semi-definite up to round-off (a clearly negative eigenvalue, beyond
    ``1e-6`` of the largest, raises ``ValueError``).
    """
    m1, m2 = _f64(mu1, "mu1"), _f64(mu2, "mu2")
    s1, s2 = _f64(sigma1, "sigma1"), _f64(sigma2, "sigma2")
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be [D] of the same D, got {list(m1.shape)}, {list(m2.shape)}")
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if tuple(s.shape) != (d, d):
            raise ValueError(f"{name} must be [{d}, {d}], got {list(s.shape)}")
        sym = 0.5 * (s + s.T)
        if (s - sym).abs().max() > 1e-6 * max(1.0, float(sym.abs().max())):
            raise ValueError(f"{name} is not symmetric")
        ev = torch.linalg.eigvalsh(sym)
        if ev.min() < -1e-6 * max(1.0, float(ev.abs().max())):
            raise ValueError(
                f"{name} is not positive semi-definite (eigenvalue {float(ev.min()):.3g})"
            )
    r1 = sqrtm_psd(s1)
    inner = r1 @ (0.5 * (s2 + s2.T)) @ r1
    inner = 0.5 * (inner + inner.T)
    tr_covmean = _psd_eigvals(torch.linalg.eigvalsh(inner)).sqrt().sum()
    diff = m1 - m2
    fd = diff.dot(diff) + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(fd), 0.0)


def feature_statistics(features: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64, CPU) of ``features [N, D]``."""
    x = _f64(features, "features")
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors, got {x.shape[0]}")
    mu = x.mean(0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu, 0.5 * (sigma + sigma.T)


@torch.no_grad()
def batched_features(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``feature_fn`` over ``images [N, C, H, W]`` in batches; float64 CPU ``[N, D]``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a tensor [N, C, H, W]")
    positive_int(batch_size, "batch_size")
    out = []
    for chunk in images.split(batch_size):
        if device is not None:
            chunk = chunk.to(device)
        out.append(feature_fn(chunk).detach().to("cpu", torch.float64))
    return torch.cat(out)


def _fd_of(feature_fn, images_a, images_b, batch_size, device) -> float:
    fa = batched_features(feature_fn, images_a, batch_size, device)
    fb = batched_features(feature_fn, images_b, batch_size, device)
    return frechet_distance(*feature_statistics(fa), *feature_statistics(fb))


@torch.no_grad()
def world_statistics(
    n: int, seed: int = 0, regressor: nn.Module | None = None, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, sigma)`` of the factor regressor's penultimate features over ``n`` toy-world renders
    (64 px, factors drawn with ``seed + 7919``): the "real" side of toy-FD curves and tables."""
    from navcuda.toyworld import render, sample_factors

    if regressor is None:
        from navcuda.metrics.factor_regressor import load_factor_regressor

        regressor = load_factor_regressor()
    dev = next(regressor.parameters()).device
    f = sample_factors(n, seed=seed + 7919)
    feats = [
        regressor.features(render(chunk, resolution=64).to(dev)).double().cpu()
        for chunk in f.split(batch_size)
    ]
    return feature_statistics(torch.cat(feats))


def toy_fd(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    regressor: nn.Module | None = None,
    batch_size: int = 256,
) -> float:
    """Toy-FD: Fréchet distance between two image sets ``[N, 3, H, W]`` in ``[-1, 1]`` on the
    factor regressor's penultimate features (default: the bundled regressor, on the CPU).

    Images of 32..256 px are resized to 64 by the regressor. Each set needs at least 2 images;
    a few hundred or more give stable numbers (the features are 128-d), and as with FID, values
    are only comparable at equal set sizes.
    """
    if regressor is None:
        from navcuda.metrics.factor_regressor import load_factor_regressor

        regressor = load_factor_regressor()
    device = next(regressor.parameters()).device
    return _fd_of(regressor.features, images_a, images_b, batch_size, device)


class InceptionFeatures(nn.Module):
    """Pool3 (2048-d) features of torchvision's Inception-v3 loaded from a local weights file.

    Input: images ``[B, 3, H, W]`` in ``[-1, 1]`` (resized to 299x299, bilinear). The torchvision
    ImageNet weights were trained on inputs scaled to ``[-1, 1]`` (that is what their
    ``transform_input`` converts to), so images are fed as they are.
    """

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception-v3 weights not found: {path} (expected torchvision's "
                f"{INCEPTION_WEIGHTS_FILE}, from {INCEPTION_URL})"
            )
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError) as e:
            raise ValueError(
                f"{path} is not a torchvision Inception-v3 state dict ({INCEPTION_WEIGHTS_FILE}): "
                f"{str(e)[:300]}"
            ) from e
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)
        self.weights_path = str(path)

    def train(self, mode: bool = True):  # always eval: dropout and batch norm in inference mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 3, H, W], got shape {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.to(next(self.net.parameters()).dtype)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x)


def inception_fd(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    weights_path: str | os.PathLike | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: InceptionFeatures | None = None,
) -> float:
    """FID-like distance on Inception-v3 pool3 features; needs a user-supplied weights file.

    ``weights_path``: torchvision's ``inception_v3_google-0cc3c7bd.pth`` (ImageNet), downloaded by
    the user from :data:`INCEPTION_URL`; or pass an already built ``model``. Values are not
    comparable with published FIDs (those use the TF-Inception graph).
    """
    if model is None:
        if weights_path is None:
            raise ValueError(
                "inception_fd needs Inception-v3 weights, which navcuda does not download: pass "
                f"weights_path= a local copy of torchvision's {INCEPTION_WEIGHTS_FILE} "
                f"(download it from {INCEPTION_URL}); offline, use toy_fd() on toy-world models"
            )
        model = InceptionFeatures(weights_path).to(device)
    dev = next(model.parameters()).device
    return _fd_of(model, images_a, images_b, batch_size, dev)
