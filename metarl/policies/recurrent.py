"""The RL2 policy: a GRU over (observation, previous action, previous reward, done flag).

Its hidden state is kept across the episodes of one *trial* (K consecutive
episodes of one task) and reset between trials, so the policy can adapt to
the task within the trial. A Gaussian head gives the action distribution
(state-independent log-std). The critic is a second GRU of the same size
over the same inputs with a linear value head: sharing the policy's GRU let
the value loss (returns of order 10-100) swamp the policy gradient in the
shared features, and point-nav did not learn.

The learner uses :class:`GaussianGRUPolicy` (torch); rollout workers use
:class:`NumpyGRUActor`, whose :func:`numpy_gru_step` implements exactly
``torch.nn.GRU``'s equations on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarl.options import option


@dataclass
class GRUPolicyOptions:
    """policy: RL2's recurrent Gaussian policy (its keys define the checkpoint)"""

    rl2_hidden_size: int = option(64, "RL2: GRU hidden size", min=1, identity=True)
    init_log_std: float = option(0.0, "initial log standard deviation of the Gaussian policy")


@dataclass(frozen=True)
class GRUSpec:
    """Architecture of the RL2 policy; everything a worker needs besides weights."""

    obs_dim: int
    act_dim: int
    hidden_size: int = 64

    @property
    def input_dim(self) -> int:
        """obs, previous action, previous reward, previous done."""
        return self.obs_dim + self.act_dim + 2

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The acting parameters' shapes (:meth:`GaussianGRUPolicy.params`: not the critic)."""
        h = self.hidden_size
        return {
            "gru.weight_ih_l0": (3 * h, self.input_dim),
            "gru.weight_hh_l0": (3 * h, h),
            "gru.bias_ih_l0": (3 * h,),
            "gru.bias_hh_l0": (3 * h,),
            "mean_head.weight": (self.act_dim, h),
            "mean_head.bias": (self.act_dim,),
            "log_std": (self.act_dim,),
        }

    def make_actor(self, params: Mapping[str, np.ndarray]) -> NumpyGRUActor:
        """The rollout actor of one shared policy (arrays with a leading axis of 1)."""
        return NumpyGRUActor(self, params)


def rl2_inputs(
    observations: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor
) -> torch.Tensor:
    """The GRU inputs of whole trials, built from what the trial recorded.

    Step t sees ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]``, with zeros at t = 0
    (the trial start). ``done_{t-1}`` is 1 when step t-1 ended an episode, so
    the first step of every later episode of the trial sees the last action
    and reward of the previous episode together with done = 1.

    Args:
        observations: ``[B, L, D]``; actions ``[B, L, A]``; rewards, dones ``[B, L]``.
    Returns:
        ``[B, L, D + A + 2]``.
    """
    prev = torch.cat([actions, rewards.unsqueeze(-1), dones.to(rewards.dtype).unsqueeze(-1)], -1)
    prev = torch.cat([torch.zeros_like(prev[:, :1]), prev[:, :-1]], dim=1)
    return torch.cat([observations, prev], dim=-1)


class GaussianGRUPolicy(nn.Module):
    """GRU -> Gaussian mean (learned state-independent log-std); a separate GRU -> value."""

    def __init__(self, spec: GRUSpec, *, init_log_std: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.gru = nn.GRU(spec.input_dim, spec.hidden_size, batch_first=True)
        self.mean_head = nn.Linear(spec.hidden_size, spec.act_dim)
        self.value_gru = nn.GRU(spec.input_dim, spec.hidden_size, batch_first=True)
        self.value_head = nn.Linear(spec.hidden_size, 1)
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(init_log_std)))
        with torch.no_grad():  # small initial actions, as is usual for PPO policies
            self.mean_head.weight.mul_(0.01)
            self.mean_head.bias.zero_()

    def forward(
        self, inputs: torch.Tensor, *, bptt_chunk: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run whole trials from a zero hidden state.

        Args:
            inputs: ``[B, L, input_dim]`` (see :func:`rl2_inputs`).
            bptt_chunk: if > 0, gradients do not flow back further than this
                many steps (truncated back-propagation through time); the
                forward values are the same.
        Returns:
            mean ``[B, L, A]`` and value ``[B, L]``.
        """
        mean = self.mean_head(self._run(self.gru, inputs, bptt_chunk))
        value = self.value_head(self._run(self.value_gru, inputs, bptt_chunk)).squeeze(-1)
        return mean, value

    def _run(self, gru: nn.GRU, inputs: torch.Tensor, bptt_chunk: int) -> torch.Tensor:
        """``[B, L, in] -> [B, L, H]`` from a zero state, detaching every ``bptt_chunk`` steps."""
        b, length, _ = inputs.shape
        h = inputs.new_zeros(1, b, self.spec.hidden_size)
        chunk = bptt_chunk if bptt_chunk > 0 else length
        features = []
        for start in range(0, length, chunk):
            out, h = gru(inputs[:, start : start + chunk], h)
            features.append(out)
            h = h.detach()
        return torch.cat(features, dim=1)

    def params(self) -> dict[str, torch.Tensor]:
        """The acting parameters (what the sampler ships to its workers; not the critic)."""
        return {k: v for k, v in self.named_parameters() if not k.startswith("value_")}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without exp overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def numpy_gru_step(params: Mapping[str, np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One ``torch.nn.GRU`` step on numpy arrays: ``x [..., B, in]``, ``h [..., B, H]`` ->
    ``[..., B, H]``."""
    gi = x @ params["gru.weight_ih_l0"].T + params["gru.bias_ih_l0"]
    gh = h @ params["gru.weight_hh_l0"].T + params["gru.bias_hh_l0"]
    i_r, i_z, i_n = np.split(gi, 3, axis=-1)
    h_r, h_z, h_n = np.split(gh, 3, axis=-1)
    r = _sigmoid(i_r + h_r)
    z = _sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


def numpy_gru_mean(params: Mapping[str, np.ndarray], h: np.ndarray) -> np.ndarray:
    """Action mean from hidden states: ``[..., B, H] -> [..., B, A]``."""
    return h @ params["mean_head.weight"].T + params["mean_head.bias"]


class NumpyGRUActor:
    """RL2's policy in the rollout loop: a hidden state per sub-env, kept across the
    episodes of a trial and zeroed when a wave of trials starts.

    At step t the GRU sees ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]`` (zeros at the
    trial start), exactly what :func:`rl2_inputs` rebuilds from the recorded trial.
    Each task's sub-envs go through their own matrix products (``[per_task, in]``),
    so a batch is the same for any number of workers.
    """

    def __init__(self, spec: GRUSpec, params: Mapping[str, np.ndarray]) -> None:
        if any(np.shape(v)[0] != 1 for v in params.values()):
            raise ValueError("the RL2 actor runs one policy shared by every task (leading axis 1)")
        self.spec = spec
        self.params = {k: np.asarray(v, dtype=np.float64)[0] for k, v in params.items()}

    def start(self, t0: int, t1: int, per_task: int) -> None:
        self._shape = (t1 - t0, per_task)
        n = (t1 - t0) * per_task
        self.hidden = np.zeros((t1 - t0, per_task, self.spec.hidden_size))
        self.previous = np.zeros((n, self.spec.act_dim + 2))  # action, reward, done

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> mean ``[n, A]``, log-std ``[1, A]``; advances the hidden state."""
        tc, per_task = self._shape
        x = np.concatenate([obs, self.previous], axis=1).reshape(tc, per_task, -1)
        self.hidden = numpy_gru_step(self.params, x, self.hidden)
        mean = numpy_gru_mean(self.params, self.hidden).reshape(tc * per_task, -1)
        return mean, self.params["log_std"][None, :]

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        a = self.spec.act_dim
        self.previous[:, :a] = actions
        self.previous[:, a] = rewards
        self.previous[:, a + 1] = dones
