"""Analytic tests of the MAML maths: functional policy, per-task adaptation, meta-gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch, reinforce_loss
from metarl.algos.maml_ppo import PPOUpdate
from metarl.algos.maml_trpo import OldPolicy, TRPOUpdate
from metarl.functional import (
    adapt,
    batched_kl,
    batched_log_prob,
    batched_mean,
    expand_params,
    masked_mean,
)
from metarl.optim import make_hvp
from metarl.policies import GaussianMLPPolicy, MLPSpec, gaussian_mlp

T, N = 3, 12


def make_policy(activation: str = "tanh") -> GaussianMLPPolicy:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(MLPSpec(2, 2, (5,), activation), init_log_std=-0.3).double()
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.2], dtype=torch.float64))
    return policy


def fake_batch(seed: int) -> ProcessedBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(T, N, dtype=torch.float64)
    mask[1, 9:] = 0.0  # a shorter episode in task 1
    return ProcessedBatch(
        observations=torch.randn(T, N, 2, generator=g, dtype=torch.float64),
        actions=torch.randn(T, N, 2, generator=g, dtype=torch.float64),
        mask=mask,
        advantages=torch.randn(T, N, generator=g, dtype=torch.float64) * mask,
        mean_return=0.0,
        explained_variance=0.0,
    )


def inner_loop(
    policy: GaussianMLPPolicy, *, first_order: bool, steps: int = 1, lr: float = 0.5
) -> MAMLInnerLoop:
    return MAMLInnerLoop(
        policy,
        None,
        SGDRule(lr),
        inner_steps=steps,
        first_order=first_order,
        discount=0.99,
        gae_lambda=1.0,
        device=torch.device("cpu"),
    )


def test_batched_mean_and_log_prob_match_the_module():
    policy = make_policy("relu")
    obs, actions = torch.randn(T, N, 2, dtype=torch.float64), torch.randn(T, N, 2).double()
    params = expand_params(policy.params(), T)
    mean, _ = policy(obs)
    assert torch.allclose(batched_mean(policy.spec, params, obs), mean)
    expected = policy.log_prob(obs, actions)
    assert torch.allclose(batched_log_prob(policy.spec, params, obs, actions), expected)
    assert torch.allclose(expected, policy.distribution(obs).log_prob(actions).sum(-1), atol=1e-12)


def test_xavier_init_draws_xavier_uniform_weights_and_zero_biases():
    torch.manual_seed(0)
    spec = MLPSpec(17, 6, (100, 100), "relu")
    xavier, default = GaussianMLPPolicy(spec, weight_init="xavier"), GaussianMLPPolicy(spec)
    for layer, layer_default in zip(xavier.layers, default.layers):
        fan_out, fan_in = layer.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert torch.all(layer.bias == 0) and layer.weight.abs().max() <= bound
        # Uniform on [-bound, bound]: the std is bound / sqrt(3) (within 10% at >= 600 draws).
        assert abs(layer.weight.std().item() * 3**0.5 / bound - 1) < 0.1
        # torch's default: weights and biases within 1 / sqrt(fan_in), biases not zero.
        assert layer_default.weight.abs().max() <= fan_in**-0.5
        assert torch.any(layer_default.bias != 0)
    with pytest.raises(ValueError, match="weight_init must be"):
        GaussianMLPPolicy(spec, weight_init="he")
    choices = gaussian_mlp.MLPPolicyOptions.__dataclass_fields__["weight_init"].metadata
    assert choices["choices"] == gaussian_mlp.WEIGHT_INITS  # the key's choices are the policy's


def test_batched_kl_matches_torch_distributions():
    policy, other = make_policy(), make_policy()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs = torch.randn(T, N, 2, dtype=torch.float64)
    ours = batched_kl(
        policy.spec, expand_params(policy.params(), T), expand_params(other.params(), T), obs
    )
    expected = torch.distributions.kl_divergence(
        policy.distribution(obs), other.distribution(obs)
    ).sum(-1)
    assert torch.allclose(ours, expected, atol=1e-12)


def test_adapt_gives_each_task_its_own_gradient_and_leaves_the_module_alone():
    policy = make_policy()
    before = copy.deepcopy(policy.state_dict())
    data = fake_batch(1)
    adapted = adapt(
        expand_params(policy.params(), T), reinforce_loss(policy, data), lr=0.5, first_order=True
    )
    for t in range(T):
        single = {k: v.detach().clone().requires_grad_() for k, v in policy.params().items()}
        log_probs = policy.log_prob(data.observations[t], data.actions[t], single)
        loss = -(log_probs * data.advantages[t] * data.mask[t]).sum() / data.mask[t].sum()
        grads = torch.autograd.grad(loss, list(single.values()))
        for (name, value), grad in zip(single.items(), grads):
            assert torch.allclose(adapted[name][t], value - 0.5 * grad, atol=1e-12), name
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name])


def meta_objective(policy, inner, train, valid, old_log_probs) -> torch.Tensor:
    adapted = inner.adapted_params(train)
    log_probs = batched_log_prob(policy.spec, adapted, valid.observations, valid.actions)
    return -masked_mean(torch.exp(log_probs - old_log_probs) * valid.advantages, valid.mask).mean()


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(steps):
    policy = make_policy()
    inner = inner_loop(policy, first_order=False, steps=steps)
    train = [fake_batch(10 + k) for k in range(steps)]
    valid = fake_batch(99)
    old = torch.zeros(T, N, dtype=torch.float64)
    params = list(policy.parameters())
    grads = torch.autograd.grad(meta_objective(policy, inner, train, valid, old), params)
    flat = torch.cat([g.reshape(-1) for g in grads])

    direction = torch.randn(flat.numel(), generator=torch.Generator().manual_seed(3)).double()
    eps = 1e-6
    base = torch.nn.utils.parameters_to_vector(params).detach().clone()
    values = []
    for sign in (1.0, -1.0):
        torch.nn.utils.vector_to_parameters(base + sign * eps * direction, params)
        with torch.enable_grad():
            values.append(float(meta_objective(policy, inner, train, valid, old).detach()))
    torch.nn.utils.vector_to_parameters(base, params)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert numeric == pytest.approx(float(flat @ direction), rel=1e-5, abs=1e-8)


def test_first_order_meta_gradient_differs_from_second_order():
    train, valid = [fake_batch(5)], fake_batch(6)
    old = torch.zeros(T, N, dtype=torch.float64)
    flats = {}
    for first_order in (False, True):
        policy = make_policy()
        inner = inner_loop(policy, first_order=first_order)
        grads = torch.autograd.grad(
            meta_objective(policy, inner, train, valid, old), list(policy.parameters())
        )
        flats[first_order] = torch.cat([g.reshape(-1) for g in grads])
    # Same post-adaptation point, so the first-order gradient is the second-order one
    # without the inner Hessian term: close but not equal.
    diff = (flats[True] - flats[False]).norm() / flats[False].norm()
    assert 1e-4 < diff < 1.0


def adaptation_data(policy, inner) -> AdaptationData:
    train, valid = [fake_batch(7)], fake_batch(8)
    old = {k: v.detach() for k, v in inner.adapted_params(train).items()}
    return AdaptationData(
        train=train,
        valid=valid,
        old_params=old,
        returns_per_step=[0.0, 0.0],
        per_task_returns=torch.zeros(2, T),
        env_steps=0,
    )


def test_trpo_update_improves_the_surrogate_within_the_kl_bound():
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    data = adaptation_data(policy, inner)
    before = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().clone()
    update = TRPOUpdate(
        inner,
        max_kl=0.01,
        cg_iters=10,
        cg_damping=1e-5,
        ls_max_backtracks=15,
        ls_backtrack_ratio=0.5,
    )
    stats = update.update(data)
    assert stats["trpo/linesearch_accepted"] == 1.0
    assert stats["loss/surrogate_after"] < stats["loss/surrogate_before"]
    assert 0.0 < stats["trpo/kl"] <= 0.01
    after = torch.nn.utils.parameters_to_vector(policy.parameters()).detach()
    assert not torch.equal(before, after)


def test_ppo_update_lowers_the_clipped_surrogate():
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    data = adaptation_data(policy, inner)
    stats = PPOUpdate(inner, epochs=5, clip=0.2, lr=1e-2).update(data)
    assert stats["loss/surrogate_after"] < stats["loss/surrogate_before"]
    assert stats["ppo/approx_kl"] > 0.0  # the policy moved


def fisher_vector_product(
    inner: MAMLInnerLoop, data: AdaptationData, *, fisher: str, fisher_subsample: float = 1.0
):
    """An undamped TRPO update on ``data``, its old policies and its ``v -> F v``."""
    update = TRPOUpdate(
        inner, max_kl=0.01, cg_iters=10, cg_damping=0.0, ls_max_backtracks=15,
        ls_backtrack_ratio=0.8, fisher=fisher, fisher_subsample=fisher_subsample,
    )  # fmt: skip
    old = OldPolicy.of(inner.policy.spec, data)
    _, kl = update._surrogate_and_kl(data, old, create_graph=True)
    params = list(inner.policy.parameters())
    return update, old, make_hvp(fisher_kl(update, data, kl), params, damping=0.0)


def fisher_kl(update: TRPOUpdate, data: AdaptationData, full_kl: torch.Tensor) -> torch.Tensor:
    """The mean KL whose Hessian is the update's Fisher, every chunk at once (``full_kl``
    when that is it): the mean over the Fisher's tasks of ``update._fisher_kl_sum``."""
    if update.fisher == "full" and update.fisher_stride == 1:
        return full_kl
    n_tasks = data.valid.observations.shape[0]
    chunks = update._chunks(n_tasks, update.fisher_stride)
    n_fisher = len(range(0, n_tasks, update.fisher_stride))
    return sum(update._fisher_kl_sum(data, tasks) for tasks in chunks) / n_fisher


def modelled_and_real_kl(fisher: str, inner_lr: float, eps: float) -> tuple[float, float]:
    """For a step ``eps * s`` of the meta-parameters (``s`` random, unit norm): the KL
    that TRPO's quadratic model ``0.5 eps^2 s^T F s`` predicts, and the real mean KL
    between the old and the new *adapted* policies."""
    policy = make_policy()
    inner = inner_loop(policy, first_order=False, lr=inner_lr)
    data = adaptation_data(policy, inner)
    update, old, fisher_vp = fisher_vector_product(inner, data, fisher=fisher)
    params = list(policy.parameters())
    n_params = sum(p.numel() for p in params)
    direction = torch.randn(n_params, generator=torch.Generator().manual_seed(3)).double()
    direction = direction / direction.norm()
    modelled = 0.5 * eps**2 * float(torch.dot(direction, fisher_vp(direction)))
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(params) + eps * direction, params
        )
    _, real = update._surrogate_and_kl(data, old, create_graph=False)
    return modelled, float(real.detach())


@pytest.mark.parametrize("inner_lr", [0.1, 2.0])
def test_full_fisher_models_the_kl_of_the_adapted_policies(inner_lr):
    """TRPO's trust region is only as good as its Fisher. The default ('full') is the
    Hessian of the KL through the inner loop, so for a small step it predicts the real KL
    of the adapted policies however sensitive the inner step is. The cheap 'adapted'
    Fisher holds the inner step fixed: with a sensitive inner step (large inner lr here;
    a trained MAML policy in practice) it misses most of the real KL, which is what made
    the line search on halfcheetah-dir keep ~5% of each step."""
    modelled, real = modelled_and_real_kl("full", inner_lr, eps=1e-3)
    assert real > 0 and abs(modelled / real - 1.0) < 0.02, (modelled, real)
    if inner_lr >= 1.0:
        modelled, real = modelled_and_real_kl("adapted", inner_lr, eps=1e-3)
        assert modelled < 0.5 * real, (modelled, real)


def test_fisher_on_a_subset_of_tasks_is_the_exact_fisher_of_those_tasks():
    """``fisher_subsample 0.5`` of 3 tasks keeps tasks 0 and 2: its Fisher-vector product
    must equal the full Fisher's of a meta-batch made of those two tasks alone."""
    policy = make_policy()
    inner = inner_loop(policy, first_order=False)
    data = adaptation_data(policy, inner)
    params = list(policy.parameters())
    keep = torch.tensor([0, 2])

    def only_kept(batch: ProcessedBatch) -> ProcessedBatch:
        return ProcessedBatch(
            batch.observations[keep], batch.actions[keep], batch.mask[keep],
            batch.advantages[keep], batch.mean_return, batch.explained_variance,
        )  # fmt: skip

    two_tasks = AdaptationData(
        train=[only_kept(b) for b in data.train],
        valid=only_kept(data.valid),
        old_params={k: v[keep] for k, v in data.old_params.items()},
        returns_per_step=data.returns_per_step,
        per_task_returns=data.per_task_returns[:, keep],
        env_steps=0,
    )

    def fisher_vp(subsample: float, batch: AdaptationData):
        return fisher_vector_product(inner, batch, fisher="full", fisher_subsample=subsample)[2]

    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(5))
    v = v.double()
    subset = fisher_vp(0.5, data)(v)
    assert torch.allclose(subset, fisher_vp(1.0, two_tasks)(v), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(subset, fisher_vp(1.0, data)(v), rtol=1e-3)


def test_ppo_update_that_turns_non_finite_later_restores_the_parameters():
    """A blow-up in a later epoch rejects the whole update, not just that epoch."""
    policy = make_policy()
    inner = inner_loop(policy, first_order=True)
    data = adaptation_data(policy, inner)
    before = copy.deepcopy(policy.state_dict())
    update = PPOUpdate(inner, epochs=3, clip=0.2, lr=1e-2)
    real_step = update.optimizer.step

    def step_then_blow_up():  # epoch 0 takes a real step, then the weights overflow
        real_step()
        with torch.no_grad():
            policy.layers[0].weight.fill_(float("inf"))

    update.optimizer.step = step_then_blow_up
    stats = update.update(data)
    assert stats == {"ppo/rejected_nonfinite": 1.0}  # the loop counts rejections, not the update
    for name, value in policy.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert update.optimizer.state_dict()["state"] == {}
