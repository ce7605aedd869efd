"""Text for the film: glyphs of DejaVu Sans Mono that matplotlib renders once per
character, blended into frames with numpy; no other font or imaging library is needed."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LINE_H = 12
"""Height of one line of text (the glyph box)."""
GLYPH_W = 6
"""Width of one character: DejaVu Sans Mono's advance at 10 px is 6.02 px."""


@functools.cache
def glyph(char: str) -> np.ndarray:
    """``char`` in DejaVu Sans Mono at 10 px: coverage ``[LINE_H, GLYPH_W]`` in ``[0, 1]``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
    fig = Figure(figsize=(GLYPH_W / 72, LINE_H / 72), dpi=72)  # 1 pt = 1 px at 72 dpi
    canvas = FigureCanvasAgg(fig)
    fig.text(
        0,
        3 / LINE_H,
        char,
        fontproperties=FontProperties(fname=font, size=10),
        color="black",
        va="baseline",
        ha="left",
    )
    canvas.draw()
    coverage = 1.0 - np.asarray(canvas.buffer_rgba())[..., 0] / 255.0  # black on white
    coverage.setflags(write=False)  # cached and shared
    return coverage


def text_mask(text: str, max_width: int) -> np.ndarray:
    """``text``'s coverage ``[LINE_H, n * GLYPH_W]``, cut to ``max_width`` pixels ("..")."""
    fits = max(max_width // GLYPH_W, 0)
    if len(text) > fits:
        text = text[: max(fits - 2, 0)] + ".." if fits >= 2 else text[:fits]
    chars = [c if " " <= c <= "~" else "?" for c in text]  # the font's ASCII range
    if not chars:
        return np.zeros((LINE_H, 0))
    return np.concatenate([glyph(c) for c in chars], axis=1)


def draw_text(image: np.ndarray, text: str, row: int, col: int, colour: Sequence[int]) -> None:
    """Blend ``text`` into ``image [H, W, 3]`` uint8 with its top-left at ``(row, col)``."""
    mask = text_mask(text, image.shape[1] - col)[: image.shape[0] - row, :, None]
    region = image[row : row + mask.shape[0], col : col + mask.shape[1]]
    region[:] = np.rint(region * (1.0 - mask) + np.asarray(colour) * mask).astype(np.uint8)
