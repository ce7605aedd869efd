"""An env that renders here, or one line saying why not: the video extra, the family's
``rgb_array`` support and the OpenGL backend are checked before anything is filmed."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.gl import is_gl_failure
from metarl.video import EXTRA_HINT, VideoError

if TYPE_CHECKING:
    import gymnasium

RENDER_KWARGS = {"camera_name": "track"}
"""Passed, with the cell's width and height, to families whose constructor takes them."""


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
    their own size and :func:`~metarl.video.layout.fit_frame` fits their frames. A
    :class:`VideoError` in one line if the family or this machine cannot render.
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
