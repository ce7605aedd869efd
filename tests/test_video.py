"""``evaluate --video``: films of real (tiny) runs, read back; the mean action; the protocol
extension; one-line errors without the extra, without OpenGL and without a learner's support."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.algos.base import ActorRun
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.configure import build_config
from metarl.policies.gaussian_mlp import numpy_mean
from metarl.run import restore_run
from metarl.video import VideoError, layout, output, playback, render_env
from metarl.video.text import GLYPH_W, LINE_H, draw_text

imageio = pytest.importorskip("imageio.v2", reason='the video extra: pip install "metarl[video]"')
pytest.importorskip("imageio_ffmpeg", reason='the video extra: pip install "metarl[video]"')

HORIZON = 12
TINY = [
    "--iterations", "1", "--meta-batch-size", "2", "--episodes-per-task", "2",
    "--horizon", str(HORIZON), "--workers", "0", "--test-pool-size", "3",
    "--n-probe-tasks", "2", "--eval-every", "1", "--eval-adapt-steps", "1",
    "--train-pool-size", "6",
]  # fmt: skip
MAML = ["--env", "point-nav", "--hidden-sizes", "8", *TINY]
RL2 = ["--env", "point-nav", "--algo", "rl2", "--rl2-hidden-size", "8",
       "--rl2-trials-per-task", "1", *TINY]  # fmt: skip
CELL = (128, 128)  # point-nav's own frame size, the default --video-size


def train(argv: list[str], logdir: Path, name: str) -> Path:
    assert train_cli.main([*argv, "--logdir", str(logdir), "--run-name", name]) == 0
    return logdir / name


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory) -> Path:
    return train(MAML, tmp_path_factory.mktemp("runs"), "maml")


@pytest.fixture
def run_dir(maml_run, tmp_path) -> Path:
    """A fresh copy of the MAML run per test: each writes its own eval/."""
    return Path(shutil.copytree(maml_run, tmp_path / "maml"))


def evaluate(run_dir: Path, *flags: str) -> int:
    return evaluate_cli.main(
        [str(run_dir), "--workers", "0", "--adapt-steps", "2", "--tasks", "test", *flags]
    )


def mp4_frames(path: Path) -> np.ndarray:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([frame for frame in reader])  # list(reader) asks len(): inf for ffmpeg


def gif_frames(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, index=None)[..., :3]


def expected_size(rows: int, cols: int, cell: tuple[int, int] = CELL) -> tuple[int, int]:
    """The module docstring's geometry, spelt out (every term even here)."""
    h, w = cell
    height = rows * (layout.TITLE_H + layout.LABEL_H + h) + (rows + 1) * layout.PAD
    return height, cols * w + (cols + 1) * layout.PAD


def load_run(run_dir: Path):
    state = load_checkpoint(latest_checkpoint(run_dir))
    return restore_run(state, build_config({**state["config"], "workers": 0}), run_dir)


# -- the command line, read back ------------------------------------------------------
def test_video_writes_grid_mp4_gif_per_task_mp4s_sheet_and_tensorboard(run_dir, capsys):
    assert evaluate(run_dir, "--video") == 0  # 2 probe tasks x (before, after 1, after 2)
    out = capsys.readouterr().out
    eval_dir = run_dir / "eval"
    stem = "test_iter000001_steps2"
    frames = HORIZON + 1  # the frame after reset, then one per step
    grid = mp4_frames(eval_dir / f"{stem}_video_grid.mp4")
    assert grid.shape == (frames, *expected_size(2, 3), 3)
    gif = gif_frames(eval_dir / f"{stem}_video_grid.gif")
    assert gif.shape == (frames, *expected_size(2, 3), 3)  # fewer than 100: every frame
    for i in (0, 1):
        row = mp4_frames(eval_dir / f"{stem}_video_task{i}.mp4")
        assert row.shape == (frames, *expected_size(1, 3), 3)
    assert not (eval_dir / f"{stem}_video_task2.mp4").exists()  # only the probe tasks
    import imageio.v3 as iio

    sheet = iio.imread(eval_dir / f"{stem}_sheet.png")[..., :3]
    assert sheet.shape == (*expected_size(2, 3), 3)
    # The lossless last GIF frame is the sheet; the MP4's (lossy) is close to it.
    np.testing.assert_array_equal(gif[-1], sheet)
    assert np.abs(grid[-1].astype(int) - sheet.astype(int)).mean() < 4.0
    top, left = layout._origin(0, 2, CELL)
    strip = top + layout.LABEL_H
    cell = (slice(strip, strip + CELL[0]), slice(left, left + CELL[1]))
    assert not np.array_equal(gif[0][cell], gif[-1][cell])  # the point moved
    assert f"wrote {eval_dir / f'{stem}_video_grid.mp4'}" in out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    (animated,) = events.Images("video/test_adaptation")
    (still,) = events.Images("video/test_adaptation_final")
    assert animated.step == still.step == 1  # the checkpoint's iteration
    assert animated.encoded_image_string[:6] == b"GIF89a"
    assert animated.encoded_image_string == (eval_dir / f"{stem}_video_grid.gif").read_bytes()
    assert (animated.height, animated.width) == expected_size(2, 3)
    assert still.encoded_image_string[:4] == b"\x89PNG"


def test_each_cell_is_labelled_with_its_step_and_mean_action(run_dir):
    assert evaluate(run_dir, "--sheet", "--video-tasks", "1", "--video-steps", "1") == 0
    import imageio.v3 as iio

    # the first task only (the run films 2): "n1" in the name
    sheet = iio.imread(run_dir / "eval" / "test_iter000001_steps1_n1_sheet.png")[..., :3]

    def line(column: int, k: int) -> np.ndarray:
        top, left = layout._origin(0, column, CELL)
        row = top + 1 + k * LINE_H
        return sheet[row : row + LINE_H, left + 2 : left + 2 + 12 * GLYPH_W]

    def drawn(text: str, colour) -> np.ndarray:
        strip = np.empty((LINE_H, 12 * GLYPH_W, 3), np.uint8)
        strip[:] = layout.LABEL_BG
        draw_text(strip, text, 0, 0, colour)
        return strip

    for column, label in enumerate(["before", "after 1 step"]):
        np.testing.assert_array_equal(line(column, 0), drawn(label, layout.LABEL_FG))
        np.testing.assert_array_equal(line(column, 1), drawn("mean action", layout.NOTE_FG))
    assert not np.array_equal(drawn("mean action", 0), drawn("mean actiom", 0))  # text shows


def test_sheet_alone_needs_no_extra(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` fails
    assert evaluate(run_dir, "--sheet") == 0
    written = sorted(p.name for p in (run_dir / "eval").iterdir())
    assert "test_iter000001_steps2_sheet.png" in written
    assert not [name for name in written if name.endswith((".mp4", ".gif"))]


def test_rl2_plays_one_trial_per_task(tmp_path):
    run_dir = train(RL2, tmp_path, "rl2")
    assert evaluate(run_dir, "--video", "--video-tasks", "3", "--video-steps", "1") == 0
    eval_dir = run_dir / "eval"
    grid = mp4_frames(eval_dir / "test_iter000001_steps1_n3_video_grid.mp4")  # 3 tasks, not 2
    assert grid.shape == (HORIZON + 1, *expected_size(3, 2), 3)
    assert sorted(p.name for p in eval_dir.glob("*_task*.mp4")) == [
        f"test_iter000001_steps1_n3_video_task{i}.mp4" for i in range(3)
    ]
    import imageio.v3 as iio

    sheet = iio.imread(eval_dir / "test_iter000001_steps1_n3_sheet.png")[..., :3]
    top, left = layout._origin(0, 1, CELL)
    label = sheet[top + 1 : top + 1 + LINE_H, left + 2 : left + 2 + 9 * GLYPH_W]
    expected = np.empty_like(label)
    expected[:] = layout.LABEL_BG
    draw_text(expected, "episode 2", 0, 0, layout.LABEL_FG)
    np.testing.assert_array_equal(label, expected)


# -- the policies: the ones meta-test evaluates, acting with their mean -------------------
def test_maml_actors_are_the_policies_meta_test_scores(maml_run):
    run = load_run(maml_run)
    try:
        tasks, key = list(run.pools.test), ("evaluate", 7)
        curve = run.learner.meta_test(tasks, adapt_steps=2, episodes_per_task=2, batch_key=key)
        per_task = curve.returns
        runs = run.learner.adapted_actors(tasks, adapt_steps=2, episodes_per_task=2, batch_key=key)
        assert [[r.episodes for r in task_runs] for task_runs in runs] == [[1, 1, 1]] * 3
        for k in range(3):
            stacked = {
                name: np.concatenate([task_runs[k].actor.params[name] for task_runs in runs])
                for name in runs[0][k].actor.params
            }
            batch = run.sampler.sample(tasks, stacked, episodes_per_task=2, batch_key=(*key, k))
            torch.testing.assert_close(batch.returns.mean(dim=1), per_task[k])
        before = {n: p.detach().double().numpy() for n, p in run.learner.policy.named_parameters()}
        for name, value in before.items():
            np.testing.assert_array_equal(runs[0][0].actor.params[name][0], value)
        assert not np.array_equal(
            runs[0][1].actor.params["layers.0.weight"], runs[0][0].actor.params["layers.0.weight"]
        )
    finally:
        run.sampler.close()


def test_renders_use_the_mean_action_and_repeat_exactly(maml_run):
    run = load_run(maml_run)
    with torch.no_grad():
        run.learner.policy.log_std.fill_(1.0)  # any sampled noise would show in the path
    try:
        tasks = list(run.pools.test[:2])
        env = render_env.open_render_env("point-nav", horizon=HORIZON, env_kwargs={}, cell=CELL,
                                    probe_task=tasks[0])  # fmt: skip
        films = []
        for seed in (0, 1):
            runs = run.learner.adapted_actors(tasks, adapt_steps=1, episodes_per_task=2,
                                              batch_key=("video-test",))  # fmt: skip
            films.append(playback.shoot(env, tasks, runs, unit="step", horizon=HORIZON, seed=seed,
                                     cell=CELL, titles=["a", "b"]))  # fmt: skip
        env.close()
    finally:
        run.sampler.close()
    first, second = [np.stack(list(layout.frames(f, [0, 1]))) for f in films]
    np.testing.assert_array_equal(first, second)
    # The returns are those of stepping the mean itself: pos += clip(mean(pos), -0.1, 0.1).
    actor = runs[1][1].actor
    goal = np.array(tasks[1].goal)
    pos, total, expected = np.zeros(2), 0.0, [0.0]
    for _ in range(HORIZON):
        obs = pos.astype(np.float32).astype(np.float64)[None, None]
        mean = numpy_mean(actor.spec, actor.params, obs)[0, 0]
        pos = pos + np.clip(mean.astype(np.float32), -0.1, 0.1)
        total += float(np.float32(-np.linalg.norm(pos - goal)))
        expected.append(total)
    np.testing.assert_allclose(films[0].cells[1][1].returns, expected, rtol=1e-5)


class RecordingActor:
    """An actor that records what the renderer tells it; acts with a constant mean."""

    def __init__(self) -> None:
        self.starts, self.dones, self.log_std = 0, [], np.full((1, 2), 5.0)

    def start(self, t0, t1, per_task):
        assert (t0, t1, per_task) == (0, 1, 1)
        self.starts += 1

    def act(self, obs):
        return np.full((1, 2), 0.05), self.log_std

    def observe(self, actions, rewards, dones):
        np.testing.assert_array_equal(actions, np.full((1, 2), np.float32(0.05)))
        self.dones.append(bool(dones[0]))


def test_a_trial_carries_the_actor_across_its_episodes():
    from metarl.envs.point_nav import GoalTask

    env = render_env.open_render_env("point-nav", horizon=5, env_kwargs={}, cell=(64, 96),
                                probe_task=GoalTask((0.2, 0.2)))  # fmt: skip
    actor = RecordingActor()
    film = playback.shoot(env, [GoalTask((0.2, 0.2))], [[ActorRun(actor, episodes=3)]],
                       unit="episode", horizon=5, seed=0, cell=(64, 96), titles=["t"])  # fmt: skip
    env.close()
    assert actor.starts == 1  # one trial: the state is never reset between its episodes
    assert actor.dones == ([False] * 4 + [True]) * 3
    assert film.labels == ["episode 1", "episode 2", "episode 3"]
    assert film.n_frames == 6
    assert film.cells[0][0].frames.shape == (6, 64, 96, 3)  # 128x128 fitted: 64x64, centred
    np.testing.assert_array_equal(film.cells[0][0].frames[0][:, :16], 255)


# -- pieces ---------------------------------------------------------------------------
def test_point_nav_renders_goal_path_and_point():
    from metarl.envs.point_nav import VIEW_HALF_SIZE, GoalTask
    from metarl.envs.sketch import INK, PEN, to_pixels

    from metarl.registry import make_env

    env = make_env("point-nav", horizon=5, render_mode="rgb_array")
    env.unwrapped.set_task(GoalTask((0.4, -0.3)))
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0.1, 0.05], np.float32))
    image = env.render()
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8

    def at(x: float, y: float) -> tuple[int, ...]:
        row, col = to_pixels(np.array([[x, y]]) / VIEW_HALF_SIZE, 128)[0]
        return tuple(image[row, col])

    assert at(0.3, 0.15) == PEN  # the point after 3 steps
    assert at(0.1, 0.05) == INK  # its path
    assert at(0.4, -0.3) == (44, 160, 44)  # the goal
    assert at(-0.8, 0.8) == (255, 255, 255)
    blind = make_env("point-nav", horizon=5)
    blind.unwrapped.set_task(GoalTask((0.4, -0.3)))
    blind.reset(seed=0)
    blind.step(np.zeros(2, np.float32))
    assert blind.unwrapped._path == [(0.0, 0.0)]  # nothing recorded without a render mode


def test_labels_sizes_and_gif_stride():
    assert [layout.column_label("step", k) for k in range(3)] == [
        "before",
        "after 1 step",
        "after 2 steps",
    ]
    assert layout.column_label("episode", 0) == "episode 1"
    assert layout.parse_size("160x120") == (120, 160) and layout.parse_size("96") == (96, 96)
    with pytest.raises(ValueError):
        layout.parse_size("47x64")
    assert layout.canvas_size(1, 1, (17, 17))[0] % 2 == 0  # padded to even for yuv420p
    assert [output.gif_stride(n) for n in (13, 100, 101, 201)] == [1, 1, 2, 3]
    frame = np.zeros((10, 20, 3), np.uint8)
    fitted = layout.fit_frame(frame, 20, 20)  # 20x20 cell: scaled 1x, centred vertically
    assert fitted.shape == (20, 20, 3)
    assert (fitted[5:15] == 0).all() and (fitted[:5] == 255).all() and (fitted[15:] == 255).all()


def test_a_long_film_keeps_every_strideth_frame_in_the_gif():
    cell = (layout.MIN_CELL, layout.MIN_CELL)  # the smallest: the counter still differs
    episode = playback.Episode(np.zeros((250, *cell, 3), np.uint8), np.zeros(250))  # still
    film = playback.Film(["row"], ["before"], [[episode]], cell, fps=20.0)
    import imageio.v3 as iio

    gif = iio.imread(output.encode_gif(film), index=None)
    assert gif.shape[0] == 84  # frames 0, 3, ..., 249
    assert iio.immeta(output.encode_gif(film))["duration"] == 150  # 3 frames at 20 fps, in ms


# -- one-line errors -------------------------------------------------------------------
def test_without_the_extra_one_line_and_exit_2(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    assert evaluate(run_dir, "--video") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "metarl[video]"' in err, err
    assert not (run_dir / "eval").exists()  # refused before the evaluation ran


def test_a_learner_without_adapted_actors_is_refused(run_dir, monkeypatch, capsys):
    from metarl.algos.gradient_family import GradientLearner

    monkeypatch.delattr(GradientLearner, "adapted_actors")
    assert evaluate(run_dir, "--video") == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --video/--sheet is not available for maml-trpo: its learner does not provide "
        "the ShowsAdaptation extension (see metarl/algos/base.py)\n"
    )


def test_a_family_that_cannot_render_is_one_line():
    sys.path.insert(0, str(Path(__file__).parent))
    from counting_env import CountingEnv, CountingTask  # its constructor takes no render_mode

    from metarl.registry import register_family

    register_family("counting-video", CountingEnv, varies="goal", horizon=5, override=True)
    with pytest.raises(VideoError, match="^counting-video cannot render rgb_array frames: "):
        render_env.open_render_env("counting-video", horizon=5, env_kwargs={}, cell=CELL,
                              probe_task=CountingTask(0))  # fmt: skip


@pytest.mark.mujoco
def test_without_opengl_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import mujoco
    from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

    def no_context(self, *args, **kwargs):  # what MUJOCO_GL=glfw raises without a display
        raise mujoco.FatalError("an OpenGL platform library has not been loaded into this process")

    monkeypatch.setattr(MujocoRenderer, "render", no_context)
    run_dir = train(["--env", "halfcheetah-dir", "--hidden-sizes", "8", *TINY], tmp_path, "hc")
    assert evaluate(run_dir, "--video") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        "error: rendering halfcheetah-dir needs an OpenGL backend: set MUJOCO_GL=egl"
    )
    assert "Traceback" not in err


@pytest.mark.mujoco
def test_halfcheetah_renders_with_egl(tmp_path):
    """In a child process: MUJOCO_GL is read once, when MuJoCo is first imported."""
    run_dir = train(["--env", "halfcheetah-dir", "--hidden-sizes", "8", *TINY, "--horizon", "6"],
                    tmp_path, "hc")  # fmt: skip
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run(
        [sys.executable, "-m", "metarl.evaluate", str(run_dir), "--workers", "0",
         "--adapt-steps", "1", "--video", "--video-tasks", "2", "--video-size", "160x120",
         "--tasks", "test"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode == 2 and "needs an OpenGL backend" in result.stderr:
        pytest.skip(f"no OpenGL backend renders here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    grid = mp4_frames(run_dir / "eval" / "test_iter000001_steps1_px160x120_video_grid.mp4")
    assert grid.shape == (6 + 1, *expected_size(2, 2, cell=(120, 160)), 3)
    _, left = layout._origin(0, 0, (120, 160))
    top = layout.PAD + layout.TITLE_H + layout.LABEL_H
    cheetah = grid[-1, top : top + 120, left : left + 160].astype(int)
    assert cheetah.std() > 10  # a rendered scene (floor, body), not a blank cell
