"""Meta-learners by name. Each is built from a config, a policy and a sampler.

Every learner offers ``train_iteration(tasks, iteration) -> IterationResult``,
``meta_test(tasks, adapt_steps=, episodes_per_task=, batch_key=) -> [K+1, T]``,
``state_dict()`` and ``load_state_dict()``; the training loop and the
evaluator use nothing else.
"""

from __future__ import annotations

import torch

from metarl.algos.maml import MAML, IterationResult, MAMLInnerLoop
from metarl.config import ALGOS, Config, ConfigError

__all__ = ["ALGOS", "IterationResult", "build_learner", "build_policy"]


def build_policy(config: Config, obs_dim: int, act_dim: int) -> torch.nn.Module:
    """The policy ``config.algo`` trains, initialised from the torch RNG.

    Its ``spec`` (a picklable architecture description) is what the sampler's
    workers use to run it.
    """
    from metarl.policies import GaussianMLPPolicy, MLPSpec

    if config.algo == "rl2":
        from metarl.policies.recurrent import GaussianGRUPolicy, GRUSpec

        gru = GRUSpec(obs_dim, act_dim, config.rl2_hidden_size)
        return GaussianGRUPolicy(gru, init_log_std=config.init_log_std)
    spec = MLPSpec(obs_dim, act_dim, tuple(config.hidden_sizes), config.activation)
    return GaussianMLPPolicy(spec, init_log_std=config.init_log_std, weight_init=config.weight_init)


def build_learner(config: Config, policy, sampler, device: torch.device):
    """The meta-learner named by ``config.algo``."""
    # MAML-PPO's and RL2's Adam rate: annealed over the configured iterations, or constant (0)
    lr_anneal_iterations = config.iterations if config.ppo_lr_anneal else 0
    if config.algo in ("maml-trpo", "maml-ppo"):
        inner = MAMLInnerLoop(
            policy,
            sampler,
            inner_steps=config.inner_steps,
            inner_lr=config.inner_lr,
            first_order=config.first_order,
            discount=config.discount,
            gae_lambda=config.gae_lambda,
            device=device,
        )
        if config.algo == "maml-trpo":
            from metarl.algos.maml_trpo import TRPOUpdate

            outer = TRPOUpdate(
                inner,
                max_kl=config.max_kl,
                cg_iters=config.cg_iters,
                cg_damping=config.cg_damping,
                ls_max_backtracks=config.ls_max_backtracks,
                ls_backtrack_ratio=config.ls_backtrack_ratio,
                fisher=config.trpo_fisher,
                fisher_subsample=config.fisher_subsample,
            )
        else:
            from metarl.algos.maml_ppo import PPOUpdate

            outer = PPOUpdate(
                inner,
                epochs=config.ppo_epochs,
                clip=config.ppo_clip,
                lr=config.ppo_lr,
                target_kl=config.ppo_target_kl,
                lr_anneal_iterations=lr_anneal_iterations,
            )
        return MAML(config.algo, inner, outer, episodes_per_task=config.episodes_per_task)
    if config.algo == "rl2":
        from metarl.algos.rl2 import RL2

        return RL2(
            policy,
            sampler,
            trials_per_task=config.rl2_trials_per_task,
            episodes_per_trial=config.rl2_episodes_per_trial,
            discount=config.discount,
            gae_lambda=config.rl2_gae_lambda,
            epochs=config.ppo_epochs,
            clip=config.ppo_clip,
            lr=config.ppo_lr,
            target_kl=config.ppo_target_kl,
            minibatches=config.rl2_minibatches,
            value_coef=config.rl2_value_coef,
            entropy_coef=config.rl2_entropy_coef,
            max_grad_norm=config.rl2_max_grad_norm,
            bptt_chunk=config.rl2_bptt_chunk,
            device=device,
            lr_anneal_iterations=lr_anneal_iterations,
        )
    raise ConfigError(
        f"config key 'algo': {config.algo!r} is not implemented yet. Known: {', '.join(ALGOS)}"
    )
