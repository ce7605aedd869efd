"""Sampler backends by name, the protocol they follow, and what every backend shares.

A backend runs a :class:`~metarl.sampling.Sampler`'s requests somewhere: in this
process or worker processes of this machine (``local``), or in Ray actors here
or on a cluster (``ray``). ``--sampler``'s choices, its checks in the config and
``metarl.evaluate``'s ``--sampler`` come from :data:`BACKENDS`; adding a backend
is a module with a class that follows :class:`Backend` plus one entry here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from metarl.sampling.batch import NonFiniteEnvError, SamplerError
from metarl.sampling.rollout import RolloutFailure, RolloutRequest

Blocks = Sequence[tuple[int, int, RolloutRequest]]
"""One ``(a, b, request)`` per contiguous block of tasks ``[a, b)`` of a call."""


class Backend(Protocol):
    """Where a :class:`~metarl.sampling.Sampler` runs its requests.

    ``run(tasks, blocks)`` returns, in block order, each block's arrays (as
    :func:`~metarl.sampling.worker.run_request` returns them) and the seconds
    each block's worker was busy. Errors are :class:`SamplerError` s.
    """

    n_workers: int  # blocks per call; 0 = one block, run in-process
    obs_dim: int
    act_dim: int
    info_keys: tuple[str, ...]  # the family's episode_info_keys, as the pool read them
    fast_path: bool
    batched_path: bool  # waves stepped in one mujoco.batch call (metarl.sampling.mujoco_batch)

    @property
    def worker_pids(self) -> list[int]: ...

    def run(self, tasks: tuple, blocks: Blocks) -> tuple[list[dict], tuple[float, ...]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendSpec:
    """A backend's registry entry.

    Attributes:
        name: the ``--sampler`` name.
        entry_point: ``"module:Class"``, imported when a sampler of this backend is made.
        summary: one line for help texts.
        options: keyword options only this backend takes (also config keys of the same
            name, e.g. ``ray_address``); giving one to another backend is an error.
        in_process: whether ``workers=0`` (collect in the learner's process) is possible.
        requires: a module that must be importable, with ``install_hint`` saying how.
    """

    name: str
    entry_point: str
    summary: str
    options: tuple[str, ...] = ()
    in_process: bool = True
    requires: str | None = None
    install_hint: str = ""

    def load(self) -> type:
        module, _, cls = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), cls)

    def missing_requirement(self) -> str | None:
        """``None`` if the backend can run here, else what to install (one line)."""
        if self.requires is None or _importable(self.requires):
            return None
        return f"needs {self.requires}, which is not installed here: {self.install_hint}"


BACKENDS: dict[str, BackendSpec] = {
    "local": BackendSpec(
        "local",
        "metarl.sampling.local:LocalBackend",
        "worker processes of this machine (0 workers = in-process)",
        options=("mp_context",),
    ),
    "ray": BackendSpec(
        "ray",
        "metarl.sampling.ray_backend:RayBackend",
        "Ray actors, on this machine or a cluster",
        options=("ray_address", "max_retries"),
        in_process=False,
        requires="ray",
        install_hint='pip install "metarl[ray]"',
    ),
}


def backend_spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def check_backend_options(name: str, options: dict[str, Any]) -> None:
    """A ValueError if an option set (not None or empty) belongs to another backend."""
    spec = backend_spec(name)
    for other in BACKENDS.values():
        for key in other.options:
            if other is not spec and options.get(key) not in (None, ""):
                raise ValueError(f"{key}={options[key]!r} needs backend={other.name!r}")


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def rollout_error(failure: RolloutFailure, who: str) -> SamplerError:
    """The :class:`SamplerError` (or :class:`NonFiniteEnvError`) that reports ``failure``."""
    cls = NonFiniteEnvError if failure.kind == "nonfinite" else SamplerError
    text = failure.message
    if who:
        text = f"{who}: {text}"
    if failure.tb:
        text += f"\n--- {'worker ' if who else ''}traceback ---\n{failure.tb}"
    return cls(text)


def describe_block(tasks: tuple, a: int, b: int) -> str:
    """``tasks a..b-1 (a: task, ...)`` for messages about a block's worker."""
    shown = ", ".join(f"{i}: {tasks[i]!r}" for i in range(a, min(b, a + 3)))
    more = ", ..." if b - a > 3 else ""
    return f"tasks {a}..{b - 1} ({shown}{more})"
