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
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from metarl.algos.base import ActorRun, AdaptationCurve, IterationResult
from metarl.functional import (
    AdamState,
    StepSize,
    TaskParams,
    adam_adapt,
    adapt,
    batched_log_prob,
    expand_params,
    masked_mean,
)
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


def build_inner_loop(
    config: Config, policy: GaussianMLPPolicy, sampler, device, **options
) -> MAMLInnerLoop:
    """The :class:`MAMLInnerLoop` of ``config``'s :class:`MAMLOptions` (``options``:
    ``step_sizes``, ``inner_optimizer``, ``inner_steps`` to override)."""
    settings = {
        "inner_steps": config.inner_steps,
        "inner_lr": config.inner_lr,
        "first_order": config.first_order,
        "discount": config.discount,
        "gae_lambda": config.gae_lambda,
    }
    return MAMLInnerLoop(policy, sampler, device=device, **{**settings, **options})


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


class LearnedStepSizes(Protocol):
    """Step sizes the outer loop meta-trains with the policy (Meta-SGD's alpha)."""

    def as_dict(self, *, detach: bool) -> dict[str, torch.Tensor]:
        """One step-size tensor per policy parameter, of that parameter's shape."""
        ...

    def parameters(self): ...

    def stats(self) -> dict[str, float]:
        """Scalars to log each iteration (e.g. the step sizes' mean, min and max)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> object: ...


class MAMLInnerLoop:
    """Collects adaptation data and replays the inner loop differentiably.

    The inner step is plain gradient descent at ``inner_lr``, or at learned
    per-parameter ``step_sizes`` (Meta-SGD), or, for data collection only
    (Reptile), first-order Adam at ``inner_lr`` with ``inner_optimizer="adam"``.
    """

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
        step_sizes: LearnedStepSizes | None = None,
        inner_optimizer: str = "sgd",
    ) -> None:
        if inner_optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner_optimizer must be 'sgd' or 'adam', got {inner_optimizer!r}")
        if inner_optimizer == "adam" and step_sizes is not None:
            raise ValueError("learned step sizes are for plain gradient steps, not Adam")
        self.policy = policy
        self.sampler = sampler
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.discount = discount
        self.gae_lambda = gae_lambda
        self.device = device
        self.step_sizes = step_sizes
        self.inner_optimizer = inner_optimizer

    def meta_parameters(self) -> list[torch.nn.Parameter]:
        """What the outer loop optimises: the policy's parameters, then any learned step sizes."""
        params = list(self.policy.parameters())
        if self.step_sizes is not None:
            params += list(self.step_sizes.parameters())
        return params

    def step_size(self, *, detach: bool) -> StepSize:
        """The inner learning rate: ``inner_lr``, or the learned per-parameter step sizes."""
        if self.step_sizes is None:
            return self.inner_lr
        return self.step_sizes.as_dict(detach=detach)

    def stats(self) -> dict[str, float]:
        """The learned step sizes' statistics, if any."""
        return {} if self.step_sizes is None else self.step_sizes.stats()

    def state_dict(self) -> dict:
        """The learned step sizes, if any (the rest is settings)."""
        return {} if self.step_sizes is None else {"step_sizes": self.step_sizes.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.step_sizes is not None:
            self.step_sizes.load_state_dict(state["step_sizes"])

    def _process(self, batch: EpisodeBatch) -> ProcessedBatch:
        return process_batch(
            batch, discount=self.discount, gae_lambda=self.gae_lambda, device=self.device
        )

    def inner_step(
        self, params: TaskParams, batch: EpisodeBatch, adam_state: AdamState | None = None
    ) -> tuple[TaskParams, AdamState | None, ProcessedBatch]:
        """One first-order inner step of every task on ``batch`` (``[T, E, H]`` episodes).

        What acting between sampler calls uses (the returned parameters only choose who
        acts next): a gradient step at the step size, or Adam at ``inner_lr`` with the
        moments in ``adam_state``. Returns the new parameters, the Adam state and the
        processed batch (advantages fitted by the baseline).
        """
        data = self._process(batch)
        loss = reinforce_loss(self.policy, data)
        if self.inner_optimizer == "adam":
            params, adam_state = adam_adapt(params, loss, lr=self.inner_lr, state=adam_state)
        else:
            params = adapt(params, loss, lr=self.step_size(detach=True), first_order=True)
        return params, adam_state, data

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
        adam_state: AdamState | None = None  # Reptile's Adam: fresh moments per task and call
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
                params, adam_state, data = self.inner_step(params, batch, adam_state)
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
        self, train: list[ProcessedBatch], *, create_graph: bool = True
    ) -> TaskParams:
        """Replay the K inner steps from the current meta-parameters.

        With ``create_graph`` and second-order MAML, the result is differentiable
        w.r.t. the meta-parameters including the inner Hessian terms; with
        ``first_order`` the inner gradients are constants.
        """
        if self.inner_optimizer != "sgd":
            raise ValueError("the inner loop is replayed differentiably only for gradient steps")
        n_tasks = train[0].observations.shape[0]
        params = expand_params(self.policy.params(), n_tasks)
        first_order = self.first_order or not create_graph
        lr = self.step_size(detach=not create_graph)
        for data in train:
            loss = reinforce_loss(self.policy, data)
            params = adapt(params, loss, lr=lr, first_order=first_order)
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
        scalars.update(self.inner.stats())
        return iteration_result(
            data,
            scalars,
            update_seconds=time.perf_counter() - start,
            rejected=scalars.get(self.outer.rejected_key, 0.0) > 0,
            kl=scalars.get(self.outer.kl_key),
        )

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Each task's returns and infos after k = 0..adapt_steps steps: ``[K + 1, T]``."""
        return self.inner.meta_test(
            tasks, adapt_steps=adapt_steps, episodes_per_task=episodes_per_task, batch_key=batch_key
        )

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """The policy before and after each inner step: :meth:`MAMLInnerLoop.adapted_actors`."""
        return self.inner.adapted_actors(
            tasks, adapt_steps=adapt_steps, episodes_per_task=episodes_per_task, batch_key=batch_key
        )

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "outer": self.outer.state_dict(),
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.outer.load_state_dict(state["outer"])
        self.inner.load_state_dict(state.get("inner", {}))  # absent before Meta-SGD existed
