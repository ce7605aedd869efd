"""The batched path: a wave's MuJoCo envs stepped by one ``mujoco.batch.Batch`` call per step.

The per-env path calls ``env.step`` once per sub-env and step: about a third of a
worker's time went to Gymnasium's Python around ``mj_step`` (action checks, the
``info`` dict, a reward of scalars), and each sub-env's own ``MjData`` missed the
cache. Here a wave's sub-envs are the rows of one ``Batch`` (MuJoCo >= 4): each
step writes the actions into the rows' ``ctrl``, runs ``mj_step`` ``frame_skip``
times per row in C, then computes every row's observation, reward and termination
with numpy, in a few calls per step instead of a few per row.

Bit for bit the per-env path's episodes (``tests/test_sampler_fast_path.py``):

* physics: a row is the sub-env's whole integration state (``mjSTATE_INTEGRATION``:
  time, ``qpos``, ``qvel``, ``act``, the solver's warm start, ``ctrl``, applied
  forces, ...), copied from the env after each ``env.reset``. MuJoCo documents,
  and the test checks, that stepping rows equals stepping one ``MjData`` each;
  this is what MuJoCo's ``rollout`` module does not give (it restarts the warm
  start on every call). Gymnasium also calls ``mj_rnePostConstraint`` after each
  step; it fills only derived fields (``cacc``, ``cfrc_int``, ``cfrc_ext``) that
  the next step recomputes and that the robots below never read, so it is skipped.
* observation, reward, termination: array twins of the Gymnasium v5 robot's step
  (here) and of the family's reward (its ``_get_rew_batch``, beside its
  ``_get_rew``), set up once a wave from the rows' envs (their tasks' parameters as
  arrays), then computed for all rows in a few numpy calls a step. A twin is used
  only if every method that step goes through resolves to the code it twins
  (:func:`find_twin`); any override, a render mode, per-episode info keys, or a
  model with MuJoCo's sleep or IPC enabled send the family to the per-env path.
  Ant reads ``cfrc_ext`` in its observation, so it has no twin.

Two assumptions, both already behind "the same seeds give the same batch on any
number of workers": an env's model is a function of its task (so one model per
task serves every sub-env of that task; models equal byte for byte are shared),
and the pool's envs are made alike (one ``make``), so they share ``frame_skip``
and the observation settings.

Importing this module does not import MuJoCo: :func:`find_twin` only looks at an
env that already did.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Outcome = tuple[np.ndarray, np.ndarray]
"""``reward [n]`` float64 and ``terminated [n]`` bool for the ``n`` rows of a wave."""


@dataclass(frozen=True)
class StepRows:
    """One step's arrays for the ``n`` rows of a wave.

    ``x_velocity [n]`` (the root's x displacement over the step / ``dt``, as
    Gymnasium computes it), ``action [n, A]`` (float32, what ``env.step`` got),
    ``qpos [n, nq]`` and ``qvel [n, nv]`` after the step (float64).
    """

    x_velocity: np.ndarray
    action: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray


@dataclass(frozen=True)
class RobotTwin:
    """Array twin of one Gymnasium v5 MuJoCo env's ``step``.

    Attributes:
        base: the Gymnasium env class whose ``step`` this twins.
        methods: every method and property that ``step`` goes through; each must
            resolve to ``base``'s own (or one of its ancestors') code.
        observe: ``(env, qpos [n, nq], qvel [n, nv]) -> obs [n, D]`` (float64).
        outcome: ``envs -> (rows -> (reward [n], terminated [n]))``: made once a wave
            from ``envs[j]``, the env (with its task) of row ``j``; called every step.
        family_reward: the reward is the family's ``_get_rew_batch`` (the family
            overrides ``_get_rew``), not the robot's own.
    """

    base: type
    methods: tuple[str, ...]
    observe: Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
    outcome: Callable[[Sequence[Any]], Callable[[StepRows], Outcome]]
    family_reward: bool = False


# -- the twins of Gymnasium's v5 robots ----------------------------------------------
def _positions(env: Any, qpos: np.ndarray) -> np.ndarray:
    return qpos[:, 1:] if env._exclude_current_positions_from_observation else qpos


def _cheetah_obs(env: Any, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    # HalfCheetahEnv._get_obs: concatenate((qpos[1:], qvel))
    return np.concatenate((_positions(env, qpos), qvel), axis=1)


def _cheetah_outcome(envs: Sequence[Any]) -> Callable[[StepRows], Outcome]:
    # HalfCheetahEnv.step: reward = self._get_rew(x_velocity, action); never terminates
    reward = type(envs[0])._get_rew_batch(envs)
    never = np.zeros(len(envs), bool)

    def outcome(rows: StepRows) -> Outcome:
        return reward(rows.x_velocity, rows.action, rows.qpos), never

    return outcome


def _clipped_obs(env: Any, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    # HopperEnv / Walker2dEnv._get_obs: concatenate((qpos[1:], clip(qvel, -10, 10)))
    return np.concatenate((_positions(env, qpos), np.clip(qvel, -10, 10)), axis=1)


def _hopper_healthy(env: Any, rows: StepRows) -> np.ndarray:
    # HopperEnv.is_healthy
    z, angle = rows.qpos[:, 1], rows.qpos[:, 2]
    state = np.concatenate((rows.qpos, rows.qvel), axis=1)[:, 2:]
    min_state, max_state = env._healthy_state_range
    min_z, max_z = env._healthy_z_range
    min_angle, max_angle = env._healthy_angle_range
    healthy_state = np.all(np.logical_and(min_state < state, state < max_state), axis=1)
    return healthy_state & (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)


def _walker_healthy(env: Any, rows: StepRows) -> np.ndarray:
    # Walker2dEnv.is_healthy
    z, angle = rows.qpos[:, 1], rows.qpos[:, 2]
    min_z, max_z = env._healthy_z_range
    min_angle, max_angle = env._healthy_angle_range
    return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)


def _legged_step(healthy: Callable[[Any, StepRows], np.ndarray], env: Any, rows: StepRows):
    """Hopper's and Walker2d's step: the same reward and termination around ``is_healthy``.

    The family does not override ``_get_rew`` (:func:`find_twin` checks), so the reward
    reads only the robot's constructor settings, the same in every env of the pool.
    """
    is_healthy = healthy(env, rows)
    forward_reward = env._forward_reward_weight * rows.x_velocity
    healthy_reward = is_healthy * env._healthy_reward
    # control_cost: a float32 sum times the weight stays float32, as in the scalar code
    ctrl_cost = env._ctrl_cost_weight * np.sum(np.square(rows.action), axis=-1)
    reward = forward_reward + healthy_reward - ctrl_cost
    return reward, ~is_healthy & bool(env._terminate_when_unhealthy)


def _legged_outcome(healthy: Callable[[Any, StepRows], np.ndarray]):
    return lambda envs: functools.partial(_legged_step, healthy, envs[0])


# the methods a v5 step goes through (control_cost: the families' _get_rew call it too)
_STEP = ("step", "do_simulation", "_step_mujoco_simulation", "_get_obs", "dt", "control_cost")
_LEGGED = (*_STEP, "_get_rew", "healthy_reward", "is_healthy")


def _robots() -> tuple[RobotTwin, ...]:
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    return (
        RobotTwin(HalfCheetahEnv, _STEP, _cheetah_obs, _cheetah_outcome, family_reward=True),
        RobotTwin(HopperEnv, _LEGGED, _clipped_obs, _legged_outcome(_hopper_healthy)),
        RobotTwin(Walker2dEnv, _LEGGED, _clipped_obs, _legged_outcome(_walker_healthy)),
    )


def _passes_through(cls: type) -> bool:
    """Classes allowed to define ``step`` on top of the robot: metarl's ``TaskInfoMixin``
    (it refuses a step without a task and adds ``info["task"]``; it changes no output)."""
    from metarl.envs.base import TaskInfoMixin

    return cls is TaskInfoMixin


def _resolves_to(cls: type, base: type, name: str) -> bool:
    owners = [k for k in cls.__mro__ if name in vars(k)]
    return bool(owners) and all(
        k in base.__mro__ or (name == "step" and _passes_through(k)) for k in owners
    )


def _family_reward_twinned(cls: type) -> bool:
    """The class whose ``_get_rew`` runs also defines ``_get_rew_batch``, its twin."""
    owner = next((k for k in cls.__mro__ if "_get_rew" in vars(k)), None)
    return owner is not None and "_get_rew_batch" in vars(owner)


def find_twin(env: Any) -> RobotTwin | None:
    """The twin of ``env``'s step (``env`` unwrapped), or ``None`` for the per-env path."""
    if "gymnasium.envs.mujoco.mujoco_env" not in sys.modules:
        return None  # no MuJoCo env was made in this process
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if not isinstance(env, MujocoEnv) or getattr(env, "render_mode", None) is not None:
        return None
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":
        # the twins' dtypes follow NumPy 2's promotion (NEP 50): with NumPy 1, a weight times
        # a float32 sum is float64 for a scalar but float32 for an array
        return None
    try:
        import mujoco
        import mujoco.batch  # noqa: F401 - MuJoCo 4 and later
    except ImportError:
        return None
    # sleep and IPC keep bookkeeping outside the state rows (a Batch refuses them unshared)
    unshared = mujoco.mjtEnableBit.mjENBL_SLEEP | mujoco.mjtEnableBit.mjENBL_IPC
    if env.model.opt.enableflags & unshared:
        return None
    cls = type(env)
    for twin in _robots():
        if not isinstance(env, twin.base):
            continue
        if not all(_resolves_to(cls, twin.base, name) for name in twin.methods):
            return None
        if twin.family_reward and not _family_reward_twinned(cls):
            return None
        return twin
    return None


# -- the stepper ----------------------------------------------------------------
def _model_bytes(model: Any) -> tuple[int, bytes]:
    """The model's MJB (the whole model, byte for byte) and a cheap checksum of it."""
    import mujoco

    size = mujoco.mj_sizeModel(model)
    buf = np.zeros(-(-size // 8) * 8, np.uint8)
    mujoco.mj_saveModel(model, None, buf[:size])
    return int(np.bitwise_xor.reduce(buf.view(np.uint64))), buf.tobytes()


class BatchStepper:
    """``n`` rows of one ``mujoco.batch.Batch``, stepped together (reused across waves).

    Per wave: :meth:`start` (after the envs' ``set_task``), :meth:`load` after each
    ``env.reset`` of a row, then :meth:`step` once per step.
    """

    def __init__(self, twin: RobotTwin, model: Any, n: int) -> None:
        import mujoco
        from mujoco import batch as mjbatch

        self.twin = twin
        self.n = n
        # nthread=1: the calling thread only; the sampler's parallelism is its worker processes
        self.batch = mjbatch.Batch(model, nsim=n, nthread=1)
        self.spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self.qpos = self.batch.bind("qpos")  # [n, nq] live views of the state rows
        self.qvel = self.batch.bind("qvel")
        self.ctrl = self.batch.bind("ctrl")
        self.x_before = np.zeros(n)
        self._get_state = mujoco.mj_getState

    def start(self, envs: Sequence[Any], groups: Sequence[tuple[int, int]]) -> None:
        """A wave: row ``j`` is ``envs[j]``; ``groups`` are the ``(a, b)`` row ranges of one
        task each (contiguous, task-major). Each task's model serves its rows; models equal
        byte for byte are one object, so a goal family's rows all run on one model."""
        self.envs = envs[: self.n]
        self.frame_skip = int(envs[0].frame_skip)
        distinct: dict[int, list[tuple[bytes, Any]]] = {}  # checksum -> (MJB, model)
        models = []
        for a, b in groups:
            env = envs[a]
            checksum, raw = _model_bytes(env.model)  # about 0.2 ms a task
            bucket = distinct.setdefault(checksum, [])
            model = next((m for mjb, m in bucket if mjb == raw), None)
            if model is None:
                bucket.append((raw, env.model))
                model = env.model
            models.extend([model] * (b - a))
        one = sum(map(len, distinct.values())) == 1
        self.batch.set_models(models[0] if one else models)
        self.dt = np.array([env.dt for env in self.envs])
        self._outcome = self.twin.outcome(self.envs)

    def load(self, j: int) -> None:
        """Row ``j`` takes its env's state (after ``env.reset``)."""
        env = self.envs[j]
        self._get_state(env.model, env.data, self.batch.state[j], self.spec)

    def step(self, action: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Step rows ``ids`` (``None``: all) with ``action [n, A]`` (float32).

        Returns ``obs [n, D]``, ``reward [n]``, ``terminated [n]`` for every row; rows
        not stepped carry no meaning. Raises the Batch's ``SimulationError`` if MuJoCo
        raised in some rows.
        """
        np.copyto(self.x_before, self.qpos[:, 0])
        if ids is None:
            self.ctrl[:] = action
        else:
            self.ctrl[ids] = action[ids]
        self.batch.step(ids, nstep=self.frame_skip)
        qpos, qvel = self.qpos, self.qvel
        x_velocity = (qpos[:, 0] - self.x_before) / self.dt
        obs = self.twin.observe(self.envs[0], qpos, qvel)
        reward, terminated = self._outcome(StepRows(x_velocity, action, qpos, qvel))
        return obs, reward, terminated
