"""Every checkpoint error (metarl/checkpoint.py) is one line and exit code 2, in every command
that reads checkpoints (evaluate, export, train --resume), and changes no file.

One TINY point-nav run with two checkpoints is trained in-process; each case copies it and
breaks the newest checkpoint, then calls the commands' ``main`` in-process.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from test_train_cli import TINY

from metarl import cli
from metarl import train as train_cli
from metarl.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_latest,
)

EVALUATE = ["--workers", "0", "--n-tasks", "2", "--episodes", "1", "--adapt-steps", "1"]
COMMANDS = {
    "evaluate": lambda run: ["evaluate", str(run), *EVALUATE],
    "export": lambda run: ["export", str(run)],
    "resume": lambda run: ["train", "--resume", str(run), "--iterations", "3", "--quiet"],
}
"""Each command that loads a run's newest checkpoint: run directory -> its ``metarl`` argv."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished TINY run: checkpoints iter_000000.pt and iter_000001.pt."""
    logdir = tmp_path_factory.mktemp("runs")
    args = [*TINY, "--iterations", "2", "--eval-every", "0", "--checkpoint-every", "1"]
    assert train_cli.main([*args, "--logdir", str(logdir), "--run-name", "r", "--quiet"]) == 0
    return logdir / "r"


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def one_line(argv: list[str], capsys) -> tuple[int, str]:
    """``metarl ARGV``'s exit code and its stderr, which must be one line."""
    capsys.readouterr()
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return code, err[len("error: ") : -1]


def good_state(trained: Path) -> dict:
    return torch.load(trained / "checkpoints" / "iter_000001.pt", weights_only=False)


def without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


def broken(trained: Path, case: str) -> bytes | object:
    """The newest checkpoint of ``trained`` broken as ``case`` says: raw bytes or a state."""
    state = good_state(trained)
    data = (trained / "checkpoints" / "iter_000001.pt").read_bytes()
    return {
        "text file": b"not a checkpoint\n",
        "empty file": b"",
        "truncated": data[: len(data) // 2],
        "a list": [1, 2, 3],
        "no format_version": without(state, "format_version"),
        "format v2": {**state, "format_version": FORMAT_VERSION + 1},
        "format '1'": {**state, "format_version": "1"},
        "no learner": without(state, "learner"),
        "no config, no env_steps": without(without(state, "config"), "env_steps"),
        "iteration -1": {**state, "iteration": -1},
        "env_steps 1.5": {**state, "env_steps": 1.5},
        "config a list": {**state, "config": ["point-nav"]},
        "config without env": {**state, "config": without(state["config"], "env")},
        "learner None": {**state, "learner": None},
    }[case]


def newest_message(case: str) -> str:
    """What is said of the broken newest checkpoint, after its quoted path."""
    v = FORMAT_VERSION
    return {
        "text file": "is unreadable (corrupt?): invalid load key, 'n'.",
        "empty file": "is unreadable (corrupt?): Ran out of input",
        "truncated": "is unreadable (corrupt?): ",  # torch's reason depends on the cut
        "a list": f"is not a metarl v{v} checkpoint",
        "no format_version": f"is not a metarl v{v} checkpoint",
        "format v2": f"is format v{v + 1}, written by a newer metarl; this one reads v{v}: "
        "upgrade metarl to load it",
        "format '1'": f"is not a metarl v{v} checkpoint",
        "no learner": "is incomplete: it lacks ['learner']",
        "no config, no env_steps": "is incomplete: it lacks ['env_steps', 'config']",
        "iteration -1": "is malformed: 'iteration' is -1, not an int >= 0",
        "env_steps 1.5": "is malformed: 'env_steps' is 1.5, not an int >= 0",
        "config a list": "is malformed: 'config' is a list, not a dict of config keys",
        "config without env": "is malformed: its config lacks ['env']",
        "learner None": "is malformed: 'learner' is a NoneType, not a dict",
    }[case]


CASES = ["text file", "empty file", "truncated", "a list", "no format_version", "format v2",
         "format '1'", "no learner", "no config, no env_steps", "iteration -1", "env_steps 1.5",
         "config a list", "config without env", "learner None"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_broken_checkpoint_is_one_line_in_every_command_and_changes_nothing(
    trained, tmp_path, capsys, case
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    newest = run_dir / "checkpoints" / "iter_000001.pt"
    content = broken(trained, case)
    if isinstance(content, bytes):
        newest.write_bytes(content)
    else:
        torch.save(content, newest)
    before = fingerprint(run_dir)
    said = f"checkpoint {str(newest)!r} {newest_message(case)}"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(newest)
    assert str(info.value).startswith(said) and "\n" not in str(info.value)
    for command, argv in COMMANDS.items():
        code, err = one_line(argv(run_dir), capsys)
        assert code == 2, (command, err)
        assert err.startswith(said), (command, err)
        if command == "resume":  # and the older checkpoint it could resume from is named
            assert err.endswith("; move it aside to resume from the older iter_000000.pt"), err
    assert fingerprint(run_dir) == before


def test_resume_moves_on_from_the_older_checkpoint_once_the_broken_one_is_moved_aside(
    trained, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    newest = run_dir / "checkpoints" / "iter_000001.pt"
    newest.write_bytes(b"")
    assert cli.main(COMMANDS["resume"](run_dir)) == 2
    newest.rename(tmp_path / "aside.pt")  # what the message says to do
    assert train_cli.main(["--resume", str(run_dir), "--iterations", "2", "--quiet"]) == 0
    assert "Resuming" in capsys.readouterr().out
    assert load_latest(run_dir)["iteration"] == 1


def test_resume_needs_the_rng_states_that_evaluate_and_export_do_not(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    newest = run_dir / "checkpoints" / "iter_000001.pt"
    torch.save(without(good_state(trained), "rng"), newest)
    before = fingerprint(run_dir)
    code, err = one_line(COMMANDS["resume"](run_dir), capsys)
    assert (code, err) == (2, f"checkpoint {str(newest)!r} is incomplete: it lacks ['rng']")
    assert fingerprint(run_dir) == before
    assert load_checkpoint(newest)["iteration"] == 1  # it is still a checkpoint to evaluate


@pytest.mark.parametrize("case", ["missing", "a file", "empty"])
def test_a_run_directory_without_a_checkpoint_is_one_line_in_every_command(tmp_path, capsys, case):
    run_dir = tmp_path / "run"
    if case == "a file":
        run_dir.write_text("not a run\n")
    elif case == "empty":
        (run_dir / "checkpoints").mkdir(parents=True)
    said = {
        "missing": f"run directory {str(run_dir)!r} does not exist",
        "a file": f"run directory {str(run_dir)!r} is not a directory",
        "empty": f"run directory {str(run_dir)!r} holds no checkpoint",
    }[case]
    with pytest.raises(CheckpointError) as info:
        latest_checkpoint(run_dir)
    assert str(info.value) == said
    before = sorted(tmp_path.rglob("*"))
    for command, argv in COMMANDS.items():
        assert one_line(argv(run_dir), capsys) == (2, said), command
    assert sorted(tmp_path.rglob("*")) == before


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "gone.pt")
    assert str(info.value) == f"checkpoint {str(tmp_path / 'gone.pt')!r} does not exist"


def test_evaluate_of_a_file_that_is_not_a_checkpoint_is_one_line(trained, tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("x = 1\n")
    before = fingerprint(trained)
    code, err = one_line(["evaluate", str(trained), "--checkpoint", str(other), *EVALUATE],
                         capsys)  # fmt: skip
    assert (code, err) == (2, f"checkpoint {str(other)!r} is unreadable (corrupt?): "
                              "invalid load key, 'x'.")  # fmt: skip
    assert fingerprint(trained) == before


def test_export_onto_the_checkpoint_it_reads_is_refused(trained, capsys):
    source = trained / "checkpoints" / "iter_000000.pt"
    before = fingerprint(trained)
    argv = ["export", str(trained), "--checkpoint", source.name, "--out", str(source)]
    assert one_line(argv, capsys) == (2, f"--out {str(source)!r} is the checkpoint being exported")
    assert fingerprint(trained) == before
