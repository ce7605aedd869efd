"""Every committed run under experiments/results/ still loads, evaluates and resumes.

Checkpoints written by older versions hold a flat config of every algorithm's keys,
some under names that have since changed; they must keep working. Each run is copied
to a temporary folder first, so the committed files are never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from metarl import evaluate as evaluate_cli
from metarl import train as train_cli
from metarl.checkpoint import latest_checkpoint, load_checkpoint
from metarl.configure import restored_config

RESULTS = Path(__file__).parents[1] / "experiments" / "results"


def needs_metaworld(run: Path) -> bool:
    return run.name.startswith("ml")


RUNS = [
    pytest.param(run, id=run.name, marks=[pytest.mark.metaworld] if needs_metaworld(run) else [])
    for run in sorted(RESULTS.iterdir())
    if any(run.glob("checkpoints/*.pt"))
]


def full_checkpoints(run: Path) -> list[Path]:
    return sorted(run.glob("checkpoints/iter_*.pt"))


def checkpoint_to_evaluate(run: Path) -> Path:
    """The latest full checkpoint, or the slim one of a run committed with only that."""
    return (full_checkpoints(run) or sorted(run.glob("checkpoints/slim_*.pt")))[-1]


def copy_run(run: Path, tmp_path: Path) -> Path:
    """The run's config and checkpoints in ``tmp_path`` (no eval files, no events)."""
    copy = tmp_path / run.name
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    shutil.copy(run / "config.yaml", copy / "config.yaml")
    return copy


def skip_without_metaworld(run: Path) -> None:
    if needs_metaworld(run):
        pytest.importorskip("metaworld", reason="the metaworld extra is not installed")


def test_the_committed_runs_are_found():
    assert len(RUNS) >= 40 and any(param.id == "hcvel-trpo-s0" for param in RUNS)


@pytest.mark.parametrize("run", RUNS)
def test_a_committed_run_loads_and_evaluates_one_task(run, tmp_path):
    skip_without_metaworld(run)
    checkpoint = checkpoint_to_evaluate(run)
    state = load_checkpoint(checkpoint)
    config = restored_config(state["config"])
    assert config.algo == state["config"]["algo"] and config.seed == state["config"]["seed"]
    copy = copy_run(run, tmp_path)
    args = [str(copy), "--checkpoint", checkpoint.name, "--n-tasks", "1", "--episodes", "1",
            "--adapt-steps", "1", "--workers", "0"]  # fmt: skip
    assert evaluate_cli.main(args) == 0
    (result,) = [json.loads(p.read_text()) for p in (copy / "eval").glob("*.json")]
    assert len(result["per_task"]) == 1 and result["algo"] == config.algo


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_a_committed_run_resumes_for_one_iteration(run, tmp_path):
    skip_without_metaworld(run)
    if not full_checkpoints(run):
        pytest.skip("committed with a slim checkpoint only: it evaluates, it does not resume")
    copy = copy_run(run, tmp_path)
    saved = load_checkpoint(latest_checkpoint(copy))
    done = saved["iteration"] + 1
    args = ["--resume", str(copy), "--iterations", str(done + 1), "--eval-every", "0",
            "--quiet"]  # fmt: skip
    if saved["config"].get("device") == "cuda" and not torch.cuda.is_available():
        args += ["--device", "cpu"]  # trained on a GPU machine: what its error line asks for
    assert train_cli.main(args) == 0
    assert load_checkpoint(latest_checkpoint(copy))["iteration"] + 1 == done + 1
