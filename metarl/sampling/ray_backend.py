"""The Ray backend of the :class:`~metarl.sampling.Sampler`: rollout workers as Ray actors.

``make_sampler(..., backend="ray", ray_address=None | "auto" | "HOST:PORT")``. Each
actor (:class:`RolloutActor`) holds an :class:`~metarl.sampling.rollout.EnvPool`
made by :func:`~metarl.sampling.worker.make_pool` and runs every request with
:func:`~metarl.sampling.worker.run_request`, the code path of a local worker
process: many sub-envs in lock-step, one batched numpy policy evaluation per
step. Blocks, seeds and the joining of the blocks are the Sampler's, so a batch
is the local backend's, bit for bit (and, as every seed derives from (seed,
batch_key, task, episode), the same for any number of workers).

What travels:

* once per actor, at start-up: the :class:`~metarl.sampling.worker.WorkerInit`
  (the family's spec, that is its entry point and not its code; the horizon,
  env kwargs and policy architecture);
* once per call: the parameter arrays, ``ray.put`` into the object store (a dict
  shared by all tasks once for every actor; per-task parameters once per block,
  so each task's go out once), and to each actor a small request (its block's
  tasks, their global indices, the seed and the batch key);
* back, once per call and actor: the block's whole episodes as numpy arrays.

No code is shipped: metarl, and the package of any plug-in family, must be
installed on every node (see docs/distributed.md, "Running across machines").

Faults: an actor that dies (its process killed, out of memory, its node lost)
is restarted by Ray and its block collected again, at most ``max_retries``
times per call, each time with a warning on the ``metarl.sampling`` logger;
then a :class:`~metarl.sampling.SamplerError`. An env that raises or returns
a NaN is not retried: it raises the same error as with the local backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import traceback
from typing import Any

from metarl.sampling.backends import Blocks, describe_block, rollout_error
from metarl.sampling.batch import SamplerError
from metarl.sampling.rollout import RolloutFailure
from metarl.sampling.worker import (
    SINGLE_THREAD_ENV,
    WorkerInit,
    make_pool,
    pool_info,
    run_request,
)

log = logging.getLogger("metarl.sampling")

INSTALL_HINT = 'pip install "metarl[ray]"'


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`SamplerError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise SamplerError(
            f"the Ray sampler backend needs Ray, which is not installed here: {INSTALL_HINT}"
        ) from exc
    return ray


class RolloutActor:
    """A rollout worker as a Ray actor: one env pool, requests run by ``run_request``."""

    def __init__(self, init: WorkerInit) -> None:
        self.init = init
        self.pool = make_pool(init.family, init.horizon, init.env_kwargs, init.fast, init.batched)

    def info(self) -> dict:
        return pool_info(self.pool)

    def run(self, req: Any, params: Any) -> tuple:
        """Collect ``req`` (sent without its parameters) with ``params`` (from the object store).

        Returns ``("result", arrays, busy_s, pid)`` or ``("error", kind, message, traceback)``.
        """
        start = time.perf_counter()
        try:
            arrays = run_request(
                self.pool, self.init.spec, dataclasses.replace(req, params=params),
                self.init.max_envs,
            )  # fmt: skip
        except RolloutFailure as failure:
            return ("error", failure.kind, failure.message, failure.tb)
        except Exception as exc:  # noqa: BLE001 - reported to the learner
            return ("error", "env", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return ("result", arrays, time.perf_counter() - start, os.getpid())


# Ray instances this module started, shared by the backends using them; shut down
# with the last of them. An instance started by someone else is never shut down.
_OWNED = {"started": False, "users": 0}


def _acquire(ray: Any, address: str | None, workers: int | None) -> None:
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if address:
            kwargs["address"] = address
        else:  # a local instance: one logical CPU per worker, as many as asked for
            kwargs["num_cpus"] = max(os.cpu_count() or 1, workers or 0)
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"join the Ray cluster at {address!r}" if address else "start Ray"
            raise SamplerError(f"could not {where}: {exc}") from exc
        _OWNED["started"] = True
    elif not _OWNED["started"]:
        return  # someone else's instance; not counted
    _OWNED["users"] += 1


def _release(ray: Any) -> None:
    if not _OWNED["started"]:
        return
    _OWNED["users"] -= 1
    if _OWNED["users"] <= 0:
        _OWNED.update(started=False, users=0)
        ray.shutdown()


class RayBackend:
    """Runs each block of a call on its own Ray actor; see the module docstring."""

    def __init__(
        self,
        init: WorkerInit,
        *,
        workers: int | None,
        ray_address: str | None = None,
        max_retries: int = 3,
        start_timeout: float = 300.0,
        timeout: float | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"the Ray backend needs workers >= 1 (or None), got {workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._ray = ray = import_ray()
        self.family = init.family
        self.max_retries = int(max_retries)
        self.timeout = timeout
        self.start_timeout = start_timeout
        _acquire(ray, ray_address, workers)
        self._acquired = True
        self._actors: list[Any] = []
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.n_workers = cpus if workers is None else int(workers)
            actor_cls = ray.remote(RolloutActor).options(
                num_cpus=1,
                max_restarts=-1,  # Ray restarts a dead actor; run() bounds the retries per call
                max_task_retries=0,  # and collects the block again itself, with a warning
                runtime_env={"env_vars": dict(SINGLE_THREAD_ENV)},  # as local workers
                scheduling_strategy="SPREAD",
            )
            self._actors = [actor_cls.remote(init) for _ in range(self.n_workers)]
            infos = self._start(start_timeout, cpus)
        except BaseException:
            self.close()
            raise
        self._pids = [info["pid"] for info in infos]
        self.obs_dim: int = infos[0]["obs_dim"]
        self.act_dim: int = infos[0]["act_dim"]
        self.info_keys: tuple[str, ...] = tuple(infos[0]["info_keys"])
        self.fast_path = bool(infos[0]["fast_path"])
        self.batched_path = bool(infos[0]["batched_path"])

    def _start(self, start_timeout: float, cpus: int) -> list[dict]:
        ray = self._ray
        refs = [actor.info.remote() for actor in self._actors]
        try:
            return ray.get(refs, timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise SamplerError(
                f"{self.n_workers} Ray actors of {self.family.name!r} did not start within "
                f"{start_timeout} s; each needs 1 CPU and the cluster has {cpus} "
                f"({ray.available_resources().get('CPU', 0):g} free)"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise SamplerError(f"a Ray actor could not make {self.family.name!r}: {exc}") from None

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the actors, on whichever node each runs."""
        return list(self._pids) if self._actors else []

    def run(self, tasks: tuple, blocks: Blocks) -> tuple[list[dict], tuple[float, ...]]:
        ray = self._ray
        if not self._actors:
            raise SamplerError(f"the Ray backend of {self.family.name!r} is closed")
        put: dict[int, tuple[Any, Any]] = {}  # id(params) -> (params, ref): each dict goes once
        jobs = []
        for a, b, req in blocks:
            if id(req.params) not in put:
                put[id(req.params)] = (req.params, ray.put(req.params))
            jobs.append((a, b, dataclasses.replace(req, params=None), put[id(req.params)][1]))

        def submit(i: int) -> Any:
            return self._actors[i].run.remote(jobs[i][2], jobs[i][3])

        pending = {submit(i): i for i in range(len(jobs))}
        results: dict[int, dict] = {}
        busy: dict[int, float] = {}
        retries = [0] * len(jobs)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while pending:
            wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not ready:
                raise SamplerError(
                    f"sampling {self.family.name!r} took longer than {self.timeout} s; "
                    f"Ray actors {sorted(pending.values())} did not answer"
                )
            i = pending.pop(ready[0])
            a, b = jobs[i][0], jobs[i][1]
            try:
                reply = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:  # the actor died, not the env
                retries[i] += 1
                what = f"Ray actor {i} of {self.family.name!r} died while sampling " + (
                    describe_block(tasks, a, b)
                )
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                if retries[i] > self.max_retries:
                    raise SamplerError(
                        f"{what} ({reason}); gave up after {self.max_retries} retries"
                    ) from exc
                log.warning(
                    "%s (%s); Ray restarts it and the block is collected again (retry %d of %d)",
                    what, reason, retries[i], self.max_retries,
                )  # fmt: skip
                self._await_restart(i, what)
                pending[submit(i)] = i
                continue
            if reply[0] == "error":
                raise rollout_error(RolloutFailure(*reply[1:]), f"Ray actor {i}")
            results[i], busy[i], self._pids[i] = reply[1], reply[2], reply[3]
        order = range(len(jobs))
        return [results[i] for i in order], tuple(busy[i] for i in order)

    def _await_restart(self, i: int, what: str) -> None:
        """Wait until Ray has restarted actor ``i`` (a call sent before would fail at once)."""
        ray = self._ray
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                info = ray.get(self._actors[i].info.remote(), timeout=self.start_timeout)
            except ray.exceptions.ActorUnavailableError:  # still restarting
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
                continue
            except ray.exceptions.GetTimeoutError:
                break
            except ray.exceptions.RayActorError as exc:
                raise SamplerError(f"{what}, and Ray could not restart it: {exc}") from exc
            self._pids[i] = info["pid"]
            return
        raise SamplerError(f"{what}, and Ray did not restart it within {self.start_timeout} s")

    def close(self) -> None:
        """Kill the actors; shut Ray down if this module started it and no one else uses it."""
        ray = self._ray
        actors, self._actors = self._actors, []
        if ray.is_initialized():
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        if getattr(self, "_acquired", False):
            self._acquired = False
            with contextlib.suppress(Exception):
                _release(ray)
