"""VariBAD (Zintgraf et al., ICLR 2020): a Bayes-adaptive policy on a learnt belief over tasks.

A recurrent encoder reads the trial so far and gives a Gaussian belief over a latent
task ``m`` (:mod:`metarl.policies.belief`); a decoder predicts rewards (optionally next
states) of any state and action from a sample of it (:mod:`metarl.algos.varibad_vae`).
The policy acts on the state and the belief's mean and log-variance, and is trained by
PPO; the encoder and decoders are trained as a VAE, by the ELBO over whole trials, on
minibatches of recent trials (:mod:`metarl.algos.varibad_buffer`).

As RL2 (and sharing its trial sampling: :meth:`~metarl.sampling.Sampler.sample_trials`),
adaptation is by episodes: a trial is ``varibad_episodes_per_trial`` episodes of one
task with the belief carried across them, reset to the prior between trials, and the
trial is the RL episode (the BAMDP's horizon is episodes x horizon): discounting and GAE
run across the episode boundaries inside a trial and stop at its end.

One iteration: sample ``varibad_trials_per_task`` trials per task with the current
encoder and policy; add them to the VAE buffer; PPO epochs over minibatches of whole
trials, on beliefs recomputed by the (unchanged) encoder; then ``varibad_vae_updates``
VAE steps, each on ``varibad_vae_batch_trials`` trials of the buffer (the reference's
order: the policy update, then the VAE's). By default the policy sees the belief
detached, so the RL loss trains no encoder weight (the paper). With
``varibad_rl_loss_through_encoder`` each PPO minibatch recomputes the beliefs with
gradients and its loss adds ``varibad_vae_loss_coef`` x the VAE loss of a buffer
minibatch, one step for the policy and the VAE together (the reference's
``rlloss_through_encoder``); there are then no separate VAE steps.

Shapes: T tasks, R trials per task, B = T * R trials, L = K * horizon steps per trial.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from metarl.algos.base import ActorRun, AdaptationCurve, Algorithm, IterationResult
from metarl.algos.ppo import PPOOptions, lr_anneal_iterations
from metarl.algos.rl2 import (
    ENTROPY_CONST,
    masked_mean,
    sample_policy_trials,
    trial_actors,
    trial_meta_test,
)
from metarl.algos.varibad_buffer import TrialBuffer
from metarl.algos.varibad_vae import ELBOTerms, PairDecoder, Trials, elbo_terms
from metarl.optim import apply_scheduled_lr, clipped_surrogate, past_kl_target
from metarl.options import ConfigError, option
from metarl.policies.belief import BeliefPolicy, BeliefPolicyOptions, BeliefSpec
from metarl.policies.gaussian_mlp import gaussian_log_prob
from metarl.progress import NULL_REPORTER, Reporter, planned_total
from metarl.returns import explained_variance, gae_advantages, normalize_advantages
from metarl.seeding import derive_seed

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling.trials import TrialBatch


@dataclass
class VariBADOptions:
    """VariBAD: trials, the VAE and its buffer, the PPO extras (reference values in brackets)"""

    varibad_episodes_per_trial: int = option(
        2, "VariBAD: episodes of one task sharing the belief [max_rollouts_per_task 2]", min=1
    )
    varibad_trials_per_task: int = option(2, "VariBAD: trials per task per iteration", min=1)
    varibad_gae_lambda: float = option(
        0.9, "VariBAD: GAE lambda over the trial [policy_tau 0.9]", min=0.0, max=1.0
    )
    varibad_minibatches: int = option(
        4, "VariBAD: PPO minibatches of whole trials per epoch [8 of steps]", min=1
    )
    varibad_value_coef: float = option(0.5, "VariBAD: weight of the value loss [0.5]", min=0.0)
    varibad_entropy_coef: float = option(
        0.01, "VariBAD: weight of the entropy bonus [0.01; 0.001 point robot]", min=0.0
    )
    varibad_max_grad_norm: float = option(
        0.5, "VariBAD: policy gradient-norm clip, actor and critic apart (0 = off) [0.5]", min=0.0
    )
    varibad_vae_lr: float = option(1e-3, "VariBAD: Adam step size of the VAE [1e-3]", min=0.0)
    varibad_vae_buffer_trials: int = option(
        1000, "VariBAD: trials the VAE buffer holds, newest kept [size_vae_buffer 10000]", min=1
    )
    varibad_vae_batch_trials: int = option(
        10, "VariBAD: trials per VAE step [vae_batch_num_trajs 10; 15 point robot]", min=1
    )
    varibad_vae_updates: int = option(
        1, "VariBAD: VAE steps per iteration [num_vae_updates 1; 3 point robot]", min=0
    )
    varibad_kl_weight: float = option(
        1.0,
        "VariBAD: weight of the KL terms per trial (the reference sums them over its VAE batch: "
        "its kl_weight x vae_batch_num_trajs is this) [0.1 x 10; 1.0 x 15 point robot]",
        min=0.0,
    )
    varibad_reward_loss_coef: float = option(
        1.0, "VariBAD: weight of the reward reconstruction [rew_loss_coeff 1.0]", min=0.0
    )
    varibad_decode_state: bool = option(
        False, "VariBAD: also decode next states [decode_state False]", identity=True
    )
    varibad_state_loss_coef: float = option(
        1.0, "VariBAD: weight of the state reconstruction [state_loss_coeff 1.0]", min=0.0
    )
    varibad_decoder_hidden_sizes: tuple = option(
        (64, 32), "VariBAD: ReLU hidden sizes of each decoder [64 32]", min=1, identity=True
    )
    varibad_subsample_elbos: int = option(
        0, "VariBAD: beliefs per trial in a VAE step, 0 = all [50; all point robot]", min=0
    )
    varibad_subsample_decodes: int = option(
        0, "VariBAD: decoded steps per trial in a VAE step, 0 = all [50; all point robot]", min=0
    )
    varibad_bptt_chunk: int = option(
        0, "VariBAD: truncated back-propagation through the encoder, 0 = whole trial "
        "[tbptt_stepsize 50; whole point robot]", min=0,
    )  # fmt: skip
    varibad_vae_max_grad_norm: float = option(
        0.0, "VariBAD: gradient-norm clip of the encoder and of the decoders (0 = off) "
        "[1.0; off point robot]", min=0.0,
    )  # fmt: skip
    varibad_rl_loss_through_encoder: bool = option(
        False, "VariBAD: let the RL loss train the encoder (PPO steps add the VAE loss) [False]"
    )
    varibad_vae_loss_coef: float = option(
        1.0, "VariBAD: weight of the VAE loss in the joint step of "
        "varibad_rl_loss_through_encoder [vae_loss_coeff 1.0]", min=0.0,
    )  # fmt: skip


@dataclass
class PPOData:
    """One iteration's trials, ready for PPO: ``[B, L, ...]`` on the learner's device.

    ``beliefs`` are the encoder's at sampling time (detached); ``inputs`` are the encoder's
    rows, for recomputing them with gradients (``varibad_rl_loss_through_encoder``).
    """

    inputs: torch.Tensor  # [B, L, D + A + 2]
    observations: torch.Tensor  # [B, L, D]
    actions: torch.Tensor  # [B, L, A]
    mask: torch.Tensor  # [B, L]
    beliefs: torch.Tensor  # [B, L, 2Z]
    old_log_probs: torch.Tensor  # [B, L]
    advantages: torch.Tensor  # [B, L], normalised
    returns: torch.Tensor  # [B, L]
    values: torch.Tensor  # [B, L], the critic's at sampling time


def buffer_fields(batch: TrialBatch) -> dict[str, torch.Tensor]:
    """A trial batch's trials as the VAE buffer's fields, ``[B = T * R, ...]``."""
    return {
        "observations": batch.observations.flatten(0, 1),
        "actions": batch.actions.flatten(0, 1),
        "rewards": batch.rewards.flatten(0, 1),
        "dones": batch.dones.flatten(0, 1).float(),
        "lengths": batch.lengths.flatten(0, 1),
    }


def finite(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> bool:
    """The loss and every gradient of ``params`` are finite."""
    grads = [p.grad for p in params if p.grad is not None]
    return bool(torch.isfinite(loss.detach())) and all(torch.isfinite(g).all() for g in grads)


class VariBAD:
    """The VariBAD meta-learner (a :class:`~metarl.algos.base.MetaLearner`)."""

    name = "varibad"
    adaptation_unit = "episode"  # what the k of return_episode_k counts
    progress: Reporter = NULL_REPORTER  # the loop's display while it trains (ReportsProgress)

    def __init__(
        self,
        policy: BeliefPolicy,
        sampler,
        *,
        options: VariBADOptions,
        ppo: PPOOptions,
        discount: float,
        seed: int,
        device: torch.device,
        lr_anneal_iterations: int = 0,
    ) -> None:
        self.policy, self.sampler, self.o, self.ppo = policy, sampler, options, ppo
        self.discount, self.device = discount, device
        self.lr_anneal_iterations = lr_anneal_iterations  # 0 = constant (see scheduled_lr)
        spec = policy.spec
        decoder = {"embed_sizes": spec.embed_sizes[:2],
                   "hidden_sizes": tuple(options.varibad_decoder_hidden_sizes)}  # fmt: skip
        self.reward_decoder = PairDecoder(spec.latent_dim, spec.obs_dim, spec.act_dim,
                                          out_dim=1, **decoder).to(device)  # fmt: skip
        self.state_decoder = (
            PairDecoder(
                spec.latent_dim, spec.obs_dim, spec.act_dim, out_dim=spec.obs_dim, **decoder
            ).to(device)
            if options.varibad_decode_state
            else None
        )
        self.optimizer = torch.optim.Adam(policy.rl_parameters(), lr=ppo.ppo_lr)
        self.vae_optimizer = torch.optim.Adam(self.vae_parameters(), lr=options.varibad_vae_lr)
        named = [(k, p) for k, p in policy.named_parameters() if not k.startswith("encoder.")]
        self._clip_groups = [  # actor and critic apart, as RL2: value gradients are far larger
            [p for k, p in named if not k.startswith("critic.")],
            [p for k, p in named if k.startswith("critic.")],
        ]
        self.buffer = TrialBuffer(options.varibad_vae_buffer_trials)
        # every draw of training (minibatch orders, VAE batches, latent samples): saved and
        # restored with the learner, and never touched by a meta-test
        self.rng = torch.Generator().manual_seed(derive_seed(seed, "varibad"))

    def decoders(self) -> list[PairDecoder]:
        return [d for d in (self.reward_decoder, self.state_decoder) if d is not None]

    def vae_parameters(self) -> list[torch.nn.Parameter]:
        """The encoder's and the decoders' parameters (what the VAE's Adam trains)."""
        params = list(self.policy.encoder.parameters())
        for decoder in self.decoders():
            params += list(decoder.parameters())
        return params

    # -- data ----------------------------------------------------------------------------
    def _sample(self, tasks: list, *, trials: int, episodes: int, batch_key: tuple):
        return sample_policy_trials(
            self.sampler, self.policy, tasks, trials=trials, episodes=episodes, batch_key=batch_key
        )

    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        o = self.o
        episodes = o.varibad_trials_per_task * o.varibad_episodes_per_trial
        self.progress.steps(0, planned_total(0, 1, len(tasks) * episodes * self.sampler.horizon))
        self.progress.phase("sampling")
        start = time.perf_counter()
        batch = self._sample(tasks, trials=o.varibad_trials_per_task,
                             episodes=o.varibad_episodes_per_trial,
                             batch_key=(iteration, "train"))  # fmt: skip
        t_sample = time.perf_counter() - start
        self.progress.steps(batch.env_steps, batch.env_steps)
        self.progress.phase("updating")
        start = time.perf_counter()
        self.buffer.add(buffer_fields(batch))
        lr = apply_scheduled_lr(self.optimizer, self.ppo.ppo_lr, iteration,
                                self.lr_anneal_iterations)  # fmt: skip
        scalars = self.ppo_update(self.prepare(batch))
        scalars["ppo/lr"] = lr
        if not o.varibad_rl_loss_through_encoder:
            scalars.update(self.vae_update(o.varibad_vae_updates))
        scalars["vae/buffer_trials"] = float(len(self.buffer))
        episode_means = batch.episode_returns.mean(dim=(0, 1))  # [K]
        return IterationResult(
            returns_per_step=[float(r) for r in episode_means],
            infos_per_step={
                key: values.mean(dim=(0, 1)).tolist() for key, values in batch.episode_infos.items()
            },
            env_steps=batch.env_steps,
            times={"sampling": t_sample, "adaptation": 0.0, "update": time.perf_counter() - start},
            scalars=scalars,
            rejected=scalars.get("ppo/rejected_nonfinite", 0.0) > 0
            or scalars.get("vae/rejected_nonfinite", 0.0) > 0,
            kl=scalars["ppo/approx_kl"],
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Mean return (and infos) of episode k = 1..adapt_steps+1 of a trial, per task:
        ``[K, T]`` each; ``episodes_per_task`` is read as trials per task (each of
        ``adapt_steps + 1`` episodes), as RL2's. It draws nothing from the training's
        generator: the sampler's noise is keyed by ``batch_key``."""
        return trial_meta_test(self._sample, tasks, adapt_steps, episodes_per_task, batch_key)

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """Per task, one trial of ``adapt_steps + 1`` episodes: the belief adapts as it acts
        (:class:`~metarl.algos.base.ShowsAdaptation`)."""
        return trial_actors(self.policy, len(tasks), adapt_steps)

    def metaworld_agent(
        self, *, n_envs: int, horizon: int, seed: int, batch_key: tuple, low: Any, high: Any
    ) -> Any:
        """Meta-World's protocol agent: the belief carries the adaptation episodes into the
        evaluation episodes, as in a trial (RL2's agent: it runs any stateful actor)."""
        from metarl.metaworld_protocol import RecurrentProtocolAgent

        return RecurrentProtocolAgent(self.policy, n_envs=n_envs, horizon=horizon, seed=seed,
                                      batch_key=batch_key, low=low, high=high)  # fmt: skip

    # -- PPO over whole trials --------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, batch: TrialBatch) -> PPOData:
        """Beliefs, old log-probabilities, GAE advantages and returns of ``batch``."""
        flat = {name: getattr(batch, name).flatten(0, 1).to(self.device)
                for name in ("observations", "actions", "rewards", "dones", "mask")}  # fmt: skip
        trials = Trials(
            flat["observations"],
            flat["actions"],
            flat["rewards"],
            flat["dones"].float(),
            batch.lengths.flatten(0, 1).to(self.device),
        )
        inputs = trials.inputs()
        beliefs = self.policy.beliefs(inputs)
        mean, values = self.policy(flat["observations"], beliefs)
        mask = flat["mask"]
        advantages = gae_advantages(flat["rewards"], values, mask, self.discount,
                                    self.o.varibad_gae_lambda)  # fmt: skip
        return PPOData(
            inputs=inputs,
            observations=flat["observations"],
            actions=flat["actions"],
            mask=mask,
            beliefs=beliefs,
            old_log_probs=gaussian_log_prob(flat["actions"], mean, self.policy.log_std),
            advantages=normalize_advantages(advantages, mask),
            returns=(advantages + values) * mask,
            values=values,
        )

    def rl_loss(self, data: PPOData, idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """PPO's loss on the trials ``idx`` of ``data`` and its statistics (tensors).

        The beliefs are ``data``'s detached ones, or, with
        ``varibad_rl_loss_through_encoder``, recomputed by the encoder with gradients.
        """
        if self.o.varibad_rl_loss_through_encoder:
            beliefs = self.policy.beliefs(data.inputs[idx], bptt_chunk=self.o.varibad_bptt_chunk)
        else:
            beliefs = data.beliefs[idx]
        mask = data.mask[idx]
        mean, values = self.policy(data.observations[idx], beliefs)
        log_probs = gaussian_log_prob(data.actions[idx], mean, self.policy.log_std)
        terms = clipped_surrogate(log_probs - data.old_log_probs[idx], data.advantages[idx],
                                  self.ppo.ppo_clip)  # fmt: skip
        policy_loss = -masked_mean(terms.objective, mask)
        value_loss = masked_mean((values - data.returns[idx]).pow(2), mask)
        entropy = (self.policy.log_std + ENTROPY_CONST).sum()
        loss = (policy_loss + self.o.varibad_value_coef * value_loss
                - self.o.varibad_entropy_coef * entropy)  # fmt: skip
        stats = {"loss/policy": policy_loss.detach(), "loss/value": value_loss.detach(),
                 "ppo/entropy": entropy.detach(),
                 "ppo/clip_fraction": masked_mean(terms.clipped, mask),
                 "approx_kl": masked_mean(terms.approx_kl, mask)}  # fmt: skip
        return loss, stats

    def ppo_update(self, data: PPOData) -> dict[str, float]:
        """PPO epochs over minibatches of whole trials; stops early past the KL target."""
        explained = explained_variance(data.values, data.returns, data.mask)
        stats: dict[str, float] = {"baseline/explained_variance": explained}
        n_trials = data.mask.shape[0]
        mb_size = max(1, math.ceil(n_trials / self.o.varibad_minibatches))
        sums = {"loss/policy": 0.0, "loss/value": 0.0, "ppo/entropy": 0.0,
                "ppo/clip_fraction": 0.0}  # fmt: skip
        kls: list[float] = []  # every minibatch's KL before its step, and the one that stops
        n_updates, stopped = 0, False
        for _ in range(self.ppo.ppo_epochs):
            order = torch.randperm(n_trials, generator=self.rng).to(self.device)
            for idx in order.split(mb_size):
                loss, step_stats = self.rl_loss(data, idx)
                kls.append(float(step_stats.pop("approx_kl")))
                if past_kl_target(kls[-1], self.ppo.ppo_target_kl):
                    stopped = True  # before the step, as stable-baselines3
                    break
                vae = None
                if self.o.varibad_rl_loss_through_encoder:
                    vae = self.vae_loss()
                    loss = loss + self.o.varibad_vae_loss_coef * vae[0]
                if not self._step(loss, joint=vae is not None):
                    stats["ppo/rejected_nonfinite"] = 1.0
                    continue
                if vae is not None:
                    step_stats.update(vae[1])
                for key, value in step_stats.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                n_updates += 1
            if stopped:
                break
        stats.update({k: v / max(n_updates, 1) for k, v in sums.items()})
        # as stable-baselines3 logs it, the measurement that stopped the update included
        stats["ppo/approx_kl"] = sum(kls) / max(len(kls), 1)
        stats["ppo/early_stop"] = float(stopped)
        stats["ppo/minibatch_steps"] = float(n_updates)
        return stats

    def _step(self, loss: torch.Tensor, *, joint: bool) -> bool:
        """One Adam step of the policy (and, when ``joint``, of the VAE) on ``loss``;
        nothing moves when the loss or a gradient is not finite (returns False)."""
        self.optimizer.zero_grad()
        self.vae_optimizer.zero_grad()
        loss.backward()
        params = self.policy.rl_parameters() + (self.vae_parameters() if joint else [])
        if not finite(loss, params):
            self.optimizer.zero_grad()
            self.vae_optimizer.zero_grad()
            return False
        if self.o.varibad_max_grad_norm > 0:
            for group in self._clip_groups:
                torch.nn.utils.clip_grad_norm_(group, self.o.varibad_max_grad_norm)
        self.optimizer.step()
        if joint:
            self._clip_vae()
            self.vae_optimizer.step()
        return True

    # -- the VAE ----------------------------------------------------------------------------
    def elbo(self, trials: Trials) -> ELBOTerms:
        """The ELBO's terms of ``trials`` (per trial), with this run's subsampling."""
        o = self.o
        return elbo_terms(self.policy.encoder, self.reward_decoder, self.state_decoder, trials,
                          generator=self.rng, n_elbos=o.varibad_subsample_elbos,
                          n_decodes=o.varibad_subsample_decodes,
                          bptt_chunk=o.varibad_bptt_chunk)  # fmt: skip

    def vae_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The VAE loss of one buffer minibatch (mean over its trials) and its terms."""
        o = self.o
        terms = self.elbo(self.buffer.sample(o.varibad_vae_batch_trials, self.rng, self.device))
        per_trial = (o.varibad_reward_loss_coef * terms.reward + o.varibad_kl_weight * terms.kl
                     + o.varibad_state_loss_coef * terms.state)  # fmt: skip
        stats = {"vae/reward_loss": terms.reward.mean().detach(),
                 "vae/kl": terms.kl.mean().detach()}  # fmt: skip
        if self.state_decoder is not None:
            stats["vae/state_loss"] = terms.state.mean().detach()
        loss = per_trial.mean()
        stats["loss/vae"] = loss.detach()
        return loss, stats

    def _clip_vae(self) -> None:
        if self.o.varibad_vae_max_grad_norm > 0:  # the encoder and each decoder apart
            for module in (self.policy.encoder, *self.decoders()):
                torch.nn.utils.clip_grad_norm_(
                    module.parameters(), self.o.varibad_vae_max_grad_norm
                )

    def vae_update(self, steps: int) -> dict[str, float]:
        """``steps`` Adam steps of the encoder and decoders, each on a buffer minibatch; a
        step whose loss or gradient is not finite is skipped and reported."""
        sums: dict[str, float] = {}
        done = 0
        rejected = False
        for _ in range(steps):
            loss, stats = self.vae_loss()
            self.vae_optimizer.zero_grad()
            loss.backward()
            if not finite(loss, self.vae_parameters()):
                self.vae_optimizer.zero_grad()
                rejected = True
                continue
            self._clip_vae()
            self.vae_optimizer.step()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            done += 1
        out = {k: v / max(done, 1) for k, v in sums.items()}
        if rejected:
            out["vae/rejected_nonfinite"] = 1.0
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def slim_state_dict(self) -> dict:
        """What meta-test and ``--video`` read: the encoder and the policy (with its critic,
        which a state dict of the module holds); no decoders, optimisers, buffer or generator
        (:class:`~metarl.algos.base.HasSlimState`)."""
        return {"policy": self.policy.state_dict()}

    def state_dict(self) -> dict:
        """Networks, both optimisers, the VAE buffer and the training generator: all an
        exact resume needs."""
        return {
            "policy": self.policy.state_dict(),
            "decoders": {
                "reward": self.reward_decoder.state_dict(),
                **(
                    {"state": self.state_decoder.state_dict()}
                    if self.state_decoder is not None
                    else {}
                ),
            },
            "optimizers": {
                "policy": self.optimizer.state_dict(),
                "vae": self.vae_optimizer.state_dict(),
            },
            "replay": self.buffer.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.reward_decoder.load_state_dict(state["decoders"]["reward"])
        if self.state_decoder is not None:
            self.state_decoder.load_state_dict(state["decoders"]["state"])
        self.optimizer.load_state_dict(state["optimizers"]["policy"])
        self.vae_optimizer.load_state_dict(state["optimizers"]["vae"])
        self.buffer.load_state_dict(state["replay"])
        self.rng.set_state(state["rng"])


# -- the registry entry ----------------------------------------------------------------------
def build_belief_policy(config: Config, obs_dim: int, act_dim: int) -> BeliefPolicy:
    """VariBAD's encoder and policy from ``config``'s :class:`BeliefPolicyOptions`."""
    o = config.group(BeliefPolicyOptions)
    spec = BeliefSpec(obs_dim, act_dim, latent_dim=o.varibad_latent_dim,
                      hidden_size=o.varibad_encoder_hidden_size,
                      embed_sizes=tuple(o.varibad_embed_sizes),
                      policy_hidden=tuple(o.varibad_policy_hidden_sizes),
                      policy_embed=o.varibad_policy_embed_size)  # fmt: skip
    return BeliefPolicy(spec, init_log_std=o.init_log_std)


def build_varibad(config: Config, policy: BeliefPolicy, sampler, device: torch.device) -> VariBAD:
    """VariBAD from ``config``'s :class:`VariBADOptions` and :class:`PPOOptions`."""
    ppo = config.group(PPOOptions)
    return VariBAD(policy, sampler, options=config.group(VariBADOptions), ppo=ppo,
                   discount=config.discount, seed=config.seed, device=device,
                   lr_anneal_iterations=lr_anneal_iterations(ppo, config.iterations))  # fmt: skip


def check_varibad(config: Config) -> None:
    """Cross-key checks: the embedding sizes are three (state, action, reward)."""
    sizes = config.group(BeliefPolicyOptions).varibad_embed_sizes
    if len(sizes) != 3:
        raise ConfigError(
            f"config key 'varibad_embed_sizes': {list(sizes)!r} must be three sizes "
            "(state, action, reward)"
        )


ALGORITHM = Algorithm(
    name="varibad",
    summary="VariBAD: PPO on the state and a recurrent VAE's belief over the task",
    option_groups=(PPOOptions, VariBADOptions, BeliefPolicyOptions),
    build_policy=build_belief_policy,
    build_learner=build_varibad,
    policy_group=BeliefPolicyOptions,
    validate=check_varibad,
)
