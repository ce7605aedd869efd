"""metarl.algos.maml_ppo: the cases mutation testing found unchecked (docs/testing.md).

Two tasks of three validation steps whose old policies are the adapted ones, so every
ratio starts at 1 and the first epoch's numbers are fixed by the advantages alone.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from finite_differences import fd_gradient

from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch
from metarl.algos.maml_ppo import PPOUpdate, build_ppo_update
from metarl.configure import build_config
from metarl.functional import batched_log_prob, masked_mean
from metarl.policies import GaussianMLPPolicy, MLPSpec

T, N = 2, 3
ADVANTAGES = [[1.0, 2.0, 3.0], [0.5, -0.5, 7.0]]  # task 1's last step is padding
MEAN_ADVANTAGE = 1.0  # (mean(1, 2, 3) + mean(0.5, -0.5)) / 2


def batch(seed: int, advantages=ADVANTAGES) -> ProcessedBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return ProcessedBatch(
        observations=torch.randn(T, N, 2, generator=g, dtype=torch.float64),
        actions=torch.randn(T, N, 1, generator=g, dtype=torch.float64),
        mask=mask, advantages=torch.tensor(advantages, dtype=torch.float64) * mask,
        mean_return=0.0, explained_variance=0.0,
    )  # fmt: skip


def setup(*, epochs: int = 1, clip: float = 0.2, lr: float = 0.01, **kwargs):
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(MLPSpec(2, 1, (), "tanh")).double()
    inner = MAMLInnerLoop(policy, None, SGDRule(0.5), inner_steps=1, first_order=False,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    train = [batch(0)]
    old = {k: v.detach() for k, v in inner.adapted_params(train, create_graph=False).items()}
    data = AdaptationData(train=train, valid=batch(1), old_params=old, returns_per_step=[0.0, 0.0],
                          per_task_returns=torch.zeros(2, T), env_steps=0)  # fmt: skip
    update = PPOUpdate(inner, epochs=epochs, clip=clip, lr=lr, **kwargs)
    return policy, update, data


def params_of(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters()]


def test_one_epoch_reports_the_ratio_one_numbers_and_takes_one_adam_step():
    policy, update, data = setup(epochs=1, lr=0.01)
    before = params_of(policy)
    stats = update.update(data)
    assert stats == {
        "ppo/early_stop": 0.0, "ppo/lr": 0.01, "ppo/approx_kl": 0.0,
        "loss/surrogate_before": pytest.approx(-MEAN_ADVANTAGE),
        "loss/surrogate_after": pytest.approx(-MEAN_ADVANTAGE), "ppo/clip_fraction": 0.0,
    }  # fmt: skip
    # Adam's first step moves every entry with a gradient by lr (m / sqrt(v) = sign(g)).
    for b, a in zip(before, policy.parameters()):
        torch.testing.assert_close((b - a).abs(), torch.full_like(b, 0.01), rtol=1e-6, atol=0)


def test_later_epochs_report_their_own_kl_loss_and_clip_fraction():
    """Epoch 2 starts away from the old policies: a positive KL, a lower loss; a clip of
    1e-6 then counts every real step as clipped."""
    _, update, data = setup(epochs=2, clip=1e-6, lr=0.05)
    stats = update.update(data)
    assert stats["ppo/approx_kl"] > 0.0
    assert stats["loss/surrogate_before"] == pytest.approx(-MEAN_ADVANTAGE)
    assert stats["loss/surrogate_after"] != pytest.approx(-MEAN_ADVANTAGE)
    assert stats["ppo/clip_fraction"] == 1.0


def test_early_stop_before_the_step_past_the_target_kl():
    """Epoch 1 (KL 0) steps; epoch 2 measures a KL past 1.5 x 1e-12 and stops before stepping:
    the reported surrogate is still epoch 1's, the KL is epoch 2's."""
    policy, update, data = setup(epochs=3, lr=0.05, target_kl=1e-12)
    stats = update.update(data)
    assert stats["ppo/early_stop"] == 1.0 and stats["ppo/approx_kl"] > 1.5e-12
    assert stats["loss/surrogate_after"] == pytest.approx(-MEAN_ADVANTAGE)
    # one Adam step only: every entry moved by lr
    _, fresh, _ = setup(epochs=1, lr=0.05)
    fresh.update(data)
    for a, b in zip(policy.parameters(), fresh.policy.parameters()):
        torch.testing.assert_close(a, b)


def test_annealed_rate_is_set_and_reported():
    """Iteration 1 of a 4-iteration anneal: 0.04 * (1 - 1/4) = 0.03."""
    _, update, data = setup(lr=0.04, lr_anneal_iterations=4)
    stats = update.update(data, iteration=1)
    assert stats["ppo/lr"] == pytest.approx(0.03)
    assert update.optimizer.param_groups[0]["lr"] == pytest.approx(0.03)


def test_a_non_finite_epoch_restores_the_parameters_and_adams_state():
    policy, update, data = setup(epochs=2)
    update.update(data)  # Adam now has moments to restore
    before, adam = params_of(policy), copy.deepcopy(update.optimizer.state_dict())
    bad = setup()[2]
    bad.valid = batch(1, [[float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert update.update(bad) == {"ppo/rejected_nonfinite": 1.0}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    after = update.optimizer.state_dict()["state"]
    for key, moments in adam["state"].items():
        for name, value in moments.items():
            assert torch.equal(after[key][name], value)
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())


def test_state_dict_round_trip_restores_adam():
    _, update, data = setup(epochs=2)
    update.update(data)
    state = update.state_dict()
    assert list(state) == ["optimizer"]
    _, other, _ = setup()
    other.load_state_dict(state)
    assert other.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    assert (
        other.optimizer.state_dict()["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    )


def test_build_ppo_update_takes_every_key_of_the_config():
    config = build_config({
        "algo": "maml-ppo", "ppo_epochs": 3, "ppo_clip": 0.1, "ppo_lr": 0.002,
        "ppo_target_kl": 0.05, "ppo_lr_anneal": True, "iterations": 17,
    })  # fmt: skip
    policy, *_ = setup()
    inner = MAMLInnerLoop(policy, None, SGDRule(0.5), inner_steps=1, first_order=False,
                          discount=0.99, gae_lambda=1.0, device=torch.device("cpu"))  # fmt: skip
    update = build_ppo_update(config, inner)
    assert update.inner is inner and update.policy is policy
    got = (update.epochs, update.clip, update.lr, update.target_kl, update.lr_anneal_iterations)
    assert got == (3, 0.1, 0.002, 0.05, 17)
    assert update.optimizer.param_groups[0]["lr"] == 0.002


def test_defaults_never_stop_early_keep_the_rate_and_start_at_iteration_0():
    _, update, data = setup(lr=0.04)
    assert (update.target_kl, update.lr_anneal_iterations) == (0.0, 0)
    assert update.optimizer.param_groups[0]["lr"] == 0.04
    _, update, data = setup(lr=0.04, lr_anneal_iterations=4)
    assert update.update(data)["ppo/lr"] == pytest.approx(0.04)  # iteration 0 by default


def test_a_later_blow_up_restores_adams_moments_from_before_the_update():
    """Epoch 1 steps (Adam's moments change in place), then the weights turn NaN: the
    rejection must bring back the moments as they were before the update, not the stepped
    ones (a shallow copy of the state would share their tensors)."""
    policy, update, data = setup(epochs=2)
    update.update(data)  # moments to keep
    before, adam = params_of(policy), copy.deepcopy(update.optimizer.state_dict())
    real_step = update.optimizer.step

    def step_then_blow_up():
        real_step()
        with torch.no_grad():
            policy.log_std.fill_(float("nan"))

    update.optimizer.step = step_then_blow_up
    assert update.update(data) == {"ppo/rejected_nonfinite": 1.0}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    after = update.optimizer.state_dict()["state"]
    for key, moments in adam["state"].items():
        for name, value in moments.items():
            assert torch.equal(after[key][name], value), (key, name)


def test_a_finite_loss_with_a_non_finite_gradient_is_rejected():
    """A hook turns log_std's gradient to inf while the loss stays finite."""
    policy, update, data = setup()
    policy.log_std.register_hook(lambda grad: grad * float("inf"))
    before = params_of(policy)
    assert update.update(data) == {"ppo/rejected_nonfinite": 1.0}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_the_gradient_is_the_second_order_meta_gradient():
    """After one epoch each parameter's .grad is the gradient of the clipped surrogate through
    the inner step (ratio 1 is inside the clip), against central finite differences."""
    policy, update, data = setup(epochs=1)
    theta0 = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().clone()
    old = data.old_params

    def surrogate(theta: np.ndarray) -> float:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.tensor(theta), policy.parameters())
        adapted = update.inner.adapted_params(data.train, create_graph=False)
        valid = data.valid
        ratio = torch.exp(
            batched_log_prob(policy.spec, adapted, valid.observations, valid.actions)
            - batched_log_prob(policy.spec, old, valid.observations, valid.actions)
        )
        return float(-masked_mean(ratio * valid.advantages, valid.mask).mean().detach())

    expected = fd_gradient(surrogate, theta0.numpy())
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(theta0, policy.parameters())
    update.update(data)
    grad = torch.cat([p.grad.reshape(-1) for p in policy.parameters()]).numpy()
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)
