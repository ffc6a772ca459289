"""Latent reproduction of edits (paper eq. 5)."""

from __future__ import annotations

import pytest
import torch

from navcuda.evaluate.latent_reproduction import plot_reproduction, reproduce_edit
from navcuda.shift import Direction, layer_space


def test_latent_edit_is_reproduced_in_w(tiny_generator):
    v = torch.randn(32, generator=torch.Generator().manual_seed(0))
    d = Direction("w", "latent", v)
    res = reproduce_edit(tiny_generator, d, t=3.0, space="w", n_z=16, n_eval=8, steps=150, lr=0.1)
    assert res.relative_residual < 0.05
    assert not res.unreachable
    assert res.history[-1] < res.history[0]


def test_weight_edit_is_not_reproduced_in_w(tiny_generator):
    w_shape = layer_space(tiny_generator, 3).weight_shape
    d = Direction(
        "convs.3", "weight", torch.randn(w_shape, generator=torch.Generator().manual_seed(1))
    )
    res = reproduce_edit(tiny_generator, d, t=60.0, space="w", n_z=16, n_eval=8, steps=100, lr=0.05)
    assert res.edit_energy > 0
    assert res.relative_residual > 0.5 and res.unreachable


def test_activation_space_runs_and_errors(tiny_generator):
    rank = layer_space(tiny_generator, 3).rank
    d = Direction.singular("convs.3", 0, rank)
    res = reproduce_edit(tiny_generator, d, t=10.0, space="activations", n_z=4, n_eval=4, steps=5)
    assert res.space == "activations" and res.relative_residual == res.relative_residual
    with pytest.raises(ValueError, match="space must be"):
        reproduce_edit(tiny_generator, d, t=1.0, space="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no edited layer"):
        reproduce_edit(tiny_generator, Direction("w", "latent", torch.ones(32)), 1.0, "activations")


def test_plot_reproduction_writes_a_png_atomically(tmp_path):
    rows = [
        {"direction": d, "space": sp, "relative_residual": r}
        for d, rs in (("sv0", (0.1, 0.9)), ("sv1", (0.6, 0.2)))
        for sp, r in zip(("w", "activations"), rs, strict=True)
    ]
    path = plot_reproduction(rows, tmp_path / "reproduce.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reproduce.png"]  # no temporary left
    with pytest.raises(ValueError, match="no rows"):
        plot_reproduction([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
