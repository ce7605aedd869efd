"""Functional, task-batched policy maths for MAML: parameters in, new parameters out.

Parameters are dicts of tensors with a leading task axis ``[T, ...]`` (names as
in :class:`~metarl.policies.GaussianMLPPolicy`). The meta-parameters are
*expanded* to ``[T, ...]`` (a differentiable view), so one backward pass over
the sum of the per-task losses yields every task's own gradient at once, and
the meta-gradient flows back through the expansion. Nothing here mutates a
module; ``adapt`` returns a new dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from metarl.policies.gaussian_mlp import MLPSpec, gaussian_log_prob

TaskParams = dict[str, torch.Tensor]
StepSize = float | Mapping[str, torch.Tensor]
"""An inner learning rate: one number, or one tensor per parameter of the parameter's
shape (without the task axis; Meta-SGD's learned alpha), applied elementwise."""


def expand_params(params: Mapping[str, torch.Tensor], n_tasks: int) -> TaskParams:
    """Broadcast shared parameters to ``[n_tasks, ...]`` without copying (differentiable)."""
    return {k: v.unsqueeze(0).expand(n_tasks, *v.shape) for k, v in params.items()}


def batched_mean(
    spec: MLPSpec, params: Mapping[str, torch.Tensor], obs: torch.Tensor
) -> torch.Tensor:
    """Action means of T policies on their own observations.

    Args:
        params: ``layers.i.weight`` ``[T, out, in]``, ``layers.i.bias`` ``[T, out]``.
        obs: ``[T, N, obs_dim]``.
    Returns:
        ``[T, N, act_dim]``.
    """
    x = obs
    for i in range(spec.n_layers):
        x = torch.baddbmm(
            params[f"layers.{i}.bias"].unsqueeze(1), x, params[f"layers.{i}.weight"].transpose(1, 2)
        )
        if i < spec.n_layers - 1:
            x = torch.relu(x) if spec.activation == "relu" else torch.tanh(x)
    return x


def batched_log_prob(
    spec: MLPSpec, params: Mapping[str, torch.Tensor], obs: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """Log-density of ``actions [T, N, A]`` under each task's policy -> ``[T, N]``."""
    return gaussian_log_prob(
        actions, batched_mean(spec, params, obs), params["log_std"].unsqueeze(1)
    )


def batched_kl(
    spec: MLPSpec,
    old_params: Mapping[str, torch.Tensor],
    new_params: Mapping[str, torch.Tensor],
    obs: torch.Tensor,
) -> torch.Tensor:
    """KL(pi_old || pi_new) per observation for diagonal Gaussians -> ``[T, N]``."""
    return diag_gaussian_kl(
        batched_mean(spec, old_params, obs),
        old_params["log_std"].unsqueeze(1),
        batched_mean(spec, new_params, obs),
        new_params["log_std"].unsqueeze(1),
    )


def diag_gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_p, std_p) || N(mean_q, std_q)) summed over the last axis (broadcasting)."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    mean_term = (mean_p - mean_q).pow(2) * torch.exp(-2 * log_std_q)
    return (0.5 * (var_ratio + mean_term - 1.0) + log_std_q - log_std_p).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis counting only ``mask == 1`` entries: ``[T, N] -> [T]``."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def adapt(
    params: TaskParams,
    inner_loss: Callable[[TaskParams], torch.Tensor],
    *,
    lr: StepSize,
    first_order: bool,
) -> TaskParams:
    """One gradient step per task: ``theta_i' = theta_i - lr * grad_i L_i(theta_i)``.

    Args:
        params: ``[T, ...]`` parameters (each task's slice affects only its own loss).
        inner_loss: maps params to the per-task losses ``[T]``.
        lr: the step size, a number or a tensor per parameter (``lr[name]`` of the
            parameter's shape, broadcast over the tasks); differentiable when it is one.
        first_order: treat the inner gradient as a constant (FOMAML); otherwise
            keep its graph so the meta-gradient includes second-order terms.
    Returns:
        the adapted ``[T, ...]`` parameters (a new dict).
    """
    names = list(params)
    grads = inner_gradients(params, inner_loss, create_graph=not first_order)
    return {k: params[k] - _step_size(lr, k) * grads[k] for k in names}


def inner_gradients(
    params: TaskParams, inner_loss: Callable[[TaskParams], torch.Tensor], *, create_graph: bool
) -> TaskParams:
    """Every task's gradient of its own loss, in one backward pass: ``[T, ...]`` per name.

    Without ``create_graph`` the gradients are detached constants.
    """
    names = list(params)
    with torch.enable_grad():
        losses = inner_loss(params)
        grads = torch.autograd.grad(
            losses.sum(), [params[k] for k in names], create_graph=create_graph
        )
    return {k: g if create_graph else g.detach() for k, g in zip(names, grads)}


def _step_size(lr: StepSize, name: str) -> float | torch.Tensor:
    return lr if isinstance(lr, (int, float)) else lr[name]


@dataclass
class AdamState:
    """Per-task Adam moments of an inner loop (``[T, ...]`` per name) and the step count."""

    first: TaskParams
    second: TaskParams
    steps: int


def adam_adapt(
    params: TaskParams,
    inner_loss: Callable[[TaskParams], torch.Tensor],
    *,
    lr: float,
    state: AdamState | None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[TaskParams, AdamState]:
    """One first-order Adam step per task (Reptile's inner optimiser in Nichol et al. 2018).

    Each task has its own moments; ``state=None`` starts them at zero. The
    gradients are constants (no graph): Reptile never differentiates through it.
    Returns the new ``[T, ...]`` parameters (new leaves, ready for the next step's
    gradient) and the new state.
    """
    grads = inner_gradients(params, inner_loss, create_graph=False)
    b1, b2 = betas
    if state is None:
        zeros = {k: torch.zeros_like(g) for k, g in grads.items()}
        state = AdamState(first=zeros, second=dict(zeros), steps=0)
    steps = state.steps + 1
    first = {k: b1 * state.first[k] + (1 - b1) * g for k, g in grads.items()}
    second = {k: b2 * state.second[k] + (1 - b2) * g * g for k, g in grads.items()}
    new = {}
    for k in params:
        m_hat = first[k] / (1 - b1**steps)
        v_hat = second[k] / (1 - b2**steps)
        new[k] = (params[k] - lr * m_hat / (v_hat.sqrt() + eps)).detach().requires_grad_()
    return new, AdamState(first, second, steps)
