"""RL2 (Duan et al. 2016; Wang et al. 2016): a recurrent policy that adapts within a trial.

A *trial* is K consecutive episodes of one task; the policy's memory runs
through the whole trial (reset only between trials), and it sees the previous
action, reward and done flag, so it can identify the task from experience and
exploit it in later episodes. The trial is the RL episode: discounting and
GAE run across the episode boundaries inside a trial and stop at its end.
``rl2_core`` picks the memory: a GRU's hidden state (``gru``,
:mod:`metarl.policies.recurrent`) or a causal transformer attending over the
trial so far (``transformer``, :mod:`metarl.policies.transformer`). Either
policy and its value head are trained by the same PPO over minibatches of whole
trials, with optional truncated back-propagation through time (the GRU's).

Shapes: T tasks, R trials per task, B = T * R trials, L = K * horizon steps
per trial (episodes are laid end to end; padding only after the trial ends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from metarl.algos.base import ActorRun, AdaptationCurve, Algorithm, IterationResult
from metarl.algos.ppo import PPOOptions, lr_anneal_iterations
from metarl.optim import ClippedSurrogate, apply_scheduled_lr, clipped_surrogate, past_kl_target
from metarl.options import ConfigError, option
from metarl.policies.gaussian_mlp import gaussian_log_prob, params_to_numpy
from metarl.policies.recurrent import GaussianGRUPolicy, GRUPolicyOptions, GRUSpec, rl2_inputs
from metarl.policies.transformer import (
    GaussianTransformerPolicy,
    TransformerOptions,
    build_transformer_policy,
    check_transformer_options,
)
from metarl.progress import NULL_REPORTER, Reporter, planned_total
from metarl.returns import explained_variance, gae_advantages, normalize_advantages

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling.trials import TrialBatch

ENTROPY_CONST = 0.5 * math.log(2.0 * math.pi * math.e)

RL2Policy = GaussianGRUPolicy | GaussianTransformerPolicy
"""The policy of either core: ``policy(inputs [B, L, in], bptt_chunk=)`` -> mean, value."""


@dataclass
class RL2Options:
    """RL2: the config keys of its trials and its PPO update (garage's defaults)"""

    rl2_episodes_per_trial: int = option(
        2, "RL2: consecutive episodes of one task sharing the hidden state", min=1
    )
    rl2_trials_per_task: int = option(4, "RL2: trials per task per meta-iteration", min=1)
    rl2_gae_lambda: float = option(0.95, "RL2: GAE lambda over the trial", min=0.0, max=1.0)
    rl2_bptt_chunk: int = option(
        0, "RL2: truncated back-propagation chunk length in steps; 0 = the whole trial", min=0
    )
    rl2_minibatches: int = option(4, "RL2: minibatches of whole trials per PPO epoch", min=1)
    rl2_value_coef: float = option(0.5, "RL2: weight of the value loss", min=0.0)
    rl2_entropy_coef: float = option(0.0, "RL2: weight of the entropy bonus", min=0.0)
    rl2_max_grad_norm: float = option(0.5, "RL2: gradient-norm clip (0 = off)", min=0.0)
    rl2_core: str = option(
        "gru",
        "RL2: the policy's memory over the trial: a GRU, or a causal transformer "
        "(its keys: rl2_transformer_*)",
        choices=("gru", "transformer"),
        identity=True,
    )


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over every real step (a scalar)."""
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def sample_policy_trials(
    sampler: Any, policy: Any, tasks: list, *, trials: int, episodes: int, batch_key: tuple
) -> TrialBatch:
    """``trials`` trials of ``episodes`` episodes per task, acted by ``policy``'s current
    parameters (one set shared by every task): how RL² and VariBAD collect data."""
    return sampler.sample_trials(
        tasks,
        params_to_numpy(policy.params()),
        trials_per_task=trials,
        episodes_per_trial=episodes,
        batch_key=batch_key,
    )


def trial_meta_test(
    sample: Any, tasks: list, adapt_steps: int, episodes_per_task: int, batch_key: tuple
) -> AdaptationCurve:
    """An in-context learner's meta-test: episode k = 1..adapt_steps+1 of a trial, per task
    (``[K, T]`` each). ``episodes_per_task`` is read as trials per task (each of
    ``adapt_steps + 1`` episodes), so the data budget matches MAML's meta-test.

    ``sample(tasks, trials=, episodes=, batch_key=)`` collects the trials (the learner's own
    sampling, so RL² and VariBAD share this rule).
    """
    batch = sample(
        tasks,
        trials=max(1, episodes_per_task // (adapt_steps + 1)),
        episodes=adapt_steps + 1,
        batch_key=batch_key,
    )
    return trial_curve(batch)


def trial_actors(policy: Any, n_tasks: int, adapt_steps: int) -> list[list[ActorRun]]:
    """Per task, one trial of ``adapt_steps + 1`` episodes of an in-context policy: it adapts
    in its state (hidden state, cache, belief), not its weights, so nothing is sampled
    here; the actor carries that state from one episode to the next as it acts."""
    shared = {name: value[None] for name, value in params_to_numpy(policy.params()).items()}
    return [[ActorRun(policy.spec.make_actor(shared), adapt_steps + 1)] for _ in range(n_tasks)]


def trial_curve(batch: TrialBatch) -> AdaptationCurve:
    """Each task's mean over its trials of episode k = 1..K's return and infos: ``[K, T]``."""
    return AdaptationCurve(
        returns=batch.episode_returns.mean(dim=1).T,
        infos={key: values.mean(dim=1).T for key, values in batch.episode_infos.items()},
    )


class RL2:
    """The RL2 meta-learner (a :class:`~metarl.algos.base.MetaLearner`)."""

    adaptation_unit = "episode"  # what the k of return_episode_k counts

    name = "rl2"
    progress: Reporter = NULL_REPORTER  # the loop's display while it trains (see MetaLearner)

    def __init__(
        self,
        policy: RL2Policy,
        sampler,
        *,
        trials_per_task: int,
        episodes_per_trial: int,
        discount: float,
        gae_lambda: float,
        epochs: int,
        clip: float,
        lr: float,
        target_kl: float = 0.0,
        minibatches: int,
        value_coef: float,
        entropy_coef: float,
        max_grad_norm: float,
        bptt_chunk: int,
        device: torch.device,
        lr_anneal_iterations: int = 0,
    ) -> None:
        self.policy = policy
        self.sampler = sampler
        self.trials_per_task = trials_per_task
        self.episodes_per_trial = episodes_per_trial
        self.discount = discount
        self.gae_lambda = gae_lambda
        self.epochs = epochs
        self.clip = clip
        self.target_kl = target_kl
        self.minibatches = minibatches
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.bptt_chunk = bptt_chunk
        self.device = device
        self.lr = lr
        self.lr_anneal_iterations = lr_anneal_iterations  # 0 = constant (see scheduled_lr)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        named = list(policy.named_parameters())
        self._clip_groups = [
            [p for k, p in named if not k.startswith("value_")],
            [p for k, p in named if k.startswith("value_")],
        ]

    # -- data ----------------------------------------------------------------------------
    def _sample(self, tasks: list, *, trials: int, episodes: int, batch_key: tuple):
        return sample_policy_trials(
            self.sampler, self.policy, tasks, trials=trials, episodes=episodes, batch_key=batch_key
        )

    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        episodes = self.trials_per_task * self.episodes_per_trial
        self.progress.steps(0, planned_total(0, 1, len(tasks) * episodes * self.sampler.horizon))
        self.progress.phase("sampling")
        start = time.perf_counter()
        batch = self._sample(
            tasks,
            trials=self.trials_per_task,
            episodes=self.episodes_per_trial,
            batch_key=(iteration, "train"),
        )
        t_sample = time.perf_counter() - start
        self.progress.steps(batch.env_steps, batch.env_steps)
        self.progress.phase("updating")
        start = time.perf_counter()
        lr = apply_scheduled_lr(self.optimizer, self.lr, iteration, self.lr_anneal_iterations)
        scalars = self.update(batch)
        scalars["ppo/lr"] = lr
        episode_means = batch.episode_returns.mean(dim=(0, 1))  # [K]
        return IterationResult(
            returns_per_step=[float(r) for r in episode_means],
            infos_per_step={
                key: values.mean(dim=(0, 1)).tolist() for key, values in batch.episode_infos.items()
            },
            env_steps=batch.env_steps,
            times={"sampling": t_sample, "adaptation": 0.0, "update": time.perf_counter() - start},
            scalars=scalars,
            rejected=scalars.get("ppo/rejected_nonfinite", 0.0) > 0,
            kl=scalars["ppo/approx_kl"],
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Mean return (and infos) of episode k = 1..adapt_steps+1 of a trial, per task:
        ``[K, T]`` each (:func:`trial_meta_test`)."""
        return trial_meta_test(self._sample, tasks, adapt_steps, episodes_per_task, batch_key)

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """Per task, one trial of ``adapt_steps + 1`` episodes of the recurrent policy.

        RL2 adapts in its hidden state, not its weights, so nothing is sampled here: the
        trial's actor carries its state from one episode to the next as it acts.
        """
        return trial_actors(self.policy, len(tasks), adapt_steps)

    # -- the PPO update over whole trials -----------------------------------------------------
    def update(self, batch) -> dict[str, float]:
        flat = {
            name: getattr(batch, name).flatten(0, 1).to(self.device)
            for name in ("observations", "actions", "rewards", "dones", "mask")
        }
        inputs = rl2_inputs(flat["observations"], flat["actions"], flat["rewards"], flat["dones"])
        actions, mask = flat["actions"], flat["mask"]
        self.policy.eval()  # the acting policy's values: no dropout (the transformer's)
        with torch.no_grad():
            mean, values = self.policy(inputs)
            old_log_probs = gaussian_log_prob(actions, mean, self.policy.log_std)
            advantages = gae_advantages(
                flat["rewards"], values, mask, self.discount, self.gae_lambda
            )
            returns = (advantages + values) * mask
            norm_adv = normalize_advantages(advantages, mask)
        self.policy.train()
        stats: dict[str, float] = {
            "baseline/explained_variance": explained_variance(values, returns, mask)
        }
        n_trials = inputs.shape[0]
        mb_size = max(1, math.ceil(n_trials / self.minibatches))
        sums = {"loss/policy": 0.0, "loss/value": 0.0, "ppo/entropy": 0.0,
                "ppo/clip_fraction": 0.0}  # fmt: skip
        n_updates = 0
        kls: list[float] = []  # every minibatch's KL before its step, and the one that stops
        stopped = False
        for _ in range(self.epochs):
            order = torch.randperm(n_trials)
            for idx in order.split(mb_size):
                mean, values = self.policy(inputs[idx], bptt_chunk=self.bptt_chunk)
                log_probs = gaussian_log_prob(actions[idx], mean, self.policy.log_std)
                terms = clipped_surrogate(log_probs - old_log_probs[idx], norm_adv[idx], self.clip)
                approx_kl = float(masked_mean(terms.approx_kl, mask[idx]))
                kls.append(approx_kl)
                if past_kl_target(approx_kl, self.target_kl):
                    stopped = True  # before the step, as stable-baselines3
                    break
                step = self._minibatch_step(terms, values, returns[idx], mask[idx])
                if step is None:
                    stats["ppo/rejected_nonfinite"] = 1.0
                    continue
                for key, value in step.items():
                    sums[key] += value
                n_updates += 1
            if stopped:
                break
        stats.update({k: v / max(n_updates, 1) for k, v in sums.items()})
        # As stable-baselines3 logs it, the measurement that stopped the update included: without
        # it, an update stopped after its first step (measured at KL 0) would read 0.
        stats["ppo/approx_kl"] = sum(kls) / max(len(kls), 1)
        stats["ppo/early_stop"] = float(stopped)
        stats["ppo/minibatch_steps"] = float(n_updates)
        return stats

    def _minibatch_step(self, terms: ClippedSurrogate, values, returns, mask):
        """One Adam step on a minibatch of trials, from its forward pass.

        Returns its statistics, or ``None`` if the loss or gradient is not finite (no step).
        """
        policy_loss = -masked_mean(terms.objective, mask)
        value_loss = masked_mean((values - returns).pow(2), mask)
        entropy = (self.policy.log_std + ENTROPY_CONST).sum()
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if not (torch.isfinite(loss.detach()) and all(torch.isfinite(g).all() for g in grads)):
            self.optimizer.zero_grad()
            return None
        if self.max_grad_norm > 0:  # actor and critic apart: value gradients are far larger
            for group in self._clip_groups:
                torch.nn.utils.clip_grad_norm_(group, self.max_grad_norm)
        self.optimizer.step()
        return {
            "loss/policy": float(policy_loss.detach()),
            "loss/value": float(value_loss.detach()),
            "ppo/entropy": float(entropy.detach()),
            "ppo/clip_fraction": float(masked_mean(terms.clipped, mask)),
        }

    def metaworld_agent(
        self, *, n_envs: int, horizon: int, seed: int, batch_key: tuple, low: Any, high: Any
    ) -> Any:
        """Meta-World's protocol agent: the hidden state carries the adaptation episodes
        into the evaluation episodes, as in a trial: by default K - 1 adaptation episodes for
        trials of K, so the first evaluation episode is the last one its training reached."""
        from metarl.metaworld_protocol import RecurrentProtocolAgent, TrainedAdaptation

        k, episodes = self.episodes_per_trial, max(1, self.episodes_per_trial - 1)
        why = (
            f"trained on trials of {k} episodes: {episodes} adaptation episode(s) make the "
            "first evaluation episode the last of a trained trial"
        )
        trained = TrainedAdaptation(episodes, why)
        return RecurrentProtocolAgent(self.policy, n_envs=n_envs, horizon=horizon, seed=seed,
                                      batch_key=batch_key, low=low, high=high,
                                      trained=trained)  # fmt: skip

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])


def build_gru_policy(config: Config, obs_dim: int, act_dim: int) -> GaussianGRUPolicy:
    """RL2's recurrent policy (``rl2_hidden_size``, ``init_log_std``)."""
    options = config.group(GRUPolicyOptions)
    spec = GRUSpec(obs_dim, act_dim, options.rl2_hidden_size)
    return GaussianGRUPolicy(spec, init_log_std=options.init_log_std)


def build_rl2_policy(config: Config, obs_dim: int, act_dim: int) -> RL2Policy:
    """The policy of ``rl2_core``: the GRU's, or the transformer's (``rl2_transformer_*``)."""
    if config.group(RL2Options).rl2_core == "transformer":
        init_log_std = config.group(GRUPolicyOptions).init_log_std
        options = config.group(TransformerOptions)
        return build_transformer_policy(options, obs_dim, act_dim, init_log_std=init_log_std)
    return build_gru_policy(config, obs_dim, act_dim)


def core_groups(keys: Mapping[str, Any] | None) -> tuple[type, ...]:
    """The transformer's keys with ``rl2_core: transformer`` (``keys`` None: every core's);
    a ConfigError for a transformer key given to a GRU run (it would be ignored)."""
    if keys is None or keys.get("rl2_core") == "transformer":
        return (TransformerOptions,)
    given = [key for key in keys if key.startswith("rl2_transformer_")]
    if given:
        raise ConfigError(
            f"config key '{given[0]}' is read only with rl2_core: transformer "
            f"(this run's rl2_core is {keys.get('rl2_core', 'gru')!r})"
        )
    return ()


def check_rl2(config: Config) -> None:
    """The transformer core's keys fit together, and it is not given a BPTT chunk."""
    if config.group(RL2Options).rl2_core != "transformer":
        return
    check_transformer_options(config.group(TransformerOptions))
    if config.group(RL2Options).rl2_bptt_chunk:
        raise ConfigError(
            "config key 'rl2_bptt_chunk': truncated back-propagation is the GRU core's; "
            "with rl2_core: transformer it must be 0"
        )


def build_rl2(config: Config, policy: RL2Policy, sampler, device: torch.device) -> RL2:
    """RL2 from ``config``'s :class:`RL2Options` and :class:`PPOOptions`."""
    rl2, ppo = config.group(RL2Options), config.group(PPOOptions)
    return RL2(
        policy,
        sampler,
        trials_per_task=rl2.rl2_trials_per_task,
        episodes_per_trial=rl2.rl2_episodes_per_trial,
        discount=config.discount,
        gae_lambda=rl2.rl2_gae_lambda,
        epochs=ppo.ppo_epochs,
        clip=ppo.ppo_clip,
        lr=ppo.ppo_lr,
        target_kl=ppo.ppo_target_kl,
        minibatches=rl2.rl2_minibatches,
        value_coef=rl2.rl2_value_coef,
        entropy_coef=rl2.rl2_entropy_coef,
        max_grad_norm=rl2.rl2_max_grad_norm,
        bptt_chunk=rl2.rl2_bptt_chunk,
        device=device,
        lr_anneal_iterations=lr_anneal_iterations(ppo, config.iterations),
    )


ALGORITHM = Algorithm(
    name="rl2",
    summary="RL2: a recurrent PPO policy that adapts within a trial of episodes",
    option_groups=(PPOOptions, RL2Options, GRUPolicyOptions),
    build_policy=build_rl2_policy,
    build_learner=build_rl2,
    policy_group=GRUPolicyOptions,
    chosen_groups=core_groups,
    validate=check_rl2,
)
