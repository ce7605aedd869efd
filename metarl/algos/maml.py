"""What MAML-TRPO and MAML-PPO share: the inner loop and the adaptation data.

One meta-iteration, for a meta-batch of T tasks and K inner steps:

1. ``collect``: sample E episodes per task with the meta-policy, adapt one
   policy-gradient step per task, sample again with the adapted policies, ...
   K times, then sample the *validation* episodes with the final adapted
   policies. Adaptation here is on detached parameters: it only decides which
   policies act.
2. The outer update (in ``maml_trpo.py`` / ``maml_ppo.py``) replays the K
   adaptation steps from the stored episodes *differentiably*
   (:meth:`MAMLInnerLoop.adapted_params`) and optimises the post-adaptation
   objective on the validation episodes.

Shapes: T tasks, E episodes per task, H horizon, N = E * H flattened steps.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from metarl.algos.base import IterationResult
from metarl.functional import TaskParams, adapt, batched_log_prob, expand_params, masked_mean
from metarl.options import option
from metarl.policies.gaussian_mlp import GaussianMLPPolicy, MLPSpec, params_to_numpy
from metarl.progress import NULL_REPORTER, Reporter, planned_total
from metarl.returns import (
    LinearFeatureBaseline,
    discount_cumsum,
    explained_variance,
    gae_advantages,
    normalize_advantages,
)
from metarl.sampling.batch import EpisodeBatch

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling import Sampler


@dataclass
class MAMLOptions:
    """MAML inner loop: the config keys every MAML variant reads."""

    inner_steps: int = option(1, "policy-gradient adaptation steps per task", min=1)
    inner_lr: float = option(0.1, "adaptation (inner) learning rate", min=0.0)
    first_order: bool = option(False, "drop second-order terms of the meta-gradient (FOMAML)")
    gae_lambda: float = option(1.0, "GAE lambda", min=0.0, max=1.0)


def build_mlp_policy(config: Config, obs_dim: int, act_dim: int) -> GaussianMLPPolicy:
    """The Gaussian MLP policy of ``config`` (``hidden_sizes``, ``activation``, ...)."""
    spec = MLPSpec(obs_dim, act_dim, tuple(config.hidden_sizes), config.activation)
    return GaussianMLPPolicy(spec, init_log_std=config.init_log_std, weight_init=config.weight_init)


def build_inner_loop(config: Config, policy: GaussianMLPPolicy, sampler, device) -> MAMLInnerLoop:
    """The :class:`MAMLInnerLoop` of ``config``'s :class:`MAMLOptions`."""
    return MAMLInnerLoop(
        policy,
        sampler,
        inner_steps=config.inner_steps,
        inner_lr=config.inner_lr,
        first_order=config.first_order,
        discount=config.discount,
        gae_lambda=config.gae_lambda,
        device=device,
    )


@dataclass
class ProcessedBatch:
    """An episode batch flattened per task, with advantages, on the learner's device.

    Attributes:
        observations: ``[T, N, obs_dim]``.
        actions: ``[T, N, act_dim]``.
        mask: ``[T, N]``, 1.0 on real steps.
        advantages: ``[T, N]``, GAE on the linear baseline, normalised per task.
        mean_return: mean undiscounted episode return over the batch.
        explained_variance: of the baseline on the discounted returns.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    mean_return: float
    explained_variance: float


def process_batch(
    batch: EpisodeBatch, *, discount: float, gae_lambda: float, device: torch.device
) -> ProcessedBatch:
    """Fit a linear baseline per task, compute normalised GAE advantages, flatten.

    The baseline is fit on the same episodes it scores (as in the MAML paper).
    """
    n_tasks, n_eps, horizon = batch.rewards.shape
    returns_to_go = discount_cumsum(batch.rewards, batch.mask, discount)  # [T, E, H]
    advantages = torch.empty_like(batch.rewards)
    variances = []
    for t in range(n_tasks):
        baseline = LinearFeatureBaseline()
        baseline.fit(batch.observations[t], returns_to_go[t], batch.mask[t])
        values = baseline.predict(batch.observations[t], batch.mask[t])
        variances.append(explained_variance(values, returns_to_go[t], batch.mask[t]))
        adv = gae_advantages(batch.rewards[t], values, batch.mask[t], discount, gae_lambda)
        advantages[t] = normalize_advantages(adv, batch.mask[t])
    n = n_eps * horizon
    return ProcessedBatch(
        observations=batch.observations.reshape(n_tasks, n, -1).to(device),
        actions=batch.actions.reshape(n_tasks, n, -1).to(device),
        mask=batch.mask.reshape(n_tasks, n).to(device),
        advantages=advantages.reshape(n_tasks, n).to(device),
        mean_return=float(batch.returns.mean()),
        explained_variance=sum(variances) / len(variances),
    )


def task_subset(batch: ProcessedBatch, tasks: slice) -> ProcessedBatch:
    """The tasks ``tasks`` of ``batch`` (a view: ``[T', N, ...]``; the summaries are kept)."""
    return dataclasses.replace(
        batch,
        observations=batch.observations[tasks],
        actions=batch.actions[tasks],
        mask=batch.mask[tasks],
        advantages=batch.advantages[tasks],
    )


def reinforce_loss(policy: GaussianMLPPolicy, data: ProcessedBatch):
    """The inner (adaptation) loss: ``params -> [T]`` REINFORCE losses with advantages."""

    def loss(params: TaskParams) -> torch.Tensor:
        log_probs = batched_log_prob(policy.spec, params, data.observations, data.actions)
        return -masked_mean(log_probs * data.advantages, data.mask)

    return loss


@dataclass
class AdaptationData:
    """Everything one meta-iteration collected (see the module docstring).

    Attributes:
        train: K processed batches; ``train[k]`` was collected by the policies
            after k adaptation steps.
        valid: the processed validation batch (after K steps).
        old_params: the adapted ``[T, ...]`` parameters that collected ``valid``
            (detached).
        returns_per_step: mean episode return after k = 0..K adaptation steps.
        per_task_returns: ``[K + 1, T]`` mean return of each task after k steps.
        env_steps: real env steps collected.
        time_sampling / time_adaptation: seconds spent in each.
    """

    train: list[ProcessedBatch]
    valid: ProcessedBatch
    old_params: TaskParams
    returns_per_step: list[float]
    per_task_returns: torch.Tensor
    env_steps: int
    time_sampling: float = 0.0
    time_adaptation: float = 0.0
    explained_variance: float = field(default=0.0)


class MAMLInnerLoop:
    """Collects adaptation data and replays the inner loop differentiably."""

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        sampler: Sampler,
        *,
        inner_steps: int,
        inner_lr: float,
        first_order: bool,
        discount: float,
        gae_lambda: float,
        device: torch.device,
    ) -> None:
        self.policy = policy
        self.sampler = sampler
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.discount = discount
        self.gae_lambda = gae_lambda
        self.device = device

    def _process(self, batch: EpisodeBatch) -> ProcessedBatch:
        return process_batch(
            batch, discount=self.discount, gae_lambda=self.gae_lambda, device=self.device
        )

    def collect(
        self,
        tasks: list,
        *,
        episodes_per_task: int,
        batch_key: tuple,
        adapt_steps: int | None = None,
        progress: Reporter = NULL_REPORTER,
    ) -> AdaptationData:
        """Sample, adapt, sample ... ``adapt_steps`` times (default K), then validate.

        ``progress`` hears the phases (``sampling``, ``adapting``) and the env steps
        after each of the ``adapt_steps + 1`` sampler calls.
        """
        adapt_steps = self.inner_steps if adapt_steps is None else adapt_steps
        meta = {k: v.detach().requires_grad_() for k, v in self.policy.params().items()}
        params = expand_params(meta, len(tasks))
        train, returns_per_step, per_task, steps = [], [], [], 0
        t_sample = t_adapt = 0.0
        per_call = len(tasks) * episodes_per_task * self.sampler.horizon  # a call's budget
        progress.steps(0, planned_total(0, adapt_steps + 1, per_call))
        for k in range(adapt_steps + 1):
            progress.phase("sampling")
            start = time.perf_counter()
            batch = self.sampler.sample(
                tasks,
                params_to_numpy(params),  # stacked: [T, ...] per parameter
                episodes_per_task=episodes_per_task,
                batch_key=(*batch_key, k),
            )
            t_sample += time.perf_counter() - start
            start = time.perf_counter()
            steps += batch.env_steps
            progress.steps(steps, planned_total(steps, adapt_steps - k, per_call))
            progress.phase("adapting")  # fitting the baseline, then (k < K) the inner step
            returns_per_step.append(float(batch.returns.mean()))
            per_task.append(batch.returns.mean(dim=1))
            data = self._process(batch)
            if k < adapt_steps:
                train.append(data)
                # First-order here: these parameters only choose who acts next.
                params = adapt(
                    params, reinforce_loss(self.policy, data), lr=self.inner_lr, first_order=True
                )
            t_adapt += time.perf_counter() - start
        return AdaptationData(
            train=train,
            valid=data,
            old_params={k: v.detach() for k, v in params.items()},
            returns_per_step=returns_per_step,
            per_task_returns=torch.stack(per_task),
            env_steps=steps,
            time_sampling=t_sample,
            time_adaptation=t_adapt,
            explained_variance=train[0].explained_variance if train else data.explained_variance,
        )

    def adapted_params(
        self, train: list[ProcessedBatch], *, create_graph: bool = True
    ) -> TaskParams:
        """Replay the K inner steps from the current meta-parameters.

        With ``create_graph`` and second-order MAML, the result is differentiable
        w.r.t. the meta-parameters including the inner Hessian terms; with
        ``first_order`` the inner gradients are constants.
        """
        n_tasks = train[0].observations.shape[0]
        params = expand_params(self.policy.params(), n_tasks)
        first_order = self.first_order or not create_graph
        for data in train:
            params = adapt(
                params, reinforce_loss(self.policy, data), lr=self.inner_lr, first_order=first_order
            )
        return params


class MAML:
    """A MAML meta-learner: the shared inner loop composed with an outer update.

    ``outer`` is a :class:`~metarl.algos.maml_trpo.TRPOUpdate` or
    :class:`~metarl.algos.maml_ppo.PPOUpdate`: anything with
    ``update(data, iteration) -> dict[str, float]``, ``state_dict()``,
    ``load_state_dict()`` and the two scalar names ``kl_key`` (its headline KL)
    and ``rejected_key`` (> 0 when it rejected a non-finite update).
    """

    adaptation_unit = "step"  # what the k of return_step_k counts
    progress: Reporter = NULL_REPORTER  # the loop's display while it trains (see MetaLearner)

    def __init__(self, name: str, inner: MAMLInnerLoop, outer, *, episodes_per_task: int) -> None:
        self.name = name
        self.inner = inner
        self.outer = outer
        self.policy = inner.policy
        self.episodes_per_task = episodes_per_task

    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        data = self.inner.collect(
            tasks,
            episodes_per_task=self.episodes_per_task,
            batch_key=(iteration, "train"),
            progress=self.progress,
        )
        self.progress.phase("updating")
        start = time.perf_counter()
        scalars = self.outer.update(data, iteration)
        scalars["baseline/explained_variance"] = data.explained_variance
        return IterationResult(
            rejected=scalars.get(self.outer.rejected_key, 0.0) > 0,
            kl=scalars.get(self.outer.kl_key),
            returns_per_step=data.returns_per_step,
            env_steps=data.env_steps,
            times={
                "sampling": data.time_sampling,
                "adaptation": data.time_adaptation,
                "update": time.perf_counter() - start,
            },
            scalars=scalars,
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> torch.Tensor:
        """Mean return of each task after k = 0..adapt_steps steps: ``[adapt_steps + 1, T]``."""
        data = self.inner.collect(
            tasks, episodes_per_task=episodes_per_task, batch_key=batch_key, adapt_steps=adapt_steps
        )
        return data.per_task_returns

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.outer.load_state_dict(state["outer"])
