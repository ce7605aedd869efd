"""Reptile and Meta-SGD: their maths against hand-worked answers, and the CLI.

Their learning tests, each against a run with learning switched off, are in test_learning.py.
"""

from __future__ import annotations

import pytest
import torch

from metarl import train as train_cli
from metarl.algos.gradient_family import GradientLearner, SGDRule
from metarl.algos.maml import MAMLInnerLoop, reinforce_loss
from metarl.algos.maml_trpo import OldPolicy, TRPOUpdate
from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes
from metarl.algos.reptile import AdamRule, ReptileUpdate, reptile_step
from metarl.config import ConfigError
from metarl.configure import build_config
from metarl.functional import adam_adapt, adapt, expand_params
from metarl.sampling import EpisodeBatch
from tests.test_maml import T, adaptation_data, fake_batch, make_policy
from tests.test_train_cli import scalars

H = 6  # steps per fake episode


class FakeSampler:
    """Episodes that depend only on the adaptation step k (the batch key's last entry), not on
    the parameters, so an update can be worked out by hand; ``same_data`` gives every task
    the same episodes."""

    horizon = H

    def __init__(self, *, same_data: bool = False) -> None:
        self.same_data = same_data

    def sample(self, tasks, params, *, episodes_per_task, batch_key) -> EpisodeBatch:
        g = torch.Generator().manual_seed(1000 + batch_key[-1])
        n_tasks = 1 if self.same_data else len(tasks)
        shape = (n_tasks, episodes_per_task, H)
        obs = torch.randn(*shape, 2, generator=g).expand(len(tasks), -1, -1, -1)
        actions = torch.randn(*shape, 2, generator=g).expand(len(tasks), -1, -1, -1)
        rewards = torch.randn(*shape, generator=g).expand(len(tasks), -1, -1)
        mask = torch.ones(len(tasks), episodes_per_task, H)
        return EpisodeBatch(
            observations=obs.contiguous(), actions=actions.contiguous(),
            rewards=rewards.contiguous(), log_probs=torch.zeros_like(mask),
            terminated=torch.zeros_like(mask, dtype=torch.bool), mask=mask,
            lengths=torch.full((len(tasks), episodes_per_task), H), returns=rewards.sum(-1),
            tasks=tuple(tasks),
        )  # fmt: skip


def reptile(*, inner_steps: int, outer_lr: float, sampler=None, optimizer: str = "sgd"):
    policy = make_policy().float()
    rule = AdamRule(0.3) if optimizer == "adam" else SGDRule(0.3)
    inner = MAMLInnerLoop(
        policy, sampler or FakeSampler(), rule, inner_steps=inner_steps, first_order=True,
        discount=0.99, gae_lambda=1.0, device=torch.device("cpu"),
    )  # fmt: skip
    outer = ReptileUpdate(inner, outer_lr=outer_lr, outer_lr_anneal_iterations=0)
    learner = GradientLearner("reptile", inner, outer, episodes_per_task=2)
    return learner, policy


def theta_of(policy) -> dict[str, torch.Tensor]:
    """A copy of the policy's parameters, as leaves an inner step can differentiate."""
    return {k: v.detach().clone().requires_grad_() for k, v in policy.params().items()}


def test_reptile_with_one_sgd_step_and_epsilon_1_is_the_mean_inner_step():
    learner, policy = reptile(inner_steps=1, outer_lr=1.0)
    theta = theta_of(policy)
    tasks = list(range(T))
    result = learner.train_iteration(tasks, 0)
    # by hand: every task's one gradient step on the step-0 episodes, then their mean
    data = learner.inner._process(FakeSampler().sample(tasks, None, episodes_per_task=2,
                                                       batch_key=(0, "train", 0)))  # fmt: skip
    phis = adapt(expand_params(theta, T), reinforce_loss(policy, data), lr=0.3, first_order=True)
    for k, value in policy.params().items():
        expected = phis[k].mean(0)
        assert torch.allclose(value, expected, atol=1e-6), k
        assert not torch.allclose(value, theta[k])  # it moved
    assert result.rejected is False and len(result.returns_per_step) == 2
    assert result.scalars["reptile/outer_lr"] == 1.0


def test_reptile_with_the_same_data_for_every_task_moves_by_that_tasks_step():
    learner, policy = reptile(inner_steps=2, outer_lr=0.5, sampler=FakeSampler(same_data=True))
    theta = theta_of(policy)
    learner.train_iteration([0, 1, 2], 0)
    # one task's own two steps, by hand
    one = learner.inner
    phi = expand_params(theta, 1)
    for k in range(2):
        batch = FakeSampler(same_data=True).sample([0], None, episodes_per_task=2,
                                                   batch_key=(0, "train", k))  # fmt: skip
        phi = adapt(phi, reinforce_loss(policy, one._process(batch)), lr=0.3, first_order=True)
    for k, value in policy.params().items():
        assert torch.allclose(value, theta[k] + 0.5 * (phi[k][0] - theta[k]), atol=1e-6), k


def test_reptile_step_is_theta_plus_epsilon_times_the_mean_difference():
    theta = {"w": torch.tensor([1.0, 2.0])}
    adapted = {"w": torch.tensor([[3.0, 2.0], [1.0, 6.0]])}  # two tasks
    new = reptile_step(theta, adapted, 0.5)
    assert torch.equal(new["w"], torch.tensor([1.5, 3.0]))  # mean diff [1, 2], half of it


def test_adam_inner_step_first_step_is_lr_times_the_gradient_sign():
    policy = make_policy()
    params = expand_params(theta_of(policy), T)
    data = fake_batch(3)
    new, state = adam_adapt(params, reinforce_loss(policy, data), lr=0.01, state=None)
    sgd = adapt(params, reinforce_loss(policy, data), lr=1.0, first_order=True)  # theta - g
    for k in params:
        g = params[k] - sgd[k]
        expected = params[k] - 0.01 * g / (g.abs() + 1e-8)  # m_hat / sqrt(v_hat) = g / |g|
        assert torch.allclose(new[k], expected, atol=1e-9), k
    assert state.steps == 1
    again, state = adam_adapt(new, reinforce_loss(policy, data), lr=0.01, state=state)
    assert state.steps == 2 and not torch.allclose(again["log_std"], new["log_std"])


def test_meta_sgd_with_alpha_frozen_at_inner_lr_adapts_exactly_as_maml():
    policy = make_policy()
    maml = MAMLInnerLoop(policy, None, SGDRule(0.5), inner_steps=2, first_order=False,
                         discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    alpha = PerParameterStepSizes(policy, 0.5).double()
    meta_sgd = MAMLInnerLoop(policy, None, LearnedStepRule(alpha), inner_steps=2,
                             first_order=False, discount=0.99, gae_lambda=1.0,
                             device=torch.device("cpu"))  # fmt: skip
    train = [fake_batch(1), fake_batch(2)]
    a, b = maml.adapted_params(train), meta_sgd.adapted_params(train)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-12), k
    # and the meta-gradient w.r.t. theta is MAML's
    grads = [torch.autograd.grad(p["log_std"].sum() + p["layers.0.weight"].pow(2).sum(),
                                 list(policy.parameters())) for p in (a, b)]  # fmt: skip
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, atol=1e-12)
    assert len(meta_sgd.meta_parameters()) == 2 * len(list(policy.parameters()))


def test_meta_sgd_alpha_gradient_matches_finite_differences():
    """d/d alpha of the TRPO surrogate after adaptation, against central differences."""
    policy = make_policy()
    alpha = PerParameterStepSizes(policy, 0.3).double()
    with torch.no_grad():  # distinct step sizes per entry
        for a in alpha.alpha:
            a.add_(0.1 * torch.rand_like(a))
    inner = MAMLInnerLoop(policy, None, LearnedStepRule(alpha), inner_steps=1,
                          first_order=False, discount=0.99, gae_lambda=1.0,
                          device=torch.device("cpu"))  # fmt: skip
    data = adaptation_data(policy, inner)
    update = TRPOUpdate(inner, max_kl=0.01, cg_iters=5, cg_damping=1e-5, ls_max_backtracks=5,
                        ls_backtrack_ratio=0.8)  # fmt: skip
    old = OldPolicy.of(policy.spec, data)

    def surrogate() -> torch.Tensor:
        return update._surrogate_and_kl(data, old, create_graph=True)[0]

    target = alpha.alpha[alpha.names.index("layers.0.weight")]
    (grad,) = torch.autograd.grad(surrogate(), [target])
    eps = 1e-6
    for index in [(0, 0), (2, 1), (4, 0)]:
        with torch.no_grad():
            target[index] += eps
        up = float(surrogate())
        with torch.no_grad():
            target[index] -= 2 * eps
        down = float(surrogate())
        with torch.no_grad():
            target[index] += eps
        assert grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "reptile", "inner_steps": 2}, "'inner_steps' is not read by reptile"),
        (
            {"algo": "reptile", "inner_first_order": True},
            "'inner_first_order' is not read by reptile",
        ),
        ({"algo": "reptile", "reptile_inner_optimizer": "rmsprop"}, "is not one of: sgd, adam"),
        ({"algo": "reptile", "reptile_outer_lr": -1}, "'reptile_outer_lr': -1.0 is below"),
        ({"algo": "meta-sgd", "outer": "sgd"}, "'outer': 'sgd' is not an outer update of"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(overrides)


TINY = ["--env", "point-nav", "--iterations", "2", "--meta-batch-size", "3",
        "--episodes-per-task", "2", "--horizon", "10", "--hidden-sizes", "8", "--workers", "0",
        "--eval-every", "2", "--eval-adapt-steps", "2", "--test-pool-size", "3",
        "--checkpoint-every", "1"]  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "extra"),
    [("reptile", ["--reptile-inner-steps", "2"]),
     ("reptile", ["--reptile-inner-optimizer", "adam", "--inner-lr", "0.01"]),
     ("meta-sgd", []), ("meta-sgd", ["--outer", "ppo"])],
)  # fmt: skip
def test_cli_smoke_run_writes_the_adaptation_tags_and_resumes_exactly(tmp_path, algo, extra):
    from metarl.checkpoint import load_checkpoint, periodic_checkpoints

    args = [*TINY, "--algo", algo, *extra, "--logdir", str(tmp_path)]
    assert train_cli.main([*args, "--run-name", "full"]) == 0
    tags = scalars(tmp_path / "full")
    assert "adapt/return_step_1" in tags and "test/return_step_2" in tags
    if algo == "meta-sgd":
        assert "alpha/layers.0.weight/mean" in tags and "alpha/log_std/max" in tags
        assert "step_sizes" in load_checkpoint(periodic_checkpoints(tmp_path / "full")[-1])[
            "learner"]["inner"]  # fmt: skip
    else:
        assert "reptile/step_norm" in tags
    # stopped after iteration 1 and resumed: the same parameters as the uninterrupted run
    assert train_cli.main([*args, "--run-name", "part", "--iterations", "1"]) == 0
    assert train_cli.main(["--resume", str(tmp_path / "part"), "--iterations", "2"]) == 0
    full = load_checkpoint(periodic_checkpoints(tmp_path / "full")[-1])["learner"]
    part = load_checkpoint(periodic_checkpoints(tmp_path / "part")[-1])["learner"]
    for k, v in full["policy"].items():
        assert torch.equal(v, part["policy"][k]), k


# Whether Reptile and Meta-SGD learn: tests/test_learning.py, each against the same run with
# its outer step switched off (--reptile-outer-lr 0, --trpo-max-kl 0).
