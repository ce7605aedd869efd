"""What a film is: rendered episodes laid out as rows (tasks) and columns (units)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Episode:
    """One rendered episode.

    Attributes:
        frames: ``[F, h, w, 3]`` uint8: after reset, then after each step (``F = steps + 1``).
        returns: ``[F]`` the return so far at each frame (0 after reset).
    """

    frames: np.ndarray
    returns: np.ndarray


@dataclasses.dataclass
class Film:
    """Rendered episodes laid out as rows (tasks) and columns (units of adaptation).

    Attributes:
        titles: ``[R]`` one line per row.
        labels: ``[C]`` one line per column.
        cells: ``[R][C]`` episodes.
        cell: ``(h, w)`` of every frame.
        fps: the env's frame rate.
    """

    titles: list[str]
    labels: list[str]
    cells: list[list[Episode]]
    cell: tuple[int, int]
    fps: float

    @property
    def n_frames(self) -> int:
        """``F``: the longest episode's frames (``horizon + 1`` unless all end early)."""
        return max(len(ep.frames) for row in self.cells for ep in row)
