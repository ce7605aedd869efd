"""Reptile (Nichol et al. 2018) for RL: meta-learning without second derivatives.

One meta-iteration, for a meta-batch of T tasks:

1. every task takes k policy-gradient steps from theta on fresh episodes after
   each step (the MAML inner loop's sampling, baseline and advantages:
   :meth:`~metarl.algos.maml.MAMLInnerLoop.collect`), ending at phi_k; the episodes
   of phi_k are sampled too, so ``adapt/return_step_k`` means what it means for MAML;
2. ``theta <- theta + epsilon * mean over tasks of (phi_k - theta)``
   (:func:`reptile_step`), epsilon annealed linearly if asked.

A gradient-family member (:mod:`metarl.algos.gradient_family`): the inner rule is
plain gradient descent at ``inner_lr`` (MAML's) or :class:`AdamRule` at ``inner_lr``
with fresh moments per task, as in the paper (``reptile_inner_optimizer``); the
outer update is :class:`ReptileUpdate`. Meta-testing adapts exactly as training
does: ``eval_adapt_steps`` inner steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from metarl.algos.gradient_family import (
    InnerLoopOptions,
    NoLearnedState,
    OuterSpec,
    RuleSpec,
    SGDRule,
    gradient_member,
)
from metarl.algos.maml import AdaptationData, MAMLInnerLoop
from metarl.functional import AdamState, TaskParams, adam_adapt
from metarl.optim import scheduled_lr
from metarl.options import option

if TYPE_CHECKING:
    from metarl.config import Config


@dataclass
class ReptileOptions:
    """Reptile outer update: the config keys of its inner steps and its outer step"""

    reptile_inner_steps: int = option(
        3, "Reptile: policy-gradient steps per task from theta before the outer step (k)", min=1
    )
    reptile_outer_lr: float = option(
        1.0, "Reptile: outer step size epsilon of theta += epsilon * mean(phi_k - theta)", min=0.0
    )
    reptile_outer_lr_anneal: bool = option(
        False,
        "Reptile: anneal epsilon linearly from reptile_outer_lr to reptile_outer_lr / "
        "iterations over the configured iterations",
    )
    reptile_inner_optimizer: str = option(
        "sgd",
        "Reptile: the inner optimiser: 'sgd' (MAML's gradient step at inner_lr) or 'adam' "
        "(Adam at inner_lr, fresh moments per task, as Nichol et al.)",
        choices=("sgd", "adam"),
    )


def reptile_step(
    theta: Mapping[str, torch.Tensor], adapted: TaskParams, outer_lr: float
) -> dict[str, torch.Tensor]:
    """``theta + outer_lr * mean_t(adapted_t - theta)`` per parameter.

    Args:
        theta: the meta-parameters, each of its own shape.
        adapted: each task's parameters after the inner steps, ``[T, ...]`` per name.
    Returns:
        the new meta-parameters (new tensors, no graph).
    """
    with torch.no_grad():
        return {k: theta[k] + outer_lr * (adapted[k] - theta[k]).mean(0) for k in theta}


class AdamRule(NoLearnedState):
    """Reptile's optional inner rule: Adam at ``lr`` with fresh moments per task and call.

    For acting only: Adam's step is not differentiated through, so it pairs with
    Reptile's outer update alone.
    """

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def act_step(
        self, params: TaskParams, loss, state: AdamState | None
    ) -> tuple[TaskParams, AdamState]:
        return adam_adapt(params, loss, lr=self.lr, state=state)  # moments afresh per task


class ReptileUpdate:
    """Reptile's outer update: ``theta += epsilon * mean_t(phi_t - theta)``, in place."""

    kl_key = None
    rejected_key = "reptile/rejected_nonfinite"

    def __init__(
        self, inner: MAMLInnerLoop, *, outer_lr: float, outer_lr_anneal_iterations: int
    ) -> None:
        self.policy = inner.policy
        self.outer_lr = outer_lr
        self.outer_lr_anneal_iterations = outer_lr_anneal_iterations  # 0 = constant

    def update(self, data: AdaptationData, iteration: int) -> dict[str, float]:
        """Move theta toward the tasks' adapted parameters (``data.old_params``, the
        parameters after the last inner step); a non-finite step leaves theta as it was."""
        outer_lr = scheduled_lr(self.outer_lr, iteration, self.outer_lr_anneal_iterations)
        theta = {k: v.detach() for k, v in self.policy.params().items()}
        new = reptile_step(theta, data.old_params, outer_lr)
        step_norm = torch.sqrt(sum((new[k] - theta[k]).pow(2).sum() for k in theta))
        scalars = {"reptile/outer_lr": outer_lr, "reptile/step_norm": float(step_norm)}
        if not bool(torch.isfinite(step_norm)):
            scalars[self.rejected_key] = 1.0
            return scalars
        with torch.no_grad():
            for name, param in self.policy.named_parameters():
                param.copy_(new[name])
        return scalars

    def state_dict(self) -> dict:
        # epsilon is a function of the iteration: no state
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


def build_reptile_update(config: Config, inner: MAMLInnerLoop) -> ReptileUpdate:
    """Reptile's outer update of ``config``'s :class:`ReptileOptions`."""
    options = config.group(ReptileOptions)
    anneal = config.iterations if options.reptile_outer_lr_anneal else 0
    return ReptileUpdate(inner, outer_lr=options.reptile_outer_lr,
                         outer_lr_anneal_iterations=anneal)  # fmt: skip


def reptile_rule(config: Config, policy, device: torch.device) -> SGDRule | AdamRule:
    """Reptile's inner rule: SGD or Adam at ``inner_lr`` (``reptile_inner_optimizer``)."""
    lr = config.group(InnerLoopOptions).inner_lr
    adam = config.group(ReptileOptions).reptile_inner_optimizer == "adam"
    return AdamRule(lr) if adam else SGDRule(lr)


REPTILE = OuterSpec(
    "reptile",
    (ReptileOptions,),
    inner_steps=lambda config: config.group(ReptileOptions).reptile_inner_steps,
    build=build_reptile_update,
    replays=False,
)
"""Reptile's interpolation: no differentiation through the inner steps."""

ALGORITHM = gradient_member(
    "reptile",
    "Reptile: k inner policy-gradient steps per task, theta moved toward their mean",
    rule=RuleSpec(groups=(), build=reptile_rule, differentiable=False),
    outers=(REPTILE,),
)
