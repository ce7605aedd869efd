"""``metarl export``: slim checkpoints that evaluate exactly as the full ones, without
optimiser, replay or RNG state, and that ``--resume`` refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from metarl import cli
from metarl import evaluate as evaluate_cli
from metarl import export as export_cli
from metarl import train as train_cli
from metarl.checkpoint import SLIM_KEYS, latest_checkpoint
from tests.cli_args import args_for

SIZES = [
    "--env", "point-nav", "--iterations", "2", "--meta-batch-size", "2",
    "--episodes-per-task", "2", "--horizon", "5", "--hidden-sizes", "8",
    "--workers", "0", "--test-pool-size", "3", "--train-pool-size", "4",
    "--eval-every", "0", "--checkpoint-every", "1", "--device", "cpu",
    "--rl2-hidden-size", "8", "--pearl-hidden-sizes", "16", "16",
    "--pearl-encoder-hidden-sizes", "16", "--pearl-batch-size", "8",
    "--pearl-embedding-batch", "8", "--pearl-meta-batch", "2", "--pearl-gradient-steps", "2",
    "--pearl-prior-episodes", "1", "--pearl-posterior-episodes", "1",
    "--pearl-extra-posterior-episodes", "1",
]  # fmt: skip
ALGOS = ("maml-trpo", "rl2", "pearl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A two-iteration run of each algorithm."""
    logdir = tmp_path_factory.mktemp("runs")
    for algo in ALGOS:
        args = args_for(algo, ["--algo", algo, *SIZES])
        assert train_cli.main([*args, "--logdir", str(logdir), "--run-name", algo, "--quiet"]) == 0
    return {algo: logdir / algo for algo in ALGOS}


def per_task(run_dir: Path, checkpoint: str) -> list:
    flags = [str(run_dir), "--checkpoint", checkpoint, "--adapt-steps", "2", "--workers", "0",
             "--n-tasks", "4", "--force"]  # fmt: skip
    assert evaluate_cli.main(flags) == 0
    path = run_dir / "eval" / "benchmark_iter000002_steps2_metarl_n4.json"
    report = json.loads(path.read_text())
    # the file evaluated is the one named (else "slim == latest" would compare latest twice)
    named = latest_checkpoint(run_dir) if checkpoint == "latest" else Path(checkpoint)
    assert Path(report["checkpoint"]).name == named.name
    return report["per_task"]


@pytest.mark.parametrize("algo", ALGOS)
def test_a_slim_checkpoint_evaluates_exactly_as_the_full_one(runs, algo, capsys):
    run_dir = runs[algo]
    assert cli.main(["export", str(run_dir)]) == 0
    slim = run_dir / "checkpoints" / "slim_iter000001.pt"
    assert f"wrote {slim}" in capsys.readouterr().out
    state = torch.load(slim, weights_only=False)
    assert set(state) == set(SLIM_KEYS) and state["slim"] is True
    assert state["iteration"] == 1
    assert latest_checkpoint(run_dir).name == "iter_000001.pt"  # latest stays a full one
    full = per_task(run_dir, "latest")
    assert per_task(run_dir, "slim_iter000001.pt") == full
    assert per_task(run_dir, str(slim)) == full


@pytest.mark.parametrize("algo", ["rl2", "pearl"])
def test_a_run_holding_only_slim_checkpoints_evaluates_its_newest_by_default(runs, algo, tmp_path):
    """As a committed result holds it (experiments/results/RUN: the slim file alone), the
    README's plain ``evaluate RUN`` reads the newest slim checkpoint."""
    committed = tmp_path / "committed" / "checkpoints"
    committed.mkdir(parents=True)
    for iteration in (0, 1):
        out = committed / f"slim_iter{iteration:06d}.pt"
        source = f"iter_{iteration:06d}.pt"
        assert export_cli.main([str(runs[algo]), "--checkpoint", source, "--out", str(out)]) == 0
    flags = ["--adapt-steps", "2", "--workers", "0", "--n-tasks", "4", "--force"]
    assert evaluate_cli.main([str(committed.parent), *flags]) == 0
    (report,) = (committed.parent / "eval").glob("*.json")
    report = json.loads(report.read_text())
    assert Path(report["checkpoint"]).name == "slim_iter000001.pt"
    assert report["per_task"] == per_task(runs[algo], "latest")


def test_a_pearl_export_leaves_the_buffers_out(runs, tmp_path):
    out = tmp_path / "pearl.pt"
    assert export_cli.main([str(runs["pearl"]), "--out", str(out)]) == 0
    full = runs["pearl"] / "checkpoints" / "iter_000001.pt"
    learner = torch.load(out, weights_only=False)["learner"]
    assert set(learner) == {"networks"} and set(learner["networks"]) == {"policy", "encoder"}
    assert "replay" not in learner and "optimizers" not in learner
    assert out.stat().st_size * 5 < full.stat().st_size


def test_a_gradient_family_export_keeps_the_policy_only(runs, tmp_path):
    out = tmp_path / "maml.pt"
    assert export_cli.main([str(runs["maml-trpo"]), "--out", str(out)]) == 0
    learner = torch.load(out, weights_only=False)["learner"]
    assert set(learner) == {"policy", "outer", "inner"} and learner["outer"] == {}


def test_resume_refuses_a_slim_checkpoint(runs, tmp_path, capsys):
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    assert export_cli.main([str(runs["rl2"]), "--out", str(run_dir / "checkpoints" /
                                                          "iter_000001.pt")]) == 0  # fmt: skip
    capsys.readouterr()
    assert train_cli.main(["--resume", str(run_dir), "--iterations", "3"]) == 2
    assert capsys.readouterr().err == (  # the whole line: tmp_path's name holds "slim" too
        f"error: the checkpoint in {str(run_dir)!r} is a slim one (metarl export: no "
        "optimiser, replay or RNG state): it can be evaluated but not resumed\n"
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["/no/such/run"], "does not exist"),
        (["{empty}"], "holds no checkpoint"),
        (["{run}", "--out", "/proc/no/such/dir/x.pt"], "cannot be written"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, flags, says):
    if os.geteuid() == 0 and "--out" in flags:
        flags = [*flags[:-1], "/proc/version/x.pt"]  # root writes anywhere but in /proc
    (tmp_path / "empty").mkdir()
    values = {"empty": tmp_path / "empty", "run": runs["rl2"]}
    argv = [flag.format(**values) for flag in flags]
    assert export_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
