"""The three ways to add a family, each found by name, and the errors when it goes wrong."""

from __future__ import annotations

import textwrap

import gymnasium
import numpy as np
import pytest

from metarl import registry
from metarl.registry import (
    UnknownEnvError,
    list_families,
    load_plugins,
    make_env,
    register_family,
    resolve,
)

PLUGIN_SOURCE = textwrap.dedent(
    '''
    """A tiny family written the way a user would write one."""
    from dataclasses import dataclass

    import gymnasium
    import numpy as np
    from gymnasium import spaces

    from metarl.envs.base import TaskFamilyMixin


    @dataclass(frozen=True)
    class TargetTask:
        target: float


    class TinyEnv(TaskFamilyMixin[TargetTask], gymnasium.Env):
        """Tiny family: reward = -|action - target|, target ~ U[-1, 1]."""

        task_type = TargetTask
        varies = "reward"
        default_horizon = 7

        def __init__(self, render_mode=None):
            self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

        def _sample_task(self, rng):
            return TargetTask(target=float(rng.uniform(-1.0, 1.0)))

        def reset(self, *, seed=None, options=None):
            task = self._require_task()
            super().reset(seed=seed)
            return np.zeros(1, np.float32), {"task": task}

        def step(self, action):
            task = self._require_task()
            reward = -abs(float(action[0]) - task.target)
            return np.zeros(1, np.float32), reward, False, False, {"task": task}


    class NotAFamily(gymnasium.Env):
        """A plain env without sample_tasks / set_task / get_task."""


    def register():
        from metarl.registry import register_family

        register_family(
            "{module}-by-function", "{module}:TinyEnv", varies="reward", horizon=9
        )
    '''
)


@pytest.fixture(autouse=True)
def restore_registries(monkeypatch):
    """Each test starts from, and leaves behind, the registries as they were."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_plugins_loaded", registry._plugins_loaded)
    saved = dict(gymnasium.registry)
    yield
    gymnasium.registry.clear()
    gymnasium.registry.update(saved)


def write_plugin(tmp_path, monkeypatch, module: str) -> None:
    """Write ``module.py`` into ``tmp_path`` and make it importable."""
    (tmp_path / f"{module}.py").write_text(PLUGIN_SOURCE.replace("{module}", module))
    monkeypatch.syspath_prepend(str(tmp_path))


def assert_runs(name: str, horizon: int) -> None:
    """``name`` makes an env that follows the task API and has ``horizon``."""
    env = make_env(name)
    family = env.unwrapped
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    family.set_task(task)
    _, info = env.reset(seed=0)
    assert info["task"] == task
    for t in range(horizon):
        _, reward, terminated, truncated, _ = env.step(np.array([0.5], np.float32))
        assert reward == pytest.approx(-abs(0.5 - task.target))
        assert truncated == (t == horizon - 1) and not terminated
    env.close()


# -- (a) register_family(...) ------------------------------------------------------
def test_a_register_family_call(tmp_path, monkeypatch):
    write_plugin(tmp_path, monkeypatch, "plug_a")
    spec = register_family("plug-a", "plug_a:TinyEnv", varies="reward", horizon=7)
    assert spec.gym_id == "metarl/PlugA-v0"
    assert resolve("plug-a") is spec
    assert resolve("metarl/PlugA-v0") is spec
    assert "plug-a" in [s.name for s in list_families()]
    assert_runs("plug-a", 7)
    # the same registration again is a no-op; a different one needs override=True
    assert register_family("plug-a", "plug_a:TinyEnv", varies="reward", horizon=7) is spec
    with pytest.raises(ValueError, match="override=True"):
        register_family("plug-a", "plug_a:NotAFamily", varies="goal", horizon=7)
    with pytest.raises(ValueError, match="varies"):
        register_family("plug-bad", "plug_a:TinyEnv", varies="colour", horizon=7)
    with pytest.raises(ValueError, match="horizon"):
        register_family("plug-bad", "plug_a:TinyEnv", varies="goal", horizon=0)


# -- (b) an entry point in the group metarl.envs ------------------------------------
def write_dist_info(tmp_path, entry_points: str) -> None:
    dist = tmp_path / "fakeplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)


def test_b_entry_point(tmp_path, monkeypatch):
    write_dist_info(
        tmp_path,
        "[metarl.envs]\n"
        "fake-tiny = fakeplugin_mod:TinyEnv\n"
        "fake-register = fakeplugin_mod:register\n",
    )
    write_plugin(tmp_path, monkeypatch, "fakeplugin_mod")
    loaded = load_plugins()
    assert {"fake-tiny", "fake-register"} <= set(loaded)
    spec = resolve("fake-tiny")  # a class: registered under the entry point's name
    assert (spec.varies, spec.horizon) == ("reward", 7)
    assert spec.summary.startswith("Tiny family")
    assert_runs("fake-tiny", 7)
    assert resolve("fakeplugin_mod-by-function").horizon == 9  # a function registers itself
    assert_runs("fakeplugin_mod-by-function", 9)


def test_b_entry_points_are_discovered_lazily(tmp_path, monkeypatch):
    write_dist_info(tmp_path, "[metarl.envs]\nfake-lazy = fakeplugin_lazy:TinyEnv\n")
    write_plugin(tmp_path, monkeypatch, "fakeplugin_lazy")
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    assert resolve("fake-lazy").entry_point == "fakeplugin_lazy:TinyEnv"


def test_b_a_broken_plugin_warns_and_the_others_still_load(tmp_path, monkeypatch):
    write_dist_info(
        tmp_path,
        "[metarl.envs]\n"
        "fake-broken = no_such_module_for_metarl:Nope\n"
        "fake-fine = fakeplugin_fine:TinyEnv\n",
    )
    write_plugin(tmp_path, monkeypatch, "fakeplugin_fine")
    with pytest.warns(UserWarning, match="fake-broken"):
        loaded = load_plugins()
    assert "fake-fine" in loaded and "fake-broken" not in loaded
    assert resolve("fake-fine").horizon == 7


# -- (c) "module:ClassName" ---------------------------------------------------------
def test_c_module_colon_class(tmp_path, monkeypatch):
    write_plugin(tmp_path, monkeypatch, "plug_c")
    spec = resolve("plug_c:TinyEnv")
    assert (spec.varies, spec.horizon) == ("reward", 7)
    assert resolve("plug_c:TinyEnv") is spec
    assert_runs("plug_c:TinyEnv", 7)


def test_c_a_class_without_the_task_api_is_a_clear_error(tmp_path, monkeypatch):
    write_plugin(tmp_path, monkeypatch, "plug_bad")
    with pytest.raises(UnknownEnvError, match=r"does not follow the task API \(no sample_tasks"):
        resolve("plug_bad:NotAFamily")
    with pytest.raises(UnknownEnvError, match="cannot import Missing from plug_bad"):
        resolve("plug_bad:Missing")
    with pytest.raises(UnknownEnvError, match="cannot import"):
        resolve("no_such_module_for_metarl:TinyEnv")


def test_unknown_name_says_how_to_add_a_family():
    with pytest.raises(UnknownEnvError) as err:
        resolve("halfcheetah-velocity")
    message = str(err.value)
    assert message.startswith("unknown env 'halfcheetah-velocity'")  # not KeyError's quotes
    assert "halfcheetah-vel" in message and "point-nav" in message
    for way in ("register_family", "entry point in the group 'metarl.envs'", "module:ClassName"):
        assert way in message


def test_builtin_names_resolve_without_importing_their_modules():
    for spec in list_families():
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("metarl.envs."):
            assert resolve(spec.name) is spec
            assert resolve(spec.gym_id) is spec
            assert resolve(f"{spec.name}-v0") is spec


def test_c_same_class_name_in_two_modules_makes_each_its_own_class(tmp_path, monkeypatch):
    write_plugin(tmp_path, monkeypatch, "plug_x")
    write_plugin(tmp_path, monkeypatch, "plug_y")
    spec_x, spec_y = resolve("plug_x:TinyEnv"), resolve("plug_y:TinyEnv")
    assert spec_x.gym_id != spec_y.gym_id
    for module in ("plug_x", "plug_y"):
        env = make_env(f"{module}:TinyEnv")
        assert type(env.unwrapped).__module__ == module
        env.close()


def test_a_gym_id_of_another_family_is_refused(tmp_path, monkeypatch):
    write_plugin(tmp_path, monkeypatch, "plug_id")
    with pytest.raises(ValueError, match="belongs to the family 'point-nav'"):
        register_family(
            "my-nav", "plug_id:TinyEnv", varies="goal", horizon=7, gym_id="metarl/PointNav-v0"
        )
    # a class that happens to share a built-in's name does not take over its id
    assert resolve("point-nav").gym_id == "metarl/PointNav-v0"
    assert gymnasium.registry["metarl/PointNav-v0"].entry_point.endswith(":PointNavEnv")


def test_b_a_plugin_that_fails_to_register_warns(tmp_path, monkeypatch):
    write_dist_info(
        tmp_path,
        "[metarl.envs]\n"
        "point-nav-x = fakeplugin_clash:register_badly\n"
        "fake-ok = fakeplugin_clash:TinyEnv\n",
    )
    write_plugin(tmp_path, monkeypatch, "fakeplugin_clash")
    with (tmp_path / "fakeplugin_clash.py").open("a") as f:
        f.write("\n\ndef register_badly():\n    raise RuntimeError('no luck')\n")
    with pytest.warns(UserWarning, match="point-nav-x.*no luck"):
        loaded = load_plugins()
    assert "fake-ok" in loaded and "point-nav-x" not in loaded
