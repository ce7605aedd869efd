"""The learners' own errors: PEARL's replay buffers, the gradient family's member check.

Each asserts the exact message, and that a refused call changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_pearl import TINY as PEARL_TINY

from metarl import train as train_cli
from metarl.algos.gradient_family import OuterSpec, RuleSpec, gradient_member
from metarl.algos.pearl_replay import FIELDS, TaskReplay


def transitions(n: int, start: float) -> dict[str, np.ndarray]:
    """``n`` transitions of a 2-D observation and 1-D action; values ``start, start + 1, ...``."""
    values = start + np.arange(n, dtype=np.float32)
    obs = np.stack([values, -values], axis=1)
    return {"obs": obs, "actions": values[:, None], "rewards": values,
            "next_obs": obs + 0.5, "terminals": np.zeros(n, np.float32)}  # fmt: skip


def filled_replay(capacity: int) -> TaskReplay:
    """Tasks "a", "b", "c" (slots 0, 1, 2); "b" has a slot but no transitions."""
    replay = TaskReplay(obs_dim=2, act_dim=1, capacity=capacity)
    replay.add("a", **transitions(3, 0.0))
    replay.slot("b")
    replay.add("c", **transitions(2, 10.0))
    return replay


def test_replay_sampling_an_empty_slot_names_it():
    replay, rng = filled_replay(4), np.random.default_rng(0)
    with pytest.raises(ValueError) as info:
        replay.sample(replay.slots(["a", "b", "c"]), 5, rng)
    assert info.value.args[0] == "sample: slot(s) [1] hold no transitions"
    replay.clear("a")  # a cleared task is empty too (PEARL refills the encoder buffers)
    with pytest.raises(ValueError) as info:
        replay.sample(replay.slots(["c", "a", "b"]), 5, rng)
    assert info.value.args[0] == "sample: slot(s) [0, 1] hold no transitions"
    drawn = replay.sample(replay.slots(["c"]), 6, rng)  # the filled slot still samples
    assert drawn["rewards"].shape == (1, 6) and set(drawn["rewards"].ravel()) <= {10.0, 11.0}


def test_replay_state_of_another_capacity_is_refused_and_changes_nothing():
    saved = filled_replay(4).state_dict()
    here = TaskReplay(obs_dim=2, act_dim=1, capacity=8)
    here.add("z", **transitions(5, 100.0))
    before = {name: here.data[name].copy() for name in FIELDS}
    with pytest.raises(ValueError) as info:
        here.load_state_dict(saved)
    assert info.value.args[0] == "replay capacity 4 in the checkpoint, 8 here"
    assert here.tasks == ["z"] and here.size.tolist() == [5] and here.top.tolist() == [5]
    for name in FIELDS:
        np.testing.assert_array_equal(here.data[name], before[name])


def digest(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}  # fmt: skip


def test_pearl_resume_with_another_buffer_capacity_is_one_line_and_changes_nothing(
    tmp_path, capsys
):
    args = [*PEARL_TINY, "--iterations", "1", "--eval-every", "0", "--quiet"]
    assert train_cli.main([*args, "--logdir", str(tmp_path), "--run-name", "r"]) == 0
    run_dir, before = tmp_path / "r", digest(tmp_path / "r")
    capsys.readouterr()
    code = train_cli.main(["--resume", str(run_dir), "--iterations", "2",
                           "--pearl-buffer-capacity", "64"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"error: checkpoint in {str(run_dir)!r} does not match the pearl policy on point-nav: "
        "replay capacity 10000 in the checkpoint, 64 here\n"
    )
    assert digest(run_dir) == before


def test_a_member_whose_rule_cannot_be_replayed_with_trpo_is_refused():
    sgd_like = RuleSpec(groups=(), build=lambda config, policy, device: None,
                        differentiable=False)  # fmt: skip
    trpo_like = OuterSpec(name="trpo", groups=(), inner_steps=lambda config: 1,
                          build=lambda config, inner: None)  # fmt: skip
    with pytest.raises(ValueError) as info:
        gradient_member("adam-trpo", "an Adam rule under TRPO", rule=sgd_like, outers=(trpo_like,))
    assert info.value.args[0] == "adam-trpo: its rule is not differentiable; TRPO and PPO need one"
    no_replay = OuterSpec(name="reptile", groups=(), inner_steps=lambda config: 1,
                          build=lambda config, inner: None, replays=False)  # fmt: skip
    member = gradient_member("adam-reptile", "fine", rule=sgd_like, outers=(no_replay,))
    assert member.name == "adam-reptile"
