"""MP4 videos of edits, encoded by ffmpeg through imageio-ffmpeg (``pip install
'navcuda[video]'``: the ffmpeg binary comes with the package's wheel).

:func:`save_video` writes H.264 MP4 (``yuv420p``, so every player shows it) from a sequence of
RGB frames, atomically (to a temporary file beside the target, then renamed). Frames of odd size
are padded with white to even sides, which ``yuv420p`` needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from navcuda.io.atomic import atomic_path

__all__ = ["VideoUnavailableError", "check_video_support", "save_video"]


class VideoUnavailableError(ValueError):
    """MP4 needs ``imageio-ffmpeg`` (and its ffmpeg binary), which is not installed (a
    ``ValueError``: the command line reports it as a one-line error, like other bad requests)."""


def check_video_support() -> None:
    """Raise :class:`VideoUnavailableError` (saying how to install it) unless MP4 can be written:
    called before any rendering by the commands that write videos."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise VideoUnavailableError(
            f"writing MP4 needs imageio-ffmpeg ({exc}); install it with "
            "pip install 'navcuda[video]' (or pip install imageio-ffmpeg)"
        ) from None


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    out = np.full((h + h % 2, w + w % 2, 3), 255, np.uint8)
    out[:h, :w] = frame
    return out


def _rgb(frame: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(frame, Image.Image):
        frame = np.asarray(frame.convert("RGB"))
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"video frames must be RGB uint8 [H, W, 3], got {a.dtype} {a.shape}")
    return _even(a)


def save_video(
    frames: Iterable[Image.Image | np.ndarray],
    path: str | os.PathLike,
    fps: float = 8.0,
    quality: float = 8.0,
) -> Path:
    """Write ``frames`` (PIL images or uint8 ``[H, W, 3]`` arrays of one size) as an H.264 MP4 at
    ``fps`` frames per second (``quality`` 0-10, imageio's scale); returns the path. Streams:
    each frame is encoded as it comes. Raises :class:`VideoUnavailableError` without
    imageio-ffmpeg, ``ValueError`` for no frames or frames of different sizes."""
    check_video_support()
    import imageio_ffmpeg

    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    p = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("a video needs at least one frame")
    first_a = _rgb(first)
    h, w = first_a.shape[:2]
    with atomic_path(p) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", quality=quality, pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p", macro_block_size=1, output_params=["-f", "mp4"],
            ffmpeg_log_level="error",
        )  # fmt: skip
        writer.send(None)  # start ffmpeg
        try:
            writer.send(first_a.tobytes())
            for frame in it:
                a = _rgb(frame)
                if a.shape != first_a.shape:
                    raise ValueError(
                        f"video frames differ in size: {a.shape[:2]} after {first_a.shape[:2]}"
                    )
                writer.send(a.tobytes())
        finally:
            writer.close()
    return p
