"""The meta-learner protocol, its optional extensions, and what an algorithm registers.

The training loop (:mod:`metarl.loop`) and the evaluator (:mod:`metarl.evaluate`)
speak only to :class:`MetaLearner`; an algorithm is one module that defines a
learner class, its config key groups and an :class:`Algorithm` entry, plus one
line in :mod:`metarl.algos.registry`.

What a learner may do beyond the protocol is an *extension*: a small runtime-checkable
Protocol below (:class:`ReportsProgress`, :class:`ShowsAdaptation`,
:class:`MetaWorldAgentMaker`, :class:`HasSlimState`). A caller asks for one through
:func:`extension`, which gives a one-line :class:`MissingExtension` when the learner
lacks it, or tests for an optional one with :func:`provides`; nothing else inspects a
learner's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

import torch

from metarl.options import ConfigError
from metarl.progress import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.sampling import Sampler
    from metarl.sampling.rollout import Actor

AdaptationUnit = Literal["step", "episode"]


@dataclass
class IterationResult:
    """What one meta-iteration reports to the training loop.

    Attributes:
        returns_per_step: mean return after k = 0..K units of adaptation
            (``adapt/return_step_k``, or ``adapt/return_episode_{k+1}`` for RL2).
        infos_per_step: per key of the family's ``episode_info_keys``, the mean over
            the meta-batch's episodes of the key's per-episode maximum after k = 0..K
            units (``adapt/success_step_k``); empty for a family without keys.
        env_steps: real env steps collected this iteration.
        times: seconds per phase, e.g. ``sampling``, ``adaptation``, ``update``.
        scalars: namespaced update statistics (``loss/...``, ``trpo/...``, ``ppo/...``).
        rejected: the update was rejected (a non-finite loss or gradient; the
            parameters are as they were). The loop counts these and stops a run
            after ``max_consecutive_rejections`` in a row.
        kl: the headline KL of the update for the progress line (TRPO's KL after the
            line search, PPO's approximate KL), or ``None``.
    """

    returns_per_step: list[float]
    env_steps: int
    times: dict[str, float]
    scalars: dict[str, float]
    rejected: bool = False
    kl: float | None = None
    infos_per_step: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class AdaptationCurve:
    """What a meta-test measures on ``T`` tasks after k = 0..K units of adaptation.

    Attributes:
        returns: ``[K + 1, T]`` mean return of each task's episodes after k units.
        infos: per key of the family's ``episode_info_keys``, ``[K + 1, T]``: the mean
            over each task's episodes of the key's per-episode maximum (for Meta-World's
            ``success``, the fraction of episodes that succeeded); empty without keys.
    """

    returns: torch.Tensor
    infos: dict[str, torch.Tensor] = field(default_factory=dict)


class MetaLearner(Protocol):
    """What every meta-learner offers; the loop and the evaluator use nothing else.

    ``adaptation_unit`` says what the k of the return tags counts: ``"step"`` (a
    policy-gradient step: k = 0 is before adapting) or ``"episode"`` (the k-th
    episode of a trial, k = 1..K, for learners that adapt within a trial).
    """

    name: str
    adaptation_unit: AdaptationUnit

    def train_iteration(self, tasks: list, iteration: int) -> IterationResult:
        """One meta-iteration on the meta-batch ``tasks`` (``iteration`` is 0-based)."""
        ...

    def meta_test(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> AdaptationCurve:
        """Each task's mean return (and per-episode infos) after each unit of adaptation:
        ``[adapt_steps + 1, T]`` each (see :class:`AdaptationCurve`)."""
        ...

    def state_dict(self) -> dict:
        """Everything a checkpoint needs to resume the learner exactly."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class ActorRun:
    """One policy acting on one task for ``episodes`` consecutive episodes.

    The actor's state (RL2's hidden state, previous action and reward) is carried from
    one episode of the run to the next, as within a sampler trial; a stateless MLP policy
    of one adaptation step is a run of one episode.

    Attributes:
        actor: an :class:`~metarl.sampling.rollout.Actor` of one policy (parameters with a
            leading axis of 1); ``actor.start(0, 1, 1)`` begins the run.
        episodes: how many consecutive episodes it acts for (>= 1).
    """

    actor: Actor
    episodes: int = 1


# -- extensions: optional capabilities, each asked for through `extension` -------------------
@runtime_checkable
class ReportsProgress(Protocol):
    """A learner that reports its phases to the loop's live display.

    Who calls it: :func:`attach_progress`, from :mod:`metarl.loop`, sets ``progress`` to
    the run's display before training and back to the no-op after. The learner calls
    ``progress.phase("sampling" | "adapting" | "updating")`` at phase changes and
    ``progress.steps(done, total)`` after each sampler call. Give the class a
    ``progress: Reporter = NULL_REPORTER`` attribute to take it; a learner without it
    trains the same, and its display shows the loop's phases only.
    """

    progress: Reporter


@runtime_checkable
class ShowsAdaptation(Protocol):
    """A learner whose meta-test policies can be filmed.

    Who calls it: :mod:`metarl.video`, for ``metarl evaluate RUN_DIR --video``/``--sheet``.
    """

    def adapted_actors(
        self, tasks: list, *, adapt_steps: int, episodes_per_task: int, batch_key: tuple
    ) -> list[list[ActorRun]]:
        """Per task, the runs whose episodes, in order, are the ``adapt_steps + 1`` units
        of adaptation of :meth:`MetaLearner.meta_test` with the same arguments.

        ``"step"`` learners: ``adapt_steps + 1`` one-episode runs, the policy before
        adapting and after each step, adapted on the episodes ``meta_test`` samples.
        ``"episode"`` learners: one run of ``adapt_steps + 1`` episodes (one trial).
        The episodes' total is ``adapt_steps + 1`` for every task.
        """
        ...


@runtime_checkable
class MetaWorldAgentMaker(Protocol):
    """A learner that Meta-World's own evaluation protocol can score.

    Who calls it: :mod:`metarl.metaworld_protocol`, for ``metarl evaluate RUN_DIR
    --protocol metaworld``, once per evaluation.
    """

    def metaworld_agent(
        self, *, n_envs: int, horizon: int, seed: int, batch_key: tuple, low: Any, high: Any
    ) -> Any:
        """An agent with ``metaworld.evaluation``'s interface (``init``, ``adapt_action``,
        ``step``, ``adapt``, ``eval_action``, ``reset``) acting for ``n_envs`` sub-envs
        as this learner's meta-test acts: noise of the sampler's ``seed`` and
        ``batch_key``, actions clipped to ``[low, high]``. It also says
        ``reward_in_observation`` (whether its envs must carry the reward in the
        observation) and ``trained`` (a :class:`~metarl.metaworld_protocol.TrainedAdaptation`:
        the adaptation episodes the learner was trained to adapt from, or ``None``)."""
        ...


@runtime_checkable
class HasSlimState(Protocol):
    """A learner that says itself which of its state entries meta-test needs.

    Who calls it: :func:`slim_state`, for ``metarl export``. Without it a learner's
    slim state is its ``state_dict()`` less the :data:`TRAIN_ONLY_KEYS` entries.
    """

    def slim_state_dict(self) -> dict:
        """The part of ``state_dict()`` that ``meta_test`` and ``--video`` read (nested
        dicts of the same keys), nothing else."""
        ...


TRAIN_ONLY_KEYS = frozenset({"optimizer", "optimizers", "replay", "encoder_replay", "rng"})
"""State entries, at any depth, that only training reads: optimiser moments, replay
buffers, minibatch generators. A slim state drops them."""


def without_keys(state: Mapping[str, Any], keys: frozenset[str]) -> dict:
    """``state`` with every entry named in ``keys`` removed, at any depth of nested dicts."""
    return {k: without_keys(v, keys) if isinstance(v, Mapping) else v
            for k, v in state.items() if k not in keys}  # fmt: skip


def overlay(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict:
    """``base`` with ``top``'s entries put over it, nested dicts merged key by key."""
    out = dict(base)
    for k, v in top.items():
        both = isinstance(v, Mapping) and isinstance(out.get(k), Mapping)
        out[k] = overlay(out[k], v) if both else v
    return out


def slim_state(learner: MetaLearner) -> dict:
    """What meta-test needs of ``learner``'s state (:class:`HasSlimState`, or its
    ``state_dict()`` without :data:`TRAIN_ONLY_KEYS`)."""
    if provides(learner, HasSlimState):
        return learner.slim_state_dict()
    return without_keys(learner.state_dict(), TRAIN_ONLY_KEYS)


def load_slim_state(learner: MetaLearner, slim: Mapping[str, Any]) -> None:
    """Load a :func:`slim_state` into ``learner``: its entries over the learner's own state
    as built, so the train-only parts stay as initialised (fit to evaluate, not to resume)."""
    learner.load_state_dict(overlay(learner.state_dict(), slim))


class MissingExtension(ConfigError):
    """The learner lacks an extension a command needs: bad input, one line, exit 2."""


Extension = TypeVar("Extension")


def provides(learner: object, capability: type) -> bool:
    """Whether ``learner`` has the extension ``capability`` (one of the Protocols above):
    every member the Protocol declares. (Not ``isinstance``: its answer is cached per
    class, so a learner class that loses a member would still pass.)"""
    return all(hasattr(learner, name) for name in _protocol_members(capability))


def _protocol_members(capability: type) -> set[str]:
    """The attributes and methods a Protocol class declares (its own, not ``object``'s)."""
    methods = {name for name, value in vars(capability).items()
               if callable(value) and not name.startswith("_")}  # fmt: skip
    return methods | set(getattr(capability, "__annotations__", {}))


def extension(learner: Any, capability: type[Extension], *, purpose: str) -> Extension:
    """``learner`` as the extension ``capability``, or a one-line :class:`MissingExtension`
    saying that ``purpose`` (e.g. "--video") needs it."""
    if not provides(learner, capability):
        raise MissingExtension(
            f"{purpose} is not available for {learner.name}: its learner does not provide "
            f"the {capability.__name__} extension (see metarl/algos/base.py)"
        )
    return learner


def attach_progress(learner: MetaLearner, reporter: Reporter = NULL_REPORTER) -> None:
    """Give ``learner`` the loop's ``reporter`` if it takes one (:class:`ReportsProgress`)."""
    if provides(learner, ReportsProgress):
        learner.progress = reporter


PolicyBuilder = Callable[["Config", int, int], torch.nn.Module]
LearnerBuilder = Callable[["Config", Any, "Sampler", torch.device], MetaLearner]


@dataclass(frozen=True)
class Algorithm:
    """One registry entry: a name, the config groups it reads and how to build it.

    Attributes:
        name: the ``--algo`` name.
        summary: one line for ``--help``.
        option_groups: the dataclasses of config keys it always reads (see
            :mod:`metarl.options`); groups may be shared by algorithms.
        build_policy: ``(config, obs_dim, act_dim) -> policy``; the policy's ``spec``
            is what the sampler's workers run.
        build_learner: ``(config, policy, sampler, device) -> MetaLearner``.
        policy_group: the group of the keys that define the policy's architecture (a
            resumed run may not change them), or ``None``; it is one of ``option_groups``.
        chosen_groups: optional ``keys -> groups``: more groups that depend on the run's
            keys (the gradient family's ``outer`` picks its outer update's group).
        defaults: this algorithm's own defaults for keys of its groups, where they differ
            from the group's (MAML-PPO's ``outer`` is ``ppo``).
        validate: optional checks across keys, raising :class:`~metarl.options.ConfigError`.
    """

    name: str
    summary: str
    option_groups: tuple[type, ...]
    build_policy: PolicyBuilder
    build_learner: LearnerBuilder
    policy_group: type | None = None
    chosen_groups: Callable[[Mapping[str, Any]], tuple[type, ...]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    validate: Callable[[Config], None] | None = None

    def groups(self, keys: Mapping[str, Any]) -> tuple[type, ...]:
        """Every option group a run of this algorithm with the raw ``keys`` reads."""
        chosen = self.chosen_groups(keys) if self.chosen_groups is not None else ()
        return tuple(dict.fromkeys((*self.option_groups, *chosen)))
