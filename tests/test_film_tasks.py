"""Which tasks ``evaluate --video``/``--sheet`` films: tasks that span the family by default
(:func:`~metarl.video.tasks.spread_tasks`), or exactly ``--video-task-ids``; bad ids are one
line and exit code 2. Only the sheet is rendered here (no video extra needed)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from metarl.envs.point_nav import GoalTask
from metarl.envs.sketch import GlyphTask

from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.configure import build_config
from metarl.run import build_task_pools, make_config_env
from metarl.video import layout
from metarl.video.tasks import spread_tasks
from metarl.video.text import draw_text

TINY = [
    "--env", "point-nav", "--hidden-sizes", "8", "--iterations", "1", "--meta-batch-size", "2",
    "--episodes-per-task", "2", "--horizon", "8", "--workers", "0", "--test-pool-size", "3",
    "--train-pool-size", "6", "--n-probe-tasks", "2", "--eval-every", "0",
]  # fmt: skip


def film_tasks(config, pool, *flags: str) -> dict:
    """What ``evaluate RUN --sheet FLAGS`` films from ``pool``: pool index -> task."""
    args = evaluate_cli.build_parser().parse_args(["RUN", "--sheet", *flags])
    return evaluate_cli.film_tasks(args, config, list(pool))


def family(env: str, seeds: range):
    """``(config, test pool)`` per seed, the pools built as a run of that config builds them."""
    configs = [build_config({"env": env, "workers": 0, "seed": seed}) for seed in seeds]
    made = make_config_env(configs[0])
    try:
        return [(config, build_task_pools(config, made).test) for config in configs]
    finally:
        made.close()


# -- the default: tasks that span the family ----------------------------------------------
def test_halfcheetah_dir_films_both_directions():
    ((config, pool),) = family("halfcheetah-dir", range(1))
    two = film_tasks(config, pool, "--video-tasks", "2")  # README's film
    assert sorted(task.direction for task in two.values()) == [-1, 1]
    default = film_tasks(config, pool)  # the run's n_probe_tasks (4): each direction twice
    assert len(default) == config.n_probe_tasks
    assert sorted(task.direction for task in default.values()) == [-1, -1, 1, 1]
    for i, task in default.items():
        assert pool[i] == task


def test_halfcheetah_vel_films_span_the_velocities():
    for config, pool in family("halfcheetah-vel", range(6)):
        velocities = np.array([task.velocity for task in pool])
        chosen = np.array([task.velocity for task in film_tasks(config, pool).values()])
        assert len(set(chosen)) == config.n_probe_tasks == 4
        span = velocities.max() - velocities.min()
        # the tasks nearest the quantiles 1/8, 3/8, 5/8, 7/8: within a quarter of each end
        assert chosen.min() - velocities.min() <= span / 4, (chosen, config.seed)
        assert velocities.max() - chosen.max() <= span / 4, (chosen, config.seed)
        ranks = np.searchsorted(np.sort(velocities), chosen)
        assert sorted(ranks // 5) == [0, 1, 2, 3]  # one in each quarter of the sorted pool


def test_spread_rule_on_each_kind_of_task():
    @dataclass(frozen=True)
    class Angle:
        angle: float

    rng = np.random.default_rng(0)
    angles = [Angle(a) for a in rng.permutation(np.arange(20) * 2 * math.pi / 20)]
    a, b = (angles[i].angle for i in spread_tasks(angles, 2))
    assert math.isclose(abs(a - b), math.pi)  # ant-dir: opposite directions, not 0 and 2 pi
    goals = [GoalTask((x, y)) for x in (-0.5, 0.0, 0.5) for y in (-0.5, 0.0, 0.5)]
    picked = [goals[i].goal for i in spread_tasks(goals, 2)]
    assert picked == [(-0.5, -0.5), (0.5, 0.5)]  # opposite corners
    chars = [GlyphTask(c) for c in "QAQBCA"]
    assert spread_tasks(chars, 3) == [0, 1, 3]  # distinct characters, first appearances
    assert spread_tasks(chars, 5) == [0, 1, 3, 4, 2]  # then repeats
    assert spread_tasks(chars, 9) == [0, 1, 3, 4, 2, 5]
    assert spread_tasks([], 2) == [] and spread_tasks(chars, 0) == []


# -- --video-task-ids ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    assert train_cli.main([*TINY, "--logdir", str(logdir), "--run-name", "nav"]) == 0
    return logdir / "nav"


def test_video_task_ids_film_exactly_those_tasks(run_dir, tmp_path):
    ((config, pool),) = family("point-nav", range(1))
    chosen = film_tasks(config, pool, "--video-task-ids", "7", "2", "13")
    assert list(chosen) == [7, 2, 13] and list(chosen.values()) == [pool[7], pool[2], pool[13]]

    run_dir = Path(shutil.copytree(run_dir, tmp_path / "nav"))  # the module's run stays clean
    flags = ["--workers", "0", "--sheet", "--video-steps", "1", "--video-task-ids", "2", "0",
             "--tasks", "test"]  # fmt: skip
    assert evaluate_cli.main([str(run_dir), *flags]) == 0
    import matplotlib.image

    sheet = matplotlib.image.imread(run_dir / "eval" / "test_iter000001_steps1_ids2-0_sheet.png")
    sheet = np.rint(sheet[..., :3] * 255).astype(np.uint8)
    test_pool = restored_test_pool(run_dir)
    for row, i in enumerate([2, 0]):  # each row's title names its pool index and task
        top, _ = layout._origin(row, 0, (128, 128))
        title = sheet[top - layout.TITLE_H : top, : sheet.shape[1] - layout.PAD]
        expected = np.empty_like(title)
        expected[:, : layout.PAD] = layout.BACKGROUND
        expected[:, layout.PAD :] = layout.TITLE_BG
        label = f"test task {i}: {layout.task_label(test_pool[i])}"
        draw_text(expected, label, 1, layout.PAD + 2, layout.TITLE_FG)
        np.testing.assert_array_equal(title, expected)


def restored_test_pool(run_dir: Path) -> tuple:
    """The test pool of the run in ``run_dir``, built as ``evaluate`` builds it."""
    from metarl.checkpoint import latest_checkpoint, load_checkpoint
    from metarl.run import restore_run

    state = load_checkpoint(latest_checkpoint(run_dir))
    run = restore_run(state, build_config({**state["config"], "workers": 0}), run_dir)
    run.sampler.close()
    return run.pools.test


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--video-task-ids", "3"], "--video-task-ids: 3 is not an index of the 3 tasks (0..2) "
                                    "of the test pool"),
        (["--tasks", "train", "--video-task-ids", "0", "6"],
         "--video-task-ids: 6 is not an index of the 6 tasks (0..5) of the train pool"),
        (["--video-task-ids", "1", "0", "1"], "--video-task-ids: 1 is given twice"),
        (["--video-task-ids", "-1"], "argument --video-task-ids: -1 is below the minimum 0"),
        (["--video-task-ids", "x"], "argument --video-task-ids: invalid int value: 'x'"),
        (["--video-task-ids"], "argument --video-task-ids: expected at least one argument"),
        (["--video-tasks", "2", "--video-task-ids", "0"],
         "argument --video-task-ids: not allowed with argument --video-tasks"),
    ],
)  # fmt: skip
def test_bad_video_task_ids_are_one_line_and_create_nothing(run_dir, capsys, flags, message):
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    try:
        code = evaluate_cli.main([str(run_dir), "--workers", "0", "--sheet", "--tasks", "test",
                                 *flags])  # fmt: skip
    except SystemExit as exc:  # argparse's errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert not (run_dir / "eval").exists()
