"""Reptile (Nichol et al. 2018) for RL: meta-learning without second derivatives.

One meta-iteration, for a meta-batch of T tasks:

1. every task takes k policy-gradient steps from theta on fresh episodes after
   each step (the MAML inner loop's sampling, baseline and advantages:
   :meth:`~metarl.algos.maml.MAMLInnerLoop.collect`), ending at phi_k; the episodes
   of phi_k are sampled too, so ``adapt/return_step_k`` means what it means for MAML;
2. ``theta <- theta + epsilon * mean over tasks of (phi_k - theta)``
   (:func:`reptile_step`), epsilon annealed linearly if asked.

The inner optimiser is plain gradient descent at ``inner_lr`` (MAML's inner
step) or Adam at ``inner_lr`` with fresh moments per task, as in the paper.
Meta-testing adapts exactly as training does: ``eval_adapt_steps`` inner steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from metarl.algos.base import ActorRun, AdaptationCurve, Algorithm, IterationResult
from metarl.algos.maml import (
    MAMLInnerLoop,
    MAMLOptions,
    build_inner_loop,
    build_mlp_policy,
    iteration_result,
)
from metarl.functional import TaskParams
from metarl.optim import scheduled_lr
from metarl.options import ConfigError, option

if TYPE_CHECKING:
    from metarl.config import Config


@dataclass
class ReptileOptions:
    """Reptile: the config keys of its inner steps and its outer step."""

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


class Reptile:
    """The Reptile meta-learner (a :class:`~metarl.algos.base.MetaLearner`)."""

    name = "reptile"
    adaptation_unit = "step"  # a policy-gradient step, as for MAML

    def __init__(
        self,
        inner: MAMLInnerLoop,
        *,
        inner_steps: int,
        outer_lr: float,
        outer_lr_anneal_iterations: int,
        episodes_per_task: int,
    ) -> None:
        self.inner = inner
        self.policy = inner.policy
        self.inner_steps = inner_steps
        self.outer_lr = outer_lr
        self.outer_lr_anneal_iterations = outer_lr_anneal_iterations  # 0 = constant
        self.episodes_per_task = episodes_per_task

    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        data = self.inner.collect(
            tasks,
            episodes_per_task=self.episodes_per_task,
            batch_key=(iteration, "train"),
            adapt_steps=self.inner_steps,
        )
        start = time.perf_counter()
        outer_lr = scheduled_lr(self.outer_lr, iteration, self.outer_lr_anneal_iterations)
        theta = {k: v.detach() for k, v in self.policy.params().items()}
        new = reptile_step(theta, data.old_params, outer_lr)
        step_norm = torch.sqrt(sum((new[k] - theta[k]).pow(2).sum() for k in theta))
        rejected = not bool(torch.isfinite(step_norm))
        if not rejected:  # a non-finite step leaves theta as it was; the loop counts it
            with torch.no_grad():
                for name, param in self.policy.named_parameters():
                    param.copy_(new[name])
        scalars = {"reptile/outer_lr": outer_lr, "reptile/step_norm": float(step_norm)}
        if rejected:
            scalars["reptile/rejected_nonfinite"] = 1.0
        return iteration_result(
            data,
            scalars,
            update_seconds=time.perf_counter() - start,
            rejected=rejected,
            kl=None,
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Each task's returns and infos after k = 0..adapt_steps inner steps: ``[K + 1, T]``."""
        return self.inner.meta_test(
            tasks, adapt_steps=adapt_steps, episodes_per_task=episodes_per_task, batch_key=batch_key
        )

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """The policy before and after each inner step, as :meth:`meta_test` adapts it."""
        return self.inner.adapted_actors(
            tasks, adapt_steps=adapt_steps, episodes_per_task=episodes_per_task, batch_key=batch_key
        )

    def state_dict(self) -> dict:
        # epsilon is a function of the iteration and inner Adam starts afresh per task: no state
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])


def build_reptile(config: Config, policy, sampler, device: torch.device) -> Reptile:
    """Reptile from ``config``'s :class:`ReptileOptions` (and ``inner_lr``, ``gae_lambda``)."""
    inner = build_inner_loop(
        config, policy, sampler, device, inner_optimizer=config.reptile_inner_optimizer
    )
    return Reptile(
        inner,
        inner_steps=config.reptile_inner_steps,
        outer_lr=config.reptile_outer_lr,
        outer_lr_anneal_iterations=config.iterations if config.reptile_outer_lr_anneal else 0,
        episodes_per_task=config.episodes_per_task,
    )


def validate_reptile(config: Config) -> None:
    """MAML's keys that mean nothing to Reptile are refused rather than silently ignored."""
    if config.inner_steps != 1:
        raise ConfigError(
            f"config key 'inner_steps': {config.inner_steps!r} does not apply to reptile; "
            "its inner steps are reptile_inner_steps"
        )
    if config.first_order:
        raise ConfigError(
            "config key 'first_order': reptile is first-order by construction; leave it off"
        )


ALGORITHM = Algorithm(
    name="reptile",
    summary="Reptile: k inner policy-gradient steps per task, theta moved toward their mean",
    option_groups=(MAMLOptions, ReptileOptions),
    build_policy=build_mlp_policy,
    build_learner=build_reptile,
    validate=validate_reptile,
)
