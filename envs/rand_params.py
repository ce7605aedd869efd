"""Hopper-v5 and Walker2d-v5 with randomised physical parameters (PEARL's rand_param_envs).

A task is a set of elementwise *multipliers* on four MuJoCo model arrays,
drawn on a log scale as in rllab / PEARL's ``rand_param_envs`` with
``log_scale_limit = 3.0``:

====================  ========================  =============================
model array           multiplier                range of the multiplier
====================  ========================  =============================
``body_mass``         ``1.5 ** U(-3, 3)``       ``[0.296, 3.375]``
``body_inertia``      ``1.5 ** U(-3, 3)``       ``[0.296, 3.375]``
``dof_damping``       ``1.3 ** U(-3, 3)``       ``[0.455, 2.197]``
``geom_friction``     ``1.5 ** U(-3, 3)``       ``[0.296, 3.375]``
====================  ========================  =============================

one independent draw per array element (every body, dof, geom, and each of
the 3 inertia axes and 3 friction coefficients), exactly as rand_param_envs
(which uses base 1.3, not 1.5, for damping). ``_apply_task`` writes
``default * multiplier`` from the values stored at construction, so setting a
second task never compounds on the first. Observation, action, reward
(``healthy_reward + forward_reward - ctrl_cost``) and termination (leaving the
healthy range) are exactly those of the v5 base env; the horizon is 200 steps
by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from metarl.envs.base import TaskFamilyMixin, TaskInfoMixin

__all__ = [
    "LOG_SCALE_LIMIT",
    "PARAM_BASES",
    "HopperParamsEnv",
    "ParamsTask",
    "WalkerParamsEnv",
    "sample_multipliers",
]

LOG_SCALE_LIMIT = 3.0
"""Exponents are drawn from ``U(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)``."""
PARAM_BASES = {"body_mass": 1.5, "body_inertia": 1.5, "dof_damping": 1.3, "geom_friction": 1.5}
"""The model arrays a task perturbs, each with the base of its log-scale multiplier."""


@dataclass(frozen=True)
class ParamsTask:
    """Elementwise multipliers on the model's default parameters.

    Each field is a flat tuple in the model array's C order: ``body_mass``
    ``(nbody,)``, ``body_inertia`` ``(nbody * 3,)``, ``dof_damping`` ``(nv,)``,
    ``geom_friction`` ``(ngeom * 3,)``. All ones is the unperturbed robot.
    """

    body_mass: tuple[float, ...]
    body_inertia: tuple[float, ...]
    dof_damping: tuple[float, ...]
    geom_friction: tuple[float, ...]


def sample_multipliers(
    rng: np.random.Generator, size: int, base: float, limit: float = LOG_SCALE_LIMIT
) -> tuple[float, ...]:
    """``size`` independent multipliers ``base ** U(-limit, limit)``, as Python floats."""
    return tuple(float(m) for m in base ** rng.uniform(-limit, limit, size=size))


class _ParamsMixin:
    """Stores the default parameters, samples and applies :class:`ParamsTask`.

    The hooks are named ``_sample_params`` / ``_apply_params`` and called from
    each family's ``_sample_task`` / ``_apply_task``: TaskFamilyMixin comes
    first in the MRO, so its default hooks would shadow ones defined here.
    """

    default_horizon: ClassVar[int] = 200
    model: Any

    def _store_defaults(self) -> None:
        self._defaults = {name: getattr(self.model, name).copy() for name in PARAM_BASES}

    def _sample_params(self, rng: np.random.Generator) -> ParamsTask:
        return ParamsTask(
            **{
                name: sample_multipliers(rng, self._defaults[name].size, base)
                for name, base in PARAM_BASES.items()
            }
        )

    def _apply_params(self, task: ParamsTask) -> None:
        for name in PARAM_BASES:
            multipliers = np.asarray(getattr(task, name), dtype=np.float64)
            if multipliers.size != self._defaults[name].size:
                raise ValueError(
                    f"{type(self).__name__}: task.{name} has {multipliers.size} multipliers, "
                    f"the model has {self._defaults[name].size} (a task of another robot?)"
                )
        for name in PARAM_BASES:
            default = self._defaults[name]
            multipliers = np.asarray(getattr(task, name), dtype=np.float64).reshape(default.shape)
            getattr(self.model, name)[:] = default * multipliers


class _ParamsFamily(_ParamsMixin, TaskInfoMixin):
    """The task hooks of a rand-params family; list it first, before TaskFamilyMixin
    (whose default hooks would otherwise shadow these) and the robot's v5 env."""

    task_type = ParamsTask
    varies = "dynamics"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        utils.EzPickle.__init__(self, **kwargs)
        self._store_defaults()

    def _sample_task(self, rng: np.random.Generator) -> ParamsTask:
        return self._sample_params(rng)

    def _apply_task(self, task: ParamsTask) -> None:
        self._apply_params(task)


class HopperParamsEnv(_ParamsFamily, TaskFamilyMixin[ParamsTask], HopperEnv):
    """``metarl/HopperParams-v0`` (``hopper-params``): Hopper-v5 with random dynamics.

    * Task: :class:`ParamsTask`, multipliers drawn as in the module docstring
      (Hopper-v5: 5 bodies, 6 dofs, 5 geoms).
    * Observation (11-dim), action (``[-1, 1]^3``), reset noise: Hopper-v5.
    * Reward: Hopper-v5, ``1.0 * healthy + v_x - 1e-3 * ||a||^2``.
    * Termination: Hopper-v5's unhealthy condition (z < 0.7, |angle| > 0.2 or
      a state element outside [-100, 100]); otherwise truncation at 200 steps.
    """


class WalkerParamsEnv(_ParamsFamily, TaskFamilyMixin[ParamsTask], Walker2dEnv):
    """``metarl/WalkerParams-v0`` (``walker-params``): Walker2d-v5 with random dynamics.

    * Task: :class:`ParamsTask`, multipliers drawn as in the module docstring
      (Walker2d-v5: 8 bodies, 9 dofs, 8 geoms).
    * Observation (17-dim), action (``[-1, 1]^6``), reset noise: Walker2d-v5.
    * Reward: Walker2d-v5, ``1.0 * healthy + v_x - 1e-3 * ||a||^2``.
    * Termination: Walker2d-v5's unhealthy condition (torso z outside
      ``[0.8, 2.0]`` or |angle| > 1); otherwise truncation at 200 steps.
    """
