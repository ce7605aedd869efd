"""The film's files and TensorBoard images.

:func:`write_film` writes ``<name>_video_grid.mp4`` (every row), one
``<name>_video_task<i>.mp4`` per row (that row alone), ``<name>_video_grid.gif``
(every ``ceil(F / GIF_MAX_FRAMES)``-th frame, at a frame rate that keeps the MP4's
duration) and ``<name>_sheet.png`` (the last frame: where every episode ended; for
the sketch family, each held-out character as traced before and after each step).
MP4 and GIF need ``pip install "metarl[video]"`` (imageio and imageio-ffmpeg, whose
wheel carries its own ffmpeg); the PNG sheet needs only matplotlib.
:func:`log_film` puts the GIF into TensorBoard as an animated image (what
``SummaryWriter.add_video`` writes, encoded here without moviepy) and the sheet as
a still image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metarl.video.layout import canvas_size, frames, last_frame

if TYPE_CHECKING:
    from metarl.video.film import Film

GIF_MAX_FRAMES = 100
"""The GIF keeps every ``ceil(F / GIF_MAX_FRAMES)``-th frame, to stay README-sized."""


def gif_stride(n_frames: int) -> int:
    """Keep every ``s``-th frame in the GIF: at most :data:`GIF_MAX_FRAMES` frames."""
    return max(1, math.ceil(n_frames / GIF_MAX_FRAMES))


def write_mp4(path: Path, images: Iterator[np.ndarray], fps: float) -> Path:
    """H.264 MP4 (yuv420p, so every player shows it) of ``images [H, W, 3]`` at ``fps``."""
    import imageio.v2 as imageio

    # macro_block_size 2: even sizes pass as they are (the default 16 would rescale them)
    with imageio.get_writer(
        path,
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        quality=8,
        macro_block_size=2,
        ffmpeg_log_level="error",
    ) as writer:
        for image in images:
            writer.append_data(image)
    return path


def encode_gif(film: Film) -> bytes:
    """The whole film as an animated GIF that loops (see :func:`gif_stride`)."""
    import imageio.v3 as iio

    stride = gif_stride(film.n_frames)
    kept = list(frames(film, range(len(film.titles)), every=stride))
    duration_ms = round(1000.0 * stride / film.fps)  # GIFs count in hundredths of a second
    return iio.imwrite("<bytes>", np.stack(kept), extension=".gif", duration=duration_ms, loop=0)


def write_png(path: Path, image: np.ndarray) -> Path:
    """``image [H, W, 3]`` uint8 as a PNG (matplotlib's writer: no extra needed)."""
    import matplotlib.image

    matplotlib.image.imsave(path, image)
    return path


def write_film(film: Film, out_dir: Path, name: str, *, sheet_only: bool = False) -> list[Path]:
    """Write the film's files under ``out_dir`` (module docstring); returns their paths.

    With ``sheet_only`` only ``<name>_sheet.png`` (no imageio needed).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    every_row = range(len(film.titles))
    written = [write_png(out_dir / f"{name}_sheet.png", last_frame(film))]
    if sheet_only:
        return written
    written.append(write_mp4(out_dir / f"{name}_video_grid.mp4", frames(film, every_row), film.fps))
    gif = out_dir / f"{name}_video_grid.gif"
    gif.write_bytes(encode_gif(film))
    written.append(gif)
    for i in every_row:
        path = out_dir / f"{name}_video_task{i}.mp4"
        written.append(write_mp4(path, frames(film, [i]), film.fps))
    return written


def log_film(log_dir: Path, tag: str, film: Film, gif: bytes, step: int) -> None:
    """Add the film to TensorBoard's Images tab: ``<tag>`` animated, ``<tag>_final`` still.

    The animated image is the summary ``SummaryWriter.add_video`` writes (an encoded GIF
    in an image summary), made from our GIF, so moviepy is not needed.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import image as image_summary
    from torch.utils.tensorboard.writer import FileWriter

    height, width = canvas_size(len(film.titles), len(film.labels), film.cell)
    animated = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    writer = FileWriter(str(log_dir))
    try:
        writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=animated)]), step)
        still = image_summary(f"{tag}_final", last_frame(film), dataformats="HWC")
        writer.add_summary(still, step)
    finally:
        writer.close()
