"""Gaussian MLP policy with a functional forward, and its numpy twin for rollouts.

The learner uses :class:`GaussianMLPPolicy` in torch. Rollout workers never see
the module: they receive a :class:`MLPSpec` (architecture, picklable) and
parameter arrays, and run :class:`NumpyMLPActor` (:func:`numpy_mean`): at
rollout batch sizes a numpy MLP is several times cheaper than a torch forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from metarl.options import option

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
WEIGHT_INITS = ("torch", "xavier")


@dataclass
class MLPPolicyOptions:
    """policy: the Gaussian MLP policy of the gradient family (its keys define the checkpoint)"""

    hidden_sizes: tuple = option(
        (100, 100), "hidden layer sizes of the policy MLP", min=1, identity=True
    )
    activation: str = option("relu", "hidden activation", choices=("relu", "tanh"), identity=True)
    init_log_std: float = option(0.0, "initial log standard deviation of the Gaussian policy")
    weight_init: str = option(
        "torch",
        "initial weights of the MLP policy's linear layers: 'torch' = torch's default "
        "(uniform within 1/sqrt(fan_in), weights and biases); 'xavier' = Xavier-uniform "
        "weights and zero biases (as learn2learn and pytorch-maml-rl)",
        choices=WEIGHT_INITS,
        identity=True,
    )


LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class MLPSpec:
    """Architecture of a Gaussian MLP policy; everything a worker needs besides weights."""

    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...] = (100, 100)
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )

    @property
    def n_layers(self) -> int:
        return len(self.hidden_sizes) + 1

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape, by the names of :meth:`GaussianMLPPolicy.named_parameters`."""
        sizes = (self.obs_dim, *self.hidden_sizes, self.act_dim)
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.n_layers):
            shapes[f"layers.{i}.weight"] = (sizes[i + 1], sizes[i])
            shapes[f"layers.{i}.bias"] = (sizes[i + 1],)
        shapes["log_std"] = (self.act_dim,)
        return shapes

    def make_actor(self, params: Mapping[str, np.ndarray]) -> NumpyMLPActor:
        """The rollout actor of these parameters (stacked ``[Tb, ...]`` or shared ``[1, ...]``)."""
        return NumpyMLPActor(self, params)


Params = dict[str, torch.Tensor]


class GaussianMLPPolicy(nn.Module):
    """pi(a | s) = Normal(mlp(s), exp(log_std)), with a state-independent log-std.

    Parameter names are ``layers.{i}.weight`` / ``layers.{i}.bias`` for the
    linear layers (i = 0 .. n_layers-1) and ``log_std``; a params dict with
    these keys (e.g. adapted parameters) can replace the module's own in
    :meth:`forward` without mutating the module.
    """

    def __init__(
        self, spec: MLPSpec, *, init_log_std: float = 0.0, weight_init: str = "torch"
    ) -> None:
        """``weight_init``: ``"torch"`` keeps ``nn.Linear``'s default (weights and biases
        uniform within 1/sqrt(fan_in)); ``"xavier"`` draws Xavier-uniform weights and zero
        biases, as learn2learn and pytorch-maml-rl initialise their policies."""
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        self.spec = spec
        sizes = (spec.obs_dim, *spec.hidden_sizes, spec.act_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if weight_init == "xavier":
            for layer in self.layers:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self._act = ACTIVATIONS[spec.activation]()
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(init_log_std)))

    def _mean(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._act(x)
        return x

    def forward(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the action distribution.

        Args:
            obs: ``[..., obs_dim]``.
            params: optional replacement parameters (same names as
                ``named_parameters()``); the module is not modified.
        Returns:
            mean ``[..., act_dim]`` and log_std ``[act_dim]``.
        """
        if params is None:
            return self._mean(obs), self.log_std
        mean = functional_call(self, dict(params), (obs,), kwargs={"params": None})[0]
        return mean, params["log_std"]

    def distribution(
        self, obs: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.distributions.Normal:
        """``Normal`` over actions (argument validation off: it costs ~100 us a call)."""
        mean, log_std = self(obs, params)
        return torch.distributions.Normal(mean, log_std.exp(), validate_args=False)

    def log_prob(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        params: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Log-density of ``actions`` ``[..., act_dim]`` -> ``[...]``, by formula."""
        mean, log_std = self(obs, params)
        return gaussian_log_prob(actions, mean, log_std)

    def params(self) -> Params:
        """The module's own parameters as a dict (the starting point of adaptation)."""
        return dict(self.named_parameters())


def gaussian_log_prob(
    actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over the last axis: ``[..., A] -> [...]``."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)


def params_to_numpy(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Detached float64 copies of a params dict, for shipping to rollout workers."""
    return {k: v.detach().to("cpu", torch.float64).numpy().copy() for k, v in params.items()}


def numpy_mean(spec: MLPSpec, stacked: Mapping[str, np.ndarray], obs: np.ndarray) -> np.ndarray:
    """Action means for many tasks at once, each with its own parameters.

    Args:
        spec: the architecture.
        stacked: parameters stacked over tasks: ``layers.i.weight`` ``[T, out, in]``,
            ``layers.i.bias`` ``[T, out]``.
        obs: ``[T, N, obs_dim]`` (N sub-envs per task).
    Returns:
        ``[T, N, act_dim]``.
    """
    x = obs
    for i in range(spec.n_layers):
        weight = stacked[f"layers.{i}.weight"]
        x = np.matmul(x, weight.transpose(0, 2, 1)) + stacked[f"layers.{i}.bias"][:, None, :]
        if i < spec.n_layers - 1:
            x = np.maximum(x, 0.0) if spec.activation == "relu" else np.tanh(x)
    return x


class NumpyMLPActor:
    """Per-task Gaussian MLP policies for a block of tasks, evaluated in one batch.

    ``params``: numpy arrays stacked over the block's tasks (leading axis ``Tb``)
    or one shared policy (leading axis 1, broadcast to every task). Stateless:
    :meth:`observe` does nothing. Each task's sub-envs go through one matrix
    product per layer (``[per_task, in] @ [in, out]``), whatever the block, so a
    batch is the same for any number of workers.
    """

    def __init__(self, spec: MLPSpec, params: Mapping[str, np.ndarray]) -> None:
        self.spec = spec
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.n_policies = self.params["log_std"].shape[0]

    def start(self, t0: int, t1: int, per_task: int) -> None:
        self._shape = (t1 - t0, per_task)
        if self.n_policies == 1:
            self._wave = self.params
        else:
            self._wave = {k: v[t0:t1] for k, v in self.params.items()}

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [n, D]`` -> mean ``[n, A]``, log-std ``[tc * per_task or 1, A]``."""
        tc, per_task = self._shape
        mean = numpy_mean(self.spec, self._wave, obs.reshape(tc, per_task, -1))
        log_std = self._wave["log_std"]
        if log_std.shape[0] > 1:
            log_std = np.repeat(log_std, per_task, axis=0)
        return mean.reshape(tc * per_task, -1), log_std

    def observe(self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        """Nothing to remember: the MLP sees only the current observation."""
