"""metarl plot on hand-written run directories: the plotted numbers are metarl.stats' on the
runs' own values, eval files are chosen by content, and bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metarl import cli, run_files
from metarl import plot as plot_cli
from metarl import plot_data as plot_data_module
from metarl.stats import summarize_curves

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"

# Two groups of two seeds. Learning curves: meta-tests at iterations 1 and 3 (env steps
# 200 and 400, the totals so far); adaptation curves: each run's latest test-pool eval.
STEP_TESTS = {0: [10.0, 20.0], 1: [14.0, 30.0]}  # test/return_step_1, by seed
STEP_EVALS = {0: [-5.0, 12.0], 1: [-3.0, 16.0]}  # summary means, steps 0 and 1
EPISODE_TESTS = {0: [1.0, 2.5], 1: [2.0, 4.5]}  # test/return_episode_2
EPISODE_EVALS = {0: [1.0, 2.0, 3.0], 1: [2.0, 4.0, 5.0]}  # episodes 1, 2, 3
SECONDS = {0: 1800.0, 1: 2700.0}  # time/iteration: seed 0 half an hour, seed 1 45 minutes


def write_eval(run: Path, name: str, *, iteration: int, unit: str, means, pool="test") -> None:
    report = {
        "run_dir": str(run),
        "iteration": iteration,
        "env": "point-nav",
        "tasks": pool,
        "unit": unit,
        "summary": [{"step": k, "mean": m, "std": 1.0} for k, m in enumerate(means)],
        "per_task": [[m - 1 for m in means], [m + 1 for m in means]],
    }
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / name).write_text(json.dumps(report))


def make_run(root: Path, algo: str, seed: int, *, progress=True, evals=True) -> Path:
    run = root / f"{algo}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"env: point-nav\nalgo: {algo}\nseed: {seed}\neval_every: 2\nhidden_sizes:\n- 8\n"
    )
    episodic = algo == "rl2"
    if progress:
        if episodic:
            tests, columns = EPISODE_TESTS[seed], ["test/return_episode_1", "test/return_episode_2"]
        else:
            tests, columns = STEP_TESTS[seed], ["test/return_step_0", "test/return_step_1"]
        lines = [",".join(["iteration", "time/iteration", "perf/env_steps", *columns])]
        for i in range(4):
            cells = ["", ""]
            if i % 2 == 1:
                value = tests[i // 2]
                cells = [repr(value - 7.0), repr(value)]  # the first unit is not plotted
            lines.append(",".join([str(i), repr(SECONDS[seed]), str(100 * (i + 1)), *cells]))
        (run / "progress.csv").write_text("\n".join(lines) + "\n")
    if evals:
        unit = "episode" if episodic else "adaptation step"
        means = (EPISODE_EVALS if episodic else STEP_EVALS)[seed]
        write_eval(run, "a.json", iteration=4, unit=unit, means=means)
        # chosen by content, not name: an older checkpoint's eval, named to sort last
        write_eval(run, "zzz_latest.json", iteration=2, unit=unit, means=[100.0] * len(means))
        write_eval(run, "b.json", iteration=4, unit=unit, means=[50.0] * len(means), pool="train")
        (run / "eval" / "metaworld_protocol_iter000099.json").write_text(
            json.dumps({"iteration": 99, "success_rate": 0.5, "mean_return": 1.0})
        )
    return run


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    root = tmp_path / "runs"
    return [make_run(root, algo, seed) for algo in ("maml-trpo", "rl2") for seed in (0, 1)]


def data_of(paths, **kwargs) -> plot_data_module.PlotData:
    return plot_data_module.plot_data([run_files.read_run(p) for p in paths], **kwargs)


def run_plot(argv: list[str]) -> int:
    try:
        return plot_cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


def assert_curve(curve: plot_data_module.Curve, x, per_seed) -> None:
    np.testing.assert_allclose(curve.x, x)
    np.testing.assert_allclose(curve.per_seed, per_seed)
    mean, low, high = summarize_curves(np.asarray(per_seed, dtype=float))
    np.testing.assert_allclose(curve.mean, mean)
    np.testing.assert_allclose(curve.low, low)
    np.testing.assert_allclose(curve.high, high)


def test_plot_writes_the_figure_of_two_groups(runs, tmp_path, capsys):
    out = tmp_path / "compare.png"
    assert run_plot([*map(str, runs), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = capsys.readouterr().out
    assert "maml-trpo on point-nav (2 seeds); rl2 on point-nav (2 seeds)" in stdout

    data = data_of(runs)
    assert [(g.label, g.n_seeds) for g in data.groups] == [
        ("maml-trpo on point-nav", 2),
        ("rl2 on point-nav", 2),
    ]
    assert data.panels == ("adaptation", "steps", "time")
    fig = plot_cli.render(data)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "maml-trpo on point-nav (2 seeds)",
        "rl2 on point-nav (2 seeds)",
    ]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "Adaptation (checkpoint of iteration 4)",
        "Learning curve: env steps",
        "Learning curve: wall-clock time",
    ]
    assert all(len(ax.collections) == 2 for ax in fig.axes)  # a band per group and panel
    assert fig.axes[1].get_xscale() == "log"


def test_band_numbers_are_metarl_stats_on_the_runs_values(runs):
    maml, rl2 = data_of(runs).groups
    # adaptation: the latest test-pool eval of each seed (not zzz_latest.json, not train)
    assert_curve(maml.panels["adaptation"], [0, 1], [STEP_EVALS[0], STEP_EVALS[1]])
    assert_curve(rl2.panels["adaptation"], [1, 2, 3], [EPISODE_EVALS[0], EPISODE_EVALS[1]])
    # learning curve against env steps: the same x for both seeds, no interpolation
    assert_curve(maml.panels["steps"], [200, 400], [STEP_TESTS[0], STEP_TESTS[1]])
    assert_curve(rl2.panels["steps"], [200, 400], [EPISODE_TESTS[0], EPISODE_TESTS[1]])
    # wall clock: seed 0 meta-tests at 1.0 and 2.0 h, seed 1 at 1.5 and 3.0 h; both cover
    # [1.5, 2.0], where each is interpolated at the other's x
    seed0 = [15.0, 20.0]  # 10 -> 20 over 1.0..2.0 h
    seed1 = [14.0, 14.0 + 16.0 / 3.0]  # 14 -> 30 over 1.5..3.0 h
    assert_curve(maml.panels["time"], [1.5, 2.0], [seed0, seed1])


def test_labels_say_the_unit(runs):
    data = data_of(runs[:2])
    assert data.xlabels["adaptation"] == "adaptation step"
    assert data.ylabels["steps"] == "meta-test return after 1 step"
    assert data.xlabels["steps"] == "env steps (log scale)"
    assert data.xlabels["time"] == "wall-clock hours of training (meta-tests not counted)"
    episodic = data_of(runs[2:])
    assert episodic.xlabels["adaptation"] == "episode"
    assert episodic.ylabels["time"] == "meta-test return in episode 2"
    mixed = data_of(runs)
    assert mixed.xlabels["adaptation"] == "adaptation step / episode"
    assert mixed.ylabels["steps"] == "meta-test return\n(after the last adaptation step or episode)"


def test_eval_pool_and_svg(runs, tmp_path):
    data = data_of(runs[:2], eval_pool="train", panels=("adaptation",))
    (maml,) = data.groups
    assert_curve(maml.panels["adaptation"], [0, 1], [[50.0, 50.0], [50.0, 50.0]])
    out = tmp_path / "compare.svg"
    argv = [*map(str, runs), "--out", str(out), "--eval-pool", "train", "--panels", "adaptation"]
    assert run_plot(argv) == 0
    assert out.read_text().lstrip().startswith("<?xml")


def test_group_by_keys_and_one_seed_groups_have_no_band(runs, tmp_path, capsys):
    data = data_of(runs, group_by=("algo", "seed"))
    assert [g.legend_label for g in data.groups] == [
        "maml-trpo, seed=0 (1 seed)",
        "maml-trpo, seed=1 (1 seed)",
        "rl2, seed=0 (1 seed)",
        "rl2, seed=1 (1 seed)",
    ]
    curve = data.groups[0].panels["steps"]
    assert curve.mean.tolist() == curve.low.tolist() == curve.high.tolist() == STEP_TESTS[0]
    fig = plot_cli.render(data)
    assert [len(ax.collections) for ax in fig.axes] == [0, 0, 0]  # three panels, no band
    assert all(ax.lines for ax in fig.axes)  # but their curves
    # repeated and comma-separated --group-by are the same
    out = tmp_path / "by_seed.png"
    printed = []
    for group_by in (["env,algo,seed"], ["env", "--group-by", "algo,seed"]):
        assert run_plot([*map(str, runs), "--out", str(out), "--group-by", *group_by]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and printed[0].count(" seed=") == 4, printed
    assert [g.label for g in data_of(runs, group_by=("seed",)).groups] == ["seed=0", "seed=1"]


def test_globs_and_missing_files_are_notes(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root, "maml-trpo", 0)
    make_run(root, "maml-trpo", 1, progress=False)  # an older run: no progress.csv
    make_run(root, "rl2", 0, evals=False)
    out = tmp_path / "out.png"
    assert run_plot([str(root / "*"), "--out", str(out)]) == 0
    assert out.is_file()
    err = capsys.readouterr().err
    assert f"note: {root / 'maml-trpo-s1'}: no progress.csv: left out of the learning curves" in err
    assert f"note: {root / 'rl2-s0'}: no eval/*.json: left out of the adaptation panel" in err
    data = data_of(sorted(root.iterdir()))
    maml, rl2 = data.groups
    assert maml.n_seeds == 2 and maml.panels["adaptation"].n_seeds == 2
    assert maml.panels["steps"].n_seeds == 1
    assert "adaptation" not in rl2.panels and rl2.panels["time"].n_seeds == 1


def test_repeated_seeds_name_the_keys_that_differ(tmp_path):
    a = make_run(tmp_path / "a", "maml-trpo", 0)
    b = make_run(tmp_path / "b", "maml-trpo", 0)
    config = (b / "config.yaml").read_text().replace("eval_every: 2", "eval_every: 3")
    (b / "config.yaml").write_text(config)
    (note,) = [n for n in data_of([a, b]).notes if "more than once" in n]
    assert "differ in eval_every: e.g. --group-by algo,env,eval_every" in note


BAD_INPUT = [
    (["{root}/nothing-*"], "no run matched"),
    (["{tmp}/not-a-run"], "is not a run directory (no config.yaml)"),
    (["{tmp}/missing-run"], "no such run directory"),
    (["{root}/*", "--group-by", "colour"], "unknown --group-by key 'colour': the runs' config"),
    (["{root}/*", "--metric", "reward"], "unknown metric 'reward': the runs have return"),
    (["{root}/*", "--eval-pool", "valid"], "unknown --eval-pool 'valid': the runs' eval files"),
    (["{root}/*", "--panels", "adaptation,loss"], "--panels: unknown panel 'loss'"),
    (["{root}/*", "--out", "{out_dir}/plot.jpg"], "must end in .png or .svg"),
    (["{root}/*", "--out", "{out_dir}/missing/plot.png"], "does not exist"),
    (["{root}/*", "--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_no_file(runs, tmp_path, capsys, args, message):
    (tmp_path / "not-a-run").mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fields = {"root": tmp_path / "runs", "tmp": tmp_path, "out_dir": out_dir}
    argv = [a.format(**fields) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(out_dir / "plot.png")]
    capsys.readouterr()
    assert run_plot(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert list(out_dir.iterdir()) == []


def test_unknown_group_key_names_the_keys(runs, tmp_path, capsys):
    assert run_plot([str(runs[0]), "--out", str(tmp_path / "x.png"), "--group-by", "lr"]) == 2
    err = capsys.readouterr().err  # the run's keys under today's names, defaults filled in
    assert "the runs' config.yaml have activation, algo, " in err and ", seed, " in err
    assert "inner_first_order" in err and "trpo_max_kl" in err and ", first_order," not in err


def test_metarl_plot_subcommand(runs, tmp_path):
    out = tmp_path / "cli.png"
    assert cli.main(["plot", *map(str, runs), "--out", str(out)]) == 0
    assert out.is_file()


@pytest.mark.skipif(
    not (RESULTS / "pointnav-trpo-s1").is_dir(), reason="experiments/results is not there"
)
def test_committed_runs(tmp_path):
    paths = [RESULTS / "pointnav-trpo-s1", RESULTS / "pointnav-trpo-s2"]
    out = tmp_path / "pointnav.png"
    assert run_plot([*map(str, paths), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    (group,) = data_of(paths).groups
    assert group.legend_label == "maml-trpo on point-nav (2 seeds)"
    reports = [json.loads(next((p / "eval").glob("*.json")).read_text()) for p in paths]
    evals = [[row["mean"] for row in report["summary"]] for report in reports]
    assert_curve(group.panels["adaptation"], [0, 1, 2, 3], evals)
    assert group.panels["steps"].n_seeds == group.panels["time"].n_seeds == 2
    np.testing.assert_allclose(group.panels["steps"].x, np.arange(1, 11) * 800_000)
