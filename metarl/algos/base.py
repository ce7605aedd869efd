"""The meta-learner protocol, what one iteration reports, and what an algorithm registers.

The training loop (:mod:`metarl.loop`) and the evaluator (:mod:`metarl.evaluate`)
speak only to :class:`MetaLearner`; an algorithm is one module that defines a
learner class, its config key groups and an :class:`Algorithm` entry, plus one
line in :mod:`metarl.algos.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

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

    Optional: ``progress``, a :class:`~metarl.progress.Reporter` (give the class a
    ``progress = NULL_REPORTER`` attribute to take one). The loop sets it to its live
    display for the run (:func:`attach_progress`) and back to the no-op after; the
    learner calls ``progress.phase("sampling" | "adapting" | "updating")`` at phase
    changes and ``progress.steps(done, total)`` after each sampler call. A learner
    without it trains the same; its display shows the loop's phases only.
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


class ShowsAdaptation(Protocol):
    """An optional extension of :class:`MetaLearner`: the policies that meta-test acts with.

    :mod:`metarl.video` renders them (``python -m metarl.evaluate RUN_DIR --video``); a
    learner without :meth:`adapted_actors` cannot be filmed, and says so in one line.
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


def attach_progress(learner: MetaLearner, reporter: Reporter = NULL_REPORTER) -> None:
    """Give ``learner`` the loop's ``reporter`` if it takes one (a ``progress`` attribute).

    A learner without the attribute is left as it is: the hook is optional.
    """
    if hasattr(learner, "progress"):
        learner.progress = reporter


PolicyBuilder = Callable[["Config", int, int], torch.nn.Module]
LearnerBuilder = Callable[["Config", Any, "Sampler", torch.device], MetaLearner]


@dataclass(frozen=True)
class Algorithm:
    """One registry entry: a name and how to build the algorithm from a config.

    Attributes:
        name: the ``--algo`` name.
        summary: one line for ``--help``.
        option_groups: the dataclasses of config keys it reads (see :mod:`metarl.options`);
            groups may be shared by algorithms (MAML-TRPO and MAML-PPO share the inner loop's).
        build_policy: ``(config, obs_dim, act_dim) -> policy``; the policy's ``spec``
            is what the sampler's workers run.
        build_learner: ``(config, policy, sampler, device) -> MetaLearner``.
        validate: optional checks across keys, raising :class:`~metarl.options.ConfigError`.
    """

    name: str
    summary: str
    option_groups: tuple[type, ...]
    build_policy: PolicyBuilder
    build_learner: LearnerBuilder
    validate: Callable[[Config], None] | None = field(default=None)
