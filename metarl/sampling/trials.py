"""RL2 trials: K consecutive episodes of one task, the recurrent state carried over.

The rollout loop (:func:`metarl.sampling.rollout.collect`) runs them: sub-env k
of a block runs trial ``r`` of task ``ti`` (task-major, like the episode
sampler). Within a trial the episodes are laid end to end on one time axis of
length ``L = K * horizon``: when an episode ends (terminated, truncated, or
``horizon`` steps) the env is reset with the next episode's seed and the trial
goes on with the *same* hidden state; the hidden state starts at zero for
every trial. Padding comes only after the trial's last episode.

At step t the GRU sees ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]`` (zeros at the
trial start), exactly what :func:`metarl.policies.recurrent.rl2_inputs`
rebuilds from the recorded trial in the learner.

Randomness: episode j of trial r of task i resets with
``reset_seed(seed, batch_key, i, r * K + j)``; the trial's action noise comes
from ``noise_rng(seed, batch_key, i, r)`` with the key ``"trial"`` appended to
the batch key, so trials never share noise with the episode sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from metarl.sampling.batch import split_episode_infos


@dataclass
class TrialBatch:
    """Trials of ``T`` tasks, ``R`` per task, each up to ``L = K * H`` steps.

    =================  ==================  ============================================
    field              shape / dtype       meaning
    =================  ==================  ============================================
    observations       [T, R, L, D] f32    observation at step t of the trial
    actions            [T, R, L, A] f32    sampled (unclipped) action
    rewards            [T, R, L]    f32    reward of step t
    log_probs          [T, R, L]    f32    log pi(action | history) of the acting policy
    dones              [T, R, L]    bool   step t ended an episode (of the K)
    terminated         [T, R, L]    bool   step t ended an episode by termination
    mask               [T, R, L]    f32    1 on real steps, 0 after the trial's end
    lengths            [T, R]       i64    real steps of the trial
    episode_returns    [T, R, K]    f32    undiscounted return of each episode
    episode_lengths    [T, R, K]    i64    steps of each episode
    episode_infos      {key: [T, R, K]} f32  per ``episode_info_keys`` key: its max over
                                           each episode's steps (``{}`` without keys)
    =================  ==================  ============================================
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    dones: torch.Tensor
    terminated: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor
    tasks: tuple
    episode_infos: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def env_steps(self) -> int:
        return int(self.lengths.sum())


def to_trial_batch(
    arrays: dict[str, np.ndarray], tasks: tuple, info_keys: tuple[str, ...] = ()
) -> TrialBatch:
    """The :class:`TrialBatch` of :func:`~metarl.sampling.rollout.collect`'s arrays;
    ``info_keys`` name the last axis of their ``episode_infos`` (the pool's keys)."""
    lengths = torch.from_numpy(arrays["lengths"])
    steps = arrays["rewards"].shape[2]
    mask = (torch.arange(steps)[None, None, :] < lengths[:, :, None]).float()
    return TrialBatch(
        observations=torch.from_numpy(arrays["observations"]),
        actions=torch.from_numpy(arrays["actions"]),
        rewards=torch.from_numpy(arrays["rewards"]),
        log_probs=torch.from_numpy(arrays["log_probs"]),
        dones=torch.from_numpy(arrays["dones"]),
        terminated=torch.from_numpy(arrays["terminated"]),
        mask=mask,
        lengths=lengths,
        episode_returns=torch.from_numpy(arrays["episode_returns"]),
        episode_lengths=torch.from_numpy(arrays["episode_lengths"]),
        tasks=tasks,
        episode_infos=split_episode_infos(arrays["episode_infos"], info_keys),
    )
