"""The local backend of the :class:`~metarl.sampling.Sampler`: this process or worker processes.

``workers=0`` collects in the learner's process (debugging, tests); otherwise one
persistent worker process per block of tasks, each with its own envs, talking
to the learner over a pipe one message per call (:mod:`metarl.sampling.worker`).
A worker that dies raises a :class:`~metarl.sampling.SamplerError` at once and
the workers are restarted by the next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from metarl.sampling.backends import Blocks, describe_block, rollout_error
from metarl.sampling.batch import SamplerError, UnguardedMainError
from metarl.sampling.rollout import RolloutFailure
from metarl.sampling.worker import (
    SINGLE_THREAD_ENV,
    UNGUARDED_MAIN_EXIT,
    WorkerInit,
    exit_if_spawn_bootstrapping,
    ignore_stop_signals,
    make_pool,
    pool_info,
    run_request,
    unguarded_main_hint,
    worker_main,
)

_POLL_S = 0.2


@dataclass
class _Worker:
    process: Any
    conn: Any
    pid: int


class LocalBackend:
    """This machine: in-process (``workers=0``) or one worker process per block (pipes)."""

    def __init__(
        self,
        init: WorkerInit,
        *,
        workers: int | None,
        mp_context: str | None = None,
        start_timeout: float = 300.0,
        timeout: float | None = None,
    ) -> None:
        self.init = init
        self.family = init.family
        self.n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if self.n_workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in-process), got {workers}")
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._ctx = mp.get_context(mp_context or "spawn")
        self._workers: list[_Worker] = []
        self._pool = None
        self._call_id = 0
        if self.n_workers == 0:
            self._pool = make_pool(
                init.family, init.horizon, init.env_kwargs, init.fast, init.batched
            )
            info = pool_info(self._pool)
        else:
            info = self._start_workers()
        self.obs_dim: int = info["obs_dim"]
        self.act_dim: int = info["act_dim"]
        self.info_keys: tuple[str, ...] = tuple(info["info_keys"])
        self.fast_path = bool(info["fast_path"])
        self.batched_path = bool(info["batched_path"])

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def run(self, tasks: tuple, blocks: Blocks) -> tuple[list[dict], tuple[float, ...]]:
        if self.n_workers > 0:
            return self._sample_workers(tasks, blocks)
        results, busy = [], []
        for _, _, req in blocks:
            start = time.perf_counter()
            try:
                results.append(run_request(self._pool, self.init.spec, req, self.init.max_envs))
            except RolloutFailure as failure:
                raise rollout_error(failure, "") from failure
            busy.append(time.perf_counter() - start)
        return results, tuple(busy)

    def close(self) -> None:
        self._stop_workers()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- worker processes ---------------------------------------------------------
    def _start_workers(self) -> dict:
        exit_if_spawn_bootstrapping()  # a worker re-running an unguarded script: stop there
        init = dataclasses.replace(self.init, parent_pid=os.getpid())
        saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
        os.environ.update(SINGLE_THREAD_ENV)
        # Children inherit ignored signals, so they are protected from their first instant.
        in_main = threading.current_thread() is threading.main_thread()
        handlers = ignore_stop_signals() if in_main else {}
        try:
            for _ in range(self.n_workers):
                parent, child = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=worker_main, args=(child, init), daemon=True, name="metarl-sampler"
                )
                proc.start()
                child.close()
                self._workers.append(_Worker(proc, parent, proc.pid))
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        infos = []
        deadline = time.monotonic() + self.start_timeout
        try:
            for i, w in enumerate(self._workers):
                msg = self._recv(w, i, deadline, during="start-up")
                if msg[0] == "init_error":
                    raise SamplerError(
                        f"worker {i} could not make {self.family.name!r}: {msg[1]}\n"
                        f"--- worker traceback ---\n{msg[2]}"
                    )
                infos.append(msg[1])
        except BaseException:
            self._stop_workers()
            raise
        return infos[0]

    def _recv(self, w: _Worker, index: int, deadline: float | None, during: str) -> tuple:
        while True:
            if w.conn.poll(_POLL_S):
                try:
                    return w.conn.recv()
                except (EOFError, OSError):  # the pipe closed: the worker is gone
                    raise self._death_error(w, index, during) from None
            if not w.process.is_alive() and not w.conn.poll(0):
                raise self._death_error(w, index, during)
            if deadline is not None and time.monotonic() > deadline:
                raise SamplerError(
                    f"worker {index} (pid {w.pid}) of {self.family.name!r} did not answer "
                    f"within the time limit during {during}"
                )

    def _death_error(self, w: _Worker, index: int, during: str) -> SamplerError:
        """The error for a worker that died: one line naming the fix when it died re-running
        an unguarded script (:func:`~metarl.sampling.worker.exit_if_spawn_bootstrapping`)."""
        message = self._death_message(w, index, during)
        if w.process.exitcode == UNGUARDED_MAIN_EXIT:
            main_file = getattr(sys.modules.get("__main__"), "__file__", None)
            return UnguardedMainError(unguarded_main_hint(main_file))
        return SamplerError(message)

    def _death_message(self, w: _Worker, index: int, during: str) -> str:
        w.process.join(0.1)
        code = w.process.exitcode
        how = (
            f"was killed by signal {-code}"
            if code is not None and code < 0
            else (f"exited with code {code}")
        )
        return f"worker {index} (pid {w.pid}) of {self.family.name!r} {how} during {during}"

    def _stop_workers(self, *, graceful: bool = True) -> None:
        """Ask the workers to exit (``graceful``: give them 2 s), then kill them.

        Workers ignore SIGTERM (see :mod:`metarl.sampling.worker`), so SIGKILL it is.
        """
        workers, self._workers = self._workers, []
        for w in workers:
            with contextlib.suppress(BrokenPipeError, EOFError, OSError):
                w.conn.send(("close",))
        deadline = time.monotonic() + (2.0 if graceful else 0.0)
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(1.0)
            w.conn.close()

    def _sample_workers(self, tasks: tuple, blocks: Blocks):
        if not self._workers:  # restarted after a worker died
            self._start_workers()
        self._call_id += 1
        call_id = self._call_id
        pending: dict[int, tuple[int, int]] = {}
        for w_index, (a, b, req) in enumerate(blocks):
            w = self._workers[w_index]
            try:
                w.conn.send(("sample", call_id, req))
            except (BrokenPipeError, EOFError, OSError):
                self._fail_dead(w, w_index, tasks, a, b)
            pending[w_index] = (a, b)
        results: dict[int, dict] = {}
        busy: dict[int, float] = {}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while pending:
                conns = {self._workers[i].conn: i for i in pending}
                for conn in mp.connection.wait(list(conns), timeout=_POLL_S):
                    i = conns[conn]
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):  # the pipe closed: the worker is gone
                        a, b = pending[i]
                        self._fail_dead(self._workers[i], i, tasks, a, b)
                    if msg[1] != call_id:
                        continue  # a stale answer of an earlier, failed call
                    if msg[0] == "error":
                        raise rollout_error(RolloutFailure(msg[2], msg[3], msg[4]), f"worker {i}")
                    results[i], busy[i] = msg[2], msg[3]
                    del pending[i]
                for i, (a, b) in list(pending.items()):
                    w = self._workers[i]
                    if not w.process.is_alive() and not w.conn.poll(0):  # (poll: EOF or a reply)
                        self._fail_dead(w, i, tasks, a, b)
                if deadline is not None and time.monotonic() > deadline:
                    raise SamplerError(
                        f"sampling {self.family.name!r} took longer than {self.timeout} s; "
                        f"workers {sorted(pending)} did not answer"
                    )
        except KeyboardInterrupt:
            self._stop_workers(graceful=False)  # they are mid-call; restarted by the next call
            raise
        order = range(len(blocks))
        return [results[i] for i in order], tuple(busy[i] for i in order)

    def _fail_dead(self, w: _Worker, index: int, tasks: tuple, a: int, b: int) -> None:
        msg = self._death_message(w, index, f"sampling {describe_block(tasks, a, b)}")
        self._stop_workers(graceful=False)  # the next sample() starts fresh workers
        raise SamplerError(
            msg + "; no traceback (the process died); workers are restarted on the next sample()"
        )
