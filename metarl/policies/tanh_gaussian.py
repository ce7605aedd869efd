"""PEARL's policy: a tanh-squashed Gaussian over actions, conditioned on a task latent z.

The torch :class:`TanhGaussianPolicy` trains in the learner; rollout workers run
:class:`NumpyTanhGaussianActor`, built by :class:`TanhGaussianSpec` from the
policy's weights plus one latent ``z`` per task (stacked ``[T, latent]``), so the
sampler runs it like any other actor.

The squashing: the Gaussian sample ``u = mean + std * noise`` (what the rollout
loop draws and records in the batch's ``actions``) becomes the action
``a = tanh(u)`` in ``[-1, 1]`` that the learner's replay buffers hold; the actor's
:meth:`~NumpyTanhGaussianActor.env_action` hook maps ``a`` affinely onto the
env's action box before the env sees it. The learner therefore works in the
normalised box ``[-1, 1]^A`` whatever the env's bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarl.policies.gaussian_mlp import LOG_2PI

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""The clamp of the policy's log-std (rlkit's TanhGaussianPolicy)."""
LOG_2 = float(np.log(2.0))


@dataclass(frozen=True)
class TanhGaussianSpec:
    """Architecture of PEARL's policy: an MLP of ``[obs, z]`` -> ``[mean, log_std]`` (ReLU)."""

    obs_dim: int
    act_dim: int
    latent_dim: int
    hidden_sizes: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))

    @property
    def sizes(self) -> list[int]:
        """Layer widths from input to output."""
        return [self.obs_dim + self.latent_dim, *self.hidden_sizes, 2 * self.act_dim]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The actor's arrays: the MLP's (``layers.i.*``) and the task latent ``z``."""
        shapes: dict[str, tuple[int, ...]] = {}
        sizes = self.sizes
        for i in range(len(sizes) - 1):
            shapes[f"layers.{i}.weight"] = (sizes[i + 1], sizes[i])
            shapes[f"layers.{i}.bias"] = (sizes[i + 1],)
        shapes["z"] = (self.latent_dim,)
        return shapes

    def make_actor(self, params: Mapping[str, np.ndarray]) -> NumpyTanhGaussianActor:
        return NumpyTanhGaussianActor(self, params)


def tanh_gaussian_log_prob(
    pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """``log pi(tanh(u))`` of the pre-squash samples ``u`` ``[..., A]`` -> ``[...]``.

    The Gaussian log-density of ``u`` minus the log-Jacobian of tanh,
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (exact, and finite for
    large ``|u|`` where ``1 - tanh(u)^2`` rounds to 0).
    """
    z = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)
    log_jacobian = 2.0 * (LOG_2 - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
    return gaussian - log_jacobian.sum(-1)


def squash_to_bounds(pre_tanh: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``tanh(u)`` mapped affinely from ``[-1, 1]`` onto ``[low, high]`` (where both are finite)."""
    a = np.tanh(pre_tanh.astype(np.float64))
    finite = np.isfinite(low) & np.isfinite(high)
    scaled = low + (a + 1.0) * 0.5 * (high - low)
    return np.where(finite, scaled, a)


@dataclass
class TanhGaussianSample:
    """A reparameterised sample of :meth:`TanhGaussianPolicy.rsample` (shapes ``[..., A]``)."""

    action: torch.Tensor  # tanh(u), in [-1, 1]
    log_prob: torch.Tensor  # [...]
    pre_tanh: torch.Tensor  # u
    mean: torch.Tensor
    log_std: torch.Tensor


class TanhGaussianPolicy(nn.Module):
    """``pi(a | s, z)``: ReLU MLP of ``[s, z]`` -> mean and (clamped) log-std, tanh-squashed."""

    def __init__(self, spec: TanhGaussianSpec) -> None:
        super().__init__()
        self.spec = spec
        sizes = spec.sizes
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():  # small initial outputs (rlkit's init_w = 1e-3 on the last layer)
            self.layers[-1].weight.uniform_(-1e-3, 1e-3)
            self.layers[-1].bias.uniform_(-1e-3, 1e-3)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [..., D]``, ``z [..., latent]`` -> mean, log-std ``[..., A]``."""
        x = torch.cat([obs, z], dim=-1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        mean, log_std = self.layers[-1](x).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def rsample(
        self, obs: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None
    ) -> TanhGaussianSample:
        """A reparameterised action (``noise``: standard normals ``[..., A]``, drawn if None)."""
        mean, log_std = self(obs, z)
        if noise is None:
            noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        log_prob = tanh_gaussian_log_prob(pre_tanh, mean, log_std)
        return TanhGaussianSample(torch.tanh(pre_tanh), log_prob, pre_tanh, mean, log_std)

    def params(self) -> dict[str, torch.Tensor]:
        """The MLP's parameters by the spec's names (no ``z``: that comes per task)."""
        return dict(self.named_parameters())


def actor_params(policy: TanhGaussianPolicy, z: torch.Tensor) -> dict[str, np.ndarray]:
    """What the sampler runs: the MLP's weights broadcast over the ``T`` tasks, and ``z [T, L]``.

    The sampler takes params all stacked or all shared; the weights are broadcast
    views (no copy here) so only ``z`` differs per task.
    """
    z_np = z.detach().to("cpu", torch.float64).numpy().copy()
    n = z_np.shape[0]
    out = {
        k: np.broadcast_to(v.detach().to("cpu", torch.float64).numpy(), (n, *v.shape))
        for k, v in policy.params().items()
    }
    out["z"] = z_np
    return out


class NumpyTanhGaussianActor:
    """Per-task latents, one shared MLP: the numpy twin of :class:`TanhGaussianPolicy`.

    ``act`` returns the pre-squash Gaussian's mean and log-std (the loop draws
    ``u = mean + std * noise`` and records ``u``); ``env_action`` squashes ``u``
    with tanh onto the env's box, exactly as the torch policy squashes.
    Stateless between steps: ``z`` is fixed for the call.
    """

    def __init__(self, spec: TanhGaussianSpec, params: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        n_layers = len(spec.sizes) - 1
        # the weights are the same for every task (see actor_params): keep the first
        self.weights = [
            (np.asarray(params[f"layers.{i}.weight"][0], np.float64),
             np.asarray(params[f"layers.{i}.bias"][0], np.float64))
            for i in range(n_layers)
        ]  # fmt: skip
        self.z = np.asarray(params["z"], np.float64)  # [Tb or 1, L]

    def start(self, t0: int, t1: int, per_task: int) -> None:
        z = self.z if self.z.shape[0] == 1 else self.z[t0:t1]
        self._z = np.repeat(np.broadcast_to(z, (t1 - t0, z.shape[1])), per_task, axis=0)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> pre-squash mean and log-std ``[n, A]``."""
        x = np.concatenate([obs, self._z], axis=1)
        for i, (weight, bias) in enumerate(self.weights):
            x = x @ weight.T + bias
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
        a = self.spec.act_dim
        return x[:, :a], np.clip(x[:, a:], LOG_STD_MIN, LOG_STD_MAX)

    def env_action(self, actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The rollout loop's hook: the sampled ``u [n, A]`` -> what the env receives."""
        return squash_to_bounds(actions, low, high)

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Nothing: z is fixed within a call (the learner updates the posterior between calls)."""
