"""metarl's built-in task families (installed as ``metarl.envs``).

Each family is registered under a short CLI name and with Gymnasium under
``metarl/<Name>-v0``. Entry points are strings, so importing this package
imports neither MuJoCo nor the family modules. Each class docstring states
exactly what defines the family: task ranges, horizon, reward.
"""

from metarl.envs.base import TaskFamilyMixin, TaskNotSetError, TaskPools, make_task_pools

from metarl.registry import register_family

__all__ = ["TaskFamilyMixin", "TaskNotSetError", "TaskPools", "make_task_pools"]

# (short name, gym id, entry point, what varies, default horizon, one-line summary)
_BUILTIN = [
    (
        "point-nav",
        "metarl/PointNav-v0",
        "metarl.envs.point_nav:PointNavEnv",
        "goal",
        100,
        "2-D point to a goal in [-0.5, 0.5]^2, dense reward -distance (pure numpy)",
    ),
    (
        "point-nav-sparse",
        "metarl/PointNavSparse-v0",
        "metarl.envs.point_nav:PointNavSparseEnv",
        "goal",
        100,
        "2-D point, goal on a half circle, reward only within 0.2 of the goal",
    ),
    (
        "point-nav-shaped",
        "metarl/PointNavShaped-v0",
        "metarl.envs.point_nav:PointNavShapedEnv",
        "reward",
        100,
        "2-D point to a goal; tasks also switch the reward: dense, sparse or shaped",
    ),
    (
        "sketch",
        "metarl/Sketch-v0",
        "metarl.envs.sketch:SketchEnv",
        "goal",
        100,
        "2-D pen tracing a letter's or digit's outline; held-out characters (pure numpy)",
    ),
    (
        "halfcheetah-vel",
        "metarl/HalfCheetahVel-v0",
        "metarl.envs.half_cheetah:HalfCheetahVelEnv",
        "goal",
        200,
        "HalfCheetah-v5 running at a target velocity in [0, 2]",
    ),
    (
        "halfcheetah-dir",
        "metarl/HalfCheetahDir-v0",
        "metarl.envs.half_cheetah:HalfCheetahDirEnv",
        "goal",
        200,
        "HalfCheetah-v5 running forward or backward",
    ),
    (
        "halfcheetah-weights",
        "metarl/HalfCheetahWeights-v0",
        "metarl.envs.half_cheetah:HalfCheetahWeightsEnv",
        "reward",
        200,
        "HalfCheetah-v5 with random weights on forward speed, control cost and torso height",
    ),
    (
        "ant-dir",
        "metarl/AntDir-v0",
        "metarl.envs.ant:AntDirEnv",
        "goal",
        200,
        "Ant-v5 running in a direction in the plane",
    ),
    (
        "ant-goal",
        "metarl/AntGoal-v0",
        "metarl.envs.ant:AntGoalEnv",
        "goal",
        200,
        "Ant-v5 walking to a goal position within radius 3",
    ),
    (
        "hopper-params",
        "metarl/HopperParams-v0",
        "metarl.envs.rand_params:HopperParamsEnv",
        "dynamics",
        200,
        "Hopper-v5 with log-scale random masses, inertias, damping, friction",
    ),
    (
        "walker-params",
        "metarl/WalkerParams-v0",
        "metarl.envs.rand_params:WalkerParamsEnv",
        "dynamics",
        200,
        "Walker2d-v5 with log-scale random masses, inertias, damping, friction",
    ),
]

for _name, _gym_id, _entry, _varies, _horizon, _summary in _BUILTIN:
    register_family(
        _name, _entry, varies=_varies, horizon=_horizon, gym_id=_gym_id, summary=_summary
    )

# Meta-World (the optional extra metarl[metaworld]): ml1-<env> for each of its 50 v3
# envs, ml10 and ml45. The names are listed in metarl.envs.metaworld, which imports
# Meta-World only when an env is made.
_METAWORLD = "metarl.envs.metaworld:MetaWorldFamily"
_MW_KWARGS = {"reward_function_version": "v2"}


def _register_metaworld() -> None:
    from metarl.envs.metaworld import ML1_ENVS

    for env_name in ML1_ENVS:
        base = env_name.removesuffix("-v3")
        register_family(
            f"ml1-{base}",
            _METAWORLD,
            varies="goal",
            horizon=500,
            gym_id=f"metarl/MetaWorldML1-{base}-v0",
            summary=f"Meta-World ML1 {env_name}: 50 train / 50 test goals (metarl[metaworld])",
            kwargs={"benchmark": "ML1", "env_name": env_name, **_MW_KWARGS},
        )
    for bench, n_train in (("ML10", 10), ("ML45", 45)):
        register_family(
            bench.lower(),
            _METAWORLD,
            varies="reward",
            horizon=500,
            gym_id=f"metarl/MetaWorld{bench}-v0",
            summary=f"Meta-World {bench}: {n_train} train / 5 held-out classes (metarl[metaworld])",
            kwargs={"benchmark": bench, "env_name": None, **_MW_KWARGS},
        )


_register_metaworld()
