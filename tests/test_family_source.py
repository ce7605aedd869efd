"""A run knows its family, and a script that trains shows the way it works.

A run records where its family came from (the config key ``family``), so a fresh
process that can import that path evaluates and resumes it from the command line, and
one that cannot says so in one line. A script that trains at its top level without a
``__main__`` guard gets one line naming the fix, not the traceback of every worker.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium
import pytest

import metarl
from metarl import baselines, registry
from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.checkpoint import load_latest
from metarl.configure import restored_config
from metarl.options import ConfigError
from metarl.registry import (
    UnknownEnvError,
    family_record,
    import_entry_point,
    register_family,
    resolve,
    resolve_recorded,
)
from metarl.sampling.worker import (
    UNGUARDED_MAIN_EXIT,
    exit_if_spawn_bootstrapping,
    unguarded_main_hint,
)
from tests.test_plugins import SOURCE
from tests.test_registry import restore_registries  # noqa: F401 - a fixture

TINY = ["--iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "1",
        "--horizon", "4", "--workers", "0", "--train-pool-size", "4", "--test-pool-size", "2",
        "--eval-every", "0", "--hidden-sizes", "8", "--quiet"]  # fmt: skip
EVALUATE = ["--adapt-steps", "1", "--n-tasks", "1", "--episodes", "1", "--workers", "0"]


def write_module(folder: Path, name: str) -> str:
    """A family module ``name`` in ``folder`` (test_plugins' ``PlainGoalEnv``, horizon 5)."""
    (folder / f"{name}.py").write_text(SOURCE)
    return f"{name}:PlainGoalEnv"


def fresh_process(
    args: list[str], cwd: Path, pythonpath: Path | None
) -> subprocess.CompletedProcess:
    """``python ARGS`` in a new interpreter that has only ``pythonpath`` added to its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def forget(name: str, module: str) -> None:
    """This process no longer knows the family ``name`` nor can import ``module``."""
    spec = registry._FAMILIES.pop(name)
    gymnasium.registry.pop(spec.gym_id, None)
    sys.modules.pop(module, None)
    importlib.invalidate_caches()


# -- the record ------------------------------------------------------------------------------------


def test_the_record_is_the_import_path_varies_and_horizon(tmp_path, monkeypatch):
    path = write_module(tmp_path, "recorded_mod")
    monkeypatch.syspath_prepend(str(tmp_path))
    by_path = register_family("by-path", path, varies="reward", horizon=9)
    assert family_record(by_path) == {"entry_point": path, "varies": "reward", "horizon": 9}
    cls = import_entry_point(path)
    by_class = register_family("by-class", cls, varies="goal", horizon=5)
    assert family_record(by_class)["entry_point"] == "recorded_mod:PlainGoalEnv"
    assert family_record(resolve("point-nav"))["entry_point"] == "metarl.envs.point_nav:PointNavEnv"


def test_a_recorded_family_is_registered_under_its_name_with_its_horizon(tmp_path, monkeypatch):
    path = write_module(tmp_path, "horizon_mod")
    monkeypatch.syspath_prepend(str(tmp_path))
    record = {"entry_point": path, "varies": "goal", "horizon": 17}  # the class says 5
    spec = resolve_recorded("seventeen", record)
    assert (spec.name, spec.entry_point, spec.horizon) == ("seventeen", path, 17)
    assert resolve_recorded("seventeen", None) is spec  # known now: the record is not needed
    with pytest.raises(UnknownEnvError, match="unknown env 'no-record'"):
        resolve_recorded("no-record", {})


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no_such_pkg_for_metarl.envs:Env", "ModuleNotFoundError: No module named 'no_such_pkg"),
        ("metarl.envs.point_nav:NoSuchEnv", "AttributeError: module 'metarl.envs.point_nav'"),
        ("__main__:TargetEnv", "defined in the script that trained the run"),
    ],
)
def test_a_record_that_cannot_be_imported_is_one_line(path, reason):
    with pytest.raises(UnknownEnvError) as err:
        resolve_recorded("lost", {"entry_point": path, "varies": "goal", "horizon": 5},
                         owner="run 'runs/x'")  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"run 'runs/x' is of family 'lost' from {path!r}, which cannot")
    assert reason in message and "register_family('lost', ...)" in message
    assert "\n" not in message


def test_an_old_config_without_a_record_still_loads():
    saved = {"env": "point-nav", "algo": "maml-trpo", "seed": 3, "iterations": 2}
    assert restored_config(saved).family == {}


def test_an_old_run_resumed_records_its_family(tmp_path):
    old = Path(__file__).parents[1] / "experiments" / "results" / "pointnav-fomaml-s0"
    copy = tmp_path / "old"
    shutil.copytree(old / "checkpoints", copy / "checkpoints")
    state = load_latest(copy)
    assert "family" not in state["config"]
    args = ["--resume", str(copy), "--iterations", str(state["iteration"] + 2),
            "--meta-batch-size", "2", "--episodes-per-task", "1", "--eval-every", "0",
            "--workers", "0", "--quiet"]  # fmt: skip
    assert train_cli.main(args) == 0
    record = load_latest(copy)["config"]["family"]
    assert record == {"entry_point": "metarl.envs.point_nav:PointNavEnv", "varies": "goal",
                      "horizon": 100}  # fmt: skip


# -- a run of a registered family from the command line ----------------------------------------


def test_a_registered_family_run_evaluates_and_resumes_in_a_fresh_process(tmp_path, monkeypatch):
    """The run was made by a script that registered the family; a new process has only the
    module on its path, and no code that registers it."""
    modules = tmp_path / "modules"
    modules.mkdir()
    path = write_module(modules, "fresh_family_mod")
    monkeypatch.syspath_prepend(str(modules))
    register_family("fresh-goal", path, varies="goal", horizon=5)
    run_dir = tmp_path / "run"
    args = [*TINY, "--env", "fresh-goal", "--logdir", str(tmp_path), "--run-name", "run"]
    assert train_cli.main(args) == 0
    assert "entry_point: fresh_family_mod:PlainGoalEnv" in (run_dir / "config.yaml").read_text()
    evaluated = fresh_process(["-m", "metarl.evaluate", str(run_dir), *EVALUATE], tmp_path, modules)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "maml-trpo on fresh-goal" in evaluated.stdout
    resumed = fresh_process(["-m", "metarl.train", "--resume", str(run_dir), "--iterations", "2",
                             "--quiet"], tmp_path, modules)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "iter 2/2" in resumed.stdout


def test_a_run_whose_family_cannot_be_imported_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_module(tmp_path, "vanishing_family_mod")
    register_family("vanishing", path, varies="goal", horizon=5)
    run_dir = tmp_path / "run"
    args = [*TINY, "--env", "vanishing", "--logdir", str(tmp_path), "--run-name", "run"]
    assert train_cli.main(args) == 0
    (tmp_path / "vanishing_family_mod.py").unlink()
    forget("vanishing", "vanishing_family_mod")
    capsys.readouterr()
    expected = (
        f"error: run {str(run_dir)!r} is of family 'vanishing' from {path!r}, which cannot be "
        "imported here (ModuleNotFoundError: No module named 'vanishing_family_mod'); install "
        "it (or put it on PYTHONPATH), or call metarl.register_family('vanishing', ...) before "
        "evaluating or resuming it"
    )
    assert evaluate_cli.main([str(run_dir), *EVALUATE]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]
    assert not (run_dir / "eval").exists()
    assert train_cli.main(["--resume", str(run_dir), "--iterations", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_baselines_find_the_family_from_a_runs_config(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_module(tmp_path, "baseline_family_mod")
    register_family("baseline-goal", path, varies="goal", horizon=5)
    args = [*TINY, "--env", "baseline-goal", "--logdir", str(tmp_path), "--run-name", "run"]
    assert train_cli.main(args) == 0
    forget("baseline-goal", "baseline_family_mod")  # the module still imports
    args = ["--config", str(tmp_path / "run" / "config.yaml"), "--kind", "scratch",
            "--timesteps", "20", "--n-test-tasks", "1", "--adapt-steps", "1",
            "--logdir", str(tmp_path), "--run-name", "baseline"]  # fmt: skip
    assert baselines.main(args) == 0
    assert resolve("baseline-goal").horizon == 5
    saved = (tmp_path / "baseline" / "config.yaml").read_text()
    assert "entry_point: baseline_family_mod:PlainGoalEnv" in saved


# -- scripts ---------------------------------------------------------------------------------------

UNGUARDED = textwrap.dedent(
    """
    import sys
    import metarl

    metarl.register_family("guarded-goal", "{path}", varies="goal", horizon=5)
    sys.exit(metarl.train.main(["--env", "guarded-goal", *sys.argv[1:]]))
    """
)


def test_an_unguarded_script_gets_one_line_naming_the_fix(tmp_path):
    path = write_module(tmp_path, "unguarded_family_mod")
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.replace("{path}", path))
    args = [str(script), *TINY, "--workers", "1", "--logdir", str(tmp_path), "--run-name", "r"]
    done = fresh_process(args, tmp_path, None)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {unguarded_main_hint(str(script))}"]
    assert 'if __name__ == "__main__":' in done.stderr and "--workers 0" in done.stderr
    assert done.stdout.count("building the policy") == 1  # the worker printed nothing
    assert not (tmp_path / "r").exists()


def test_a_worker_re_running_an_unguarded_script_exits_with_its_code(monkeypatch):
    exit_if_spawn_bootstrapping()  # not a spawned child: nothing happens
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(SystemExit) as exit_:
        exit_if_spawn_bootstrapping()
    assert exit_.value.code == UNGUARDED_MAIN_EXIT
    with pytest.raises(SystemExit):
        train_cli.main([*TINY, "--env", "point-nav"])  # before it prints or builds anything


def test_import_metarl_exposes_the_commands_without_importing_torch(tmp_path):
    code = (
        "import sys, metarl\n"
        "assert 'torch' not in sys.modules, 'import metarl imported torch'\n"
        "assert callable(metarl.register_family) and callable(metarl.train.main)\n"
        "assert callable(metarl.train.run) and callable(metarl.evaluate.main)\n"
    )
    done = fresh_process(["-c", code], tmp_path, None)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        metarl.nothing  # noqa: B018


def test_train_run_returns_the_run_directory_and_raises_bad_input(tmp_path):
    keys = {"env": "point-nav", "iterations": 1, "meta_batch_size": 2, "episodes_per_task": 1,
            "horizon": 4, "workers": 0, "train_pool_size": 4, "test_pool_size": 2,
            "eval_every": 0, "hidden_sizes": [8], "logdir": str(tmp_path)}  # fmt: skip
    run_dir = metarl.train.run(keys, quiet=True, run_name="direct")
    assert run_dir == tmp_path / "direct"
    assert (run_dir / "checkpoints" / "iter_000000.pt").is_file()
    with pytest.raises(ConfigError, match="config key 'iterations'"):
        metarl.train.run(keys, iterations=0, run_name="bad")
    assert not (tmp_path / "bad").exists()
