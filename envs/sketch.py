"""Sketch: trace the outline of a letter or digit with a pen (pure numpy, plus matplotlib's font).

One family, :class:`SketchEnv` (``sketch``): a pen on a 2-D canvas follows a
target figure, the outline of one character in DejaVu Sans, one point per
step. The observation never shows the figure: a policy finds out which
character it is drawing only from the rewards, so adapting to a new
character is the meta-learning problem. Train and test tasks are disjoint
sets of characters (:data:`TRAIN_CHARS`, :data:`TEST_CHARS`).

The outlines come from ``matplotlib.textpath.TextPath`` with the DejaVu Sans
font file that matplotlib ships, so nothing is downloaded; building one takes
about a millisecond and is cached per ``(char, n_points)``.
"""

from __future__ import annotations

import functools
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces
from metarl.envs.base import TaskFamilyMixin

__all__ = [
    "ACTION_COST",
    "CHARACTERS",
    "FIGURE_HALF_SIZE",
    "GlyphTask",
    "MAX_STEP",
    "SketchEnv",
    "TEST_CHARS",
    "TRAIN_CHARS",
    "glyph_points",
    "render_canvas",
]

MAX_STEP = 0.15
"""The pen moves ``MAX_STEP * clip(a, -1, 1)`` per step: each coordinate at most 0.15.

The longest outline, ``M``, is 11.97 long once normalised, so at the default
horizon of 100 its points are at most 0.120 apart; 0.15 reaches every
consecutive pair of points of every character in one step with some margin
(``tests/test_sketch.py`` checks it), without making a random policy's
scribble much larger than the figure."""
ACTION_COST = 0.01
"""Weight ``c`` of the action cost ``c * ||a||^2`` (a in ``[-1, 1]^2``: at most 0.02 a step)."""
FIGURE_HALF_SIZE = 0.8
"""Every outline is scaled to fit ``[-0.8, 0.8]^2``: a margin of 0.2 inside the canvas."""
CURVE_CHORDS = 16
"""Each Bezier segment of a glyph is flattened into this many chords of equal parameter step."""
FONT_FILE = "DejaVuSans.ttf"
"""The font file, under ``matplotlib.get_data_path()/fonts/ttf/`` in every matplotlib."""

CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits
"""The 62 characters a :class:`GlyphTask` may draw: ``A-Z``, ``a-z``, ``0-9``."""
TEST_CHARS = "0123456789" + "IOSXZ" + "losxz"
"""Held-out characters: the 10 digits and 10 letters.

The letters are those that, once each outline is scaled to fill the same
box, look like a digit or like their other case: ``O o`` (``0``), ``I l``
(``1``, and each other: both are a bare bar in DejaVu Sans), ``S s`` (``5``),
``Z z`` (``2``) and ``X x``. Each such look-alike set lies wholly on one side
of the split, so no test character is a rescaled training character. Other
case pairs that look alike (``C c``, ``V v``, ``W w``, ...) train together."""
TRAIN_CHARS = "".join(c for c in CHARACTERS if c not in TEST_CHARS)
"""The 42 training characters: every letter not in :data:`TEST_CHARS`."""


@dataclass(frozen=True)
class GlyphTask:
    """The character whose outline is the figure to trace: one of :data:`CHARACTERS`."""

    char: str

    def __post_init__(self) -> None:
        if not (isinstance(self.char, str) and len(self.char) == 1 and self.char in CHARACTERS):
            raise ValueError(f"GlyphTask.char must be one letter or digit, got {self.char!r}")


# -- outlines: pure functions, cached ----------------------------------------------------
def font_path() -> Path:
    """The DejaVu Sans ``.ttf`` file inside matplotlib's installed data."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_FILE


@functools.cache  # 62 characters at most
def glyph_outline(char: str) -> np.ndarray:
    """``char``'s outline as one polyline in font units, shape ``[M, 2]``.

    All contours in the font's order, concatenated: the straight jump from
    one contour's end to the next one's start is part of the polyline (the
    pen never lifts). Each quadratic or cubic Bezier segment is flattened
    into :data:`CURVE_CHORDS` chords; consecutive duplicate points are dropped.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as MplPath
    from matplotlib.textpath import TextPath

    path = TextPath((0.0, 0.0), char, size=1.0, prop=FontProperties(fname=font_path()))
    t = np.arange(1, CURVE_CHORDS + 1) / CURVE_CHORDS
    pieces = []
    for segment, code in path.iter_bezier():
        points = segment.control_points
        if code == MplPath.MOVETO:
            pieces.append(points[:1])
        elif segment.degree <= 1:  # LINETO, or CLOSEPOLY: a line back to the contour's start
            pieces.append(points[-1:])
        else:
            pieces.append(segment(t))
    points = np.concatenate(pieces).astype(np.float64)
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(np.diff(points, axis=0) != 0.0, axis=1)
    outline = points[keep]
    outline.setflags(write=False)  # cached and shared
    return outline


def normalise(points: np.ndarray, half_size: float = FIGURE_HALF_SIZE) -> np.ndarray:
    """Centre ``points [M, 2]`` on their bounding box and scale to fit ``[-h, h]^2``.

    The scale is uniform (the longer side of the box becomes ``2 * half_size``),
    so the glyph keeps its proportions.
    """
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - (low + high) / 2.0) * (2.0 * half_size / float(np.max(high - low)))


def resample(polyline: np.ndarray, n_points: int) -> np.ndarray:
    """``n_points`` points evenly spaced by arc length along ``polyline [M, 2]``.

    Returns ``[n_points, 2]``: the first is ``polyline[0]``, the last
    ``polyline[-1]``, and consecutive points are ``L / (n_points - 1)`` apart
    *along* the polyline of length ``L`` (so at most that apart in a straight line).
    """
    if n_points < 2:
        raise ValueError(f"resample: n_points must be >= 2, got {n_points}")
    lengths = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    s = np.linspace(0.0, arc[-1], n_points)
    return np.stack([np.interp(s, arc, polyline[:, 0]), np.interp(s, arc, polyline[:, 1])], axis=1)


@functools.lru_cache(maxsize=512)
def glyph_points(char: str, n_points: int) -> np.ndarray:
    """The figure of ``char``: ``[n_points, 2]`` points on its normalised outline.

    ``resample(normalise(glyph_outline(char)), n_points)``, read-only (cached).
    """
    points = resample(normalise(glyph_outline(char)), n_points)
    points.setflags(write=False)
    return points


# -- rendering: numpy only -------------------------------------------------------------
GREY = (170, 170, 170)
INK = (31, 119, 180)
PEN = (214, 39, 40)


def to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Canvas points ``[N, 2]`` in ``[-1, 1]^2`` -> ``[N, 2]`` (row, column) of a ``size`` image.

    ``y`` points up, so it is flipped into the row.
    """
    scale = (size - 1) / 2.0
    cols = np.rint((points[:, 0] + 1.0) * scale)
    rows = np.rint((1.0 - points[:, 1]) * scale)
    return np.clip(np.stack([rows, cols], axis=1), 0, size - 1).astype(np.int64)


def draw_polyline(image: np.ndarray, pixels: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw the segments between consecutive ``pixels [N, 2]`` (row, col) into ``image [S, S, 3]``.

    A DDA line: each segment is sampled at one point per pixel along its longer
    axis, so lines have no gaps. A single pixel is drawn when ``N == 1``.
    """
    if len(pixels) == 1:
        image[pixels[0, 0], pixels[0, 1]] = colour
        return
    for (r0, c0), (r1, c1) in zip(pixels[:-1].tolist(), pixels[1:].tolist()):
        n = max(abs(r1 - r0), abs(c1 - c0)) + 1
        rows = np.rint(np.linspace(r0, r1, n)).astype(np.int64)
        cols = np.rint(np.linspace(c0, c1, n)).astype(np.int64)
        image[rows, cols] = colour


def render_canvas(
    figure: np.ndarray, ink: np.ndarray, pen: np.ndarray, size: int = 128
) -> np.ndarray:
    """The canvas as an RGB image, ``[size, size, 3]`` uint8.

    White background; the figure ``[F, 2]`` as a grey polyline; the pen's path
    ``ink [N, 2]`` over it in blue; the pen ``(2,)`` as a red 5x5 square.
    """
    image = np.full((size, size, 3), 255, np.uint8)
    draw_polyline(image, to_pixels(figure, size), GREY)
    draw_polyline(image, to_pixels(ink, size), INK)
    row, col = to_pixels(np.asarray(pen, np.float64).reshape(1, 2), size)[0]
    image[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = PEN
    return image


# -- the family ------------------------------------------------------------------------
class SketchEnv(TaskFamilyMixin[GlyphTask], gymnasium.Env):
    """``metarl/Sketch-v0`` (``sketch``): trace the outline of a letter or digit.

    * Task: :class:`GlyphTask`, ``char`` one of the 62 characters ``A-Z a-z 0-9``;
      ``sample_tasks`` draws uniformly from all 62. ``finite_tasks = True``.
    * Figure: the character's outline in DejaVu Sans (matplotlib's
      ``fonts/ttf/DejaVuSans.ttf``, via ``TextPath``): all its contours in the
      font's order, each Bezier segment flattened into 16 chords, concatenated
      into one polyline (the jumps between contours are part of it: the pen is
      always down); centred on its bounding box and scaled uniformly so the box's
      longer side spans ``[-0.8, 0.8]``; then resampled to ``H + 1`` points
      ``p_0 .. p_H`` evenly spaced along its length, where ``H`` is the
      ``figure_steps`` argument (default ``default_horizon = 100``). Set it to
      the episode length when running at another horizon, e.g. YAML
      ``env_kwargs: {figure_steps: 50}`` with ``--horizon 50``: the env cannot
      read the horizon itself, since ``gymnasium.make`` leaves
      ``env.unwrapped.spec.max_episode_steps`` at None (Gymnasium 1.x).
    * Canvas: ``[-1, 1]^2``. Start: the pen at ``p_0``, no noise; ``t = 0``.
    * Action: velocity, shape ``(2,)``, Box ``[-1, 1]^2``, clipped to it.
    * Dynamics: ``pen_{t+1} = clip(pen_t + 0.15 * clip(a_t, -1, 1), -1, 1)``
      (:data:`MAX_STEP`; clipped to the canvas). At ``H = 100`` every
      ``p_{k+1} - p_k`` of every character is within ``0.15`` per coordinate,
      so the figure can be followed exactly.
    * Observation: float32, shape ``(3,)``, Box ``[-2, 2]^2 x [0, 1]``:
      ``(pen_{t+1} - p_0, min(t + 1, H) / H)`` (at reset ``(0, 0, 0)``): the
      same for every character, so it never reveals the task.
    * Reward: at step ``t`` (0-based), ``-||pen_{t+1} - p_{min(t+1, H)}||_2 -
      0.01 * ||clip(a_t, -1, 1)||_2^2`` (:data:`ACTION_COST`). The action
      ``a_t = (p_{t+1} - p_t) / 0.15`` follows the figure exactly: distance 0
      at every step, the largest possible distance term.
    * Termination: never; truncation at the horizon (the TimeLimit of
      ``gymnasium.make``, 100 steps by default). Stepped past ``H`` the
      target stays at ``p_H``.
    * Pools (``sample_task_pools``, used by ``make_task_pools``): train tasks
      from the 42 :data:`TRAIN_CHARS`, test tasks from the 20 :data:`TEST_CHARS`
      (the digits and ``IOSXZ losxz``), so no test character is ever trained on.
    * ``info``: ``"task"`` and ``"distance"`` (the distance term, after the move).
    * Rendering: ``render_mode="rgb_array"`` gives a 128x128x3 uint8 image of
      the canvas: white, the figure ``p_0 .. p_H`` as a grey polyline, the
      pen's path so far in blue, the pen as a red 5x5 square.
    """

    task_type = GlyphTask
    varies = "goal"
    finite_tasks = True
    default_horizon: ClassVar[int] = 100
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}
    render_size: ClassVar[int] = 128

    def __init__(self, render_mode: str | None = None, figure_steps: int | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"SketchEnv: render_mode must be None or one of "
                f"{self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        # Not named "horizon": metarl's make_env(name, horizon=...) takes that keyword.
        self.horizon = self.default_horizon if figure_steps is None else int(figure_steps)
        if self.horizon < 1:
            raise ValueError(f"SketchEnv: figure_steps must be >= 1, got {figure_steps}")
        self.observation_space = spaces.Box(
            low=np.array([-2.0, -2.0, 0.0], np.float32),
            high=np.array([2.0, 2.0, 1.0], np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._figure = np.zeros((self.horizon + 1, 2))
        self._pen = (0.0, 0.0)
        self._t = 0
        self._ink: list[tuple[float, float]] = []

    # -- tasks ---------------------------------------------------------------------------
    def _sample_task(self, rng: np.random.Generator) -> GlyphTask:
        return GlyphTask(char=CHARACTERS[int(rng.integers(len(CHARACTERS)))])

    def _apply_task(self, task: GlyphTask) -> None:
        self._figure = glyph_points(task.char, self.horizon + 1)
        self._ink = []  # a new figure: the old ink would be drawn over it

    def sample_task_pools(
        self, n_train: int, n_test: int, rng: np.random.Generator
    ) -> tuple[list[GlyphTask], list[GlyphTask]]:
        """Train tasks from :data:`TRAIN_CHARS`, test tasks from :data:`TEST_CHARS`.

        Each pool takes distinct characters in a seeded random order while it
        can; past that, train draws with replacement and test cycles through
        its seeded order (so every test character appears equally often).
        """
        if n_train <= len(TRAIN_CHARS):
            train = rng.permutation(len(TRAIN_CHARS))[:n_train]
        else:
            train = rng.integers(len(TRAIN_CHARS), size=n_train)
        order = rng.permutation(len(TEST_CHARS))
        test = [order[i % len(order)] for i in range(n_test)]
        return (
            [GlyphTask(TRAIN_CHARS[int(i)]) for i in train],
            [GlyphTask(TEST_CHARS[int(i)]) for i in test],
        )

    # -- the episode ---------------------------------------------------------------------
    def _observation(self) -> np.ndarray:
        start_x, start_y = self._figure[0]
        time = min(self._t, self.horizon) / self.horizon
        return np.array([self._pen[0] - start_x, self._pen[1] - start_y, time], np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        task = self._require_task()
        super().reset(seed=seed)
        self._t = 0
        self._pen = (float(self._figure[0, 0]), float(self._figure[0, 1]))
        self._ink = [self._pen]
        return self._observation(), {"task": task, "distance": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        task = self._require_task()
        ax, ay = np.asarray(action, dtype=np.float64).reshape(2).tolist()
        # clip with Python floats: several times faster than np.clip on 2 numbers
        ax, ay = min(max(ax, -1.0), 1.0), min(max(ay, -1.0), 1.0)
        x = min(max(self._pen[0] + MAX_STEP * ax, -1.0), 1.0)
        y = min(max(self._pen[1] + MAX_STEP * ay, -1.0), 1.0)
        self._pen = (x, y)
        self._t += 1
        self._ink.append(self._pen)
        target_x, target_y = self._figure[min(self._t, self.horizon)]
        distance = math.hypot(x - target_x, y - target_y)
        reward = -distance - ACTION_COST * (ax * ax + ay * ay)
        return self._observation(), reward, False, False, {"task": task, "distance": distance}

    def render(self) -> np.ndarray | None:
        """The canvas as ``[128, 128, 3]`` uint8 (see the class docstring); None without a mode."""
        if self.render_mode is None:
            gymnasium.logger.warn("SketchEnv.render: no render_mode was given; nothing to render.")
            return None
        self._require_task()
        if not self._ink:
            raise gymnasium.error.ResetNeeded("SketchEnv.render: call reset() before render()")
        return render_canvas(self._figure, np.array(self._ink), self._pen, self.render_size)
