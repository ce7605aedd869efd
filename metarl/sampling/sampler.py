"""The Sampler: task-major vectorised rollouts on CPU, in-process, in worker processes or on Ray.

``make_sampler(name, spec=..., seed=..., workers=...)`` builds one. Each call of
:meth:`Sampler.sample` splits the tasks into contiguous blocks, one per worker
(worker ``w`` gets tasks ``[a_w, b_w)``), ships each worker its block's tasks
and parameter arrays in one message, and gets the block's whole episodes back
in one message. Inside a worker every (task, episode) pair is a sub-env stepped
in lock-step with one batched numpy policy evaluation per step (see
:mod:`metarl.sampling.rollout`). Env instances persist across calls.

The :class:`Sampler` does what every backend shares (argument checks, one
request per task block, joining the blocks into a batch, timing); a backend
(:mod:`metarl.sampling.backends`, chosen by name) only runs the requests:
``local`` in-process or in worker processes of this machine, ``ray`` in Ray
actors. Every backend runs a request with :func:`~metarl.sampling.worker.run_request`.

Sampling is data-only: it never changes weights. All randomness of a call
comes from ``(seed, batch_key, task index, episode index)``, so the batch is
identical for any number of workers (0 = in-process) and any backend.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarl.registry import resolve
from metarl.sampling.backends import Backend, backend_spec, check_backend_options
from metarl.sampling.batch import EpisodeBatch, SamplerError, split_episode_infos
from metarl.sampling.rollout import PolicySpec, RolloutRequest
from metarl.sampling.trials import TrialBatch, to_trial_batch
from metarl.sampling.worker import WorkerInit


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


class Sampler:
    """Collects :class:`EpisodeBatch` es of a task family; see the module docstring.

    Use :func:`make_sampler` to build one. A context manager; :meth:`close`
    stops the workers (also done at interpreter exit). ``obs_dim``, ``act_dim`` and
    ``info_keys`` (the family's ``episode_info_keys``, the keys of every batch's
    ``episode_infos``) are read from the workers' envs at start-up.
    """

    def __init__(
        self,
        env_name: str,
        *,
        spec: PolicySpec,
        seed: int,
        workers: int | None = None,
        horizon: int | None = None,
        env_kwargs: dict | None = None,
        fast: bool = True,
        batched: bool = True,
        max_envs_per_worker: int = 256,
        backend: str = "local",
        start_timeout: float = 300.0,
        timeout: float | None = None,
        **backend_options: Any,
    ) -> None:
        backend_class = backend_spec(backend).load()
        check_backend_options(backend, backend_options)
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
            batched=batched,
        )
        options = {k: v for k, v in backend_options.items() if v not in (None, "")}
        self._backend: Backend = backend_class(
            init, workers=workers, start_timeout=start_timeout, timeout=timeout, **options
        )
        self.n_workers = self._backend.n_workers
        self.obs_dim: int = self._backend.obs_dim
        self.act_dim: int = self._backend.act_dim
        # the family's episode_info_keys: the keys of every batch's episode_infos
        self.info_keys: tuple[str, ...] = self._backend.info_keys
        self.fast_path = self._backend.fast_path
        self.batched_path = self._backend.batched_path
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
        params: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
        *,
        episodes_per_task: int,
        batch_key: tuple[int | str, ...],
    ) -> EpisodeBatch:
        """Run ``episodes_per_task`` episodes of each task; see :class:`EpisodeBatch`.

        Args:
            tasks: the ``T`` tasks (family task objects).
            params: the policy's arrays (names and shapes as ``spec.param_shapes()``):
                one dict for every task, or one dict stacked over the tasks (each array
                ``[T, *shape]``), or a list of ``T`` dicts.
            episodes_per_task: ``E``.
            batch_key: unique key of this call, e.g. ``(iteration, "train", step)``;
                with the sampler's seed it determines all randomness of the call.
        """
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        tasks, batch_key, stacked = self._check_call(tasks, params, batch_key)
        arrays = self._collect(tasks, stacked, episodes_per_task, 1, batch_key, batch_key)
        return to_episode_batch(arrays, tasks, self.info_keys)

    def sample_trials(
        self,
        tasks: Sequence,
        params: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
        *,
        trials_per_task: int,
        episodes_per_trial: int,
        batch_key: tuple[int | str, ...],
    ) -> TrialBatch:
        """RL2 trials: ``trials_per_task`` trials of ``episodes_per_trial`` episodes per task.

        The actor's state (an RL2 policy's hidden state) is carried across the
        episodes of a trial and reset between trials; see :mod:`metarl.sampling.trials`
        for the layout and :class:`TrialBatch` for shapes. ``params`` as in :meth:`sample`.
        """
        if trials_per_task < 1 or episodes_per_trial < 1:
            raise ValueError(
                f"trials_per_task and episodes_per_trial must be >= 1, "
                f"got {trials_per_task} and {episodes_per_trial}"
            )
        tasks, batch_key, stacked = self._check_call(tasks, params, batch_key)
        noise_key = (*batch_key, "trial")
        arrays = self._collect(
            tasks, stacked, trials_per_task, episodes_per_trial, batch_key, noise_key
        )
        return to_trial_batch(arrays, tasks, self.info_keys)

    def _check_call(self, tasks: Sequence, params: Any, batch_key: Any) -> tuple:
        self._check_open()
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("sample: tasks is empty")
        batch_key = _check_batch_key(batch_key)
        return tasks, batch_key, _stack_params(params, len(tasks), self.spec)

    def _collect(
        self,
        tasks: tuple,
        stacked: dict[str, np.ndarray],
        trials: int,
        episodes_per_trial: int,
        batch_key: tuple,
        noise_key: tuple,
    ) -> dict[str, np.ndarray]:
        """Split the tasks into one contiguous block per worker, run them, join the arrays."""
        shared = next(iter(stacked.values())).shape[0] == 1

        def request(a: int, b: int) -> RolloutRequest:
            # a shared dict stays one object, so a backend can ship it once for every block
            block_params = stacked if shared else {k: v[a:b] for k, v in stacked.items()}
            return RolloutRequest(
                tasks[a:b], range(a, b), block_params, trials, episodes_per_trial, self.horizon,
                self.seed, batch_key, noise_key,
            )  # fmt: skip

        start = time.perf_counter()
        splits = np.array_split(np.arange(len(tasks)), max(1, self.n_workers))
        ranges = [(int(s[0]), int(s[-1]) + 1) for s in splits if s.size]
        results, busy = self._backend.run(tasks, [(a, b, request(a, b)) for a, b in ranges])
        if len(results) == 1:  # the batch owns its memory (Ray's arrays are read-only views)
            arrays = {k: v if v.flags.writeable else v.copy() for k, v in results[0].items()}
        else:
            arrays = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
        wall = time.perf_counter() - start
        steps = int(arrays["lengths"].sum())
        self.last_stats = SampleStats(
            wall, steps, steps / max(wall, 1e-9), len(tasks), trials * episodes_per_trial,
            self.n_workers, busy,
        )  # fmt: skip
        return arrays

    def _check_open(self) -> None:
        if self._closed:
            raise SamplerError(f"the sampler of {self.family.name!r} is closed")

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
            f"workers={self.n_workers}, horizon={self.horizon}, fast_path={self.fast_path}, "
            f"batched_path={self.batched_path})"
        )


def make_sampler(env_name: str, *, spec: PolicySpec, seed: int, **options: Any) -> Sampler:
    """A :class:`Sampler` of the family ``env_name`` for policies of architecture ``spec``.

    ``workers``: ``None`` = one per core (``os.cpu_count()``; with Ray, the
    cluster's CPUs), ``0`` = in-process (debugging, tests; local backend only).
    ``horizon``: episode length (default: the family's). ``backend``: a name of
    :data:`~metarl.sampling.backends.BACKENDS`, ``"local"`` (worker processes of
    this machine, the default) or ``"ray"`` (Ray actors; needs
    ``pip install "metarl[ray]"``). Other options: ``fast`` (step
    ``env.unwrapped`` when only passive wrappers sit on top; bit-identical,
    default True), ``batched`` (on the fast path, step a MuJoCo family whose step
    has an array twin in one ``mujoco.batch`` call per step for all of a worker's
    sub-envs; bit-identical, default True; :mod:`metarl.sampling.mujoco_batch`),
    ``max_envs_per_worker`` (sub-envs stepped at once per
    worker, default 256), ``timeout`` (seconds per call, default none),
    ``start_timeout``; the local backend's ``mp_context`` (``"spawn"`` or
    ``"forkserver"``); the Ray backend's ``ray_address`` (``None`` = the Ray
    instance this process already has, or a new local one; ``"auto"`` or
    ``"HOST:PORT"`` = join that cluster) and ``max_retries`` (times a block whose
    actor died is collected again in one call, default 3).
    """
    return Sampler(env_name, spec=spec, seed=seed, **options)


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


def _stack_params(params: Any, n_tasks: int, spec: PolicySpec) -> dict[str, np.ndarray]:
    """The arrays of ``params`` with a leading task axis: ``[n_tasks, *shape]``, or
    ``[1, *shape]`` for one policy shared by every task; checked against ``spec``."""
    if not isinstance(params, Mapping):
        per_task = list(params)
        if len(per_task) != n_tasks:
            raise ValueError(f"got {len(per_task)} param dicts for {n_tasks} tasks")
        for t, p in enumerate(per_task):
            _check_param_names(p, spec, f"params of task {t}")
        params = {k: np.stack([_as_numpy(p[k]) for p in per_task]) for k in spec.param_shapes()}
    _check_param_names(params, spec, "params")
    stacked = {}
    for key, shape in spec.param_shapes().items():
        arr = _as_numpy(params[key])
        if arr.shape == shape:
            arr = arr[None]
        elif arr.shape not in ((n_tasks, *shape), (1, *shape)):
            raise ValueError(
                f"params: {key} has shape {arr.shape}, expected {shape} (shared) or "
                f"{(n_tasks, *shape)} (stacked over {n_tasks} tasks) for {spec}"
            )
        stacked[key] = arr
    if len({arr.shape[0] for arr in stacked.values()}) != 1:
        raise ValueError("params: some arrays are stacked over the tasks and others shared")
    return stacked


def _check_param_names(params: Mapping, spec: PolicySpec, what: str) -> None:
    missing = [k for k in spec.param_shapes() if k not in params]
    if missing:
        raise KeyError(f"{what} lack {missing[0]!r}; have {sorted(params)}")


def to_episode_batch(
    arrays: dict[str, np.ndarray], tasks: tuple, info_keys: tuple = ()
) -> EpisodeBatch:
    """The :class:`EpisodeBatch` of :func:`~metarl.sampling.rollout.collect`'s arrays
    (``info_keys`` name the last axis of ``arrays["episode_infos"]``)."""
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
        # one episode per trial: [T, E, 1, n_keys] -> [T, E] per key
        episode_infos={
            key: values[:, :, 0]
            for key, values in split_episode_infos(arrays["episode_infos"], info_keys).items()
        },
    )


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sampler in list(_LIVE):
        sampler.close()
