"""What MAML-PPO and RL2 share: the PPO config keys and the learning-rate schedule they set."""

from __future__ import annotations

from dataclasses import dataclass

from metarl.options import option


@dataclass
class PPOOptions:
    """PPO update: the config keys of the PPO outer update and RL2's policy update"""

    ppo_epochs: int = option(5, "PPO epochs over each meta-batch", min=1)
    ppo_clip: float = option(0.2, "PPO ratio clip epsilon", min=0.0)
    ppo_lr: float = option(1e-3, "PPO outer learning rate (Adam)", min=0.0)
    ppo_lr_anneal: bool = option(
        False,
        "anneal the PPO learning rate linearly from ppo_lr at the first iteration to "
        "ppo_lr / iterations at the last (cleanrl's anneal_lr); the schedule is of the "
        "configured iterations, so a resume that raises them raises the rate from there on",
    )
    ppo_target_kl: float = option(
        0.0,
        "stop an update's epochs before a step whose approximate KL to the batch's policy "
        "exceeds 1.5 x this (stable-baselines3's rule); 0 = never",
        min=0.0,
    )


def lr_anneal_iterations(options: PPOOptions, iterations: int) -> int:
    """The length of the PPO rate's linear anneal: the run's ``iterations``, or 0 (constant)."""
    return iterations if options.ppo_lr_anneal else 0
