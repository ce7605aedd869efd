"""The Sampler: task-major vectorised rollouts on CPU, in-process, in worker processes or on Ray.

``make_sampler(name, spec=..., seed=..., workers=...)`` builds one. Each call of
:meth:`Sampler.sample` splits the tasks into contiguous blocks, one per worker
(worker ``w`` gets tasks ``[a_w, b_w)``), ships each worker its block's tasks
and parameter arrays in one message, and gets the block's whole episodes back
in one message. Inside a worker every (task, episode) pair is a sub-env stepped
in lock-step with one batched numpy policy evaluation per step (see
:mod:`metarl.sampling.rollout`). Env instances persist across calls.

The :class:`Sampler` does what every backend shares (argument checks, one
request per task block, joining the blocks into a batch, timing); a
:class:`Backend` only runs the requests: :class:`LocalBackend` in-process or in
worker processes of this machine, :class:`~metarl.sampling.ray_backend.RayBackend`
in Ray actors. Every backend runs a request with
:func:`~metarl.sampling.worker.run_request`.

Sampling is data-only: it never changes weights. All randomness of a call
comes from ``(seed, batch_key, task index, episode index)``, so the batch is
identical for any number of workers (0 = in-process) and any backend.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from metarl.policies.gaussian_mlp import MLPSpec
from metarl.policies.recurrent import GRUSpec
from metarl.registry import resolve
from metarl.sampling.batch import EpisodeBatch, NonFiniteEnvError, SamplerError
from metarl.sampling.rollout import BlockRequest, RolloutFailure
from metarl.sampling.trials import TrialBatch, TrialRequest, to_trial_batch
from metarl.sampling.worker import (
    SINGLE_THREAD_ENV,
    WorkerInit,
    ignore_stop_signals,
    make_pool,
    run_request,
    worker_main,
)

_POLL_S = 0.2


@dataclass(frozen=True)
class SampleStats:
    """Timing of the last :meth:`Sampler.sample` call (the trainer logs it)."""

    wall_s: float
    env_steps: int
    env_steps_per_s: float
    n_tasks: int
    episodes_per_task: int
    workers: int
    worker_busy_s: tuple[float, ...]  # time each worker spent collecting its block


Request = BlockRequest | TrialRequest
Blocks = Sequence[tuple[int, int, Request]]


class Backend(Protocol):
    """Where a :class:`Sampler` runs its requests (the only part that differs per backend).

    ``run(tasks, blocks)`` gets one ``(a, b, request)`` per contiguous block of
    tasks ``[a, b)`` and returns, in block order, each block's arrays (as
    :func:`~metarl.sampling.worker.run_request` returns them) and the seconds
    each block's worker was busy. Errors are :class:`SamplerError` s.
    """

    n_workers: int  # blocks per call; 0 = one block, run in-process
    obs_dim: int
    act_dim: int
    fast_path: bool

    @property
    def worker_pids(self) -> list[int]: ...

    def run(self, tasks: tuple, blocks: Blocks) -> tuple[list[dict], tuple[float, ...]]: ...

    def close(self) -> None: ...


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
        mp_context: str = "spawn",
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
        self._ctx = mp.get_context(mp_context)
        self._workers: list[_Worker] = []
        self._pool = None
        self._call_id = 0
        if self.n_workers == 0:
            self._pool = make_pool(init.family, init.horizon, init.env_kwargs, init.fast)
            info = {
                "obs_dim": self._pool.obs_dim,
                "act_dim": self._pool.act_dim,
                "fast_path": self._pool.uses_fast_path,
            }
        else:
            info = self._start_workers()
        self.obs_dim: int = info["obs_dim"]
        self.act_dim: int = info["act_dim"]
        self.fast_path = bool(info["fast_path"])

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
                    raise SamplerError(self._death_message(w, index, during)) from None
            if not w.process.is_alive() and not w.conn.poll(0):
                raise SamplerError(self._death_message(w, index, during))
            if deadline is not None and time.monotonic() > deadline:
                raise SamplerError(
                    f"worker {index} (pid {w.pid}) of {self.family.name!r} did not answer "
                    f"within the time limit during {during}"
                )

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


BACKENDS = ("local", "ray")


class Sampler:
    """Collects :class:`EpisodeBatch` es of a task family; see the module docstring.

    Use :func:`make_sampler` to build one. A context manager; :meth:`close`
    stops the workers (also done at interpreter exit).
    """

    def __init__(
        self,
        env_name: str,
        *,
        spec: MLPSpec | GRUSpec,
        seed: int,
        workers: int | None = None,
        horizon: int | None = None,
        env_kwargs: dict | None = None,
        fast: bool = True,
        max_envs_per_worker: int = 256,
        backend: str = "local",
        mp_context: str = "spawn",
        ray_address: str | None = None,
        max_retries: int = 3,
        start_timeout: float = 300.0,
        timeout: float | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if ray_address and backend != "ray":
            raise ValueError(f"ray_address={ray_address!r} needs backend='ray'")
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in-process), got {workers}")
        self.family = resolve(env_name)
        self.env_name = env_name
        self.spec = spec
        self.seed = int(seed)
        self.horizon = int(horizon or self.family.horizon)
        self.env_kwargs = dict(env_kwargs or {})
        self.fast = fast
        self.max_envs_per_worker = int(max_envs_per_worker)
        self.backend_name = backend
        self._closed = False
        self.last_stats: SampleStats | None = None
        init = WorkerInit(
            family=self.family,
            horizon=self.horizon,
            env_kwargs=self.env_kwargs,
            spec=spec,
            fast=fast,
            max_envs=self.max_envs_per_worker,
            parent_pid=os.getpid(),
        )
        self._backend: Backend
        if backend == "ray":
            from metarl.sampling.ray_backend import RayBackend

            self._backend = RayBackend(
                init,
                workers=workers,
                address=ray_address,
                max_retries=max_retries,
                start_timeout=start_timeout,
                timeout=timeout,
            )
        else:
            self._backend = LocalBackend(
                init,
                workers=workers,
                mp_context=mp_context,
                start_timeout=start_timeout,
                timeout=timeout,
            )
        self.n_workers = self._backend.n_workers
        self.obs_dim: int = self._backend.obs_dim
        self.act_dim: int = self._backend.act_dim
        self.fast_path = self._backend.fast_path
        if (spec.obs_dim, spec.act_dim) != (self.obs_dim, self.act_dim):
            self.close()
            raise ValueError(
                f"{self.family.name!r} has obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
                f"but the policy spec has obs_dim={spec.obs_dim}, act_dim={spec.act_dim}"
            )
        _LIVE.add(self)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty in-process; Ray actors may be on other hosts)."""
        return self._backend.worker_pids

    # -- sampling -----------------------------------------------------------------
    def sample(
        self,
        tasks: Sequence,
        params: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
        *,
        episodes_per_task: int,
        batch_key: tuple[int | str, ...],
    ) -> EpisodeBatch:
        """Run ``episodes_per_task`` episodes of each task; see :class:`EpisodeBatch`.

        Args:
            tasks: the ``T`` tasks (family task objects).
            params: one numpy param dict per task (keys as
                ``GaussianMLPPolicy.named_parameters``) or one dict for all tasks.
            episodes_per_task: ``E``.
            batch_key: unique key of this call, e.g. ``(iteration, "train", step)``;
                with the sampler's seed it determines all randomness of the call.
        """
        self._check_open()
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("sample: tasks is empty")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        batch_key = _check_batch_key(batch_key)
        stacked, shared = _stack_params(params, len(tasks), self.spec)

        def request(a: int, b: int) -> BlockRequest:
            # a shared dict stays one object, so a backend can ship it once for every block
            block_params = stacked if shared else {k: v[a:b] for k, v in stacked.items()}
            return BlockRequest(
                tasks[a:b], range(a, b), block_params, episodes_per_task, self.horizon,
                self.seed, batch_key,
            )  # fmt: skip

        start = time.perf_counter()
        arrays, busy = self._run(tasks, request)
        batch = _to_batch(arrays, tasks)
        self._record(start, batch.env_steps, len(tasks), episodes_per_task, busy)
        return batch

    def sample_trials(
        self,
        tasks: Sequence,
        params: Mapping[str, np.ndarray],
        *,
        trials_per_task: int,
        episodes_per_trial: int,
        batch_key: tuple[int | str, ...],
    ) -> TrialBatch:
        """RL2 trials: ``trials_per_task`` trials of ``episodes_per_trial`` episodes per task.

        The hidden state of the GRU policy (``params``, one shared dict) is carried
        across the episodes of a trial and reset between trials; see
        :mod:`metarl.sampling.trials` for the layout and :class:`TrialBatch` for shapes.
        """
        self._check_open()
        if not isinstance(self.spec, GRUSpec):
            raise TypeError(f"sample_trials needs a sampler made with a GRUSpec, not {self.spec}")
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("sample_trials: tasks is empty")
        if trials_per_task < 1 or episodes_per_trial < 1:
            raise ValueError(
                f"trials_per_task and episodes_per_trial must be >= 1, "
                f"got {trials_per_task} and {episodes_per_trial}"
            )
        batch_key = _check_batch_key(batch_key)
        arrays_params = {k: _as_numpy(v) for k, v in params.items()}

        def request(a: int, b: int) -> TrialRequest:
            return TrialRequest(
                tasks[a:b], range(a, b), arrays_params, trials_per_task, episodes_per_trial,
                self.horizon, self.seed, batch_key,
            )  # fmt: skip

        start = time.perf_counter()
        arrays, busy = self._run(tasks, request)
        batch = to_trial_batch(arrays, tasks)
        self._record(start, batch.env_steps, len(tasks), trials_per_task * episodes_per_trial, busy)
        return batch

    def _check_open(self) -> None:
        if self._closed:
            raise SamplerError(f"the sampler of {self.family.name!r} is closed")

    def _record(self, start: float, steps: int, n_tasks: int, episodes: int, busy) -> None:
        wall = time.perf_counter() - start
        self.last_stats = SampleStats(
            wall, steps, steps / max(wall, 1e-9), n_tasks, episodes, self.n_workers, busy
        )

    def _run(self, tasks: tuple, request: Callable[[int, int], Request]) -> tuple[dict, tuple]:
        """Split the tasks into one contiguous block per worker, run them, join the arrays."""
        splits = np.array_split(np.arange(len(tasks)), max(1, self.n_workers))
        ranges = [(int(s[0]), int(s[-1]) + 1) for s in splits if s.size]
        results, busy = self._backend.run(tasks, [(a, b, request(a, b)) for a, b in ranges])
        if len(results) == 1:  # the batch owns its memory (Ray's arrays are read-only views)
            return {k: v if v.flags.writeable else v.copy() for k, v in results[0].items()}, busy
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}, busy

    # -- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and close the envs; idempotent."""
        if self._closed:
            return
        self._closed = True
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
        _LIVE.discard(self)

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __repr__(self) -> str:
        return (
            f"Sampler({self.family.name!r}, backend={self.backend_name!r}, "
            f"workers={self.n_workers}, horizon={self.horizon}, fast_path={self.fast_path})"
        )


def make_sampler(
    env_name: str,
    *,
    spec: MLPSpec | GRUSpec,
    seed: int,
    workers: int | None = None,
    horizon: int | None = None,
    env_kwargs: dict | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    **options: Any,
) -> Sampler:
    """A :class:`Sampler` of the family ``env_name`` for policies of architecture ``spec``.

    ``workers``: ``None`` = one per core (``os.cpu_count()``; with Ray, the
    cluster's CPUs), ``0`` = in-process (debugging, tests; local backend only).
    ``horizon``: episode length (default: the family's). ``backend``:
    ``"local"`` (worker processes of this machine) or ``"ray"`` (Ray actors;
    needs ``pip install "metarl[ray]"``); ``ray_address``: ``None`` = use the
    Ray instance this process already has or start a local one, ``"auto"`` or
    ``"HOST:PORT"`` = join that cluster. ``options``: ``fast`` (step
    ``env.unwrapped`` when only passive wrappers sit on top; bit-identical,
    default True), ``max_envs_per_worker`` (sub-envs stepped at once per
    worker, default 256), ``mp_context`` (local: ``"spawn"`` or
    ``"forkserver"``), ``max_retries`` (Ray: times a block whose actor died is
    collected again in one call, default 3), ``timeout`` (seconds per call,
    default none).
    """
    return Sampler(
        env_name,
        spec=spec,
        seed=seed,
        workers=workers,
        horizon=horizon,
        env_kwargs=env_kwargs,
        backend=backend,
        ray_address=ray_address,
        **options,
    )


# -- helpers ------------------------------------------------------------------------
def _check_batch_key(batch_key: Any) -> tuple:
    if not isinstance(batch_key, tuple) or not batch_key:
        raise TypeError(f"batch_key must be a non-empty tuple of ints and strs, got {batch_key!r}")
    for k in batch_key:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer, str)):
            raise TypeError(f"batch_key elements must be ints or strs, got {k!r} in {batch_key!r}")
        if not isinstance(k, str) and k < 0:
            raise ValueError(f"batch_key ints must be >= 0, got {batch_key!r}")
    return tuple(k if isinstance(k, str) else int(k) for k in batch_key)


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _stack_params(params: Any, n_tasks: int, spec: MLPSpec) -> tuple[dict, bool]:
    shared = isinstance(params, Mapping)
    per_task = [params] if shared else list(params)
    if not shared and len(per_task) != n_tasks:
        raise ValueError(f"got {len(per_task)} param dicts for {n_tasks} tasks")
    sizes = (spec.obs_dim, *spec.hidden_sizes, spec.act_dim)
    expected = {"log_std": (spec.act_dim,)}
    for i in range(spec.n_layers):
        expected[f"layers.{i}.weight"] = (sizes[i + 1], sizes[i])
        expected[f"layers.{i}.bias"] = (sizes[i + 1],)
    stacked = {}
    for key, shape in expected.items():
        arrays = []
        for t, p in enumerate(per_task):
            if key not in p:
                raise KeyError(f"params of task {t} lack {key!r}; have {sorted(p)}")
            arr = _as_numpy(p[key])
            if arr.shape != shape:
                raise ValueError(
                    f"params of task {t}: {key} has shape {arr.shape}, expected {shape} for {spec}"
                )
            arrays.append(arr)
        stacked[key] = np.stack(arrays)
    return stacked, shared


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


def _to_batch(arrays: dict[str, np.ndarray], tasks: tuple) -> EpisodeBatch:
    lengths = torch.from_numpy(arrays["lengths"])
    horizon = arrays["rewards"].shape[2]
    mask = (torch.arange(horizon)[None, None, :] < lengths[:, :, None]).float()
    rewards = torch.from_numpy(arrays["rewards"])
    returns = rewards.double().sum(-1).float()
    return EpisodeBatch(
        observations=torch.from_numpy(arrays["observations"]),
        actions=torch.from_numpy(arrays["actions"]),
        rewards=rewards,
        log_probs=torch.from_numpy(arrays["log_probs"]),
        terminated=torch.from_numpy(arrays["terminated"]),
        mask=mask,
        lengths=lengths,
        returns=returns,
        tasks=tasks,
        final_observations=torch.from_numpy(arrays["final_observations"]),
    )


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sampler in list(_LIVE):
        sampler.close()
