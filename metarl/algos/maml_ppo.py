"""MAML-PPO (ProMP-style outer loop): clipped surrogate on post-adaptation data.

Each epoch replays the inner loop differentiably from the current
meta-parameters and takes one Adam step on the clipped importance-weighted
objective of the adapted policies on their validation episodes (Rothfuss et
al. 2019, "ProMP", without its inner KL penalty).
"""

from __future__ import annotations

import copy

import torch

from metarl.algos.maml import AdaptationData, MAMLInnerLoop
from metarl.functional import batched_log_prob, masked_mean
from metarl.optim import clipped_surrogate, past_kl_target, scheduled_lr, set_learning_rate


class PPOUpdate:
    """The outer update of MAML-PPO; owns the Adam optimiser of the meta-parameters."""

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
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.rejected_updates = 0

    def update(self, data: AdaptationData, iteration: int = 0) -> dict[str, float]:
        valid, spec = data.valid, self.policy.spec
        lr = scheduled_lr(self.lr, iteration, self.lr_anneal_iterations)
        set_learning_rate(self.optimizer, lr)
        old_log_probs = batched_log_prob(
            spec, data.old_params, valid.observations, valid.actions
        ).detach()
        stats: dict[str, float] = {}
        # A non-finite epoch rejects the whole update: restore these (and Adam's state).
        saved_params = [p.detach().clone() for p in self.policy.parameters()]
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
                p.grad is None or torch.isfinite(p.grad).all() for p in self.policy.parameters()
            )
            if not (torch.isfinite(loss.detach()) and grads_finite):
                self.rejected_updates += 1
                self.optimizer.zero_grad()
                with torch.no_grad():
                    for p, saved in zip(self.policy.parameters(), saved_params):
                        p.copy_(saved)
                self.optimizer.load_state_dict(saved_optimizer)
                return {"ppo/rejected_nonfinite": 1.0}
            self.optimizer.step()
            with torch.no_grad():
                if epoch == 0:
                    stats["loss/surrogate_before"] = float(loss.detach())
                stats["loss/surrogate_after"] = float(loss.detach())
                stats["ppo/clip_fraction"] = float(masked_mean(terms.clipped, valid.mask).mean())
        return stats

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "rejected_updates": self.rejected_updates}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.rejected_updates = int(state.get("rejected_updates", 0))
