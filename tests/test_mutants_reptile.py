"""metarl.algos.reptile: the cases mutation testing found unchecked (docs/testing.md)."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop
from metarl.algos.reptile import (
    AdamRule,
    ReptileUpdate,
    build_reptile_update,
    reptile_rule,
    reptile_step,
)
from metarl.configure import build_config
from metarl.functional import adam_adapt
from metarl.policies import GaussianMLPPolicy, MLPSpec


def test_reptile_step_by_hand():
    """theta 1, tasks at 2 and 5: 1 + 0.5 * mean(1, 4) = 2.25."""
    theta = {"w": torch.tensor([1.0])}
    adapted = {"w": torch.tensor([[2.0], [5.0]])}
    assert reptile_step(theta, adapted, 0.5)["w"].tolist() == [2.25]


def make(outer_lr: float = 0.5, anneal: int = 0):
    policy = GaussianMLPPolicy(MLPSpec(1, 1, (), "tanh")).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.fill_(1.0)
    inner = MAMLInnerLoop(policy, None, SGDRule(0.1), inner_steps=1, first_order=True,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    return policy, ReptileUpdate(inner, outer_lr=outer_lr, outer_lr_anneal_iterations=anneal)


def data_at(value: float) -> AdaptationData:
    """Two tasks adapted to every parameter at ``value`` and at 1 (no move)."""
    old = {name: torch.tensor([[value], [1.0]], dtype=torch.float64)
           for name in ("layers.0.weight", "layers.0.bias", "log_std")}  # fmt: skip
    old["layers.0.weight"] = old["layers.0.weight"].view(2, 1, 1)
    return AdaptationData(train=[], valid=None, old_params=old, returns_per_step=[0.0],
                          per_task_returns=torch.zeros(1, 2), env_steps=0)  # fmt: skip


def test_update_moves_every_parameter_and_reports_the_step():
    """Parameters at 1, tasks at 9 and 1, epsilon 0.5: each moves 0.5 * 4 = 2 to 3; three
    entries, so the step norm is sqrt(3 * 2^2) = sqrt(12)."""
    policy, update = make(outer_lr=0.5)
    scalars = update.update(data_at(9.0), iteration=0)
    assert scalars == {"reptile/outer_lr": 0.5, "reptile/step_norm": pytest.approx(math.sqrt(12))}
    assert all(p.tolist() in ([3.0], [[3.0]]) for p in policy.parameters())


def test_annealed_epsilon_and_a_non_finite_step_left_out():
    """Iteration 2 of 4: epsilon 0.8 * (1 - 2/4) = 0.4."""
    policy, update = make(outer_lr=0.8, anneal=4)
    assert update.update(data_at(5.0), iteration=2)["reptile/outer_lr"] == pytest.approx(0.4)
    before = [p.detach().clone() for p in policy.parameters()]
    scalars = update.update(data_at(float("nan")), iteration=0)
    assert scalars["reptile/rejected_nonfinite"] == 1.0 and math.isnan(scalars["reptile/step_norm"])
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert update.state_dict() == {}


@pytest.mark.parametrize(("anneal", "expected"), [(True, 12), (False, 0)])
def test_build_reptile_update_reads_its_keys(anneal, expected):
    config = build_config({"algo": "reptile", "reptile_outer_lr": 0.3, "iterations": 12,
                           "reptile_outer_lr_anneal": anneal})  # fmt: skip
    policy, _ = make()
    inner = MAMLInnerLoop(policy, None, SGDRule(0.1), inner_steps=1, first_order=True,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    update = build_reptile_update(config, inner)
    assert (update.policy, update.outer_lr) == (policy, 0.3)
    assert update.outer_lr_anneal_iterations == expected


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reptile_rule_is_the_chosen_optimizer_at_inner_lr(optimizer):
    config = build_config({"algo": "reptile", "inner_lr": 0.07,
                           "reptile_inner_optimizer": optimizer})  # fmt: skip
    rule = reptile_rule(config, None, torch.device("cpu"))
    assert type(rule) is (AdamRule if optimizer == "adam" else SGDRule) and rule.lr == 0.07


def test_adam_rule_is_adam_adapt_with_its_state():
    params = {"w": torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)}

    def loss(p):
        return (p["w"] ** 2).sum(-1)

    new, state = AdamRule(0.1).act_step(params, loss, None)
    expected, expected_state = adam_adapt(params, loss, lr=0.1, state=None)
    assert torch.equal(new["w"], expected["w"]) and state.steps == expected_state.steps == 1
    again, state = AdamRule(0.1).act_step(new, loss, state)
    assert state.steps == 2
