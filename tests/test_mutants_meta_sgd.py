"""metarl.algos.meta_sgd: the cases mutation testing found unchecked (docs/testing.md).

A linear policy with 2 x 1 weights, a bias and a log-std; alpha set entry by entry, and a
loss whose gradient is known, so each step is a fixed number.
"""

from __future__ import annotations

import pytest
import torch

from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes, learned_step_sizes
from metarl.configure import build_config
from metarl.functional import expand_params
from metarl.policies import GaussianMLPPolicy, MLPSpec


def make_rule() -> tuple[GaussianMLPPolicy, LearnedStepRule]:
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh")).double()
    step_sizes = PerParameterStepSizes(policy, 0.1).double()
    values = {"layers.0.weight": [0.1, 0.2], "layers.0.bias": [0.3], "log_std": [0.4]}
    with torch.no_grad():
        for name, alpha in step_sizes.as_dict(detach=False).items():
            alpha.copy_(torch.tensor(values[name], dtype=torch.float64).view_as(alpha))
    return policy, LearnedStepRule(step_sizes)


def linear_loss(params):
    """Sum of every entry times 1, 2, 3, ... in name order: a known, constant gradient."""
    total, k = 0.0, 1.0
    for name in sorted(params):
        value = params[name].reshape(params[name].shape[0], -1)
        weights = torch.arange(k, k + value.shape[1], dtype=value.dtype)
        total = total + (value * weights).sum(-1)
        k += value.shape[1]
    return total  # [T]


def test_step_sizes_start_at_init_and_report_mean_min_max():
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh"))
    step_sizes = PerParameterStepSizes(policy, 0.25)
    assert step_sizes.names == [name for name, _ in policy.named_parameters()]
    for alpha, p in zip(step_sizes.alpha, policy.parameters()):
        assert alpha.shape == p.shape and bool((alpha == 0.25).all())
    _, rule = make_rule()
    stats = rule.stats()
    assert stats["alpha/layers.0.weight/mean"] == pytest.approx(0.15)
    assert stats["alpha/layers.0.weight/min"] == pytest.approx(0.1)
    assert stats["alpha/layers.0.weight/max"] == pytest.approx(0.2)
    assert stats["alpha/log_std/mean"] == pytest.approx(0.4)
    assert len(stats) == 9


def test_as_dict_names_like_the_policy_and_detaches_on_request():
    _, rule = make_rule()
    live = rule.step_sizes.as_dict(detach=False)
    assert list(live) == rule.step_sizes.names
    assert all(a.requires_grad for a in live.values())
    assert not any(a.requires_grad for a in rule.step_sizes.as_dict(detach=True).values())


def test_act_step_is_theta_minus_alpha_times_gradient_as_constants():
    """Names sorted: layers.0.bias (gradient 1), layers.0.weight (2, 3), log_std (4)."""
    policy, rule = make_rule()
    params = expand_params({k: v.detach().requires_grad_() for k, v in policy.params().items()}, 1)
    new, state = rule.act_step(params, linear_loss, None)
    assert state is None
    for name, step in (("layers.0.bias", [0.3 * 1]), ("layers.0.weight", [0.1 * 2, 0.2 * 3]),
                       ("log_std", [0.4 * 4])):  # fmt: skip
        moved = (params[name] - new[name]).detach().reshape(-1)
        torch.testing.assert_close(moved, torch.tensor(step, dtype=torch.float64))
    alpha = list(rule.step_sizes.alpha)
    assert torch.autograd.grad(new["log_std"].sum(), alpha, allow_unused=True) == (None,) * 3


def test_replay_step_differentiates_alpha_only_with_create_graph():
    """d(sum of new log_std)/d alpha_log_std = -gradient = -4."""
    policy, rule = make_rule()
    params = expand_params(policy.params(), 1)
    new, _ = rule.replay_step(params, linear_loss, None, first_order=False, create_graph=True)
    alpha = rule.step_sizes.alpha[rule.step_sizes.names.index("log_std")]
    (grad,) = torch.autograd.grad(new["log_std"].sum(), [alpha])
    assert grad.tolist() == [-4.0]
    new, _ = rule.replay_step(params, linear_loss, None, first_order=False, create_graph=False)
    assert torch.autograd.grad(new["log_std"].sum(), [alpha], allow_unused=True) == (None,)


def test_rule_parameters_state_round_trip_and_config():
    policy, rule = make_rule()
    assert [id(p) for p in rule.parameters()] == [id(a) for a in rule.step_sizes.alpha]
    state = rule.state_dict()
    assert list(state) == ["step_sizes"]
    _, other = make_rule()
    with torch.no_grad():
        for a in other.step_sizes.alpha:
            a.zero_()
    other.load_state_dict(state)
    for a, b in zip(other.step_sizes.alpha, rule.step_sizes.alpha):
        assert torch.equal(a, b)
    config = build_config({"algo": "meta-sgd", "inner_lr": 0.07})
    built = learned_step_sizes(config, policy, torch.device("cpu"))
    assert all(bool((a == 0.07).all()) for a in built.step_sizes.alpha)
    assert built.step_sizes.names == rule.step_sizes.names


def test_act_step_is_first_order():
    """On sum(theta^2) (Hessian 2) a first-order step has d theta'/d theta = 1, where a
    second-order one would give 1 - 2 alpha = 0.2 for log_std's alpha of 0.4."""
    policy, rule = make_rule()
    params = expand_params({k: v.detach().requires_grad_() for k, v in policy.params().items()}, 1)

    def quadratic(p):
        return sum((v.reshape(1, -1) ** 2).sum(-1) for v in p.values())

    new, _ = rule.act_step(params, quadratic, None)
    (d,) = torch.autograd.grad(new["log_std"].sum(), [params["log_std"]])
    assert d.tolist() == [[1.0]]


def test_learned_step_sizes_go_to_the_device():
    """PyTorch's meta device stands in for an accelerator (no GPU needed)."""
    config = build_config({"algo": "meta-sgd"})
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh"))
    built = learned_step_sizes(config, policy, torch.device("meta"))
    assert {a.device.type for a in built.step_sizes.alpha} == {"meta"}


@pytest.mark.parametrize(("first_order", "expected"), [(True, 1.0), (False, 0.2)])
def test_replay_step_is_second_order_unless_first_order(first_order, expected):
    """On sum(theta^2): d theta'/d theta = 1 - 2 alpha = 0.2 for log_std's alpha of 0.4,
    or 1 when the inner gradient is a constant."""
    policy, rule = make_rule()
    params = expand_params(policy.params(), 1)

    def quadratic(p):
        return sum((v.reshape(1, -1) ** 2).sum(-1) for v in p.values())

    new, _ = rule.replay_step(params, quadratic, None, first_order=first_order, create_graph=True)
    (d,) = torch.autograd.grad(new["log_std"].sum(), [policy.log_std])
    assert d.tolist() == pytest.approx([expected])
