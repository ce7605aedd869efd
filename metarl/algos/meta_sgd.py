"""Meta-SGD (Li et al. 2017) for RL: MAML whose inner step size is learned, one per parameter.

The inner step is ``phi = theta - alpha * grad L(theta)`` (elementwise), with
``alpha`` a tensor of each parameter's shape, initialised to ``inner_lr``. The
outer loop, TRPO or PPO exactly as for MAML (``meta_sgd_outer``), meta-trains
``alpha`` with ``theta`` through the same second-order path: ``alpha`` is one
more entry of :meth:`~metarl.algos.maml.MAMLInnerLoop.meta_parameters`. With
``alpha`` frozen at ``inner_lr`` everything is MAML's. ``alpha`` is unconstrained,
as in the paper (a negative entry steps up that coordinate's gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from metarl.algos.base import Algorithm
from metarl.algos.maml import MAML, MAMLOptions, build_inner_loop, build_mlp_policy
from metarl.algos.maml_ppo import build_ppo_update
from metarl.algos.maml_trpo import TRPOOptions, build_trpo_update
from metarl.algos.ppo import PPOOptions
from metarl.options import option

if TYPE_CHECKING:
    from metarl.config import Config


@dataclass
class MetaSGDOptions:
    """Meta-SGD: which outer loop meta-trains the step sizes with the policy."""

    meta_sgd_outer: str = option(
        "trpo",
        "Meta-SGD's outer loop: 'trpo' (the MAML-TRPO keys) or 'ppo' (the PPO keys)",
        choices=("trpo", "ppo"),
    )


class PerParameterStepSizes(nn.Module):
    """alpha: one learned step size per entry of every policy parameter.

    Its parameters are ``alpha.{i}`` in the order of ``policy.named_parameters()``;
    :meth:`as_dict` names them as the policy does (``layers.0.weight``, ...).
    """

    def __init__(self, policy: nn.Module, init: float) -> None:
        super().__init__()
        self.names = [name for name, _ in policy.named_parameters()]
        self.alpha = nn.ParameterList(
            nn.Parameter(torch.full_like(p.detach(), float(init))) for p in policy.parameters()
        )

    def as_dict(self, *, detach: bool) -> dict[str, torch.Tensor]:
        return {n: a.detach() if detach else a for n, a in zip(self.names, self.alpha)}

    def stats(self) -> dict[str, float]:
        """``alpha/<parameter>/{mean,min,max}`` for TensorBoard."""
        out = {}
        for name, a in zip(self.names, self.alpha):
            values = a.detach()
            out[f"alpha/{name}/mean"] = float(values.mean())
            out[f"alpha/{name}/min"] = float(values.min())
            out[f"alpha/{name}/max"] = float(values.max())
        return out


def build_meta_sgd(config: Config, policy, sampler, device: torch.device) -> MAML:
    """Meta-SGD from ``config``: MAML's inner loop with learned step sizes, TRPO or PPO outside."""
    step_sizes = PerParameterStepSizes(policy, config.inner_lr).to(device)
    inner = build_inner_loop(config, policy, sampler, device, step_sizes=step_sizes)
    build_outer = build_trpo_update if config.meta_sgd_outer == "trpo" else build_ppo_update
    return MAML("meta-sgd", inner, build_outer(config, inner),
                episodes_per_task=config.episodes_per_task)  # fmt: skip


ALGORITHM = Algorithm(
    name="meta-sgd",
    summary="Meta-SGD: MAML with a learned per-parameter inner step size (TRPO or PPO outside)",
    option_groups=(MAMLOptions, TRPOOptions, PPOOptions, MetaSGDOptions),
    build_policy=build_mlp_policy,
    build_learner=build_meta_sgd,
)
