"""Locality maps and scores."""

from __future__ import annotations

import pytest
import torch

from navcuda.evaluate.locality import locality_map, locality_score
from navcuda.shift import Direction, layer_space


def test_score_ranks_local_above_global():
    local = torch.zeros(32, 32)
    local[10:14, 10:14] = 1.0  # 16 of 1024 pixels
    glob = torch.ones(32, 32)
    assert locality_score(local) == pytest.approx(1.0)
    assert locality_score(glob) == pytest.approx(0.1, abs=0.002)
    mixed = glob * 0.01 + local
    assert locality_score(local) > locality_score(mixed) > locality_score(glob)


def test_score_errors():
    with pytest.raises(ValueError, match="top_fraction"):
        locality_score(torch.ones(4, 4), top_fraction=0)
    with pytest.raises(ValueError, match="non-negative"):
        locality_score(-torch.ones(4, 4))
    assert locality_score(torch.zeros(4, 4)) != locality_score(torch.zeros(4, 4))  # NaN


def test_map_on_a_generator(tiny_generator):
    rank = layer_space(tiny_generator, 3).rank
    d = Direction.singular("convs.3", 0, rank, amplitude=5.0)
    res = locality_map(tiny_generator, d, n_z=3, n_t=4, batch_size=8)
    assert res.heatmap.shape == (16, 16) and res.n_t == 4
    assert (res.heatmap >= 0).all() and res.heatmap.sum() > 0
    assert 0.1 <= res.score <= 1.0
    # A bigger shift changes more.
    big = locality_map(tiny_generator, d, n_z=3, n_t=4, t_max=50.0, batch_size=8)
    assert big.heatmap.sum() > res.heatmap.sum()
    with pytest.raises(ValueError, match="amplitude"):
        locality_map(tiny_generator, Direction.singular("convs.3", 0, rank), n_z=1)
