"""Does each meta-learner learn? Each algorithm against its null on tiny point-nav runs.

A learning test that only asks for "return after adapting > return before" passes when
nothing is meta-learned: one policy-gradient step from a random policy already gains a
few points. So each test here trains a tiny point-nav run twice with the same seed: as
configured, and with the meta-learning switched off (the *null*: a zero trust region, a
zero outer learning rate, no gradient steps), then asks that

(a) the trained run's last meta-test return after adapting (``test/return_step_K``; RL²
    and PEARL: the trial's last episode, ``test/return_episode_K+1``) beats the null's by
    ``margin``, and
(b) it beats the trained run's own first meta-test (after iteration 0) by ``improvement``.

``--eval-every 1`` meta-tests after every iteration (``metarl.loop.evaluate_step``: when
``(iteration + 1) % eval_every == 0`` or at the last), so the first one follows iteration 0.
The margins are about half of the smallest gap measured over seeds 0, 1, 2 by

    python benchmarks/learning_null.py

which runs these exact settings (:data:`CASES`) and prints the table behind the
numbers in each case's comment; rerun it after changing a setting.

At these budgets much of what a trained run gains is acting calmly (a point that stays at
the start scores about -15 on horizon 40, a random walk -20 to -35): the tests say that
meta-training moves the meta-test return the right way, and far, not that the policy has
learnt to find the goal. RL²'s and PEARL's slow tests (``-m slow``) check that the later
episodes of a trial beat the first.
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metarl import train as train_cli

# Every run: point-nav (pure numpy), in-process sampling, one torch thread, a meta-test after
# every iteration, a checkpoint only at the end.
COMMON = (
    "--env", "point-nav", "--workers", "0", "--torch-threads", "1", "--eval-every", "1",
    "--checkpoint-every", "1000", "--seed", "0",
)  # fmt: skip

# The gradient family's batch: 10 iterations x 6 tasks x 5 episodes x 40 steps, a 16-16 policy,
# meta-tested on 16 held-out goals.
GRADIENT = (
    "--iterations", "10", "--meta-batch-size", "6", "--episodes-per-task", "5", "--horizon", "40",
    "--hidden-sizes", "16", "16", "--test-pool-size", "16", "--eval-adapt-steps", "1",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One algorithm's learning test: its run, the flags of its null, what is compared."""

    algo: str
    args: tuple[str, ...]  # the run's flags, after COMMON and --algo
    null: tuple[str, ...]  # appended to args: the same run with meta-learning switched off
    tag: str  # the meta-test return the algorithm is meant to improve
    margin: float  # (a): trained beats the null by more than this at the last meta-test
    improvement: float  # (b): trained's last meta-test beats its first by more than this

    def argv(self, *, null: bool = False, seed: int | None = None) -> list[str]:
        argv = [*COMMON, "--algo", self.algo, *self.args]
        if seed is not None:
            argv += ["--seed", str(seed)]
        return argv + list(self.null) if null else argv


# Each margin is about half the smallest of three seeds' gaps, measured by
#   python benchmarks/learning_null.py
# (the seeds' last meta-tests: trained / null -> gap; trained's gain over its first meta-test).
# The null's own last-minus-first meta-test (its noise: its policy never moves) stayed within
# +-1.8 (+-1.3 for PEARL), below every margin.
CASES = [
    # s0/1/2: -15.4/-34.3 -> 18.9, -12.7/-23.8 -> 11.1, -13.9/-26.8 -> 12.9; gain 18.0, 8.9, 12.0
    Case("maml-trpo", (*GRADIENT, "--trpo-max-kl", "0.02"), ("--trpo-max-kl", "0"),
         "test/return_step_1", margin=5.5, improvement=4.4),
    # s0/1/2: -15.3/-34.3 -> 19.0, -11.9/-23.8 -> 11.9, -14.8/-26.8 -> 12.0; gain 15.1, 9.3, 9.1
    Case("maml-ppo", (*GRADIENT, "--ppo-lr", "0.03"), ("--ppo-lr", "0"),
         "test/return_step_1", margin=6.0, improvement=4.5),
    # s0/1/2: -14.1/-34.3 -> 20.2, -13.4/-23.8 -> 10.4, -18.5/-26.8 -> 8.4; gain 19.4, 7.5, 8.1
    Case("meta-sgd", (*GRADIENT, "--trpo-max-kl", "0.02"), ("--trpo-max-kl", "0"),
         "test/return_step_1", margin=4.2, improvement=3.7),
    # s0/1/2: -11.5/-24.5 -> 13.1, -12.6/-24.1 -> 11.5, -12.6/-24.8 -> 12.2; gain 12.2, 11.2, 8.7
    Case("reptile", (*GRADIENT, "--eval-adapt-steps", "3", "--reptile-inner-steps", "3",
                     "--reptile-inner-optimizer", "adam", "--inner-lr", "0.03"),
         ("--reptile-outer-lr", "0"), "test/return_step_3", margin=5.7, improvement=4.3),
    # s0/1/2: -16.0/-23.9 -> 7.8, -16.8/-26.2 -> 9.4, -17.7/-25.8 -> 8.1; gain 8.7, 8.4, 14.0
    Case("rl2", ("--iterations", "20", "--meta-batch-size", "8", "--horizon", "40",
                 "--rl2-trials-per-task", "4", "--rl2-episodes-per-trial", "2",
                 "--episodes-per-task", "8", "--test-pool-size", "16", "--eval-adapt-steps", "1",
                 "--rl2-hidden-size", "32", "--init-log-std", "-1", "--ppo-epochs", "2",
                 "--rl2-minibatches", "1", "--ppo-lr", "0.03"),
         ("--ppo-lr", "0"), "test/return_episode_2", margin=3.9, improvement=4.2),
    # experiments/pearl_point_nav.yaml's SAC and collection values, small networks, horizon 40.
    # s0/1/2: -14.3/-20.1 -> 5.8, -16.4/-21.3 -> 4.9, -14.6/-20.7 -> 6.0; gain 20.0, 31.7,
    # 19.9 (the first meta-test follows 150 gradient steps on a few episodes, which throw the
    # policy off before it recovers). --pearl-lr 0 freezes every network too, with the same
    # meta-tests to the last digit, but takes the gradient steps: --pearl-gradient-steps 0 is
    # the same null at a third of the time.
    Case("pearl", ("--iterations", "8", "--horizon", "40", "--discount", "0.9",
                   "--meta-batch-size", "5", "--train-pool-size", "80", "--test-pool-size", "24",
                   "--episodes-per-task", "24", "--eval-adapt-steps", "2",
                   "--pearl-hidden-sizes", "32", "32", "--pearl-encoder-hidden-sizes", "32", "32",
                   "--pearl-gradient-steps", "150", "--pearl-lr", "0.003",
                   "--pearl-batch-size", "64", "--pearl-meta-batch", "4",
                   "--pearl-embedding-batch", "40", "--pearl-kl-lambda", "0.03",
                   "--pearl-reward-scale", "10", "--pearl-alpha", "0.1",
                   "--pearl-initial-episodes", "10", "--pearl-prior-episodes", "1",
                   "--pearl-posterior-episodes", "2", "--pearl-extra-posterior-episodes", "3"),
         ("--pearl-gradient-steps", "0"), "test/return_episode_3", margin=2.4, improvement=9.9),
]  # fmt: skip


def run_curve(argv: list[str], logdir: Path, name: str, tag: str) -> list[float]:
    """Train ``argv`` in-process; return ``tag`` of every meta-test, in iteration order.

    Leaves torch's thread count as it found it (``--torch-threads`` sets it process-wide).
    """
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = train_cli.main([*argv, "--logdir", str(logdir), "--run-name", name, "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, f"{name}: exit code {code}"
    with open(logdir / name / "progress.csv", newline="") as f:
        return [float(row[tag]) for row in csv.DictReader(f) if row.get(tag)]


def flag(argv: list[str], name: str) -> str:
    """The value the CLI reads for ``name``: its last occurrence in ``argv``."""
    return argv[len(argv) - argv[::-1].index(name)]


@pytest.mark.parametrize("case", CASES, ids=[c.algo for c in CASES])
def test_meta_training_beats_the_same_run_with_learning_switched_off(tmp_path, case):
    trained = run_curve(case.argv(), tmp_path, "trained", case.tag)
    null = run_curve(case.argv(null=True), tmp_path, "null", case.tag)
    assert len(trained) == len(null) == int(flag(case.argv(), "--iterations")), (trained, null)
    curves = f"trained {[round(v, 1) for v in trained]}, null {[round(v, 1) for v in null]}"
    assert trained[-1] > null[-1] + case.margin, f"{case.tag}: {curves}"
    assert trained[-1] > trained[0] + case.improvement, f"{case.tag}: {curves}"
