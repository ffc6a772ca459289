"""Image files: grids and GIFs written atomically."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from navcuda.rendering import save_gif, save_grid, to_uint8
from navcuda.toyworld import render, sample_factors


def test_save_grid_roundtrip(tmp_path):
    imgs = render(sample_factors(5, seed=0), 32)
    path = tmp_path / "grid.png"
    save_grid(imgs, path, nrow=3)
    assert path.exists()
    assert os.listdir(tmp_path) == ["grid.png"]  # no temp file left behind
    with Image.open(path) as im:
        assert im.size == (3 * 34 + 2, 2 * 34 + 2)  # 2-px padding
        arr = np.asarray(im.convert("RGB"))
    expected = to_uint8(imgs[:1])[0]
    assert np.array_equal(arr[2:34, 2:34], expected)
    # Overwriting is fine and still leaves a single file.
    save_grid(imgs[:2], path, nrow=2)
    assert os.listdir(tmp_path) == ["grid.png"]
    with pytest.raises(ValueError):
        save_grid(imgs, tmp_path / "grid.unknownext")
    assert os.listdir(tmp_path) == ["grid.png"]


def test_gif_and_permissions(tmp_path):
    strip = torch.rand(2, 3, 3, 8, 8) * 2 - 1
    path = save_gif(strip, tmp_path / "s.gif")
    with Image.open(path) as im:
        assert im.n_frames == 4 and im.size == (2 * 10 + 2, 10 + 2)
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        save_gif(strip[0], tmp_path / "bad.gif")
