"""metarl.algos.maml: the bookkeeping mutation testing found unchecked (docs/testing.md).

``collect`` against a fake sampler whose batches are known, a rule that adds 1 to every
parameter per step and counts the states it is handed, a clock that ticks 1 s a read and
a reporter that records every call: what each sampler call is given, each summary of
``AdaptationData`` and each progress call are then fixed numbers.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from metarl.algos.base import ActorRun
from metarl.algos.maml import (
    AdaptationData,
    MAMLInnerLoop,
    iteration_result,
    process_batch,
    reinforce_loss,
    task_params,
    to_device,
)
from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes
from metarl.functional import expand_params, inner_gradients
from metarl.policies import GaussianMLPPolicy, MLPSpec
from metarl.progress import Reporter
from metarl.sampling import EpisodeBatch

T, E, H, D, A = 2, 2, 4, 2, 1
LENGTHS = [[H, H], [3, H]]  # task 1's first episode ends after 3 steps: 15 steps a call
STEPS_PER_CALL = 15
SUCCESS = [[0.0, 1.0], [1.0, 1.0]]  # per call k, success of episode e of task t is this * k


def batch_of_call(k: int) -> EpisodeBatch:
    """Call k's episodes: reward k + 1 on each real step, so returns [[4, 4], [3, 4]] * (k + 1)."""
    rng = np.random.default_rng(k)
    mask = (np.arange(H)[None, None, :] < np.array(LENGTHS)[..., None]).astype(float)
    rewards = (k + 1.0) * mask
    t64 = torch.float64
    return EpisodeBatch(
        observations=torch.tensor(rng.normal(size=(T, E, H, D)) * mask[..., None], dtype=t64),
        actions=torch.tensor(rng.normal(size=(T, E, H, A)) * mask[..., None], dtype=t64),
        rewards=torch.tensor(rewards, dtype=t64),
        log_probs=torch.zeros(T, E, H, dtype=t64),
        terminated=torch.zeros(T, E, H, dtype=torch.bool),
        mask=torch.tensor(mask, dtype=t64),
        lengths=torch.tensor(LENGTHS),
        returns=torch.tensor(rewards.sum(-1), dtype=t64),
        tasks=("a", "b"),
        episode_infos={"success": torch.tensor(SUCCESS, dtype=t64) * k},
    )


class FakeSampler:
    """Hands back ``batch_of_call(k)`` on its k-th call and records what it was given."""

    horizon = H

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sample(self, tasks, params, *, episodes_per_task, batch_key) -> EpisodeBatch:
        self.calls.append((tasks, params, episodes_per_task, batch_key))
        return batch_of_call(len(self.calls) - 1)


class CountingRule:
    """An inner rule that adds 1 to every parameter; each state it returns is its call count."""

    def __init__(self) -> None:
        self.states: list = []
        self.loaded: list = []

    def act_step(self, params, loss, state):
        self.states.append(state)
        return {k: v.detach() + 1.0 for k, v in params.items()}, len(self.states)

    def parameters(self) -> list:
        return []

    def stats(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        self.loaded.append(state)


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def phase(self, name: str) -> None:
        self.events.append(("phase", name))

    def steps(self, done: int, total: int) -> None:
        self.events.append(("steps", done, total))


def make_inner(inner_steps: int = 2):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(MLPSpec(D, A, (), "tanh")).double()
    sampler, rule = FakeSampler(), CountingRule()
    inner = MAMLInnerLoop(policy, sampler, rule, inner_steps=inner_steps, first_order=True,
                          discount=1.0, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    return inner, sampler, rule


@pytest.fixture
def ticking_clock(monkeypatch):
    """``time.perf_counter`` in metarl.algos.maml reads 0, 1, 2, ...: each timed span is 1 s."""
    ticks = iter(range(1000))
    monkeypatch.setattr(
        "metarl.algos.maml.time", types.SimpleNamespace(perf_counter=lambda: next(ticks))
    )


def test_collect_two_steps_summaries_and_sampler_calls(ticking_clock):
    inner, sampler, rule = make_inner(inner_steps=2)
    theta = {k: v.detach().numpy().copy() for k, v in inner.policy.params().items()}
    tasks = ["a", "b"]
    progress = RecordingReporter()
    data = inner.collect(tasks, episodes_per_task=E, batch_key=(5, "train"), progress=progress)

    assert [c[3] for c in sampler.calls] == [(5, "train", 0), (5, "train", 1), (5, "train", 2)]
    assert all(c[0] is tasks and c[2] == E for c in sampler.calls)
    assert rule.states == [None, 1]  # a fresh state, then the one the first step returned
    assert len(data.acting_params) == 3
    for k, (call, acted) in enumerate(zip(sampler.calls, data.acting_params)):
        assert call[1] is acted
        for name, value in theta.items():  # [T, ...]: every task at theta + k
            np.testing.assert_array_equal(acted[name], np.stack([value + k] * T))
    for name, value in theta.items():
        np.testing.assert_array_equal(data.old_params[name].numpy(), np.stack([value + 2] * T))
        assert not data.old_params[name].requires_grad

    # returns [[4, 4], [3, 4]] * (k + 1): mean 3.75 (k + 1); per task 4 and 3.5 (k + 1)
    assert data.returns_per_step == [3.75, 7.5, 11.25]
    expected = torch.tensor([[4.0, 3.5], [8.0, 7.0], [12.0, 10.5]], dtype=torch.float64)
    torch.testing.assert_close(data.per_task_returns, expected)
    assert data.infos_per_step == {"success": [0.0, 0.75, 1.5]}
    assert list(data.per_task_infos) == ["success"]
    expected = torch.tensor([[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(data.per_task_infos["success"], expected)
    torch.testing.assert_close(data.curve().returns, data.per_task_returns)
    assert data.curve().infos is data.per_task_infos

    assert data.env_steps == 3 * STEPS_PER_CALL
    assert (data.time_sampling, data.time_adaptation) == (3, 3)
    assert len(data.train) == 2 and data.valid.mean_return == 11.25
    assert [b.mean_return for b in data.train] == [3.75, 7.5]
    assert data.explained_variance == data.train[0].explained_variance

    per_call = T * E * H  # 16: a call's budget
    assert progress.events == [
        ("steps", 0, 3 * per_call),
        ("phase", "sampling"), ("steps", 15, 15 + 2 * per_call), ("phase", "adapting"),
        ("phase", "sampling"), ("steps", 30, 30 + per_call), ("phase", "adapting"),
        ("phase", "sampling"), ("steps", 45, 45), ("phase", "adapting"),
    ]  # fmt: skip


def test_collect_without_adapting_samples_once_and_validates_on_it():
    inner, sampler, rule = make_inner(inner_steps=2)
    data = inner.collect(["a", "b"], episodes_per_task=E, batch_key=(1,), adapt_steps=0)
    assert [c[3] for c in sampler.calls] == [(1, 0)] and rule.states == []
    assert data.train == [] and data.returns_per_step == [3.75]
    assert data.explained_variance == data.valid.explained_variance


def test_meta_test_is_the_curve_of_the_given_steps():
    inner, sampler, _ = make_inner(inner_steps=3)
    curve = inner.meta_test(["a", "b"], adapt_steps=1, episodes_per_task=E, batch_key=(9,))
    assert [c[2:] for c in sampler.calls] == [(E, (9, 0)), (E, (9, 1))]
    expected = torch.tensor([[4.0, 3.5], [8.0, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(curve.returns, expected)
    expected = torch.tensor([[0.0, 0.0], [0.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(curve.infos["success"], expected)


def test_adapted_actors_are_each_tasks_acting_policies():
    inner, sampler, _ = make_inner(inner_steps=3)
    runs = inner.adapted_actors(["a", "b"], adapt_steps=1, episodes_per_task=E, batch_key=(9,))
    assert [c[2:] for c in sampler.calls] == [(E, (9, 0)), (E, (9, 1))]
    assert len(runs) == T and all(len(per_task) == 2 for per_task in runs)
    for t in range(T):
        for k, run in enumerate(runs[t]):
            assert isinstance(run, ActorRun) and run.episodes == 1
            for name, value in sampler.calls[k][1].items():
                np.testing.assert_array_equal(run.actor.params[name], value[t : t + 1])


def test_task_params_keeps_the_task_axis():
    stacked = {"w": np.arange(6.0).reshape(3, 2)}
    np.testing.assert_array_equal(task_params(stacked, 1)["w"], [[2.0, 3.0]])


def test_load_state_dict_reaches_the_rule():
    inner, _, rule = make_inner()
    inner.load_state_dict({"alpha": 1})
    assert rule.loaded == [{"alpha": 1}]


def test_process_batch_means_over_tasks():
    """Constant rewards 1 and 2 for 5 steps, discount 1: returns to go 5 - t and 2 (5 - t),
    linear in the step feature, so the baseline explains each task (~1.0 each, mean ~1.0)."""
    n = 5
    mask = torch.ones(2, 1, n, dtype=torch.float64)
    rewards = torch.tensor([1.0, 2.0], dtype=torch.float64).view(2, 1, 1) * mask
    batch = EpisodeBatch(
        observations=torch.zeros(2, 1, n, 1, dtype=torch.float64), actions=torch.zeros(2, 1, n, 1),
        rewards=rewards, log_probs=torch.zeros(2, 1, n), terminated=torch.zeros(2, 1, n),
        mask=mask, lengths=torch.full((2, 1), n), returns=rewards.sum(-1), tasks=(0, 1),
    )  # fmt: skip
    out = process_batch(batch, discount=1.0, gae_lambda=1.0, device=torch.device("cpu"))
    assert out.mean_return == 7.5
    assert out.explained_variance == pytest.approx(1.0, abs=1e-3)  # the ridge shrinks it a little


def test_to_device_moves_to_the_device():
    """PyTorch's meta device stands in for an accelerator (no GPU needed)."""
    assert to_device(torch.ones(2), torch.device("meta")).device.type == "meta"


def test_iteration_result_carries_the_data_and_the_update():
    data = AdaptationData(train=[], valid=None, old_params={}, returns_per_step=[1.0, 2.0],
                          per_task_returns=torch.zeros(2, 1), env_steps=30, time_sampling=4.0,
                          time_adaptation=5.0, explained_variance=0.25,
                          infos_per_step={"success": [0.0, 0.5]})  # fmt: skip
    scalars = {"trpo/kl": 0.01}
    result = iteration_result(data, scalars, update_seconds=6.0, rejected=True, kl=0.01)
    assert result.returns_per_step == [1.0, 2.0] and result.env_steps == 30
    assert result.times == {"sampling": 4.0, "adaptation": 5.0, "update": 6.0}
    assert result.scalars == {"trpo/kl": 0.01, "baseline/explained_variance": 0.25}
    assert result.rejected is True and result.kl == 0.01
    assert result.infos_per_step == {"success": [0.0, 0.5]}


def test_adapted_params_keeps_learned_step_sizes_differentiable_with_create_graph():
    """Meta-SGD's replay: d(sum of the adapted log-std)/d alpha_log_std = -(the inner
    gradient summed over tasks) with create_graph; no gradient to alpha without it."""
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(MLPSpec(D, A, (), "tanh")).double()
    step_sizes = PerParameterStepSizes(policy, 0.1).double()
    inner = MAMLInnerLoop(policy, None, LearnedStepRule(step_sizes), inner_steps=1,
                          first_order=False, discount=1.0, gae_lambda=1.0,
                          device=torch.device("cpu"))  # fmt: skip
    train = [process_batch(batch_of_call(0), discount=1.0, gae_lambda=1.0,
                           device=torch.device("cpu"))]  # fmt: skip
    alpha = step_sizes.as_dict(detach=False)["log_std"]
    adapted = inner.adapted_params(train, create_graph=True)
    (d_alpha,) = torch.autograd.grad(adapted["log_std"].sum(), [alpha])
    grads = inner_gradients(expand_params(policy.params(), T), reinforce_loss(policy, train[0]),
                            create_graph=False)  # fmt: skip
    torch.testing.assert_close(d_alpha, -grads["log_std"].sum(0))
    assert bool(d_alpha.abs().min() > 0)
    adapted = inner.adapted_params(train, create_graph=False)
    assert torch.autograd.grad(adapted["log_std"].sum(), [alpha], allow_unused=True) == (None,)
