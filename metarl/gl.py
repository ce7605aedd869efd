"""Is an error OpenGL's? The diagnosis shared by rendering and by making MuJoCo envs.

A missing or broken OpenGL backend (``MUJOCO_GL=egl`` where EGL is absent, ``glfw``
without a display) surfaces as whatever MuJoCo, PyOpenGL or GLFW raise, from deep in
their code. :func:`is_gl_failure` recognises such an error by where it was raised, so
callers can replace it with one line that says what to set. Importing this module
imports nothing (no MuJoCo, no OpenGL, none of :mod:`metarl.video`).
"""

from __future__ import annotations

GL_MODULES = ("mujoco", "OpenGL", "glfw", "gymnasium.envs.mujoco")
"""Where an error raised while rendering means a missing or broken OpenGL backend."""


def in_gl_module(module: str) -> bool:
    """Whether the dotted ``module`` name is one of :data:`GL_MODULES` or inside one."""
    return any(module == name or module.startswith(name + ".") for name in GL_MODULES)


def is_gl_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) was raised inside MuJoCo's or OpenGL's code.

    Walks the chain ``exc``, its ``__cause__`` (or ``__context__``), ...: true when a
    frame of a traceback runs in :data:`GL_MODULES`, or an exception's class is defined
    there (``mujoco.FatalError``).
    """
    seen: BaseException | None = exc
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            if in_gl_module(tb.tb_frame.f_globals.get("__name__", "")):
                return True
            tb = tb.tb_next
        if in_gl_module(type(seen).__module__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
