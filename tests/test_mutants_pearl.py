"""metarl.algos.pearl: the cases mutation testing found unchecked (docs/testing.md).

Networks are set to constants (every weight 0, the last layer's bias chosen), so each
loss is a fixed number worked out by hand; the update's aggregation is checked with a
stand-in gradient step that returns known statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from metarl.algos.pearl import (
    PEARL,
    ContextEncoder,
    PEARLOptions,
    mlp,
    pad_contexts,
    per_row,
    unique_tasks,
)
from metarl.policies.tanh_gaussian import TanhGaussianPolicy, TanhGaussianSpec

OBS, ACT, LAT = 2, 2, 3
IN = 2 * OBS + ACT + 1


def learner(**options) -> PEARL:
    torch.manual_seed(0)
    spec = TanhGaussianSpec(OBS, ACT, LAT, (4,))
    opts = PEARLOptions(pearl_latent_dim=LAT, pearl_hidden_sizes=(4,),
                        pearl_encoder_hidden_sizes=(4,), **options)  # fmt: skip
    return PEARL(TanhGaussianPolicy(spec), None, options=opts, discount=0.9, seed=0,
                 device=torch.device("cpu"))  # fmt: skip


def constant(net: nn.Module, last_bias: list[float]) -> None:
    """Every weight and bias 0, the last layer's bias ``last_bias``: a constant output."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for m in linears:
            m.weight.zero_()
            m.bias.zero_()
        linears[-1].bias.copy_(torch.tensor(last_bias))


# -- pure pieces ---------------------------------------------------------------------------
def test_mlp_puts_a_relu_between_layers_and_none_after_the_last():
    net = mlp([3, 4, 5, 2])
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [
        (3, 4), (4, 5), (5, 2)]  # fmt: skip
    assert [type(m) for m in mlp([3, 2])] == [nn.Linear]


def test_product_of_gaussians_with_a_mask_weighs_only_the_real_factors():
    # factors N(1, 1), N(3, 0.5), N(9, 2); the third is padding: precision 1 + 2 = 3,
    # mean (1 * 1 + 3 * 2) / 3 = 7/3, var 1/3
    from metarl.algos.pearl import product_of_gaussians

    mu = torch.tensor([[[1.0], [3.0], [9.0]]])
    var = torch.tensor([[[1.0], [0.5], [2.0]]])
    mean, v = product_of_gaussians(mu, var, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(mean, torch.tensor([[7.0 / 3.0]]))
    assert torch.allclose(v, torch.tensor([[1.0 / 3.0]]))


def test_encoder_factors_are_mu_then_softplus_var_floored_at_1e_7():
    encoder = ContextEncoder(IN, 2, (4,))
    assert encoder.latent_dim == 2
    linears = [m for m in encoder.net if isinstance(m, nn.Linear)]
    assert (linears[0].in_features, linears[-1].out_features) == (IN, 4)
    # outputs [mu_1, mu_2, raw_1, raw_2] = [0.5, -1, 0, -50]: var softplus(0) = log 2, and
    # softplus(-50) = 2e-22 floored to 1e-7
    constant(encoder.net, [0.5, -1.0, 0.0, -50.0])
    mu, var = encoder.factors(torch.zeros(3, IN))
    assert torch.equal(mu, torch.tensor([[0.5, -1.0]] * 3))
    assert torch.allclose(var[:, 0], torch.full((3,), math.log(2.0)))
    assert torch.allclose(var[:, 1], torch.full((3,), 1e-7), rtol=1e-6, atol=0.0)
    # the posterior of 2 such factors per task: precision doubles; a masked-out task: the prior
    mean, v = encoder.posterior(torch.zeros(2, 2, IN), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(mean, torch.tensor([[0.5, -1.0], [0.0, 0.0]]))
    assert torch.allclose(v, torch.tensor([[math.log(2.0) / 2, 0.5e-7], [1.0, 1.0]]), rtol=1e-5)


def test_per_row_repeats_each_tasks_latent_over_its_rows():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = per_row(z, 3)
    assert out.shape == (2, 3, 2)
    assert torch.equal(out[1], torch.tensor([[3.0, 4.0]] * 3))


def test_unique_tasks_keeps_the_first_seen_order():
    assert unique_tasks([3, 1, 3, 2, 1]) == [3, 1, 2]


def test_pad_contexts_zero_pads_and_masks_exactly():
    a = [torch.ones(2, 3), torch.full((1, 3), 2.0)]
    b = [torch.full((1, 3), 5.0)]
    padded, mask = pad_contexts([a, b])
    assert padded.shape == (2, 3, 3) and mask.shape == (2, 3)
    assert padded[0].tolist() == [[1.0] * 3, [1.0] * 3, [2.0] * 3]
    assert padded[1].tolist() == [[5.0] * 3, [0.0] * 3, [0.0] * 3]
    assert mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    padded, mask = pad_contexts([b])  # a single task
    assert padded.tolist() == [[[5.0] * 3]] and mask.tolist() == [[1.0]]


# -- construction ----------------------------------------------------------------------------
def test_construction_sets_alpha_entropy_target_optimisers_and_buffers():
    pl = learner(pearl_alpha=0.5, pearl_lr=0.002, pearl_buffer_capacity=7)
    assert math.isclose(float(pl.log_alpha), math.log(0.5), rel_tol=1e-6)
    assert not pl.log_alpha.requires_grad
    assert pl.target_entropy == -2.0
    assert set(pl.optimizers) == {"policy", "q", "v", "encoder"}
    for opt in pl.optimizers.values():
        assert opt.param_groups[0]["lr"] == 0.002
    assert len(pl.optimizers["q"].param_groups[0]["params"]) == 2 * len(list(pl.q1.parameters()))
    assert pl.replay.capacity == 7 and pl.encoder_replay.capacity == 7
    assert pl.replay is not pl.encoder_replay
    # the networks' input sizes: encoder (s, a, r, s'), Q (s, a, z), V (s, z)
    assert pl.encoder.net[0].in_features == IN
    assert pl.q1[0].in_features == pl.q2[0].in_features == OBS + ACT + LAT
    assert pl.v[0].in_features == OBS + LAT and pl.v[-1].out_features == 1
    assert pl.v_target is not pl.v
    for a, b in zip(pl.v_target.parameters(), pl.v.parameters()):
        assert torch.equal(a, b)
    assert set(pl.networks()) == {"policy", "encoder", "q1", "q2", "v", "v_target"}
    assert pl.networks()["v_target"] is pl.v_target and pl.networks()["q2"] is pl.q2

    tuned = learner(pearl_alpha=0.0, pearl_tune_alpha=True)
    assert math.isclose(float(tuned.log_alpha.detach()), math.log(1e-8), rel_tol=1e-6)  # floor
    assert tuned.log_alpha.requires_grad
    assert tuned.optimizers["alpha"].param_groups[0]["params"][0] is tuned.log_alpha
    assert tuned.optimizers["alpha"].param_groups[0]["lr"] == 3e-4  # pearl_lr, not Adam's 1e-3


# -- z ------------------------------------------------------------------------------------------
def test_prior_z_draws_standard_normals_from_the_given_generator():
    pl = learner()
    z = pl.prior_z(4, torch.Generator().manual_seed(3))
    assert torch.equal(z, torch.randn(4, LAT, generator=torch.Generator().manual_seed(3)))


def test_posterior_z_is_mean_plus_std_times_the_generators_noise():
    pl = learner()
    constant(pl.encoder.net, [0.5, -1.0, 2.0, 0.0, 0.0, 0.0])  # mu (0.5, -1, 2), var log 2
    context = torch.zeros(2, 3, IN)
    mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # task 1: no context, the prior
    z = pl.posterior_z(context, mask, torch.Generator().manual_seed(1))
    noise = torch.randn(2, LAT, generator=torch.Generator().manual_seed(1))
    mu = torch.tensor([0.5, -1.0, 2.0])
    expected = torch.stack([mu + math.sqrt(math.log(2.0)) * noise[0], noise[1]])
    assert z.dtype == torch.float32 and torch.allclose(z, expected, atol=1e-6)
    # without a mask all 3 factors count: var log 2 / 3
    z = pl.posterior_z(context, None, torch.Generator().manual_seed(1))
    assert torch.allclose(z[1], torch.tensor([0.5, -1.0, 2.0])
                          + math.sqrt(math.log(2.0) / 3) * noise[1], atol=1e-6)  # fmt: skip


def test_task_latent_reparameterises_with_the_given_noise():
    pl = learner()
    constant(pl.encoder.net, [0.5, -1.0, 2.0, 0.0, 0.0, 0.0])
    noise = torch.tensor([[1.0, 0.0, -2.0]])
    z, mu, var = pl.task_latent(torch.zeros(1, 2, IN), noise)
    s = math.sqrt(math.log(2.0) / 2)  # two factors of var log 2
    assert torch.allclose(z, torch.tensor([[0.5 + s, -1.0, 2.0 - 2 * s]]))
    assert torch.allclose(mu, torch.tensor([[0.5, -1.0, 2.0]]))
    assert torch.allclose(var, torch.full((1, 3), math.log(2.0) / 2))


# -- the losses, by hand ---------------------------------------------------------------------
def rl_batch() -> dict[str, torch.Tensor]:
    return {"obs": torch.zeros(2, 2, OBS), "actions": torch.zeros(2, 2, ACT),
            "rewards": torch.tensor([[1.0, 2.0], [0.0, -1.0]]),
            "terminals": torch.tensor([[0.0, 1.0], [0.0, 0.0]]),
            "next_obs": torch.zeros(2, 2, OBS)}  # fmt: skip


def test_critic_loss_is_both_qs_mean_squared_bellman_error():
    pl = learner()  # reward scale 5, discount 0.9
    constant(pl.q1, [2.0])
    constant(pl.q2, [3.0])
    constant(pl.v_target, [1.5])
    constant(pl.v, [-7.0])  # V itself is not the target
    # targets r * 5 + 0.9 * (1 - term) * 1.5: 6.35, 10, 1.35, -3.65
    # Q1 = 2: (4.35^2 + 8^2 + 0.65^2 + 5.65^2) / 4 = 28.816875
    # Q2 = 3: (3.35^2 + 7^2 + 1.65^2 + 6.65^2) / 4 = 26.791875
    loss = pl.critic_loss(rl_batch(), torch.zeros(2, LAT))
    assert math.isclose(loss.item(), 28.816875 + 26.791875, rel_tol=1e-6)


def test_actor_and_value_losses_by_hand():
    pl = learner()
    constant(pl.q1, [3.0])
    constant(pl.q2, [2.0])
    with torch.no_grad():  # Q2 = 2 + relu(obs_0): its hidden unit 0 reads obs_0
        pl.q2[0].weight[0, 0] = 1.0
        pl.q2[-1].weight[0, 0] = 1.0
    constant(pl.v, [0.5])
    constant(pl.policy, [0.7, -0.2, -0.5, 0.1])  # mean (0.7, -0.2), log-std (-0.5, 0.1)
    obs = torch.zeros(2, 3, OBS)
    obs[..., 0] = torch.tensor([[0.0, 0.5, 2.0], [1.5, 0.0, 4.0]])
    min_q = torch.tensor([[2.0, 2.5, 3.0], [3.0, 2.0, 3.0]], dtype=torch.float64)  # row by row
    alpha = torch.tensor(0.4)
    v_loss, policy_loss, pi = pl.actor_value_losses(obs, torch.zeros(2, LAT), alpha)
    assert pi.log_prob.shape == (2, 3)
    assert torch.allclose(pi.mean, torch.tensor([0.7, -0.2]).expand(2, 3, 2))
    logp = pi.log_prob.detach().double()
    # V target min Q - 0.4 log pi; the regularisers: 1e-3 * mean(mean^2) = 1e-3 * 0.265,
    # 1e-3 * mean(log_std^2) = 1e-3 * 0.13
    v_expected = ((0.5 - (min_q - 0.4 * logp)) ** 2).mean()
    p_expected = (0.4 * logp - min_q).mean() + 1e-3 * 0.265 + 1e-3 * 0.13
    assert math.isclose(v_loss.item(), float(v_expected), rel_tol=1e-6)
    assert math.isclose(policy_loss.item(), float(p_expected), rel_tol=1e-6, abs_tol=1e-7)


# -- one gradient step, replayed by hand -------------------------------------------------------
def recorded_grads(pl: PEARL) -> dict[str, list[torch.Tensor]]:
    """Wrap each optimiser's ``step`` to keep the gradients it was given."""
    seen: dict[str, list[torch.Tensor]] = {}
    for name, opt in pl.optimizers.items():
        real = opt.step

        def step(*args, name=name, opt=opt, real=real):
            params = [p for g in opt.param_groups for p in g["params"]]
            seen[name] = [p.grad.clone() for p in params]
            return real(*args)

        opt.step = step
    return seen


def test_gradient_step_gives_each_optimiser_the_gradient_of_its_own_loss():
    import copy

    pl = learner(pearl_tune_alpha=True, pearl_alpha=0.5, pearl_kl_lambda=0.3)
    twin = copy.deepcopy(pl)
    g = torch.Generator().manual_seed(2)
    rl = {"obs": torch.randn(2, 3, OBS, generator=g),
          "actions": torch.rand(2, 3, ACT, generator=g) * 2 - 1,
          "rewards": torch.randn(2, 3, generator=g),
          "terminals": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
          "next_obs": torch.randn(2, 3, OBS, generator=g)}  # fmt: skip
    context = torch.randn(2, 4, IN, generator=g)
    seen = recorded_grads(pl)
    torch.manual_seed(9)
    stats = pl.gradient_step(rl, context)

    torch.manual_seed(9)  # the same draws, in the same order: z's noise, then pi's
    z, mu, var = twin.task_latent(context)
    kl = 0.5 * (var + mu**2 - 1.0 - var.log()).sum()
    q_loss = twin.critic_loss(rl, z)
    q_params = [*twin.q1.parameters(), *twin.q2.parameters()]
    enc_params = list(twin.encoder.parameters())
    grads = torch.autograd.grad(q_loss + 0.3 * kl, q_params + enc_params)
    for got, want in zip(seen["q"] + seen["encoder"], grads):
        assert torch.allclose(got, want, atol=1e-6)
    for p, gr in zip(q_params + enc_params, grads):
        p.grad = gr
    twin.optimizers["q"].step()
    twin.optimizers["encoder"].step()
    alpha = torch.tensor(0.5)
    v_loss, policy_loss, pi = twin.actor_value_losses(rl["obs"], z, alpha)
    for name, loss, net in (("v", v_loss, twin.v), ("policy", policy_loss, twin.policy)):
        want = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)
        for got, w in zip(seen[name], want):
            assert torch.allclose(got, w, atol=1e-6), name
    # d/d log alpha of -(log alpha * (log pi + target)).mean(): -(mean log pi - 2)
    assert torch.allclose(seen["alpha"][0], -(pi.log_prob.detach().mean() - 2.0), atol=1e-6)
    expected = [q_loss, v_loss, policy_loss, kl, var.sqrt().mean(), alpha, pi.log_prob.mean()]
    assert torch.allclose(stats, torch.stack([e.detach() for e in expected]), atol=1e-5)
    # the optimisers stepped: alpha moved by lr against its gradient's sign
    assert pl.log_alpha.item() != pytest.approx(math.log(0.5), abs=1e-6)


# -- the update's bookkeeping, with a stand-in step ---------------------------------------------
def filled(pl: PEARL, tasks=(0, 1)) -> PEARL:
    for t in tasks:
        n = 5
        fields = {"obs": np.full((n, OBS), t, np.float32),
                  "actions": np.zeros((n, ACT), np.float32),
                  "rewards": np.full(n, 10.0 * t, np.float32),
                  "next_obs": np.full((n, OBS), t + 0.5, np.float32),
                  "terminals": np.zeros(n, np.float32)}  # fmt: skip
        pl.replay.add(t, **fields)
        pl.encoder_replay.add(t, **fields)
    return pl


def stand_in(pl: PEARL, rows: list[list[float]]):
    calls = []

    def step(rl, context):
        calls.append((rl, context))
        with torch.no_grad():
            for p in pl.v.parameters():
                p.add_(1.0)  # a change the rejection must undo
        return torch.tensor(rows[len(calls) - 1])

    pl.gradient_step = step
    return calls


def test_update_reports_the_mean_of_each_statistic_over_the_steps():
    pl = filled(learner())
    stand_in(pl, [[1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9.0]])
    scalars, rejected = pl.update(2)
    assert not rejected
    assert scalars == {"loss/q": 2.0, "loss/v": 3.0, "loss/policy": 4.0, "pearl/kl": 5.0,
                       "pearl/posterior_std": 6.0, "pearl/log_pi": 8.0}  # fmt: skip
    tuned = filled(learner(pearl_tune_alpha=True))
    stand_in(tuned, [[1, 2, 3, 4, 5, 6, 7.0]])
    scalars, _ = tuned.update(1)
    assert scalars["pearl/alpha"] == 6.0 and len(scalars) == 7


def test_update_with_a_non_finite_statistic_restores_every_network():
    pl = filled(learner())
    before = [p.detach().clone() for p in pl.v.parameters()]
    stand_in(pl, [[1, 2, 3, 4, 5, 6, 7], [1, 2, float("nan"), 4, 5, 6, 7], [1] * 7])
    scalars, rejected = pl.update(3)
    assert rejected and scalars == {"pearl/rejected_nonfinite": 1.0}
    for a, b in zip(before, pl.v.parameters()):
        assert torch.equal(a, b)
    pl2 = filled(learner())
    stand_in(pl2, [[1, 2, 3, 4, 5, 6, float("inf")]])
    assert pl2.update(1)[1]


def test_update_does_nothing_without_steps_or_data():
    pl = learner()
    calls = stand_in(pl, [[1] * 7])
    assert pl.update(3) == ({}, False)  # no data yet
    filled(pl, tasks=(0,))  # one task is enough
    assert pl.update(0) == ({}, False)
    assert calls == []
    assert pl.update(1)[0]["loss/q"] == 1.0


def test_minibatch_pairs_each_drawn_task_with_its_own_context():
    options = {"pearl_meta_batch": 30, "pearl_batch_size": 3, "pearl_embedding_batch": 4}
    pl = filled(learner(**options), tasks=(0, 1, 2))
    rl, context = pl._minibatch()
    assert rl["obs"].shape == (30, 3, OBS) and rl["rewards"].shape == (30, 3)
    assert context.shape == (30, 4, IN)
    tasks = rl["obs"][:, 0, 0]
    assert (rl["obs"][..., 0] == tasks[:, None]).all()
    assert (context[..., 0] == tasks[:, None]).all()  # the context's obs column
    assert (context[..., OBS + ACT] == 10.0 * tasks[:, None]).all()  # its reward column
    assert set(tasks.tolist()) == {0.0, 1.0, 2.0}  # 30 draws reach every task, the first too


# -- checkpoints -------------------------------------------------------------------------------
def test_state_dict_round_trips_and_the_slim_one_holds_only_policy_and_encoder():
    pl = filled(learner(pearl_tune_alpha=True))
    with torch.no_grad():
        pl.log_alpha.fill_(0.25)
        for p in pl.q2.parameters():
            p.add_(0.5)
    pl.rng.integers(0, 10, 3)
    state = pl.state_dict()
    other = learner(pearl_tune_alpha=True)
    other.load_state_dict(state)
    assert other.log_alpha.item() == 0.25
    for a, b in zip(pl.q2.parameters(), other.q2.parameters()):
        assert torch.equal(a, b)
    assert other.replay.tasks == [0, 1] and other.encoder_replay.transitions == 10
    assert other.rng.integers(0, 1000) == pl.rng.integers(0, 1000)
    assert set(state["optimizers"]) == {"policy", "q", "v", "encoder", "alpha"}
    slim = pl.slim_state_dict()
    assert set(slim) == {"networks"} and set(slim["networks"]) == {"policy", "encoder"}
    assert torch.equal(slim["networks"]["encoder"]["net.0.weight"], pl.encoder.net[0].weight)


# -- the protocol: an iteration, Meta-World's agent, the registry entry --------------------------
def counting_learner(**options):
    from metarl.registry import register_family
    from metarl.sampling import make_sampler

    register_family("counting-info", "tests.counting_env:CountingInfoEnv", varies="goal",
                    horizon=3, override=True)  # fmt: skip
    torch.manual_seed(0)
    spec = TanhGaussianSpec(6, 2, LAT, (4,))
    opts = PEARLOptions(pearl_latent_dim=LAT, pearl_hidden_sizes=(4,),
                        pearl_encoder_hidden_sizes=(4,), **options)  # fmt: skip
    sampler = make_sampler("counting-info", spec=spec, seed=1, workers=0, horizon=3)
    pl = PEARL(TanhGaussianPolicy(spec), sampler, options=opts, discount=0.9, seed=0,
               device=torch.device("cpu"))  # fmt: skip
    return pl, sampler


def test_train_iteration_reports_returns_steps_times_and_the_update():
    from tests.counting_env import CountingTask

    pl, sampler = counting_learner(pearl_initial_episodes=1, pearl_prior_episodes=1,
                                   pearl_extra_posterior_episodes=1, pearl_gradient_steps=2,
                                   pearl_meta_batch=2, pearl_batch_size=2,
                                   pearl_embedding_batch=2)  # fmt: skip
    tasks = [CountingTask(id=4), CountingTask(id=7, end_at=2), CountingTask(id=4)]
    with sampler:
        result = pl.train_iteration(tasks, 0)
    # two distinct tasks; rewards 1 + 2 + 3 = 6 (3 steps) and 1 + 2 = 3 (2 steps)
    assert result.returns_per_step == [4.5, 4.5]
    assert result.env_steps == 3 * 5
    assert result.infos_per_step == {"steps": [2.5, 2.5], "id": [5.5, 5.5]}
    assert set(result.times) == {"sampling", "adaptation", "update"}
    assert result.times["adaptation"] == 0.0
    assert 0.0 < result.times["sampling"] < 60.0 and 0.0 < result.times["update"] < 60.0
    s = result.scalars
    assert s["perf/gradient_steps_per_s"] == pytest.approx(2 / result.times["update"])
    assert s["pearl/replay_transitions"] == 15.0 and s["pearl/replay_tasks"] == 2.0
    assert s["pearl/encoder_transitions"] == 5.0  # the prior round only: refreshed
    assert result.kl == s["pearl/kl"] and not result.rejected


def test_metaworld_agent_defaults_to_the_trained_context_episodes():
    from metarl.metaworld_protocol import TrainedAdaptation

    pl = learner(pearl_prior_episodes=2, pearl_posterior_episodes=1)
    low, high = -np.ones(ACT), np.ones(ACT)
    agent = pl.metaworld_agent(n_envs=3, horizon=5, seed=11, batch_key=("mw", 1), low=low,
                               high=high)  # fmt: skip
    assert agent.learner is pl and agent.n == 3 and agent.batch_key == ("mw", 1)
    assert agent.trained == TrainedAdaptation(
        3, "the encoder's context came from 2 prior-z + 1 posterior-z episodes per task per "
        "iteration")  # fmt: skip
    a = agent.acting
    assert (a.n, a.horizon, a.act_dim, a.seed) == (3, 5, ACT, 11)
    assert np.array_equal(a.low, low) and np.array_equal(a.high, high)
    none = learner(pearl_prior_episodes=0, pearl_posterior_episodes=0)
    assert none.metaworld_agent(n_envs=1, horizon=5, seed=0, batch_key=(), low=low,
                                high=high).trained.episodes == 1  # fmt: skip


def test_dense_reward_error_names_the_family_class_and_the_method():
    from metarl.algos.pearl import family_dense_reward
    from metarl.configure import build_config
    from metarl.options import ConfigError

    with pytest.raises(ConfigError) as err:
        family_dense_reward(build_config({"env": "point-nav"}))
    msg = str(err.value)
    assert "'point-nav' (PointNavEnv) defines no dense_training_reward(task, next_obs); " in msg
    assert msg.endswith("drop the option or add the method")


def test_minibatch_lands_on_the_learners_device():
    # the meta device (shapes, no data) stands in for an accelerator: a CPU run cannot tell
    pl = learner()
    filled(pl)
    pl.device = torch.device("meta")
    rl, context = pl._minibatch()
    assert context.device.type == "meta"
    assert {v.device.type for v in rl.values()} == {"meta"}


def test_meta_test_generator_is_keyed_by_the_seed_its_own_name_and_the_batch_key():
    from metarl.seeding import derive_seed

    pl = learner()
    draw = torch.randn(3, generator=pl.meta_test_generator(("eval", 2)))
    want = torch.Generator().manual_seed(derive_seed(0, "pearl-meta-test", "eval", 2))
    assert torch.equal(draw, torch.randn(3, generator=want))
    other = torch.randn(3, generator=pl.meta_test_generator(("eval", 3)))
    assert not torch.equal(draw, other)


def test_kl_to_the_unit_gaussian_is_one_value_per_row():
    from metarl.algos.pearl import kl_to_unit_gaussian

    # row 0: N(0, 1) -> 0; row 1: 0.5 * (2 + 4 - 1 - log 2) per dim, 2 dims
    kl = kl_to_unit_gaussian(torch.tensor([[0.0, 0.0], [2.0, -2.0]]),
                             torch.tensor([[1.0, 1.0], [2.0, 2.0]]))  # fmt: skip
    assert kl.shape == (2,)
    assert torch.allclose(kl, torch.tensor([0.0, 5.0 - math.log(2.0)]))


def test_the_registry_builders_read_the_options_seed_discount_and_device():
    from metarl.algos.pearl import build_pearl, build_pearl_policy
    from metarl.configure import build_config

    config = build_config({"env": "point-nav-sparse", "algo": "pearl", "seed": 7,
                           "discount": 0.8, "pearl_hidden_sizes": [5, 6],
                           "pearl_latent_dim": 4, "pearl_dense_sac_reward": True})  # fmt: skip
    policy = build_pearl_policy(config, 2, 2)
    assert policy.spec == TanhGaussianSpec(2, 2, 4, (5, 6))
    pl = build_pearl(config, policy, None, torch.device("cpu"))
    assert pl.policy is policy and pl.device == torch.device("cpu")
    assert (pl.seed, pl.discount, pl.o.pearl_latent_dim) == (7, 0.8, 4)
    assert pl.dense_reward is not None
    next_obs = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    from metarl.envs.point_nav import GoalTask

    assert np.allclose(pl.dense_reward(GoalTask(goal=(0.0, 0.0)), next_obs), [0.0, -5.0])
    config = build_config({"env": "point-nav", "algo": "pearl"})
    assert build_pearl(config, build_pearl_policy(config, 2, 2), None, "cpu").dense_reward is None


def test_initial_episodes_reach_the_encoder_buffer_when_no_prior_round_refreshes_it():
    from tests.counting_env import CountingTask

    pl, sampler = counting_learner(pearl_initial_episodes=1, pearl_prior_episodes=0,
                                   pearl_posterior_episodes=1,
                                   pearl_extra_posterior_episodes=0)  # fmt: skip
    tasks = [CountingTask(id=1), CountingTask(id=2)]
    with sampler:
        pl.collect_iteration(tasks, 0)
    # 3 steps of the initial episode and 3 of the posterior one, in both buffers
    assert pl.encoder_replay.size[pl.encoder_replay.slots(tasks)].tolist() == [6, 6]
    assert pl.replay.size[pl.replay.slots(tasks)].tolist() == [6, 6]


def test_collection_keys_and_when_a_posterior_round_falls_back_to_the_prior():
    from tests.counting_env import CountingTask

    # one initial episode of a single step: one context transition per task is enough
    pl, sampler = counting_learner(pearl_initial_episodes=1, pearl_prior_episodes=0,
                                   pearl_posterior_episodes=1,
                                   pearl_extra_posterior_episodes=1)  # fmt: skip
    keys, posteriors = [], []
    real_sample, real_posterior = sampler.sample, pl.posterior_z
    sampler.sample = lambda *a, **k: keys.append(k["batch_key"]) or real_sample(*a, **k)
    pl.posterior_z = lambda *a, **k: posteriors.append(1) or real_posterior(*a, **k)
    with sampler:
        pl.collect_iteration([CountingTask(id=1, end_at=1), CountingTask(id=2, end_at=1)], 5)
        assert keys == [(5, "initial", 0), (5, "train", 0), (5, "train", 1)]
        assert len(posteriors) == 2
        # an emptied encoder buffer (as a refresh leaves it): the posterior round uses the prior
        task = CountingTask(id=1, end_at=1)
        pl.encoder_replay.clear(task)
        posteriors.clear()
        pl.collect_iteration([task], 6)
        assert len(posteriors) == 1  # the extra round only, after the posterior one filled it


def test_construction_puts_the_networks_and_alpha_on_the_device():
    # the meta device (shapes, no data) stands in for an accelerator
    spec = TanhGaussianSpec(OBS, ACT, LAT, (4,))
    opts = PEARLOptions(pearl_latent_dim=LAT, pearl_hidden_sizes=(4,),
                        pearl_encoder_hidden_sizes=(4,), pearl_tune_alpha=True)  # fmt: skip
    pl = PEARL(TanhGaussianPolicy(spec), None, options=opts, discount=0.9, seed=0,
               device=torch.device("meta"))  # fmt: skip
    for name, net in pl.networks().items():
        if name != "policy":  # the caller places the policy
            assert {p.device.type for p in net.parameters()} == {"meta"}, name
    assert pl.log_alpha.device.type == "meta"


def test_the_minibatch_generator_is_keyed_by_the_seed_and_its_name():
    from metarl.seeding import derive_seed

    want = np.random.default_rng(derive_seed(0, "pearl-minibatches")).integers(0, 10**9, 3)
    assert learner().rng.integers(0, 10**9, 3).tolist() == want.tolist()


def test_train_iteration_passes_a_rejected_update_on():
    from tests.counting_env import CountingTask

    pl, sampler = counting_learner(pearl_initial_episodes=0, pearl_prior_episodes=1,
                                   pearl_extra_posterior_episodes=0,
                                   pearl_gradient_steps=1)  # fmt: skip
    pl.gradient_step = lambda rl, context: torch.full((7,), float("nan"))
    with sampler:
        result = pl.train_iteration([CountingTask(id=1)], 0)
    assert result.rejected and result.scalars["pearl/rejected_nonfinite"] == 1.0


def test_posterior_rounds_without_initial_or_prior_episodes_start_from_the_prior(tmp_path):
    """A task never collected for the encoder has no context: its first posterior round acts
    on the prior z (this used to end in a KeyError traceback from the encoder's buffer)."""
    from metarl import train as train_cli

    argv = ["--env", "point-nav", "--algo", "pearl", "--iterations", "1", "--meta-batch-size",
            "2", "--horizon", "5", "--workers", "0", "--eval-every", "0", "--train-pool-size",
            "3", "--test-pool-size", "2", "--device", "cpu", "--pearl-hidden-sizes", "8",
            "--pearl-encoder-hidden-sizes", "8", "--pearl-gradient-steps", "1",
            "--pearl-initial-episodes", "0", "--pearl-prior-episodes", "0",
            "--pearl-posterior-episodes", "1", "--logdir", str(tmp_path), "--run-name", "r",
            "--quiet"]  # fmt: skip
    assert train_cli.main(argv) == 0
    rows = (tmp_path / "r" / "progress.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and iteration 0
