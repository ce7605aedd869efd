"""Meta-SGD's inner step with learned step sizes, against a hand-written REINFORCE loss.

One step is ``phi_t = theta - alpha * grad L_t(theta)`` elementwise, ``alpha`` a different
number for every entry (none equal to ``inner_lr``), with ``grad`` the central finite
difference of the plain numpy REINFORCE loss below. Checked twice: the differentiable
replay the outer update uses, and the parameters the sampler is handed to act with after
one step (``collect``'s ``acting_params[1]``), the latter with a fake sampler that returns
a fixed episode batch, whose advantages are recomputed here in numpy (returns to go, the
documented ridge baseline, GAE with lambda 1, per-task normalisation).

``make_inner_loop`` is the only place that knows the constructors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from finite_differences import fd_gradient

from metarl.algos.maml import MAMLInnerLoop, ProcessedBatch
from metarl.algos.meta_sgd import LearnedStepRule, PerParameterStepSizes
from metarl.policies import GaussianMLPPolicy, MLPSpec
from metarl.sampling import EpisodeBatch

D = A = 2
P = A * D + A + A
INNER_LR = 0.1
DISCOUNT = 0.9
SLICES = {"layers.0.weight": slice(0, A * D), "layers.0.bias": slice(A * D, A * D + A),
          "log_std": slice(A * D + A, P)}  # fmt: skip
SHAPES = {"layers.0.weight": (A, D), "layers.0.bias": (A,), "log_std": (A,)}
THETA0 = np.array([0.3, -0.2, 0.1, 0.4, 0.05, -0.1, -0.2, 0.1])  # [W row-major, b, log_std]
# 0.02, 0.05, ..., 0.23: distinct, and none is INNER_LR
ALPHA = 0.02 + 0.03 * np.arange(P)


# ------------------------------------------------------------------ construction (one place)
def t64(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def make_inner_loop(sampler=None, horizon: int | None = None) -> MAMLInnerLoop:
    """A linear-Gaussian policy at THETA0, Meta-SGD's step sizes at ALPHA, one inner step."""
    policy = GaussianMLPPolicy(MLPSpec(D, A, (), "tanh")).double()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(t64(THETA0[SLICES[name]]).view_as(p))
    step_sizes = PerParameterStepSizes(policy, INNER_LR).double()
    with torch.no_grad():
        for name, alpha in step_sizes.as_dict(detach=False).items():
            alpha.copy_(t64(ALPHA[SLICES[name]]).view_as(alpha))
    settings = dict(inner_steps=1, first_order=False, discount=DISCOUNT, gae_lambda=1.0,
                    device=torch.device("cpu"))  # fmt: skip
    return MAMLInnerLoop(policy, sampler, LearnedStepRule(step_sizes), **settings)


# ------------------------------------------------------------------ the numpy model
def log_prob(theta: np.ndarray, x: np.ndarray, a: np.ndarray) -> float:
    w, b, log_std = theta[:4].reshape(A, D), theta[4:6], theta[6:]
    z = (a - (w @ x + b)) / np.exp(log_std)
    return float(np.sum(-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)))


def reinforce_loss(theta, obs, actions, advantages, mask) -> float:
    """-(1 / real steps) * sum over real steps of log pi(a | x) * advantage (one task)."""
    real = [i for i in range(len(mask)) if mask[i]]
    return -sum(log_prob(theta, obs[i], actions[i]) * advantages[i] for i in real) / len(real)


def expected_step(obs, actions, advantages, mask) -> tuple[np.ndarray, np.ndarray]:
    """(theta - ALPHA * grad, theta - INNER_LR * grad) for one task, hand layout."""
    grad = fd_gradient(lambda th: reinforce_loss(th, obs, actions, advantages, mask), THETA0)
    assert np.abs(grad).min() > 1e-3  # every entry moves, so a wrong step size shows
    return THETA0 - ALPHA * grad, THETA0 - INNER_LR * grad


def as_hand_layout(params: dict, t: int) -> np.ndarray:
    flat = np.empty(P)
    for name, value in params.items():
        flat[SLICES[name]] = np.asarray(value[t], dtype=np.float64).reshape(-1)
    return flat


# ------------------------------------------------------------------ the replay (outer update's)
OBS = np.array([
    [[0.5, -1.0], [1.0, 0.2], [-0.3, 0.8], [0.0, 0.0]],  # last step padding
    [[0.0, 1.0], [-1.2, 0.4], [0.7, 0.7], [0.9, -0.4]],
])  # fmt: skip
ACT = np.array([
    [[0.4, 0.1], [-0.2, 0.6], [0.3, -0.5], [0.0, 0.0]],
    [[-0.6, 0.2], [0.1, 0.1], [0.5, -0.3], [0.2, -0.7]],
])  # fmt: skip
ADV = np.array([[1.0, -0.5, 0.8, 7.0], [-1.0, 1.5, 0.3, 0.6]])  # 7.0: junk on padding
MASK = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


def test_replayed_step_is_theta_minus_alpha_times_the_gradient():
    inner = make_inner_loop()
    batch = ProcessedBatch(
        observations=t64(OBS), actions=t64(ACT), mask=t64(MASK), advantages=t64(ADV),
        mean_return=0.0, explained_variance=0.0,
    )  # fmt: skip
    for create_graph in (True, False):
        adapted = inner.adapted_params([batch], create_graph=create_graph)
        for t in range(2):
            with_alpha, with_lr = expected_step(OBS[t], ACT[t], ADV[t], MASK[t])
            got = as_hand_layout({k: v.detach() for k, v in adapted.items()}, t)
            np.testing.assert_allclose(got, with_alpha, rtol=1e-8, atol=1e-10)
            assert np.abs(got - with_lr).max() > 1e-3


# ------------------------------------------------------------------ what the sampler acts with
E, H = 2, 8


def episode_batch() -> EpisodeBatch:
    """2 tasks x 2 episodes x 8 steps; task 1's episode 0 ends after 5 steps (zero padding,
    as the sampler pads)."""
    rng = np.random.default_rng(7)
    lengths = np.array([[H, H], [5, H]])
    mask = (np.arange(H)[None, None, :] < lengths[..., None]).astype(float)
    obs = rng.normal(size=(2, E, H, D)) * mask[..., None]
    actions = rng.normal(size=(2, E, H, A)) * mask[..., None]
    rewards = rng.normal(size=(2, E, H)) * mask
    return EpisodeBatch(
        observations=t64(obs), actions=t64(actions), rewards=t64(rewards),
        log_probs=torch.zeros(2, E, H, dtype=torch.float64),
        terminated=torch.zeros(2, E, H, dtype=torch.bool), mask=t64(mask),
        lengths=torch.tensor(lengths), returns=t64(rewards.sum(-1)), tasks=(0, 1),
    )  # fmt: skip


class FixedSampler:
    """Returns ``episode_batch()`` for every call and records the parameters it was given."""

    horizon = H

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def sample(self, tasks, params, *, episodes_per_task, batch_key) -> EpisodeBatch:
        assert episodes_per_task == E
        self.calls.append({k: np.array(v, dtype=np.float64) for k, v in params.items()})
        return episode_batch()


def numpy_advantages(batch: EpisodeBatch) -> np.ndarray:
    """Per task: returns to go; the ridge baseline (reg 1e-5) on the documented features
    [clip(o), clip(o)^2, s, s^2, s^3, 1] with s = step / 100; GAE with lambda 1, i.e. return
    minus baseline; then mean 0 and population std 1 over real steps (+1e-8), 0 on padding."""
    obs, rewards, mask = batch.observations.numpy(), batch.rewards.numpy(), batch.mask.numpy()
    out = np.zeros_like(rewards)
    for t in range(rewards.shape[0]):
        returns = np.zeros((E, H))
        for e in range(E):
            running = 0.0
            for h in reversed(range(H)):
                running = rewards[t, e, h] + DISCOUNT * running if mask[t, e, h] else 0.0
                returns[e, h] = running
        rows, targets, where = [], [], []
        for e in range(E):
            for h in range(H):
                if mask[t, e, h]:
                    o = np.clip(obs[t, e, h], -10, 10)
                    s = h / 100.0
                    rows.append([*o, *(o * o), s, s * s, s**3, 1.0])
                    targets.append(returns[e, h])
                    where.append((e, h))
        f, y = np.array(rows), np.array(targets)
        augmented = np.vstack([f, math.sqrt(1e-5) * np.eye(f.shape[1])])
        w = np.linalg.lstsq(augmented, np.concatenate([y, np.zeros(f.shape[1])]), rcond=None)[0]
        adv = y - f @ w
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for (e, h), value in zip(where, adv):
            out[t, e, h] = value
    return out


def test_collect_acts_after_one_step_with_the_alpha_adapted_parameters():
    sampler = FixedSampler()
    inner = make_inner_loop(sampler)
    data = inner.collect([0, 1], episodes_per_task=E, batch_key=(0, "train"))
    batch = episode_batch()
    advantages = numpy_advantages(batch).reshape(2, E * H)
    np.testing.assert_allclose(data.train[0].advantages.numpy(), advantages, rtol=1e-7,
                               atol=1e-9)  # fmt: skip
    obs = batch.observations.numpy().reshape(2, E * H, D)
    actions = batch.actions.numpy().reshape(2, E * H, A)
    mask = batch.mask.numpy().reshape(2, E * H)
    assert len(data.acting_params) == 2 and len(sampler.calls) == 2
    for t in range(2):
        # before the step every task acts with theta
        np.testing.assert_array_equal(as_hand_layout(data.acting_params[0], t), THETA0)
        with_alpha, with_lr = expected_step(obs[t], actions[t], advantages[t], mask[t])
        for acted in (data.acting_params[1], sampler.calls[1]):
            got = as_hand_layout(acted, t)
            np.testing.assert_allclose(got, with_alpha, rtol=1e-7, atol=1e-9)
            assert np.abs(got - with_lr).max() > 1e-3  # the scalar step would be far off
