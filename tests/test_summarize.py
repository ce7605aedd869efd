"""experiments/summarize.py on real (tiny) runs: the table's numbers are the runs' own."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from tests.experiment_scripts import load_experiment_script

TINY = [
    "--env", "point-nav", "--iterations", "2", "--meta-batch-size", "2",
    "--episodes-per-task", "2", "--horizon", "10", "--hidden-sizes", "8",
    "--workers", "0", "--test-pool-size", "2", "--n-probe-tasks", "1",
    "--eval-every", "1", "--eval-adapt-steps", "2", "--train-pool-size", "10",
]  # fmt: skip


def load_summarize():
    return load_experiment_script("summarize")


def test_table_and_plot_from_two_seeds(tmp_path, capsys):
    finals = []
    for seed in (0, 1):
        name = f"pn-s{seed}"
        argv = [*TINY, "--seed", str(seed), "--logdir", str(tmp_path), "--run-name", name]
        assert train_cli.main(argv) == 0
        assert (
            evaluate_cli.main([str(tmp_path / name), "--adapt-steps", "2", "--workers", "0"]) == 0
        )
        (eval_json,) = (tmp_path / name / "eval").glob("*.json")
        finals.append([row["mean"] for row in json.loads(eval_json.read_text())["summary"]])
    capsys.readouterr()

    summarize = load_summarize()
    experiments, baselines = summarize.collect(tmp_path)
    assert baselines == [] and len(experiments) == 1  # two seeds of one experiment
    ((experiment, runs),) = experiments.items()
    assert (experiment.env, experiment.algo) == ("point-nav", "maml-trpo")
    assert sorted(r.seed for r in runs) == [0, 1]
    assert all(r.env_steps == 2 * 2 * 2 * 2 * 10 for r in runs)  # iters x tasks x eps x 2 x T
    assert all(
        sorted(r.curves) == [0, 1, 2] and r.curves[0][0] == [1, 2] for r in runs
    )  # after it 1, 2

    table = summarize.table(experiments, baselines, steps=2)
    row = table.splitlines()[2]
    expected = np.array(finals)
    for k in range(3):
        assert f"{expected[:, k].mean():.1f} ± {expected[:, k].std():.1f}" in row
    assert "maml-trpo on point-nav, steps" in row
    # Seeds stopped at different iterations are a row each, not one mean.
    shorter = dataclasses.replace(runs[1], iterations=runs[1].iterations - 1)
    rows = summarize.table({experiment: [runs[0], shorter]}, [], steps=2).splitlines()[2:]
    assert [r.split(" | ")[1:3] for r in rows] == [["1", "2"], ["1", "1"]], rows
    # point-nav's held-out goals are all distinct: no per-task table.
    assert summarize.per_task_table(experiments, [], steps=2) == ""
    # A pool that repeats tasks (as halfcheetah-dir's does) gets a row per distinct task and
    # one for their balanced mean; here evaluate's groups are written into seed 0's JSON.
    (eval_json,) = (tmp_path / "pn-s0" / "eval").glob("*.json")
    report = json.loads(eval_json.read_text())
    report["by_distinct_task"] = [
        {"task": {"direction": 1}, "n_tasks": 3, "mean": [0.0, 10.0, 20.0]},
        {"task": {"direction": -1}, "n_tasks": 1, "mean": [4.0, 30.0, 40.0]},
    ]
    eval_json.write_text(json.dumps(report))
    repeated, _ = summarize.collect(tmp_path)
    rows = summarize.per_task_table(repeated, [], steps=2).splitlines()[2:]
    cells = [r.strip("| ").split(" | ")[1:] for r in rows]
    assert cells == [
        ["1", "2", "balanced", "2.0", "20.0", "30.0"],  # forward and backward weighted 1 : 1
        ["1", "2", '{"direction": -1}', "4.0", "30.0", "40.0"],
        ["1", "2", '{"direction": 1}', "0.0", "10.0", "20.0"],
    ], rows
    png = summarize.plot(experiment, [experiment], runs, baselines, tmp_path)
    assert png.name == "point-nav-maml-trpo.png" and png.stat().st_size > 10_000

    # A third run with another inner learning rate is its own experiment, named by it.
    argv = [*TINY, "--inner-lr", "0.5", "--logdir", str(tmp_path), "--run-name", "lr-s0"]
    assert train_cli.main(argv) == 0
    assert evaluate_cli.main([str(tmp_path / "lr-s0"), "--adapt-steps", "2", "--workers", "0"]) == 0
    experiments, _ = summarize.collect(tmp_path)
    assert sorted(len(runs) for runs in experiments.values()) == [1, 2]
    rows = summarize.table(experiments, [], steps=2).splitlines()[2:]
    assert any("maml-trpo on point-nav (inner_lr 0.1), steps | 2 |" in r for r in rows), rows
    assert any("maml-trpo on point-nav (inner_lr 0.5), steps | 1 |" in r for r in rows), rows


def test_baseline_per_task_rows_group_its_repeated_tasks():
    """A baseline's results.json lists every held-out task: repeats become one row each."""
    summarize = load_summarize()
    per_task = [
        {"task": {"direction": 1}, "return_step_k": [10.0, 10.0]},
        {"task": {"direction": -1}, "return_step_k": [30.0, 30.0]},
        {"task": {"direction": 1}, "return_step_k": [20.0, 20.0]},
    ]
    curves = summarize.task_curves(summarize.baseline_groups(per_task))
    assert curves == {'{"direction": 1}': [15.0, 15.0], '{"direction": -1}': [30.0, 30.0],
                      "balanced": [22.5, 22.5]}  # fmt: skip
    assert summarize.task_curves(summarize.baseline_groups(per_task[:2])) == {}
    oracle = summarize.BaselineRun("oracle", "halfcheetah-dir", [20.0, 20.0], 100, 1.0, curves)
    rows = summarize.per_task_table({}, [oracle], steps=1).splitlines()[2:]
    assert rows[0] == "| SB3 PPO oracle on halfcheetah-dir | 1 |  | balanced | 22.5 | 22.5 |"
    assert len(rows) == 3
