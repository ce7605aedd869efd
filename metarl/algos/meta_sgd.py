"""Meta-SGD (Li et al. 2017) for RL: MAML whose inner step size is learned, one per parameter.

A gradient-family member (:mod:`metarl.algos.gradient_family`): the inner rule
:class:`PerParameterStepSizes`, ``phi = theta - alpha * grad L(theta)`` (elementwise),
with ``alpha`` a tensor of each parameter's shape, initialised to ``inner_lr``; the
outer update, TRPO (default) or PPO as for MAML (``--outer``), meta-trains ``alpha``
with ``theta`` through the same second-order path: ``alpha`` is one more entry of
:meth:`~metarl.algos.maml.MAMLInnerLoop.meta_parameters`. With ``alpha`` frozen at
``inner_lr`` everything is MAML's. ``alpha`` is unconstrained, as in the paper (a
negative entry steps up that coordinate's gradient).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from metarl.algos.gradient_family import InnerLoopOptions, RuleSpec, gradient_member
from metarl.algos.maml_ppo import PPO
from metarl.algos.maml_trpo import TRPO
from metarl.functional import TaskParams, adapt

if TYPE_CHECKING:
    from metarl.config import Config


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


class LearnedStepRule:
    """Meta-SGD's inner rule: ``theta - alpha * grad`` with the learned ``alpha``."""

    def __init__(self, step_sizes: PerParameterStepSizes) -> None:
        self.step_sizes = step_sizes

    def act_step(self, params: TaskParams, loss, state: Any) -> tuple[TaskParams, Any]:
        """The step with ``alpha`` as constants: what the sampler acts with."""
        return adapt(params, loss, lr=self.step_sizes.as_dict(detach=True),
                     first_order=True), None  # fmt: skip

    def replay_step(
        self, params: TaskParams, loss, state: Any, *, first_order: bool, create_graph: bool
    ) -> tuple[TaskParams, Any]:
        """The same step, differentiable w.r.t. ``alpha`` too when ``create_graph``."""
        return adapt(params, loss, lr=self.step_sizes.as_dict(detach=not create_graph),
                     first_order=first_order), None  # fmt: skip

    def parameters(self) -> list[nn.Parameter]:
        return list(self.step_sizes.parameters())

    def stats(self) -> dict[str, float]:
        return self.step_sizes.stats()

    def state_dict(self) -> dict:
        return {"step_sizes": self.step_sizes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.step_sizes.load_state_dict(state["step_sizes"])


def learned_step_sizes(config: Config, policy: nn.Module, device: torch.device) -> LearnedStepRule:
    """Meta-SGD's rule: step sizes of the policy's shapes, initialised to ``inner_lr``."""
    alpha = PerParameterStepSizes(policy, config.group(InnerLoopOptions).inner_lr)
    return LearnedStepRule(alpha.to(device))


ALGORITHM = gradient_member(
    "meta-sgd",
    "Meta-SGD: MAML with a learned per-parameter inner step size (TRPO or PPO outside)",
    rule=RuleSpec(groups=(), build=learned_step_sizes),
    outers=(TRPO, PPO),
)
