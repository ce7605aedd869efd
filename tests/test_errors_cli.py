"""The commands' one-line errors (exit code 2) that no other test file reaches: the ``metarl``
command itself, train's run directory, --config, --wandb-project and MUJOCO_GL, evaluate's
--protocol metaworld and --sheet, plot's keys and run files. Each changes no file.

In-process through ``metarl.cli.main`` where the command allows; two runs are real
processes (--protocol metaworld from the command line, and MuJoCo failing to import).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_progress import FakeWandb
from test_train_cli import TINY

from metarl import cli
from metarl.run import gl_advice

SHORT = ["--iterations", "1", "--eval-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A one-iteration TINY run without probe tasks and without meta-test results."""
    logdir = tmp_path_factory.mktemp("runs")
    argv = ["train", *TINY, *SHORT, "--n-probe-tasks", "0", "--logdir", str(logdir)]
    assert cli.main([*argv, "--run-name", "r"]) == 0
    return logdir / "r"


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def one_line(argv: list[str], capsys) -> tuple[int, str]:
    """``metarl ARGV``'s exit code and its one line on stderr (without ``error: ``)."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return code, err[len("error: ") : -1]


def metarl(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metarl.cli", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


# -- the metarl command ------------------------------------------------------------------------


def test_metarl_without_a_command_prints_the_commands_and_exits_2(capsys):
    assert cli.main([]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "usage: metarl {" + ",".join(cli.SUBCOMMANDS) + "} [flags]"
    assert "train" in cli.SUBCOMMANDS and "evaluate" in cli.SUBCOMMANDS
    listed = [line.split()[0] for line in lines[2:]]
    assert listed == list(cli.SUBCOMMANDS)


def test_metarl_envs_takes_no_flags(capsys):
    assert one_line(["envs", "--bogus"], capsys) == (
        2,
        "unrecognized arguments: --bogus (metarl envs takes none)",
    )
    assert cli.main(["envs", "--help"]) == 0
    assert capsys.readouterr().out == "usage: metarl envs\n\nlist the task families\n"


# -- train -------------------------------------------------------------------------------------


def test_train_into_a_run_directory_that_holds_a_run_is_refused(run_dir, capsys):
    before = fingerprint(run_dir.parent)
    argv = ["train", *TINY, "--logdir", str(run_dir.parent), "--run-name", "r"]
    assert one_line(argv, capsys) == (
        2,
        f"config key 'run_name': run directory {str(run_dir)!r} already holds a run; "
        f"resume it with --resume {run_dir} or choose another name",
    )
    assert fingerprint(run_dir.parent) == before


def test_a_config_that_is_a_folder_is_named(tmp_path, capsys):
    argv = ["train", "--config", str(tmp_path), "--logdir", str(tmp_path / "runs")]
    assert one_line(argv, capsys) == (2, f"config file {str(tmp_path)!r} is not a file")
    assert list(tmp_path.iterdir()) == []


class FailingWandb(FakeWandb):
    """wandb without an account or a network: ``init`` raises as wandb does."""

    def init(self, **kwargs):
        raise RuntimeError("api_key not configured (no-tty). call wandb.login(key=...)\nmore")


def test_wandb_that_cannot_start_is_one_line_and_the_same_command_can_run_again(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "wandb", FailingWandb())
    argv = ["train", *TINY, *SHORT, "--logdir", str(tmp_path), "--run-name", "r",
            "--wandb-project", "proj"]  # fmt: skip
    assert one_line(argv, capsys) == (
        2,
        "--wandb-project: wandb could not start (api_key not configured (no-tty). call "
        "wandb.login(key=...)); WANDB_MODE=offline logs without an account or a network",
    )
    # the run directory holds its config alone: no checkpoint, so the name is still free
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["config.yaml"]
    working = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", working)
    assert cli.main(argv) == 0
    assert len(working.inits) == 1 and sorted(working.logged) == [0]


@pytest.mark.parametrize(("backend", "advice"), [
    ("osmesa", "set MUJOCO_GL=egl, or unset it when not rendering"),
    ("EGL", "unset MUJOCO_GL when not rendering, or install libEGL (a GPU driver or Mesa)"),
])  # fmt: skip
def test_the_advice_after_a_failed_mujoco_import_never_names_the_backend_that_failed(
    backend, advice
):
    assert gl_advice(backend) == advice


def test_mujoco_that_cannot_import_is_one_line_naming_mujoco_gl(tmp_path):
    result = metarl("train", "--env", "halfcheetah-vel", "--workers", "0", "--logdir", "runs",
                    cwd=tmp_path, env={"MUJOCO_GL": "bogus"})  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()  # MuJoCo's own reason sits in the parentheses
    assert line.startswith("error: importing MuJoCo for 'halfcheetah-vel' failed with "
                           "MUJOCO_GL=bogus (RuntimeError: "), line  # fmt: skip
    assert line.endswith("): that backend's library is not installed here; set MUJOCO_GL=egl, "
                         "or unset it when not rendering"), line  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# -- evaluate ----------------------------------------------------------------------------------


def test_protocol_metaworld_on_a_point_nav_run_from_the_command_line(run_dir, tmp_path):
    before = fingerprint(run_dir)
    result = metarl("evaluate", str(run_dir), "--protocol", "metaworld", "--workers", "0",
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: --protocol metaworld scores Meta-World runs; this run is of 'point-nav'\n"
    )
    assert fingerprint(run_dir) == before and not (run_dir / "eval").exists()


def test_sheet_of_a_run_without_probe_tasks_asks_for_video_tasks(run_dir, capsys):
    before = fingerprint(run_dir)
    argv = ["evaluate", str(run_dir), "--sheet", "--workers", "0"]
    assert one_line(argv, capsys) == (
        2,
        "--video-tasks: the run's n_probe_tasks is 0; pass N >= 1",
    )
    assert fingerprint(run_dir) == before


# -- plot --------------------------------------------------------------------------------------


def plot_case(case: str, run_dir: Path, tmp_path: Path) -> tuple[list[str], str]:
    """``metarl plot`` flags (before ``--out``) and the line they must give."""
    bad = tmp_path / "bad"
    bad.mkdir()
    if case == "config.yaml not YAML":
        (bad / "config.yaml").write_text("env: [point-nav\n")
        return [str(bad)], f"{bad / 'config.yaml'}: cannot read it: while parsing a flow sequence"
    if case == "config.yaml a list":
        (bad / "config.yaml").write_text("- env\n")
        return [str(bad)], f"{bad / 'config.yaml'} is not a mapping of config keys"
    if case == "no results":
        return [str(run_dir)], (
            "nothing to plot: none of the runs has meta-test results (test/ columns in "
            "progress.csv or eval/*.json from metarl evaluate)"
        )
    if case == "empty group key":
        return [str(run_dir), "--group-by", "algo,,env"], "--group-by: an empty key in 'algo,,env'"
    assert case == "no panel"
    return [str(run_dir), "--panels", ","], (
        "--panels: unknown panel ','; the panels are adaptation,steps,time"
    )


@pytest.mark.parametrize(
    "case",
    ["config.yaml not YAML", "config.yaml a list", "no results", "empty group key", "no panel"],
)
def test_bad_plot_input_is_one_line_and_draws_nothing(run_dir, tmp_path, capsys, case):
    flags, said = plot_case(case, run_dir, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert one_line(["plot", *flags, "--out", str(out / "p.png")], capsys) == (2, said)
    assert list(out.iterdir()) == []
