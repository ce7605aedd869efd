"""README's own examples and commands run as written, shrunk, so README cannot drift.

Its code blocks run (the custom family, the three ways to add it, the Gymnasium
example); its quick start trains and evaluates with every size knob shrunk by flags
appended to its command; every other command line it shows parses with the parser of
its command and builds its config; every flag it names is a current one, and every
file it names exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from metarl import baselines, evaluate, plot, register_family, registry, results
from metarl import train as train_cli
from metarl.config import load_yaml
from metarl.configure import build_config, config_overrides, renamed
from tests.test_registry import restore_registries, write_dist_info  # noqa: F401 - a fixture

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SHRINK = ["--iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "1",
          "--horizon", "5", "--workers", "0", "--train-pool-size", "4", "--test-pool-size", "2",
          "--eval-every", "0", "--hidden-sizes", "8", "--quiet"]  # fmt: skip
"""Appended to a README training command: every size knob at its smallest."""
EVAL_SHRINK = ["--n-tasks", "1", "--episodes", "1", "--workers", "0"]
COMMANDS = {
    "train": train_cli,
    "evaluate": evaluate,
    "baselines": baselines,
    "plot": plot,
    "results": results,
}
COMMAND = re.compile(
    r"^(?:[A-Z_]+=\S+\s+)*"  # MUJOCO_GL=egl
    r"(?:python -m metarl\.(?P<module>\w+)|python (?P<script>\w+\.py)|metarl (?P<sub>\w+))"
    r"(?P<rest>.*)$",
    flags=re.S,
)
PLACEHOLDERS = {"NAME": "point-nav", "S": "0", "N": "1", "K": "1"}
"""README's placeholders -> a value that parses where they stand."""


# -- what README holds ----------------------------------------------------------------------------


def python_blocks() -> list[str]:
    """README's ```python blocks, dedented (a block inside a list item is indented)."""
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", README, flags=re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


def block_with(text: str, language: str = "python") -> str:
    """The one README block of ``language`` that contains ``text``, dedented."""
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", README, flags=re.S | re.M)
    (found,) = [textwrap.dedent(body) for _, body in blocks if text in body]
    return found


def command_lines() -> list[str]:
    """Every metarl command line README shows with at least one argument: the lines of its
    indented code blocks and its inline code spans (a span may wrap across lines)."""
    code_lines = [line.strip() for line in README.splitlines() if line.startswith("    ")]
    prose = re.sub(r"^ *```.*?^ *```", "", README, flags=re.S | re.M)  # no fenced blocks
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    found = []
    for text in [*code_lines, *spans]:
        match = COMMAND.match(text)
        if match and match["rest"].strip() and text not in found:
            found.append(text)
    return found


def command_argv(line: str) -> tuple[str, list[str]]:
    """A README command line as (command, argv): optional ``[...]`` parts and ``...`` left
    out, ``a|b`` choices as their first, placeholders as values, and a run directory for an
    ``evaluate`` fragment that names flags only."""
    match = COMMAND.match(line)
    command = match["module"] or match["script"] or match["sub"]
    rest = re.sub(r"\[[^\]]*\]", " ", match["rest"])
    argv = [PLACEHOLDERS.get(token, token.split("|")[0])
            for token in shlex.split(rest) if token != "..."]  # fmt: skip
    if command == "evaluate" and (not argv or argv[0].startswith("-")):
        argv.insert(0, "RUN_DIR")
    return command, argv


def current_flags() -> set[str]:
    """Every flag the four commands list in ``--help`` (old names parse, but are hidden)."""
    flags: set[str] = set()
    for module in COMMANDS.values():
        for action in module.build_parser()._actions:
            if action.help is not argparse.SUPPRESS:
                flags.update(action.option_strings)
    return flags


# -- the code blocks ----------------------------------------------------------------------------


@pytest.fixture
def my_pkg(tmp_path, monkeypatch) -> Path:
    """README's ``my_pkg/envs.py``: the custom family block, importable from ``tmp_path``."""
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "envs.py").write_text(block_with("class TargetEnv"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_readme_custom_family_follows_the_task_api_and_trains(tmp_path):
    namespace: dict = {}
    exec(compile(block_with("class TargetEnv"), "README.md", "exec"), namespace)  # noqa: S102
    env = namespace["TargetEnv"]()
    (task,) = env.sample_tasks(1)
    env.set_task(task)
    check_env(env, skip_render_check=True)
    register_family("readme-target", namespace["TargetEnv"], varies="goal", horizon=50)
    args = ["--env", "readme-target", *SHRINK, "--logdir", str(tmp_path), "--run-name", "r"]
    assert train_cli.main(args) == 0


def test_readme_script_trains_with_workers_and_its_run_evaluates_in_a_fresh_process(my_pkg):
    """Way 1, the script exactly as README shows it (rollout workers start by spawn and
    re-import it), then ``metarl evaluate`` in a process that knows nothing of the family
    but where ``my_pkg`` imports: the run's record of its family is enough."""
    script = block_with("metarl.register_family(")
    (line,) = [c for c in command_lines() if c.startswith("python train_target.py")] or [None]
    assert line is not None, "README no longer runs train_target.py"
    (my_pkg / "train_target.py").write_text(script)
    flags = [*shlex.split(line)[2:], *SHRINK, "--workers", "1", "--logdir", "runs",
             "--run-name", "way1"]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(my_pkg), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "train_target.py", *flags], cwd=my_pkg, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "starting 1 rollout worker" in done.stdout
    run_dir = my_pkg / "runs" / "way1"
    elsewhere = my_pkg / "elsewhere"
    elsewhere.mkdir()
    evaluated = subprocess.run(
        [sys.executable, "-m", "metarl.evaluate", str(run_dir), "--adapt-steps", "1",
         *EVAL_SHRINK],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert list((run_dir / "eval").glob("benchmark_iter000001_steps1_*.json"))


def test_readme_plugin_and_import_path_routes_train(my_pkg):
    """Way 2 (README's entry point, as an installed package declares it) and way 3."""
    toml = block_with("metarl.envs", "toml")
    assert toml.startswith('[project.entry-points."metarl.envs"]\n')
    ((name, value),) = re.findall(r'^([\w-]+) = "([\w.:]+)"$', toml, flags=re.M)
    write_dist_info(my_pkg, f"[metarl.envs]\n{name} = {value}\n")
    assert name in registry.load_plugins()
    for way, line in (("plugin", f"python -m metarl.train --env {name}"),
                      ("path", "python -m metarl.train --env my_pkg.envs:TargetEnv")):  # fmt: skip
        assert line in command_lines()
        _, argv = command_argv(line)
        assert train_cli.main([*argv, *SHRINK, "--logdir", str(my_pkg), "--run-name", way]) == 0
        assert (my_pkg / way / "checkpoints" / "iter_000000.pt").is_file()


def test_readme_gymnasium_example_runs():
    namespace: dict = {}
    exec(compile(block_with("gymnasium.make("), "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["info"]["task"] == namespace["task"]
    assert isinstance(namespace["env"], gymnasium.Env)


# -- the quick start ----------------------------------------------------------------------------


def quick_start() -> str:
    return README[README.index("## Quick start") : README.index("## Task families")]


def test_readme_quick_start_trains_and_evaluates_shrunk(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # its --config paths are relative to the repository
    train_lines = [c for c in command_lines() if "metarl.train --" in c and c in quick_start()]
    assert len(train_lines) >= 2  # the point-nav config and a MuJoCo family
    for i, line in enumerate(train_lines):
        _, argv = command_argv(line)
        run = ["--logdir", str(tmp_path), "--run-name", f"quick{i}"]
        assert train_cli.main([*argv, *SHRINK, *run]) == 0, line
    (line,) = [c for c in command_lines() if "metarl.evaluate runs/" in c and c in quick_start()]
    _, argv = command_argv(line)
    argv[0] = str(tmp_path / "quick0")  # runs/<run-directory>
    assert evaluate.main([*argv, *EVAL_SHRINK]) == 0
    assert list((tmp_path / "quick0" / "eval").glob("benchmark_iter000001_*.json"))


# -- every command line, flag and file ----------------------------------------------------------


@pytest.mark.parametrize("line", command_lines())
def test_each_readme_command_line_parses(line, capsys):
    """Parsed by its command's parser, and its config built, as the command would; the
    config keys it names (in flags and its YAML file) are current names."""
    command, argv = command_argv(line)
    if command == "envs":
        return
    if command.endswith(".py"):  # a user's script: it passes its flags to metarl.train
        command = "train"
    parser = COMMANDS[command].build_parser()
    if "--help" in argv:
        assert "--help" in parser._option_string_actions
        return
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{line!r}: {capsys.readouterr().err.strip()}")
    base = load_yaml(ROOT / args.config) if getattr(args, "config", None) else {}
    assert not set(base) & set(renamed()), f"{args.config} uses old key names"
    if command == "train" and not args.resume and not args.list_envs:
        build_config(config_overrides(args), base)
    elif command == "baselines":
        keys = {k: v for k, v in vars(args).items() if k in baselines.CONFIG_KEYS}
        baselines.baseline_settings(args, build_config(keys, base))
    elif command == "evaluate":
        evaluate.check_flags(args)


def test_readme_commands_are_found():
    lines = command_lines()
    assert any(line.startswith("python -m metarl.evaluate") for line in lines)
    assert any(line.startswith("python -m metarl.baselines") for line in lines)
    assert any(line.startswith("python train_target.py") for line in lines)


def test_every_flag_readme_names_is_a_current_flag():
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    assert named
    assert not named - current_flags(), "README names flags no command lists"


def test_every_file_readme_names_exists():
    links = re.findall(r"\]\(([^)#\s]+)", README) + re.findall(r'src="([^"]+)"', README)
    paths = {link for link in links if not link.startswith("http")}
    paths |= set(re.findall(r"(?<![\w/.-])((?:experiments|docs|metarl|tests)/[\w./-]*\w)", README))
    paths = {p for p in paths if not re.search(r"(/[A-Z_]+(\.\w+)?$)|-v\d+$", p)}  # placeholders
    yaml_names = set(re.findall(r"\b(\w+\.yaml)\b", README)) - {"config.yaml"}
    yaml_names = {name for name in yaml_names if not re.match(r"[A-Z_]+\.", name)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    missing += sorted(n for n in yaml_names if not (ROOT / "experiments" / n).exists())
    assert not missing
