"""README's own examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium
from gymnasium.utils.env_checker import check_env

from metarl import register_family
from metarl import train as train_cli

README = (Path(__file__).parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_custom_family_follows_the_task_api_and_trains(tmp_path):
    (source,) = [b for b in python_blocks() if "class TargetEnv" in b]
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    env = namespace["TargetEnv"]()
    (task,) = env.sample_tasks(1)
    env.set_task(task)
    check_env(env, skip_render_check=True)
    register_family("readme-target", namespace["TargetEnv"], varies="goal", horizon=50,
                    override=True)  # fmt: skip
    args = ["--env", "readme-target", "--iterations", "2", "--meta-batch-size", "2",
            "--episodes-per-task", "2", "--hidden-sizes", "8", "--workers", "0",
            "--eval-every", "0", "--logdir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    assert train_cli.main(args) == 0


def test_readme_gymnasium_example_runs():
    (source,) = [b for b in python_blocks() if "gymnasium.make(" in b]
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["info"]["task"] == namespace["task"]
    assert isinstance(namespace["env"], gymnasium.Env)
