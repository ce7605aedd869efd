"""The gradient family as a composition: an inner update rule plus an outer update.

A member (MAML-TRPO, MAML-PPO, Meta-SGD, Reptile) is a registry entry made by
:func:`gradient_member` from its parts:

* an inner rule (:class:`RuleSpec`): how one adaptation step moves a task's
  parameters, e.g. :class:`SGDRule` at ``inner_lr`` (MAML), learned per-parameter
  step sizes (Meta-SGD), Adam (Reptile's option);
* the outer updates it allows (:class:`OuterSpec`): TRPO, PPO, Reptile's
  interpolation. Every member picks one with the same key, ``outer`` (its default is
  the member's first), and each outer brings its own option group.

:class:`GradientLearner` runs any such pair: the inner loop collects the adaptation
data, the outer update learns from it. Nothing here knows a member by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from metarl.algos.base import ActorRun, AdaptationCurve, Algorithm, IterationResult
from metarl.algos.maml import AdaptationData, InnerRule, MAMLInnerLoop, iteration_result
from metarl.functional import TaskParams, adapt
from metarl.options import ConfigError, option
from metarl.policies.gaussian_mlp import GaussianMLPPolicy, MLPPolicyOptions, MLPSpec
from metarl.progress import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling import Sampler

OUTER_NAMES = ("trpo", "ppo", "reptile")


@dataclass
class GradientOptions:
    """gradient family: which outer update learns from the adaptation data"""

    outer: str = option(
        "trpo",
        "the outer update: 'trpo' (trust region), 'ppo' (clipped surrogate) or 'reptile' "
        "(interpolation toward the adapted parameters); each member allows its own",
        choices=OUTER_NAMES,
        identity=True,
    )
    RENAMED = {"meta_sgd_outer": "outer"}


@dataclass
class InnerLoopOptions:
    """inner loop: the adaptation step of every gradient-family member"""

    inner_lr: float = option(0.1, "adaptation (inner) learning rate", min=0.0)
    inner_gae_lambda: float = option(
        1.0,
        "GAE lambda of the inner loop's advantages (the outer update scores the "
        "validation episodes with the same estimator)",
        min=0.0,
        max=1.0,
    )
    RENAMED = {"gae_lambda": "inner_gae_lambda"}


@dataclass
class ReplayOptions:
    """inner steps: the adaptation that TRPO and PPO differentiate through"""

    inner_steps: int = option(1, "policy-gradient adaptation steps per task", min=1)
    inner_first_order: bool = option(
        False, "drop second-order terms of the meta-gradient (first-order MAML)"
    )
    RENAMED = {"first_order": "inner_first_order"}


class NoLearnedState:
    """The part of an inner rule that learns nothing: no parameters, stats or state."""

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


class SGDRule(NoLearnedState):
    """MAML's inner rule: ``phi = theta - inner_lr * grad L(theta)``."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def act_step(self, params: TaskParams, loss, state: Any) -> tuple[TaskParams, Any]:
        return adapt(params, loss, lr=self.lr, first_order=True), None

    def replay_step(
        self, params: TaskParams, loss, state: Any, *, first_order: bool, create_graph: bool
    ) -> tuple[TaskParams, Any]:
        return adapt(params, loss, lr=self.lr, first_order=first_order), None


class OuterUpdate(Protocol):
    """What an outer update offers the learner.

    ``kl_key`` names its headline KL among the scalars (``None`` for none), and
    ``rejected_key`` the scalar that is > 0 when it rejected a non-finite update.
    """

    kl_key: str | None
    rejected_key: str

    def update(self, data: AdaptationData, iteration: int) -> dict[str, float]:
        """Learn from one iteration's adaptation data; the scalars to log."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class RuleSpec:
    """An inner rule of a member: its option groups and ``(config, policy, device) -> rule``.

    ``differentiable``: the rule has ``replay_step``, so TRPO and PPO may use it.
    """

    groups: tuple[type, ...]
    build: Callable[[Config, GaussianMLPPolicy, torch.device], InnerRule]
    differentiable: bool = True


@dataclass(frozen=True)
class OuterSpec:
    """An outer update: its ``outer`` name, option groups, how many inner steps it
    collects per iteration, and ``(config, inner_loop) -> OuterUpdate``.

    ``replays``: it differentiates through the inner steps (needs a differentiable
    rule, and reads :class:`ReplayOptions`).
    """

    name: str
    groups: tuple[type, ...]
    inner_steps: Callable[[Config], int]
    build: Callable[[Config, MAMLInnerLoop], OuterUpdate]
    replays: bool = True


def sgd_rule(config: Config, policy: GaussianMLPPolicy, device: torch.device) -> SGDRule:
    """MAML's rule at the config's ``inner_lr``."""
    return SGDRule(config.group(InnerLoopOptions).inner_lr)


SGD = RuleSpec(groups=(), build=sgd_rule)


def build_mlp_policy(config: Config, obs_dim: int, act_dim: int) -> GaussianMLPPolicy:
    """The Gaussian MLP policy of ``config``'s :class:`MLPPolicyOptions`."""
    options = config.group(MLPPolicyOptions)
    spec = MLPSpec(obs_dim, act_dim, tuple(options.hidden_sizes), options.activation)
    return GaussianMLPPolicy(spec, init_log_std=options.init_log_std,
                             weight_init=options.weight_init)  # fmt: skip


class GradientLearner:
    """A gradient-family meta-learner: the inner loop composed with an outer update.

    A :class:`~metarl.algos.base.MetaLearner` with the extensions ``ReportsProgress``,
    ``ShowsAdaptation`` and ``MetaWorldAgentMaker``.
    """

    adaptation_unit = "step"  # what the k of return_step_k counts
    progress: Reporter = NULL_REPORTER  # the loop's display while it trains

    def __init__(
        self, name: str, inner: MAMLInnerLoop, outer: OuterUpdate, *, episodes_per_task: int
    ) -> None:
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
            kl=scalars.get(self.outer.kl_key) if self.outer.kl_key else None,
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

    def metaworld_agent(
        self, *, n_envs: int, horizon: int, seed: int, batch_key: tuple, low: Any, high: Any
    ) -> Any:
        """Meta-World's protocol agent: ``adapt()`` is one inner step, as meta_test takes,
        from ``episodes_per_task`` adaptation episodes by default (as trained)."""
        from metarl.metaworld_protocol import GradientProtocolAgent, TrainedAdaptation

        why = f"an inner step was trained on {self.episodes_per_task} episodes per task"
        trained = TrainedAdaptation(self.episodes_per_task, why)
        return GradientProtocolAgent(self.inner, n_envs=n_envs, horizon=horizon, seed=seed,
                                     batch_key=batch_key, low=low, high=high,
                                     trained=trained)  # fmt: skip

    def state_dict(self) -> dict:
        return {
            "policy": self.policy.state_dict(),
            "outer": self.outer.state_dict(),
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        # Reptile's checkpoints before the composition held the policy alone.
        self.outer.load_state_dict(state.get("outer", {}))
        self.inner.load_state_dict(state.get("inner", {}))


def gradient_member(
    name: str, summary: str, *, rule: RuleSpec, outers: tuple[OuterSpec, ...]
) -> Algorithm:
    """The registry entry of the member ``name``: ``rule`` with one of ``outers`` (the
    first is the default ``outer``)."""
    by_name = {outer.name: outer for outer in outers}
    if not rule.differentiable and any(outer.replays for outer in outers):
        raise ValueError(f"{name}: its rule is not differentiable; TRPO and PPO need one")

    def chosen(keys: Mapping[str, Any] | None) -> tuple[type, ...]:
        """The outer update's groups (``keys`` None: every outer's)."""
        if keys is None:
            picked = outers
        elif keys["outer"] in by_name:
            picked = (by_name[keys["outer"]],)
        else:
            raise ConfigError(
                f"config key 'outer': {keys['outer']!r} is not an outer update of {name} "
                f"(it takes: {', '.join(by_name)})"
            )
        replay = (ReplayOptions,) if any(outer.replays for outer in picked) else ()
        return replay + tuple(group for outer in picked for group in outer.groups)

    def build(config: Config, policy, sampler: Sampler, device: torch.device) -> GradientLearner:
        outer = by_name[config.group(GradientOptions).outer]
        replay = config.group(ReplayOptions) if outer.replays else None
        inner = MAMLInnerLoop(
            policy,
            sampler,
            rule.build(config, policy, device),
            inner_steps=outer.inner_steps(config),
            first_order=replay.inner_first_order if replay is not None else True,
            discount=config.discount,
            gae_lambda=config.group(InnerLoopOptions).inner_gae_lambda,
            device=device,
        )
        return GradientLearner(name, inner, outer.build(config, inner),
                               episodes_per_task=config.episodes_per_task)  # fmt: skip

    return Algorithm(
        name=name,
        summary=summary,
        option_groups=(GradientOptions, InnerLoopOptions, *rule.groups, MLPPolicyOptions),
        build_policy=build_mlp_policy,
        build_learner=build,
        policy_group=MLPPolicyOptions,
        chosen_groups=chosen,
        defaults={"outer": outers[0].name},
    )


def replay_steps(config: Config) -> int:
    """TRPO's and PPO's inner steps per iteration: ``inner_steps``."""
    return config.group(ReplayOptions).inner_steps
