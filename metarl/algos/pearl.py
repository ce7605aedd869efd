"""PEARL (Rakelly et al. 2019): off-policy meta-RL with a probabilistic task latent z.

A permutation-invariant *context encoder* maps each transition ``c_i = (s, a, r, s')``
of a task to a Gaussian factor ``N(mu_i, sigma_i^2)`` over z; the posterior
``q(z | c_1..N)`` is their product (precision-weighted). SAC, conditioned on z,
learns the policy ``pi(a | s, z)``, twin critics ``Q(s, a, z)`` and a state value
``V(s, z)`` with a soft-updated target (the reference implementation's SAC form:
``Q <- r * reward_scale + gamma (1 - terminal) V_target(s', z)``, and
``V <- min Q(s, a~pi, z) - alpha log pi``). The encoder learns through the critic's
Bellman loss plus ``pearl_kl_lambda * KL(q(z | c) || N(0, I))`` (summed over
the meta-batch's tasks, as the reference does); the actor and V see z detached.
Alpha is fixed by default (``pearl_alpha`` = 1, the reference's: the reward
scale sets the entropy's weight), or tuned (``pearl_tune_alpha``: log alpha by
Adam towards the target entropy ``-act_dim``).

Data: per training task, an RL replay buffer and an encoder buffer
(:class:`~metarl.algos.pearl_replay.TaskReplay`). A task met for the first time
gets ``pearl_initial_episodes`` with z from the prior. Each iteration, per task of
the iteration: its encoder buffer is cleared (when prior episodes are
collected), then ``pearl_prior_episodes`` with z ~ N(0, I) and
``pearl_posterior_episodes`` with z ~ q(z | context from the encoder buffer) go
to both buffers, and ``pearl_extra_posterior_episodes`` (posterior z) to the RL
buffer only. With ``pearl_dense_sac_reward`` the RL buffer stores the family's
``dense_training_reward`` instead of the env's reward (the reference's sparse
point robot: SAC learns from the distance, the encoder from the sparse reward).
The sampler runs one episode per task per call (z is per task,
stacked ``[T, latent]``; it changes between calls). Then ``pearl_gradient_steps``
steps, each on a meta-batch of ``pearl_meta_batch`` tasks drawn (with
replacement, as the reference) from every task with data: all networks
evaluate ``[T, B, ...]`` at once.

Actions: the rollout records the pre-squash Gaussian sample ``u`` (its
``actions``); the buffers hold ``a = tanh(u)`` in ``[-1, 1]``, the action the
learner's SAC works in (the actor's ``env_action`` hook scales it onto the
env's box).

Meta-test (``adaptation_unit = "episode"``): per task, episode 1 with z from
the prior, each next episode with z from the posterior given every transition
that task has produced so far: ``[K + 1, T]`` mean returns.

Shapes: ``T`` tasks of a meta-batch, ``B`` RL transitions and ``C`` context
transitions per task, ``L`` latent dims, ``D`` obs dims, ``A`` action dims.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from metarl.algos.base import AdaptationCurve, Algorithm, IterationResult
from metarl.algos.pearl_replay import TaskReplay
from metarl.envs.base import HasDenseTrainingReward
from metarl.options import ConfigError, option
from metarl.policies.tanh_gaussian import (
    TanhGaussianPolicy,
    TanhGaussianSample,
    TanhGaussianSpec,
    actor_params,
)
from metarl.seeding import derive_seed

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling.batch import EpisodeBatch

DenseReward = Callable[[Any, np.ndarray], np.ndarray]
"""``(task, next_obs [N, obs_dim]) -> [N]``: a family's ``dense_training_reward``."""

POLICY_MEAN_REG = 1e-3  # the reference's small penalties on the policy's mean and log-std
POLICY_STD_REG = 1e-3


@dataclass
class PEARLOptions:
    """PEARL: the encoder, SAC and data schedule (CPU-sized; the paper's values in brackets)"""

    pearl_latent_dim: int = option(
        5, "PEARL: dimension of the task latent z [5]", min=1, identity=True
    )
    pearl_hidden_sizes: tuple = option(
        (64, 64),
        "PEARL: hidden sizes of the policy, Q and V networks [300 300 300]",
        min=1,
        identity=True,
    )
    pearl_encoder_hidden_sizes: tuple = option(
        (64, 64),
        "PEARL: hidden sizes of the context encoder [200 200 200]",
        min=1,
        identity=True,
    )
    pearl_kl_lambda: float = option(0.1, "PEARL: weight of the KL of q(z|c) to N(0, I) [0.1]",
                                    min=0.0)  # fmt: skip
    pearl_lr: float = option(
        3e-4, "PEARL: Adam step size of the policy, Q, V, encoder and alpha [3e-4]", min=0.0
    )
    pearl_batch_size: int = option(
        64, "PEARL: RL transitions per task per gradient step [256]", min=1
    )
    pearl_embedding_batch: int = option(
        64, "PEARL: context transitions per task for the encoder [64; 100 cheetah-vel]", min=1
    )
    pearl_meta_batch: int = option(4, "PEARL: tasks per gradient step [16]", min=1)
    pearl_gradient_steps: int = option(
        50, "PEARL: gradient steps per iteration [2000; 1000 point-robot]", min=0
    )
    pearl_initial_episodes: int = option(
        2, "PEARL: prior-z episodes for a task met first [2000 steps = 10 x 200]", min=0
    )
    pearl_prior_episodes: int = option(
        1, "PEARL: prior-z episodes per task per iteration, to both buffers [400 steps]", min=0
    )
    pearl_posterior_episodes: int = option(
        0, "PEARL: posterior-z episodes per task per iteration, to both buffers [0]", min=0
    )
    pearl_extra_posterior_episodes: int = option(
        1, "PEARL: posterior-z episodes per task per iteration, RL buffer only [400-600 steps]",
        min=0,
    )  # fmt: skip
    pearl_buffer_capacity: int = option(
        10_000, "PEARL: transitions per task in each replay buffer [1e6]", min=1
    )
    pearl_reward_scale: float = option(
        5.0, "PEARL: reward scale in the Bellman target [5; 100 point-robot]", min=0.0
    )
    pearl_tau: float = option(0.005, "PEARL: soft target update rate of V [0.005]",
                              min=0.0, max=1.0)  # fmt: skip
    pearl_alpha: float = option(1.0, "PEARL: entropy weight (initial, if tuned) [1, fixed]",
                                min=0.0)  # fmt: skip
    pearl_tune_alpha: bool = option(
        False, "PEARL: tune alpha (log alpha by Adam, target entropy -act_dim) [no]"
    )
    pearl_dense_sac_reward: bool = option(
        False,
        "PEARL: train SAC on the family's dense_training_reward while the encoder reads the "
        "env's own (sparse) reward [the sparse point robot: yes]",
    )


# -- pure pieces -----------------------------------------------------------------------------
def mlp(sizes: list[int]) -> nn.Sequential:
    """ReLU MLP; ``nn.Linear`` applies over any leading axes, so ``[T, B, in]`` runs as one."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def product_of_gaussians(
    mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (normalised) product of Gaussian factors ``[..., N, L]`` -> mean, variance ``[..., L]``.

    Precision-weighted: ``1 / var = sum_i 1 / var_i``, ``mean = var * sum_i mu_i / var_i``.
    ``mask [..., N]`` (1 = a real factor) drops padding; no factor at all gives the
    prior N(0, I). Symmetric in the factors, so the posterior ignores their order.
    """
    precision = 1.0 / var
    if mask is not None:
        precision = precision * mask.unsqueeze(-1)
    total = precision.sum(-2)
    empty = total == 0
    total = torch.where(empty, torch.ones_like(total), total)
    mean = torch.where(empty, torch.zeros_like(total), (mu * precision).sum(-2) / total)
    return mean, 1.0 / total


def kl_to_unit_gaussian(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, var) || N(0, I))`` summed over the last axis: ``[..., L] -> [...]``."""
    return 0.5 * (var + mu.pow(2) - 1.0 - var.log()).sum(-1)


def soft_bellman_target(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    next_values: torch.Tensor,
    *,
    reward_scale: float,
    discount: float,
) -> torch.Tensor:
    """SAC's critic target with a state-value net: ``r * scale + gamma (1 - term) V'(s', z)``."""
    return rewards * reward_scale + discount * (1.0 - terminals) * next_values


def soft_value_target(min_q: torch.Tensor, log_pi: torch.Tensor, alpha: torch.Tensor):
    """SAC's V target: ``min_j Q_j(s, a~pi, z) - alpha log pi(a | s, z)``."""
    return min_q - alpha * log_pi


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source`` (in place, no host sync)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, tau)


class ContextEncoder(nn.Module):
    """Each transition ``(s, a, r, s')`` -> a Gaussian factor; the posterior is their product."""

    def __init__(self, in_dim: int, latent_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp([in_dim, *hidden_sizes, 2 * latent_dim])

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., N, in] -> mu, var [..., N, L]`` (var by softplus, floored as the reference)."""
        mu, raw = self.net(context).chunk(2, dim=-1)
        return mu, nn.functional.softplus(raw).clamp_min(1e-7)

    def posterior(
        self, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[T, N, in]`` (and ``mask [T, N]``) -> posterior mean, variance ``[T, L]``."""
        return product_of_gaussians(*self.factors(context), mask)


def per_row(z: torch.Tensor, rows: int) -> torch.Tensor:
    """Each task's latent repeated over its rows: ``z [T, L] -> [T, rows, L]`` (a view)."""
    return z.unsqueeze(1).expand(-1, rows, -1)


def with_task_latent(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Append task t's latent to each of its rows: ``x [T, B, D]``, ``z [T, L] -> [T, B, D + L]``.

    Task-major on both sides (row ``(t, b)`` gets ``z[t]``), never flattened, so a
    task's transitions cannot meet another task's z.
    """
    return torch.cat([x, per_row(z, x.shape[1])], dim=-1)


def context_of(fields: dict[str, torch.Tensor]) -> torch.Tensor:
    """Transitions ``[..., N]`` -> the encoder's inputs ``[..., N, 2D + A + 1]``."""
    return torch.cat(
        [fields["obs"], fields["actions"], fields["rewards"].unsqueeze(-1), fields["next_obs"]],
        dim=-1,
    )


def episode_transitions(batch: EpisodeBatch) -> list[dict[str, np.ndarray]]:
    """Each task's real transitions of a batch, flattened over its episodes (``a = tanh(u)``)."""
    obs = batch.observations.numpy()
    next_obs = np.concatenate([obs[:, :, 1:], np.zeros_like(obs[:, :, :1])], axis=2)
    lengths = batch.lengths.numpy()
    ti, ei = np.indices(lengths.shape)
    next_obs[ti, ei, lengths - 1] = batch.final_observations.numpy()  # the step after the last
    mask = batch.mask.numpy() > 0
    actions = np.tanh(batch.actions.numpy())
    out = []
    for t in range(obs.shape[0]):
        m = mask[t]
        out.append({
            "obs": obs[t][m], "actions": actions[t][m], "rewards": batch.rewards.numpy()[t][m],
            "next_obs": next_obs[t][m], "terminals": batch.terminated.numpy()[t][m],
        })  # fmt: skip
    return out


def unique_tasks(tasks: list) -> list:
    """``tasks`` without repeats, in first-seen order (a meta-batch may draw a task twice)."""
    return list(dict.fromkeys(tasks))


# -- the learner ----------------------------------------------------------------------------
class PEARL:
    """The PEARL meta-learner (a :class:`~metarl.algos.base.MetaLearner`)."""

    name = "pearl"
    adaptation_unit = "episode"  # k of return_episode_k: the k-th episode of a task

    def __init__(
        self, policy: TanhGaussianPolicy, sampler, *, options: PEARLOptions, discount: float,
        seed: int, device: torch.device, dense_reward: DenseReward | None = None,
    ) -> None:  # fmt: skip
        spec = policy.spec
        self.policy, self.sampler, self.o, self.device = policy, sampler, options, device
        # (task, next_obs [N, D]) -> [N]: the RL buffer's reward in place of the env's, or None
        self.dense_reward = dense_reward
        self.discount = discount
        d, a, lat = spec.obs_dim, spec.act_dim, spec.latent_dim
        hidden = list(options.pearl_hidden_sizes)
        self.encoder = ContextEncoder(2 * d + a + 1, lat, options.pearl_encoder_hidden_sizes)
        self.q1 = mlp([d + a + lat, *hidden, 1])
        self.q2 = mlp([d + a + lat, *hidden, 1])
        self.v = mlp([d + lat, *hidden, 1])
        self.v_target = copy.deepcopy(self.v)
        for net in (self.encoder, self.q1, self.q2, self.v, self.v_target):
            net.to(device)
        lr = options.pearl_lr
        self.log_alpha = torch.tensor(
            float(np.log(max(options.pearl_alpha, 1e-8))),
            device=device,
            requires_grad=options.pearl_tune_alpha,
        )
        self.target_entropy = -float(a)
        self.optimizers = {
            "policy": torch.optim.Adam(policy.parameters(), lr=lr),
            "q": torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr),
            "v": torch.optim.Adam(self.v.parameters(), lr=lr),
            "encoder": torch.optim.Adam(self.encoder.parameters(), lr=lr),
        }
        if options.pearl_tune_alpha:
            self.optimizers["alpha"] = torch.optim.Adam([self.log_alpha], lr=lr)
        capacity = options.pearl_buffer_capacity
        self.replay = TaskReplay(d, a, capacity)
        self.encoder_replay = TaskReplay(d, a, capacity)
        self.seed = seed
        self.rng = np.random.default_rng(derive_seed(seed, "pearl-minibatches"))

    def networks(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "encoder": self.encoder, "q1": self.q1, "q2": self.q2,
                "v": self.v, "v_target": self.v_target}  # fmt: skip

    # -- z and data collection (CPU sampling; the encoder runs on the device) --------------
    def prior_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n, L]`` draws from N(0, I) (CPU; ``generator``: None = torch's global one)."""
        return torch.randn(n, self.policy.spec.latent_dim, generator=generator)

    @torch.no_grad()
    def posterior_z(
        self,
        context: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One z per task from q(z | context ``[T, N, in]``): ``[T, L]`` on the CPU."""
        mu, var = self.encoder.posterior(
            context.to(self.device), None if mask is None else mask.to(self.device)
        )
        noise = torch.randn(mu.shape, generator=generator)  # CPU: the same draws on any device
        return (mu.cpu() + var.sqrt().cpu() * noise).float()

    def _buffer_context(self, tasks: list) -> torch.Tensor:
        sample = self.encoder_replay.sample(
            self.encoder_replay.slots(tasks), self.o.pearl_embedding_batch, self.rng
        )
        return context_of({k: torch.from_numpy(v) for k, v in sample.items()})

    def _collect(self, tasks: list, z: torch.Tensor, batch_key: tuple, *, to_encoder: bool):
        """One episode per task with its ``z``; its transitions go to the buffers."""
        batch = self.sampler.sample(
            tasks, actor_params(self.policy, z), episodes_per_task=1, batch_key=batch_key
        )
        for task, transitions in zip(tasks, episode_transitions(batch)):
            if to_encoder:  # the encoder always reads the env's own reward
                self.encoder_replay.add(task, **transitions)
            if self.dense_reward is not None:
                rewards = self.dense_reward(task, transitions["next_obs"])
                transitions = {**transitions, "rewards": np.asarray(rewards, np.float32)}
            self.replay.add(task, **transitions)
        return batch

    def collect_iteration(
        self, tasks: list, iteration: int, infos: dict[str, list[float]] | None = None
    ) -> tuple[list[float], int]:
        """The paper's schedule for ``tasks``; returns each round's mean return and env steps.

        ``infos``, if given, gets each round's mean of every episode-info key appended.
        """
        o, steps, returns = self.o, 0, []
        new = [t for t in tasks if t not in self.replay]
        for e in range(o.pearl_initial_episodes if new else 0):
            batch = self._collect(new, self.prior_z(len(new)), (iteration, "initial", e),
                                  to_encoder=True)  # fmt: skip
            steps += batch.env_steps
        if o.pearl_prior_episodes:
            for task in tasks:
                self.encoder_replay.clear(task)
        rounds = ([("prior", True)] * o.pearl_prior_episodes
                  + [("posterior", True)] * o.pearl_posterior_episodes
                  + [("extra", False)] * o.pearl_extra_posterior_episodes)  # fmt: skip
        for k, (kind, to_encoder) in enumerate(rounds):
            if kind == "prior" or not self._encoder_has_context(tasks):
                z = self.prior_z(len(tasks))
            else:
                z = self.posterior_z(self._buffer_context(tasks))
            batch = self._collect(tasks, z, (iteration, "train", k), to_encoder=to_encoder)
            steps += batch.env_steps
            returns.append(float(batch.returns.mean()))
            if infos is not None:
                for key, values in batch.episode_infos.items():
                    infos.setdefault(key, []).append(float(values.mean()))
        return returns, steps

    def _encoder_has_context(self, tasks: list) -> bool:
        """Whether every task has transitions in the encoder's buffer (a task never collected
        for it, as with no initial and no prior episodes, has none: its z is the prior)."""
        if not all(task in self.encoder_replay for task in tasks):
            return False
        return bool(np.all(self.encoder_replay.size[self.encoder_replay.slots(tasks)] > 0))

    # -- the protocol ------------------------------------------------------------------------
    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        start = time.perf_counter()
        tasks = unique_tasks(tasks)
        infos: dict[str, list[float]] = {}
        returns, env_steps = self.collect_iteration(tasks, iteration, infos)
        t_sample = time.perf_counter() - start
        start = time.perf_counter()
        scalars, rejected = self.update(self.o.pearl_gradient_steps)
        t_update = time.perf_counter() - start
        scalars["perf/gradient_steps_per_s"] = self.o.pearl_gradient_steps / max(t_update, 1e-9)
        scalars["pearl/replay_transitions"] = float(self.replay.transitions)
        scalars["pearl/encoder_transitions"] = float(self.encoder_replay.transitions)
        scalars["pearl/replay_tasks"] = float(len(self.replay))
        return IterationResult(
            returns_per_step=returns,
            env_steps=env_steps,
            times={"sampling": t_sample, "adaptation": 0.0, "update": t_update},
            scalars=scalars,
            rejected=rejected,
            kl=scalars.get("pearl/kl"),
            infos_per_step=infos,
        )

    @torch.no_grad()
    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Mean return (and episode infos) of episode k = 1..adapt_steps+1 per task: ``[K + 1, T]``.

        Episode 1 runs with z from the prior; episode k + 1 with z from the
        posterior given the task's transitions of episodes 1..k. ``episodes_per_task``
        is read as independent such trials per task (``// (K + 1)``, at least one)
        so the data budget matches the other learners' meta-test.
        """
        k_total, n_tasks = adapt_steps + 1, len(tasks)
        trials = max(1, episodes_per_task // k_total)
        run = [task for task in tasks for _ in range(trials)]  # task-major, one trial each
        contexts: list[list[torch.Tensor]] = [[] for _ in run]
        out = torch.zeros(k_total, len(run))
        infos: dict[str, torch.Tensor] = {}  # key -> [K + 1, len(run)]
        gen = self.meta_test_generator(batch_key)
        for k in range(k_total):
            if k == 0:
                z = self.prior_z(len(run), gen)
            else:
                z = self.posterior_z(*pad_contexts(contexts), generator=gen)
            batch = self.sampler.sample(run, actor_params(self.policy, z), episodes_per_task=1,
                                        batch_key=(*batch_key, "pearl", k))  # fmt: skip
            out[k] = batch.returns[:, 0]
            for key, values in batch.episode_infos.items():
                infos.setdefault(key, torch.zeros(k_total, len(run)))[k] = values[:, 0]
            for i, transitions in enumerate(episode_transitions(batch)):
                tensors = {name: torch.from_numpy(v) for name, v in transitions.items()}
                contexts[i].append(context_of(tensors))

        def per_task(x: torch.Tensor) -> torch.Tensor:
            return x.view(k_total, n_tasks, trials).mean(-1)

        return AdaptationCurve(per_task(out), {key: per_task(v) for key, v in infos.items()})

    def meta_test_generator(self, batch_key: tuple) -> torch.Generator:
        """The generator of a meta-test's z draws (CPU). Its own: a meta-test must not move
        the training's random stream, or a resumed run (whose first part ended with a
        meta-test) would differ from a straight one."""
        return torch.Generator().manual_seed(derive_seed(self.seed, "pearl-meta-test", *batch_key))

    def metaworld_agent(
        self, *, n_envs: int, horizon: int, seed: int, batch_key: tuple, low: Any, high: Any
    ) -> Any:
        """Meta-World's protocol agent (:class:`~metarl.algos.base.MetaWorldAgentMaker`):
        prior z for a round's first episode, then the posterior over the context so far,
        as :meth:`meta_test`. Its default adaptation episodes are those the encoder's
        context came from in training (prior plus posterior episodes per iteration)."""
        from metarl.metaworld_protocol import LatentProtocolAgent, TrainedAdaptation

        o = self.o
        episodes = max(1, o.pearl_prior_episodes + o.pearl_posterior_episodes)
        why = (
            f"the encoder's context came from {o.pearl_prior_episodes} prior-z + "
            f"{o.pearl_posterior_episodes} posterior-z episodes per task per iteration"
        )
        trained = TrainedAdaptation(episodes, why)
        return LatentProtocolAgent(self, n_envs=n_envs, horizon=horizon, seed=seed,
                                   batch_key=batch_key, low=low, high=high,
                                   trained=trained)  # fmt: skip

    # -- the SAC + encoder update, batched over the meta-batch's tasks ----------------------
    def _minibatch(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A meta-batch's RL batch ``[T, B, ...]`` and context ``[T, C, in]``, on the device."""
        slots = self.rng.integers(0, len(self.replay), self.o.pearl_meta_batch)
        tasks = [self.replay.tasks[s] for s in slots]
        rl = self.replay.sample(slots, self.o.pearl_batch_size, self.rng)
        ctx = self.encoder_replay.sample(
            self.encoder_replay.slots(tasks), self.o.pearl_embedding_batch, self.rng
        )
        rl_t = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in rl.items()}
        ctx_t = context_of({k: torch.from_numpy(v) for k, v in ctx.items()})
        return rl_t, ctx_t.to(self.device, non_blocking=True)

    def task_latent(
        self, context: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reparameterised z per task from q(z | context ``[T, C, in]``): z, mu, var ``[T, L]``.

        ``noise`` (standard normals ``[T, L]``) is drawn if None; z keeps its graph to
        the encoder, so a loss of z trains it (only the critic's does: see the callers).
        """
        mu, var = self.encoder.posterior(context)
        if noise is None:
            noise = torch.randn_like(mu)
        return mu + var.sqrt() * noise, mu, var

    def critic_loss(self, rl: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Both Q's mean squared Bellman error on the RL batch ``[T, B]`` given z ``[T, L]``.

        The one loss that reaches the encoder (through ``z``, as the paper). The target
        ``r * scale + gamma V_target(s', z)`` sees z detached and builds no graph.
        """
        with torch.no_grad():
            next_v = self.v_target(with_task_latent(rl["next_obs"], z.detach())).squeeze(-1)
            target = soft_bellman_target(rl["rewards"], rl["terminals"], next_v,
                                         reward_scale=self.o.pearl_reward_scale,
                                         discount=self.discount)  # fmt: skip
        q_in = with_task_latent(torch.cat([rl["obs"], rl["actions"]], -1), z)
        return ((self.q1(q_in).squeeze(-1) - target).pow(2).mean()
                + (self.q2(q_in).squeeze(-1) - target).pow(2).mean())  # fmt: skip

    def actor_value_losses(
        self, obs: torch.Tensor, z: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, TanhGaussianSample]:
        """SAC's V loss and policy loss on ``obs [T, B, D]``; z ``[T, L]`` is detached here.

        Neither loss trains the encoder (the paper: only the critic's Bellman error
        and the KL do). The policy loss leaves gradients on the Q nets; the critic's
        next ``zero_grad`` clears them. Returns (V loss, policy loss, the sample).
        """
        zd = z.detach()
        pi = self.policy.rsample(obs, per_row(zd, obs.shape[1]))
        new_in = with_task_latent(torch.cat([obs, pi.action], -1), zd)
        min_q = torch.min(self.q1(new_in), self.q2(new_in)).squeeze(-1)
        v_pred = self.v(with_task_latent(obs, zd)).squeeze(-1)
        v_loss = (v_pred - soft_value_target(min_q, pi.log_prob, alpha).detach()).pow(2).mean()
        policy_loss = (alpha * pi.log_prob - min_q).mean() + (
            POLICY_MEAN_REG * pi.mean.pow(2).mean() + POLICY_STD_REG * pi.log_std.pow(2).mean()
        )
        return v_loss, policy_loss, pi

    def gradient_step(self, rl: dict[str, torch.Tensor], context: torch.Tensor) -> torch.Tensor:
        """One step of every network on ``T`` tasks at once; returns its statistics ``[7]``.

        Statistics (tensors, no host read): Q loss, V loss, policy loss, KL (sum over
        tasks), posterior std (mean), alpha, mean log pi.
        """
        o, opt = self.o, self.optimizers
        z, mu, var = self.task_latent(context)
        kl = kl_to_unit_gaussian(mu, var).sum()
        alpha = self.log_alpha.exp().detach()

        # critic and encoder: the Bellman error of both Q's, plus the KL
        q_loss = self.critic_loss(rl, z)
        opt["q"].zero_grad()
        opt["encoder"].zero_grad()
        (q_loss + o.pearl_kl_lambda * kl).backward()
        opt["q"].step()
        opt["encoder"].step()

        # actor and V, on the critics just updated (as the reference)
        v_loss, policy_loss, pi = self.actor_value_losses(rl["obs"], z, alpha)
        opt["v"].zero_grad()
        v_loss.backward()
        opt["v"].step()
        opt["policy"].zero_grad()
        policy_loss.backward()
        opt["policy"].step()
        if o.pearl_tune_alpha:
            alpha_loss = -(self.log_alpha * (pi.log_prob.detach() + self.target_entropy)).mean()
            opt["alpha"].zero_grad()
            alpha_loss.backward()
            opt["alpha"].step()
        soft_update(self.v_target, self.v, o.pearl_tau)
        stats = [q_loss, v_loss, policy_loss, kl, var.sqrt().mean(), alpha, pi.log_prob.mean()]
        return torch.stack([s.detach() for s in stats])

    def update(self, steps: int) -> tuple[dict[str, float], bool]:
        """``steps`` gradient steps; one host read at the end. A non-finite loss anywhere
        rejects the whole update: every network and optimiser goes back to its start."""
        if steps == 0 or len(self.replay) == 0:
            return {}, False
        snapshot = copy.deepcopy(self._train_state())
        totals = torch.zeros(7, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for _ in range(steps):
            stats = self.gradient_step(*self._minibatch())
            finite &= torch.isfinite(stats).all()
            totals += stats
        means = (totals / steps).tolist()  # the one host sync of the update
        if not bool(finite):
            self._load_train_state(snapshot)
            return {"pearl/rejected_nonfinite": 1.0}, True
        names = ["loss/q", "loss/v", "loss/policy", "pearl/kl", "pearl/posterior_std",
                 "pearl/alpha", "pearl/log_pi"]  # fmt: skip
        scalars = dict(zip(names, means))
        if not self.o.pearl_tune_alpha:
            del scalars["pearl/alpha"]
        return scalars, False

    # -- checkpoints ---------------------------------------------------------------------------
    def _train_state(self) -> dict:
        return {
            "networks": {k: net.state_dict() for k, net in self.networks().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "log_alpha": self.log_alpha.detach().clone(),
        }

    def _load_train_state(self, state: dict) -> None:
        for k, net in self.networks().items():
            net.load_state_dict(state["networks"][k])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])

    def state_dict(self) -> dict:
        """Networks, optimisers, alpha, both sets of replay buffers (filled part, float32)
        and the minibatch generator: everything an exact resume needs."""
        return {
            **self._train_state(),
            "replay": self.replay.state_dict(),
            "encoder_replay": self.encoder_replay.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def slim_state_dict(self) -> dict:
        """What meta-test reads: the policy and the context encoder (no critics, alpha,
        optimisers, replay buffers or generator): :class:`~metarl.algos.base.HasSlimState`."""
        return {"networks": {k: self.networks()[k].state_dict() for k in ("policy", "encoder")}}

    def load_state_dict(self, state: dict) -> None:
        self._load_train_state(state)
        self.replay.load_state_dict(state["replay"])
        self.encoder_replay.load_state_dict(state["encoder_replay"])
        self.rng.bit_generator.state = state["rng"]


def pad_contexts(contexts: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task lists of ``[n_j, in]`` transitions -> ``[T, N, in]`` zero-padded and its mask."""
    joined = [torch.cat(parts) for parts in contexts]
    n = max(x.shape[0] for x in joined)
    padded = torch.zeros(len(joined), n, joined[0].shape[1])
    mask = torch.zeros(len(joined), n)
    for i, x in enumerate(joined):
        padded[i, : x.shape[0]] = x
        mask[i, : x.shape[0]] = 1.0
    return padded, mask


# -- the registry entry --------------------------------------------------------------------
def build_pearl_policy(config: Config, obs_dim: int, act_dim: int) -> TanhGaussianPolicy:
    """The tanh-Gaussian policy of ``[s, z]`` (``pearl_hidden_sizes``, ``pearl_latent_dim``)."""
    options = config.group(PEARLOptions)
    spec = TanhGaussianSpec(obs_dim, act_dim, options.pearl_latent_dim,
                            options.pearl_hidden_sizes)  # fmt: skip
    return TanhGaussianPolicy(spec)


def family_dense_reward(config: Config) -> DenseReward:
    """``config.env``'s ``dense_training_reward`` (a :class:`ConfigError` if it has none)."""
    from metarl.registry import make_env  # imports the family's module (and MuJoCo) only here

    env = make_env(config.env, **config.env_kwargs)
    try:
        family = env.unwrapped
        if not isinstance(family, HasDenseTrainingReward):
            raise ConfigError(
                f"pearl_dense_sac_reward: {config.env!r} ({type(family).__name__}) defines no "
                "dense_training_reward(task, next_obs); drop the option or add the method"
            )
        return type(family).dense_training_reward
    finally:
        env.close()


def build_pearl(config: Config, policy: TanhGaussianPolicy, sampler, device: torch.device):
    """PEARL from ``config``'s :class:`PEARLOptions` and its ``discount``."""
    options = config.group(PEARLOptions)
    dense = family_dense_reward(config) if options.pearl_dense_sac_reward else None
    return PEARL(policy, sampler, options=options, discount=config.discount,
                 seed=config.seed, device=device, dense_reward=dense)  # fmt: skip


ALGORITHM = Algorithm(
    name="pearl",
    summary="PEARL: SAC on a task latent inferred by a permutation-invariant context encoder",
    option_groups=(PEARLOptions,),
    policy_group=PEARLOptions,
    build_policy=build_pearl_policy,
    build_learner=build_pearl,
)
