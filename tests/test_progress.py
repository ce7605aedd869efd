"""What a run shows while it trains: plain lines, the live status line, progress.csv, first line."""

from __future__ import annotations

import csv
import io
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from cli_args import args_for
from rich.console import Console
from test_train_cli import TINY, scalars

from metarl import loop
from metarl import run as run_assembly
from metarl import train as train_cli
from metarl.algos.base import attach_progress
from metarl.checkpoint import periodic_checkpoints
from metarl.configure import build_config
from metarl.logger import CsvLog
from metarl.progress import (
    ENV_VAR,
    NULL_REPORTER,
    LiveDisplay,
    Reporter,
    eta_seconds,
    format_duration,
    planned_total,
    status_text,
    wants_live,
)

ITER_LINE = re.compile(
    r"^iter (\d+)/(\d+) \| steps \d+ \| return -?\d+\.\d( -> -?\d+\.\d)+( \| kl \d+\.\d{4})? "
    r"\| \d+\.\d s \| \d+ steps/s$"
)
"""The one line per iteration that scripts and tests read (metarl.loop.progress_line)."""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

RL2_TINY = ["--rl2-minibatches", "1", "--rl2-hidden-size", "8"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rendered(renderable, width: int = 120) -> str:
    """What ``renderable`` looks like on a plain console ``width`` columns wide."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def without_env(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


# -- the ETA and the status line: hand-worked numbers -------------------------------------


def test_eta_is_the_mean_of_recent_iterations_times_those_left():
    # mean 50 s; 10 left counting the running one, which has run 20 s: 9 * 50 + 30
    assert eta_seconds([50.0, 60.0, 40.0], 10, 20.0) == pytest.approx(480.0)
    # the running one past the mean counts as done: 9 * 50
    assert eta_seconds([50.0, 60.0, 40.0], 10, 70.0) == pytest.approx(450.0)
    assert eta_seconds([12.0], 1, 2.0) == pytest.approx(10.0)  # the last iteration
    assert eta_seconds([], 10, 5.0) is None  # nothing finished yet: unknown
    assert eta_seconds([12.0], 0, 0.0) == 0.0
    assert [format_duration(s) for s in (None, 0, 59.6, 480, 3725, 100_000)] == [
        "--", "0:00", "1:00", "8:00", "1:02:05", "27:46:40",
    ]  # fmt: skip
    # The iteration's steps as known now: collected, plus the budget of the calls left.
    assert planned_total(0, 2, 6000) == 12000
    assert planned_total(5500, 1, 6000) == 11500  # the first call's episodes ended early
    assert planned_total(11000, 0, 6000) == 11000


def test_status_text_says_phase_steps_seconds_and_eta():
    left, right = status_text(
        iteration=2, total_iterations=500, phase="sampling", done=12000, total_steps=24000,
        elapsed=23.44, recent=[50.0, 52.0],
    )  # fmt: skip
    assert left.split() == ["iter", "3/500", "sampling"]
    # 498 left counting this one: 497 * 51 + (51 - 23.44) = 25374.56 s
    assert right == "12000/24000 steps | 23.4 s | ETA 7:02:55 (51.0 s/iter)"
    _, right = status_text(
        iteration=0, total_iterations=5, phase="training", done=0, total_steps=0,
        elapsed=1.0, recent=[],
    )  # fmt: skip
    assert right == "steps -- | 1.0 s | ETA --"


def test_live_display_averages_the_last_window_iterations():
    """Durations 100, 10, 30 with a window of 2: the ETA uses 10 and 30 only."""
    clock = FakeClock()
    console = Console(file=io.StringIO(), width=120, color_system=None, force_terminal=True)
    display = LiveDisplay(5, console=console, window=2, clock=clock, refresh_per_second=1)
    with display:
        for i, seconds in enumerate([100.0, 10.0, 30.0]):
            display.start_iteration(i)
            clock.now += seconds
            display.end_iteration()
        display.start_iteration(3)
        display.phase("adapting")
        display.steps(600, 1000)
        clock.now += 5.0
        frame = rendered(display.frame())
        display.print("iter 4/5 | a line that stays")
    # 2 left counting this one: 1 * 20 + (20 - 5) = 35 s
    assert "iter 4/5 adapting" in frame
    assert "600/1000 steps | 5.0 s | ETA 0:35 (20.0 s/iter)" in frame
    assert list(display.durations) == [10.0, 30.0]
    assert "iter 4/5 | a line that stays\n" in console.file.getvalue()


def test_the_hook_is_optional_and_the_terminal_test_can_be_forced(monkeypatch):
    class Ignores:  # a learner written without the hook
        pass

    class Takes:
        progress = NULL_REPORTER

    ignores, takes, reporter = Ignores(), Takes(), Reporter()
    attach_progress(ignores, reporter)
    attach_progress(takes, reporter)
    assert not hasattr(ignores, "progress") and takes.progress is reporter
    attach_progress(takes)
    assert takes.progress is NULL_REPORTER

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert not wants_live(False, io.StringIO())  # a pipe, a file: plain
    monkeypatch.setenv(ENV_VAR, "live")
    assert wants_live(False, io.StringIO())
    assert not wants_live(True, io.StringIO())  # --quiet wins


# -- plain output: exactly one line per iteration -----------------------------------------


@pytest.mark.parametrize("how", ["stdout a pipe", "--quiet, live forced"])
def test_plain_output_is_the_one_line_per_iteration_format(tmp_path, how):
    args = [*TINY, "--logdir", str(tmp_path), "--run-name", "r"]
    if how == "stdout a pipe":
        env = without_env(ENV_VAR)
    else:  # --quiet wins over a forced live display
        env, args = {**os.environ, ENV_VAR: "live"}, [*args, "--quiet"]
    result = run_cli_env("metarl.train", *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\r" not in out  # no escape codes, no redrawn line
    lines = out.splitlines()
    iters = [ITER_LINE.match(line) for line in lines if line.startswith("iter ")]
    assert all(iters), lines
    assert [(m[1], m[2]) for m in iters] == [("1", "3"), ("2", "3"), ("3", "3")]
    others = [line for line in lines if not line.startswith("iter ")]
    run_dir = tmp_path / "r"
    assert others[:3] == [
        "metarl: maml-trpo on point-nav: sampling in-process, building the policy...",
        f"metarl: maml-trpo on point-nav, run directory {run_dir}",
        "metarl: starting iteration 1/3",
    ]
    assert [line.split(":")[0] for line in others[3:5]] == ["  meta-test on 3 held-out tasks"] * 2
    done = rf"Done: 3 iterations, \d+ env steps\. Run directory: {re.escape(str(run_dir))}"
    assert re.fullmatch(done, others[5]) and len(others) == 6
    # --quiet is a flag of the command, not a config key: the run's config knows nothing of it
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert not [k for k in saved if "quiet" in k]


def run_cli_env(module: str, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# -- the live display, driven through the real loop ---------------------------------------


@pytest.mark.parametrize(
    ("algo", "phases"),
    [
        ("maml-trpo", ["sampling", "adapting", "updating", "meta-testing", "checkpointing"]),
        ("rl2", ["sampling", "updating", "meta-testing", "checkpointing"]),
    ],
)
def test_live_display_shows_phases_steps_eta_and_keeps_one_line_per_iteration(
    tmp_path, monkeypatch, capsys, algo, phases
):
    monkeypatch.setenv(ENV_VAR, "live")  # stdout is captured here, not a terminal
    monkeypatch.setenv("COLUMNS", "140")
    extra = RL2_TINY if algo == "rl2" else []
    args = args_for(algo, [*TINY, *extra, "--algo", algo, "--logdir", str(tmp_path),
                           "--run-name", "r"])  # fmt: skip
    assert train_cli.main(args) == 0
    raw = capsys.readouterr().out
    assert "\x1b[" in raw  # drawn as on a terminal
    segments = [s.strip() for s in re.split(r"[\r\n]", ANSI.sub("", raw)) if s.strip()]
    # Kept: each iteration's line exactly once, in order, as the plain output has it.
    kept = [s for s in segments if ITER_LINE.match(s)]
    assert [ITER_LINE.match(s)[1] for s in kept] == ["1", "2", "3"]
    # The status lines: every phase shows, with the iteration's steps and the ETA.
    status = [s for s in segments if re.match(r"^iter \d/3 [a-z-]+ ", s)]
    seen = [s.split()[2] for s in status]
    for phase in phases:
        assert phase in seen, (phase, sorted(set(seen)))
    if algo == "rl2":
        assert "adapting" not in seen  # RL2 adapts within its trials, not in a phase of its own
    # Once sampled, each iteration shows its env steps of its total (equal by then).
    cumulative = [0] + [int(s.split("| steps ")[1].split()[0]) for s in kept]
    for i in range(3):
        steps = cumulative[i + 1] - cumulative[i]
        assert any(s.startswith(f"iter {i + 1}/3 ") and f" {steps}/{steps} steps" in s
                   for s in status), (i, steps)  # fmt: skip
    first = [s for s in status if s.startswith("iter 1/3")]
    assert first and all(s.endswith("ETA --") for s in first)  # no iteration done yet
    later = [s for s in status if s.startswith("iter 3/3")]
    assert later and all(re.search(r"ETA \d+:\d\d \(\d+\.\d s/iter\)$", s) for s in later)
    # The status line is erased at the end: the last thing drawn is the Done line.
    assert segments[-1].startswith("Done: 3 iterations")


# -- progress.csv -------------------------------------------------------------------------


def assert_csv_matches_tensorboard(run_dir: Path, iterations: int) -> None:
    rows = csv_rows(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(iterations))  # one row each
    events = scalars(run_dir)
    columns = set(rows[0]) - {"iteration"}
    assert columns == set(events), columns ^ set(events)
    for tag, points in events.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), tag  # TensorBoard too: each step once
        by_step = dict(points)
        for row in rows:
            step, cell = int(row["iteration"]), row[tag]
            if step not in by_step:
                assert cell == "", (tag, step)
                continue
            # TensorBoard keeps float32; the CSV the full value
            assert float(cell) == pytest.approx(by_step[step], rel=1e-6, abs=1e-30), (tag, step)


def test_progress_csv_has_tensorboards_numbers_one_row_per_iteration(tmp_path):
    args = [*TINY, "--iterations", "4", "--checkpoint-every", "2", "--logdir", str(tmp_path)]
    assert train_cli.main([*args, "--run-name", "r"]) == 0
    run_dir = tmp_path / "r"
    assert_csv_matches_tensorboard(run_dir, 4)
    rows = csv_rows(run_dir)
    # meta-test columns appear at the first meta-test (iteration index 1): empty before
    assert rows[0]["test/return_step_2"] == "" and rows[1]["test/return_step_2"] != ""
    assert list(rows[0])[:3] == ["iteration", "adapt/return_step_0", "adapt/return_step_1"]

    # A run killed after iteration 4 but before its checkpoint: the latest is iteration 2.
    last = periodic_checkpoints(run_dir)[-1]
    assert last.name == "iter_000003.pt"
    last.unlink()
    assert train_cli.main(["--resume", str(run_dir)]) == 0
    assert_csv_matches_tensorboard(run_dir, 4)  # rows 3 and 4 purged, then written again


def test_csv_log_adds_late_columns_and_purges_on_reopen(tmp_path):
    path = tmp_path / "progress.csv"
    log = CsvLog(path)
    log.add({"a": 1, "b": 0.5}, 0)
    log.flush()
    log.add({"a": 2, "b": 0.25}, 1)
    log.flush()  # appended
    log.add({"a": 3, "b": math.inf}, 2)
    log.add({"test/c": -1.5}, 2)  # a meta-test at step 2: a new column
    log.flush()  # rewritten with the new header
    assert path.read_text().splitlines() == [
        "iteration,a,b,test/c", "0,1,0.5,", "1,2,0.25,", "2,3,inf,-1.5",
    ]  # fmt: skip
    resumed = CsvLog(path, purge_step=1)  # a resume from step 1
    assert path.read_text().splitlines() == ["iteration,a,b,test/c", "0,1,0.5,"]
    resumed.add({"a": 20, "b": 0.125}, 1)
    resumed.flush()
    assert path.read_text().splitlines()[-1] == "1,20,0.125,"
    assert not list(tmp_path.glob(".*"))  # no temporary file left


# -- the first line -----------------------------------------------------------------------


def test_first_line_comes_before_the_run_is_built(tmp_path, monkeypatch, capsys):
    printed_before_build: list[str] = []
    real_build = run_assembly.build_run

    def build_run(config, run_dir):
        printed_before_build.append(capsys.readouterr().out)
        return real_build(config, run_dir)

    monkeypatch.setattr(loop, "build_run", build_run)  # start_run's
    monkeypatch.setattr(run_assembly, "build_run", build_run)  # restore_run's (--resume)
    monkeypatch.delenv(ENV_VAR, raising=False)
    common = [*TINY, "--eval-every", "0", "--logdir", str(tmp_path), "--run-name", "r"]
    assert train_cli.main([*common, "--iterations", "1"]) == 0
    assert train_cli.main(["--resume", str(tmp_path / "r"), "--iterations", "2"]) == 0
    rest = capsys.readouterr().out
    building = "metarl: maml-trpo on point-nav: sampling in-process, building the policy...\n"
    assert printed_before_build[0] == building  # the first line, and nothing built yet
    assert printed_before_build[1].endswith(building)  # also before a resumed run is built
    assert "metarl: starting iteration 2/2\niter 2/2 |" in rest  # then the first iteration


def test_building_line_says_how_many_workers_start():
    line = loop.building_line
    assert line(build_config({"env": "halfcheetah-vel"}), cpu_count=16) == (
        "metarl: maml-trpo on halfcheetah-vel: starting 16 rollout workers, building the policy..."
    )
    assert "starting 1 rollout worker," in line(build_config({"workers": 1}))
    assert "starting rollout workers on Ray" in line(build_config({"sampler": "ray"}))


# -- Weights & Biases (opt-in) ------------------------------------------------------------


class FakeWandb(types.ModuleType):
    """What metarl calls of ``wandb``, recording it."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict] = []
        self.logged: dict[int, dict[str, float]] = {}  # step -> tag -> value, every run's
        self.runs: list[dict[int, dict[str, float]]] = []  # the same, per init()
        self.finished = 0

    def Settings(self, **kwargs):  # noqa: N802 - wandb's name
        return kwargs

    def init(self, **kwargs):
        self.inits.append(kwargs)
        self.runs.append({})
        fake, mine = self, self.runs[-1]

        class Run:
            def log(self, values, *, step, commit):
                assert commit is False
                fake.logged.setdefault(step, {}).update(values)
                mine.setdefault(step, {}).update(values)

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_gets_the_csvs_scalars_and_is_not_a_config_key(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    args = [*TINY, "--logdir", str(tmp_path), "--run-name", "r", "--wandb-project", "proj"]
    assert train_cli.main(args) == 0
    (init,) = fake.inits
    assert (init["project"], init["name"], init["group"]) == ("proj", "r", "r")
    assert init["settings"] == {"console": "off"}  # no stdout capture under the live display
    assert init["config"]["env"] == "point-nav" and "wandb_project" not in init["config"]
    assert fake.finished == 1
    rows = csv_rows(tmp_path / "r")
    assert sorted(fake.logged) == [int(r["iteration"]) for r in rows]
    for row in rows:
        logged = fake.logged[int(row["iteration"])]
        assert {k for k, v in row.items() if v != ""} - {"iteration"} == set(logged)
        for tag, value in logged.items():
            assert float(row[tag]) == pytest.approx(value, rel=1e-12)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert not [k for k in saved if "wandb" in k] and "proj" not in saved.values()


def test_wandb_not_installed_is_one_line_before_anything_is_built(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    args = [*TINY, "--logdir", str(tmp_path), "--run-name", "r", "--wandb-project", "proj"]
    assert train_cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        'error: --wandb-project: wandb is not installed; pip install "metarl[wandb]"\n'
    )
    assert captured.out == "" and not (tmp_path / "r").exists()


def test_wandb_gets_exact_values_and_a_resume_is_a_new_run_of_the_group(
    tmp_path, monkeypatch, capsys
):
    """The stand-in for wandb (neither CI environment installs it): where W&B writes, the
    run it joins on --resume, and values known without the CSV: env steps (3 tasks x 2
    episodes x 10 steps x 2 sampling rounds per iteration) and the printed meta-test."""
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run_dir = tmp_path / "r"
    args = [*TINY, "--iterations", "2", "--logdir", str(tmp_path), "--run-name", "r", "--quiet"]
    assert train_cli.main([*args, "--wandb-project", "proj"]) == 0
    first_out = capsys.readouterr().out
    resume = ["--resume", str(run_dir), "--iterations", "3", "--quiet"]
    assert train_cli.main([*resume, "--wandb-project", "proj"]) == 0
    first, second = fake.inits
    assert (first["job_type"], second["job_type"]) == ("train", "resume")
    assert first["dir"] == second["dir"] == str(run_dir)  # W&B writes <run>/wandb/
    assert first["group"] == second["group"] == "r" and fake.finished == 2
    assert [sorted(logged) for logged in fake.runs] == [[0, 1], [2]]  # no step twice
    assert [fake.logged[i]["perf/env_steps"] for i in range(3)] == [120.0, 240.0, 360.0]
    assert [fake.logged[i]["update/rejected_nonfinite"] for i in range(3)] == [0.0] * 3
    assert "test/return_step_2" not in fake.logged[0]  # eval_every 2: iterations 2 and 3
    (printed,) = re.findall(r"return after 2 steps (-?\d+\.\d\d)", first_out)
    assert f"{fake.logged[1]['test/return_step_2']:.2f}" == printed
