"""The film's layout: labels, cell sizes, frames fitted into cells, the canvas.

Geometry, in pixels, for ``R`` rows, ``C`` columns and cells of ``h x w``::

    width  = C * w + (C + 1) * PAD
    height = R * (TITLE_H + LABEL_H + h) + (R + 1) * PAD     (each rounded up to even)

Each row is a title bar over its cells; each cell a label strip of three lines
(the column, ``mean action``, the step and return so far) over its frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.video.text import LINE_H, draw_text

if TYPE_CHECKING:
    from metarl.video.film import Film

PAD = 2
"""Pixels between cells and around the film."""
TITLE_H = 14
"""Height of a row's title bar."""
LABEL_H = 3 * LINE_H + 2
"""Height of a cell's label strip: three lines of text."""
MIN_CELL = 48
"""The smallest cell side: the step counter then always fits, so no two consecutive frames
are the same and a GIF encoder merges none of them (the frame count stays as documented)."""

BACKGROUND = (200, 200, 200)
TITLE_BG, TITLE_FG = (45, 45, 45), (255, 255, 255)
LABEL_BG, LABEL_FG, NOTE_FG = (238, 238, 238), (0, 0, 0), (90, 90, 90)


# -- labels -------------------------------------------------------------------------
def column_label(unit: str, k: int) -> str:
    """The label of column ``k`` (0-based) for a learner's adaptation unit."""
    if unit == "step":
        return "before" if k == 0 else f"after {k} step{'s' if k > 1 else ''}"
    if unit == "episode":
        return f"episode {k + 1}"
    raise ValueError(f"unit must be 'step' or 'episode', got {unit!r}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return str(value)


def task_label(task: Any) -> str:
    """A task in one short line: ``goal=(0.12, -0.30)``, ``char=S``, or its repr."""
    if dataclasses.is_dataclass(task):
        fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
    elif isinstance(task, dict):
        fields = task
    else:
        return repr(task)
    return ", ".join(f"{key}={_short(np.asarray(v).tolist())}" for key, v in fields.items())


def parse_size(text: str) -> tuple[int, int]:
    """``"160x120"`` (width x height) or ``"128"`` (square) -> ``(height, width)``."""
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        width = height = 0
    if min(width, height) < MIN_CELL:
        raise ValueError(
            f"expected WIDTHxHEIGHT or SIZE in pixels, each >= {MIN_CELL}; got {text!r}"
        )
    return height, width


# -- frames --------------------------------------------------------------------------
def fit_frame(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame [h, w, 3]`` scaled (nearest pixel, aspect kept) and centred on white in
    ``[height, width, 3]`` uint8; returned as it is when it already has that size."""
    frame = np.asarray(frame)[..., :3].astype(np.uint8, copy=False)
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(new_h) / scale).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(new_w) / scale).astype(np.int64), w - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = frame[rows][:, cols]
    return out


# -- the canvas ----------------------------------------------------------------------
def canvas_size(n_rows: int, n_cols: int, cell: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a film of ``n_rows x n_cols`` cells (see the module docstring)."""
    h, w = cell
    height = n_rows * (TITLE_H + LABEL_H + h) + (n_rows + 1) * PAD
    width = n_cols * w + (n_cols + 1) * PAD
    return height + height % 2, width + width % 2  # even: yuv420p video needs it


def _origin(r: int, c: int, cell: tuple[int, int]) -> tuple[int, int]:
    """Top-left of cell ``(r, c)``'s label strip."""
    h, w = cell
    return PAD + r * (TITLE_H + LABEL_H + h + PAD) + TITLE_H, PAD + c * (w + PAD)


def background(film: Film, rows: Sequence[int]) -> np.ndarray:
    """The static parts of the film's ``rows``: title bars and the first two label lines."""
    h, w = film.cell
    canvas = np.empty((*canvas_size(len(rows), len(film.labels), film.cell), 3), np.uint8)
    canvas[:] = BACKGROUND
    for r, i in enumerate(rows):
        top, _ = _origin(r, 0, film.cell)
        canvas[top - TITLE_H : top, PAD : canvas.shape[1] - PAD] = TITLE_BG
        draw_text(
            canvas[:, : canvas.shape[1] - PAD], film.titles[i], top - TITLE_H + 1, PAD + 2, TITLE_FG
        )
        for c, label in enumerate(film.labels):
            top, left = _origin(r, c, film.cell)
            strip = canvas[top : top + LABEL_H, left : left + w]
            strip[:] = LABEL_BG
            draw_text(strip, label, 1, 2, LABEL_FG)
            draw_text(strip, "mean action", 1 + LINE_H, 2, NOTE_FG)
    return canvas


def frame_at(film: Film, rows: Sequence[int], base: np.ndarray, t: int) -> np.ndarray:
    """Frame ``t`` of the film's ``rows`` on their :func:`background` ``base``."""
    h, w = film.cell
    image = base.copy()
    for r, i in enumerate(rows):
        for c, episode in enumerate(film.cells[i]):
            top, left = _origin(r, c, film.cell)
            s = min(t, len(episode.frames) - 1)  # an episode that ended holds its last frame
            text = f"t {s:<3} R {episode.returns[s]:.1f}"
            strip = image[top : top + LABEL_H, left : left + w]
            draw_text(strip, text, 1 + 2 * LINE_H, 2, NOTE_FG)
            image[top + LABEL_H : top + LABEL_H + h, left : left + w] = episode.frames[s]
    return image


def frames(film: Film, rows: Sequence[int], every: int = 1) -> Iterator[np.ndarray]:
    """The film's ``rows``, every ``every``-th frame from the first: ``[height, width, 3]``."""
    base = background(film, rows)
    for t in range(0, film.n_frames, every):
        yield frame_at(film, rows, base, t)


def last_frame(film: Film) -> np.ndarray:
    """The sheet: every row at the film's last frame (where each episode ended)."""
    rows = range(len(film.titles))
    return frame_at(film, rows, background(film, rows), film.n_frames - 1)
