"""A persistent rollout worker process and its handle in the learner process.

Protocol over one ``multiprocessing`` pipe, one message per *call*, never per step:

* learner -> worker: ``("sample", call_id, RolloutRequest)`` or ``("close",)``;
* worker -> learner: ``("ready", info)`` once after start-up (``info`` is
  :func:`pool_info`; or ``("init_error", message, traceback)``), then per request
  ``("result", call_id, arrays, busy_s)`` or ``("error", call_id, kind, message, traceback)``.

Workers ignore SIGINT and SIGTERM (the learner handles them and closes its workers),
exit when the pipe closes or the parent process is gone, and never touch torch
or a GPU: they get numpy parameter arrays and return numpy arrays.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metarl.registry import FamilySpec, register_family, resolve
from metarl.sampling.rollout import EnvPool, PolicySpec, RolloutFailure, RolloutRequest, collect

# BLAS threads would fight the other workers for the cores; set in the child's
# environment before numpy is imported there.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class WorkerInit:
    """Everything a worker needs to build its envs (picklable)."""

    family: FamilySpec
    horizon: int
    env_kwargs: dict
    spec: PolicySpec
    fast: bool
    max_envs: int
    parent_pid: int
    batched: bool = True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

UNGUARDED_MAIN_EXIT = 87
"""The exit code of a spawned worker that found itself re-running an unguarded script
(:func:`exit_if_spawn_bootstrapping`); the learner turns it into one line."""


def spawn_bootstrapping() -> bool:
    """Whether this process is a spawned child still importing its parent's main module.

    ``multiprocessing`` re-runs the parent's script (as ``__mp_main__``) in every child it
    starts by spawn, before the child's target runs; a script that trains at its top level,
    without ``if __name__ == "__main__":``, tries to start workers again from there.
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def exit_if_spawn_bootstrapping() -> None:
    """Exit at once, silently, with :data:`UNGUARDED_MAIN_EXIT` in a child that re-runs an
    unguarded script and reached the start of rollout workers (instead of Python's
    bootstrapping ``RuntimeError`` and its traceback); the parent says what to do."""
    if spawn_bootstrapping():
        raise SystemExit(UNGUARDED_MAIN_EXIT)


def unguarded_main_hint(main_file: str | None) -> str:
    """The one line for workers that died re-running the script ``main_file``."""
    script = f"your script {main_file}" if main_file else "your main module"
    return (
        f"the rollout workers start by spawn and re-run {script}, whose top level starts "
        'training again: put the training call under `if __name__ == "__main__":`, '
        "or use --workers 0"
    )


def ignore_stop_signals() -> dict:
    """Ignore SIGINT and SIGTERM; returns the previous handlers (main thread only)."""
    return {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}


def run_request(
    pool: EnvPool,
    spec: PolicySpec,
    req: RolloutRequest,
    max_envs: int,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Collect one request with the actor ``spec`` makes of its parameters."""
    actor = spec.make_actor(req.params)
    return collect(pool, actor, req, max_envs=max_envs, should_stop=should_stop)


def make_pool(
    family: FamilySpec, horizon: int, env_kwargs: dict, fast: bool, batched: bool = True
) -> EnvPool:
    """An :class:`EnvPool` for ``family``, registering it here if this process lacks it."""
    try:
        known = resolve(family.name)
    except KeyError:
        known = None
    if known is None or known.entry_point != family.entry_point or known.gym_id != family.gym_id:
        register_family(
            family.name,
            family.entry_point,
            varies=family.varies,
            horizon=family.horizon,
            gym_id=family.gym_id,
            summary=family.summary,
            kwargs=family.kwargs,
            override=True,
        )
    import gymnasium

    def make() -> Any:
        return gymnasium.make(family.gym_id, max_episode_steps=horizon, **env_kwargs)

    return EnvPool(make, family=family.name, fast=fast, batched=batched)


def pool_info(pool: EnvPool) -> dict:
    """What every backend learns of a pool once, at start-up: the family's sizes and
    ``info_keys`` (the :class:`~metarl.sampling.Sampler` exposes them), the fast and batched
    paths, the pid."""
    return {
        "obs_dim": pool.obs_dim,
        "act_dim": pool.act_dim,
        "info_keys": pool.info_keys,
        "fast_path": pool.uses_fast_path,
        "batched_path": pool.uses_batched_path,
        "pid": os.getpid(),
    }


def worker_main(conn: Any, init: WorkerInit) -> None:
    """Entry point of a worker process: build envs, then serve requests until closed."""
    # A terminal's Ctrl-C and a job manager's SIGTERM reach the whole process group;
    # the learner handles them (finish the iteration, checkpoint, close us).
    ignore_stop_signals()
    try:
        pool = make_pool(init.family, init.horizon, init.env_kwargs, init.fast, init.batched)
    except BaseException as exc:  # noqa: BLE001 - reported to the learner
        _send(conn, ("init_error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        return
    if not _send(conn, ("ready", pool_info(pool))):
        return
    try:
        while True:
            if not conn.poll(1.0):
                if os.getppid() != init.parent_pid:  # the learner is gone
                    return
                continue
            msg = conn.recv()
            if msg[0] == "close":
                return
            _, call_id, req = msg
            start = time.perf_counter()
            try:
                arrays = run_request(
                    pool,
                    init.spec,
                    req,
                    init.max_envs,
                    should_stop=lambda: os.getppid() != init.parent_pid,
                )
            except RolloutFailure as failure:
                if failure.kind == "abort":
                    return
                reply = ("error", call_id, failure.kind, failure.message, failure.tb)
            except Exception as exc:  # noqa: BLE001 - reported to the learner
                reply = (
                    "error",
                    call_id,
                    "env",
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                )
            else:
                reply = ("result", call_id, arrays, time.perf_counter() - start)
            if not _send(conn, reply):
                return
    except (EOFError, OSError):
        return
    finally:
        pool.close()


def _send(conn: Any, msg: tuple) -> bool:
    try:
        conn.send(msg)
        return True
    except (BrokenPipeError, EOFError, OSError):
        return False
