"""Watch a meta-policy adapt: render held-out tasks before and after each unit of adaptation.

``python -m metarl.evaluate RUN_DIR --video`` asks the learner for the policies
meta-test acts with (:meth:`~metarl.algos.base.ShowsAdaptation.adapted_actors`: for
MAML-style learners the policy before adapting and after each policy-gradient step,
adapted on the episodes meta-test samples; for RL2 one trial whose hidden state runs
through its episodes), plays one episode per column with each policy's *mean* action
(no exploration noise, so a render is reproducible), in this process, on an env made
with ``render_mode="rgb_array"``, and lays the frames out as a film:

* one row per task (a title bar naming it), one column per unit of adaptation
  (``before``, ``after 1 step``, ... or ``episode 1``, ``episode 2``, ...);
* every cell is a label strip of three lines (the column, ``mean action``, and the
  step and return so far) over the env's frame, fitted into the cell size;
* a film has ``F = horizon + 1`` frames (the frame after reset, then one per step);
  an episode that ends early holds its last frame. All cells play at once.

Geometry, in pixels, for ``R`` rows, ``C`` columns and cells of ``h x w``::

    width  = C * w + (C + 1) * PAD
    height = R * (TITLE_H + LABEL_H + h) + (R + 1) * PAD     (each rounded up to even)

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

Text is drawn with glyphs of DejaVu Sans Mono that matplotlib renders once per
character; no other font or imaging library is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.seeding import derive_seed

if TYPE_CHECKING:
    import gymnasium

    from metarl.algos.base import ActorRun

PAD = 2
"""Pixels between cells and around the film."""
LINE_H = 12
"""Height of one line of text (the glyph box)."""
GLYPH_W = 6
"""Width of one character: DejaVu Sans Mono's advance at 10 px is 6.02 px."""
TITLE_H = 14
"""Height of a row's title bar."""
LABEL_H = 3 * LINE_H + 2
"""Height of a cell's label strip: three lines of text."""
MIN_CELL = 48
"""The smallest cell side: the step counter then always fits, so no two consecutive frames
are the same and a GIF encoder merges none of them (the frame count stays as documented)."""
GIF_MAX_FRAMES = 100
"""The GIF keeps every ``ceil(F / GIF_MAX_FRAMES)``-th frame, to stay README-sized."""
DEFAULT_FPS = 20
"""Frame rate of families that do not say theirs (``metadata["render_fps"]``)."""
EXTRA_HINT = 'pip install "metarl[video]"'

BACKGROUND = (200, 200, 200)
TITLE_BG, TITLE_FG = (45, 45, 45), (255, 255, 255)
LABEL_BG, LABEL_FG, NOTE_FG = (238, 238, 238), (0, 0, 0), (90, 90, 90)
RENDER_KWARGS = {"camera_name": "track"}
"""Passed, with the cell's width and height, to families whose constructor takes them."""
GL_MODULES = ("mujoco", "OpenGL", "glfw", "gymnasium.envs.mujoco")
"""Where an error raised while rendering means a missing or broken OpenGL backend."""


class VideoError(Exception):
    """A film cannot be made here (no extra, no renderer, a learner without actors):
    bad input for the command line, one line and exit code 2."""


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


# -- text: glyphs rendered once by matplotlib, blitted with numpy ------------------------
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


@dataclasses.dataclass
class Episode:
    """One rendered episode.

    Attributes:
        frames: ``[F, h, w, 3]`` uint8: after reset, then after each step (``F = steps + 1``).
        returns: ``[F]`` the return so far at each frame (0 after reset).
    """

    frames: np.ndarray
    returns: np.ndarray


def play(
    env: gymnasium.Env,
    run: ActorRun,
    seeds: Sequence[int],
    *,
    horizon: int,
    cell: tuple[int, int],
) -> list[Episode]:
    """Play ``run``'s episodes on ``env`` (its task set) with the actor's mean action.

    The actor starts once and carries its state across the episodes, as in a sampler
    trial; it observes what it did: the mean action (unclipped), the float32 reward and
    the episode's end. Episode ``j`` resets with ``seeds[j]``.

    Args:
        seeds: one reset seed per episode of the run (``run.episodes`` of them).
        cell: ``(height, width)`` every frame is fitted into.
    """
    space = env.action_space
    low = np.asarray(space.low, np.float64).reshape(-1)
    high = np.asarray(space.high, np.float64).reshape(-1)
    run.actor.start(0, 1, 1)
    episodes = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        frames, returns, total = [fit_frame(env.render(), *cell)], [0.0], 0.0
        for t in range(horizon):
            obs32 = np.asarray(obs, np.float32).reshape(1, -1)
            mean, _log_std = run.actor.act(obs32.astype(np.float64))  # the mean: no noise
            action = mean.astype(np.float32)
            env_action = np.clip(action[0], low, high).astype(space.dtype, copy=False)
            obs, reward, terminated, truncated, _ = env.step(env_action)
            reward32 = np.float32(reward)
            total += float(reward32)
            frames.append(fit_frame(env.render(), *cell))
            returns.append(total)
            ended = bool(terminated or truncated) or t + 1 == horizon
            run.actor.observe(
                action.astype(np.float64), np.array([reward32], np.float64), np.array([ended])
            )
            if ended:
                break
        episodes.append(Episode(np.stack(frames), np.array(returns)))
    return episodes


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


def shoot(
    env: gymnasium.Env,
    tasks: Sequence[Any],
    runs: Sequence[Sequence[ActorRun]],
    *,
    unit: str,
    horizon: int,
    seed: int,
    cell: tuple[int, int],
    titles: Sequence[str],
) -> Film:
    """Render every task's runs: row ``i`` is ``tasks[i]``, its columns ``runs[i]``'s episodes.

    Episode ``k`` of task ``i`` (counted across its runs) resets with
    ``derive_seed(seed, "video", i, k)``.
    """
    cells = []
    for i, (task, task_runs) in enumerate(zip(tasks, runs)):
        env.unwrapped.set_task(task)
        row: list[Episode] = []
        for run in task_runs:
            seeds = [derive_seed(seed, "video", i, len(row) + j) for j in range(run.episodes)]
            row += play(env, run, seeds, horizon=horizon, cell=cell)
        cells.append(row)
    n_cols = {len(row) for row in cells}
    if len(n_cols) != 1:
        raise ValueError(f"every task needs the same number of episodes, got {sorted(n_cols)}")
    labels = [column_label(unit, k) for k in range(n_cols.pop())]
    fps = float(env.metadata.get("render_fps") or DEFAULT_FPS)
    return Film(list(titles), labels, cells, cell, fps)


# -- layout ----------------------------------------------------------------------------
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


# -- environments ---------------------------------------------------------------------
def require_extra() -> None:
    """A :class:`VideoError` naming the extra unless imageio and imageio-ffmpeg import."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as exc:
        raise VideoError(
            f"writing videos needs imageio and imageio-ffmpeg ({exc}): {EXTRA_HINT}"
        ) from exc


def _first_line(exc: BaseException, limit: int = 100) -> str:
    line = (str(exc).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _in_gl_module(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in GL_MODULES)


def is_gl_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) was raised inside MuJoCo's or OpenGL's code."""
    seen: BaseException | None = exc
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            if _in_gl_module(tb.tb_frame.f_globals.get("__name__", "")):
                return True
            tb = tb.tb_next
        if _in_gl_module(type(seen).__module__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def render_error(env_name: str, exc: BaseException) -> VideoError:
    """One line for a family that cannot render here, with what to do about it."""
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if is_gl_failure(exc):
        backend = os.environ.get("MUJOCO_GL")
        now = f"MUJOCO_GL={backend}" if backend else "MUJOCO_GL unset: glfw, which needs a display"
        return VideoError(
            f"rendering {env_name} needs an OpenGL backend: set MUJOCO_GL=egl (or osmesa) "
            f"where EGL (or OSMesa) is installed ({now}; {what})"
        )
    return VideoError(f"{env_name} cannot render rgb_array frames: {what}")


@contextlib.contextmanager
def _quiet_teardown() -> Iterator[None]:
    """Silence the errors a half-made MuJoCo renderer raises when it is collected
    (``Exception ignored in __del__``), and GLFW's warnings: the one line says it all."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        import gc

        gc.collect()  # while the hook is off
        sys.unraisablehook = hook


def _make_rendering(
    env_name: str, horizon: int, env_kwargs: dict, cell: tuple[int, int]
) -> gymnasium.Env:
    """The env, given as many of the cell size and :data:`RENDER_KWARGS` as it takes."""
    from metarl.registry import make_env

    size = {"width": cell[1], "height": cell[0]}
    for extra in ({**size, **RENDER_KWARGS}, size):
        with contextlib.suppress(TypeError):  # a family that does not take these keywords
            return make_env(
                env_name, horizon=horizon, render_mode="rgb_array", **extra, **env_kwargs
            )
    return make_env(env_name, horizon=horizon, render_mode="rgb_array", **env_kwargs)


def open_render_env(
    env_name: str,
    *,
    horizon: int,
    env_kwargs: dict,
    cell: tuple[int, int],
    probe_task: Any,
) -> gymnasium.Env:
    """An env of ``env_name`` that renders ``rgb_array`` frames, checked on ``probe_task``.

    ``width`` and ``height`` (the cell's) go to families that take them (MuJoCo's),
    with ``camera_name="track"``: every Gymnasium locomotion model has that camera, and
    it follows the body (the default free camera stays put while the cheetah runs out
    of the picture; a model without it keeps the free camera). Other families render at
    their own size and :func:`fit_frame` fits their frames. A :class:`VideoError` in
    one line if the family or this machine cannot render.
    """
    env, error = None, None
    with _quiet_teardown():
        try:
            env = _make_rendering(env_name, horizon, env_kwargs, cell)
            env.unwrapped.set_task(probe_task)
            env.reset(seed=0)
            frame = env.render()
            if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] >= 3):
                raise TypeError(f"render() returned {type(frame).__name__}, not an RGB array")
        except Exception as exc:  # noqa: BLE001 - any failure to render is the one line below
            error = render_error(env_name, exc)
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()
        if error is not None:
            # Raised out here and with no env left in this frame, so the half-made renderer
            # is collected (quietly) on the way out rather than noisily at exit.
            env = None
            raise error
    return env


# -- output ---------------------------------------------------------------------------
def gif_stride(n_frames: int) -> int:
    """Keep every ``s``-th frame in the GIF: at most :data:`GIF_MAX_FRAMES` frames."""
    return max(1, math.ceil(n_frames / GIF_MAX_FRAMES))


def write_mp4(path: Path, images: Iterator[np.ndarray], fps: float) -> Path:
    """H.264 MP4 (yuv420p, so every player shows it) of ``images`` at ``fps``."""
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
