"""The real CLI, shrunk to seconds: smoke runs, TensorBoard tags, evaluation, bad input, resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import args_for
from metarl.envs.half_cheetah import DirectionTask
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl import run as run_assembly
from metarl import train as train_cli
from metarl.checkpoint import load_checkpoint, periodic_checkpoints
from metarl.configure import build_config
from metarl.evaluate import balanced_curve, by_distinct_task

TINY = [
    "--env", "point-nav", "--iterations", "3", "--meta-batch-size", "3",
    "--episodes-per-task", "2", "--horizon", "10", "--hidden-sizes", "8", "8",
    "--workers", "0", "--test-pool-size", "3", "--n-probe-tasks", "2",
    "--eval-every", "2", "--eval-adapt-steps", "2", "--train-pool-size", "10",
]  # fmt: skip


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run directory, ordered by step (a duplicated step shows twice).

    Sorted because the event files of a run and of its resumption are read in
    file-name order, and two writers made in the same second of one process are
    named by a counter that sorts as text ("...10" before "...9").
    """
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: sorted(((e.step, e.value) for e in acc.Scalars(tag)), key=lambda sv: sv[0])
        for tag in acc.Tags()["scalars"]
    }


@pytest.mark.parametrize("algo", ["maml-trpo", "maml-ppo"])
def test_smoke_run_writes_config_events_and_checkpoints(tmp_path, algo):
    result = run_cli(
        "metarl.train", *args_for(algo, TINY), "--algo", algo, "--logdir", str(tmp_path),
        "--run-name", "r",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "iter 3/3" in result.stdout and "steps/s" in result.stdout
    run_dir = tmp_path / "r"
    assert (run_dir / "config.yaml").is_file()
    tags = scalars(run_dir)
    for tag in [
        "adapt/return_step_0", "adapt/return_step_1", "test/return_step_0", "test/return_step_2",
        "probe/task_0/return_step_0", "probe/task_1/return_step_2", "loss/surrogate_before",
        "baseline/explained_variance", "time/sampling", "time/adaptation", "time/update",
        "perf/env_steps", "perf/env_steps_per_s",
    ]:  # fmt: skip
        assert tag in tags, f"missing {tag}; have {sorted(tags)}"
    assert [step for step, _ in tags["adapt/return_step_0"]] == [0, 1, 2]
    if algo == "maml-trpo":
        assert "trpo/kl" in tags and "trpo/linesearch_accepted" in tags
    else:
        assert "ppo/clip_fraction" in tags
    assert [p.name for p in periodic_checkpoints(run_dir)] == ["iter_000002.pt"]
    assert (run_dir / "checkpoints" / "best.pt").is_file()

    result = run_cli("metarl.evaluate", str(run_dir), "--adapt-steps", "2", "--tasks", "test",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(next((run_dir / "eval").glob("*.json")).read_text())
    assert [row["step"] for row in report["summary"]] == [0, 1, 2]
    assert len(report["per_task"]) == 3
    assert [set(task) for task in report["task_params"]] == [{"goal"}] * 3
    assert report["by_distinct_task"] == []  # three distinct goals: nothing to group
    assert report["balanced_mean"] == []
    assert next((run_dir / "eval").glob("*.png")).stat().st_size > 1000


def test_evaluate_groups_a_pool_that_repeats_tasks():
    """halfcheetah-dir's pool holds two directions many times: one mean curve for each."""
    forward, backward = DirectionTask(1), DirectionTask(-1)
    per_task = torch.tensor([[1.0, 2.0, 3.0, 5.0], [10.0, 20.0, 30.0, 50.0]])  # [K + 1, T]
    groups = by_distinct_task([forward, backward, forward, forward], per_task)
    assert [(g["task"], g["n_tasks"]) for g in groups] == [
        ({"direction": 1}, 3),
        ({"direction": -1}, 1),
    ]
    assert groups[0]["mean"] == pytest.approx([3.0, 30.0])  # tasks 0, 2, 3
    assert groups[1]["mean"] == pytest.approx([2.0, 20.0])
    # Balanced: forward and backward count once each, not 3 : 1 as in the overall mean.
    assert balanced_curve(groups) == pytest.approx([2.5, 25.0])
    assert balanced_curve([]) == []
    assert by_distinct_task([forward, backward], per_task[:, :2]) == []
    # A plug-in family's task may be unhashable (here a dict): grouped all the same.
    groups = by_distinct_task([{"g": 1}, {"g": 2}, {"g": 1}, {"g": 1}], per_task)
    assert [g["n_tasks"] for g in groups] == [3, 1]
    assert groups[0]["task"] == {"g": 1}  # a dict task is JSON already: kept, not its repr


def test_evaluate_can_override_the_runs_sampler(tmp_path):
    """A run trained with --sampler ray on a cluster is evaluated here with local workers."""
    assert train_cli.main([*TINY, "--eval-every", "0", "--logdir", str(tmp_path),
                           "--run-name", "r"]) == 0  # fmt: skip
    ckpt = periodic_checkpoints(tmp_path / "r")[-1]
    state = load_checkpoint(ckpt)
    state["config"] |= {"sampler": "ray", "ray_address": "10.0.0.1:6379"}
    torch.save(state, ckpt)
    result = run_cli("metarl.evaluate", str(tmp_path / "r"), "--adapt-steps", "1",
                     "--sampler", "local", "--workers", "0", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert next((tmp_path / "r" / "eval").glob("*.json")).is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "no-such-env"], "Known families: ant-dir"),
        (["--algo", "maml-sgd"], "argument --algo: invalid choice"),
        (["--inner-lr", "fast"], "config key 'inner_lr'"),
        (["--meta-batch-size", "0"], "config key 'meta_batch_size': 0 is below the minimum 1"),
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["--resume", "no/such/run"], "run directory 'no/such/run' does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_code_2(tmp_path, args, message):
    result = run_cli("metarl.train", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_yaml_key_and_value_are_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("inner_lrr: 0.1\n")
    result = run_cli("metarl.train", "--config", "bad.yaml", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "unknown config key 'inner_lrr'" in result.stderr
    (tmp_path / "bad.yaml").write_text("discount: 1.5\n")
    result = run_cli("metarl.train", "--config", "bad.yaml", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "'discount': 1.5 is above the maximum 1.0" in result.stderr
    (tmp_path / "bad.yaml").write_text("discount: [unclosed\n")
    result = run_cli("metarl.train", "--config", "bad.yaml", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "is not valid YAML" in result.stderr


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = run_cli("metarl.train", *TINY, "--device", "cuda", "--logdir", str(tmp_path),
                     cwd=tmp_path, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "error: config key 'device': 'cuda' was asked for but CUDA is not available; "
        "use --device cpu or --device auto\n"
    )
    assert list(tmp_path.iterdir()) == []  # no run directory


@pytest.mark.parametrize(
    "script",
    ["metarl.train", "metarl.evaluate", "metarl.baselines", "benchmarks/learning.py",
     "benchmarks/maml_iteration.py", "benchmarks/sampler.py", "benchmarks/trpo_update.py",
     "experiments/velocity_tracking.py"],
)  # fmt: skip
def test_help_of_every_command_prints(script):
    # argparse %-formats help strings: one stray "%" in a config key's help broke --help.
    cmd = ["-m", script] if script.startswith("metarl.") else [script]
    result = subprocess.run(
        [sys.executable, *cmd, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
    if script == "metarl.train":  # each flag on its own help line ("--trpo-fisher" alone is
        # also the start of "--trpo-fisher-subsample")
        assert re.search(r"^  --trpo-fisher TRPO_FISHER$", result.stdout, re.M)
        assert re.search(r"^  --trpo-fisher-subsample TRPO_FISHER_SUBSAMPLE$", result.stdout, re.M)


def test_list_envs_shows_every_family():
    result = run_cli("metarl.train", "--list-envs", cwd=Path.cwd(), timeout=60)
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    for name in ["point-nav", "halfcheetah-vel", "ant-goal", "hopper-params", "point-nav-shaped"]:
        assert name in listed  # a whole first column, not a part of a longer name
    assert "metarl/HalfCheetahVel-v0" in result.stdout


def test_horizon_zero_means_the_familys_default_everywhere_an_env_is_built():
    """train, baselines and the experiment scripts all build envs with make_config_env."""
    default = build_config({"env": "point-nav"})
    assert default.horizon == 0
    assert run_assembly.config_horizon(default) == 100  # point-nav's registered horizon
    assert run_assembly.make_config_env(default).spec.max_episode_steps == 100
    short = build_config({"env": "point-nav", "horizon": 7})
    assert run_assembly.config_horizon(short) == 7
    assert run_assembly.make_config_env(short).spec.max_episode_steps == 7


def test_resume_continues_with_the_same_numbers(tmp_path):
    """Resuming after iteration 2 gives iteration 3 exactly as the uninterrupted run."""
    common = [*TINY, "--iterations", "4", "--checkpoint-every", "1", "--algo", "maml-ppo"]
    assert train_cli.main([*common, "--logdir", str(tmp_path), "--run-name", "full"]) == 0
    assert train_cli.main([*common, "--logdir", str(tmp_path), "--run-name", "cut",
                           "--iterations", "2"]) == 0  # fmt: skip
    # Extend the cut run's budget as a user would, then resume it.
    cut = tmp_path / "cut"
    assert train_cli.main(["--resume", str(cut), "--iterations", "4"]) == 0
    full, resumed = scalars(tmp_path / "full"), scalars(cut)
    for tag in ["adapt/return_step_0", "adapt/return_step_1", "loss/surrogate_before"]:
        assert [s for s, _ in resumed[tag]] == [0, 1, 2, 3], tag
        assert resumed[tag] == full[tag], tag


@pytest.mark.parametrize("algo", ["maml-ppo", "rl2"])
def test_lr_anneal_runs_on_schedule_across_a_resume_and_a_new_rate_takes_effect(tmp_path, algo):
    """``--ppo-lr-anneal`` gives iteration i of N the rate lr * (1 - i / N), N as configured:
    a run of 2 iterations resumed to 8 runs 0.01, 0.005, then 0.0075, 0.00625, ... A resume
    with another ``--ppo-lr`` uses it (Adam's saved state would otherwise bring back the old)."""
    extra = ["--rl2-minibatches", "1", "--rl2-hidden-size", "8"] if algo == "rl2" else []
    common = [*args_for(algo, TINY), *extra, "--algo", algo, "--ppo-lr", "0.01",
              "--checkpoint-every", "1", "--logdir", str(tmp_path)]  # fmt: skip
    assert train_cli.main([*common, "--ppo-lr-anneal", "--iterations", "2", "--run-name", "a"]) == 0
    assert train_cli.main(["--resume", str(tmp_path / "a"), "--iterations", "8"]) == 0
    rates = [v for _, v in scalars(tmp_path / "a")["ppo/lr"]]
    assert rates == pytest.approx([0.01, 0.005] + [0.01 * (1 - i / 8) for i in range(2, 8)])

    def adam_lr(run: str, iteration: int) -> float:  # the rate Adam stepped with
        learner = load_checkpoint(tmp_path / run / "checkpoints" / f"iter_{iteration:06d}.pt")
        learner = learner["learner"]
        adam = learner["optimizer"] if algo == "rl2" else learner["outer"]["optimizer"]
        return adam["param_groups"][0]["lr"]

    assert adam_lr("a", 7) == pytest.approx(0.00125)

    assert train_cli.main([*common, "--iterations", "2", "--run-name", "b"]) == 0
    assert train_cli.main(["--resume", str(tmp_path / "b"), "--iterations", "3",
                           "--ppo-lr", "0.02"]) == 0  # fmt: skip
    assert [v for _, v in scalars(tmp_path / "b")["ppo/lr"]] == pytest.approx([0.01, 0.01, 0.02])
    assert adam_lr("b", 2) == pytest.approx(0.02)


# Training with --device cuda (marked gpu): tests/test_devices.py, for every learner.


# Whether MAML-TRPO learns: tests/test_learning.py, against the same run with --trpo-max-kl 0.


@pytest.mark.parametrize("algo", ["maml-ppo", "rl2"])
def test_target_kl_stops_epochs_before_the_step_that_would_pass_it(tmp_path, algo):
    """The first step starts at KL 0; with a tiny target the next one is refused, so 5 epochs
    behave exactly as 1 epoch (RL2 with one minibatch per epoch)."""
    from metarl.checkpoint import load_latest

    def final_policy(name: str, *extra: str) -> dict:
        argv = [
            *args_for(algo, TINY),
            "--algo",
            algo,
            "--logdir",
            str(tmp_path),
            "--run-name",
            name,
            *extra,
        ]
        if algo == "rl2":
            argv += ["--rl2-minibatches", "1", "--rl2-hidden-size", "8"]
        assert train_cli.main(argv) == 0
        return load_latest(tmp_path / name)["learner"]["policy"]

    stopped = final_policy("stopped", "--ppo-epochs", "5", "--ppo-target-kl", "1e-12")
    one_epoch = final_policy("one", "--ppo-epochs", "1")
    free = final_policy("free", "--ppo-epochs", "5")
    # RL2 shuffles the trials of its one minibatch per epoch: sums in another order
    same = [torch.allclose(stopped[k], one_epoch[k], rtol=0, atol=1e-6) for k in stopped]
    assert all(same)
    assert not all(torch.allclose(stopped[k], free[k], rtol=0, atol=1e-4) for k in stopped)
    tags = scalars(tmp_path / "stopped")
    assert [v for _, v in tags["ppo/early_stop"]] == [1.0, 1.0, 1.0]
    # The KL that stopped each update is reported: the one step taken was measured at KL 0.
    assert len(tags["ppo/approx_kl"]) == 3 and all(v > 1e-12 for _, v in tags["ppo/approx_kl"])
