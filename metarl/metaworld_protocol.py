"""Meta-World's own meta-test protocol, scoring a metarl run (``evaluate --protocol metaworld``).

metaworld 3.x ships ``metaworld.evaluation.metalearning_evaluation(agent, eval_envs, ...)``.
Each of its ``num_evals`` rounds moves every sub-env of a vector of Meta-World's test
envs (made by ``metaworld.make_ml_envs_test``) to its next task, calls ``agent.init()``,
then ``adaptation_steps`` times: resets every sub-env, calls ``agent.adapt_action`` /
``agent.step`` until every sub-env has finished ``adaptation_episodes`` episodes, and
``agent.adapt()``. Then it scores ``agent.eval_action``: episodes end at their first
success, and for each env class it scores the first ``evaluation_episodes`` episodes
of that class to end (in order of the step they end at, then of sub-env index),
whichever sub-envs ran them: a class's rate is its successes among those. On ML1, all
sub-envs are of one class, so a round scores the first X episodes to end across all of
them; as an episode ends at its first success, those are the quickest successes. The
adapters here give metarl's learners that interface:

* :class:`GradientProtocolAgent` (the gradient family): ``adapt()`` is one inner step on
  the adaptation episodes, exactly the step metarl's meta-test takes;
* :class:`RecurrentProtocolAgent` (RL², VariBAD): ``adapt()`` does nothing; the memory is
  carried from the adaptation episodes into the evaluation episodes;
* :class:`LatentProtocolAgent` (PEARL): episode 1 acts with z from the prior, each later
  episode with z from the posterior over the transitions so far, as PEARL's meta-test;
  ``adapt()`` infers the posterior the evaluation episodes act with.

A learner offers its adapter through the ``MetaWorldAgentMaker`` extension
(:mod:`metarl.algos.base`); one without it is refused in one line. An adapter says how
many adaptation episodes its learner was trained to adapt from (``trained``), the
default of ``adaptation_episodes``.

All act as metarl's sampler does: actions ``mean + std * noise`` with the noise of
``noise_rng(sampler seed, batch key, sub-env index, episode)``, clipped to the box
(PEARL's squashed onto it first). Round ``r`` of the protocol is metarl's meta-test with
batch key ``(*batch_key, r)``: with one task per sub-env and one adaptation step the
gradient adapter's episodes are those of ``learner.meta_test(tasks, adapt_steps=1, ...)``
(``tests/test_metaworld.py`` holds the two to the same numbers).

Two differences are Meta-World's, not metarl's. Its evaluation phase gives the agent no
rewards, so RL² reads the previous reward from the observation (the envs are made with
Meta-World's ``recurrent_info_in_obs``) and sees 0 for the last step of an episode. And
its vector env resets a sub-env in the step its episode ends, so the agent never sees
that step's next observation: PEARL's context leaves each episode's last transition out.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.algos.base import MetaWorldAgentMaker, extension
from metarl.envs.metaworld import MAX_PATH_LENGTH, import_metaworld
from metarl.functional import expand_params
from metarl.options import ConfigError
from metarl.policies.gaussian_mlp import LOG_2PI, params_to_numpy
from metarl.policies.tanh_gaussian import actor_params, squash_to_bounds
from metarl.sampling.rollout import noise_rng
from metarl.sampling.sampler import to_episode_batch

OBS_DIM = 39
"""Meta-World's observation size (the recurrent-info envs append action, reward, done)."""
N_TEST_CLASSES = {"ML1": 1, "ML10": 5, "ML45": 5}
"""Env classes of each benchmark's test split (``make_ml_envs_test`` splits sub-envs evenly)."""
TASKS_PER_CLASS = 50
"""Test tasks per class of every ML benchmark."""


@dataclass(frozen=True)
class TrainedAdaptation:
    """How many adaptation episodes per round a learner was trained to adapt from, and why:
    the default of ``adaptation_episodes`` for its runs."""

    episodes: int
    why: str


@dataclass
class ProtocolSettings:
    """What ``evaluate --protocol metaworld`` passes to Meta-World.

    Attributes:
        num_evals, adaptation_steps, evaluation_episodes: ``metalearning_evaluation``'s.
        adaptation_episodes: its argument; 0 = the learner's :class:`TrainedAdaptation`.
        n_envs: ``make_ml_envs_test``'s ``meta_batch_size`` (sub-envs).
        tasks_per_class: its ``total_tasks_per_cls``; 0 = its ``None`` (all 50).
        flags: argument name -> the flag that set it, for values other than the flags'
            defaults (the record's reason for them).
    """

    num_evals: int
    adaptation_steps: int
    adaptation_episodes: int
    evaluation_episodes: int
    n_envs: int
    tasks_per_class: int
    flags: dict[str, str] = field(default_factory=dict)


@dataclass
class ProtocolResult:
    """What ``metalearning_evaluation`` returns, named.

    Attributes:
        success_rate: mean over ``num_evals`` of the mean over classes of the success rate.
        mean_return: mean over ``num_evals`` of the mean evaluation-episode return (an
            episode ends at its first success, so returns are not metarl's full-horizon ones).
        success_per_class: class name -> success rate.
    """

    success_rate: float
    mean_return: float
    success_per_class: dict[str, float]


class _NoisyActing:
    """Acting as metarl's sampler acts, for one vector of ``n`` sub-envs (one task each).

    ``noise_key`` names the phase's noise stream (metarl's ``(*batch_key, k)``, or RL²'s
    ``(*batch_key, "trial")``). Sub-env ``i``'s episode ``e`` draws its rows from
    ``noise_rng(seed, noise_key, i, e)`` one after the other; an RL² trial is one
    stream (its episode counter never moves), as in the sampler. With
    ``key_per_episode`` (PEARL, whose meta-test samples one episode per call) episode
    ``e`` draws from ``noise_rng(seed, (*noise_key, e), i, 0)``. ``to_env`` maps the
    sampled action before the clip to the box (PEARL's squash).
    """

    def __init__(self, *, n: int, horizon: int, act_dim: int, seed: int, low, high,
                 key_per_episode: bool = False, to_env=None) -> None:  # fmt: skip
        self.n, self.horizon, self.act_dim, self.seed = n, horizon, act_dim, seed
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.key_per_episode, self.to_env = key_per_episode, to_env
        self.noise_key: tuple = ()
        self.episode = np.zeros(n, np.int64)
        self.t = np.zeros(n, np.int64)
        self._streams: dict[tuple[int, int], tuple[np.random.Generator, list]] = {}

    def new_phase(self, noise_key: tuple) -> None:
        self.noise_key = noise_key
        self.episode[:] = 0
        self.t[:] = 0
        self._streams.clear()

    def end_episodes(self, mask: np.ndarray) -> None:
        self.episode[mask] += 1
        self.t[mask] = 0

    def restart_episodes(self) -> None:
        """Every sub-env was reset mid-episode: its next episode keeps the index, from t = 0."""
        self.t[:] = 0

    def _rng(self, i: int, e: int) -> np.random.Generator:
        if self.key_per_episode:
            return noise_rng(self.seed, (*self.noise_key, e), i, 0)
        return noise_rng(self.seed, self.noise_key, i, e)

    def _row(self, i: int) -> np.ndarray:
        key = (i, int(self.episode[i]))
        if key not in self._streams:
            self._streams[key] = (self._rng(*key), [])
        rng, chunks = self._streams[key]
        t = int(self.t[i])
        while len(chunks) * self.horizon <= t:  # sequential draws: the same numbers as one
            chunks.append(rng.standard_normal((self.horizon, self.act_dim)))
        return chunks[t // self.horizon][t % self.horizon]

    def sample(self, mean: np.ndarray, log_std: np.ndarray) -> tuple[np.ndarray, ...]:
        """(sampled action f32 ``[n, A]``, its log-prob ``[n]``, the env action ``[n, A]``)."""
        std = np.exp(log_std)
        noise = np.stack([self._row(i) for i in range(self.n)])
        act = (mean + std * noise).astype(np.float32)
        z = (act.astype(np.float64) - mean) / std
        log_prob = (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1)
        self.t += 1
        env_act = act if self.to_env is None else self.to_env(act, self.low, self.high)
        return act, log_prob, np.clip(env_act, self.low, self.high).astype(np.float32)


def _as_actor_obs(obs: np.ndarray) -> np.ndarray:
    """The float32 values the sampler records, as the float64 array its actors get."""
    return np.asarray(obs)[:, :OBS_DIM].astype(np.float32).astype(np.float64)


class GradientProtocolAgent:
    """``metaworld.evaluation.MetaLearningAgent`` for a learner with a ``MAMLInnerLoop``.

    Args:
        inner: the learner's inner loop (``learner.inner``).
        n_envs: sub-envs of the eval vector; ``horizon``: their episode length.
        seed: the sampler's seed; ``batch_key``: as ``meta_test``'s (round ``r`` acts as
            ``meta_test`` with ``(*batch_key, r)``).
        low, high: the action box.
        trained: the adaptation episodes it was trained with (``episodes_per_task``).
    """

    reward_in_observation = False  # adapting reads the rewards of step(); eval needs none

    def __init__(self, inner: Any, *, n_envs: int, horizon: int, seed: int, batch_key: tuple,
                 low, high, trained: TrainedAdaptation | None = None) -> None:  # fmt: skip
        self.inner = inner
        self.batch_key = tuple(batch_key)
        self.trained = trained
        self.acting = _NoisyActing(
            n=n_envs, horizon=horizon, act_dim=int(np.size(low)), seed=seed, low=low, high=high
        )
        self.n = n_envs
        self.horizon = horizon
        self.round = -1  # the protocol's first init() starts round 0

    # -- the protocol ---------------------------------------------------------------------
    def init(self) -> None:
        """A new round of tasks: back to the meta-parameters, nothing recorded."""
        meta = {k: v.detach().requires_grad_() for k, v in self.inner.policy.params().items()}
        self.params = expand_params(meta, self.n)
        self.rule_state = None  # e.g. Reptile's Adam moments
        self.k = 0
        self.round += 1
        self._start_phase()

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict]:
        obs = _as_actor_obs(observations)
        act, log_prob, env_act = self.acting.sample(*self.actor.act(obs))
        return env_act, {"obs": obs.astype(np.float32), "action": act, "log_prob": log_prob}

    def step(self, timestep: Any) -> None:
        """Record one step of every sub-env (only the first episodes count)."""
        aux = timestep.aux_policy_outputs
        done = np.logical_or(timestep.terminated, timestep.truncated)
        for i in range(self.n):
            if len(self._episodes[i]) >= self._wanted:
                continue
            self._current[i].append(
                (aux["obs"][i], aux["action"][i], float(np.float32(timestep.reward[i])),
                 bool(timestep.terminated[i]))
            )  # fmt: skip
            if done[i]:
                self._episodes[i].append(self._current[i])
                self._current[i] = []
        self.acting.end_episodes(done)

    def adapt(self) -> None:
        """One inner step of every sub-env's task on its adaptation episodes."""
        batch = to_episode_batch(self._arrays(), tuple(range(self.n)))
        self.params, self.rule_state, _ = self.inner.inner_step(self.params, batch, self.rule_state)
        self.k += 1
        self._start_phase()

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        _, _, env_act = self.acting.sample(*self.actor.act(_as_actor_obs(observations)))
        return env_act

    def reset(self, env_mask: np.ndarray) -> None:
        """Evaluation: the masked sub-envs start a new episode (the first call: all)."""
        if self._eval_started:
            self.acting.end_episodes(np.asarray(env_mask, bool))
        self._eval_started = True

    # -- bookkeeping ----------------------------------------------------------------------
    def adaptation_episodes(self, n: int) -> GradientProtocolAgent:
        """Keep the first ``n`` adaptation episodes of each sub-env (the protocol's count)."""
        self._wanted = n
        return self

    _wanted = 1 << 30

    def _start_phase(self) -> None:
        self.actor = self.inner.policy.spec.make_actor(params_to_numpy(self.params))
        self.actor.start(0, self.n, 1)
        self.acting.new_phase((*self.batch_key, self.round, self.k))
        self._episodes: list[list] = [[] for _ in range(self.n)]
        self._current: list[list] = [[] for _ in range(self.n)]
        self._eval_started = False

    def _arrays(self) -> dict[str, np.ndarray]:
        """The adaptation episodes in the sampler's array layout (``[T, E, H, ...]``)."""
        e = min(len(eps) for eps in self._episodes)
        if e == 0:
            raise RuntimeError("adapt() before any sub-env finished an adaptation episode")
        h = self.horizon
        d, a = OBS_DIM, self.acting.act_dim
        out = {
            "observations": np.zeros((self.n, e, h, d), np.float32),
            "actions": np.zeros((self.n, e, h, a), np.float32),
            "rewards": np.zeros((self.n, e, h), np.float32),
            "log_probs": np.zeros((self.n, e, h), np.float32),
            "terminated": np.zeros((self.n, e, h), bool),
            "lengths": np.zeros((self.n, e), np.int64),
            "final_observations": np.zeros((self.n, e, d), np.float32),
            "episode_infos": np.zeros((self.n, e, 1, 0), np.float32),  # adapting needs none
        }
        for i, episodes in enumerate(self._episodes):
            for j, steps in enumerate(episodes[:e]):
                for t, (obs, act, rew, term) in enumerate(steps):
                    out["observations"][i, j, t] = obs
                    out["actions"][i, j, t] = act
                    out["rewards"][i, j, t] = rew
                    out["terminated"][i, j, t] = term
                out["lengths"][i, j] = len(steps)
        return out


class RecurrentProtocolAgent:
    """``metaworld.evaluation.MetaLearningAgent`` for RL²: the hidden state carries the task.

    The envs must be made with ``recurrent_info_in_obs=True`` and
    ``normalize_reward_in_recurrent_info=False`` (``reward_in_observation``): in the
    evaluation phase the reward reaches the agent only through the observation.
    ``trained``: the adaptation episodes its trials were trained with.
    """

    reward_in_observation = True

    def __init__(self, policy: Any, *, n_envs: int, horizon: int, seed: int, batch_key: tuple,
                 low, high, trained: TrainedAdaptation | None = None) -> None:  # fmt: skip
        self.policy = policy
        self.n = n_envs
        self.batch_key = tuple(batch_key)
        self.trained = trained
        self.acting = _NoisyActing(
            n=n_envs, horizon=horizon, act_dim=int(np.size(low)), seed=seed, low=low, high=high
        )
        self.round = -1  # the protocol's first init() starts round 0

    def init(self) -> None:
        shared = {k: v[None] for k, v in params_to_numpy(self.policy.params()).items()}
        self.actor = self.policy.spec.make_actor(shared)
        self.actor.start(0, self.n, 1)
        self.round += 1
        self.acting.new_phase((*self.batch_key, self.round, "trial"))
        self._last_action = np.zeros((self.n, self.acting.act_dim))
        self._pending = False  # an eval step whose reward arrives with the next observation
        self._episode_ended = np.zeros(self.n, bool)

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict]:
        act, _, env_act = self.acting.sample(*self.actor.act(_as_actor_obs(observations)))
        self._last_action = act.astype(np.float64)
        return env_act, {}

    def step(self, timestep: Any) -> None:
        done = np.logical_or(timestep.terminated, timestep.truncated)
        rewards = np.asarray(timestep.reward, np.float32).astype(np.float64)
        self.actor.observe(self._last_action, rewards, done)

    def adapt(self) -> None:
        """Nothing to compute: the adaptation episodes are in the hidden state."""

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, np.float64)
        if self._pending:  # the previous step's reward, from Meta-World's recurrent info
            rewards = np.where(self._episode_ended, 0.0, obs[:, OBS_DIM + self.acting.act_dim])
            self.actor.observe(self._last_action, rewards, self._episode_ended)
            self._episode_ended[:] = False
        act, _, env_act = self.acting.sample(*self.actor.act(_as_actor_obs(obs)))
        self._last_action = act.astype(np.float64)
        self._pending = True
        return env_act

    def reset(self, env_mask: np.ndarray) -> None:
        if self._pending:
            self._episode_ended |= np.asarray(env_mask, bool)


class LatentProtocolAgent:
    """``metaworld.evaluation.MetaLearningAgent`` for PEARL: a task latent z inferred from
    the adaptation episodes, acting as PEARL's ``meta_test`` acts.

    Per sub-env: its first episode of a round acts with z from the prior; each later
    episode (the next adaptation episode, or an evaluation episode) with a new draw from
    the posterior over every transition of the round's adaptation episodes so far (each
    episode's last transition left out: its next observation never reaches the agent).
    ``adapt()`` marks every sub-env to draw from the posterior over all of them; the
    evaluation phase adds nothing to the context (Meta-World gives it no rewards), so
    each evaluation episode draws from that posterior. Actions are sampled, as in
    ``meta_test``: ``u = mean + std * noise`` (the noise of ``meta_test``'s sampler call
    of that episode), squashed onto the box.

    Args:
        learner: the PEARL learner: ``policy``, ``prior_z(n, generator)``,
            ``posterior_z(context, mask, generator=)``, ``meta_test_generator(batch_key)``.
        trained: the adaptation episodes its encoder's context was drawn from in training.
    """

    reward_in_observation = False  # the evaluation phase adds no context

    def __init__(self, learner: Any, *, n_envs: int, horizon: int, seed: int, batch_key: tuple,
                 low, high, trained: TrainedAdaptation | None = None) -> None:  # fmt: skip
        from metarl.algos.pearl import context_of

        self.learner, self.n, self.trained = learner, n_envs, trained
        self.batch_key = tuple(batch_key)
        self._context_of = context_of
        self.acting = _NoisyActing(n=n_envs, horizon=horizon, act_dim=int(np.size(low)),
                                   seed=seed, low=low, high=high, key_per_episode=True,
                                   to_env=squash_to_bounds)  # fmt: skip
        self.round = -1  # the protocol's first init() starts round 0

    def init(self) -> None:
        """A new round: no context; every sub-env's first episode acts with a prior z."""
        self.round += 1
        key = (*self.batch_key, self.round)
        self.generator = self.learner.meta_test_generator(key)
        self.acting.new_phase((*key, "pearl"))
        self.contexts: list[list[torch.Tensor]] = [[] for _ in range(self.n)]
        self._current: list[list] = [[] for _ in range(self.n)]
        self._stale = np.zeros(self.n, bool)  # sub-envs whose next episode needs a new z
        self._eval_started = False
        self.z = self.learner.prior_z(self.n, self.generator)  # [n, L]
        self._make_actor()

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict]:
        self._refresh_z()
        obs = _as_actor_obs(observations)
        u, _, env_act = self.acting.sample(*self.actor.act(obs))
        return env_act, {"obs": obs.astype(np.float32), "action": u}

    def step(self, timestep: Any) -> None:
        """Record one adaptation step of every sub-env; an ended episode joins the context."""
        aux = timestep.aux_policy_outputs
        done = np.logical_or(timestep.terminated, timestep.truncated)
        for i in range(self.n):
            self._current[i].append((aux["obs"][i], np.tanh(aux["action"][i]),
                                     np.float32(timestep.reward[i])))  # fmt: skip
            if done[i]:
                self.contexts[i].append(self._transitions(self._current[i]))
                self._current[i] = []
        self._stale |= done
        self.acting.end_episodes(done)

    def adapt(self) -> None:
        """The posterior over the context so far: every sub-env's next episode draws from it.
        (Meta-World resets every sub-env next: an unfinished episode is dropped.)"""
        self._current = [[] for _ in range(self.n)]
        self._stale[:] = True
        self._eval_started = False
        self.acting.restart_episodes()

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        self._refresh_z()
        _, _, env_act = self.acting.sample(*self.actor.act(_as_actor_obs(observations)))
        return env_act

    def reset(self, env_mask: np.ndarray) -> None:
        """Evaluation: the masked sub-envs start a new episode (the first call: all)."""
        mask = np.asarray(env_mask, bool)
        if self._eval_started:
            self.acting.end_episodes(mask)
            self._stale |= mask
        self._eval_started = True

    # -- z ------------------------------------------------------------------------------------
    def _transitions(self, steps: list) -> torch.Tensor:
        """One episode's ``(s, tanh(u), r, s')`` as the encoder's input ``[len - 1, in]``."""
        obs = np.stack([s[0] for s in steps])
        fields = {"obs": obs[:-1], "actions": np.stack([s[1] for s in steps[:-1]]),
                  "rewards": np.asarray([s[2] for s in steps[:-1]], np.float32),
                  "next_obs": obs[1:]}  # fmt: skip
        return self._context_of({k: torch.from_numpy(np.ascontiguousarray(v))
                                 for k, v in fields.items()})  # fmt: skip

    def _refresh_z(self) -> None:
        """New z for the sub-envs starting an episode, drawn together (in index order)."""
        if not self._stale.any():
            return
        from metarl.algos.pearl import pad_contexts

        idx = np.flatnonzero(self._stale)
        contexts = [self.contexts[i] or [torch.zeros(0, self._in_dim())] for i in idx]
        z = self.learner.posterior_z(*pad_contexts(contexts), generator=self.generator)
        self.z[torch.as_tensor(idx)] = z
        self._stale[:] = False
        self._make_actor()

    def _in_dim(self) -> int:
        return 2 * OBS_DIM + self.acting.act_dim + 1

    def _make_actor(self) -> None:
        policy = self.learner.policy
        self.actor = policy.spec.make_actor(actor_params(policy, self.z))
        self.actor.start(0, self.n, 1)


# -- Meta-World's functions and their arguments ------------------------------------------------
def defaults_of(function: Any) -> dict[str, Any]:
    """The default of each keyword of ``function`` (a ``functools.partial``'s bound keywords
    count as defaults), read from its signature, never copied here."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}  # fmt: skip


def env_defaults(metaworld: Any) -> dict[str, Any]:
    """``make_ml_envs_test``'s defaults, with those of the per-env keywords it passes on
    (``metaworld._init_each_env``: ``max_episode_steps``, ``reward_function_version``, ...)."""
    passed_on = getattr(metaworld, "_init_each_env", None)
    inner = defaults_of(passed_on) if passed_on is not None else {}
    return {**inner, **defaults_of(metaworld.make_ml_envs_test)}


def env_arguments(family: Any, *, n_envs: int, tasks_per_class: int, horizon: int,
                  reward_in_observation: bool) -> dict[str, Any]:  # fmt: skip
    """The keywords ``make_ml_envs_test`` gets for ``family`` (a ``MetaWorldFamily`` whose
    pools were built); a :class:`ConfigError` for a split Meta-World would refuse."""
    n_classes = N_TEST_CLASSES[family.benchmark]
    if n_envs % n_classes:
        raise ConfigError(
            f"--protocol-envs: {n_envs} is not a multiple of the {n_classes} test classes "
            f"of {family.benchmark}"
        )
    per_class = tasks_per_class or TASKS_PER_CLASS
    envs_per_class = n_envs // n_classes
    if per_class > TASKS_PER_CLASS or per_class % envs_per_class:
        raise ConfigError(
            f"--protocol-tasks-per-class: {per_class} test tasks per class cannot be split "
            f"evenly over {envs_per_class} sub-envs per class (at most {TASKS_PER_CLASS}, a "
            "multiple of --protocol-envs / test classes)"
        )
    kwargs: dict[str, Any] = {
        "name": family.env_name if family.benchmark == "ML1" else family.benchmark,
        "seed": family.benchmark_seed,
        "meta_batch_size": n_envs,
        "total_tasks_per_cls": tasks_per_class or None,
        # None: Meta-World's max_path_length (500), the run's horizon unless it shrank it
        "max_episode_steps": None if horizon == MAX_PATH_LENGTH else horizon,
        "reward_function_version": family.reward_function_version,
    }
    if reward_in_observation:
        kwargs.update(recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False)
    return kwargs


ENV_REASONS = {
    "seed": "the run's benchmark seed: the benchmark whose train set the run trained on, so "
    "its test set is the run's held-out test pool",
    "total_tasks_per_cls": "Meta-World's None (all 50 test tasks of a class) cannot be split "
    "over 20 sub-envs (its own check fails); 40, with 20 sub-envs, is what the Meta-World 3 "
    "baselines of rainx0r/metaworld-algorithms use and what metalearning_evaluation's "
    "num_evals default assumes",
    "max_episode_steps": "the run's horizon",
    "reward_function_version": "the run's reward function version",
    "recurrent_info_in_obs": "the agent reads the evaluation phase's rewards from the "
    "observation (Meta-World gives it none there)",
    "normalize_reward_in_recurrent_info": "the agent reads the raw reward, as in training",
}
"""Why an env argument can differ from Meta-World's default (unless a flag set it)."""


def call_record(arguments: dict, defaults: dict, reasons: dict[str, str]) -> dict:
    """What the JSON says of one call into Meta-World: every argument passed, Meta-World's
    default of each, and for those that differ, why."""
    differ = {name: reasons.get(name, "unexplained") for name, value in arguments.items()
              if name in defaults and value != defaults[name]}  # fmt: skip
    return {"arguments": arguments,
            "metaworld_defaults": {k: defaults[k] for k in arguments if k in defaults},
            "differ": differ}  # fmt: skip


def evaluation_arguments(settings: ProtocolSettings, agent: Any) -> tuple[dict, dict]:
    """``metalearning_evaluation``'s keywords (``adaptation_episodes`` 0 -> the agent's
    trained value, else Meta-World's default) and why each may differ from the default."""
    from metaworld.evaluation import metalearning_evaluation

    defaults = defaults_of(metalearning_evaluation)
    reasons = dict(settings.flags)
    episodes = settings.adaptation_episodes
    if not episodes:
        trained = agent.trained
        episodes = trained.episodes if trained else defaults["adaptation_episodes"]
        if trained:
            reasons["adaptation_episodes"] = f"trained: {trained.why}"
    arguments = {"num_evals": settings.num_evals, "adaptation_steps": settings.adaptation_steps,
                 "adaptation_episodes": episodes,
                 "evaluation_episodes": settings.evaluation_episodes}  # fmt: skip
    return arguments, reasons


def make_protocol_agent(learner: Any, *, n_envs: int, horizon: int, seed: int,
                        batch_key: tuple, low, high) -> Any:  # fmt: skip
    """The adapter of ``learner``, from its :class:`MetaWorldAgentMaker` extension (a
    one-line :class:`~metarl.algos.base.MissingExtension` for a learner without one)."""
    maker = extension(learner, MetaWorldAgentMaker, purpose="--protocol metaworld")
    return maker.metaworld_agent(n_envs=n_envs, horizon=horizon, seed=seed,
                                 batch_key=batch_key, low=low, high=high)  # fmt: skip


def protocol_envs(family: Any, *, n_envs: int, tasks_per_class: int, horizon: int,
                  reward_in_observation: bool) -> Any:  # fmt: skip
    """Meta-World's own test-split vector env for ``family`` (:func:`env_arguments`)."""
    kwargs = env_arguments(family, n_envs=n_envs, tasks_per_class=tasks_per_class,
                           horizon=horizon,
                           reward_in_observation=reward_in_observation)  # fmt: skip
    return import_metaworld().make_ml_envs_test(**kwargs)


def run_protocol(agent: Any, envs: Any, arguments: dict) -> ProtocolResult:
    """Meta-World's ``metalearning_evaluation(agent, envs, **arguments)``, its result named."""
    from metaworld.evaluation import metalearning_evaluation

    if isinstance(agent, GradientProtocolAgent):
        agent.adaptation_episodes(arguments["adaptation_episodes"])
    success, mean_return, per_class = metalearning_evaluation(agent, envs, **arguments)
    return ProtocolResult(
        float(success), float(mean_return), {k: float(v) for k, v in per_class.items()}
    )


def check_metaworld_family(family: Any, env_name: str) -> None:
    """One line (``FamilyUnavailableError``, exit 2) unless ``family`` is a Meta-World one:
    the protocol scores nothing else."""
    from metarl.envs.base import FamilyUnavailableError

    if not hasattr(family, "benchmark_seed"):
        raise FamilyUnavailableError(
            f"--protocol metaworld scores Meta-World runs; this run is of {env_name!r}"
        )


def evaluate_run(run: Any, settings: ProtocolSettings, *, checkpoint: str, iteration: int,
                 path: Any, seed: int, extra: dict | None = None) -> dict:  # fmt: skip
    """Score a restored run with Meta-World's protocol; print it and write a JSON at ``path``
    beside metarl's own evaluations (``python -m metarl.evaluate RUN_DIR --protocol
    metaworld``): the result, every argument of both calls into Meta-World with its
    default and why it differs (``metaworld_calls``), and ``extra`` (how it was made).
    Returns what the JSON holds."""
    from metarl.run import build_task_pools, make_config_env

    config = run.config
    family = make_config_env(config).unwrapped
    try:
        check_metaworld_family(family, config.env)
        metaworld = import_metaworld()
        build_task_pools(config, family)  # the benchmark seed of the run's pools
        space = family.action_space
        agent = make_protocol_agent(run.learner, n_envs=settings.n_envs, horizon=run.horizon,
                                    seed=seed, batch_key=("metaworld-protocol", seed),
                                    low=space.low, high=space.high)  # fmt: skip
        arguments, reasons = evaluation_arguments(settings, agent)
        env_kwargs = env_arguments(family, n_envs=settings.n_envs,
                                   tasks_per_class=settings.tasks_per_class, horizon=run.horizon,
                                   reward_in_observation=agent.reward_in_observation)  # fmt: skip
        envs = metaworld.make_ml_envs_test(**env_kwargs)
        try:
            result = run_protocol(agent, envs, arguments)
        finally:
            envs.close()
    finally:
        family.close()
    from metaworld.evaluation import metalearning_evaluation

    calls = {
        "metaworld.evaluation.metalearning_evaluation": call_record(
            arguments, defaults_of(metalearning_evaluation), reasons),
        "metaworld.make_ml_envs_test": call_record(
            env_kwargs, env_defaults(metaworld), {**ENV_REASONS, **settings.flags}),
    }  # fmt: skip
    print_result(config, checkpoint, iteration, arguments, env_kwargs, result)
    for call, made in calls.items():
        for name, why in made["differ"].items():
            print(f"  {call}: {name}={made['arguments'][name]!r} (Meta-World's default "
                  f"{made['metaworld_defaults'][name]!r}): {why}")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(checkpoint), "iteration": iteration, "env": config.env,
              "algo": config.algo, **asdict(result), "metaworld_calls": calls,
              **(extra or {})}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return record


def print_result(config: Any, checkpoint: str, iteration: int, arguments: dict,
                 env_kwargs: dict, result: ProtocolResult) -> None:  # fmt: skip
    """The protocol's lines: what ran, the success rate and return, each class's success."""
    print(f"{config.algo} on {config.env}, checkpoint {checkpoint} (iteration {iteration}), "
          f"Meta-World's metalearning_evaluation: {arguments['num_evals']} rounds of "
          f"{env_kwargs['meta_batch_size']} test sub-envs, {arguments['adaptation_steps']} x "
          f"{arguments['adaptation_episodes']} adaptation episodes, "
          f"{arguments['evaluation_episodes']} evaluation episodes per class")  # fmt: skip
    print(f"  success rate {result.success_rate:.3f}, mean return {result.mean_return:.1f}")
    for name, rate in sorted(result.success_per_class.items()):
        print(f"  {name}: success {rate:.3f}")
