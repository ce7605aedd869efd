"""``metarl.evaluate``'s files: names that say what was evaluated, never overwritten, and a
record of how each was made. The command runs in-process on a tiny trained point-nav run."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import types
from pathlib import Path

import pytest

import metarl
from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.eval_output import eval_stem, metarl_version, provenance, shell_command

TINY = [
    "--env", "point-nav", "--iterations", "2", "--meta-batch-size", "2",
    "--episodes-per-task", "2", "--horizon", "5", "--hidden-sizes", "8", "8",
    "--workers", "0", "--test-pool-size", "3", "--train-pool-size", "4",
    "--eval-every", "0", "--eval-adapt-steps", "1", "--n-probe-tasks", "2",
    "--checkpoint-every", "1",
]  # fmt: skip
DEFAULT = "benchmark_iter000002_steps2_metarl"
"""The default evaluation's name: benchmark pool, checkpoint of iteration 2, 2 steps."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-iteration run (no evaluations yet)."""
    logdir = tmp_path_factory.mktemp("runs")
    assert train_cli.main([*TINY, "--logdir", str(logdir), "--run-name", "r", "--quiet"]) == 0
    return logdir / "r"


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the trained run with an empty ``eval/``, for one test."""
    copy = tmp_path / "r"
    (copy / "checkpoints").mkdir(parents=True)
    for path in (trained / "checkpoints").iterdir():
        (copy / "checkpoints" / path.name).write_bytes(path.read_bytes())
    return copy


def evaluate(run_dir: Path, *flags: str) -> int:
    return evaluate_cli.main([str(run_dir), "--adapt-steps", "2", "--workers", "0", *flags])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# -- names and the record -------------------------------------------------------------------


def test_an_evaluation_name_says_pool_iteration_steps_protocol_and_variants():
    assert eval_stem("test", 224, 3, "metarl") == "test_iter000224_steps3_metarl"
    assert eval_stem("test", 224, 3, "metaworld") == "test_iter000224_steps3_metaworld"
    assert eval_stem("train", 7, 0, "metarl", [("n", 5), ("ep", 10), ("seed", 1)]) == (
        "train_iter000007_steps0_metarl_n5_ep10_seed1"
    )
    assert eval_stem("test", 1, 1, None, [("px", "64x48")]) == "test_iter000001_steps1_px64x48"
    # sortable: by pool, then iteration (zero-padded), then steps
    stems = [eval_stem("test", i, 1, "metarl") for i in (10, 9, 100)]
    assert sorted(stems) == [stems[1], stems[0], stems[2]]
    with pytest.raises(ValueError, match="protocol must be one of"):
        eval_stem("test", 1, 1, "garage")


def test_the_record_holds_the_command_the_version_and_every_argument(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/metarl", "evaluate", "runs/a b", "--seed", "3"])
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    record = provenance({"seed": 3, "video_size": (128, 128)}, ["runs/a b", "--seed", "3"])
    assert record["command"]["argv"] == ["/venv/bin/metarl", "evaluate", "runs/a b", "--seed", "3"]
    assert shlex.split(record["command"]["shell"]) == record["command"]["argv"]
    assert record["command"]["flags"] == ["runs/a b", "--seed", "3"]
    assert record["metarl_version"] == metarl_version() == metarl.__version__
    assert record["arguments"] == {"seed": 3, "video_size": (128, 128)}


def test_run_as_a_module_the_shell_command_names_the_module(monkeypatch):
    spec = types.SimpleNamespace(name="metarl.evaluate")
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=spec))
    argv = ["/src/metarl/evaluate.py", "runs/r", "--episodes", "3"]
    assert shell_command(argv) == "python -m metarl.evaluate runs/r --episodes 3"


# -- the command ----------------------------------------------------------------------------


def test_evaluate_writes_named_files_with_the_record(run_dir, capsys):
    assert evaluate(run_dir) == 0
    eval_dir = run_dir / "eval"
    assert names(eval_dir) == {f"{DEFAULT}.csv", f"{DEFAULT}.json", f"{DEFAULT}.png"}
    report = json.loads((eval_dir / f"{DEFAULT}.json").read_text())
    assert report["iteration"] == 2 and report["tasks"] == "benchmark"
    assert report["protocol"] == "metarl" and report["adapt_steps"] == 2
    assert report["episodes_per_task"] == 2 and report["seed"] == 12345
    assert report["metarl_version"] == metarl.__version__
    assert report["command"]["argv"] == sys.argv
    assert report["command"]["flags"] == [str(run_dir), "--adapt-steps", "2", "--workers", "0"]
    arguments = report["arguments"]
    assert set(arguments) == set(vars(evaluate_cli.build_parser().parse_args([str(run_dir)])))
    assert arguments["adapt_steps"] == 2 and arguments["workers"] == 0
    assert arguments["video_size"] == [128, 128]
    assert len(report["summary"]) == 3 and len(report["per_task"]) == 40
    assert f"wrote {eval_dir / DEFAULT}.json" in capsys.readouterr().out


def test_the_same_evaluation_again_says_it_exists_and_leaves_it(run_dir, capsys, monkeypatch):
    assert evaluate(run_dir) == 0
    before = digests(run_dir / "eval")
    capsys.readouterr()

    def no_restore(*args, **kwargs):
        raise AssertionError("the run was restored to evaluate again")

    monkeypatch.setattr(evaluate_cli, "restore", no_restore)
    # --episodes 2 is the run's own value: the same evaluation
    for extra in ([], ["--episodes", "2"], ["--n-tasks", "40"], ["--checkpoint", "latest"]):
        assert evaluate(run_dir, *extra) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert out == [
            f"{run_dir / 'eval' / DEFAULT}.json exists (this evaluation was written before); "
            "--force replaces it"
        ]
    assert digests(run_dir / "eval") == before


def test_force_replaces_the_evaluation(run_dir):
    assert evaluate(run_dir) == 0
    path = run_dir / "eval" / f"{DEFAULT}.json"
    first = json.loads(path.read_text())
    assert evaluate(run_dir, "--force") == 0
    second = json.loads(path.read_text())
    assert names(run_dir / "eval") == {f"{DEFAULT}.csv", f"{DEFAULT}.json", f"{DEFAULT}.png"}
    assert first["arguments"]["force"] is False and second["arguments"]["force"] is True
    assert second["per_task"] == first["per_task"]  # the same seeded episodes


@pytest.mark.parametrize(
    ("flags", "stem"),
    [
        (["--episodes", "3"], f"{DEFAULT}_ep3"),
        (["--seed", "7"], f"{DEFAULT}_seed7"),
        (["--n-tasks", "1"], f"{DEFAULT}_n1"),
        (["--n-tasks", "1", "--episodes", "1", "--seed", "0"], f"{DEFAULT}_n1_ep1_seed0"),
        (["--tasks", "train", "--n-tasks", "2"], "train_iter000002_steps2_metarl_n2"),
        (["--adapt-steps", "1"], "benchmark_iter000002_steps1_metarl"),
        (["--checkpoint", "iter_000000.pt"], "benchmark_iter000001_steps2_metarl"),
    ],
)
def test_arguments_that_change_the_numbers_change_the_name(run_dir, flags, stem):
    assert evaluate(run_dir) == 0
    default = digests(run_dir / "eval")
    assert evaluate(run_dir, *flags) == 0
    written = names(run_dir / "eval") - set(default)
    assert written == {f"{stem}.csv", f"{stem}.json", f"{stem}.png"}
    assert {name: digest for name, digest in digests(run_dir / "eval").items()
            if name in default} == default  # fmt: skip


def test_a_film_is_named_and_kept_on_its_own(run_dir, capsys):
    assert evaluate(run_dir, "--sheet", "--video-steps", "1") == 0
    sheet = "benchmark_iter000002_steps1_sheet.png"
    assert names(run_dir / "eval") == {f"{DEFAULT}.{s}" for s in ("csv", "json", "png")} | {sheet}
    capsys.readouterr()
    assert evaluate(run_dir, "--sheet", "--video-steps", "1") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" exists ")[0] for line in out] == [
        f"{run_dir / 'eval' / DEFAULT}.json",
        str(run_dir / "eval" / sheet),
    ]
    # another film of the same evaluation: only the film is made
    before = digests(run_dir / "eval")
    assert evaluate(run_dir, "--sheet", "--video-tasks", "1", "--video-size", "64x48") == 0
    new = names(run_dir / "eval") - set(before)
    assert new == {"benchmark_iter000002_steps2_n1_px64x48_sheet.png"}
    assert {k: v for k, v in digests(run_dir / "eval").items() if k in before} == before
