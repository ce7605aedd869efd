"""MAML-TRPO's surrogate, gradient, Fisher and chunked sums against a hand-written model.

The policy is linear-Gaussian (no hidden layer): ``mu(x) = W x + b``, ``std = exp(log_std)``,
with 2-D observations and actions, 8 parameters laid out here as ``[W (row-major), b,
log_std]`` (``hand_order`` maps the update's own layout onto it). Three tasks, one inner
step, three training and three validation steps per task, with a padded step in two of
them holding junk.

Everything expected here comes from the plain numpy model below (closed-form log-density
gradient for the inner step, finite differences for the outer gradient and the KL's
Hessian), never from ``metarl.functional`` or ``metarl.algos``. The update is reached
through its public ``update()`` only: its stats, and the gradient and Fisher-vector
product it hands to ``conjugate_gradient`` (captured by a spy). The "construction" section
(``make_policy``, ``make_data``, ``make_update``, ``run_update``) is the only place that
knows the constructors and that spy.
"""

from __future__ import annotations

import functools
import math
from unittest import mock

import numpy as np
import pytest
import torch
from finite_differences import fd_gradient

from metarl.algos import maml_trpo
from metarl.algos.gradient_family import SGDRule
from metarl.algos.maml import AdaptationData, MAMLInnerLoop, ProcessedBatch
from metarl.algos.maml_trpo import TRPOUpdate
from metarl.policies import GaussianMLPPolicy, MLPSpec

D = A = 2  # observation and action sizes
P = A * D + A + A  # W, b, log_std
INNER_LR = 0.3
MAX_KL = 0.01
THETA0 = np.array([0.3, -0.2, 0.1, 0.4, 0.05, -0.1, -0.2, 0.1])  # W = [[.3, -.2], [.1, .4]]

# ------------------------------------------------------------------ the hand-sized data
# [task, step, ...]; the masked step of each padded row holds junk that must never count.
TRAIN_OBS = np.array([
    [[0.5, -1.0], [1.0, 0.2], [-0.3, 0.8]],
    [[0.0, 1.0], [-1.2, 0.4], [0.7, 0.7]],
    [[0.9, -0.4], [0.3, 0.3], [3.0, -3.0]],  # last step padding
])  # fmt: skip
TRAIN_ACT = np.array([
    [[0.4, 0.1], [-0.2, 0.6], [0.3, -0.5]],
    [[-0.6, 0.2], [0.1, 0.1], [0.5, -0.3]],
    [[0.2, -0.7], [-0.4, 0.3], [2.0, 2.0]],
])  # fmt: skip
TRAIN_ADV = np.array([[1.0, -0.5, 0.8], [-1.0, 1.5, 0.3], [0.6, -0.9, 5.0]])
TRAIN_MASK = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

VALID_OBS = np.array([
    [[0.2, 0.6], [-0.8, -0.1], [0.4, 1.1]],
    [[1.0, -0.5], [0.1, 0.9], [-3.0, 3.0]],  # last step padding
    [[-0.5, -0.5], [0.6, -0.2], [0.0, 0.3]],
])  # fmt: skip
VALID_ACT = np.array([
    [[0.1, 0.3], [-0.5, 0.2], [0.6, 0.4]],
    [[0.3, -0.4], [-0.1, 0.5], [-2.0, 2.0]],
    [[-0.2, -0.6], [0.4, 0.1], [0.2, -0.3]],
])  # fmt: skip
# Per task, the mean over real steps: (1.5 - 0.5 + 2) / 3 = 1; (0.5 + 1.5) / 2 = 1;
# (-1 + 0 + 0.4) / 3 = -0.2. The mean over tasks is 1.8 / 3 = 0.6, so the surrogate loss
# at ratio 1 is -0.6 (the mean over all 8 real steps would give -4.4 / 8 = -0.55).
VALID_ADV = np.array([[1.5, -0.5, 2.0], [0.5, 1.5, 9.0], [-1.0, 0.0, 0.4]])
VALID_MASK = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
SURROGATE_AT_RATIO_1 = -0.6
N_TASKS = 3
# d loss / d (W[0, 0], b[0], log_std[1]) at THETA0, from the numpy model (printed once)
PINNED_GRAD = np.array([0.0675418356799, -0.278762643691, 0.545694228193])


# ------------------------------------------------------------------ the numpy model
def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return theta[: A * D].reshape(A, D), theta[A * D : A * D + A], theta[A * D + A :]


def log_prob(theta: np.ndarray, x: np.ndarray, a: np.ndarray) -> float:
    """log N(a; W x + b, diag(exp(2 log_std))), summed over the action's entries."""
    w, b, log_std = unpack(theta)
    z = (a - (w @ x + b)) / np.exp(log_std)
    return float(np.sum(-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)))


def grad_log_prob(theta: np.ndarray, x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """By hand: with u = (a - mu) / std^2, d/dW = u x^T, d/db = u, d/dlog_std = z^2 - 1."""
    w, b, log_std = unpack(theta)
    std = np.exp(log_std)
    diff = a - (w @ x + b)
    u = diff / std**2
    return np.concatenate([np.outer(u, x).reshape(-1), u, (diff / std) ** 2 - 1.0])


def reinforce_loss(theta: np.ndarray, t: int) -> float:
    """Task t's inner loss: -(1 / real steps) * sum over real steps of log pi * advantage."""
    total = sum(
        log_prob(theta, TRAIN_OBS[t, i], TRAIN_ACT[t, i]) * TRAIN_ADV[t, i]
        for i in range(TRAIN_MASK.shape[1])
        if TRAIN_MASK[t, i]
    )
    return -total / TRAIN_MASK[t].sum()


def inner_step(theta: np.ndarray, t: int) -> np.ndarray:
    """theta - lr * grad of ``reinforce_loss`` (the gradient by the closed form above)."""
    grad = (
        -sum(
            grad_log_prob(theta, TRAIN_OBS[t, i], TRAIN_ACT[t, i]) * TRAIN_ADV[t, i]
            for i in range(TRAIN_MASK.shape[1])
            if TRAIN_MASK[t, i]
        )
        / TRAIN_MASK[t].sum()
    )
    return theta - INNER_LR * grad


OLD = [inner_step(THETA0, t) for t in range(N_TASKS)]  # the policies that collected VALID


def gaussian_kl(theta_p: np.ndarray, theta_q: np.ndarray, x: np.ndarray) -> float:
    """KL(p || q) of the two policies at x: per entry log(s_q / s_p)
    + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2, summed."""
    wp, bp, lp = unpack(theta_p)
    wq, bq, lq = unpack(theta_q)
    dm = (wp @ x + bp) - (wq @ x + bq)
    return float(np.sum(lq - lp + (np.exp(2 * lp) + dm**2) / (2 * np.exp(2 * lq)) - 0.5))


def task_mean(values, t: int) -> float:
    """Mean of ``values(i)`` over task t's real validation steps (a plain loop)."""
    real = [i for i in range(VALID_MASK.shape[1]) if VALID_MASK[t, i]]
    return sum(values(i) for i in real) / len(real)


def surrogate(theta: np.ndarray) -> float:
    """-(mean over tasks of the mean over real steps of ratio * advantage)."""
    per_task = []
    for t in range(N_TASKS):
        adapted = inner_step(theta, t)

        def term(i, t=t, adapted=adapted):
            x, a = VALID_OBS[t, i], VALID_ACT[t, i]
            ratio = math.exp(log_prob(adapted, x, a) - log_prob(OLD[t], x, a))
            return ratio * VALID_ADV[t, i]

        per_task.append(task_mean(term, t))
    return -sum(per_task) / N_TASKS


def mean_kl(theta: np.ndarray, tasks=range(N_TASKS)) -> float:
    """Mean over ``tasks`` of the mean over real steps of KL(old adapted || new adapted)."""
    tasks = list(tasks)
    total = 0.0
    for t in tasks:
        adapted = inner_step(theta, t)
        total += task_mean(lambda i, t=t, q=adapted: gaussian_kl(OLD[t], q, VALID_OBS[t, i]), t)
    return total / len(tasks)


def fd_hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    n = theta.size
    out = np.zeros((n, n))
    eye = np.eye(n) * h
    for j in range(n):
        for k in range(n):
            out[j, k] = (
                f(theta + eye[j] + eye[k])
                - f(theta + eye[j] - eye[k])
                - f(theta - eye[j] + eye[k])
                + f(theta - eye[j] - eye[k])
            ) / (4 * h * h)
    return out


# ------------------------------------------------------------------ construction (one place)
def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


SLICES = {"layers.0.weight": slice(0, A * D), "layers.0.bias": slice(A * D, A * D + A),
          "log_std": slice(A * D + A, P)}  # fmt: skip
"""Where each named parameter sits in the hand layout."""


def make_policy() -> GaussianMLPPolicy:
    policy = GaussianMLPPolicy(MLPSpec(D, A, (), "tanh")).double()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            p.copy_(t64(THETA0[SLICES[name]]).view_as(p))
    return policy


def hand_order(policy: GaussianMLPPolicy) -> np.ndarray:
    """``idx`` with ``hand[idx] = flat`` for ``flat`` laid out as ``policy.parameters()``."""
    return np.concatenate([np.arange(P)[SLICES[name]] for name, _ in policy.named_parameters()])


def make_data() -> AdaptationData:
    def batch(obs, act, adv, mask) -> ProcessedBatch:
        return ProcessedBatch(
            observations=t64(obs), actions=t64(act), mask=t64(mask), advantages=t64(adv),
            mean_return=0.0, explained_variance=0.0,
        )  # fmt: skip

    old = [unpack(theta) for theta in OLD]
    old_params = {
        "layers.0.weight": t64(np.stack([w for w, _, _ in old])),
        "layers.0.bias": t64(np.stack([b for _, b, _ in old])),
        "log_std": t64(np.stack([s for _, _, s in old])),
    }
    return AdaptationData(
        train=[batch(TRAIN_OBS, TRAIN_ACT, TRAIN_ADV, TRAIN_MASK)],
        valid=batch(VALID_OBS, VALID_ACT, VALID_ADV, VALID_MASK),
        old_params=old_params, returns_per_step=[0.0, 0.0],
        per_task_returns=torch.zeros(2, N_TASKS), env_steps=0,
    )  # fmt: skip


def make_update(policy: GaussianMLPPolicy, *, chunk_tasks: int, fisher_subsample: float):
    """MAML's inner loop (plain SGD at INNER_LR, second order) under the TRPO outer update."""
    settings = dict(inner_steps=1, first_order=False, discount=0.99, gae_lambda=1.0,
                    device=torch.device("cpu"))  # fmt: skip
    inner = MAMLInnerLoop(policy, None, SGDRule(INNER_LR), **settings)
    return TRPOUpdate(inner, max_kl=MAX_KL, cg_iters=20, cg_damping=0.0, ls_max_backtracks=15,
                      ls_backtrack_ratio=0.8, fisher="full", fisher_subsample=fisher_subsample,
                      chunk_tasks=chunk_tasks)  # fmt: skip


def run_update(*, chunk_tasks: int = 0, fisher_subsample: float = 1.0):
    """One real ``update()``; returns its stats, the gradient and the Fisher matrix it used
    (``F e_j`` for every basis vector, taken from the product it gives CG before any step),
    and the parameters after the step."""
    policy = make_policy()
    update = make_update(policy, chunk_tasks=chunk_tasks, fisher_subsample=fisher_subsample)
    seen = {}
    real_cg = maml_trpo.conjugate_gradient

    def spy(matvec, b, *args, **kwargs):
        seen["grad"] = b.detach().clone().numpy()
        seen["fisher"] = np.stack([matvec(t64(e)).detach().clone().numpy() for e in np.eye(P)])
        return real_cg(matvec, b, *args, **kwargs)

    with mock.patch.object(maml_trpo, "conjugate_gradient", spy):
        stats = update.update(make_data())
    # back to the hand layout ([W, b, log_std]) from the update's (policy.parameters() order)
    idx = hand_order(policy)
    grad, fisher, after = np.empty(P), np.empty((P, P)), np.empty(P)
    grad[idx] = seen["grad"]
    fisher[np.ix_(idx, idx)] = seen["fisher"].T  # column j is F e_j
    after[idx] = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().numpy()
    return stats, grad, fisher, after


# ------------------------------------------------------------------ tests
def test_the_hand_model_is_self_consistent():
    """The closed-form inner gradient is the finite-difference gradient of the REINFORCE loss,
    the step matters, and the old policies give ratio 1 (the hand surrogate is -0.6)."""
    for t in range(N_TASKS):
        closed = (THETA0 - inner_step(THETA0, t)) / INNER_LR
        numeric = fd_gradient(lambda th, t=t: reinforce_loss(th, t), THETA0)
        np.testing.assert_allclose(closed, numeric, rtol=1e-7, atol=1e-9)
        assert np.abs(OLD[t] - THETA0).max() > 0.05
    assert surrogate(THETA0) == pytest.approx(SURROGATE_AT_RATIO_1, abs=1e-15)
    assert mean_kl(THETA0) == 0.0


CHUNKS = pytest.mark.parametrize("chunk_tasks", [0, 1, 2])  # 0 = the whole meta-batch
SUBSAMPLES = pytest.mark.parametrize("fisher_subsample", [1.0, 0.5])


@functools.cache
def updated(chunk_tasks: int, fisher_subsample: float):
    return run_update(chunk_tasks=chunk_tasks, fisher_subsample=fisher_subsample)


@functools.cache
def hand_gradient() -> np.ndarray:
    return fd_gradient(surrogate, THETA0)


@functools.cache
def hand_fisher(fisher_subsample: float) -> np.ndarray:
    """The Hessian of the mean KL over the Fisher's tasks: all 3, or for fisher_subsample 0.5
    every 2nd task (0 and 2), so the mean is over those 2."""
    tasks = range(0, N_TASKS, 1 if fisher_subsample == 1.0 else 2)
    return fd_hessian(lambda th: mean_kl(th, tasks), THETA0)


@CHUNKS
@SUBSAMPLES
def test_surrogate_before_the_step_is_minus_the_mean_advantage(chunk_tasks, fisher_subsample):
    """Every ratio is 1 at the old policies: -(mean over tasks of mean advantages) = -0.6."""
    stats, *_ = updated(chunk_tasks, fisher_subsample)
    assert stats["loss/surrogate_before"] == pytest.approx(SURROGATE_AT_RATIO_1, abs=1e-12)


@CHUNKS
@SUBSAMPLES
def test_gradient_is_the_finite_difference_gradient_of_the_hand_surrogate(
    chunk_tasks, fisher_subsample
):
    """The gradient of the loss (not of the objective), through the second-order inner step."""
    stats, grad, _, _ = updated(chunk_tasks, fisher_subsample)
    np.testing.assert_allclose(grad, hand_gradient(), rtol=1e-6, atol=1e-8)
    assert stats["trpo/grad_norm"] == pytest.approx(np.linalg.norm(hand_gradient()), rel=1e-6)
    # pinned: the numpy model's own numbers (a sign flip or a lost inner step moves them)
    np.testing.assert_allclose(hand_gradient()[[0, 4, 7]], PINNED_GRAD, rtol=1e-6)


@CHUNKS
@SUBSAMPLES
def test_fisher_is_the_finite_difference_hessian_of_the_mean_kl(chunk_tasks, fisher_subsample):
    """The product the update gives CG (undamped here) is the Hessian of the mean over the
    Fisher's tasks of the mean over real steps of KL(old adapted || new adapted)."""
    _, _, fisher, _ = updated(chunk_tasks, fisher_subsample)
    np.testing.assert_allclose(fisher, hand_fisher(fisher_subsample), rtol=1e-5, atol=1e-6)


@CHUNKS
@SUBSAMPLES
def test_step_is_the_natural_gradient_scaled_to_the_trust_region(chunk_tasks, fisher_subsample):
    """-beta F^-1 g with 0.5 beta^2 s^T F s = max_kl, times the accepted fraction."""
    stats, _, _, after = updated(chunk_tasks, fisher_subsample)
    assert stats["trpo/linesearch_accepted"] == 1.0
    fisher, grad = hand_fisher(fisher_subsample), hand_gradient()
    s = np.linalg.solve(fisher, grad)
    full_step = -s * math.sqrt(MAX_KL / (0.5 * s @ fisher @ s))
    fraction = stats["trpo/linesearch_step_fraction"]
    # CG stops once r.r < 1e-10, which leaves ~1e-4 of the step at this conditioning (~30)
    tolerance = 1e-3 * fraction * np.abs(full_step).max()
    np.testing.assert_allclose(after - THETA0, fraction * full_step, rtol=0, atol=tolerance)


@CHUNKS
@SUBSAMPLES
def test_line_search_reports_the_hand_surrogate_and_kl_after_the_step(
    chunk_tasks, fisher_subsample
):
    """After the step: the surrogate and the mean KL over all tasks (whatever the Fisher's)."""
    stats, _, _, after = updated(chunk_tasks, fisher_subsample)
    assert stats["loss/surrogate_after"] == pytest.approx(surrogate(after), rel=1e-10, abs=1e-12)
    assert stats["trpo/kl"] == pytest.approx(mean_kl(after), rel=1e-9, abs=1e-14)
    assert 0.0 < stats["trpo/kl"] <= MAX_KL
    assert stats["loss/surrogate_after"] < SURROGATE_AT_RATIO_1
