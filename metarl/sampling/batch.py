"""The episode batch every learner consumes, and the sampler's errors.

Shapes (task-major): ``T`` tasks, ``E`` episodes per task, ``H`` the horizon,
``D`` the observation size, ``A`` the action size.

=================  ================  ===============================================
field              shape / dtype     meaning
=================  ================  ===============================================
observations       [T, E, H, D] f32  observation before step t; 0 after the end
actions            [T, E, H, A] f32  sampled (unclipped) action; 0 after the end
rewards            [T, E, H]    f32  reward of step t; 0 after the end
log_probs          [T, E, H]    f32  log pi(action | obs) of the acting policy
terminated         [T, E, H]    bool True at the step where the env terminated
mask               [T, E, H]    f32  1 on real steps, 0 on padding
lengths            [T, E]       i64  real steps of each episode (<= H)
returns            [T, E]       f32  undiscounted sum of the real rewards
final_observations [T, E, D]    f32  observation after the last real step
episode_infos      {key: [T, E]} f32 per ``episode_info_keys`` key: its max over the
                                     episode's steps (``{}`` for a family without keys)
=================  ================  ===============================================

An episode ends at the first of: the env terminates (``terminated`` is True at
that step), the env truncates itself, or ``H`` steps (truncation). Episodes are
never auto-reset, so there is no reward-0 step after an end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class SamplerError(RuntimeError):
    """Sampling failed: an env raised, a worker died, or the sampler is closed.

    The message names the family and the task; for a failure inside a worker
    it carries the worker's traceback text.
    """


class NonFiniteEnvError(SamplerError):
    """An env returned a NaN or infinite observation or reward."""


class UnguardedMainError(SamplerError):
    """The rollout workers could not start because they re-import the parent's script
    (they start by spawn) and its top level starts training again: bad input, exit 2."""


@dataclass
class EpisodeBatch:
    """Episodes of ``T`` tasks, ``E`` per task, padded to the horizon ``H`` (see module doc)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    terminated: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    returns: torch.Tensor
    tasks: tuple
    final_observations: torch.Tensor | None = None
    episode_infos: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        """Number of real (unpadded) env steps in the batch."""
        return int(self.lengths.sum())

    @property
    def n_tasks(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def episodes_per_task(self) -> int:
        return int(self.lengths.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.rewards.shape[2])


def split_episode_infos(array: np.ndarray, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The sampler's ``episode_infos [T, R, K, n_keys]`` as one ``[T, R, K]`` tensor per key.

    ``keys`` name the last axis in order (the sampler's ``info_keys``); ``{}`` when empty.
    """
    if array.shape[-1] != len(keys):
        raise ValueError(f"episode_infos has {array.shape[-1]} keys, expected {keys!r}")
    return {key: torch.from_numpy(array[..., q].copy()) for q, key in enumerate(keys)}
