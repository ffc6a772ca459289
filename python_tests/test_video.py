"""MP4 videos (:mod:`navcuda.video`, ``render --video``) through imageio-ffmpeg."""

from __future__ import annotations

import numpy as np
import pytest

import navcuda.video as video
from navcuda.cli import main
from navcuda.discover import discover
from navcuda.models.checkpoints import save_generator
from navcuda.rendering import render

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
pytestmark = pytest.mark.usefixtures("one_thread")


def _read(path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def test_frames_round_trip_with_odd_sizes_padded(tmp_path):
    frames = [np.full((21, 33, 3), v, np.uint8) for v in (0, 128, 255)]
    path = video.save_video(frames, tmp_path / "v.mp4", fps=4)
    back = _read(path)
    assert len(back) == 3 and back[0].shape == (22, 34, 3)  # even sides for yuv420p
    for f, v in zip(back, (0, 128, 255), strict=True):
        assert abs(float(f[:21, :33].mean()) - v) < 4  # lossy, but the frame it was
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="differ in size"):
        video.save_video([frames[0], np.zeros((8, 8, 3), np.uint8)], tmp_path / "bad.mp4")
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="at least one frame"):
        video.save_video([], tmp_path / "none.mp4")


def test_render_writes_labelled_videos(tmp_path, tiny_generator):
    ds = discover(tiny_generator, 3, method="svd", k=2, calibrate=False)
    res = render(
        tiny_generator, ds, [0, 1], ts=[-20, 0, 20], output_dir=tmp_path, video=True,
        labels=True, progress=False,
    )  # fmt: skip
    mp4 = sorted(p for p in res.files if p.suffix == ".mp4")
    assert [p.name for p in mp4] == ["00_sv0.mp4", "01_sv1.mp4"]
    frames = _read(mp4[0])
    assert len(frames) == 4  # forth and back: t = -20, 0, 20, 0
    # Labelled: a white band with text above the images (not the bare 16 px tiles).
    assert frames[0].shape[0] > 16 + 4 and frames[0][:3].mean() > 200


def test_render_video_command_and_missing_encoder(tmp_path, tiny_generator, monkeypatch, capsys):
    ckpt = save_generator(tiny_generator, tmp_path / "g.safetensors")
    dirs = discover(tiny_generator, 3, method="svd", k=1, calibrate=False).save(tmp_path / "d.nav")
    out = tmp_path / "strips"
    argv = ["render", str(dirs), "--checkpoint", str(ckpt), "--seeds", "0", "--t", "-1:1:3"]
    assert main([*argv, "--absolute", "--video", "-o", str(out)]) == 0
    assert (out / "00_sv0.mp4").stat().st_size > 0

    def missing():
        raise video.VideoUnavailableError("writing MP4 needs imageio-ffmpeg")

    monkeypatch.setattr(video, "check_video_support", missing)
    other = tmp_path / "other"
    assert main([*argv, "--video", "-o", str(other)]) == 2
    assert "needs imageio-ffmpeg" in capsys.readouterr().err
    assert not other.exists()


def test_estimate_counts_the_videos(tiny_generator, tmp_path):
    from navcuda.rendering import estimate_render

    kw = dict(output_dir=tmp_path, measure=False)
    plain = estimate_render(tiny_generator, 2, 3, 5, **kw)
    gif = estimate_render(tiny_generator, 2, 3, 5, gif=True, **kw)
    both = estimate_render(tiny_generator, 2, 3, 5, gif=True, video=True, **kw)
    assert (plain.files, gif.files, both.files) == (2, 4, 6)
    assert both.bytes_on_disk > gif.bytes_on_disk and both.bytes_in_memory > gif.bytes_in_memory
    # The bound holds for what render writes: 8 frames (t forth and back) of 3 samples each.
    res = render(tiny_generator, discover(tiny_generator, 3, method="svd", k=2, calibrate=False),
                 [0, 1, 2], ts=[-20, -10, 0, 10, 20], output_dir=tmp_path / "r", gif=True,
                 video=True, progress=False)  # fmt: skip
    assert len(res.files) == both.files
    mp4 = sum(p.stat().st_size for p in res.files if p.suffix == ".mp4")
    assert 0 < mp4 <= both.bytes_on_disk - gif.bytes_on_disk
    assert estimate_render(tiny_generator, 2, 3, 5, output_dir=None, video=True).files == 0


def test_render_video_command_checks_the_videos_cost(tmp_path, tiny_generator, monkeypatch, capsys):
    import navcuda.rendering as rendering

    ckpt = save_generator(tiny_generator, tmp_path / "g.safetensors")
    dirs = discover(tiny_generator, 3, method="svd", k=1, calibrate=False).save(tmp_path / "d.nav")
    out = tmp_path / "strips"
    argv = ["render", str(dirs), "--checkpoint", str(ckpt), "--seeds", "0-3", "--t", "-1:1:5"]
    est = [rendering.estimate_render(tiny_generator, 1, 4, 5, output_dir=out, video=v,
                                     measure=False) for v in (False, True)]  # fmt: skip
    # Free disk between the estimates without and with the video: only --video is refused.
    free = (est[0].bytes_on_disk + est[1].bytes_on_disk) // 2
    real = rendering.shutil.disk_usage
    monkeypatch.setattr(rendering.shutil, "disk_usage", lambda p: real(p)._replace(free=free))
    assert main([*argv, "--video", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not started" in err and "in 2 files" in err and "free in" in err
    assert not out.exists()
    assert main([*argv, "-o", str(tmp_path / "plain")]) == 0
    assert main([*argv, "--video", "--yes", "-o", str(out)]) == 0
    assert (out / "00_sv0.mp4").stat().st_size > 0
