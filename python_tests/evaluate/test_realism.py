"""Realism-vs-shift curves: zero at t=0 against the model's own statistics, growing with |t|."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from navcuda.evaluate.realism import plot_realism, realism_curves
from navcuda.shift import Direction, layer_space


def _features(img: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(img, 2).flatten(1)  # [B, 12]


def test_curve_shape_and_monotone_growth(tiny_generator, tmp_path):
    from navcuda.metrics.frechet import feature_statistics

    with torch.no_grad():
        z = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
        real = feature_statistics(_features(tiny_generator(z)).double())
    rank = layer_space(tiny_generator, 3).rank
    d = Direction.singular("convs.3", 0, rank, amplitude=40.0)
    d.meta["method"] = "svd"
    (curve,) = realism_curves(
        tiny_generator,
        [d],
        real,
        _features,
        relative_ts=(0.0, 1.0, 3.0),
        n_samples=64,
        batch_size=32,
        progress=False,
    )
    assert curve.ts == [0.0, 40.0, 120.0]
    # Same latents as the real statistics: t = 0 gives distance 0 up to float error.
    assert abs(curve.distances[0]) < 1e-6
    assert curve.distances[0] < curve.distances[1] < curve.distances[2]
    png = plot_realism([curve], tmp_path / "realism.png")
    assert png.is_file() and png.stat().st_size > 1000
