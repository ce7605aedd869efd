"""A run trained on CUDA: it trains, its checkpoint loads onto the CPU, evaluate and export
read it, on a machine with CUDA or without.

The ``gpu`` tests train each learner for two iterations with ``--device cuda``; they skip,
saying why, where CUDA is absent. The others run everywhere: a checkpoint that records
``device: cuda`` (as a CUDA run's does) evaluates and exports here, on CUDA where there is
CUDA and on the CPU where there is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_args import args_for
from test_architecture import tensors_equal
from test_meta_lstm import TINY as META_LSTM_TINY
from test_pearl import TINY as PEARL_TINY
from test_rl2_transformer import TINY as TRANSFORMER_TINY
from test_train_cli import TINY
from test_varibad import TINY as VARIBAD_TINY

from metarl import cli
from metarl.checkpoint import load_checkpoint, periodic_checkpoints
from metarl.configure import restored_config
from metarl.run import restore_run

NEEDS_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)"
)
SHORT = ["--iterations", "2", "--eval-every", "2", "--checkpoint-every", "1", "--quiet"]


def without_short_flags(args: list[str]) -> list[str]:
    """``args`` less the flags SHORT and ``--device`` set (each flag with its value)."""
    dropped = {"--iterations", "--eval-every", "--checkpoint-every", "--quiet", "--device"}
    out, skipping = [], False
    for arg in args:
        if arg.startswith("--"):
            skipping = arg in dropped
        if not skipping:
            out.append(arg)
    return out


EVALUATE = ["--workers", "0", "--n-tasks", "2", "--episodes", "1", "--adapt-steps", "1"]
ALGO_ARGS = {
    **{algo: [*args_for(algo, TINY), "--algo", algo]
       for algo in ("maml-trpo", "maml-ppo", "meta-sgd", "reptile", "rl2")},
    "pearl": PEARL_TINY,
    "meta-lstm": without_short_flags(META_LSTM_TINY),
    "varibad": without_short_flags(VARIBAD_TINY),
    "rl2-transformer": without_short_flags(TRANSFORMER_TINY),
}  # fmt: skip
"""Each learner's shrunk training flags (PEARL's own: its networks and batches)."""


def tensors(tree) -> list[torch.Tensor]:
    """Every tensor in a nested state (dicts, lists, tuples)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for value in tree.values() for t in tensors(value)]
    if isinstance(tree, (list, tuple)):
        return [t for value in tree for t in tensors(value)]
    return []


def assert_loads_on_cpu_and_evaluates(run_dir: Path, capsys) -> None:
    """The run's newest checkpoint loads onto the CPU, rebuilds a CPU learner holding exactly
    its values, and evaluate and export read it (each exit code 0, with its files)."""
    newest = periodic_checkpoints(run_dir)[-1]
    state = load_checkpoint(newest)
    devices = [t.device.type for t in tensors(state["learner"])]
    assert devices and set(devices) == {"cpu"}
    run = restore_run(state, restored_config(state["config"], {"device": "cpu", "workers": 0}),
                      run_dir)  # fmt: skip
    try:
        assert tensors_equal(run.learner.state_dict(), state["learner"])
    finally:
        run.sampler.close()
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir), *EVALUATE]) == 0, capsys.readouterr().err
    (report,) = (run_dir / "eval").glob("*.json")
    returns = np.asarray(json.loads(report.read_text())["per_task"], dtype=float)
    assert returns.shape[0] == 2 and np.isfinite(returns).all()  # [tasks, units]
    assert cli.main(["export", str(run_dir)]) == 0, capsys.readouterr().err
    (slim,) = (run_dir / "checkpoints").glob("slim_iter*.pt")
    assert {t.device.type for t in tensors(load_checkpoint(slim)["learner"])} == {"cpu"}


def test_a_run_recorded_on_cuda_evaluates_and_exports_on_this_machine(tmp_path, capsys):
    argv = ["train", *TINY, *SHORT, "--logdir", str(tmp_path), "--run-name", "r"]
    assert cli.main(argv) == 0
    run_dir = tmp_path / "r"
    for path in periodic_checkpoints(run_dir):  # as the checkpoints of a --device cuda run
        state = torch.load(path, weights_only=False)
        torch.save({**state, "config": {**state["config"], "device": "cuda"}}, path)
    assert_loads_on_cpu_and_evaluates(run_dir, capsys)
    if not torch.cuda.is_available():  # resuming trains: it needs the device, or --device
        assert cli.main(["train", "--resume", str(run_dir), "--iterations", "3"]) == 2
        assert "'cuda' was asked for but CUDA is not available" in capsys.readouterr().err
    resume = ["train", "--resume", str(run_dir), "--iterations", "3", "--device", "cpu"]
    assert cli.main([*resume, "--quiet"]) == 0
    assert load_checkpoint(periodic_checkpoints(run_dir)[-1])["iteration"] == 2


@pytest.mark.gpu
@NEEDS_CUDA
@pytest.mark.parametrize("algo", list(ALGO_ARGS))
def test_training_on_cuda_saves_a_checkpoint_that_loads_on_the_cpu(algo, tmp_path, capsys):
    argv = ["train", *ALGO_ARGS[algo], *SHORT, "--device", "cuda", "--logdir", str(tmp_path)]
    assert cli.main([*argv, "--run-name", "r"]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "r"
    assert [p.name for p in periodic_checkpoints(run_dir)][-1] == "iter_000001.pt"
    raw = torch.load(periodic_checkpoints(run_dir)[-1], weights_only=False)  # as saved
    assert "cuda" in {t.device.type for t in tensors(raw["learner"])}
    assert raw["config"]["device"] == "cuda"
    assert_loads_on_cpu_and_evaluates(run_dir, capsys)
