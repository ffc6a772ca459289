"""Image files: grids and GIFs written atomically; renders streamed to disk, lazy seeds, the
estimate of a render, labelled strips and the short repr of a result."""

from __future__ import annotations

import os
from collections.abc import Sequence

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


# ---------------------------------------------------------------- streaming, lazy seeds, labels
@pytest.fixture
def svd3(tiny_generator):
    from navcuda.discover import discover

    ds = discover(tiny_generator, 3, method="svd", k=3, calibrate=False)
    ds.amplitudes = torch.full((3,), 2.0)
    return ds


class _Unlistable(Sequence):
    """Seeds that may be sliced and measured but not listed whole (as ``range(10**10)`` should
    never be)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(range(self.n))[i]
        return range(self.n)[i]

    def __iter__(self):
        raise AssertionError("the seeds were listed whole")


def test_render_streams_each_file_as_soon_as_it_is_done(tiny_generator, svd3, tmp_path,
                                                        monkeypatch):  # fmt: skip
    """An interrupted render leaves the files it finished; with keep_images=False the result
    holds no images (they are in the files) and memory holds one file's images at a time."""
    import navcuda.rendering as rendering

    calls = []
    real = rendering.synthesize_shifted

    def synthesize(*args, **kw):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(rendering, "synthesize_shifted", synthesize)
    # 3 directions x 2 seeds x 3 t: one file = 6 images; batches of 6 -> the first file is done
    # after the first batch, the second after the second, then the render is interrupted.
    with pytest.raises(KeyboardInterrupt):
        rendering.render(tiny_generator, svd3, [0, 1], ts=[-1, 0, 1], output_dir=tmp_path,
                         batch_size=6, progress=False)  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["00_sv0.png", "01_sv1.png"]
    monkeypatch.setattr(rendering, "synthesize_shifted", real)

    res = rendering.render(tiny_generator, svd3, range(5), ts=[-1, 0, 1], output_dir=tmp_path,
                           gif=True, keep_images=False, rows_per_file=2,
                           progress=False)  # fmt: skip
    assert res.images is None and res.shape == (3, 5, 3, 3, 16, 16)
    names = [p.name for p in res.files]
    assert names[:4] == ["00_sv0_rows0-1.png", "00_sv0_rows0-1.gif", "01_sv1_rows0-1.png",
                         "01_sv1_rows0-1.gif"]  # fmt: skip
    assert len(names) == 3 * 3 * 2 and "02_sv2_rows4-4.png" in names
    full = rendering.render(tiny_generator, svd3, 5, ts=[-1, 0, 1], progress=False).images
    with Image.open(tmp_path / "01_sv1_rows2-3.png") as im:
        arr = np.asarray(im.convert("RGB"))
    # row 3 (the second of that file), column t=1: the same pixels as the in-memory render
    assert np.array_equal(arr[20:36, 38:54], to_uint8(full[1, 3, 2]))
    # Small renders to a folder keep their images by default (callers use res.images).
    kept = rendering.render(tiny_generator, svd3, 2, ts=[0], output_dir=tmp_path / "k",
                            progress=False)  # fmt: skip
    assert kept.images is not None and kept.images.shape == (3, 2, 1, 3, 16, 16)
    monkeypatch.setattr(rendering, "KEEP_IMAGES_MAX_BYTES", 100)
    assert rendering.render(tiny_generator, svd3, 2, ts=[0], output_dir=tmp_path / "k",
                            progress=False).images is None  # fmt: skip
    with pytest.raises(ValueError, match="keep_images=False needs an output_dir"):
        rendering.render(tiny_generator, svd3, 2, keep_images=False)


def test_render_takes_any_sequence_of_seeds_without_listing_it(tiny_generator, svd3):
    from navcuda.rendering import render

    lazy = render(tiny_generator, svd3, _Unlistable(3), ts=[0, 1], progress=False)
    listed = render(tiny_generator, svd3, [0, 1, 2], ts=[0, 1], progress=False)
    torch.testing.assert_close(lazy.images, listed.images)
    big = render(tiny_generator, svd3[0], range(10**10, 10**10 + 2), ts=[1], progress=False)
    assert big.images.shape == (1, 2, 1, 3, 16, 16)


def test_estimate_render_says_what_a_huge_range_takes(tiny_generator, tmp_path):
    from navcuda.rendering import estimate_render

    n = 10_000_000_000
    est = estimate_render(tiny_generator, 8, n, 5, output_dir=tmp_path, gif=True)
    bytes_in_memory, bytes_on_disk, seconds = est[:3]
    assert bytes_in_memory < 1 << 31  # streamed: one file's images, not all of them
    assert bytes_on_disk >= 8 * n * 5 * 3 * 16 * 16  # uncompressed upper bound
    assert seconds > 3600 and est.images == 8 * n * 5
    text = est.describe()
    assert "400,000,000,000 images" in text and "TB on disk" in text and " h" in text
    problems = est.problems(tmp_path, max_seconds=3600)
    assert any("free in" in p for p in problems) and any("takes about" in p for p in problems)
    # In memory (no files): the images themselves, more than any machine has.
    mem = estimate_render(tiny_generator, 8, n, 5, output_dir=None, seconds_per_image=1e-3)
    assert mem.bytes_in_memory >= 4 * 8 * n * 5 * 3 * 16 * 16 and mem.files == 0
    assert any("of memory" in p for p in mem.problems())
    small = estimate_render(tiny_generator, 2, 2, 3, output_dir=tmp_path, measure=False)
    assert small.seconds is None and small.problems(tmp_path) == [] and small.files == 2


def test_render_result_repr_is_one_short_line(tiny_generator, svd3, tmp_path):
    from navcuda.rendering import render

    res = render(tiny_generator, svd3, 4, output_dir=tmp_path, progress=False)
    text = repr(res)
    assert "\n" not in text and len(text) < 300, text
    assert text.startswith("RenderResult(images=[3, 4, 5, 3, 16, 16] float32, ts=[3, 5] float32")
    assert "files=[3 paths]" in text


def test_labelled_strips_and_gif_frames(tiny_generator, svd3, tmp_path):
    from navcuda.rendering import render

    plain = render(tiny_generator, svd3[0], 2, ts=[-1, 1], output_dir=tmp_path / "plain",
                   gif=True, progress=False)  # fmt: skip
    named = render(tiny_generator, svd3[0], 2, ts=[-1, 1], output_dir=tmp_path / "named",
                   gif=True, labels=True, progress=False)  # fmt: skip
    with Image.open(plain.files[0]) as a, Image.open(named.files[0]) as b:
        assert b.width == a.width and b.height > a.height
        band = np.asarray(b.convert("RGB"))[: b.height - a.height]
        body = np.asarray(b.convert("RGB"))[b.height - a.height :]
        assert np.array_equal(body, np.asarray(a.convert("RGB")))  # images unchanged, below
        assert (band < 128).any()  # text drawn in the band
    with Image.open(named.files[1]) as gif:
        frames = []
        for m in range(2):
            gif.seek(m)
            frames.append(np.asarray(gif.convert("RGB"))[:24])
        assert not np.array_equal(frames[0], frames[1])  # each frame names its t
    with pytest.raises(ValueError, match="3 column labels for 2 columns"):
        save_grid(torch.zeros(1, 2, 3, 4, 4), tmp_path / "x.png", column_labels=["a", "b", "c"])
