"""Meta-World's own meta-test protocol, scoring a metarl run (``evaluate --protocol metaworld``).

metaworld 3.x ships ``metaworld.evaluation.metalearning_evaluation(agent, eval_envs, ...)``.
It steps a vector of Meta-World's test envs (one task per sub-env, drawn by the
benchmark's own task-select wrapper), calls ``agent.adapt_action`` / ``agent.step``
for ``adaptation_episodes`` episodes and ``agent.adapt()`` after them, ``adaptation_steps``
times, then scores ``agent.eval_action`` over ``evaluation_episodes`` episodes per
class, ending an episode at its first success. The adapters here give metarl's
learners that interface:

* :class:`GradientProtocolAgent` (the gradient family's learners): ``adapt()`` is one
  inner step on the adaptation episodes, exactly the step metarl's meta-test takes;
* :class:`RecurrentProtocolAgent` (RL²): ``adapt()`` does nothing; the GRU's hidden
  state is carried from the adaptation episodes into the evaluation episodes.

A learner offers its adapter through the ``MetaWorldAgentMaker`` extension
(:mod:`metarl.algos.base`); one without it is refused in one line.

Both act as metarl's sampler does: actions ``mean + std * noise`` with the noise of
``noise_rng(sampler seed, batch key, sub-env index, episode)``, clipped to the box.
So with one task per sub-env and one adaptation step, the gradient adapter's
episodes are the episodes of ``learner.meta_test(tasks, adapt_steps=1, ...)`` with the
same batch key (``tests/test_metaworld.py`` holds the two to the same numbers).

One difference is Meta-World's, not metarl's: its evaluation phase gives the agent
no rewards, so RL² reads the previous reward from the observation (the envs are made
with Meta-World's ``recurrent_info_in_obs``) and sees 0 for the last step of an episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from metarl.algos.base import MetaWorldAgentMaker, extension
from metarl.envs.metaworld import import_metaworld
from metarl.functional import expand_params
from metarl.policies.gaussian_mlp import LOG_2PI, params_to_numpy
from metarl.sampling.rollout import noise_rng
from metarl.sampling.sampler import to_episode_batch

OBS_DIM = 39
"""Meta-World's observation size (the recurrent-info envs append action, reward, done)."""


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
    stream (its episode counter never moves), as in the sampler.
    """

    def __init__(self, *, n: int, horizon: int, act_dim: int, seed: int, low, high) -> None:
        self.n, self.horizon, self.act_dim, self.seed = n, horizon, act_dim, seed
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
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

    def _row(self, i: int) -> np.ndarray:
        key = (i, int(self.episode[i]))
        if key not in self._streams:
            self._streams[key] = (noise_rng(self.seed, self.noise_key, i, key[1]), [])
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
        return act, log_prob, np.clip(act, self.low, self.high).astype(np.float32)


def _as_actor_obs(obs: np.ndarray) -> np.ndarray:
    """The float32 values the sampler records, as the float64 array its actors get."""
    return np.asarray(obs)[:, :OBS_DIM].astype(np.float32).astype(np.float64)


class GradientProtocolAgent:
    """``metaworld.evaluation.MetaLearningAgent`` for a learner with a ``MAMLInnerLoop``.

    Args:
        inner: the learner's inner loop (``learner.inner``).
        n_envs: sub-envs of the eval vector; ``horizon``: their episode length.
        seed: the sampler's seed; ``batch_key``: as ``meta_test``'s.
        low, high: the action box.
    """

    def __init__(self, inner: Any, *, n_envs: int, horizon: int, seed: int, batch_key: tuple,
                 low, high) -> None:  # fmt: skip
        self.inner = inner
        self.batch_key = tuple(batch_key)
        self.acting = _NoisyActing(
            n=n_envs, horizon=horizon, act_dim=int(np.size(low)), seed=seed, low=low, high=high
        )
        self.n = n_envs
        self.horizon = horizon
        self.init()

    # -- the protocol ---------------------------------------------------------------------
    def init(self) -> None:
        """A new round of tasks: back to the meta-parameters, nothing recorded."""
        meta = {k: v.detach().requires_grad_() for k, v in self.inner.policy.params().items()}
        self.params = expand_params(meta, self.n)
        self.rule_state = None  # e.g. Reptile's Adam moments
        self.k = 0
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
        self.acting.new_phase((*self.batch_key, self.k))
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
    ``normalize_reward_in_recurrent_info=False``: in the evaluation phase the reward
    reaches the agent only through the observation.
    """

    def __init__(self, policy: Any, *, n_envs: int, horizon: int, seed: int, batch_key: tuple,
                 low, high) -> None:  # fmt: skip
        self.policy = policy
        self.n = n_envs
        self.batch_key = tuple(batch_key)
        self.acting = _NoisyActing(
            n=n_envs, horizon=horizon, act_dim=int(np.size(low)), seed=seed, low=low, high=high
        )
        self.init()

    def init(self) -> None:
        shared = {k: v[None] for k, v in params_to_numpy(self.policy.params()).items()}
        self.actor = self.policy.spec.make_actor(shared)
        self.actor.start(0, self.n, 1)
        self.acting.new_phase((*self.batch_key, "trial"))
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


def protocol_envs(family: Any, *, n_envs: int, tasks_per_env: int, horizon: int,
                  recurrent: bool) -> Any:  # fmt: skip
    """Meta-World's own test-split vector env for ``family`` (a ``MetaWorldFamily`` whose
    pools were built), with ``n_envs`` sub-envs holding ``tasks_per_env`` tasks each."""
    metaworld = import_metaworld()
    name = family.env_name if family.benchmark == "ML1" else family.benchmark
    kwargs: dict[str, Any] = {
        "max_episode_steps": horizon,
        "reward_function_version": family.reward_function_version,
    }
    if recurrent:
        kwargs.update(recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False)
    n_classes = 1 if family.benchmark == "ML1" else 5
    return metaworld.make_ml_envs_test(
        name,
        seed=family.benchmark_seed,
        meta_batch_size=n_envs,
        total_tasks_per_cls=tasks_per_env * n_envs // n_classes,
        **kwargs,
    )


def make_protocol_agent(learner: Any, *, n_envs: int, horizon: int, seed: int,
                        batch_key: tuple, low, high) -> Any:  # fmt: skip
    """The adapter of ``learner``, from its :class:`MetaWorldAgentMaker` extension (a
    one-line :class:`~metarl.algos.base.MissingExtension` for a learner without one)."""
    maker = extension(learner, MetaWorldAgentMaker, purpose="--protocol metaworld")
    return maker.metaworld_agent(n_envs=n_envs, horizon=horizon, seed=seed,
                                 batch_key=batch_key, low=low, high=high)  # fmt: skip


def run_protocol(
    agent: Any,
    envs: Any,
    *,
    num_evals: int,
    adaptation_steps: int,
    adaptation_episodes: int,
    evaluation_episodes: int,
) -> ProtocolResult:
    """Meta-World's ``metalearning_evaluation`` on ``agent``, with its result named."""
    from metaworld.evaluation import metalearning_evaluation

    if isinstance(agent, GradientProtocolAgent):
        agent.adaptation_episodes(adaptation_episodes)
    success, mean_return, per_class = metalearning_evaluation(
        agent,
        envs,
        num_evals=num_evals,
        adaptation_steps=adaptation_steps,
        adaptation_episodes=adaptation_episodes,
        evaluation_episodes=evaluation_episodes,
    )
    return ProtocolResult(
        float(success), float(mean_return), {k: float(v) for k, v in per_class.items()}
    )


def evaluate_run(
    run: Any,
    *,
    checkpoint: str,
    iteration: int,
    path: Any,
    n_envs: int,
    tasks_per_env: int,
    num_evals: int,
    adaptation_steps: int,
    adaptation_episodes: int,
    evaluation_episodes: int,
    seed: int,
    extra: dict | None = None,
) -> ProtocolResult:
    """Score a restored run with Meta-World's protocol; print it and write a JSON at ``path``
    beside metarl's own evaluations (``python -m metarl.evaluate RUN_DIR --protocol
    metaworld``), with ``extra`` (how it was made) added to its keys."""
    import json
    from pathlib import Path

    from metarl.envs.base import FamilyUnavailableError
    from metarl.options import ConfigError
    from metarl.run import build_task_pools, make_config_env

    config = run.config
    family = make_config_env(config).unwrapped
    if not hasattr(family, "benchmark_seed"):
        raise FamilyUnavailableError(
            f"--protocol metaworld scores Meta-World runs; this run is of {config.env!r}"
        )
    build_task_pools(config, family)  # the benchmark seed of the run's pools
    n_classes = 1 if family.benchmark == "ML1" else 5
    if n_envs % n_classes:
        raise ConfigError(f"--protocol-envs must be a multiple of {n_classes} for {config.env!r}")
    recurrent = run.learner.adaptation_unit == "episode"
    envs = protocol_envs(family, n_envs=n_envs, tasks_per_env=tasks_per_env,
                         horizon=run.horizon, recurrent=recurrent)  # fmt: skip
    space = family.action_space
    agent = make_protocol_agent(run.learner, n_envs=n_envs, horizon=run.horizon,
                                seed=seed, batch_key=("metaworld-protocol",),
                                low=space.low, high=space.high)  # fmt: skip
    try:
        result = run_protocol(agent, envs, num_evals=num_evals, adaptation_steps=adaptation_steps,
                              adaptation_episodes=adaptation_episodes,
                              evaluation_episodes=evaluation_episodes)  # fmt: skip
    finally:
        envs.close()
        family.close()
    print(f"{config.algo} on {config.env}, checkpoint {checkpoint} (iteration {iteration}), "
          f"Meta-World's metalearning_evaluation: {num_evals} rounds of {n_envs} test tasks, "
          f"{adaptation_steps} x {adaptation_episodes} adaptation episodes, "
          f"{evaluation_episodes} evaluation episodes per class")  # fmt: skip
    print(f"  success rate {result.success_rate:.3f}, mean return {result.mean_return:.1f}")
    for name, rate in sorted(result.success_per_class.items()):
        print(f"  {name}: success {rate:.3f}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(checkpoint), "iteration": iteration, "env": config.env,
              "algo": config.algo, "n_envs": n_envs, "tasks_per_env": tasks_per_env,
              "num_evals": num_evals, "adaptation_steps": adaptation_steps,
              "adaptation_episodes": adaptation_episodes,
              "evaluation_episodes": evaluation_episodes, "success_rate": result.success_rate,
              "mean_return": result.mean_return,
              "success_per_class": result.success_per_class, **(extra or {})}  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return result
