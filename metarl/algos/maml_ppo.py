"""MAML-PPO (ProMP-style outer loop): clipped surrogate on post-adaptation data.

Each epoch replays the inner loop differentiably from the current
meta-parameters and takes one Adam step on the clipped importance-weighted
objective of the adapted policies on their validation episodes (Rothfuss et
al. 2019, "ProMP", without its inner KL penalty).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from metarl.algos.gradient_family import SGD, OuterSpec, gradient_member, replay_steps
from metarl.algos.maml import AdaptationData, MAMLInnerLoop
from metarl.algos.ppo import PPOOptions, lr_anneal_iterations
from metarl.functional import batched_log_prob, masked_mean
from metarl.optim import apply_scheduled_lr, clipped_surrogate, past_kl_target

if TYPE_CHECKING:
    from metarl.config import Config


class PPOUpdate:
    """The outer update of MAML-PPO; owns the Adam optimiser of the meta-parameters."""

    kl_key = "ppo/approx_kl"
    rejected_key = "ppo/rejected_nonfinite"

    def __init__(
        self,
        inner: MAMLInnerLoop,
        *,
        epochs: int,
        clip: float,
        lr: float,
        target_kl: float = 0.0,
        lr_anneal_iterations: int = 0,
    ) -> None:
        self.inner = inner
        self.policy = inner.policy
        self.epochs = epochs
        self.clip = clip
        self.target_kl = target_kl
        self.lr = lr
        self.lr_anneal_iterations = lr_anneal_iterations  # 0 = constant (see scheduled_lr)
        self.optimizer = torch.optim.Adam(inner.meta_parameters(), lr=lr)

    def update(self, data: AdaptationData, iteration: int = 0) -> dict[str, float]:
        valid, spec = data.valid, self.policy.spec
        lr = apply_scheduled_lr(self.optimizer, self.lr, iteration, self.lr_anneal_iterations)
        old_log_probs = batched_log_prob(
            spec, data.old_params, valid.observations, valid.actions
        ).detach()
        stats: dict[str, float] = {}
        # A non-finite epoch rejects the whole update: restore these (and Adam's state).
        meta_parameters = self.inner.meta_parameters()
        saved_params = [p.detach().clone() for p in meta_parameters]
        saved_optimizer = copy.deepcopy(self.optimizer.state_dict())
        stats["ppo/early_stop"] = 0.0
        stats["ppo/lr"] = lr
        for epoch in range(self.epochs):
            adapted = self.inner.adapted_params(data.train, create_graph=True)
            log_ratio = (
                batched_log_prob(spec, adapted, valid.observations, valid.actions) - old_log_probs
            )
            # Reductions: a mean over each task's real steps, then over tasks.
            terms = clipped_surrogate(log_ratio, valid.advantages, self.clip)
            approx_kl = float(masked_mean(terms.approx_kl, valid.mask).mean())
            # The latest measurement, the one that stops the update included: an update stopped
            # after its first epoch then reads the KL it reached, not the 0 it started from.
            stats["ppo/approx_kl"] = approx_kl
            if past_kl_target(approx_kl, self.target_kl):
                stats["ppo/early_stop"] = 1.0  # before the step, as stable-baselines3
                break
            loss = -masked_mean(terms.objective, valid.mask).mean()
            self.optimizer.zero_grad()
            loss.backward()
            grads_finite = all(
                p.grad is None or torch.isfinite(p.grad).all() for p in meta_parameters
            )
            if not (torch.isfinite(loss.detach()) and grads_finite):
                self.optimizer.zero_grad()
                with torch.no_grad():
                    for p, saved in zip(meta_parameters, saved_params):
                        p.copy_(saved)
                self.optimizer.load_state_dict(saved_optimizer)
                return {self.rejected_key: 1.0}
            self.optimizer.step()
            with torch.no_grad():
                if epoch == 0:
                    stats["loss/surrogate_before"] = float(loss.detach())
                stats["loss/surrogate_after"] = float(loss.detach())
                stats["ppo/clip_fraction"] = float(masked_mean(terms.clipped, valid.mask).mean())
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def build_ppo_update(config: Config, inner: MAMLInnerLoop) -> PPOUpdate:
    """The PPO outer update of ``config``'s :class:`PPOOptions` around ``inner``."""
    options = config.group(PPOOptions)
    return PPOUpdate(
        inner,
        epochs=options.ppo_epochs,
        clip=options.ppo_clip,
        lr=options.ppo_lr,
        target_kl=options.ppo_target_kl,
        lr_anneal_iterations=lr_anneal_iterations(options, config.iterations),
    )


PPO = OuterSpec("ppo", (PPOOptions,), replay_steps, build_ppo_update)
"""The PPO outer update, for any gradient-family member with a differentiable rule."""

ALGORITHM = gradient_member(
    "maml-ppo",
    "MAML with a clipped-surrogate (PPO) outer loop, ProMP-style",
    rule=SGD,
    outers=(PPO,),
)
