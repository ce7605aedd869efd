"""The gradient family's inner loop: sampling, adapting, and the adaptation data.

One meta-iteration, for a meta-batch of T tasks and K inner steps:

1. ``collect``: sample E episodes per task with the meta-policy, adapt one
   policy-gradient step per task with the inner rule, sample again with the
   adapted policies, ... K times, then sample the *validation* episodes with the
   final adapted policies. Adaptation here is on detached parameters: it only
   decides which policies act.
2. The outer update (TRPO, PPO, Reptile's interpolation; composed in
   :mod:`metarl.algos.gradient_family`) uses that data: TRPO and PPO replay the K
   steps from the stored episodes *differentiably*
   (:meth:`MAMLInnerLoop.adapted_params`) and optimise the post-adaptation
   objective on the validation episodes.

Shapes: T tasks, E episodes per task, H horizon, N = E * H flattened steps.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from metarl.algos.base import ActorRun, AdaptationCurve, IterationResult
from metarl.functional import TaskParams, batched_log_prob, expand_params, masked_mean
from metarl.policies.gaussian_mlp import GaussianMLPPolicy, params_to_numpy
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
    from metarl.sampling import Sampler


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
        observations=to_device(batch.observations.reshape(n_tasks, n, -1), device),
        actions=to_device(batch.actions.reshape(n_tasks, n, -1), device),
        mask=to_device(batch.mask.reshape(n_tasks, n), device),
        advantages=to_device(advantages.reshape(n_tasks, n), device),
        mean_return=float(batch.returns.mean()),
        explained_variance=sum(variances) / len(variances),
    )


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``: to a GPU from pinned memory without blocking (once per iteration;
    the update then never waits on a copy), on the CPU as it is."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def task_params(stacked: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """Task ``t``'s parameters out of ``[T, ...]`` arrays, keeping the axis: ``[1, ...]``."""
    return {name: value[t : t + 1] for name, value in stacked.items()}


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
        infos_per_step / per_task_infos: the same for each key of the family's
            ``episode_info_keys`` (its per-episode maximum); empty without keys.
        env_steps: real env steps collected.
        time_sampling / time_adaptation: seconds spent in each.
        acting_params: ``K + 1`` numpy parameter sets; ``acting_params[k]`` (``[T, ...]``
            per name, float64) is what the policies after k steps sampled with.
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
    acting_params: list[dict[str, np.ndarray]] = field(default_factory=list)
    infos_per_step: dict[str, list[float]] = field(default_factory=dict)
    per_task_infos: dict[str, torch.Tensor] = field(default_factory=dict)

    def curve(self) -> AdaptationCurve:
        """Each task's returns and infos after k = 0..K steps, ``[K + 1, T]`` each."""
        return AdaptationCurve(self.per_task_returns, self.per_task_infos)


class InnerRule(Protocol):
    """How one inner step moves each task's parameters, for acting (no graph kept).

    Rules: :class:`~metarl.algos.gradient_family.SGDRule` (MAML),
    :class:`~metarl.algos.meta_sgd.PerParameterStepSizes` (Meta-SGD),
    :class:`~metarl.algos.reptile.AdamRule` (Reptile's option).
    """

    def act_step(self, params: TaskParams, loss, state: Any) -> tuple[TaskParams, Any]:
        """Parameters after one first-order step on ``loss`` (``params -> [T]`` losses),
        and the rule's state for the next step of the same tasks (``None`` to start)."""
        ...

    def parameters(self) -> list[torch.nn.Parameter]:
        """What the outer loop meta-trains besides the policy (learned step sizes), if any."""
        ...

    def stats(self) -> dict[str, float]:
        """Scalars to log each iteration (e.g. the step sizes' mean, min and max)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class DifferentiableRule(InnerRule, Protocol):
    """A rule the outer update can differentiate through (TRPO and PPO need one)."""

    def replay_step(
        self, params: TaskParams, loss, state: Any, *, first_order: bool, create_graph: bool
    ) -> tuple[TaskParams, Any]:
        """One step on ``loss`` from ``params``: differentiable w.r.t. the meta-parameters
        (second order unless ``first_order``; the rule's own parameters as constants
        without ``create_graph``). ``state`` in and out as for ``act_step`` (the
        meta-LSTM's hidden state; ``None`` to start)."""
        ...


class MAMLInnerLoop:
    """Collects adaptation data and replays the inner loop differentiably.

    The inner step is the ``rule``'s: plain gradient descent, learned per-parameter
    step sizes, or (for acting only, as Reptile may) Adam.
    """

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        sampler: Sampler,
        rule: InnerRule,
        *,
        inner_steps: int,
        first_order: bool,
        discount: float,
        gae_lambda: float,
        device: torch.device,
    ) -> None:
        self.policy = policy
        self.sampler = sampler
        self.rule = rule
        self.inner_steps = inner_steps
        self.first_order = first_order
        self.discount = discount
        self.gae_lambda = gae_lambda
        self.device = device

    def meta_parameters(self) -> list[torch.nn.Parameter]:
        """What the outer loop optimises: the policy's parameters, then the rule's, if any."""
        return [*self.policy.parameters(), *self.rule.parameters()]

    def stats(self) -> dict[str, float]:
        """The rule's statistics (learned step sizes), if any."""
        return self.rule.stats()

    def state_dict(self) -> dict:
        """The rule's learned state, if any (the rest is settings)."""
        return self.rule.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rule.load_state_dict(state)

    def _process(self, batch: EpisodeBatch) -> ProcessedBatch:
        return process_batch(
            batch, discount=self.discount, gae_lambda=self.gae_lambda, device=self.device
        )

    def inner_step(
        self, params: TaskParams, batch: EpisodeBatch, rule_state: Any = None
    ) -> tuple[TaskParams, Any, ProcessedBatch]:
        """One first-order inner step of every task on ``batch`` (``[T, E, H]`` episodes).

        What acting between sampler calls uses (the returned parameters only choose who
        acts next). Returns the new parameters, the rule's state (Adam's moments) and the
        processed batch (advantages fitted by the baseline).
        """
        data = self._process(batch)
        params, rule_state = self.rule.act_step(params, reinforce_loss(self.policy, data),
                                                rule_state)  # fmt: skip
        return params, rule_state, data

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
        infos_per_step: dict[str, list[float]] = {}  # key -> [K + 1] means, as returns_per_step
        per_task_infos: dict[str, list[torch.Tensor]] = {}  # key -> K + 1 of [T]
        acting = []  # the numpy parameters each step sampled with, kept for adapted_actors
        t_sample = t_adapt = 0.0
        rule_state = None  # e.g. Adam's moments: fresh per task and call
        per_call = len(tasks) * episodes_per_task * self.sampler.horizon  # a call's budget
        progress.steps(0, planned_total(0, adapt_steps + 1, per_call))
        for k in range(adapt_steps + 1):
            progress.phase("sampling")
            start = time.perf_counter()
            acting.append(params_to_numpy(params))  # stacked: [T, ...] per parameter
            batch = self.sampler.sample(
                tasks,
                acting[-1],
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
            for key, values in batch.episode_infos.items():  # [T, E] each
                infos_per_step.setdefault(key, []).append(float(values.mean()))
                per_task_infos.setdefault(key, []).append(values.mean(dim=1))
            if k < adapt_steps:
                params, rule_state, data = self.inner_step(params, batch, rule_state)
                train.append(data)
            else:
                data = self._process(batch)
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
            acting_params=acting,
            infos_per_step=infos_per_step,
            per_task_infos={key: torch.stack(rows) for key, rows in per_task_infos.items()},
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Every gradient-based learner's meta-test: the mean return (and infos) of each
        task after k = 0..adapt_steps inner steps, ``[adapt_steps + 1, T]`` each."""
        data = self.collect(
            tasks, episodes_per_task=episodes_per_task, batch_key=batch_key, adapt_steps=adapt_steps
        )
        return data.curve()

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """Per task, the policy before adapting and after each of ``adapt_steps`` steps.

        The parameters are those :meth:`collect` samples with, so with ``meta_test``'s
        arguments they are the policies whose returns ``meta_test`` reports.
        """
        data = self.collect(
            tasks, episodes_per_task=episodes_per_task, batch_key=batch_key, adapt_steps=adapt_steps
        )
        return [
            [
                ActorRun(self.policy.spec.make_actor(task_params(params, t)))
                for params in data.acting_params
            ]
            for t in range(len(tasks))
        ]

    def adapted_params(
        self,
        train: list[ProcessedBatch],
        *,
        create_graph: bool = True,
        start: TaskParams | None = None,
    ) -> TaskParams:
        """Replay the K inner steps from the current meta-parameters.

        With ``create_graph`` and second-order MAML, the result is differentiable
        w.r.t. the meta-parameters including the inner Hessian terms; with
        ``first_order`` the inner gradients are constants. ``start``: other
        ``[T, ...]`` policy parameters to adapt from (tensors requiring grad, e.g.
        TRPO's line-search candidates, one set per row of ``train``'s tasks); the
        rule's own parameters stay its own.
        """
        n_tasks = train[0].observations.shape[0]
        params = expand_params(self.policy.params(), n_tasks) if start is None else start
        first_order = self.first_order or not create_graph
        rule_state = None  # carried across the K steps as collect carries it
        for data in train:
            loss = reinforce_loss(self.policy, data)
            params, rule_state = self.rule.replay_step(params, loss, rule_state,
                                                       first_order=first_order,
                                                       create_graph=create_graph)  # fmt: skip
        return params


def iteration_result(
    data: AdaptationData,
    scalars: dict[str, float],
    *,
    update_seconds: float,
    rejected: bool,
    kl: float | None,
) -> IterationResult:
    """What a gradient-based learner reports for an iteration of ``data`` and its update."""
    scalars["baseline/explained_variance"] = data.explained_variance
    return IterationResult(
        returns_per_step=data.returns_per_step,
        env_steps=data.env_steps,
        times={
            "sampling": data.time_sampling,
            "adaptation": data.time_adaptation,
            "update": update_seconds,
        },
        scalars=scalars,
        rejected=rejected,
        kl=kl,
        infos_per_step=data.infos_per_step,
    )
