"""Runs that survive: checkpoints, exact resume, signals, bad input and numerical faults.

Behaviours of the command line run the real CLI in a subprocess; the loop's
counters are checked in-process. Every run is the shrunk TINY run on point-nav.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from cli_args import args_for
from test_train_cli import TINY, run_cli, scalars

from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.algos.maml_ppo import PPOUpdate
from metarl.algos.maml_trpo import TRPOUpdate
from metarl.checkpoint import load_checkpoint, load_latest, periodic_checkpoints
from metarl.configure import build_config
from metarl.loop import REPEAT_WINDOW_S, StopRequest

QUIET = ["--eval-every", "0"]


def ckpt_names(run_dir: Path) -> list[str]:
    return [p.name for p in periodic_checkpoints(run_dir)]


def policy_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["learner"]["policy"]


def same_policy(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``run_dir``."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def children_of(pid: int) -> dict[int, str]:
    """Live processes whose parent is ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class LiveCLI:
    """``python <args>`` in its own process group, its output collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def out(self) -> str:
        return "".join(self.stdout)

    def err(self) -> str:
        return "".join(self.stderr)

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        return code


def cli(*args: str) -> list[str]:
    return ["-m", "metarl.train", *args]


# -- checkpoints --------------------------------------------------------------------------


def test_checkpoint_holds_everything_needed_to_continue(tmp_path):
    args = [*TINY, "--algo", "maml-ppo", "--iterations", "4", "--checkpoint-every", "1"]
    assert train_cli.main([*args, "--keep-checkpoints", "2", "--logdir", str(tmp_path),
                           "--run-name", "r"]) == 0  # fmt: skip
    run_dir = tmp_path / "r"
    assert ckpt_names(run_dir) == ["iter_000002.pt", "iter_000003.pt"]  # the last K = 2
    state = load_latest(run_dir)
    assert state["iteration"] == 3 and state["env_steps"] > 0
    # the resolved config: every key of the run, and only those
    assert state["config"] == build_config(state["config"]).to_dict()
    assert "ppo_lr" in state["config"] and "trpo_max_kl" not in state["config"]
    assert {"policy", "outer"} <= set(state["learner"])
    assert "optimizer" in state["learner"]["outer"]  # MAML-PPO's Adam state
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert state["counters"] == {"rejected_total": 0, "rejected_in_a_row": 0}
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_test_return"] == state["best_test_return"] > float("-inf")
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporary file left
    # the readers take a str as well as a Path (a notebook passes str)
    assert load_latest(str(run_dir))["iteration"] == 3
    best_path = str(run_dir / "checkpoints" / "best.pt")
    assert load_checkpoint(best_path)["iteration"] == best["iteration"]


# -- signals ------------------------------------------------------------------------------


def test_a_signal_repeated_within_the_window_is_the_same_stop_and_a_later_one_stops_now():
    now = [100.0]
    stop = StopRequest(clock=lambda: now[0])
    stop._handle(signal.SIGINT, None)
    assert stop.requested and stop.signum == signal.SIGINT
    now[0] += 0.001  # timeout(1): the same SIGINT to the process, then to its group
    try:
        stop._handle(signal.SIGINT, None)
    except KeyboardInterrupt:
        pytest.fail("the repeated delivery of the first signal stopped the run at once")
    now[0] += REPEAT_WINDOW_S
    with pytest.raises(KeyboardInterrupt):  # a person pressing Ctrl-C again
        stop._handle(signal.SIGINT, None)


@pytest.mark.parametrize("how", ["ctrl-c to the process group", "sigterm to the process"])
def test_first_signal_finishes_the_iteration_checkpoints_and_leaves_no_worker(tmp_path, how):
    run_dir = tmp_path / "r"
    args = [*TINY, "--iterations", "1000", "--workers", "2", "--checkpoint-every", "1000",
            "--logdir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    live = LiveCLI(cli(*args), cwd=tmp_path)
    wait_until(lambda: "iter 2/" in live.out(), 120, "iteration 2")
    workers = [p for p, cmd in children_of(live.proc.pid).items() if "spawn_main" in cmd]
    assert len(workers) == 2, children_of(live.proc.pid)
    if how.startswith("ctrl-c"):  # a terminal sends SIGINT to every process of the group
        os.killpg(live.proc.pid, signal.SIGINT)
    else:
        live.proc.send_signal(signal.SIGTERM)
    assert live.wait(60) == 0, live.err()
    assert "finishing this iteration" in live.err()
    assert f"Resume with:\n  python -m metarl.train --resume {run_dir}" in live.out()
    done = int(live.out().split("Stopped after iteration ")[1].split(".")[0])
    assert f"iter {done}/1000" in live.out() and f"iter {done + 1}/1000" not in live.out()
    assert ckpt_names(run_dir) == [f"iter_{done - 1:06d}.pt"]  # off-schedule, for the stop
    wait_until(lambda: not any(alive(p) for p in workers), 5, "the workers to be gone")


def _slow_iteration_script(slow_iteration: int) -> str:
    """The CLI, with one iteration that would take a minute."""
    return (
        "import sys, time\n"
        "from metarl.algos.gradient_family import GradientLearner as MAML\n"
        "from metarl.train import main\n"
        "real = MAML.train_iteration\n"
        "def slow(self, tasks, iteration):\n"
        f"    if iteration == {slow_iteration}:\n"
        "        time.sleep(60)\n"
        "    return real(self, tasks, iteration)\n"
        "MAML.train_iteration = slow\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


def test_second_ctrl_c_exits_at_once_with_the_last_checkpoint_intact(tmp_path):
    run_dir = tmp_path / "r"
    args = [*TINY, *QUIET, "--iterations", "5", "--checkpoint-every", "1", "--workers", "2",
            "--logdir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    live = LiveCLI(["-c", _slow_iteration_script(2), *args], cwd=tmp_path)
    wait_until(lambda: "iter 2/5" in live.out(), 60, "iteration 2")
    workers = [p for p, cmd in children_of(live.proc.pid).items() if "spawn_main" in cmd]
    assert len(workers) == 2
    wait_until(lambda: len(ckpt_names(run_dir)) == 2, 30, "the checkpoint of iteration 2")
    before = fingerprint(run_dir / "checkpoints")
    os.killpg(live.proc.pid, signal.SIGINT)
    wait_until(lambda: "finishing this iteration" in live.err(), 10, "the first signal")
    time.sleep(REPEAT_WINDOW_S + 0.1)  # a second press, not the first one repeated
    start = time.monotonic()
    os.killpg(live.proc.pid, signal.SIGINT)
    assert live.wait(30) == 130, live.err()
    assert time.monotonic() - start < 15  # at once, not after the minute-long iteration
    assert "Interrupted." in live.err() and "is intact" in live.err()
    assert "Traceback" not in live.err()
    assert fingerprint(run_dir / "checkpoints") == before
    assert load_latest(run_dir)["iteration"] == 1
    wait_until(lambda: not any(alive(p) for p in workers), 5, "the workers to be gone")


_KILLED_WRITE_SCRIPT = """
import io, sys, time, torch
from metarl.train import main
real_save = torch.save
def half_then_hang(obj, f, *args, **kwargs):
    if ".iter_000002.pt.tmp-" in str(getattr(f, "name", "")):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        time.sleep(120)
    return real_save(obj, f, *args, **kwargs)
torch.save = half_then_hang
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_write_then_resume_finishes_the_run(tmp_path):
    """Killed while iter_000002.pt is half written: iter_000001.pt survives, resume goes on."""
    run_dir, folder = tmp_path / "cut", tmp_path / "cut" / "checkpoints"
    common = [*TINY, "--iterations", "4", "--checkpoint-every", "1"]
    args = [*common, "--workers", "2", "--logdir", str(tmp_path), "--run-name", "cut"]
    live = LiveCLI(["-c", _KILLED_WRITE_SCRIPT, *args], cwd=tmp_path)
    temporary = folder / f".iter_000002.pt.tmp-{live.proc.pid}"
    wait_until(lambda: temporary.is_file() and temporary.stat().st_size > 0, 120, "the write")
    workers = [p for p, cmd in children_of(live.proc.pid).items() if "spawn_main" in cmd]
    live.proc.kill()
    assert live.wait(10) == -signal.SIGKILL
    assert ckpt_names(run_dir) == ["iter_000000.pt", "iter_000001.pt"]
    assert load_latest(run_dir)["iteration"] == 1
    wait_until(lambda: not any(alive(p) for p in workers), 10, "orphaned workers to exit")

    result = run_cli("metarl.train", "--resume", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Resuming {run_dir} at iteration 3/4" in result.stdout
    assert ckpt_names(run_dir) == ["iter_000001.pt", "iter_000002.pt", "iter_000003.pt"]
    assert not temporary.exists()
    # TensorBoard: every step once (the killed run's iteration 3 was purged), same numbers.
    assert train_cli.main([*common, "--logdir", str(tmp_path), "--run-name", "full"]) == 0
    resumed, full = scalars(run_dir), scalars(tmp_path / "full")
    for tag in ["adapt/return_step_0", "adapt/return_step_1", "perf/env_steps",
                "loss/surrogate_before", "test/return_step_2"]:  # fmt: skip
        assert resumed[tag] == full[tag], tag
    assert [s for s, _ in resumed["adapt/return_step_0"]] == [0, 1, 2, 3]


# -- bad input: one clear line, exit code 2, nothing lost -----------------------------------


def assert_bad_input(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("yaml_text", "args", "message"),
    [
        ("algo: maml-sgd\n", [],
         "config key 'algo': 'maml-sgd' is not one of: maml-trpo, maml-ppo, rl2"),
        (None, ["--algo", "maml-sgd"], "invalid choice: 'maml-sgd' (choose from"),
        (None, ["--inner-lrr", "0.1"], "unrecognized arguments: --inner-lrr"),
        (None, ["--max-consecutive-rejections", "0"],
         "config key 'max_consecutive_rejections': 0 is below the minimum 1"),
        ("- a list\n", [], "must hold a mapping of keys, not list"),
        ("env_kwargs: {no_such_kwarg: 1}\n", [],
         "config key 'env_kwargs': {'no_such_kwarg': 1} is not accepted by 'point-nav'"),
        (None, ["--init-log-std", "nan"], "config key 'init_log_std': 'nan' is not a valid float"),
        (None, ["--inner-lr", "inf"], "config key 'inner_lr': 'inf' is not a valid float"),
        (None, ["--ppo-lr", "0.05"],
         "config key 'ppo_lr' is not read by maml-trpo; it is read by: maml-ppo, rl2, meta-sgd"),
    ],
)  # fmt: skip
def test_bad_config_is_one_line_and_creates_no_run_directory(tmp_path, yaml_text, args, message):
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        args = [*args, "--config", "c.yaml"]
    result = run_cli("metarl.train", *TINY, "--logdir", "runs", *args, cwd=tmp_path, timeout=60)
    assert_bad_input(result, message)
    assert not (tmp_path / "runs").exists()


def test_a_logdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    result = run_cli("metarl.train", *TINY, "--logdir", "runs", cwd=tmp_path, timeout=60)
    assert_bad_input(result, "config key 'logdir': 'runs' is a file")
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("metarl.train", "--env", "no-such-env", "--debug", cwd=tmp_path, timeout=60)
    assert result.returncode == 1  # the exception escapes (without --debug: 2 and one line)
    assert result.stderr.startswith("Traceback (most recent call last):")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("metarl.registry.UnknownEnvError: unknown env 'no-such-env'"), last


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished TINY run with two checkpoints (iterations 1 and 2)."""
    logdir = tmp_path_factory.mktemp("runs")
    args = [*TINY, *QUIET, "--checkpoint-every", "1", "--keep-checkpoints", "2"]
    assert train_cli.main([*args, "--logdir", str(logdir), "--run-name", "done"]) == 0
    return logdir / "done"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "point-nav-sparse"], "is of env='point-nav', not 'point-nav-sparse'"),
        (["--algo", "maml-ppo"], "is of algo='maml-trpo', not 'maml-ppo'"),
        (["--hidden-sizes", "16", "16"], "is of hidden_sizes=(8, 8), not (16, 16)"),
    ],
)
def test_resume_with_another_env_algo_or_architecture_is_refused(
    tmp_path, finished_run, args, message
):
    before = fingerprint(finished_run)
    result = run_cli("metarl.train", "--resume", str(finished_run), *args, cwd=tmp_path, timeout=60)
    assert_bad_input(result, message)
    assert fingerprint(finished_run) == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, finished_run):
    before = fingerprint(finished_run)
    result = run_cli("metarl.train", "--resume", str(finished_run), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "has already run its 3 iterations; pass --iterations N" in result.stdout
    assert "Resuming" not in result.stdout
    assert fingerprint(finished_run) == before


def test_resume_of_a_corrupt_or_mismatched_checkpoint_is_refused(tmp_path, finished_run):
    run_dir = tmp_path / "copy"
    (run_dir / "checkpoints").mkdir(parents=True)
    latest = run_dir / "checkpoints" / "iter_000002.pt"
    data = (finished_run / "checkpoints" / "iter_000002.pt").read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # truncated
    result = run_cli("metarl.train", "--resume", str(run_dir), cwd=tmp_path, timeout=60)
    assert_bad_input(result, "iter_000002.pt' is unreadable (corrupt?)")

    (run_dir / "checkpoints" / "iter_000001.pt").write_bytes(
        (finished_run / "checkpoints" / "iter_000001.pt").read_bytes()
    )
    result = run_cli("metarl.train", "--resume", str(run_dir), cwd=tmp_path, timeout=60)
    assert_bad_input(result, "move it aside to resume from the older iter_000001.pt")

    state = load_checkpoint(finished_run / "checkpoints" / "iter_000002.pt")
    state["learner"]["policy"]["layers.0.weight"] = torch.zeros(5, 2)  # another architecture
    torch.save(state, latest)
    result = run_cli("metarl.train", "--resume", str(run_dir), cwd=tmp_path, timeout=60)
    assert_bad_input(result, "does not match the maml-trpo policy on point-nav")
    result = run_cli("metarl.evaluate", str(run_dir), cwd=tmp_path, timeout=60)
    assert_bad_input(result, "does not match the maml-trpo policy on point-nav")

    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("metarl.train", "--resume", str(empty), cwd=tmp_path, timeout=60)
    assert_bad_input(result, "holds no checkpoint")


def evaluate_in_process(args: list[str], capsys) -> tuple[int, str]:
    """``metarl.evaluate``'s exit code and stderr (argparse's errors exit from parse_args)."""
    try:
        code = evaluate_cli.main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # was a traceback from the learner's meta_test (UnboundLocalError)
        (["--adapt-steps", "-1"], "argument --adapt-steps: -1 is below the minimum 0"),
        (["--adapt-steps", "x"], "argument --adapt-steps: invalid int value: 'x'"),
        (["--n-tasks", "-1"], "argument --n-tasks: -1 is below the minimum 0"),
        (["--tasks", "test", "--n-tasks", "4"],
         "--n-tasks: 4 is more than the 3 tasks of the test pool"),
        (["--n-tasks", "41"], "--n-tasks: 41 is more than the 40 tasks of the benchmark pool"),
        (["--tasks", "train", "--n-tasks", "11"],
         "--n-tasks: 11 is more than the 10 tasks of the train pool"),
        (["--episodes", "-1"], "argument --episodes: -1 is below the minimum 0"),  # was a traceback
        (["--workers", "-2"], "argument --workers: -2 is below the minimum -1"),
        (["--seed", "-1"], "argument --seed: -1 is below the minimum 0"),  # was a traceback
        (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
        (["--checkpoint", "nope"], "--checkpoint: 'nope' is not 'latest', 'best', a checkpoint"),
        (["--checkpoint", "/no/such/file.pt"], "--checkpoint: '/no/such/file.pt' is not"),
        (["--checkpoint", "best"], "best.pt' does not exist (the run has not meta-tested yet"),
        (["--tasks", "val"], "argument --tasks: invalid choice: 'val'"),
        (["--video-tasks", "0"], "argument --video-tasks: 0 is below the minimum 1"),
        (["--video-tasks", "2"], "--video-tasks 2 needs --video or --sheet"),
        (["--video-steps", "1"], "--video-steps 1 needs --video or --sheet"),
        (["--video-task-ids", "1", "0"], "--video-task-ids 1 0 needs --video or --sheet"),
        (["--tasks", "test", "--sheet", "--video-tasks", "4"],
         "--video-tasks: 4 is more than the 3 tasks"),
        (["--sheet", "--video-steps", "-1"], "argument --video-steps: -1 is below the minimum 0"),
        (["--sheet", "--video-size", "10"], "argument --video-size: expected WIDTHxHEIGHT"),
        (["--video-size", "abc"], "argument --video-size: expected WIDTHxHEIGHT"),
        (["--protocol", "garage"], "argument --protocol: invalid choice: 'garage'"),
        (["--protocol-evals", "0"], "argument --protocol-evals: 0 is below the minimum 1"),
        (["--protocol-envs", "-1"], "argument --protocol-envs: -1 is below the minimum 1"),
        (["--protocol-eval-episodes", "0"],
         "argument --protocol-eval-episodes: 0 is below the minimum 1"),
        (["--protocol", "metaworld", "--tasks", "train"],
         "--tasks train does not apply to --protocol metaworld"),
        (["--protocol", "metaworld", "--sheet"], "--sheet does not apply to --protocol metaworld"),
        (["--protocol", "metaworld", "--adapt-steps", "0"],
         "--adapt-steps: 0 must be >= 1 with --protocol metaworld"),
        (["--protocol", "metaworld"], "--protocol metaworld scores Meta-World runs; this run is"),
        (["--sampler", "slurm"], "argument --sampler: invalid choice: 'slurm'"),
        (["--ray-address", "x:1"], "config key 'ray_address': 'x:1' needs --sampler ray"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)  # fmt: skip
def test_bad_evaluate_flag_is_one_line_and_writes_nothing(finished_run, capsys, args, message):
    before = fingerprint(finished_run)
    code, err = evaluate_in_process([str(finished_run), "--workers", "0", *args], capsys)
    assert_one_line(code, err, message)
    assert fingerprint(finished_run) == before and not (finished_run / "eval").exists()


@pytest.mark.parametrize("case", ["missing", "a file", "no checkpoint", "unreadable"])
def test_bad_evaluate_run_directory_is_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch, case
):
    run_dir = tmp_path / "run"
    if case == "a file":
        run_dir.write_text("not a run")
    elif case in ("no checkpoint", "unreadable"):
        (run_dir / "checkpoints").mkdir(parents=True)
    if case == "unreadable":  # root reads anything: deny the listing as the OS would
        real = Path.iterdir

        def denied(self):
            if self == run_dir / "checkpoints":
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", denied)
    message = {
        "missing": f"run directory {str(run_dir)!r} does not exist",
        "a file": f"run directory {str(run_dir)!r} is not a directory",
        "no checkpoint": f"run directory {str(run_dir)!r} holds no checkpoint",
        "unreadable": f"run directory {str(run_dir)!r} is unreadable: [Errno 13]",
    }[case]
    before = sorted(tmp_path.rglob("*"))
    code, err = evaluate_in_process([str(run_dir), "--workers", "0"], capsys)
    assert_one_line(code, err, message)
    assert sorted(tmp_path.rglob("*")) == before


# -- numerical faults ---------------------------------------------------------------------

NAN_ENV = '''
from metarl.envs.point_nav import PointNavEnv

class NaNRewardEnv(PointNavEnv):
    """Point-nav whose rewards turn NaN after 150 steps in a process."""

    steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        type(self).steps += 1
        return obs, reward if type(self).steps <= 150 else float("nan"), terminated, truncated, info
'''


def test_non_finite_env_stops_the_run_naming_family_and_task(tmp_path):
    (tmp_path / "nanenv.py").write_text(NAN_ENV)
    run_dir = tmp_path / "r"
    args = [*TINY, "--env", "nanenv:NaNRewardEnv", "--checkpoint-every", "1",
            "--logdir", str(tmp_path), "--run-name", "r"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, *cli(*args)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1, result.stderr
    error, hint = result.stderr.strip().splitlines()
    assert error.startswith("error: env returned a non-finite reward"), error
    assert "'nanenv:NaNRewardEnv', task " in error and "GoalTask(goal=" in error
    assert f"The last checkpoint ({run_dir / 'checkpoints' / 'iter_000000.pt'}) is intact" in hint
    assert f"--resume {run_dir}" in hint
    assert "iter 1/3" in result.stdout and "iter 2/3" not in result.stdout  # never trained on it
    assert ckpt_names(run_dir) == ["iter_000000.pt"] and load_latest(run_dir)["iteration"] == 0


def poison_updates(monkeypatch, update_class, calls: set[int]) -> None:
    """Make the real update see NaN advantages on the given calls (0-based)."""
    real = update_class.update
    count = iter(range(10_000))

    def update(self, data, iteration=0):
        if next(count) in calls:
            data.valid.advantages.fill_(float("nan"))
        return real(self, data, iteration)

    monkeypatch.setattr(update_class, "update", update)


@pytest.mark.parametrize(("algo", "update_class"), [("maml-trpo", TRPOUpdate),
                                                    ("maml-ppo", PPOUpdate)])  # fmt: skip
def test_a_non_finite_update_is_rejected_counted_and_the_run_goes_on(
    tmp_path, monkeypatch, capsys, algo, update_class
):
    poison_updates(monkeypatch, update_class, calls={1})
    args = [
        *args_for(algo, TINY),
        *QUIET,
        "--algo",
        algo,
        "--checkpoint-every",
        "1",
        "--logdir",
        str(tmp_path),
    ]
    assert train_cli.main([*args, "--run-name", "r"]) == 0
    run_dir = tmp_path / "r"
    assert "update of iteration 2 rejected" in capsys.readouterr().err
    tags = scalars(run_dir)
    assert tags["update/rejected_nonfinite"] == [(0, 0.0), (1, 1.0), (2, 1.0)]
    ckpts = periodic_checkpoints(run_dir)
    assert same_policy(policy_of(ckpts[0]), policy_of(ckpts[1]))  # parameters untouched
    assert not same_policy(policy_of(ckpts[1]), policy_of(ckpts[2]))  # and training goes on
    assert load_checkpoint(ckpts[1])["counters"] == {"rejected_total": 1, "rejected_in_a_row": 1}
    assert load_checkpoint(ckpts[2])["counters"] == {"rejected_total": 1, "rejected_in_a_row": 0}


def test_several_rejected_updates_in_a_row_stop_the_run(tmp_path, monkeypatch, capsys):
    poison_updates(monkeypatch, TRPOUpdate, calls=set(range(1, 100)))
    args = [*TINY, *QUIET, "--iterations", "8", "--checkpoint-every", "1",
            "--max-consecutive-rejections", "3", "--logdir", str(tmp_path)]  # fmt: skip
    assert train_cli.main([*args, "--run-name", "r"]) == 1
    error, hint = capsys.readouterr().err.strip().splitlines()[-2:]
    assert error.startswith("error: the updates of iterations 2..4 (3 in a row"), error
    assert "iter_000002.pt) is intact" in hint
    assert ckpt_names(tmp_path / "r") == ["iter_000000.pt", "iter_000001.pt", "iter_000002.pt"]
