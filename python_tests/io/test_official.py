"""Importing the official code's ``{'layer_ix', 'shift'}`` direction files."""

from __future__ import annotations

import copy

import pytest
import torch

from navcuda.io.official import load_official_direction
from navcuda.models.layers import layer_weight
from navcuda.shift import generate


def test_official_file_round_trip(tmp_path, tiny_generator):
    w = layer_weight(tiny_generator, "convs.1")
    shift = 7.0 * torch.randn(1, 1, *w.shape, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "eyes_size.pt"
    torch.save({"layer_ix": 1, "shift": shift}, path)
    d = load_official_direction(path)
    assert d.layer == "convs.1" and d.basis == "weight" and d.name == "eyes_size"
    assert d.amplitude == pytest.approx(float(shift.double().norm()))
    # Applying the direction at its amplitude equals adding the stored shift to the raw kernel.
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    g2 = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        layer_weight(g2, 1).add_(shift[0, 0])
    torch.testing.assert_close(
        generate(tiny_generator, z, d, t=d.amplitude), g2(z), rtol=1e-5, atol=1e-5
    )


def test_official_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_official_direction(tmp_path / "nope.pt")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_official_direction(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="'layer_ix' and 'shift'"):
        load_official_direction(other)
    bad_shape = tmp_path / "bad.pt"
    torch.save({"layer_ix": 1, "shift": torch.ones(2, 3)}, bad_shape)
    with pytest.raises(ValueError, match=r"\[1, 1, out, in, k, k\]"):
        load_official_direction(bad_shape)
    zero = tmp_path / "zero.pt"
    torch.save({"layer_ix": 1, "shift": torch.zeros(1, 1, 2, 2, 3, 3)}, zero)
    with pytest.raises(ValueError, match="zero"):
        load_official_direction(zero)
    neg = tmp_path / "neg.pt"
    torch.save({"layer_ix": -1, "shift": torch.ones(1, 1, 2, 2, 3, 3)}, neg)
    with pytest.raises(ValueError, match="non-negative int"):
        load_official_direction(neg)
