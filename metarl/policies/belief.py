"""VariBAD's policy: a recurrent belief encoder and a policy of the state and the belief.

The *encoder* reads a trial so far and gives a Gaussian belief ``N(mean, exp(logvar))``
over a latent task ``m``. At step ``t`` of a trial the belief ``b_t`` has read the ``t``
transitions before it: ``b_0`` is the *prior*, the belief before any transition (the
heads applied to a zero hidden state, so it is learnt, pulled towards N(0, I) by the
ELBO's first KL term), and for ``t >= 1`` the GRU reads ``[obs_t, a_{t-1}, r_{t-1},
done_{t-1}]``, RL2's input row (:func:`~metarl.policies.recurrent.rl2_inputs`): the
previous action and reward with the state they led to (or, when ``done_{t-1}`` = 1, the
next episode's first state). The belief carries across the episodes of a trial and is
reset to the prior when a trial starts.

The embeddings and sizes are the reference code's (lmzintgraf/varibad, models/encoder.py):
each of state (here with the done flag), action and reward passes through its own ReLU
layer, the three go into a GRU, and two linear heads give the mean and log-variance.

The *policy* acts on the state and the belief's mean and log-variance ``[obs_t, mean_t,
logvar_t]`` (the reference's MuJoCo setting, models/policy.py): a tanh embedding of the
state and one of the belief, then tanh hidden layers and a Gaussian head with a learned
state-independent log-std. The critic has the same shape with its own weights (the
reference shares the two embeddings between actor and critic; RL2 here found a shared
trunk let the value loss swamp the policy gradient, see :mod:`metarl.policies.recurrent`).

The learner uses :class:`BeliefPolicy` (torch); rollout workers use
:class:`NumpyBeliefActor`, the same maths on numpy arrays (the GRU step is RL2's
:func:`~metarl.policies.recurrent.numpy_gru_step`).

Shapes: ``B`` trials, ``L`` steps per trial, ``D`` obs dims, ``A`` action dims, ``Z``
latent dims, ``H`` the GRU's hidden size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarl.options import option
from metarl.policies.recurrent import numpy_gru_step


@dataclass
class BeliefPolicyOptions:
    """policy: VariBAD's encoder and policy (their keys define the checkpoint; reference values)"""

    varibad_latent_dim: int = option(
        5, "VariBAD: dimension of the latent task m [latent_dim 5]", min=1, identity=True
    )
    varibad_encoder_hidden_size: int = option(
        128, "VariBAD: the encoder GRU's hidden size [128]", min=1, identity=True
    )
    varibad_embed_sizes: tuple = option(
        (32, 16, 16),
        "VariBAD: ReLU embedding sizes of state, action and reward in the encoder (state and "
        "action also in the decoders) [32 16 16]",
        min=1,
        identity=True,
    )
    varibad_policy_hidden_sizes: tuple = option(
        (128, 128),
        "VariBAD: tanh hidden sizes of the policy and critic [128 128; 128 128 128 point robot]",
        min=1,
        identity=True,
    )
    varibad_policy_embed_size: int = option(
        64, "VariBAD: tanh embedding size of the state and of the belief in the policy [64]",
        min=1, identity=True,
    )  # fmt: skip
    init_log_std: float = option(0.0, "initial log standard deviation of the Gaussian policy")


@dataclass(frozen=True)
class BeliefSpec:
    """Architecture of VariBAD's acting networks; everything a worker needs besides weights."""

    obs_dim: int
    act_dim: int
    latent_dim: int = 5
    hidden_size: int = 128
    embed_sizes: tuple[int, int, int] = (32, 16, 16)  # state (+ done), action, reward
    policy_hidden: tuple[int, ...] = (128, 128)
    policy_embed: int = 64

    @property
    def belief_dim(self) -> int:
        """What the policy reads of a belief: its mean and log-variance."""
        return 2 * self.latent_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The acting parameters' shapes (:meth:`BeliefPolicy.params`: not the critic)."""
        d, a, z, h = self.obs_dim, self.act_dim, self.latent_dim, self.hidden_size
        es, ea, er = self.embed_sizes
        shapes = {
            "encoder.state_embed.weight": (es, d + 1),
            "encoder.state_embed.bias": (es,),
            "encoder.action_embed.weight": (ea, a),
            "encoder.action_embed.bias": (ea,),
            "encoder.reward_embed.weight": (er, 1),
            "encoder.reward_embed.bias": (er,),
            "encoder.gru.weight_ih_l0": (3 * h, es + ea + er),
            "encoder.gru.weight_hh_l0": (3 * h, h),
            "encoder.gru.bias_ih_l0": (3 * h,),
            "encoder.gru.bias_hh_l0": (3 * h,),
            "encoder.mean_head.weight": (z, h),
            "encoder.mean_head.bias": (z,),
            "encoder.logvar_head.weight": (z, h),
            "encoder.logvar_head.bias": (z,),
        }
        shapes.update(_tower_shapes("actor", d, self.belief_dim, self.policy_embed,
                                    self.policy_hidden, a))  # fmt: skip
        shapes["log_std"] = (a,)
        return shapes

    def make_actor(self, params: Mapping[str, np.ndarray]) -> NumpyBeliefActor:
        """The rollout actor of one shared policy (arrays with a leading axis of 1)."""
        return NumpyBeliefActor(self, params)


def _tower_shapes(prefix: str, obs_dim: int, belief_dim: int, embed: int,
                  hidden: tuple[int, ...], out: int) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """The parameter shapes of a :class:`Tower` named ``prefix``."""
    shapes = {
        f"{prefix}.state_embed.weight": (embed, obs_dim),
        f"{prefix}.state_embed.bias": (embed,),
        f"{prefix}.belief_embed.weight": (embed, belief_dim),
        f"{prefix}.belief_embed.bias": (embed,),
    }
    sizes = [2 * embed, *hidden]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"{prefix}.hidden.{i}.weight"] = (n_out, n_in)
        shapes[f"{prefix}.hidden.{i}.bias"] = (n_out,)
    shapes[f"{prefix}.out.weight"] = (out, sizes[-1])
    shapes[f"{prefix}.out.bias"] = (out,)
    return shapes


def split_inputs(inputs: torch.Tensor, obs_dim: int, act_dim: int) -> tuple[torch.Tensor, ...]:
    """RL2's input rows ``[..., D + A + 2]`` -> state with done ``[..., D + 1]``, action
    ``[..., A]``, reward ``[..., 1]``."""
    d, a = obs_dim, act_dim
    state = torch.cat([inputs[..., :d], inputs[..., d + a + 1 :]], dim=-1)
    return state, inputs[..., d : d + a], inputs[..., d + a : d + a + 1]


class BeliefEncoder(nn.Module):
    """Trials -> Gaussian beliefs over the latent task, the prior first."""

    def __init__(self, spec: BeliefSpec) -> None:
        super().__init__()
        self.spec = spec
        es, ea, er = spec.embed_sizes
        self.state_embed = nn.Linear(spec.obs_dim + 1, es)
        self.action_embed = nn.Linear(spec.act_dim, ea)
        self.reward_embed = nn.Linear(1, er)
        self.gru = nn.GRU(es + ea + er, spec.hidden_size, batch_first=True)
        for name, param in self.gru.named_parameters():  # the reference's GRU initialisation
            if "bias" in name:
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param)
        self.mean_head = nn.Linear(spec.hidden_size, spec.latent_dim)
        self.logvar_head = nn.Linear(spec.hidden_size, spec.latent_dim)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[..., D + A + 2] -> [..., es + ea + er]``: the GRU's input."""
        state, action, reward = split_inputs(inputs, self.spec.obs_dim, self.spec.act_dim)
        return torch.cat([torch.relu(self.state_embed(state)),
                          torch.relu(self.action_embed(action)),
                          torch.relu(self.reward_embed(reward))], dim=-1)  # fmt: skip

    def heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., H]`` -> the belief's mean and log-variance ``[..., Z]``."""
        return self.mean_head(hidden), self.logvar_head(hidden)

    def prior(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The belief before any transition, ``[batch, Z]`` each (the heads of a zero state)."""
        return self.heads(self.mean_head.weight.new_zeros(batch, self.spec.hidden_size))

    def forward(
        self, inputs: torch.Tensor, *, bptt_chunk: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The belief at every step of whole trials.

        Args:
            inputs: ``[B, L, D + A + 2]``, :func:`~metarl.policies.recurrent.rl2_inputs`
                of the trials; row 0 (the trial's first state, nothing before it) is not read.
            bptt_chunk: if > 0, gradients flow back at most this many transitions
                (truncated back-propagation through time); the values are the same.
        Returns:
            mean, logvar ``[B, L, Z]``: index 0 is the prior, index t the belief after the
            trial's first t transitions (what the policy acts on at step t).
        """
        b, length, _ = inputs.shape
        hidden = [inputs.new_zeros(b, 1, self.spec.hidden_size)]  # the prior's zero state
        if length > 1:
            x = self.embed(inputs[:, 1:])
            chunk = bptt_chunk if bptt_chunk > 0 else length
            h = inputs.new_zeros(1, b, self.spec.hidden_size)
            for start in range(0, length - 1, chunk):
                out, h = self.gru(x[:, start : start + chunk], h)
                hidden.append(out)
                h = h.detach()
        return self.heads(torch.cat(hidden, dim=1))


class Tower(nn.Module):
    """tanh embeddings of the state and of the belief, tanh hidden layers, a linear output."""

    def __init__(self, spec: BeliefSpec, out: int) -> None:
        super().__init__()
        embed = spec.policy_embed
        self.state_embed = nn.Linear(spec.obs_dim, embed)
        self.belief_embed = nn.Linear(spec.belief_dim, embed)
        sizes = [2 * embed, *spec.policy_hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], out)

    def forward(self, obs: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        """``obs [..., D]``, ``belief [..., 2Z]`` -> ``[..., out]``."""
        h = torch.cat([torch.tanh(self.state_embed(obs)), torch.tanh(self.belief_embed(belief))],
                      dim=-1)  # fmt: skip
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.out(h)


class BeliefPolicy(nn.Module):
    """The encoder, the Gaussian policy of ``[obs, belief]`` and its critic."""

    def __init__(self, spec: BeliefSpec, *, init_log_std: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = BeliefEncoder(spec)
        self.actor = Tower(spec, spec.act_dim)
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(init_log_std)))
        self.critic = Tower(spec, 1)
        with torch.no_grad():  # small initial actions, as is usual for PPO policies
            self.actor.out.weight.mul_(0.01)
            self.actor.out.bias.zero_()

    def beliefs(self, inputs: torch.Tensor, *, bptt_chunk: int = 0) -> torch.Tensor:
        """What the policy reads at each step: ``[B, L, 2Z]``, mean and log-variance."""
        return torch.cat(self.encoder(inputs, bptt_chunk=bptt_chunk), dim=-1)

    def forward(self, obs: torch.Tensor, belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [..., D]``, ``belief [..., 2Z]`` -> action mean ``[..., A]``, value ``[...]``."""
        return self.actor(obs, belief), self.critic(obs, belief).squeeze(-1)

    def params(self) -> dict[str, torch.Tensor]:
        """The acting parameters (what the sampler ships to its workers; not the critic)."""
        return {k: v for k, v in self.named_parameters() if not k.startswith("critic.")}

    def rl_parameters(self) -> list[nn.Parameter]:
        """What PPO trains: the actor, its log-std and the critic (not the encoder)."""
        return [v for k, v in self.named_parameters() if not k.startswith("encoder.")]


# -- the rollout actor (numpy) ---------------------------------------------------------------
def _linear(params: Mapping[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]


def numpy_tower(params: Mapping[str, np.ndarray], prefix: str, obs: np.ndarray,
                belief: np.ndarray) -> np.ndarray:  # fmt: skip
    """:class:`Tower` ``prefix`` on numpy arrays: ``[..., D]``, ``[..., 2Z]`` -> ``[..., out]``."""
    h = np.concatenate(
        [
            np.tanh(_linear(params, f"{prefix}.state_embed", obs)),
            np.tanh(_linear(params, f"{prefix}.belief_embed", belief)),
        ],
        axis=-1,
    )
    i = 0
    while f"{prefix}.hidden.{i}.weight" in params:
        h = np.tanh(_linear(params, f"{prefix}.hidden.{i}", h))
        i += 1
    return _linear(params, f"{prefix}.out", h)


class NumpyBeliefActor:
    """VariBAD's policy in the rollout loop: a belief per sub-env, the prior when a wave of
    trials starts, updated after each step and kept across the episodes of a trial.

    At step t > 0 the GRU reads ``[obs_t, a_{t-1}, r_{t-1}, done_{t-1}]``, exactly what
    :class:`BeliefEncoder` reads of the recorded trial; at t = 0 the belief is the prior.
    Each task's sub-envs go through their own matrix products (``[per_task, in]``), as
    RL2's actor, so a batch is the same for any number of workers.
    """

    def __init__(self, spec: BeliefSpec, params: Mapping[str, np.ndarray]) -> None:
        if any(np.shape(v)[0] != 1 for v in params.values()):
            raise ValueError("the VariBAD actor runs one policy shared by every task "
                             "(leading axis 1)")  # fmt: skip
        self.spec = spec
        self.params = {k: np.asarray(v, dtype=np.float64)[0] for k, v in params.items()}
        self.gru = {k.removeprefix("encoder."): v for k, v in self.params.items()
                    if k.startswith("encoder.gru.")}  # fmt: skip

    def start(self, t0: int, t1: int, per_task: int) -> None:
        self._shape = (t1 - t0, per_task)
        self.hidden = np.zeros((t1 - t0, per_task, self.spec.hidden_size))
        self.previous = np.zeros(((t1 - t0) * per_task, self.spec.act_dim + 2))
        self.first = True  # the next act is a trial's first step: the belief is the prior

    def belief(self) -> np.ndarray:
        """The current belief of every sub-env: ``[n, 2Z]`` (mean, log-variance)."""
        h = self.hidden.reshape(-1, self.spec.hidden_size)
        return np.concatenate(
            [
                _linear(self.params, "encoder.mean_head", h),
                _linear(self.params, "encoder.logvar_head", h),
            ],
            axis=-1,
        )

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> mean ``[n, A]``, log-std ``[1, A]``; the belief read ``obs`` first."""
        if not self.first:
            tc, per_task = self._shape
            x = np.concatenate([obs, self.previous], axis=1)
            state = np.concatenate([x[:, : self.spec.obs_dim], x[:, -1:]], axis=1)
            d, a = self.spec.obs_dim, self.spec.act_dim
            e = np.concatenate([
                np.maximum(_linear(self.params, "encoder.state_embed", state), 0.0),
                np.maximum(_linear(self.params, "encoder.action_embed", x[:, d : d + a]), 0.0),
                np.maximum(_linear(self.params, "encoder.reward_embed", x[:, d + a : d + a + 1]),
                           0.0),
            ], axis=1).reshape(tc, per_task, -1)  # fmt: skip
            self.hidden = numpy_gru_step(self.gru, e, self.hidden)
        self.first = False
        mean = numpy_tower(self.params, "actor", obs, self.belief())
        return mean, self.params["log_std"][None, :]

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        a = self.spec.act_dim
        self.previous[:, :a] = actions
        self.previous[:, a] = rewards
        self.previous[:, a + 1] = dones
